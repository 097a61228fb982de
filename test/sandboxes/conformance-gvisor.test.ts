/**
 * The sandbox conformance suite on the gvisor backend (runsc), through a real `vulcan serve`
 * restarted once for reconciliation. Runs on the `python` image: the preview and egress
 * checks need python3. Leftovers: cgroups, runsc processes and state, the per-sandbox
 * directories, and the socket tmpfs mounts of this data dir.
 */
import { describeSandboxConformance } from '../../src/backends/conformance/sandbox-suite.js';
import { eventually } from '../helpers/context.js';
import { gvisorSandboxLeftovers, startGvisorServe } from './gvisor-helpers.js';

describeSandboxConformance('gvisor', {
  backend: 'gvisor',
  image: 'python',
  start: startGvisorServe,
  leftovers: (dataDir) => eventually(() => gvisorSandboxLeftovers(dataDir)),
});
