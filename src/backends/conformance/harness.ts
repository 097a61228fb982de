/**
 * A test harness that runs workloads on one backend through the same path the API uses
 * (validation, limits, the workload manager with its timeout and output caps, the store),
 * without HTTP. Used by the conformance suite and by backend tests.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { monotonicFactory } from 'ulid';
import type { Backend } from '../../core/backend.js';
import { SILENT_LOGGER } from '../../core/context.js';
import { DEFAULT_LIMITS } from '../../core/limits.js';
import { WorkloadManager } from '../../scheduler/workload-manager.js';
import type { WorkloadRequestBody } from '../../server/schemas.js';
import { validateWorkload } from '../../server/validate.js';
import { openDatabase, type Db } from '../../store/db.js';
import { WorkloadStore, type WorkloadRecord } from '../../store/workloads.js';

const ulid = monotonicFactory();

export interface Harness {
  readonly backend: Backend;
  /** Runs one workload to its end and returns its record. */
  run(req: Omit<WorkloadRequestBody, 'isolation'>, opts?: { onStart?: (id: string) => void }): Promise<WorkloadRecord>;
  /** Kills a running workload. */
  kill(id: string): boolean;
  close(): Promise<void>;
}

export function createHarness(backend: Backend, maxConcurrent = 8): Harness {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vulcan-harness-'));
  const db: Db = openDatabase(dir);
  const store = new WorkloadStore(db);
  const manager = new WorkloadManager({ store, nodeName: 'test', maxConcurrent, log: SILENT_LOGGER });
  return {
    backend,
    async run(req, opts = {}) {
      const { spec, inputHash } = await validateWorkload(ulid(), { ...req, isolation: backend.name }, DEFAULT_LIMITS);
      const acc = backend.accepts(spec);
      if (!acc.ok) throw new Error(`${backend.name} refused the workload: ${acc.reason}`);
      const live = manager.submit(spec, backend.name, { backend, reason: acc.reason }, 'sync', inputHash);
      opts.onStart?.(spec.id);
      return live.done;
    },
    kill: (id) => manager.kill(id),
    async close() {
      await manager.close();
      db.close();
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}
