/**
 * Starts a Vulcan node: the store (with restart reconciliation), the backends (probed and
 * reconciled), the workload manager and the HTTP API.
 */
import fs from 'node:fs';
import path from 'node:path';
import type { FastifyInstance } from 'fastify';
import { pino } from 'pino';
import type { Config } from '../core/config.js';
import { createImageStore, type LocalImageStore } from '../images/index.js';
import type { BackendName } from '../core/types.js';
import { BackendSet } from '../scheduler/backend-set.js';
import { WorkloadManager } from '../scheduler/workload-manager.js';
import { openDatabase } from '../store/db.js';
import { WorkloadStore } from '../store/workloads.js';
import { SandboxManager } from '../sandboxes/manager.js';
import { SandboxStore } from '../store/sandboxes.js';
import { buildApp } from './app.js';
import { BatchedLogDestination } from './log-destination.js';
import { Metrics } from './metrics.js';

export interface RunningServer {
  readonly app: FastifyInstance;
  /** Base URL, e.g. http://127.0.0.1:7423 (the real port when 0 was asked for). */
  readonly url: string;
  /** Stops accepting, kills what runs (recorded as failed/host_restarted), closes everything. Idempotent. */
  close(): Promise<void>;
}

export interface StartOptions {
  /** Backends to load; all by default. */
  readonly backends?: readonly BackendName[];
  /** The image store; by default `<config.imagesDataDir>/images`. */
  readonly images?: LocalImageStore;
}

/** The project's version, from package.json. */
export function readVersion(installDir: string): string {
  try {
    return (JSON.parse(fs.readFileSync(path.join(installDir, 'package.json'), 'utf8')) as { version: string }).version;
  } catch {
    return '0.0.0';
  }
}

export async function startServer(config: Config, opts: StartOptions = {}): Promise<RunningServer> {
  // Traversable, not listable: the sandboxes (uid 65534) reach image trees under it by their
  // exact paths; everything private in it is 0600/0700 (the database, sandboxes/).
  fs.mkdirSync(config.dataDir, { recursive: true, mode: 0o711 });
  fs.chmodSync(config.dataDir, 0o711);
  const db = openDatabase(config.dataDir);
  const metrics = new Metrics();
  // One JSON logger for the HTTP layer, the manager and the backends.
  // Asynchronous writes: a busy server's lines leave in batches, one write per turn at most,
  // instead of one blocking write each; what is left is written when the process exits.
  const log = pino({ level: config.logLevel }, new BatchedLogDestination());
  // The writes of workloads in flight run on a worker thread (store/write-thread.ts): the event
  // loop is what caps throughput. VULCAN_STORE_WRITE_THREAD=0 keeps them on the loop.
  const store = new WorkloadStore(db, {
    onCommitError: (err) => log.error({ err }, 'the workload store could not commit; the writes of that turn were rolled back'),
    writeThread: process.env.VULCAN_STORE_WRITE_THREAD !== '0',
  });
  const orphaned = store.failOrphans(Date.now());
  const images = opts.images ?? createImageStore(config.imagesDataDir);
  const backends = await BackendSet.create({ config, log, images }, opts.backends);
  metrics.setBackends(backends.describe());
  const manager = new WorkloadManager({ store, nodeName: config.nodeName, maxConcurrent: config.maxConcurrent, log, observer: metrics });
  const sandboxes = new SandboxManager({ store: new SandboxStore(db), backends, config, log });
  await sandboxes.start();
  const app = await buildApp({ config, log, store, manager, backends, metrics, version: readVersion(config.installDir), sandboxes, images });
  if (orphaned.length > 0) app.log.warn({ workloads: orphaned }, 'workloads of an earlier server process ended as failed (host_restarted)');
  for (const b of backends.describe()) app.log.info({ backend: b.name, available: b.available, reason: b.reason }, 'backend');
  await app.listen({ host: config.host, port: config.port });
  const addr = app.server.address();
  const port = typeof addr === 'object' && addr ? addr.port : config.port;
  const url = `http://${config.host.includes(':') ? `[${config.host}]` : config.host}:${port}`;
  let closing: Promise<void> | undefined;
  const server = app;
  return {
    app: server,
    url,
    close: () =>
      (closing ??= (async () => {
        await manager.close();
        sandboxes.close();
        await server.close();
        await backends.close();
        await store.close();
        db.close();
      })()),
  };
}
