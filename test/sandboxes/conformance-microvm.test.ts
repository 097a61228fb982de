/**
 * The sandbox conformance suite on the microvm backend: one QEMU microVM per sandbox (TCG
 * here), on the `python` image because the preview and egress checks need python3. The
 * server shares the node's image store (VULCAN_IMAGES_DATA_DIR). Leftovers: QEMU processes
 * tagged with this data dir, sandbox VM directories and their sockets.
 */
import { describeSandboxConformance, type SuiteServer } from '../../src/backends/conformance/sandbox-suite.js';
import { loadConfig } from '../../src/core/config.js';
import { spawnVulcanServe } from '../../src/server/spawn-serve.js';
import { microvmSandboxLeftovers } from './microvm-leftovers.js';

/** A server on `dataDir` that sees the node's images (python). */
async function start(dataDir: string): Promise<SuiteServer> {
  const { url, stop } = await spawnVulcanServe({ dataDir, env: { VULCAN_IMAGES_DATA_DIR: loadConfig().imagesDataDir }, timeoutMs: 120_000 });
  return { url, stop: () => stop() };
}

describeSandboxConformance('microvm', { backend: 'microvm', image: 'python', start, leftovers: microvmSandboxLeftovers });
