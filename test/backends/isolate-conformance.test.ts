/**
 * The isolate backend through the shared conformance suite (the harness runs workloads the way
 * the API does: validation, limits, the workload manager, the store). Checks for python and sh
 * skip themselves: isolates run js, ts, wasm and node. Hosts outlive workloads by design, so
 * the leftovers check is in isolate.test.ts, after the backend closes.
 */
import { createBackend } from '../../src/backends/isolate/index.js';
import { describeWorkloadConformance } from '../../src/backends/conformance/workload-suite.js';
import { testContext } from '../helpers/context.js';

describeWorkloadConformance('isolate', {
  create: () => Promise.resolve(createBackend(testContext())),
});
