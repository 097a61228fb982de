/**
 * The sandbox conformance suite on the container backend (Docker Engine API, runc), through
 * a real `vulcan serve` restarted once for reconciliation. Runs on the `python` image: the
 * preview and egress checks need python3. Leftovers: Vulcan's containers for this data dir,
 * the per-sandbox directories (socket tmpfs included) and any mount under the data dir.
 */
import fs from 'node:fs';
import path from 'node:path';
import { describeSandboxConformance } from '../../src/backends/conformance/sandbox-suite.js';
import { containerLeftovers, TEST_IMAGES_DIR } from './container-helpers.js';
import { spawnVulcanServe } from '../../src/server/spawn-serve.js';

describeSandboxConformance('container', {
  backend: 'container',
  image: 'python',
  start: async (dataDir) => {
    // The suite's data dir is new and empty; the built-in images come from the one setup built.
    const { url, stop } = await spawnVulcanServe({ dataDir, env: { VULCAN_IMAGES_DATA_DIR: TEST_IMAGES_DIR, VULCAN_CONTAINER_POOL: '0' } });
    return { url, stop: () => stop() };
  },
  leftovers: async (dataDir) => {
    const left = await containerLeftovers(dataDir);
    const root = path.join(dataDir, 'container', 'sandboxes');
    if (fs.existsSync(root)) for (const d of fs.readdirSync(root)) left.push(`directory ${path.join(root, d)}`);
    return left;
  },
});
