/**
 * The API server's side of the isolate hosts: it starts them (inside bubblewrap, each in its
 * own cgroup), hands them jobs, forwards their output, and restarts one that dies, failing only
 * that host's in-flight jobs with `sandbox_crashed`.
 */
import type { ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { cgexecPathFor, spawnBwrap } from '../../host/bwrap.js';
import { createCgroup, type Cgroup } from '../../host/cgroups.js';
import type { Logger } from '../../core/context.js';
import type { RunAbort, RunIO } from '../../core/backend.js';
import { createFrameDecoder, encodeFrame, type FromHost, type HostJob, type HostResult } from './protocol.js';
import { HOST_DIR_IN_SANDBOX } from './host-files.js';

/** The code a run ended by its RunAbort gets: `timeout`, or `killed` for a kill or a shutdown. */
export function abortCode(abort: RunAbort): 'timeout' | 'killed' {
  return abort.reason?.kind === 'timeout' ? 'timeout' : 'killed';
}

/** Everything needed to start one host. */
export interface HostSpawnOptions {
  readonly installDir: string;
  /** The directory holding host/main.js and its node_modules (see host-files.ts). */
  readonly hostDir: string;
  /** A tag on the host's command line, to find its processes (tests, operators). */
  readonly tag: string;
  /** The host's process-wide memory cap in MiB (its cgroup). */
  readonly memMB: number;
  readonly cpus: number;
  readonly pidsMax: number;
  /** The host's nice value; above 0 it also runs under SCHED_BATCH (see BwrapOptions.nice). */
  readonly nice: number;
}

/** A started host process and the cgroup that holds it. */
export interface SpawnedHost {
  readonly child: ChildProcess;
  readonly cgroup: Cgroup;
}

/**
 * Starts one isolate host: `node --no-node-snapshot host/main.js` inside bwrap (no network,
 * read-only filesystem, uid 65534 on the host) and inside a fresh cgroup that caps the whole
 * process's memory, since per-isolate heap limits are soft (Wasm memory and large allocations
 * can overshoot them). The one place that decides how a host is wrapped.
 */
export async function spawnHost(opts: HostSpawnOptions, index: number): Promise<SpawnedHost> {
  const cgroup = await createCgroup(`isolate-host-${process.pid}-${index}-${randomBytes(3).toString('hex')}`, {
    memBytes: opts.memMB * 1024 * 1024,
    pidsMax: opts.pidsMax,
    cpus: opts.cpus,
  });
  try {
    const child = spawnBwrap({
      argv: [
        process.execPath,
        '--no-node-snapshot',
        // Defence in depth: no single Wasm memory may outgrow the host (each run is capped lower, in the bootstrap).
        `--wasm-max-mem-pages=${opts.memMB * 16}`,
        `${HOST_DIR_IN_SANDBOX}/host/main.js`,
        `--vulcan-isolate-host=${opts.tag}`,
      ],
      env: {},
      diskMB: 16,
      roBinds: [{ src: opts.hostDir, dest: HOST_DIR_IN_SANDBOX }],
      cgroup,
      cgexecPath: cgexecPathFor(opts.installDir),
      nice: opts.nice,
      // Every synchronous run arms an isolated-vm timeout, and isolated-vm's timer thread wakes
      // when each one lapses, used or not: ≈ 3 000 wake-ups a second under load, 12 % of the
      // host's CPU. A 1 ms slack lets the kernel fold them (measured: 14–16 → ≈ 4 µs of the
      // timer thread's CPU per run). It also lets the host's own timers (a run's setTimeout,
      // its deadline) fire up to 1 ms late.
      timerSlackUs: HOST_TIMER_SLACK_US,
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    return { child, cgroup };
  } catch (error) {
    await cgroup.destroy();
    throw error;
  }
}

interface Pending {
  readonly io: RunIO;
  readonly resolve: (result: HostResult) => void;
}

/** The hosts' timer slack (see spawnHost). */
export const HOST_TIMER_SLACK_US = 1_000;

/** How long a host may take to start before it counts as failed. */
const READY_TIMEOUT_MS = 15_000;
/** How long a cancelled job may take to be confirmed before its host is killed. */
const CANCEL_GRACE_MS = 1_000;

/** One running host and its jobs. */
class HostHandle {
  private readonly pending = new Map<number, Pending>();
  private nextId = 1;
  private dead = false;
  private stderrTail = '';
  private destroying: Promise<void> | null = null;
  private outbox: Buffer[] = [];
  /** True once the host said it is ready (and until it dies: see `alive`). */
  isReady = false;
  readonly ready: Promise<void>;

  constructor(
    private readonly spawned: SpawnedHost,
    private readonly log: Logger,
    private readonly onExit: (handle: HostHandle, why: string) => void,
  ) {
    const { child } = spawned;
    let markReady: () => void = () => undefined;
    let failReady: (error: Error) => void = () => undefined;
    this.ready = new Promise<void>((resolve, reject) => {
      markReady = resolve;
      failReady = reject;
    });
    this.ready.catch(() => undefined);
    const readyTimer = setTimeout(() => {
      failReady(new Error(`the isolate host did not start within ${READY_TIMEOUT_MS} ms`));
      this.kill();
    }, READY_TIMEOUT_MS);
    const decode = createFrameDecoder<FromHost>((message) => {
      if (message.t === 'ready') {
        clearTimeout(readyTimer);
        this.isReady = true;
        markReady();
      } else if (message.t === 'out') {
        const p = this.pending.get(message.id);
        if (p !== undefined) {
          if (message.fd === 1) p.io.stdout(Buffer.from(message.data));
          else p.io.stderr(Buffer.from(message.data));
        }
      } else if (message.t === 'done') {
        const p = this.pending.get(message.id);
        this.pending.delete(message.id);
        p?.resolve(message.result);
      } else if (message.t === 'log') {
        this.log[message.level]({ backend: 'isolate' }, message.msg);
      }
    });
    child.stdout?.on('data', (chunk: Buffer) => {
      try {
        decode(chunk);
      } catch (error) {
        this.log.error({ backend: 'isolate', err: String(error) }, 'isolate host sent a bad frame; killing it');
        this.kill();
      }
    });
    child.stderr?.on('data', (chunk: Buffer) => {
      this.stderrTail = (this.stderrTail + chunk.toString('utf8')).slice(-2000);
    });
    child.stdin?.on('error', () => undefined);
    child.on('error', (error) => {
      clearTimeout(readyTimer);
      failReady(error);
      this.exited(`could not start: ${error.message}`);
    });
    child.on('exit', (code, signal) => {
      clearTimeout(readyTimer);
      const oom = this.oomKills();
      const why =
        oom > 0
          ? 'the isolate host went over its memory cap and the kernel killed it'
          : `the isolate host exited (${signal ?? `code ${String(code)}`})${this.stderrTail.trim() === '' ? '' : `: ${this.stderrTail.trim().split('\n').slice(-3).join(' | ')}`}`;
      failReady(new Error(why));
      this.exited(why);
    });
  }

  /** Jobs in flight. */
  get load(): number {
    return this.pending.size;
  }

  get alive(): boolean {
    return !this.dead;
  }

  /** Sends a job; resolves with the host's result, or with `sandbox_crashed` if the host dies first. */
  run(job: HostJob, io: RunIO, abort: RunAbort): Promise<HostResult> {
    const id = this.nextId++;
    return new Promise<HostResult>((resolve) => {
      let killTimer: NodeJS.Timeout | undefined;
      const onAbort = () => {
        this.send({ t: 'cancel', id, code: abortCode(abort) });
        // A host that cannot confirm a cancel in time is stuck; killing it frees its jobs.
        killTimer = setTimeout(() => this.kill(), CANCEL_GRACE_MS);
      };
      // A run aborted already gets its cancel after its run frame.
      const stopListening = abort.aborted ? () => undefined : abort.onAbort(onAbort);
      this.pending.set(id, {
        io,
        resolve: (result) => {
          if (killTimer !== undefined) clearTimeout(killTimer);
          stopListening();
          resolve(result);
        },
      });
      this.send({ t: 'run', id, job });
      if (abort.aborted) onAbort();
    });
  }

  /** Kills the host at once; its jobs end as `sandbox_crashed`. */
  kill(): void {
    if (this.dead) return;
    // bwrap runs with --die-with-parent: killing it takes the sandbox down with it; the exit
    // handler then destroys the cgroup (which kills anything left).
    this.spawned.child.kill('SIGKILL');
  }

  /** Stops the host and removes its cgroup. Idempotent. */
  async close(): Promise<void> {
    if (!this.dead) {
      const exited = new Promise<void>((resolve) => {
        this.spawned.child.once('exit', () => resolve());
        setTimeout(resolve, 2_000).unref();
      });
      this.kill();
      await exited;
    }
    await this.destroyCgroup();
  }

  /** Destroys the cgroup once; every caller waits for the same removal. */
  private destroyCgroup(): Promise<void> {
    this.destroying ??= this.spawned.cgroup.destroy().catch((error: unknown) => {
      this.log.warn({ backend: 'isolate', err: String(error) }, 'could not remove an isolate host cgroup');
    });
    return this.destroying;
  }

  private oomKills(): number {
    try {
      return this.spawned.cgroup.stats().oomKills;
    } catch {
      return 0;
    }
  }

  /**
   * Queues a frame for the host. Frames of one turn of the event loop leave in one write: under
   * load that is one syscall and one wake-up of the host for many jobs, not one each.
   */
  private send(message: Parameters<typeof encodeFrame>[0]): void {
    if (this.dead) return;
    this.outbox.push(encodeFrame(message));
    if (this.outbox.length === 1) setImmediate(() => this.flush());
  }

  private flush(): void {
    const frames = this.outbox;
    this.outbox = [];
    if (this.dead || frames.length === 0) return;
    this.spawned.child.stdin?.write(frames.length === 1 ? (frames[0] as Buffer) : Buffer.concat(frames));
  }

  private exited(why: string): void {
    if (this.dead) return;
    this.dead = true;
    const crashed: HostResult = { ok: false, code: 'sandbox_crashed', message: why, startMs: 0, execMs: 0, reused: false };
    for (const p of this.pending.values()) p.resolve(crashed);
    this.pending.clear();
    void this.destroyCgroup();
    this.onExit(this, why);
  }
}

/** Options of a pool of hosts. */
export interface HostPoolOptions extends HostSpawnOptions {
  /** How many hosts run side by side. */
  readonly hosts: number;
  /** Starts one host; defaults to `spawnHost`. */
  readonly spawn?: (opts: HostSpawnOptions, index: number) => Promise<SpawnedHost>;
}

/** Restarts in a row, within this window, before the pool waits between restarts. */
const RESTART_BURST = 5;
const RESTART_WINDOW_MS = 10_000;
const RESTART_BACKOFF_MS = 1_000;

/** A fixed number of supervised hosts; jobs go to the least loaded live one. */
export class HostPool {
  private readonly slots: (HostHandle | null)[];
  private readonly starting: (Promise<HostHandle> | null)[];
  private readonly restarts: number[][];
  /** Every handle not yet closed, dead ones included: their cgroups may still be going. */
  private readonly handles = new Set<HostHandle>();
  private closed = false;

  constructor(
    private readonly opts: HostPoolOptions,
    private readonly log: Logger,
  ) {
    this.slots = Array.from({ length: opts.hosts }, () => null);
    this.starting = Array.from({ length: opts.hosts }, () => null);
    this.restarts = Array.from({ length: opts.hosts }, () => []);
  }

  /** Starts every host and waits until each is ready. */
  async start(): Promise<void> {
    await Promise.all(this.slots.map((_, i) => this.ensure(i)));
  }

  /** Runs one job on the least loaded host. */
  async run(job: HostJob, io: RunIO, abort: RunAbort): Promise<HostResult> {
    if (this.closed) throw new Error('the isolate backend is closed');
    let best: HostHandle | null = null;
    for (const h of this.slots) if (h !== null && h.alive && h.isReady && (best === null || h.load < best.load)) best = h;
    // Counted in the host's load before anything awaits, so a burst of runs in one tick spreads.
    if (best !== null) return best.run(job, io, abort);
    const handle = await this.ensure(this.slots.findIndex((h) => h === null || !h.alive));
    await handle.ready;
    return handle.run(job, io, abort);
  }

  /** Stops every host. Idempotent. */
  async close(): Promise<void> {
    this.closed = true;
    await Promise.all(this.starting.filter((p): p is Promise<HostHandle> => p !== null).map((p) => p.catch(() => null)));
    await Promise.all([...this.handles].map((h) => h.close()));
    this.handles.clear();
  }

  private ensure(index: number): Promise<HostHandle> {
    const i = Math.max(0, index);
    const live = this.slots[i];
    if (live != null && live.alive) return Promise.resolve(live);
    const inFlight = this.starting[i];
    if (inFlight != null) return inFlight;
    const started = this.startHost(i).finally(() => {
      this.starting[i] = null;
    });
    this.starting[i] = started;
    return started;
  }

  private async startHost(index: number): Promise<HostHandle> {
    const now = Date.now();
    const recent = (this.restarts[index] ?? []).filter((t) => now - t < RESTART_WINDOW_MS);
    this.restarts[index] = [...recent, now];
    if (recent.length >= RESTART_BURST) await new Promise((r) => setTimeout(r, RESTART_BACKOFF_MS));
    const spawned = await (this.opts.spawn ?? spawnHost)(this.opts, index);
    const handle = new HostHandle(spawned, this.log, (h, why) => {
      if (this.slots[index] === h) this.slots[index] = null;
      if (this.closed) return;
      // Its cgroup is being removed by the handle itself; forget it once that is done.
      void h.close().then(() => this.handles.delete(h));
      this.log.warn({ backend: 'isolate', host: index, why }, 'isolate host died; restarting it');
      void this.ensure(index).catch((error: unknown) => this.log.error({ backend: 'isolate', host: index, err: String(error) }, 'isolate host restart failed'));
    });
    this.slots[index] = handle;
    this.handles.add(handle);
    await handle.ready;
    return handle;
  }
}
