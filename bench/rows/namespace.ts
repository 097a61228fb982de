/**
 * Benchmark rows of the namespace backend: cold start of a hello world through the HTTP
 * API (every run is a new sandbox), next to bare `bwrap … python3 -c pass` (and node),
 * sampled alternately in the same loop so both see the same machine load.
 */
import { summarize } from '../stats.js';
import type { BenchContext, BenchRow } from '../types.js';
import { timeCommand, timeWorkload } from './api.js';

/** The floor: a bare bubblewrap sandbox with the same namespaces, running the interpreter. */
export function bareBwrapArgv(argv: readonly string[]): string[] {
  return ['--unshare-all', '--die-with-parent', '--new-session', '--ro-bind', '/usr', '/usr', '--symlink', 'usr/bin', '/bin', '--symlink', 'usr/lib', '/lib', '--symlink', 'usr/lib64', '/lib64', '--proc', '/proc', '--dev', '/dev', ...argv];
}

const timeBare = (argv: readonly string[]) => timeCommand('/usr/bin/bwrap', bareBwrapArgv(argv));
const timeApi = timeWorkload;

async function pair(ctx: BenchContext, runtime: 'python' | 'node', code: string, floorArgv: string[], target?: number): Promise<BenchRow> {
  const api: number[] = [];
  const bare: number[] = [];
  // One untimed round of each warms the page cache.
  await timeBare(floorArgv);
  await timeApi(ctx.url, { runtime, isolation: 'namespace', code, input: { name: 'bench' } }, 'hello bench');
  for (let i = 0; i < ctx.samples; i++) {
    bare.push(await timeBare(floorArgv));
    api.push(await timeApi(ctx.url, { runtime, isolation: 'namespace', code, input: { name: 'bench' } }, 'hello bench'));
    if (i % 10 === 9) ctx.progress(`namespace ${runtime} cold start ${i + 1}/${ctx.samples}`);
  }
  const value = summarize(api);
  const floor = summarize(bare);
  const ratio = value.p50 / floor.p50;
  return {
    backend: 'namespace',
    measure: `cold_start_${runtime}`,
    unit: 'ms',
    value,
    floor: { name: `bare bwrap ${floorArgv.join(' ')}`, value: floor },
    ratio,
    ...(target === undefined ? {} : { target: `p50 ≤ ${target}× floor`, met: ratio <= target }),
    note: `POST /v1/workloads (sync, a new sandbox each time) of a ${runtime} hello world, client-side latency`,
  };
}

export async function benchNamespace(ctx: BenchContext): Promise<BenchRow[]> {
  return [
    await pair(ctx, 'python', 'def main(input):\n    return "hello " + input["name"]\n', ['/usr/bin/python3', '-c', 'pass'], 1.5),
    await pair(ctx, 'node', 'export default (input) => "hello " + input.name;\n', ['/usr/bin/node', '-e', '0']),
  ];
}
