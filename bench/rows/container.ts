/**
 * Benchmark rows of the container backend: cold start through the HTTP API (the backend
 * keeps a small pool of pre-created containers, each used once) next to `docker run --rm`
 * of the same image through the CLI, sampled alternately in one loop.
 */
import { daemonImageRef } from '../../src/backends/container/container-backend.js';
import { loadConfig } from '../../src/core/config.js';
import { createImageStore } from '../../src/images/index.js';
import { summarize } from '../stats.js';
import type { BenchContext, BenchRow } from '../types.js';
import { timeCommand, timeWorkload } from './api.js';

const TARGET = 0.5;
/** Time for the backend's pool to refill after a run, so no sample sits beside a refill. */
const SETTLE_MS = 400;
const settle = () => new Promise((r) => setTimeout(r, SETTLE_MS));

export async function benchContainer(ctx: BenchContext): Promise<BenchRow[]> {
  // The server's image store (the same data dir): read for the daemon's image name only.
  const images = createImageStore(loadConfig().imagesDataDir);
  const cases = [
    { runtime: 'sh', image: 'minimal', code: 'true\n', expect: null, floor: ['/bin/true'] },
    { runtime: 'python', image: 'python', code: 'def main(input):\n    return "hello " + input["name"]\n', expect: 'hello bench', floor: ['/usr/bin/python3', '-c', 'pass'] },
  ] as const;
  const rows: BenchRow[] = [];
  for (const c of cases) {
    const body = { runtime: c.runtime, isolation: 'container', code: c.code, input: { name: 'bench' } };
    // The first run loads the image into the daemon; untimed, like the floor's first run.
    await timeWorkload(ctx.url, body, c.expect);
    const image = await images.inspect(c.image);
    const floorArgs = ['run', '--rm', '--network', 'none', daemonImageRef(image).ref, ...c.floor];
    await timeCommand('docker', floorArgs);
    const value: number[] = [];
    const floor: number[] = [];
    for (let i = 0; i < ctx.samples; i++) {
      await settle();
      floor.push(await timeCommand('docker', floorArgs));
      await settle();
      value.push(await timeWorkload(ctx.url, body, c.expect));
      if (i % 10 === 9) ctx.progress(`container ${c.runtime} cold start ${i + 1}/${ctx.samples}`);
    }
    const v = summarize(value);
    const f = summarize(floor);
    const ratio = v.p50 / f.p50;
    rows.push({
      backend: 'container',
      measure: `cold_start_${c.runtime}`,
      unit: 'ms',
      value: v,
      floor: { name: `docker run --rm --network none ${daemonImageRef(image).ref} ${c.floor.join(' ')}`, value: f },
      ratio,
      target: `p50 ≤ ${TARGET}× floor`,
      met: ratio <= TARGET,
      note: `POST /v1/workloads (${c.runtime}, image ${c.image}; a pre-created container from the pool, used once) vs the docker CLI`,
    });
  }
  return rows;
}
