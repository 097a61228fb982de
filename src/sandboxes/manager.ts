/**
 * The sandbox manager: the one place that knows a sandbox's life (create, pause, resume,
 * TTL, idle, destroy, restart reconciliation) and speaks the agent protocol for every
 * backend (exec, files, archives, the preview relay). Backends only provide a
 * `SandboxDriver` (src/core/sandbox.ts).
 */
import type { Duplex, Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { monotonicFactory } from 'ulid';
import type { Config } from '../core/config.js';
import type { Logger } from '../core/context.js';
import { VulcanError } from '../core/errors.js';
import { LIMIT_RANGES } from '../core/limits.js';
import { sandboxDriverOf, type SandboxDriver, type SandboxHandle, type SandboxLimits, type SandboxState } from '../core/sandbox.js';
import { BACKEND_NAMES, type BackendName } from '../core/types.js';
import { AUTO_ORDER, type BackendSet } from '../scheduler/backend-set.js';
import { toRecord, type SandboxRecord, type SandboxRow, type SandboxStore } from '../store/sandboxes.js';
import { AGENT_FRAME, agentErrorToApi, encodeFrame, FrameDecoder, readReply, sendRequest, SERVER_FRAME, type AgentReply, type ExecExit } from './protocol.js';

const ulid = monotonicFactory();

/** Defaults and bounds of sandbox requests. Units in the names. */
export const SANDBOX_DEFAULTS = {
  ttlS: 3600,
  idleTimeoutS: 900,
  memMB: 512,
  diskMB: 1024,
  pidsMax: 1024,
  cpus: 1,
  execTimeoutS: 300,
} as const;
export const SANDBOX_RANGES = {
  ttl_s: { min: 1, max: 7 * 24 * 3600 },
  idle_timeout_s: { min: 0, max: 7 * 24 * 3600 },
  disk_mb: { min: 1, max: 64 * 1024 },
  exec_timeout_s: { min: 0.001, max: 24 * 3600 },
} as const;
/** How often TTL and idle deadlines are checked. */
const TICK_MS = 250;
const BASE_ENV = { PATH: '/usr/local/bin:/usr/bin:/bin', HOME: '/work', LANG: 'C.UTF-8' } as const;

/** A create request, schema-checked. */
export interface CreateSandboxInput {
  isolation?: string;
  image?: string;
  resources?: { cpus?: number; mem_mb?: number; disk_mb?: number };
  ttl_s?: number;
  idle_timeout_s?: number;
  env?: Record<string, string>;
  metadata?: Record<string, string>;
}

/** One command to run in a sandbox. */
export interface ExecRequest {
  readonly cmd: readonly string[];
  readonly env?: Readonly<Record<string, string>>;
  readonly cwd?: string;
  readonly timeoutMs: number;
  /** Bytes written to stdin before it is closed (unless `streamStdin`). */
  readonly stdin?: Buffer;
  /** Keep stdin open for `writeStdin` (interactive use). */
  readonly streamStdin?: boolean;
  /** Run on a pseudo-terminal of this size. */
  readonly pty?: { readonly rows: number; readonly cols: number };
}

/** A running command: output callbacks, input, and its end. */
export interface ExecSession {
  onOutput(fn: (stream: 'stdout' | 'stderr', chunk: Buffer) => void): void;
  /** Resolves when the command ends; rejects when the sandbox went away under it. */
  readonly exited: Promise<ExecExit>;
  writeStdin(data: Buffer): void;
  endStdin(): void;
  resize(rows: number, cols: number): void;
  signal(name: string): void;
  /** Stops reading output (back-pressure); `resume` reads again. */
  pause(): void;
  resume(): void;
  /** Hangs up: the agent kills the command. */
  close(): void;
}

interface Live {
  readonly handle: SandboxHandle;
  readonly driver: SandboxDriver;
  inflight: number;
  lastActivity: number;
  activityDirty: boolean;
  ending: boolean;
}

/** A lease on a running sandbox for one operation: it is not idle while any lease is held. */
interface Lease {
  readonly id: string;
  readonly handle: SandboxHandle;
  release(): void;
}

function rangeCheck(field: string, v: number, min: number, max: number): number {
  if (!Number.isFinite(v) || v < min || v > max) {
    throw new VulcanError('limit_out_of_range', `${field} must be from ${min} to ${max}; got ${String(v)}`, { details: { field, min, max } });
  }
  return v;
}

export class SandboxManager {
  private readonly live = new Map<string, Live>();
  private ticker: NodeJS.Timeout | undefined;
  private closed = false;

  constructor(
    private readonly opts: { readonly store: SandboxStore; readonly backends: BackendSet; readonly config: Config; readonly log: Logger },
  ) {}

  /** Re-attaches what an earlier server left running, marks the rest lost, reaps orphans, starts the clocks. */
  async start(): Promise<void> {
    const { store, backends, log } = this.opts;
    const rows = store.list(['starting', 'running', 'paused'], 100_000);
    const keep = new Map<SandboxDriver, Set<string>>();
    for (const name of BACKEND_NAMES) {
      const e = backends.get(name);
      const d = e && e.availability.available ? sandboxDriverOf(e.backend) : undefined;
      if (d) keep.set(d, new Set());
    }
    for (const row of rows) {
      const e = backends.get(row.isolation_used as BackendName);
      const driver = e && e.availability.available ? sandboxDriverOf(e.backend) : undefined;
      const lose = (reason: string) => {
        store.end(row.id, 'lost', reason, Date.now());
        log.warn({ sandbox: row.id, reason }, 'sandbox lost at restart');
      };
      if (!driver) {
        lose(`the ${row.isolation_used} backend is not available after the restart`);
        continue;
      }
      if (row.state === 'starting' || row.driver_state === null) {
        lose('the server restarted while the sandbox was starting');
        continue;
      }
      const res = await driver.attach(row.id, JSON.parse(row.driver_state) as Record<string, unknown>, this.limitsOf(row), row.state === 'paused');
      if (!res.ok) {
        lose(res.reason);
        continue;
      }
      this.adopt(row.id, res.handle, driver, row.last_activity_at);
      keep.get(driver)?.add(row.id);
      log.info({ sandbox: row.id, state: row.state }, 'sandbox re-attached');
    }
    for (const [driver, ids] of keep) {
      const removed = await driver.reapOrphans(ids);
      if (removed.length) log.warn({ removed }, 'removed orphaned sandboxes');
    }
    this.ticker = setInterval(() => this.tick(), TICK_MS);
    this.ticker.unref();
  }

  private limitsOf(row: SandboxRow): SandboxLimits {
    return { cpus: row.cpus, memMB: row.mem_mb, diskMB: row.disk_mb, pidsMax: row.pids_max };
  }

  private adopt(id: string, handle: SandboxHandle, driver: SandboxDriver, lastActivity: number): void {
    const l: Live = { handle, driver, inflight: 0, lastActivity, activityDirty: false, ending: false };
    this.live.set(id, l);
    void handle.died.then((reason) => {
      if (this.live.get(id) !== l || l.ending) return;
      this.live.delete(id);
      this.opts.store.end(id, 'lost', reason, Date.now());
      this.opts.log.warn({ sandbox: id, reason }, 'sandbox died');
      void handle.destroy().catch(() => undefined);
    });
  }

  private tick(): void {
    const now = Date.now();
    for (const [id, l] of this.live) {
      if (l.ending) continue;
      const row = this.opts.store.get(id);
      if (!row) continue;
      if (l.activityDirty) {
        l.activityDirty = false;
        this.opts.store.update(id, { last_activity_at: l.lastActivity });
      }
      if (row.state !== 'running') continue;
      if (row.expires_at !== null && row.expires_at <= now) {
        void this.end(id, 'ttl').catch((err: unknown) => this.opts.log.error({ err, sandbox: id }, 'cannot destroy an expired sandbox'));
      } else if (row.idle_timeout_s > 0 && l.inflight === 0 && now - l.lastActivity >= row.idle_timeout_s * 1000) {
        void this.end(id, 'idle').catch((err: unknown) => this.opts.log.error({ err, sandbox: id }, 'cannot stop an idle sandbox'));
      }
    }
  }

  /** Picks the backend for a sandbox: a named one with a sandbox driver, or the first such for `auto`. */
  private choose(isolation: string): { name: BackendName; driver: SandboxDriver } {
    const { backends } = this.opts;
    if (isolation !== 'auto') {
      const name = isolation as BackendName;
      const e = backends.get(name);
      if (!e || !e.availability.available) {
        throw new VulcanError('backend_unavailable', `the ${isolation} backend is unavailable on this node: ${e && !e.availability.available ? e.availability.reason : 'not loaded'}`, { details: { isolation } });
      }
      const driver = sandboxDriverOf(e.backend);
      if (!driver) throw new VulcanError('backend_unavailable', `the ${isolation} backend does not host sandboxes yet (capabilities.sandboxes is false); use isolation "auto" or "namespace"`, { details: { isolation } });
      return { name, driver };
    }
    for (const name of AUTO_ORDER) {
      const e = backends.get(name);
      const driver = e && e.availability.available ? sandboxDriverOf(e.backend) : undefined;
      if (driver) return { name, driver };
    }
    throw new VulcanError('backend_unavailable', 'no available backend on this node hosts sandboxes', { details: { isolation } });
  }

  /** Creates a sandbox and waits until its agent answers. */
  async create(input: CreateSandboxInput, signal: AbortSignal): Promise<SandboxRecord> {
    if (this.closed) throw new VulcanError('backend_unavailable', 'the server is shutting down');
    const r = input.resources ?? {};
    const limits: SandboxLimits = {
      cpus: r.cpus === undefined ? SANDBOX_DEFAULTS.cpus : rangeCheck('resources.cpus', r.cpus, LIMIT_RANGES.cpus.min, LIMIT_RANGES.cpus.max()),
      memMB: r.mem_mb === undefined ? SANDBOX_DEFAULTS.memMB : rangeCheck('resources.mem_mb', r.mem_mb, LIMIT_RANGES.mem_mb.min, LIMIT_RANGES.mem_mb.max()),
      diskMB: r.disk_mb === undefined ? SANDBOX_DEFAULTS.diskMB : rangeCheck('resources.disk_mb', r.disk_mb, SANDBOX_RANGES.disk_mb.min, SANDBOX_RANGES.disk_mb.max),
      pidsMax: SANDBOX_DEFAULTS.pidsMax,
    };
    const ttlS = input.ttl_s === undefined ? SANDBOX_DEFAULTS.ttlS : rangeCheck('ttl_s', input.ttl_s, SANDBOX_RANGES.ttl_s.min, SANDBOX_RANGES.ttl_s.max);
    const idleS = input.idle_timeout_s === undefined ? SANDBOX_DEFAULTS.idleTimeoutS : rangeCheck('idle_timeout_s', input.idle_timeout_s, SANDBOX_RANGES.idle_timeout_s.min, SANDBOX_RANGES.idle_timeout_s.max);
    const isolation = input.isolation ?? 'auto';
    const { name, driver } = this.choose(isolation);
    const image = input.image ?? driver.defaultImage;
    if (name === 'namespace' && image !== 'host') {
      throw new VulcanError('invalid_request', `namespace sandboxes run on the host's read-only /usr; drop image (or set it to "host"); got ${JSON.stringify(image)}`, { details: { field: 'image' } });
    }
    const id = ulid();
    const env = input.env ?? {};
    const now = Date.now();
    this.opts.store.insert({
      id,
      state: 'starting',
      isolation,
      isolation_used: name,
      image,
      node_id: this.opts.config.nodeName,
      cpus: limits.cpus,
      mem_mb: limits.memMB,
      disk_mb: limits.diskMB,
      pids_max: limits.pidsMax,
      ttl_s: ttlS,
      idle_timeout_s: idleS,
      env: JSON.stringify(env),
      metadata: JSON.stringify(input.metadata ?? {}),
      driver_state: null,
      created_at: now,
      expires_at: now + ttlS * 1000,
      ttl_remaining_ms: null,
      last_activity_at: now,
      paused_at: null,
      ended_at: null,
      end_reason: null,
    });
    let handle: SandboxHandle;
    try {
      handle = await driver.create({ id, image, limits, env }, signal);
    } catch (err) {
      const message = (err as Error).message;
      this.opts.store.end(id, 'lost', `failed to start: ${message}`, Date.now());
      this.opts.log.error({ err, sandbox: id }, 'sandbox failed to start');
      // A driver that found the request at fault (e.g. unknown_image) says so with its own code.
      if (err instanceof VulcanError) throw err;
      throw new VulcanError('backend_unavailable', `the sandbox could not start: ${message}`, { details: { id }, cause: err });
    }
    const started = Date.now();
    // The TTL counts from when the sandbox is usable.
    this.opts.store.update(id, { state: 'running', driver_state: JSON.stringify(handle.persisted), expires_at: started + ttlS * 1000, last_activity_at: started });
    this.adopt(id, handle, driver, started);
    return this.get(id);
  }

  private row(id: string): SandboxRow {
    const row = this.opts.store.get(id);
    if (!row) throw new VulcanError('not_found', `no sandbox ${id}`, { details: { id } });
    return row;
  }

  /** One sandbox's record. */
  get(id: string): SandboxRecord {
    return toRecord(this.row(id));
  }

  /** Sandboxes, newest first, filtered by state and by metadata (every pair must match). */
  list(filter: { state?: SandboxState; metadata?: Record<string, string>; limit?: number } = {}): SandboxRecord[] {
    const rows = this.opts.store.list(filter.state ? [filter.state] : [], 100_000);
    const out: SandboxRecord[] = [];
    for (const row of rows) {
      const rec = toRecord(row);
      if (filter.metadata && !Object.entries(filter.metadata).every(([k, v]) => rec.metadata[k] === v)) continue;
      out.push(rec);
      if (out.length >= (filter.limit ?? 500)) break;
    }
    return out;
  }

  private gone(row: SandboxRow): VulcanError {
    return new VulcanError('sandbox_destroyed', row.state === 'lost' ? `sandbox ${row.id} was lost: ${row.end_reason ?? 'unknown reason'}` : `sandbox ${row.id} was destroyed (${row.end_reason ?? 'requested'}); create a new one`, {
      details: { id: row.id, state: row.state, end_reason: row.end_reason },
    });
  }

  /** A lease on a running sandbox, or the error that says why there is none. */
  private acquire(id: string, allowPaused = false, known?: SandboxRow): Lease {
    const row = known ?? this.row(id);
    if (row.state === 'destroyed' || row.state === 'lost') throw this.gone(row);
    const l = this.live.get(id);
    if (!l || l.ending) throw new VulcanError('sandbox_destroyed', `sandbox ${id} is being destroyed`, { details: { id } });
    if (row.state === 'paused' && !allowPaused) throw new VulcanError('conflict', `sandbox ${id} is paused; POST /v1/sandboxes/${id}/resume first`, { details: { id, state: row.state } });
    if (row.state === 'starting') throw new VulcanError('conflict', `sandbox ${id} is still starting`, { details: { id, state: row.state } });
    l.inflight++;
    this.touch(l);
    let released = false;
    return {
      id,
      handle: l.handle,
      release: () => {
        if (released) return;
        released = true;
        l.inflight--;
        this.touch(l);
      },
    };
  }

  private touch(l: Live): void {
    l.lastActivity = Date.now();
    l.activityDirty = true;
  }

  /** Throws the error a failed agent connection means: the sandbox ended, or the agent broke. */
  private lostConnection(id: string, err: unknown): VulcanError {
    if (err instanceof VulcanError) return err;
    const row = this.opts.store.get(id);
    if (row && (row.state === 'destroyed' || row.state === 'lost' || this.live.get(id)?.ending)) return this.gone({ ...row, state: row.state === 'lost' ? 'lost' : 'destroyed' });
    this.opts.log.error({ err, sandbox: id }, 'sandbox agent connection failed');
    return new VulcanError('internal', `the sandbox agent of ${id} failed: ${(err as Error).message}`, { cause: err });
  }

  private async connect(lease: Lease): Promise<Duplex> {
    try {
      return await lease.handle.connect();
    } catch (err) {
      throw this.lostConnection(lease.id, err);
    }
  }

  /** A one-answer agent op (stat, list, glob, remove, move, chmod, mkdir). */
  async call(id: string, req: Record<string, unknown>, what: string): Promise<AgentReply & { ok: true }> {
    const lease = this.acquire(id);
    try {
      const conn = await this.connect(lease);
      try {
        sendRequest(conn, req);
        const r = await readReply(conn).catch((err: unknown) => {
          throw this.lostConnection(id, err);
        });
        if (!r.ok) throw agentErrorToApi(r.error, what);
        return r;
      } finally {
        conn.destroy();
      }
    } finally {
      lease.release();
    }
  }

  /**
   * Opens a file (or, with `op: 'tar-out'`, a tar of a directory) for reading. The caller
   * pipes `body` and must call `done` when finished.
   */
  async openRead(id: string, req: { op: 'read'; path: string } | { op: 'tar-out'; path: string }, what: string): Promise<{ meta: Record<string, unknown>; body: Duplex; done: () => void }> {
    const lease = this.acquire(id);
    let conn: Duplex | undefined;
    try {
      conn = await this.connect(lease);
      sendRequest(conn, req);
      const r = await readReply(conn).catch((err: unknown) => {
        throw this.lostConnection(id, err);
      });
      if (!r.ok) throw agentErrorToApi(r.error, what);
      const body = conn;
      return {
        meta: r,
        body,
        done: () => {
          body.destroy();
          lease.release();
        },
      };
    } catch (err) {
      conn?.destroy();
      lease.release();
      throw err;
    }
  }

  /** Streams `body` into a file (`write`) or extracts it as a tar (`tar-in`). */
  async writeFrom(id: string, req: { op: 'write'; path: string; mode: number } | { op: 'tar-in'; path: string }, body: Readable, what: string): Promise<AgentReply & { ok: true }> {
    const lease = this.acquire(id);
    try {
      const conn = await this.connect(lease);
      try {
        sendRequest(conn, req);
        const answer = readReply(conn);
        answer.catch(() => undefined);
        let sendError: unknown;
        // The agent may answer early (a directory in the way): then stop sending.
        await Promise.race([
          pipeline(body, conn).catch((err: unknown) => {
            sendError = err;
          }),
          answer.then(
            () => undefined,
            () => undefined,
          ),
        ]);
        const r = await answer.catch((err: unknown) => {
          if (sendError) throw new VulcanError('invalid_request', `the upload did not complete: ${(sendError as Error).message}`);
          throw this.lostConnection(id, err);
        });
        if (!r.ok) throw agentErrorToApi(r.error, what);
        return r;
      } finally {
        conn.destroy();
      }
    } finally {
      lease.release();
    }
  }

  /** Opens a TCP connection to `port` on the sandbox's own loopback (the preview relay). */
  async connectPort(id: string, port: number): Promise<{ sock: Duplex; done: () => void }> {
    const lease = this.acquire(id);
    let conn: Duplex | undefined;
    try {
      conn = await this.connect(lease);
      sendRequest(conn, { op: 'connect', port });
      const r = await readReply(conn).catch((err: unknown) => {
        throw this.lostConnection(id, err);
      });
      if (!r.ok) {
        if (r.error.errno === 'ECONNREFUSED') throw new VulcanError('backend_unavailable', `nothing listens on port ${port} inside sandbox ${id}`, { details: { id, port } });
        throw agentErrorToApi(r.error, `port ${port}`);
      }
      const sock = conn;
      sock.resume();
      return {
        sock,
        done: () => {
          sock.destroy();
          lease.release();
        },
      };
    } catch (err) {
      conn?.destroy();
      lease.release();
      throw err;
    }
  }

  /** Starts a command. The session holds a lease until the command ends. */
  async openExec(id: string, req: ExecRequest): Promise<ExecSession> {
    const row = this.row(id);
    const lease = this.acquire(id, false, row);
    let conn: Duplex;
    try {
      conn = await this.connect(lease);
    } catch (err) {
      lease.release();
      throw err;
    }
    const env: Record<string, string> = { ...BASE_ENV, ...(req.pty ? { TERM: 'xterm-256color' } : {}), ...(JSON.parse(row.env) as Record<string, string>), ...(req.env ?? {}) };
    sendRequest(conn, {
      op: 'exec',
      cmd: req.cmd,
      env,
      cwd: req.cwd ?? '/work',
      timeout_ms: Math.round(req.timeoutMs),
      ...(req.stdin ? { stdin: req.stdin.toString('base64') } : {}),
      ...(req.streamStdin ? { stdin_stream: true } : {}),
      ...(req.pty ? { pty: req.pty } : {}),
    });
    const listeners: ((stream: 'stdout' | 'stderr', chunk: Buffer) => void)[] = [];
    const decoder = new FrameDecoder();
    let exit: ExecExit | undefined;
    const exited = new Promise<ExecExit>((resolve, reject) => {
      conn.on('data', (chunk: Buffer) => {
        let frames;
        try {
          frames = decoder.push(chunk);
        } catch (err) {
          conn.destroy(err as Error);
          return;
        }
        for (const f of frames) {
          if (f.type === AGENT_FRAME.stdout || f.type === AGENT_FRAME.stderr) {
            const stream = f.type === AGENT_FRAME.stdout ? 'stdout' : 'stderr';
            for (const fn of listeners) fn(stream, f.body);
          } else if (f.type === AGENT_FRAME.exit) {
            try {
              const e = JSON.parse(f.body.toString('utf8')) as Partial<ExecExit>;
              exit = {
                exit_code: typeof e.exit_code === 'number' ? e.exit_code : null,
                signal: typeof e.signal === 'string' ? e.signal : null,
                timed_out: e.timed_out === true,
                duration_ms: typeof e.duration_ms === 'number' ? e.duration_ms : 0,
              };
            } catch {
              exit = { exit_code: null, signal: null, timed_out: false, duration_ms: 0 };
            }
            // The exit frame is the agent's last word (every output frame came before it):
            // answer now rather than a loop turn later, at the connection's close.
            lease.release();
            resolve(exit);
            conn.destroy();
            return;
          }
        }
      });
      conn.on('error', () => undefined);
      // The agent ends after the exit frame; our side is half-open, so close it.
      conn.on('end', () => conn.destroy());
      conn.on('close', () => {
        lease.release();
        if (exit) resolve(exit);
        else reject(this.lostConnection(id, new Error('the connection to the sandbox agent closed before the command ended')));
      });
    });
    exited.catch(() => undefined);
    const send = (type: number, payload: Buffer | string) => {
      if (!conn.destroyed && conn.writable) conn.write(encodeFrame(type, payload));
    };
    return {
      onOutput: (fn) => listeners.push(fn),
      exited,
      writeStdin: (data) => send(SERVER_FRAME.stdin, data),
      endStdin: () => send(SERVER_FRAME.stdinEof, ''),
      resize: (rows, cols) => send(SERVER_FRAME.resize, JSON.stringify({ rows, cols })),
      signal: (name) => send(SERVER_FRAME.signal, JSON.stringify({ signal: name })),
      pause: () => conn.pause(),
      resume: () => conn.resume(),
      close: () => conn.destroy(),
    };
  }

  /** Runs a command to its end, keeping up to `capBytes` of each stream. */
  async exec(id: string, req: ExecRequest, capBytes: number, signal?: AbortSignal): Promise<ExecExit & { stdout: string; stderr: string; stdout_truncated: boolean; stderr_truncated: boolean }> {
    const s = await this.openExec(id, req);
    const bufs = { stdout: [] as Buffer[], stderr: [] as Buffer[] };
    const sizes = { stdout: 0, stderr: 0 };
    const truncated = { stdout: false, stderr: false };
    s.onOutput((stream, chunk) => {
      const room = capBytes - sizes[stream];
      if (room <= 0) {
        truncated[stream] = true;
        return;
      }
      const part = chunk.length > room ? chunk.subarray(0, room) : chunk;
      if (part.length < chunk.length) truncated[stream] = true;
      bufs[stream].push(part);
      sizes[stream] += part.length;
    });
    const onAbort = () => s.close();
    signal?.addEventListener('abort', onAbort, { once: true });
    try {
      const e = await s.exited;
      return {
        ...e,
        stdout: Buffer.concat(bufs.stdout).toString('utf8'),
        stderr: Buffer.concat(bufs.stderr).toString('utf8'),
        stdout_truncated: truncated.stdout,
        stderr_truncated: truncated.stderr,
      };
    } finally {
      signal?.removeEventListener('abort', onAbort);
    }
  }

  /** Freezes a running sandbox. The TTL clock stops; it is not idle while paused. */
  async pause(id: string): Promise<SandboxRecord> {
    const row = this.row(id);
    if (row.state === 'destroyed' || row.state === 'lost') throw this.gone(row);
    if (row.state === 'paused') return toRecord(row);
    const l = this.live.get(id);
    if (!l || l.ending || row.state !== 'running') throw new VulcanError('conflict', `sandbox ${id} is ${row.state}; only a running sandbox can be paused`, { details: { id, state: row.state } });
    if (!l.driver.capabilities.pause) throw new VulcanError('conflict', `the ${row.isolation_used} backend cannot pause sandboxes (capabilities.pause is false)`, { details: { id } });
    await l.handle.pause();
    const now = Date.now();
    this.opts.store.update(id, { state: 'paused', paused_at: now, ttl_remaining_ms: Math.max(0, (row.expires_at ?? now) - now), expires_at: null });
    return this.get(id);
  }

  /** Thaws a paused sandbox; its TTL clock runs again from where it stopped. */
  async resume(id: string): Promise<SandboxRecord> {
    const row = this.row(id);
    if (row.state === 'destroyed' || row.state === 'lost') throw this.gone(row);
    if (row.state === 'running') return toRecord(row);
    const l = this.live.get(id);
    if (!l || l.ending || row.state !== 'paused') throw new VulcanError('conflict', `sandbox ${id} is ${row.state}; only a paused sandbox can be resumed`, { details: { id, state: row.state } });
    await l.handle.resume();
    const now = Date.now();
    this.opts.store.update(id, { state: 'running', paused_at: null, expires_at: now + (row.ttl_remaining_ms ?? 0), ttl_remaining_ms: null, last_activity_at: now });
    this.touch(l);
    return this.get(id);
  }

  /** Sets the TTL to `ttlS` seconds from now (longer or shorter). */
  setTimeout(id: string, ttlS: number): SandboxRecord {
    rangeCheck('ttl_s', ttlS, SANDBOX_RANGES.ttl_s.min, SANDBOX_RANGES.ttl_s.max);
    const row = this.row(id);
    if (row.state === 'destroyed' || row.state === 'lost') throw this.gone(row);
    const ms = Math.round(ttlS * 1000);
    if (row.state === 'paused') this.opts.store.update(id, { ttl_remaining_ms: ms });
    else this.opts.store.update(id, { expires_at: Date.now() + ms });
    return this.get(id);
  }

  /** Destroys a sandbox (DELETE). Idempotent for a sandbox that already ended. */
  async destroy(id: string): Promise<void> {
    const row = this.row(id);
    if (row.state === 'destroyed' || row.state === 'lost') return;
    await this.end(id, 'requested');
  }

  private async end(id: string, reason: 'requested' | 'ttl' | 'idle'): Promise<void> {
    const l = this.live.get(id);
    if (l) {
      if (l.ending) return;
      l.ending = true;
    }
    try {
      await l?.handle.destroy();
    } finally {
      this.live.delete(id);
      this.opts.store.end(id, 'destroyed', reason, Date.now());
      this.opts.log.info({ sandbox: id, reason }, 'sandbox destroyed');
    }
  }

  /** Stops the clocks and lets go of the sandboxes: they keep running for the next server process. Idempotent. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    clearInterval(this.ticker);
    for (const [id, l] of this.live) if (l.activityDirty) this.opts.store.update(id, { last_activity_at: l.lastActivity });
    const drivers = new Set([...this.live.values()].map((l) => l.driver));
    for (const name of BACKEND_NAMES) {
      const e = this.opts.backends.get(name);
      const d = e ? sandboxDriverOf(e.backend) : undefined;
      if (d) drivers.add(d);
    }
    for (const d of drivers) d.close();
    this.live.clear();
  }

  /** Every backend's sandbox support, for `GET /v1/sandboxes/capabilities` and the conformance matrix. */
  capabilities(): { backend: BackendName; available: boolean; sandboxes: boolean; capabilities: SandboxDriver['capabilities'] | null }[] {
    return BACKEND_NAMES.flatMap((name) => {
      const e = this.opts.backends.get(name);
      if (!e) return [];
      const d = sandboxDriverOf(e.backend);
      return [{ backend: name, available: e.availability.available, sandboxes: d !== undefined, capabilities: d?.capabilities ?? null }];
    });
  }
}
