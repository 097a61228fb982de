/**
 * Benchmark rows of the gvisor backend: cold start (a new sandbox per run, through the
 * Backend interface in-process, so the figure is the backend's own) next to bare
 * `runsc do` of the same command on the same platform, sampled alternately in one loop.
 *
 * Images come from VULCAN_IMAGES_DIR's data dir (default /var/lib/vulcan-test-images, the
 * one the tests build), because a bench server's fresh data dir has no images yet.
 */
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { GvisorBackend } from '../../src/backends/gvisor/gvisor-backend.js';
import { findRunsc } from '../../src/backends/gvisor/runsc.js';
import type { RunSpec } from '../../src/core/backend.js';
import { loadConfig } from '../../src/core/config.js';
import { SILENT_LOGGER } from '../../src/core/context.js';
import { DEFAULT_LIMITS } from '../../src/core/limits.js';
import { createImageStore, ensureBuiltinImages } from '../../src/images/index.js';
import { summarize } from '../stats.js';
import type { BenchContext, BenchRow } from '../types.js';

/** The data dir whose image store the image-based rows use. */
export function benchImagesDataDir(): string {
  return process.env.VULCAN_IMAGES_DATA_DIR ?? '/var/lib/vulcan-test-images';
}

async function timeCommand(cmd: string, args: readonly string[], cwd: string): Promise<number> {
  const t0 = performance.now();
  const code = await new Promise<number | null>((resolve, reject) => {
    const child = spawn(cmd, args, { stdio: 'ignore', cwd });
    child.on('error', reject);
    child.on('close', resolve);
  });
  if (code !== 0) throw new Error(`${cmd} ${args.join(' ')} exited ${String(code)}`);
  return performance.now() - t0;
}

export async function benchGvisor(ctx: BenchContext): Promise<BenchRow[]> {
  const runsc = findRunsc();
  if (!runsc) throw new Error('runsc is not installed');
  const images = createImageStore(benchImagesDataDir());
  await ensureBuiltinImages(images, { onProgress: (m) => ctx.progress(`images: ${m}`) });
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'vulcan-bench-gvisor-'));
  const backend = new GvisorBackend({ config: loadConfig({ dataDir }, {}), log: SILENT_LOGGER, images });
  try {
    const av = await backend.probe();
    if (!av.available) throw new Error(`gvisor is unavailable: ${av.reason}`);
    const platform = av.info?.platform ?? 'ptrace';
    const stateDir = path.join(dataDir, 'floor-state');
    fs.mkdirSync(stateDir);
    let n = 0;
    const cases: { runtime: 'python' | 'sh'; code: string; expect: unknown; floor: string[] }[] = [
      { runtime: 'python', code: 'def main(input):\n    return "hello " + input["name"]\n', expect: 'hello bench', floor: ['/usr/bin/python3', '-c', 'pass'] },
      { runtime: 'sh', code: 'true\n', expect: undefined, floor: ['/bin/true'] },
    ];
    const rows: BenchRow[] = [];
    for (const c of cases) {
      const floorArgs = ['--root', stateDir, `--platform=${platform}`, '--network=none', 'do', ...c.floor];
      const once = async () => {
        const spec: RunSpec = { id: `bench${process.pid}x${n++}`, runtime: c.runtime, code: { kind: 'inline', source: c.code }, inputJson: '{"name":"bench"}', env: {}, limits: DEFAULT_LIMITS };
        const t0 = performance.now();
        const out = await backend.run(spec, { stdout: () => undefined, stderr: () => undefined }, new AbortController().signal);
        const ms = performance.now() - t0;
        if (out.error || JSON.stringify(out.output) !== JSON.stringify(c.expect)) throw new Error(`gvisor ${c.runtime} hello world failed: ${JSON.stringify(out)}`);
        return ms;
      };
      await timeCommand(runsc, floorArgs, dataDir);
      await once();
      const value: number[] = [];
      const floor: number[] = [];
      for (let i = 0; i < ctx.samples; i++) {
        floor.push(await timeCommand(runsc, floorArgs, dataDir));
        value.push(await once());
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
        note: `Backend.run in-process (a new sandbox, bundle, cgroup and result tmpfs each time; ${c.runtime} image, runner included); platform ${platform}`,
      });
    }
    return rows;
  } finally {
    await backend.close();
    fs.rmSync(dataDir, { recursive: true, force: true });
  }
}
