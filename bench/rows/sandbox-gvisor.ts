/**
 * Sandbox rows of the gvisor backend (bench/rows/sandboxes.ts), on the `minimal` image: the
 * create floor is a bare `runsc do /bin/true` on the same platform.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { findRunsc } from '../../src/backends/gvisor/runsc.js';
import type { BenchContext, BenchRow } from '../types.js';
import { backendInfo, timeCommand } from './api.js';
import { benchSandboxes } from './sandboxes.js';

export async function benchSandboxGvisor(ctx: BenchContext): Promise<BenchRow[]> {
  const runsc = findRunsc();
  if (!runsc) throw new Error('runsc is not installed');
  const platform = (await backendInfo(ctx.url, 'gvisor')).platform ?? 'ptrace';
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vulcan-bench-runsc-'));
  try {
    const args = ['--root', path.join(dir, 'state'), `--platform=${platform}`, '--network=none', 'do', '/bin/true'];
    return await benchSandboxes(ctx, {
      backend: 'gvisor',
      image: 'minimal',
      floor: { name: `bare runsc do /bin/true (${platform})`, time: () => timeCommand(runsc, args, dir) },
      maxCreates: 10,
    });
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}
