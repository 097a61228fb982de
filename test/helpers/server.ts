/**
 * Real Vulcan servers for tests: in this process (fast), or as a `vulcan serve` child
 * process (for restarts and the CLI). Both listen on a random loopback port with state in
 * a temp dir, and are torn down by `close()`.
 */
import type { ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import type { LocalImageStore } from '../../src/images/index.js';
import type { BackendName } from '../../src/core/types.js';
import { VulcanClient } from '../../src/sdk/index.js';
import { startServer } from '../../src/server/serve.js';
import { spawnVulcanServe } from '../../src/server/spawn-serve.js';
import { tempDir, testConfig } from './context.js';

export interface TestServer {
  readonly url: string;
  readonly client: VulcanClient;
  readonly dataDir: string;
  close(): Promise<void>;
}

/** A server in this process. Backends default to namespace only (fast to probe). */
export async function startTestServer(opts: { backends?: readonly BackendName[]; images?: LocalImageStore; dataDir?: string; maxConcurrent?: number } = {}): Promise<TestServer> {
  const dataDir = opts.dataDir ?? tempDir('vulcan-server-');
  const config = { ...testConfig(dataDir), logLevel: process.env.VULCAN_TEST_LOG ?? 'silent', ...(opts.maxConcurrent ? { maxConcurrent: opts.maxConcurrent } : {}) };
  const server = await startServer(config, { backends: opts.backends ?? ['namespace'], ...(opts.images ? { images: opts.images } : {}) });
  return {
    url: server.url,
    client: new VulcanClient({ url: server.url }),
    dataDir,
    close: async () => {
      await server.close();
      if (!opts.dataDir) fs.rmSync(dataDir, { recursive: true, force: true });
    },
  };
}

/** The project's `bin/vulcan`. */
export const VULCAN_BIN = path.join(testConfig().installDir, 'bin', 'vulcan');

export interface ChildServer {
  readonly url: string;
  readonly child: ChildProcess;
  readonly client: VulcanClient;
  /** Sends a signal and waits for the exit. */
  stop(signal?: NodeJS.Signals): Promise<void>;
}

/** `vulcan serve` in a child process; resolves once it listens. */
export async function spawnServer(dataDir: string): Promise<ChildServer> {
  const served = await spawnVulcanServe({ dataDir, timeoutMs: 30_000 });
  return { ...served, client: new VulcanClient({ url: served.url }) };
}
