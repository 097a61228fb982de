/**
 * Benchmark rows of the microvm backend: cold start, snapshot-restore start and pool start,
 * each a `POST /v1/workloads` of an `sh` workload to its result, beside the floor: a bare
 * QEMU boot of the same kernel and initramfs to a printed line, measured in the same run.
 * The three starts are node settings, so each runs on its own server
 * (VULCAN_MICROVM_POOL_SIZE, VULCAN_MICROVM_SNAPSHOT).
 */
import fs from 'node:fs';
import path from 'node:path';
import { bareBoot } from '../../src/backends/microvm/qemu.js';
import { DEFAULT_LIMITS } from '../../src/core/limits.js';
import { startBenchServer } from '../server.js';
import { summarize, type Stats } from '../stats.js';
import type { BenchContext, BenchRow } from '../types.js';
import { backendInfo, timeWorkload } from './api.js';

/** Runs `n` sh workloads through the API of a server whose microvm backend has `env`'s settings. */
async function timeRuns(env: Record<string, string>, n: number, ctx: BenchContext, label: string, settleMs: number): Promise<{ stats: Stats; accel: string }> {
  const server = await startBenchServer(env);
  try {
    const accel = (await backendInfo(server.url, 'microvm')).accel ?? '?';
    const body = { runtime: 'sh', isolation: 'microvm', code: 'echo ok' };
    // Warm-up: makes the snapshot template and fills the pool; not counted.
    await timeWorkload(server.url, body, null);
    const samples: number[] = [];
    for (let i = 0; i < n; i++) {
      // Let the pool refill (or the template settle) so no sample sits beside a boot.
      await new Promise((r) => setTimeout(r, settleMs));
      samples.push(await timeWorkload(server.url, body, null));
      ctx.progress(`microvm ${label} ${i + 1}/${n}: ${Math.round(samples[i] ?? 0)} ms`);
    }
    return { stats: summarize(samples), accel };
  } finally {
    await server.close();
  }
}

/** The microvm rows: cold, snapshot and pool starts beside a bare QEMU boot. */
export async function benchMicrovm(ctx: BenchContext): Promise<BenchRow[]> {
  // TCG boots take seconds each on a small host: keep the cold sample counts modest.
  const nCold = Math.max(2, Math.min(ctx.samples, ctx.quick ? 2 : 8));
  const nWarm = Math.max(3, Math.min(ctx.samples, ctx.quick ? 4 : 20));

  const cold = await timeRuns({ VULCAN_MICROVM_POOL_SIZE: '0', VULCAN_MICROVM_SNAPSHOT: '0' }, nCold, ctx, 'cold', 200);
  const manifest = JSON.parse(fs.readFileSync('/var/cache/vulcan/microvm/manifest.json', 'utf8')) as { kernel: string; initramfs: string };
  const art = (f: string): string => path.join('/var/cache/vulcan/microvm', f);
  const bare: number[] = [];
  for (let i = 0; i < nCold; i++) {
    bare.push(await bareBoot({ accel: cold.accel === 'kvm' ? 'kvm' : 'tcg', kernelPath: art(manifest.kernel), initramfsPath: art(manifest.initramfs), memMB: DEFAULT_LIMITS.memMB + 64, timeoutMs: 60_000 }));
    ctx.progress(`microvm bare boot ${i + 1}/${nCold}: ${Math.round(bare[i] ?? 0)} ms`);
  }
  const floor = { name: `bare QEMU microvm boot (${cold.accel}) of the same kernel+initramfs to a printed line`, value: summarize(bare) };
  const snapshot = await timeRuns({ VULCAN_MICROVM_POOL_SIZE: '0', VULCAN_MICROVM_SNAPSHOT: '1' }, nWarm, ctx, 'snapshot', 200);
  const pool = await timeRuns({ VULCAN_MICROVM_POOL_SIZE: '1', VULCAN_MICROVM_SNAPSHOT: '1' }, nWarm, ctx, 'pool', 1500);

  const coldRatio = cold.stats.p50 / floor.value.p50;
  const warmRow = (measure: string, s: Stats, note: string): BenchRow => ({
    backend: 'microvm',
    measure,
    unit: 'ms',
    value: s,
    floor: { name: 'microvm cold start (same run)', value: cold.stats },
    ratio: s.p50 / cold.stats.p50,
    target: 'p50 ≤ 1/5 of cold',
    met: s.p50 <= cold.stats.p50 / 5,
    note,
  });
  return [
    {
      backend: 'microvm',
      measure: 'cold_start',
      unit: 'ms',
      value: cold.stats,
      floor,
      ratio: coldRatio,
      target: 'p50 ≤ 1.3× bare boot',
      met: coldRatio <= 1.3,
      note: `POST /v1/workloads sh "echo ok" to its result, full boot (${cold.accel}), pool and snapshot off`,
    },
    warmRow('snapshot_start', snapshot.stats, 'restore from a template: RAM file on /dev/shm mapped copy-on-write + ~52 KiB device state'),
    warmRow('pool_start', pool.stats, 'a VM restored ahead of time (pool of 1, refilled from the snapshot after each run)'),
    { backend: 'microvm', measure: 'bare_boot', unit: 'ms', value: floor.value, note: floor.name },
  ];
}
