/**
 * The sandbox conformance suite on the microvm backend: one QEMU microVM per sandbox (TCG
 * here), on the `python` image because the preview and egress checks need python3. The
 * server shares the node's image store (VULCAN_IMAGES_DATA_DIR). Leftovers: QEMU processes
 * tagged with this data dir, sandbox VM directories and their sockets.
 */
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { describeSandboxConformance, type SuiteServer } from '../../src/backends/conformance/sandbox-suite.js';
import { loadConfig } from '../../src/core/config.js';
import { spawnVulcanServe } from '../../src/server/spawn-serve.js';
import { eventually, processesWith } from '../helpers/context.js';

/** A server on `dataDir` that sees the node's images (python). */
async function start(dataDir: string): Promise<SuiteServer> {
  const { url, stop } = await spawnVulcanServe({ dataDir, env: { VULCAN_IMAGES_DATA_DIR: loadConfig().imagesDataDir }, timeoutMs: 120_000 });
  return { url, stop: () => stop() };
}

/** QEMUs, VM directories, sockets and overlay files a microvm sandbox of `dataDir` left. */
export async function microvmSandboxLeftovers(dataDir: string): Promise<string[]> {
  const tag = `vulcan-sbx-${createHash('sha256').update(dataDir).digest('hex').slice(0, 8)}-`;
  return eventually(() => {
    const left = processesWith('qemu-system', tag);
    const dir = path.join(dataDir, 'microvm', 'sbx');
    if (fs.existsSync(dir)) for (const d of fs.readdirSync(dir)) left.push(`directory ${path.join(dir, d)}`);
    return left;
  }, 5_000);
}

describeSandboxConformance('microvm', { backend: 'microvm', image: 'python', start, leftovers: microvmSandboxLeftovers });
