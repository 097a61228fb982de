/**
 * Benchmark rows of the container backend (runc): cold start through the Docker Engine API
 * (Backend.run in-process: create, attach, start, wait, remove) next to
 * `docker run --rm --network none` of the same image through the docker CLI, sampled
 * alternately in one loop. Target from issue 4: p50 ≤ 0.5× the CLI's.
 */
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { ContainerBackend, daemonImageRef } from '../../src/backends/container/container-backend.js';
import type { RunSpec } from '../../src/core/backend.js';
import { loadConfig } from '../../src/core/config.js';
import { SILENT_LOGGER } from '../../src/core/context.js';
import { DEFAULT_LIMITS } from '../../src/core/limits.js';
import { createImageStore, ensureBuiltinImages } from '../../src/images/index.js';
import { summarize } from '../stats.js';
import type { BenchContext, BenchRow } from '../types.js';
import { benchImagesDataDir } from './gvisor.js';

const TARGET = 0.5;

async function timeCommand(cmd: string, args: readonly string[]): Promise<number> {
  const t0 = performance.now();
  const code = await new Promise<number | null>((resolve, reject) => {
    const child = spawn(cmd, args, { stdio: 'ignore' });
    child.on('error', reject);
    child.on('close', resolve);
  });
  if (code !== 0) throw new Error(`${cmd} ${args.join(' ')} exited ${String(code)}`);
  return performance.now() - t0;
}

export async function benchContainer(ctx: BenchContext): Promise<BenchRow[]> {
  const images = createImageStore(benchImagesDataDir());
  await ensureBuiltinImages(images, { onProgress: (m) => ctx.progress(`images: ${m}`) });
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'vulcan-bench-container-'));
  const backend = new ContainerBackend({ config: loadConfig({ dataDir }, {}), log: SILENT_LOGGER, images }, { runtime: 'runc' });
  try {
    const av = await backend.probe();
    if (!av.available) throw new Error(`container is unavailable: ${av.reason}`);
    let n = 0;
    const cases: { runtime: 'python' | 'sh'; image: string; code: string; expect: unknown; floor: string[] }[] = [
      { runtime: 'sh', image: 'minimal', code: 'true\n', expect: undefined, floor: ['/bin/true'] },
      { runtime: 'python', image: 'python', code: 'def main(input):\n    return "hello " + input["name"]\n', expect: 'hello bench', floor: ['/usr/bin/python3', '-c', 'pass'] },
    ];
    const rows: BenchRow[] = [];
    for (const c of cases) {
      const once = async () => {
        const spec: RunSpec = { id: `bench${process.pid}x${n++}`, runtime: c.runtime, code: { kind: 'inline', source: c.code }, inputJson: '{"name":"bench"}', env: {}, limits: DEFAULT_LIMITS };
        const t0 = performance.now();
        const out = await backend.run(spec, { stdout: () => undefined, stderr: () => undefined }, new AbortController().signal);
        const ms = performance.now() - t0;
        if (out.error || JSON.stringify(out.output) !== JSON.stringify(c.expect)) throw new Error(`container ${c.runtime} hello world failed: ${JSON.stringify(out)}`);
        return ms;
      };
      // The first run loads the image into the daemon; untimed, like the floor's first run.
      await once();
      const image = await images.inspect(c.image);
      const floorArgs = ['run', '--rm', '--network', 'none', daemonImageRef(image).ref, ...c.floor];
      await timeCommand('docker', floorArgs);
      const value: number[] = [];
      const floor: number[] = [];
      for (let i = 0; i < ctx.samples; i++) {
        // Never time anything beside a pool refill: the floor and the backend both see an idle machine.
        await backend.whenPoolFilled();
        floor.push(await timeCommand('docker', floorArgs));
        await backend.whenPoolFilled();
        value.push(await once());
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
        note: `Backend.run in-process over the Engine API (a pre-started container from the pool (VULCAN_CONTAINER_POOL, default 1): update limits, go, wait, remove; the pool refills after each run, untimed; runc; ${c.runtime} image with its runner and result tmpfs)`,
      });
    }
    // For reference: the same sh workload with the pool off (create, attach, start, wait, remove).
    const cold = new ContainerBackend({ config: loadConfig({ dataDir }, {}), log: SILENT_LOGGER, images }, { runtime: 'runc', poolSize: 0 });
    try {
      const minimal = await images.inspect('minimal');
      const floorArgs = ['run', '--rm', '--network', 'none', daemonImageRef(minimal).ref, '/bin/true'];
      const value: number[] = [];
      const floor: number[] = [];
      for (let i = 0; i < ctx.samples; i++) {
        floor.push(await timeCommand('docker', floorArgs));
        const t0 = performance.now();
        const out = await cold.run({ id: `bench${process.pid}c${n++}`, runtime: 'sh', code: { kind: 'inline', source: 'true\n' }, inputJson: '{}', env: {}, limits: DEFAULT_LIMITS }, { stdout: () => undefined, stderr: () => undefined }, new AbortController().signal);
        if (out.error) throw new Error(`container (no pool) sh failed: ${JSON.stringify(out)}`);
        value.push(performance.now() - t0);
      }
      const v = summarize(value);
      const f = summarize(floor);
      rows.push({ backend: 'container', measure: 'cold_start_sh_no_pool', unit: 'ms', value: v, floor: { name: `docker run --rm --network none ${daemonImageRef(minimal).ref} /bin/true`, value: f }, ratio: v.p50 / f.p50, note: 'VULCAN_CONTAINER_POOL=0: a container created, attached, started, waited for and removed per run over the Engine API' });
    } finally {
      await cold.close();
    }
    return rows;
  } finally {
    await backend.close();
    fs.rmSync(dataDir, { recursive: true, force: true });
  }
}
