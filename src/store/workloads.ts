/**
 * The workloads repository: every accepted request becomes one row here and ends in
 * exactly one terminal status. `finish` only moves a row that is not terminal yet, so a
 * late second finisher (a kill racing a timeout) changes nothing.
 */
import type { WorkloadError, WorkloadErrorCode } from '../core/errors.js';
import type { Isolation, JsonValue, Runtime, TerminalStatus, WorkloadStatus } from '../core/types.js';
import type { Db } from './db.js';
import { bindable, WriteThread, type WriteOp } from './write-thread.js';

/** A log chunk's place in the interleaved stream: which stream and how many bytes. */
export type LogIndexEntry = readonly ['stdout' | 'stderr', number];

/** A workload as the API shows it. */
export interface WorkloadRecord {
  id: string;
  status: WorkloadStatus;
  mode: 'sync' | 'async';
  isolation: Isolation;
  isolation_used: string | null;
  isolation_reason: string | null;
  runtime: Runtime;
  node: string;
  output: JsonValue;
  stdout: string;
  stderr: string;
  stdout_truncated: boolean;
  stderr_truncated: boolean;
  exit_code: number | null;
  error: WorkloadError | null;
  duration_ms: number | null;
  timings: { start_ms: number | null; exec_ms: number | null };
  resources: { cpus: number; mem_mb: number; timeout_s: number };
  created_at: string;
  started_at: string | null;
  finished_at: string | null;
}

export interface NewWorkload {
  id: string;
  mode: 'sync' | 'async';
  isolation: Isolation;
  runtime: Runtime;
  nodeId: string;
  inputHash: string;
  cpus: number;
  memMB: number;
  timeoutS: number;
  createdAt: number;
  /** Set when it starts at once: the row is written as running, saving the update markRunning makes. */
  running?: { backend: string; reason: string; startedAt: number };
}

export interface FinishedWorkload {
  status: TerminalStatus;
  output?: JsonValue;
  stdout: Buffer;
  stderr: Buffer;
  stdoutTruncated: boolean;
  stderrTruncated: boolean;
  logIndex: readonly LogIndexEntry[];
  exitCode: number | null;
  error: WorkloadError | null;
  durationMs: number;
  startMs: number | null;
  execMs: number | null;
  finishedAt: number;
}

interface Row {
  id: string;
  status: WorkloadStatus;
  mode: 'sync' | 'async';
  isolation: Isolation;
  isolation_used: string | null;
  isolation_reason: string | null;
  runtime: Runtime;
  node_id: string;
  output: string | null;
  stdout: Buffer | null;
  stderr: Buffer | null;
  stdout_truncated: number;
  stderr_truncated: number;
  log_index: string | null;
  exit_code: number | null;
  error_code: string | null;
  error_message: string | null;
  cpu_limit: number;
  mem_limit: number;
  timeout_s: number;
  duration_ms: number | null;
  start_ms: number | null;
  exec_ms: number | null;
  created_at: number;
  started_at: number | null;
  finished_at: number | null;
}

const iso = (ms: number | null) => (ms === null ? null : new Date(ms).toISOString());
const round = (ms: number | null) => (ms === null ? null : Math.round(ms * 100) / 100);

function toRecord(r: Row): WorkloadRecord {
  return {
    id: r.id,
    status: r.status,
    mode: r.mode,
    isolation: r.isolation,
    isolation_used: r.isolation_used,
    isolation_reason: r.isolation_reason,
    runtime: r.runtime,
    node: r.node_id,
    output: r.output === null ? null : (JSON.parse(r.output) as JsonValue),
    stdout: r.stdout?.toString('utf8') ?? '',
    stderr: r.stderr?.toString('utf8') ?? '',
    stdout_truncated: r.stdout_truncated === 1,
    stderr_truncated: r.stderr_truncated === 1,
    exit_code: r.exit_code,
    error: r.error_code === null ? null : { code: r.error_code as WorkloadErrorCode, message: r.error_message ?? '' },
    duration_ms: round(r.duration_ms),
    timings: { start_ms: round(r.start_ms), exec_ms: round(r.exec_ms) },
    resources: { cpus: r.cpu_limit, mem_mb: r.mem_limit, timeout_s: r.timeout_s },
    created_at: new Date(r.created_at).toISOString(),
    started_at: iso(r.started_at),
    finished_at: iso(r.finished_at),
  };
}

function finishParams(id: string, f: FinishedWorkload, backend?: { name: string; reason: string }) {
  return {
    id,
    status: f.status,
    output: f.output === undefined ? null : JSON.stringify(f.output),
    stdout: f.stdout,
    stderr: f.stderr,
    stdoutTruncated: f.stdoutTruncated ? 1 : 0,
    stderrTruncated: f.stderrTruncated ? 1 : 0,
    logIndex: JSON.stringify(f.logIndex),
    exitCode: f.exitCode,
    errorCode: f.error?.code ?? null,
    errorMessage: f.error?.message ?? null,
    durationMs: f.durationMs,
    startMs: f.startMs,
    execMs: f.execMs,
    finishedAt: f.finishedAt,
    isolationUsed: backend?.name ?? null,
    isolationReason: backend?.reason ?? null,
  };
}

/** The stored output streams and their interleaving, for log replay. */
export interface StoredLogs {
  stdout: Buffer;
  stderr: Buffer;
  index: LogIndexEntry[];
}

/**
 * Groups writes into shared SQLite transactions. The first write opens one; it commits when the
 * turn's I/O callbacks are done (`setImmediate`), or, while many workloads are in flight, a few
 * milliseconds later (GROUP_COMMIT_MS), so that one commit covers the writes of several turns.
 * A commit costs about four statements (each writes its changed pages to the WAL whole), so under
 * load commits, not statements, were most of the store's CPU. Replies that report a write wait
 * for its commit (`committed`), so a crash loses nothing anyone was told of; with few workloads
 * in flight nothing waits longer than the turn. Statements still run at once inside the
 * transaction, so a write's result and a read after it are exact.
 */
const GROUP_COMMIT_MS = 3;
/** Workloads in flight from which commits are grouped across turns. */
const GROUP_COMMIT_FROM = 8;

class TickTransaction {
  private open = false;
  private waiters: (() => void)[] = [];
  /** How long the next commit may wait; set by the store from its workloads in flight. */
  delayMs: () => number = () => 0;

  constructor(
    private readonly db: Db,
    private readonly onError: (error: unknown) => void,
  ) {}

  /** Runs `write` inside the open transaction, opening one if needed. */
  run<T>(write: () => T): T {
    if (!this.open && !this.db.inTransaction) {
      this.db.exec('BEGIN');
      this.open = true;
      const delay = this.delayMs();
      if (delay > 0) setTimeout(() => this.commit(), delay);
      else setImmediate(() => this.commit());
    }
    return write();
  }

  /** Commits now what this turn wrote. Idempotent. */
  commit(): void {
    if (!this.open) return;
    this.open = false;
    const waiters = this.waiters;
    this.waiters = [];
    try {
      if (this.db.open && this.db.inTransaction) this.db.exec('COMMIT');
    } catch (error) {
      this.onError(error);
      try {
        if (this.db.open && this.db.inTransaction) this.db.exec('ROLLBACK');
      } catch {
        // the connection is gone; nothing is left to undo
      }
    }
    for (const resolve of waiters) resolve();
  }

  /** Writes wait in an open transaction. */
  get pending(): boolean {
    return this.open;
  }

  /** Resolves once everything written so far is committed (at once when nothing is pending). */
  committed(): Promise<void> {
    if (!this.open) return Promise.resolve();
    return new Promise((resolve) => this.waiters.push(resolve));
  }
}

const TICK_TRANSACTIONS = new WeakMap<Db, TickTransaction>();

/** Options of a workload store. */
export interface WorkloadStoreOptions {
  /** Called when a grouped commit fails (its writes are rolled back). Default: rethrown on the next turn. */
  readonly onCommitError?: (error: unknown) => void;
  /**
   * Runs the writes of workloads this store inserted on a worker thread with its own connection
   * (write-thread.ts), off the event loop. Reads of those workloads are answered from memory
   * until their writes are committed; `list` and other connections see them once committed (a
   * few milliseconds). `close` must then be awaited before the database closes.
   */
  readonly writeThread?: boolean;
}

/** The store's writes, shared with its write thread (write-thread.ts). */
export const WORKLOAD_WRITES = {
  insert: `INSERT INTO workloads (id, status, mode, isolation, runtime, node_id, input_hash, cpu_limit, mem_limit, timeout_s, created_at,
      isolation_used, isolation_reason, started_at)
    VALUES (@id, @status, @mode, @isolation, @runtime, @nodeId, @inputHash, @cpus, @memMB, @timeoutS, @createdAt,
      @isolationUsed, @isolationReason, @startedAt)`,
  running: `UPDATE workloads SET status = 'running', isolation_used = @backend, isolation_reason = @reason, started_at = @startedAt
    WHERE id = @id AND status = 'pending'`,
  finish: `UPDATE workloads SET status = @status, output = @output, stdout = @stdout, stderr = @stderr,
      stdout_truncated = @stdoutTruncated, stderr_truncated = @stderrTruncated, log_index = @logIndex,
      exit_code = @exitCode, error_code = @errorCode, error_message = @errorMessage,
      duration_ms = @durationMs, start_ms = @startMs, exec_ms = @execMs, finished_at = @finishedAt,
      isolation_used = COALESCE(isolation_used, @isolationUsed), isolation_reason = COALESCE(isolation_reason, @isolationReason)
    WHERE id = @id AND status IN ('pending', 'running')`,
} as const;

export class WorkloadStore {
  private readonly stmts;
  private readonly tx: TickTransaction;
  /** Rows of workloads this store inserted and that have not ended: the terminal record is built from them, not read back. */
  private readonly active = new Map<string, Row>();
  /** With a write thread: ended workloads whose terminal write is not committed yet. */
  private readonly recent = new Map<string, Row>();
  private readonly writer: WriteThread | null = null;

  constructor(
    private readonly db: Db,
    opts: WorkloadStoreOptions = {},
  ) {
    // One per connection: stores sharing a database share its turn's transaction.
    let tx = TICK_TRANSACTIONS.get(db);
    if (tx === undefined) {
      tx = new TickTransaction(
        db,
        opts.onCommitError ??
          ((error) => {
            throw error;
          }),
      );
      TICK_TRANSACTIONS.set(db, tx);
    }
    this.tx = tx;
    tx.delayMs = () => (this.active.size >= GROUP_COMMIT_FROM ? GROUP_COMMIT_MS : 0);
    if (opts.writeThread === true) {
      const onError = opts.onCommitError ?? ((error: unknown) => setImmediate(() => { throw error; }));
      this.writer = new WriteThread(db.name, WORKLOAD_WRITES, (ops) => this.runHere(ops), onError);
    }
    this.stmts = {
      insert: db.prepare(WORKLOAD_WRITES.insert),
      insertOrIgnore: db.prepare(WORKLOAD_WRITES.insert.replace(/^INSERT INTO/, 'INSERT OR IGNORE INTO')),
      running: db.prepare(WORKLOAD_WRITES.running),
      finish: db.prepare(WORKLOAD_WRITES.finish),
      get: db.prepare(`SELECT * FROM workloads WHERE id = ?`),
      logs: db.prepare(`SELECT stdout, stderr, log_index FROM workloads WHERE id = ?`),
      orphans: db.prepare(`SELECT id FROM workloads WHERE status IN ('pending', 'running')`),
    };
  }

  insert(w: NewWorkload): void {
    const running = w.running;
    const status = running === undefined ? ('pending' as const) : ('running' as const);
    // Spelled out: `{ ...rest, ...row }` of an object rest cost ≈ 6 µs and 2.4 KiB a call in
    // Node 20 (V8 makes new maps for it each time), on every request.
    const params = {
      id: w.id,
      mode: w.mode,
      isolation: w.isolation,
      runtime: w.runtime,
      nodeId: w.nodeId,
      inputHash: w.inputHash,
      cpus: w.cpus,
      memMB: w.memMB,
      timeoutS: w.timeoutS,
      createdAt: w.createdAt,
      status,
      isolationUsed: running?.backend ?? null,
      isolationReason: running?.reason ?? null,
      startedAt: running?.startedAt ?? null,
    };
    if (this.writer !== null) this.writer.push({ k: 'insert', p: params });
    else this.tx.run(() => this.stmts.insert.run(params));
    this.active.set(w.id, {
      id: w.id,
      status,
      mode: w.mode,
      isolation: w.isolation,
      isolation_used: params.isolationUsed,
      isolation_reason: params.isolationReason,
      runtime: w.runtime,
      node_id: w.nodeId,
      output: null,
      stdout: null,
      stderr: null,
      stdout_truncated: 0,
      stderr_truncated: 0,
      log_index: null,
      exit_code: null,
      error_code: null,
      error_message: null,
      cpu_limit: w.cpus,
      mem_limit: w.memMB,
      timeout_s: w.timeoutS,
      duration_ms: null,
      start_ms: null,
      exec_ms: null,
      created_at: w.createdAt,
      started_at: params.startedAt,
      finished_at: null,
    });
  }

  /** Marks a pending workload running on `backend`. */
  markRunning(id: string, backend: string, reason: string, startedAt: number): void {
    const row = this.active.get(id);
    let changed: boolean;
    if (this.writer !== null && row !== undefined) {
      // This store's own row: memory knows whether it is still pending.
      changed = row.status === 'pending';
      if (changed) this.writer.push({ k: 'running', p: { backend, reason, startedAt, id } });
    } else {
      changed = this.tx.run(() => this.stmts.running.run({ backend, reason, startedAt, id })).changes === 1;
    }
    if (row !== undefined && changed) {
      row.status = 'running';
      row.isolation_used = backend;
      row.isolation_reason = reason;
      row.started_at = startedAt;
    }
  }

  /** Resolves once every write made so far is committed; a reply that reports a write awaits this. */
  committed(): Promise<void> {
    if (this.writer === null) return this.tx.committed();
    // Usually nothing is open on this connection: then the thread's acknowledgement is all.
    return this.tx.pending ? Promise.all([this.writer.committed(), this.tx.committed()]).then(() => undefined) : this.writer.committed();
  }

  /** Commits what is pending and stops the write thread, if any; await it before the database closes. */
  async close(): Promise<void> {
    await this.writer?.close();
    this.recent.clear();
    this.tx.commit();
  }

  /**
   * Writes on this thread's connection and commits at once: a write thread's share when it
   * fails. Idempotent, as a replay must be: an insert the thread may have committed is ignored.
   */
  private runHere(ops: readonly WriteOp[]): void {
    this.tx.run(() => {
      for (const op of ops) (op.k === 'insert' ? this.stmts.insertOrIgnore : this.stmts[op.k]).run(bindable(op.p));
    });
    this.tx.commit();
  }

  /** Commits pending writes now (before closing the database). */
  flush(): void {
    this.tx.commit();
  }

  /**
   * Like `finish`, and returns the terminal record, or null when the workload had already
   * ended (nothing changed). Builds the record from what this store wrote rather than reading
   * it back when it inserted the workload itself.
   */
  finishAndGet(id: string, f: FinishedWorkload, backend?: { name: string; reason: string }): WorkloadRecord | null {
    const params = finishParams(id, f, backend);
    const row = this.active.get(id);
    this.active.delete(id);
    if (row === undefined) {
      // Not this store's workload in flight. One whose terminal write is still on its way to the
      // write thread has ended already.
      if (this.recent.has(id)) return null;
      return this.tx.run(() => this.stmts.finish.run(params)).changes === 1 ? this.get(id) : null;
    }
    const writer = this.writer;
    let onThread = false;
    if (writer === null) {
      if (this.tx.run(() => this.stmts.finish.run(params)).changes !== 1) return null;
    } else if (!this.wroteQuietly(writer, params)) {
      writer.push({ k: 'finish', p: params });
      onThread = true;
    }
    const done: Row = {
      ...row,
      status: f.status,
      output: params.output,
      stdout: f.stdout,
      stderr: f.stderr,
      stdout_truncated: params.stdoutTruncated,
      stderr_truncated: params.stderrTruncated,
      log_index: params.logIndex,
      exit_code: f.exitCode,
      error_code: params.errorCode,
      error_message: params.errorMessage,
      duration_ms: f.durationMs,
      start_ms: f.startMs,
      exec_ms: f.execMs,
      finished_at: f.finishedAt,
      isolation_used: row.isolation_used ?? params.isolationUsed,
      isolation_reason: row.isolation_reason ?? params.isolationReason,
    };
    if (onThread) this.remember(id, done);
    return toRecord(done);
  }

  /**
   * The terminal write of the only workload in flight, when nothing is on its way to the write
   * thread (a quiet server): one statement on the main connection, committed when it returns.
   * Its reply then waits for no thread to wake and answer, two cross-core wake-ups on its path;
   * under load the thread takes every write. Anything but a clean commit (another transaction
   * open here, SQLITE_BUSY, an I/O error) leaves the write to the thread, which replays what it
   * cannot commit.
   */
  private wroteQuietly(writer: WriteThread, params: ReturnType<typeof finishParams>): boolean {
    if (this.active.size !== 0 || !writer.idle || this.db.inTransaction) return false;
    try {
      this.stmts.finish.run(params);
      return true;
    } catch {
      return false;
    }
  }

  /** Keeps an ended workload's row until its terminal write is committed, for `get` and `logs`. */
  private remember(id: string, row: Row): void {
    this.recent.set(id, row);
    void this.writer?.committed().then(() => {
      if (this.recent.get(id) === row) this.recent.delete(id);
    });
  }

  /**
   * Moves a workload to its terminal status. Returns false (and changes nothing) when it
   * already had one.
   */
  finish(id: string, f: FinishedWorkload, backend?: { name: string; reason: string }): boolean {
    if (this.writer !== null && (this.active.has(id) || this.recent.has(id))) return this.finishAndGet(id, f, backend) !== null;
    const res = this.tx.run(() => this.stmts.finish.run(finishParams(id, f, backend)));
    this.active.delete(id);
    return res.changes === 1;
  }

  get(id: string): WorkloadRecord | null {
    // With a write thread, this store's rows in flight are newer in memory than on disk.
    const mine = this.writer === null ? undefined : (this.active.get(id) ?? this.recent.get(id));
    if (mine !== undefined) return toRecord(mine);
    const row = this.stmts.get.get(id) as Row | undefined;
    return row ? toRecord(row) : null;
  }

  logs(id: string): StoredLogs | null {
    const recent = this.recent.get(id);
    const row = recent ?? (this.stmts.logs.get(id) as Pick<Row, 'stdout' | 'stderr' | 'log_index'> | undefined);
    if (!row) return null;
    return {
      stdout: row.stdout ?? Buffer.alloc(0),
      stderr: row.stderr ?? Buffer.alloc(0),
      index: row.log_index ? (JSON.parse(row.log_index) as LogIndexEntry[]) : [],
    };
  }

  /** Newest first. `cursor` is the last id of the previous page. */
  list(opts: { limit: number; cursor?: string; status?: WorkloadStatus }): { items: WorkloadRecord[]; next_cursor: string | null } {
    const where: string[] = [];
    const params: (string | number)[] = [];
    if (opts.cursor) {
      where.push('id < ?');
      params.push(opts.cursor);
    }
    if (opts.status) {
      where.push('status = ?');
      params.push(opts.status);
    }
    const sql = `SELECT * FROM workloads ${where.length ? `WHERE ${where.join(' AND ')}` : ''} ORDER BY id DESC LIMIT ?`;
    const rows = this.db.prepare(sql).all(...params, opts.limit + 1) as Row[];
    const more = rows.length > opts.limit;
    const items = rows.slice(0, opts.limit).map(toRecord);
    return { items, next_cursor: more ? (items.at(-1)?.id ?? null) : null };
  }

  /**
   * At start-up: every workload still pending or running belonged to a server process that
   * is gone, and its sandbox died with it. Each ends as `failed` with `host_restarted`.
   */
  failOrphans(now: number): string[] {
    const ids = (this.stmts.orphans.all() as { id: string }[]).map((r) => r.id);
    for (const id of ids) {
      this.finish(id, {
        status: 'failed',
        stdout: Buffer.alloc(0),
        stderr: Buffer.alloc(0),
        stdoutTruncated: false,
        stderrTruncated: false,
        logIndex: [],
        exitCode: null,
        error: { code: 'host_restarted', message: 'the server restarted while this workload ran; its sandbox was stopped' },
        durationMs: 0,
        startMs: null,
        execMs: null,
        finishedAt: now,
      });
    }
    return ids;
  }
}
