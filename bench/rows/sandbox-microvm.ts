/**
 * Sandbox rows of the microvm backend (bench/rows/sandboxes.ts), on the `minimal` image: the
 * create floor is a bare QEMU microvm boot of the same kernel and initramfs. Under TCG a
 * create takes seconds, so few are sampled. Two more rows time pause to disk and resume:
 * - `sandbox_pause_to_disk`: POST …/pause (QMP stop, the guest's RAM and devices saved to a
 *   file, QEMU ended), client-side;
 * - `sandbox_resume_to_first_exec`: POST …/resume (QEMU started again, the state loaded,
 *   HELLO, ping) then POST …/exec of `echo ok`, next to this run's create-to-first-exec.
 */
import fs from 'node:fs';
import path from 'node:path';
import { bareBoot } from '../../src/backends/microvm/qemu.js';
import { summarize } from '../stats.js';
import type { BenchContext, BenchRow } from '../types.js';
import { backendInfo } from './api.js';
import { benchSandboxes } from './sandboxes.js';

const ARTIFACTS = '/var/cache/vulcan/microvm';

async function call(url: string, method: 'POST' | 'DELETE', p: string, body?: unknown): Promise<Record<string, unknown>> {
  const res = await fetch(`${url}${p}`, { method, headers: body === undefined ? {} : { 'content-type': 'application/json' }, ...(body === undefined ? {} : { body: JSON.stringify(body) }) });
  const text = await res.text();
  if (!res.ok) throw new Error(`${method} ${p}: HTTP ${res.status} ${text.slice(0, 300)}`);
  return text ? (JSON.parse(text) as Record<string, unknown>) : {};
}

/** Pause-to-disk and resume-to-first-exec of one running sandbox, `n` rounds. */
async function benchPauseResume(ctx: BenchContext, createRow: BenchRow | undefined): Promise<BenchRow[]> {
  const created = await call(ctx.url, 'POST', '/v1/sandboxes', { isolation: 'microvm', image: 'minimal', ttl_s: 600 });
  const id = String(created.id);
  try {
    await call(ctx.url, 'POST', `/v1/sandboxes/${id}/exec`, { cmd: ['sh', '-c', 'echo kept > /tmp/kept'] });
    const pauses: number[] = [];
    const resumes: number[] = [];
    const n = ctx.quick ? 2 : 5;
    for (let i = 0; i < n; i++) {
      let t0 = performance.now();
      await call(ctx.url, 'POST', `/v1/sandboxes/${id}/pause`);
      pauses.push(performance.now() - t0);
      t0 = performance.now();
      await call(ctx.url, 'POST', `/v1/sandboxes/${id}/resume`);
      const r = await call(ctx.url, 'POST', `/v1/sandboxes/${id}/exec`, { cmd: ['cat', '/tmp/kept'] });
      resumes.push(performance.now() - t0);
      if (r.stdout !== 'kept\n') throw new Error(`after resume the guest's /tmp/kept reads ${JSON.stringify(r.stdout)}`);
      ctx.progress(`microvm sandbox pause/resume ${i + 1}/${n}`);
    }
    const resumeStats = summarize(resumes);
    return [
      {
        backend: 'microvm',
        measure: 'sandbox_pause_to_disk',
        unit: 'ms',
        value: summarize(pauses),
        note: 'POST /v1/sandboxes/:id/pause on minimal (guest RAM 640 MiB): QMP stop, RAM + devices saved to a file, QEMU ended; client-side',
      },
      {
        backend: 'microvm',
        measure: 'sandbox_resume_to_first_exec',
        unit: 'ms',
        value: resumeStats,
        ...(createRow ? { floor: { name: 'sandbox create-to-first-exec (this run)', value: createRow.value }, ratio: resumeStats.p50 / createRow.value.p50 } : {}),
        note: 'POST …/resume (QEMU restarted from the saved state, HELLO, ping) then POST …/exec ["cat","/tmp/kept"], client-side',
      },
    ];
  } finally {
    await call(ctx.url, 'DELETE', `/v1/sandboxes/${id}`).catch(() => undefined);
  }
}

export async function benchSandboxMicrovm(ctx: BenchContext): Promise<BenchRow[]> {
  const manifest = JSON.parse(fs.readFileSync(path.join(ARTIFACTS, 'manifest.json'), 'utf8')) as { kernel: string; initramfs: string };
  const accel = (await backendInfo(ctx.url, 'microvm')).accel === 'kvm' ? 'kvm' : 'tcg';
  const rows = await benchSandboxes(ctx, {
    backend: 'microvm',
    image: 'minimal',
    floor: {
      name: `bare QEMU microvm boot (${accel}) to a printed line`,
      time: () => bareBoot({ accel, kernelPath: path.join(ARTIFACTS, manifest.kernel), initramfsPath: path.join(ARTIFACTS, manifest.initramfs), memMB: 256, timeoutMs: 60_000 }),
    },
    maxCreates: ctx.quick ? 2 : 4,
  });
  return [...rows, ...(await benchPauseResume(ctx, rows.find((r) => r.measure === 'sandbox_create_to_first_exec')))];
}
