/**
 * Read-only queries for `GET /v1/stats`: counts by status and latency percentiles per
 * backend and runtime over a time window. It opens its own read-only connection to the
 * node's database (WAL lets it read while the workload store writes).
 */
import path from 'node:path';
import Database from 'better-sqlite3';
import { WORKLOAD_STATUSES, type WorkloadStatus } from '../core/types.js';

/** p50 and p99 of one phase, in milliseconds (null when nothing was measured). */
export interface Percentiles {
  readonly p50: number | null;
  readonly p99: number | null;
}

/** Latency of one backend and runtime over the window. */
export interface LatencyGroup {
  readonly backend: string;
  readonly runtime: string;
  /** Finished workloads in the group. */
  readonly n: number;
  /** Total time (queue excluded): `duration_ms`. */
  readonly duration_ms: Percentiles;
  /** Sandbox start until the code ran: `timings.start_ms`. */
  readonly start_ms: Percentiles;
  /** The code running: `timings.exec_ms`. */
  readonly exec_ms: Percentiles;
}

export interface WorkloadStats {
  /** Workloads created in the window, by their status now. Every status is present. */
  readonly counts: Readonly<Record<WorkloadStatus, number>>;
  readonly latency: readonly LatencyGroup[];
  /** True when the window held more finished workloads than `maxRows`, so percentiles come from the newest `maxRows`. */
  readonly sampled: boolean;
}

/** Most finished workloads read for percentiles: bounds the memory of one stats call. */
export const STATS_MAX_ROWS = 200_000;

function percentile(sorted: readonly number[], q: number): number | null {
  if (sorted.length === 0) return null;
  const v = sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))];
  return v === undefined ? null : Math.round(v * 100) / 100;
}

function percentiles(xs: number[]): Percentiles {
  xs.sort((a, b) => a - b);
  return { p50: percentile(xs, 0.5), p99: percentile(xs, 0.99) };
}

interface LatencyRow {
  isolation_used: string;
  runtime: string;
  duration_ms: number | null;
  start_ms: number | null;
  exec_ms: number | null;
}

export class StatsStore {
  private readonly db: Database.Database;
  private readonly stmts;
  private closed = false;

  /** Opens `<dataDir>/vulcan.db` read-only; the workload store must have created it. */
  constructor(dataDir: string) {
    this.db = new Database(path.join(dataDir, 'vulcan.db'), { readonly: true, fileMustExist: true });
    this.db.pragma('busy_timeout = 5000');
    this.stmts = {
      counts: this.db.prepare(`SELECT status, COUNT(*) AS n FROM workloads WHERE created_at >= ? GROUP BY status`),
      latency: this.db.prepare(
        `SELECT isolation_used, runtime, duration_ms, start_ms, exec_ms FROM workloads
          WHERE created_at >= ? AND finished_at IS NOT NULL AND isolation_used IS NOT NULL
          ORDER BY created_at DESC LIMIT ?`,
      ),
      running: this.db.prepare(`SELECT id, isolation_used FROM workloads WHERE status = 'running' AND isolation_used IS NOT NULL`),
    };
  }

  /** Counts and percentiles of workloads created at or after `sinceMs` (unix ms). */
  workloadStats(sinceMs: number, maxRows = STATS_MAX_ROWS): WorkloadStats {
    const counts = Object.fromEntries(WORKLOAD_STATUSES.map((s) => [s, 0])) as Record<WorkloadStatus, number>;
    for (const r of this.stmts.counts.all(sinceMs) as { status: WorkloadStatus; n: number }[]) counts[r.status] = r.n;
    const rows = this.stmts.latency.all(sinceMs, maxRows + 1) as LatencyRow[];
    const sampled = rows.length > maxRows;
    const groups = new Map<string, { backend: string; runtime: string; d: number[]; s: number[]; e: number[]; n: number }>();
    for (const r of rows.slice(0, maxRows)) {
      const key = `${r.isolation_used}\u0000${r.runtime}`;
      let g = groups.get(key);
      if (!g) {
        g = { backend: r.isolation_used, runtime: r.runtime, d: [], s: [], e: [], n: 0 };
        groups.set(key, g);
      }
      g.n++;
      if (r.duration_ms !== null && r.duration_ms > 0) g.d.push(r.duration_ms);
      if (r.start_ms !== null) g.s.push(r.start_ms);
      if (r.exec_ms !== null) g.e.push(r.exec_ms);
    }
    const latency = [...groups.values()]
      .sort((a, b) => a.backend.localeCompare(b.backend) || a.runtime.localeCompare(b.runtime))
      .map((g) => ({ backend: g.backend, runtime: g.runtime, n: g.n, duration_ms: percentiles(g.d), start_ms: percentiles(g.s), exec_ms: percentiles(g.e) }));
    return { counts, latency, sampled };
  }

  /** Workloads running now, with the backend each runs on. */
  running(): { id: string; backend: string }[] {
    return (this.stmts.running.all() as { id: string; isolation_used: string }[]).map((r) => ({ id: r.id, backend: r.isolation_used }));
  }

  /** Idempotent. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.db.close();
  }
}
