/**
 * Fixtures of the gvisor sandbox tests: a server on a temp data dir that shares the images
 * setup built, and what gvisor sandboxes could leave on the host.
 */
import fs from 'node:fs';
import path from 'node:path';
import { gvisorSandboxCgroupPrefix, gvisorSandboxRoot } from '../../src/backends/gvisor/sandbox-driver.js';
import { spawnVulcanServe } from '../../src/server/spawn-serve.js';
import { cgroupsLeft, processesWith } from '../helpers/context.js';

/** The image store setup built (and the other image tests share). */
export const TEST_IMAGES_DIR = process.env.VULCAN_TEST_IMAGES_DIR ?? '/var/lib/vulcan';

/** `vulcan serve` on `dataDir` with the shared images. */
export async function startGvisorServe(dataDir: string): Promise<{ url: string; stop: (signal?: NodeJS.Signals) => Promise<void> }> {
  const { url, stop } = await spawnVulcanServe({ dataDir, timeoutMs: 60_000, env: { VULCAN_IMAGES_DATA_DIR: TEST_IMAGES_DIR } });
  return { url, stop: (signal?: NodeJS.Signals) => stop(signal) };
}

/**
 * Everything gvisor sandboxes of the server on `dataDir` could leave: cgroups, runsc
 * processes (sentry, gofer), mounts (the socket tmpfs), per-sandbox directories, runsc state.
 */
export function gvisorSandboxLeftovers(dataDir: string): string[] {
  const left = [...cgroupsLeft(gvisorSandboxCgroupPrefix(dataDir)), ...processesWith('runsc', dataDir)];
  for (const line of fs.readFileSync('/proc/self/mounts', 'utf8').split('\n')) if (line.includes(dataDir)) left.push(`mount ${line}`);
  const root = gvisorSandboxRoot(dataDir);
  if (fs.existsSync(root)) {
    for (const d of fs.readdirSync(root)) if (d !== 'state') left.push(`directory ${path.join(root, d)}`);
    const state = path.join(root, 'state');
    if (fs.existsSync(state)) for (const f of fs.readdirSync(state)) left.push(`runsc state ${f}`);
  }
  return left;
}
