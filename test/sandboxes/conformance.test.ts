/**
 * The sandbox conformance suite against every process backend, through a real
 * `vulcan serve` (restarted once for reconciliation). Backends that do not host sandboxes
 * yet are listed with the reason, so the matrix of backend × behaviour shows in one place.
 */
import fs from 'node:fs';
import path from 'node:path';
import { describe, it } from 'node:test';
import { sandboxCgroupPrefix } from '../../src/backends/namespace/sandbox-driver.js';
import { describeSandboxConformance, SANDBOX_CHECKS } from '../../src/backends/conformance/sandbox-suite.js';
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

/** Process backends that have not joined yet: every check is skipped with this reason. */
const NOT_YET: Record<string, string> = {
  gvisor: 'no sandbox driver yet (capabilities.sandboxes false): runsc sandboxes with the same agent are next',
  container: 'no sandbox driver yet (capabilities.sandboxes false)',
  microvm: 'no sandbox driver yet (capabilities.sandboxes false)',
};

describe('sandbox conformance matrix: backends without a sandbox driver', () => {
  for (const [backend, reason] of Object.entries(NOT_YET)) {
    for (const c of SANDBOX_CHECKS) it(`${backend}: ${c}`, (t) => t.skip(reason));
  }
});
