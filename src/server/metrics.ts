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

/**
 * Label-bound children of a metric, kept by their label values: prom-client hashes a labels
 * object on every `inc`/`observe`, which showed in the request path's profile. The label
 * values here come from small sets (backends, runtimes, statuses, routes).
 */
function children<T>(bind: (values: readonly string[]) => T): (...values: string[]) => T {
  const cache = new Map<string, T>();
  return (...values) => {
    const key = values.join('\0');
    let child = cache.get(key);
    if (child === undefined) {
      child = bind(values);
      cache.set(key, child);
    }
    return child;
  };
}

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
  readonly httpDuration;
  readonly apiErrors;
  private readonly totalOf;
  private readonly durationOf;
  private readonly runningOf;
  private readonly httpOf;

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
    this.totalOf = children(([isolation = '', runtime = '', status = '']) => this.workloadsTotal.labels({ isolation, runtime, status }));
    this.durationOf = children(([isolation = '', runtime = '', phase = '']) => this.duration.labels({ isolation, runtime, phase }));
    this.runningOf = children(([isolation = '']) => this.running.labels({ isolation }));
    this.httpOf = children(([method = '', route = '', code = '']) => this.httpDuration.labels({ method, route, status_code: code }));
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
    this.runningOf(backend).inc();
  }

  finished(rec: WorkloadRecord, startMs: number | null, execMs: number | null): void {
    const isolation = rec.isolation_used ?? 'none';
    if (rec.started_at !== null) this.runningOf(isolation).dec();
    this.totalOf(isolation, rec.runtime, rec.status).inc();
    if (startMs !== null) this.durationOf(isolation, rec.runtime, 'start').observe(startMs / 1000);
    if (execMs !== null) this.durationOf(isolation, rec.runtime, 'exec').observe(execMs / 1000);
  }

  /** One API request's latency. */
  observeHttp(method: string, route: string, statusCode: number, seconds: number): void {
    this.httpOf(method, route, String(statusCode)).observe(seconds);
  }
}
