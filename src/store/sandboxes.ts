/**
 * The sandboxes repository: one row per sandbox, kept after it ends (`destroyed`, `lost`)
 * so that late calls get 410 and listings show what happened. `driver_state` is what the
 * backend needs to re-attach after a server restart.
 */
import type { SandboxState } from '../core/sandbox.js';
import type { Db } from './db.js';

/** A sandbox as the API shows it. Times are ISO strings. */
export interface SandboxRecord {
  id: string;
  state: SandboxState;
  isolation: string;
  isolation_used: string;
  image: string;
  node: string;
  resources: { cpus: number; mem_mb: number; disk_mb: number };
  ttl_s: number;
  idle_timeout_s: number;
  metadata: Record<string, string>;
  created_at: string;
  /** When the TTL ends; null while paused (the TTL clock stops) and once ended. */
  expires_at: string | null;
  /** While paused: the seconds of TTL left. */
  ttl_remaining_s: number | null;
  last_activity_at: string;
  paused_at: string | null;
  ended_at: string | null;
  /** Why it ended: `requested`, `ttl`, `idle`, or the reason it was lost. */
  end_reason: string | null;
}

/** The stored row, with what the API never shows. */
export interface SandboxRow {
  id: string;
  state: SandboxState;
  isolation: string;
  isolation_used: string;
  image: string;
  node_id: string;
  cpus: number;
  mem_mb: number;
  disk_mb: number;
  pids_max: number;
  ttl_s: number;
  idle_timeout_s: number;
  env: string;
  metadata: string;
  driver_state: string | null;
  created_at: number;
  expires_at: number | null;
  ttl_remaining_ms: number | null;
  last_activity_at: number;
  paused_at: number | null;
  ended_at: number | null;
  end_reason: string | null;
}

const iso = (ms: number | null) => (ms === null ? null : new Date(ms).toISOString());

/** The API's view of a row. */
export function toRecord(r: SandboxRow): SandboxRecord {
  return {
    id: r.id,
    state: r.state,
    isolation: r.isolation,
    isolation_used: r.isolation_used,
    image: r.image,
    node: r.node_id,
    resources: { cpus: r.cpus, mem_mb: r.mem_mb, disk_mb: r.disk_mb },
    ttl_s: r.ttl_s,
    idle_timeout_s: r.idle_timeout_s,
    metadata: JSON.parse(r.metadata) as Record<string, string>,
    created_at: new Date(r.created_at).toISOString(),
    expires_at: iso(r.expires_at),
    ttl_remaining_s: r.ttl_remaining_ms === null ? null : Math.round(r.ttl_remaining_ms / 1000),
    last_activity_at: new Date(r.last_activity_at).toISOString(),
    paused_at: iso(r.paused_at),
    ended_at: iso(r.ended_at),
    end_reason: r.end_reason,
  };
}

export class SandboxStore {
  constructor(private readonly db: Db) {}

  insert(row: SandboxRow): void {
    this.db
      .prepare(
        `INSERT INTO sandboxes (id, state, isolation, isolation_used, image, node_id, cpus, mem_mb, disk_mb, pids_max, ttl_s, idle_timeout_s, env, metadata, driver_state, created_at, expires_at, ttl_remaining_ms, last_activity_at, paused_at, ended_at, end_reason)
         VALUES (@id, @state, @isolation, @isolation_used, @image, @node_id, @cpus, @mem_mb, @disk_mb, @pids_max, @ttl_s, @idle_timeout_s, @env, @metadata, @driver_state, @created_at, @expires_at, @ttl_remaining_ms, @last_activity_at, @paused_at, @ended_at, @end_reason)`,
      )
      .run(row);
  }

  get(id: string): SandboxRow | undefined {
    return this.db.prepare('SELECT * FROM sandboxes WHERE id = ?').get(id) as SandboxRow | undefined;
  }

  /** Rows in any of `states` (all when empty), newest first. */
  list(states: readonly SandboxState[] = [], limit = 500): SandboxRow[] {
    if (states.length === 0) return this.db.prepare('SELECT * FROM sandboxes ORDER BY id DESC LIMIT ?').all(limit) as SandboxRow[];
    const marks = states.map(() => '?').join(',');
    return this.db.prepare(`SELECT * FROM sandboxes WHERE state IN (${marks}) ORDER BY id DESC LIMIT ?`).all(...states, limit) as SandboxRow[];
  }

  /** Changes some columns of a row. */
  update(id: string, fields: Partial<Omit<SandboxRow, 'id'>>): void {
    const keys = Object.keys(fields);
    if (keys.length === 0) return;
    const sets = keys.map((k) => `${k} = @${k}`).join(', ');
    this.db.prepare(`UPDATE sandboxes SET ${sets} WHERE id = @id`).run({ ...fields, id });
  }

  /** Ends a sandbox that has not ended yet; a second call changes nothing. */
  end(id: string, state: 'destroyed' | 'lost', reason: string, at: number): boolean {
    const r = this.db
      .prepare(`UPDATE sandboxes SET state = ?, end_reason = ?, ended_at = ?, expires_at = NULL, ttl_remaining_ms = NULL, driver_state = NULL WHERE id = ? AND state NOT IN ('destroyed', 'lost')`)
      .run(state, reason, at, id);
    return r.changes > 0;
  }
}
