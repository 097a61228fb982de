/**
 * Benchmark rows of the gvisor backend: cold start through the HTTP API (a new sandbox each
 * run) next to bare `runsc do` of the same command on the same platform, sampled alternately
 * in one loop so both see the same machine load.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { findRunsc } from '../../src/backends/gvisor/runsc.js';
import { summarize } from '../stats.js';
import type { BenchContext, BenchRow } from '../types.js';
import { backendInfo, timeCommand, timeWorkload } from './api.js';

export async function benchGvisor(ctx: BenchContext): Promise<BenchRow[]> {
  const runsc = findRunsc();
  if (!runsc) throw new Error('runsc is not installed');
  const platform = (await backendInfo(ctx.url, 'gvisor')).platform ?? 'ptrace';
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vulcan-bench-runsc-'));
  try {
    const cases = [
      { runtime: 'python', code: 'def main(input):\n    return "hello " + input["name"]\n', expect: 'hello bench', floor: ['/usr/bin/python3', '-c', 'pass'] },
      { runtime: 'sh', code: 'true\n', expect: null, floor: ['/bin/true'] },
    ] as const;
    const rows: BenchRow[] = [];
    for (const c of cases) {
      const floorArgs = ['--root', path.join(dir, 'state'), `--platform=${platform}`, '--network=none', 'do', ...c.floor];
      const body = { runtime: c.runtime, isolation: 'gvisor', code: c.code, input: { name: 'bench' } };
      await timeCommand(runsc, floorArgs, dir);
      await timeWorkload(ctx.url, body, c.expect);
      const value: number[] = [];
      const floor: number[] = [];
      for (let i = 0; i < ctx.samples; i++) {
        floor.push(await timeCommand(runsc, floorArgs, dir));
        value.push(await timeWorkload(ctx.url, body, c.expect));
        if (i % 10 === 9) ctx.progress(`gvisor ${c.runtime} cold start ${i + 1}/${ctx.samples}`);
      }
      const v = summarize(value);
      const f = summarize(floor);
      rows.push({
        backend: 'gvisor',
        measure: `cold_start_${c.runtime}`,
        unit: 'ms',
        value: v,
        floor: { name: `runsc --platform=${platform} --network=none do ${c.floor.join(' ')}`, value: f },
        ratio: v.p50 / f.p50,
        note: `POST /v1/workloads (a new sandbox, bundle and cgroup each time; ${c.runtime} image, runner included); platform ${platform}`,
      });
    }
    return rows;
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}
