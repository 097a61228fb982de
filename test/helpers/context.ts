/**
 * Test fixtures shared by test files: a backend context in a temp data dir, and host
 * leftovers checks.
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { loadConfig, type Config } from '../../src/core/config.js';
import { SILENT_LOGGER, type BackendContext } from '../../src/core/context.js';
import { EMPTY_IMAGE_STORE, type ImageStore } from '../../src/core/images.js';
import { listCgroups } from '../../src/host/cgroups.js';

/** A fresh data dir under the OS temp dir; removed by the caller. */
export function tempDir(prefix = 'vulcan-test-'): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), prefix));
}

export function testConfig(dataDir = tempDir(), extra: Partial<Config> = {}): Config {
  return { ...loadConfig({ dataDir, port: 0 }, {}), ...extra };
}

export function testContext(images: ImageStore = EMPTY_IMAGE_STORE, config: Config = testConfig()): BackendContext {
  return { config, log: SILENT_LOGGER, images };
}

/** Vulcan cgroups whose names start with `prefix` (and contain `id`, when given). */
export function cgroupsLeft(prefix: string, id = ''): string[] {
  return listCgroups()
    .filter((n) => n.startsWith(prefix) && n.includes(id))
    .map((n) => `cgroup vulcan/${n}`);
}

/** Host processes whose command line contains every one of `words`. */
export function processesWith(...words: string[]): string[] {
  const out = execFileSync('ps', ['-eo', 'pid=,args='], { encoding: 'utf8' });
  return out
    .split('\n')
    .filter((l) => l.trim() && words.every((w) => l.includes(w)) && !l.includes('ps -eo'))
    .map((l) => `process ${l.trim()}`);
}

/**
 * Polls `list` until it is empty or `withinMs` passes, and returns the last answer. For
 * leftover checks: cleanup that runs just after a response (an empty cgroup's removal)
 * gets a moment; anything still there after it is a leak.
 */
export async function eventually(list: () => string[] | Promise<string[]>, withinMs = 2000): Promise<string[]> {
  const end = Date.now() + withinMs;
  for (;;) {
    const left = await list();
    if (left.length === 0 || Date.now() > end) return left;
    await new Promise((r) => setTimeout(r, 25));
  }
}
