/**
 * Sandbox rows of the microvm backend (bench/rows/sandboxes.ts), on the `minimal` image: the
 * create floor is a bare QEMU microvm boot of the same kernel and initramfs. Under TCG a
 * create takes seconds, so few are sampled.
 */
import fs from 'node:fs';
import path from 'node:path';
import { bareBoot } from '../../src/backends/microvm/qemu.js';
import type { BenchContext, BenchRow } from '../types.js';
import { backendInfo } from './api.js';
import { benchSandboxes } from './sandboxes.js';

const ARTIFACTS = '/var/cache/vulcan/microvm';

export async function benchSandboxMicrovm(ctx: BenchContext): Promise<BenchRow[]> {
  const manifest = JSON.parse(fs.readFileSync(path.join(ARTIFACTS, 'manifest.json'), 'utf8')) as { kernel: string; initramfs: string };
  const accel = (await backendInfo(ctx.url, 'microvm')).accel === 'kvm' ? 'kvm' : 'tcg';
  return benchSandboxes(ctx, {
    backend: 'microvm',
    image: 'minimal',
    floor: {
      name: `bare QEMU microvm boot (${accel}) to a printed line`,
      time: () => bareBoot({ accel, kernelPath: path.join(ARTIFACTS, manifest.kernel), initramfsPath: path.join(ARTIFACTS, manifest.initramfs), memMB: 256, timeoutMs: 60_000 }),
    },
    maxCreates: ctx.quick ? 2 : 4,
  });
}
