/**
 * Prometheus metrics (prom-client), in base units with Prometheus naming conventions
 * (`_seconds`, `_bytes`, counters end in `_total`). One registry per server, so tests can run
 * several servers in one process. `promtool check metrics` passes on a scrape (a test checks).
 *
 * Series:
 * - `vulcan_workloads_total{isolation,runtime,status}`, `vulcan_workloads_running{isolation}`
 * - `vulcan_workload_duration_seconds{isolation,runtime,phase="start"|"exec"}` (cold start and exec)
 * - `vulcan_backend_available{backend}`
 * - `vulcan_pool_size{backend,pool}`: warm entries ready in a backend's pool (set by backends)
 * - `vulcan_sandboxes_running{backend}`: long-lived sandboxes alive (set by the sandbox layer)
 * - `vulcan_sandbox_memory_bytes{backend}`: memory in use by sandboxes, read at scrape time
 * - `vulcan_http_request_duration_seconds{method,route,status_code}`, `vulcan_api_errors_total{code}`
 * - the standard `process_*` and `nodejs_*` series of the server process
 */
import client from 'prom-client';
import type { BackendInfo } from '../scheduler/backend-set.js';
import type { WorkloadObserver } from '../scheduler/workload-manager.js';
import type { WorkloadRecord } from '../store/workloads.js';
import { LeanCounter, LeanGauge, LeanHistogram } from './lean-metrics.js';

const LATENCY_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300];

export class Metrics implements WorkloadObserver {
  readonly registry = new client.Registry();
  private readonly workloadsTotal;
  private readonly duration;
  private readonly running;
  private readonly backendAvailable;
  private readonly poolSize;
  private readonly sandboxesRunning;
  private readonly sandboxMemory;
  private readonly memorySources: (() => ReadonlyMap<string, number>)[] = [];
  private readonly httpDuration;
  readonly apiErrors;

  constructor() {
    const registers = [this.registry];
    // The series every workload and request updates are lean (lean-metrics.ts); the rest are prom-client's.
    this.workloadsTotal = new LeanCounter('vulcan_workloads_total', 'Workloads that reached a terminal status.', ['isolation', 'runtime', 'status']);
    this.duration = new LeanHistogram(
      'vulcan_workload_duration_seconds',
      'Workload phases: start (sandbox start until the code runs) and exec (the code running).',
      ['isolation', 'runtime', 'phase'],
      LATENCY_BUCKETS,
    );
    this.running = new LeanGauge('vulcan_workloads_running', 'Workloads running now.', ['isolation']);
    this.httpDuration = new LeanHistogram('vulcan_http_request_duration_seconds', 'API request latency by route.', ['method', 'route', 'status_code'], LATENCY_BUCKETS);
    // prom-client's Registry reads any object with its metrics' name, help, type and get().
    for (const lean of [this.workloadsTotal, this.duration, this.running, this.httpDuration]) this.registry.registerMetric(lean as unknown as client.Metric);
    this.backendAvailable = new client.Gauge({
      name: 'vulcan_backend_available',
      help: '1 when the backend can run workloads on this node.',
      labelNames: ['backend'] as const,
      registers,
    });
    this.apiErrors = new client.Counter({
      name: 'vulcan_api_errors_total',
      help: 'API error answers by error code.',
      labelNames: ['code'] as const,
      registers,
    });
    this.poolSize = new client.Gauge({
      name: 'vulcan_pool_size',
      help: 'Warm entries (sandboxes, isolates, VM clones) ready in a backend pool.',
      labelNames: ['backend', 'pool'] as const,
      registers,
    });
    this.sandboxesRunning = new client.Gauge({
      name: 'vulcan_sandboxes_running',
      help: 'Long-lived sandboxes alive now.',
      labelNames: ['backend'] as const,
      registers,
    });
    const sources = this.memorySources;
    this.sandboxMemory = new client.Gauge({
      name: 'vulcan_sandbox_memory_bytes',
      help: 'Memory in use by sandboxes and workloads, by backend, read when scraped.',
      labelNames: ['backend'] as const,
      registers,
      collect() {
        if (sources.length === 0) return;
        const totals = new Map<string, number>();
        for (const source of sources) {
          try {
            for (const [backend, bytes] of source()) totals.set(backend, (totals.get(backend) ?? 0) + bytes);
          } catch {
            // A source that cannot read now (a cgroup vanished mid-read) is skipped this scrape.
          }
        }
        this.reset();
        for (const [backend, bytes] of totals) this.set({ backend }, bytes);
      },
    });
    // The standard process and Node.js series, less the three gauges prom-client names with
    // `_total` (nodejs_active_*_total), which break the conventions promtool checks.
    const defaults = new client.Registry();
    client.collectDefaultMetrics({ register: defaults });
    for (const { name } of defaults.getMetricsAsArray()) {
      const m = defaults.getSingleMetric(name);
      if (m && !/^nodejs_active_\w+_total$/.test(name)) this.registry.registerMetric(m);
    }
  }

  /** Sets how many warm entries a backend's pool holds (`pool` names the pool, e.g. `python`). */
  setPoolSize(backend: string, pool: string, size: number): void {
    this.poolSize.set({ backend, pool }, size);
  }

  /** Sets how many long-lived sandboxes of a backend are alive. */
  setSandboxesRunning(backend: string, count: number): void {
    this.sandboxesRunning.set({ backend }, count);
  }

  /**
   * Adds a source of sandbox memory, read at each scrape: backend name → bytes. Sources add
   * up; the gauge holds only what the sources said at the last scrape.
   */
  addSandboxMemorySource(source: () => ReadonlyMap<string, number>): void {
    this.memorySources.push(source);
  }

  setBackends(backends: readonly BackendInfo[]): void {
    for (const b of backends) this.backendAvailable.set({ backend: b.name }, b.available ? 1 : 0);
  }

  started(backend: string): void {
    this.running.with(backend).inc();
  }

  finished(rec: WorkloadRecord, startMs: number | null, execMs: number | null): void {
    const isolation = rec.isolation_used ?? 'none';
    if (rec.started_at !== null) this.running.with(isolation).dec();
    this.workloadsTotal.with(isolation, rec.runtime, rec.status).inc();
    if (startMs !== null) this.duration.with(isolation, rec.runtime, 'start').observe(startMs / 1000);
    if (execMs !== null) this.duration.with(isolation, rec.runtime, 'exec').observe(execMs / 1000);
  }

  /** One API request's latency. */
  observeHttp(method: string, route: string, statusCode: number, seconds: number): void {
    this.httpDuration.with(method, route, String(statusCode)).observe(seconds);
  }
}
