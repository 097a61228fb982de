/**
 * The sandbox conformance suite on namespace, through a real `vulcan serve` (restarted once
 * for reconciliation). Every other process backend runs the same suite from its own file:
 * conformance-gvisor.test.ts, conformance-container.test.ts, conformance-microvm.test.ts.
 */
import fs from 'node:fs';
import path from 'node:path';
import { sandboxCgroupPrefix } from '../../src/backends/namespace/sandbox-driver.js';
import { describeSandboxConformance } from '../../src/backends/conformance/sandbox-suite.js';
import { cgroupsLeft } from '../helpers/context.js';

describeSandboxConformance('namespace', {
  backend: 'namespace',
  leftovers: (dataDir) => {
    const left = cgroupsLeft(sandboxCgroupPrefix(dataDir));
    const dir = path.join(dataDir, 'sandboxes');
    if (fs.existsSync(dir)) for (const d of fs.readdirSync(dir)) left.push(`directory ${path.join(dir, d)}`);
    return Promise.resolve(left);
  },
});
