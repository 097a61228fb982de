/**
 * Prometheus metrics (prom-client), in base units with Prometheus naming conventions.
 * One registry per server, so tests can run several servers in one process.
 */
import client from 'prom-client';
import type { BackendInfo } from '../scheduler/backend-set.js';
import type { WorkloadObserver } from '../scheduler/workload-manager.js';
import type { WorkloadRecord } from '../store/workloads.js';

const LATENCY_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300];

export class Metrics implements WorkloadObserver {
  readonly registry = new client.Registry();
  private readonly workloadsTotal;
  private readonly duration;
  private readonly running;
  private readonly backendAvailable;
  readonly httpDuration;
  readonly apiErrors;

  constructor() {
    const registers = [this.registry];
    this.workloadsTotal = new client.Counter({
      name: 'vulcan_workloads_total',
      help: 'Workloads that reached a terminal status.',
      labelNames: ['isolation', 'runtime', 'status'] as const,
      registers,
    });
    this.duration = new client.Histogram({
      name: 'vulcan_workload_duration_seconds',
      help: 'Workload phases: start (sandbox start until the code runs) and exec (the code running).',
      labelNames: ['isolation', 'runtime', 'phase'] as const,
      buckets: LATENCY_BUCKETS,
      registers,
    });
    this.running = new client.Gauge({
      name: 'vulcan_workloads_running',
      help: 'Workloads running now.',
      labelNames: ['isolation'] as const,
      registers,
    });
    this.backendAvailable = new client.Gauge({
      name: 'vulcan_backend_available',
      help: '1 when the backend can run workloads on this node.',
      labelNames: ['backend'] as const,
      registers,
    });
    this.httpDuration = new client.Histogram({
      name: 'vulcan_http_request_duration_seconds',
      help: 'API request latency by route.',
      labelNames: ['method', 'route', 'status_code'] as const,
      buckets: LATENCY_BUCKETS,
      registers,
    });
    this.apiErrors = new client.Counter({
      name: 'vulcan_api_errors_total',
      help: 'API error answers by error code.',
      labelNames: ['code'] as const,
      registers,
    });
  }

  setBackends(backends: readonly BackendInfo[]): void {
    for (const b of backends) this.backendAvailable.set({ backend: b.name }, b.available ? 1 : 0);
  }

  started(backend: string): void {
    this.running.inc({ isolation: backend });
  }

  finished(rec: WorkloadRecord, startMs: number | null, execMs: number | null): void {
    const isolation = rec.isolation_used ?? 'none';
    if (rec.started_at !== null) this.running.dec({ isolation });
    this.workloadsTotal.inc({ isolation, runtime: rec.runtime, status: rec.status });
    if (startMs !== null) this.duration.observe({ isolation, runtime: rec.runtime, phase: 'start' }, startMs / 1000);
    if (execMs !== null) this.duration.observe({ isolation, runtime: rec.runtime, phase: 'exec' }, execMs / 1000);
  }
}
