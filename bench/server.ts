/**
 * A `vulcan serve` child process for the benchmark rows that need a server with their own
 * settings: a temp data dir, the node's images shared (VULCAN_IMAGES_DATA_DIR), extra
 * environment. Everything it made is removed by `close()`.
 */
import type { ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { loadConfig } from '../src/core/config.js';
import { spawnVulcanServe } from '../src/server/spawn-serve.js';

export interface BenchServer {
  readonly url: string;
  readonly child: ChildProcess;
  close(): Promise<void>;
}

export async function startBenchServer(extraEnv: Readonly<Record<string, string>> = {}): Promise<BenchServer> {
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'vulcan-bench-'));
  try {
    const { url, child, stop } = await spawnVulcanServe({ dataDir, env: { VULCAN_IMAGES_DATA_DIR: loadConfig().imagesDataDir, ...extraEnv } });
    return {
      url,
      child,
      close: async () => {
        await stop();
        fs.rmSync(dataDir, { recursive: true, force: true });
      },
    };
  } catch (err) {
    fs.rmSync(dataDir, { recursive: true, force: true });
    throw err;
  }
}
