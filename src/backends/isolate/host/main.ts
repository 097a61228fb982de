/**
 * The isolate host: a child process of the API server that runs user code in V8 isolates
 * (isolated-vm). It must be started with `node --no-node-snapshot` (isolated-vm 5 cannot run
 * in a process booted from Node's startup snapshot). It reads `ToHost` frames on stdin and
 * writes `FromHost` frames on stdout (see ../protocol.ts); it never prints anything else there.
 *
 * Nothing of one run is visible to the next. Runs go, in this order of preference, to:
 * - a hardened isolate (per memory limit, any code, one run at a time): one long-lived context,
 *   locked down with SES and reset after every run (see bootstrap.ts); a run there costs no new
 *   context. Made off the request path (≈ 65 ms of CPU each): PREWARM_HARDENED per limit at
 *   start, then one more when a run has waited GROW_AFTER_MS for one while slow runs hold them
 *   all, up to HARDENED_TOTAL;
 * - only when SES cannot be loaded or a hardened context cannot be built (logged): a context no
 *   other run has touched, in an isolate kept warm one of two ways:
 *   fresh isolates (per memory limit) that have run nothing yet, each with a context already
 *   bootstrapped, for new code; or isolates that finished a run of the same code (same hash,
 *   same memory limit) cleanly, which run it again in a new context.
 * An isolate that timed out, hit a limit, was cancelled, or whose hardened context could not be
 * fully reset is disposed, never reused.
 */
import { randomFillSync } from 'node:crypto';
import fs from 'node:fs';
import ivm from 'isolated-vm';
import { BOOTSTRAP_SOURCE } from './bootstrap.js';
import { createFrameDecoder, encodeFrame, wrapCommonJs, type FromHost, type HostJob, type HostResult, type ToHost } from '../protocol.js';
import type { WorkloadErrorCode } from '../../../core/errors.js';

/** Fresh isolates kept ready per memory limit. */
const FRESH_PER_MEM = 2;
/** Memory limits (MiB) that keep fresh isolates; the least recently used drops out. */
const FRESH_MEM_KEYS = 3;
/**
 * Idle isolates kept per code hash and memory limit. One isolate runs one job at a time, so
 * this must cover the jobs of one code in flight at once (the server's VULCAN_MAX_CONCURRENT):
 * past it, every run pays for a new isolate (measured: 113 → 610 runs/s with 50 in flight).
 */
const IDLE_PER_KEY = 64;
/** Idle isolates kept in all (≈ 1–2 MiB each). */
const IDLE_TOTAL = 128;
/** An isolate is not reused after this many runs… */
const MAX_RUNS_PER_ISOLATE = 500;
/** …or when a finished run left its heap above this share of the limit. */
const REUSE_HEAP_SHARE = 0.5;
/** Compiled-code cache entries (by code hash). */
const CODE_CACHE_ENTRIES = 256;
/** Largest JSON output a run may return. */
const MAX_OUTPUT_JSON_BYTES = 16 * 1024 * 1024;
/** Memory limits to warm before any job asks: the isolate default and the core default. */
const PREWARM_MEM_MB = [128, 256];
/**
 * Hardened isolates built per memory limit before any run asks (PREWARM_MEM_MB). A sync run holds
 * one for a fraction of a millisecond, so a few serve many clients.
 */
const PREWARM_HARDENED = 2;
/**
 * Hardened isolates in all, the most runs a host has in flight without queueing (≈ 3 MiB of
 * heap each: SES and the frozen intrinsics). Past it, runs wait for one to come free.
 */
const HARDENED_TOTAL = 48;
/**
 * One more hardened isolate is made (≈ 65 ms of CPU) when a run has waited this long for one and
 * every hardened isolate of its limit has been held at least this long: by slow runs (timers,
 * long loops), which more isolates help. Short runs that keep the isolates busy only because
 * the CPU is saturated would gain nothing from more, so they do not trigger one.
 */
const GROW_AFTER_MS = 20;
/** A hardened isolate is rebuilt after this many runs (its heap's caches, never its state, grow). */
const MAX_RUNS_HARDENED = 10_000;
/** Compiled scripts kept per isolate (a hardened isolate runs many codes in turn). */
const SCRIPTS_PER_ISOLATE = 64;
/** Evaluated CommonJS factories kept per hardened context. */
const FACTORIES_PER_CONTEXT = 16;
/** A hardened isolate's heap is checked after every this many runs (and after any run over 1 ms). */
const HEAP_CHECK_EVERY = 16;
/** Times a run is moved to another hardened isolate when the one it got cannot be reset. */
const MAX_RESET_RETRIES = 2;
/**
 * Script code whose last SYNC_AFTER_RUNS runs here each took under SYNC_CPU_MS of the isolate's
 * CPU runs synchronously on this thread: no hop to isolated-vm's thread pool and back, which
 * costs more than such a run itself. A synchronous run may hold this thread for SYNC_SLICE_MS at
 * most (wall clock, the only clock isolated-vm's timeout has): past it, the run is stopped, its
 * isolate thrown away, and the job starts again the usual way (nothing of the stopped try reaches
 * the caller: its output is held in the isolate until it ends). A try stopped by the slice after
 * using at least half of it in CPU marks its code slow: it never runs synchronously here again (a
 * try stopped while it had used less was only kept off the CPU by a busy machine, and changes
 * nothing). A synchronous run that ends having used SYNC_DEMOTE_CPU_MS or more is a strike: the
 * code's next runs go the usual way until SYNC_AFTER_RUNS of them are fast again. And when the
 * strikes among its last SYNC_STRIKE_WINDOW synchronous runs used SYNC_STRIKE_BUDGET_MS of CPU
 * together, the code is marked slow too. A strike or two does not mark it: under load a hello
 * world's run takes 3–30 ms of CPU now and then (every 10 to 100 runs here, often a few close
 * together), and while one strike marked the code for good, the benchmark's hello world went the
 * slow way within seconds. So code that turns slow holds up this host's other jobs once (its next
 * runs go the usual way and stay there while slow), code that is slow now and then holds them up
 * for about SYNC_STRIKE_BUDGET_MS before it is marked, and after SYNC_DEMOTIONS marks within
 * SYNC_COOLDOWN_MS (a tenant rotating code variants), no code runs synchronously on this host for
 * SYNC_COOLDOWN_MS.
 */
const SYNC_AFTER_RUNS = 3;
const SYNC_CPU_MS = 1;
/** A synchronous run's first in an isolate can pass 1 ms (V8 compiles the bootstrap's paths): a margin. */
const SYNC_DEMOTE_CPU_MS = 3;
const SYNC_STRIKE_WINDOW = 16;
const SYNC_STRIKE_BUDGET_MS = 100;
const SYNC_SLICE_MS = 50;
const SYNC_DEMOTIONS = 5;
const SYNC_COOLDOWN_MS = 10_000;
/** Codes whose run history is kept, and codes kept marked slow. */
const CODE_STATS_ENTRIES = 1024;
const SLOW_CODES_ENTRIES = 8192;
/** SES, staged beside the host (host-files.ts); without it, only fresh contexts are used. */
const SES_SOURCE: string | null = (() => {
  try {
    return fs.readFileSync(new URL('../node_modules/ses/dist/ses.umd.min.js', import.meta.url), 'utf8');
  } catch {
    return null;
  }
})();

type Dispatch = ivm.Reference<(...args: unknown[]) => unknown>;

/** Where a context's console and timers send, set while a job owns the context. */
interface Sink {
  job: Job | null;
}

interface Prepared {
  readonly context: ivm.Context;
  readonly dispatch: Dispatch;
  readonly sink: Sink;
  /** True for a hardened context (serves many runs; reset after each). */
  readonly hardened: boolean;
  /**
   * The run this context serves, counted as the context counts it: a hardened context's reset
   * moves both on. Output, timers and timer firings of an earlier run carry an older number and
   * are dropped.
   */
  generation: number;
  /** True when a run has used this hardened context since its last reset: the next run resets it first. */
  dirty: boolean;
  /**
   * CommonJS factories evaluated in this context, by code hash, least recently used first.
   * Evaluating `wrapCommonJs(code)` defines the factory and runs none of the code; every run
   * calls the factory for a new function of its own, so no run evaluates the source again.
   */
  readonly factories: Map<string, ivm.Reference<unknown>>;
}

interface Slot {
  readonly isolate: ivm.Isolate;
  readonly memMB: number;
  runs: number;
  spare: Promise<Prepared> | null;
  /** True once `spare` has settled: a job taking this slot starts without waiting. */
  spareReady: boolean;
  /** Compiled CommonJS wrappers by code hash (unbound scripts run in any context of this isolate). */
  readonly scripts: Map<string, ivm.Script>;
  bootstrap: ivm.Script | null;
  /** The long-lived context of a hardened isolate; null for the others (and once disposed). */
  hardened: Prepared | null;
}

interface Job {
  readonly id: number;
  readonly spec: HostJob;
  readonly startedAt: number;
  slot: Slot | null;
  prepared: Prepared | null;
  timers: Map<number, NodeJS.Timeout>;
  deadline: NodeJS.Timeout | null;
  abortCode: 'timeout' | 'killed' | null;
  userStartedAt: number;
  finished: boolean;
  /** `prepared.generation` when the run began. */
  generation: number;
  /** Timer callbacks handed to the isolate and not yet returned. */
  firing: number;
  /** False once a synchronous try of this job outgrew its slice. */
  mayRunSync: boolean;
  /** True when the run that answered was made synchronously. */
  ranSync: boolean;
  /** The isolate's CPU time (ns) when the run began, to learn how long the code's runs take. */
  cpuAtStart: bigint;
}

const fresh = new Map<number, Slot[]>();
const idle = new Map<string, Slot[]>();
let idleCount = 0;
const codeCache = new Map<string, ivm.ExternalCopy<ArrayBuffer>>();
/** Idle hardened isolates per memory limit, most recently used last. */
const hardenedIdle = new Map<number, Slot[]>();
/** Hardened isolates alive (idle, busy or being built) per memory limit. */
const hardenedAlive = new Map<number, number>();
let hardenedBuilding = false;
/** Set when a hardened context could not be built: the host then uses fresh contexts only. */
let hardenedBroken = SES_SOURCE === null;
let sesCache: ivm.ExternalCopy<ArrayBuffer> | undefined;
const jobs = new Map<number, Job>();

let outbox: Buffer[] = [];
let outboxScheduled = false;

/**
 * Queues a frame for the server. Frames of one turn of the event loop leave in one write:
 * one syscall and one wake-up of the server for many results under load.
 */
function send(message: FromHost): void {
  outbox.push(encodeFrame(message));
  if (outboxScheduled) return;
  outboxScheduled = true;
  setImmediate(flushOutbox);
}

function flushOutbox(): void {
  outboxScheduled = false;
  if (outbox.length === 0) return;
  const frames = outbox.length === 1 ? (outbox[0] as Buffer) : Buffer.concat(outbox);
  outbox = [];
  process.stdout.write(frames);
}

/** Writes what is queued, synchronously: for the last words before the host exits. */
function flushOutboxSync(): void {
  const frames = Buffer.concat(outbox);
  outbox = [];
  try {
    fs.writeSync(1, frames);
  } catch {
    // The server is gone or the pipe is full; the exit says enough.
  }
}

function log(level: 'warn' | 'error', msg: string): void {
  send({ t: 'log', level, msg });
}

// --- isolates and contexts ---------------------------------------------------------------

function newSlot(memMB: number): Slot {
  const isolate = new ivm.Isolate({
    memoryLimit: memMB,
    onCatastrophicError: (message) => {
      // V8 is in an undefined state: the whole host must go; the server restarts it and fails
      // only this host's in-flight workloads.
      log('error', `isolated-vm catastrophic error: ${message}`);
      flushOutboxSync();
      process.exit(70);
    },
  });
  return { isolate, memMB, runs: 0, spare: null, spareReady: false, scripts: new Map(), bootstrap: null, hardened: null };
}

/** Evaluates SES in `context` (its V8 code cache is shared by every isolate of the host). */
async function loadSes(isolate: ivm.Isolate, context: ivm.Context): Promise<void> {
  const cached = sesCache;
  const script = await isolate.compileScript(SES_SOURCE ?? '', {
    filename: 'vulcan:ses',
    ...(cached === undefined ? { produceCachedData: true } : { cachedData: cached }),
  });
  if (cached === undefined) sesCache = (script as ivm.Script & ivm.CachedDataResult).cachedData;
  await script.run(context);
  script.release();
}

async function prepareContext(slot: Slot, codeHash?: string, hardened = false): Promise<Prepared> {
  const { isolate } = slot;
  slot.bootstrap ??= await isolate.compileScript(BOOTSTRAP_SOURCE, { filename: 'vulcan:bootstrap' });
  const script = slot.bootstrap;
  const context = await isolate.createContext();
  if (hardened) await loadSes(isolate, context);
  const sink: Sink = { job: null };
  // Each call carries the generation of the run that made it: a run's late microtasks can still
  // write after its result, when the context may already serve the next run.
  const hostOut = new ivm.Callback(
    (fd: unknown, data: unknown, generation: unknown) => {
      const job = sink.job;
      if (job === null || job.finished || generation !== job.generation || (fd !== 1 && fd !== 2) || typeof data !== 'string') return;
      send({ t: 'out', id: job.id, fd, data });
    },
    { ignored: true },
  );
  const hostTimer = new ivm.Callback(
    (timerId: unknown, delayMs: unknown, generation: unknown) => {
      const job = sink.job;
      if (job === null || job.finished || generation !== job.generation || typeof timerId !== 'number' || typeof delayMs !== 'number') return;
      armTimer(job, timerId, delayMs);
    },
    { ignored: true },
  );
  const factory = (await script.run(context, { reference: true })) as ivm.Reference<(...args: unknown[]) => unknown>;
  const dispatch = (await factory.apply(undefined, [hostOut, hostTimer, slot.memMB * 16, hardened], { result: { reference: true } })) as Dispatch;
  factory.release();
  const prepared: Prepared = { context, dispatch, sink, hardened, generation: 0, dirty: false, factories: new Map() };
  const user = codeHash === undefined ? undefined : slot.scripts.get(codeHash);
  if (user !== undefined && codeHash !== undefined) prepared.factories.set(codeHash, (await user.run(context, { reference: true })) as ivm.Reference<unknown>);
  return prepared;
}

function armTimer(job: Job, timerId: number, delayMs: number): void {
  const old = job.timers.get(timerId);
  if (old !== undefined) clearTimeout(old);
  const handle = setTimeout(() => {
    job.timers.delete(timerId);
    const prepared = job.prepared;
    if (job.finished || prepared === null) return;
    job.firing++;
    prepared.dispatch
      .apply(undefined, ['fire', timerId, job.generation], { timeout: remainingMs(job) })
      .finally(() => job.firing--)
      .catch((error: unknown) => {
        // A timer that blew a limit: the main call sees the same isolate state; end the job here
        // in case the main call is only awaiting a promise.
        if (!job.finished) void finishWithError(job, error);
      });
  }, Math.min(delayMs, 2_147_483_647));
  job.timers.set(timerId, handle);
}

function remainingMs(job: Job): number {
  return Math.max(1, Math.ceil(job.spec.timeoutMs - (performance.now() - job.startedAt)));
}

/** Starts the next context of `slot` now, while it waits idle, so the next job does not wait for it. */
function prepareSpare(slot: Slot, codeHash?: string): Promise<Prepared> {
  slot.spareReady = false;
  const spare = prepareContext(slot, codeHash);
  slot.spare = spare;
  spare.then(
    () => {
      if (slot.spare === spare) slot.spareReady = true;
    },
    () => undefined,
  );
  return spare;
}

/** True when a fresh isolate of `memMB` has its context ready. */
function freshReady(memMB: number): boolean {
  return fresh.get(memMB)?.some((slot) => slot.spareReady) ?? false;
}

function takeFresh(memMB: number): Slot {
  const list = fresh.get(memMB);
  const ready = list?.findIndex((s) => s.spareReady) ?? -1;
  const slot = ready >= 0 ? list?.splice(ready, 1)[0] : list?.pop();
  // Keep this limit among the warmed ones (most recent last).
  if (list !== undefined) {
    fresh.delete(memMB);
    fresh.set(memMB, list);
  } else {
    fresh.set(memMB, []);
  }
  scheduleRefill();
  return slot ?? newSlot(memMB);
}

let refillScheduled = false;
function scheduleRefill(): void {
  if (refillScheduled) return;
  refillScheduled = true;
  setTimeout(refill, 5).unref();
}

function refill(): void {
  refillScheduled = false;
  while (fresh.size > FRESH_MEM_KEYS) {
    const oldest = fresh.keys().next().value as number;
    for (const slot of fresh.get(oldest) ?? []) disposeSlot(slot);
    fresh.delete(oldest);
  }
  // One isolate per pass, so a burst of jobs is not held up behind a burst of refills.
  for (const [memMB, list] of fresh) {
    if (list.length < FRESH_PER_MEM) {
      const slot = newSlot(memMB);
      prepareSpare(slot).catch(() => disposeSlot(slot));
      list.push(slot);
      scheduleRefill();
      return;
    }
  }
}

function idleKey(spec: HostJob): string {
  return `${spec.codeHash}:${spec.memMB}`;
}

/**
 * An idle isolate that ran this code, preferring one whose next context is ready. When the only
 * one is still preparing its context (the previous run just ended: back-to-back requests), a
 * fresh isolate with a ready context is taken instead; after its run it joins the idle ones, so
 * the code then alternates between two isolates and never waits for a context.
 */
function takeIdle(spec: HostJob): Slot | undefined {
  const key = idleKey(spec);
  const list = idle.get(key);
  if (list === undefined) return undefined;
  let index = -1;
  for (let i = list.length - 1; i >= 0; i--) {
    if (list[i]?.spareReady === true) {
      index = i;
      break;
    }
  }
  if (index < 0) {
    if (list.length < 2 && freshReady(spec.memMB)) return undefined;
    // None is ready: the one put back first started its context first.
    index = 0;
  }
  const [slot] = list.splice(index, 1);
  if (slot !== undefined) idleCount--;
  if (list.length === 0) idle.delete(key);
  return slot;
}

function putIdle(spec: HostJob, slot: Slot): void {
  const key = idleKey(spec);
  const list = idle.get(key) ?? [];
  if (list.length >= IDLE_PER_KEY) {
    disposeSlot(slot);
    return;
  }
  idle.delete(key);
  idle.set(key, list);
  list.push(slot);
  idleCount++;
  prepareSpare(slot, spec.codeHash).catch(() => undefined);
  while (idleCount > IDLE_TOTAL) {
    const oldestKey = idle.keys().next().value as string;
    const oldest = idle.get(oldestKey) ?? [];
    const victim = oldest.shift();
    if (oldest.length === 0) idle.delete(oldestKey);
    if (victim === undefined) break;
    idleCount--;
    disposeSlot(victim);
  }
}

// --- hardened isolates ---------------------------------------------------------------------

/** A run waiting for a hardened isolate of its memory limit. */
interface Waiter {
  readonly job: Job;
  readonly since: number;
  readonly resolve: (slot: Slot | null) => void;
}
const hardenedWaiting = new Map<number, Waiter[]>();
/** Hardened isolates running a job, and since when. */
const hardenedBusy = new Map<Slot, number>();
/** Memory limits queued for a build; one build runs at a time. */
const buildQueue: number[] = [];

function hardenedTotal(): number {
  let total = 0;
  for (const n of hardenedAlive.values()) total += n;
  return total + buildQueue.length;
}

/**
 * An idle hardened isolate of `memMB`, preferring one whose context has this code's factory
 * evaluated, then one that has it compiled.
 */
function takeHardened(spec: HostJob): Slot | undefined {
  const list = hardenedIdle.get(spec.memMB);
  if (list === undefined || list.length === 0) return undefined;
  let index = list.length - 1;
  let compiled = -1;
  for (let i = list.length - 1; i >= 0; i--) {
    const slot = list[i];
    if (slot?.hardened?.factories.has(spec.codeHash) === true) {
      index = i;
      compiled = -1;
      break;
    }
    if (compiled < 0 && slot?.scripts.has(spec.codeHash) === true) compiled = i;
  }
  const [slot] = list.splice(compiled >= 0 ? compiled : index, 1);
  if (slot !== undefined) hardenedBusy.set(slot, performance.now());
  return slot;
}

/**
 * Waits for a hardened isolate of the job's memory limit: one that another run puts back (a sync
 * run holds one for a fraction of a millisecond), or a new one, built when the limit has none or
 * a run has waited GROW_AFTER_MS while slow runs hold them all (see growCheck). Resolves null when
 * hardened isolates cannot be built on this host.
 */
function waitHardened(job: Job): Promise<Slot | null> {
  const memMB = job.spec.memMB;
  return new Promise((resolve) => {
    const list = hardenedWaiting.get(memMB) ?? [];
    hardenedWaiting.set(memMB, list);
    list.push({ job, since: performance.now(), resolve });
    if ((hardenedAlive.get(memMB) ?? 0) === 0 && !buildQueue.includes(memMB)) requestBuild(memMB);
    else scheduleGrowCheck();
  });
}

let growCheckScheduled = false;
function scheduleGrowCheck(): void {
  if (growCheckScheduled) return;
  growCheckScheduled = true;
  setTimeout(growCheck, GROW_AFTER_MS);
}

function growCheck(): void {
  growCheckScheduled = false;
  const now = performance.now();
  let pending = false;
  for (const [memMB, list] of hardenedWaiting) {
    while (list.length > 0 && list[0]?.job.finished === true) list.shift();
    const first = list[0];
    if (first === undefined) continue;
    pending = true;
    if (now - first.since < GROW_AFTER_MS || buildQueue.includes(memMB)) continue;
    let allHeldLong = true;
    for (const [slot, since] of hardenedBusy) {
      if (slot.memMB === memMB && now - since < GROW_AFTER_MS) allHeldLong = false;
    }
    if (allHeldLong) requestBuild(memMB);
  }
  if (pending) scheduleGrowCheck();
}

/** Queues a build of one more hardened isolate of `memMB`, making room under HARDENED_TOTAL. */
function requestBuild(memMB: number): void {
  if (hardenedBroken) return;
  if (hardenedTotal() >= HARDENED_TOTAL) {
    // Room only by letting an idle isolate of another limit go.
    for (const [other, list] of hardenedIdle) {
      if (other === memMB || list.length === 0) continue;
      const victim = list.shift();
      if (victim !== undefined) disposeSlot(victim);
      break;
    }
    if (hardenedTotal() >= HARDENED_TOTAL) return;
  }
  buildQueue.push(memMB);
  pumpBuilds();
}

function pumpBuilds(): void {
  if (hardenedBuilding || hardenedBroken) return;
  const memMB = buildQueue.shift();
  if (memMB === undefined) return;
  hardenedBuilding = true;
  hardenedAlive.set(memMB, (hardenedAlive.get(memMB) ?? 0) + 1);
  const slot = newSlot(memMB);
  prepareContext(slot, undefined, true)
    .then((prepared) => {
      // The first reset seeds Math.random: no two isolates start from the same sequence.
      if (prepared.dispatch.applySync(undefined, ['reset', nextSeed()], { timeout: 1_000 }) !== true) {
        throw new Error('a new hardened context did not reset cleanly');
      }
      prepared.generation++;
      return prepared;
    })
    .then(
      (prepared) => {
        hardenedBuilding = false;
        slot.hardened = prepared;
        releaseHardened(slot);
        pumpBuilds();
      },
      (error: unknown) => {
        hardenedBuilding = false;
        hardenedAlive.set(memMB, (hardenedAlive.get(memMB) ?? 1) - 1);
        if (!slot.isolate.isDisposed) slot.isolate.dispose();
        // A broken SES stays broken: every run, waiting or not, takes a fresh context instead.
        hardenedBroken = true;
        buildQueue.length = 0;
        log('warn', `could not build a hardened isolate context; using a fresh context per run: ${String(error)}`);
        for (const list of hardenedWaiting.values()) for (const w of list.splice(0)) w.resolve(null);
        refill();
      },
    );
}

/** Hands an idle hardened isolate to the first run waiting for its limit, or puts it back. */
function releaseHardened(slot: Slot): void {
  const waiting = hardenedWaiting.get(slot.memMB);
  while (waiting !== undefined && waiting.length > 0) {
    const w = waiting.shift();
    if (w === undefined || w.job.finished) continue;
    hardenedBusy.set(slot, performance.now());
    w.resolve(slot);
    return;
  }
  hardenedBusy.delete(slot);
  const list = hardenedIdle.get(slot.memMB) ?? [];
  hardenedIdle.set(slot.memMB, list);
  list.push(slot);
}

/**
 * Ends a run in a hardened isolate: marks its context dirty and puts it back at once. No call
 * into the isolate here: the next run's own call resets the context first (`dispatch` with a
 * seed), before any of its code runs, which saves every run a separate reset call. Disposes it
 * when the run was not clean, or when its heap stayed large (checked every HEAP_CHECK_EVERY runs
 * and after any run over 1 ms).
 */
function finishHardened(slot: Slot, prepared: Prepared, reusable: boolean, execMs: number): void {
  prepared.sink.job = null;
  prepared.dirty = true;
  if (!reusable || slot.isolate.isDisposed || slot.runs >= MAX_RUNS_HARDENED || !heapFits(slot, execMs)) {
    retireHardened(slot);
    return;
  }
  releaseHardened(slot);
}

function heapFits(slot: Slot, execMs: number): boolean {
  if (slot.runs % HEAP_CHECK_EVERY !== 0 && execMs <= 1) return true;
  try {
    const heap = slot.isolate.getHeapStatisticsSync();
    return heap.used_heap_size + heap.externally_allocated_size < REUSE_HEAP_SHARE * slot.memMB * 1024 * 1024;
  } catch {
    return false;
  }
}

/** Disposes a hardened isolate, and starts building another when runs wait or too few are left. */
function retireHardened(slot: Slot): void {
  disposeSlot(slot);
  if ((hardenedWaiting.get(slot.memMB)?.length ?? 0) > 0 || (hardenedAlive.get(slot.memMB) ?? 0) < PREWARM_HARDENED) requestBuild(slot.memMB);
}

/** Seeds for `Math.random` of hardened contexts, 16 random bytes each, from a pooled buffer. */
const seedPool = Buffer.alloc(4096);
let seedAt = seedPool.length;
function nextSeed(): string {
  if (seedAt + 16 > seedPool.length) {
    randomFillSync(seedPool);
    seedAt = 0;
  }
  const seed = seedPool.toString('hex', seedAt, seedAt + 16);
  seedAt += 16;
  return seed;
}

/** Thrown when a hardened context cannot be reset before a run: the run goes to another isolate. */
class NotClean extends Error {}

/** Thrown when a synchronous run outgrew its slice: the run starts again, asynchronously. */
class SliceExceeded extends Error {
  constructor(readonly cpuMs: number) {
    super('the synchronous run outgrew its slice');
  }
}

/**
 * Per code hash: fast runs in a row here, and the CPU milliseconds of the strikes among its last
 * SYNC_STRIKE_WINDOW synchronous runs (0 for a run that was no strike), oldest first.
 */
const codeStats = new Map<string, { fast: number; strikes: number[] }>();
/** Codes a synchronous run of which was slow: never synchronous again here. */
const slowCodes = new Set<string>();
/** When codes were marked slow lately (for the cool-down). */
let demotions: number[] = [];
let syncOffUntil = 0;

function runsSync(codeHash: string): boolean {
  return (codeStats.get(codeHash)?.fast ?? 0) >= SYNC_AFTER_RUNS && !slowCodes.has(codeHash) && performance.now() >= syncOffUntil;
}

/** Counts a finished run: `sync` when it ran on this thread. */
function noteRun(codeHash: string, cpuMs: number, sync: boolean): void {
  const stats = codeStats.get(codeHash) ?? { fast: 0, strikes: [] };
  codeStats.delete(codeHash);
  if (sync) {
    stats.strikes.push(cpuMs >= SYNC_DEMOTE_CPU_MS ? cpuMs : 0);
    if (stats.strikes.length > SYNC_STRIKE_WINDOW) stats.strikes.shift();
    if (stats.strikes.reduce((sum, ms) => sum + ms, 0) >= SYNC_STRIKE_BUDGET_MS) {
      noteSlow(codeHash);
      return;
    }
  }
  stats.fast = cpuMs < SYNC_CPU_MS ? stats.fast + 1 : 0;
  codeStats.set(codeHash, stats);
  if (codeStats.size > CODE_STATS_ENTRIES) codeStats.delete(codeStats.keys().next().value as string);
}

function noteSlow(codeHash: string): void {
  codeStats.delete(codeHash);
  slowCodes.add(codeHash);
  if (slowCodes.size > SLOW_CODES_ENTRIES) slowCodes.delete(slowCodes.values().next().value as string);
  const now = performance.now();
  demotions = [...demotions.filter((t) => now - t < SYNC_COOLDOWN_MS), now];
  if (demotions.length >= SYNC_DEMOTIONS) syncOffUntil = now + SYNC_COOLDOWN_MS;
}

/** Sends the output a synchronous run kept (fd, text, fd, text …), checked: the context is the user's. */
function sendCollected(job: Job, out: unknown): void {
  if (!Array.isArray(out)) return;
  for (let i = 0; i + 1 < out.length; i += 2) {
    const fd: unknown = out[i];
    const data: unknown = out[i + 1];
    if ((fd === 1 || fd === 2) && typeof data === 'string') send({ t: 'out', id: job.id, fd, data });
  }
}

/**
 * A script job run on this thread (see SYNC_SLICE_MS): one `scriptSync` call runs it and its
 * microtasks and answers its output and answer, copied out after those microtasks; a run still
 * pending on a promise is awaited the usual way. Throws SliceExceeded when the slice, not the
 * job's own timeout, stopped it. One call and one isolated-vm timer per run: each timer wakes
 * isolated-vm's timer thread when it lapses, used or not (measured: ≈ 12 % of a host's CPU
 * under load when a run made two timed calls).
 */
async function runScriptSync(job: Job, isolate: ivm.Isolate, prepared: Prepared, factory: ivm.Reference<unknown>, seed: string | undefined): Promise<unknown> {
  const { spec } = job;
  const remaining = remainingMs(job);
  const slice = Math.min(SYNC_SLICE_MS, remaining);
  job.ranSync = true;
  let run: unknown;
  try {
    run = prepared.dispatch.applySync(undefined, ['scriptSync', factory.derefInto(), spec.inputJson, spec.outputBytes, seed], { result: { copy: true }, timeout: slice });
  } catch (error) {
    if (slice < remaining && error instanceof Error && /Script execution timed out/.test(error.message)) {
      let cpuMs = slice;
      try {
        cpuMs = Number(isolate.cpuTime - job.cpuAtStart) / 1e6;
      } catch {
        // a disposed isolate: count the whole slice
      }
      throw new SliceExceeded(cpuMs);
    }
    throw error;
  }
  if (isNotClean(run)) return run;
  if (run === null || typeof run !== 'object') return undefined;
  const r = run as { out?: unknown; answer?: unknown; pending?: unknown };
  sendCollected(job, r.out);
  if (r.pending !== true) return r.answer;
  const copied = Array.isArray(r.out) ? r.out.length : 0;
  return prepared.dispatch.apply(undefined, ['await', copied], { result: { promise: true, copy: true }, timeout: remainingMs(job) });
}

/**
 * Begins a run in `prepared`: the seed with which the run's own call resets a dirty hardened
 * context (undefined when it needs no reset), and the generation the run will have.
 */
function beginRun(job: Job, prepared: Prepared): string | undefined {
  let seed: string | undefined;
  if (prepared.hardened && prepared.dirty) {
    seed = nextSeed();
    prepared.generation++;
    prepared.dirty = false;
  }
  job.generation = prepared.generation;
  return seed;
}

/** The answer `dispatch` gives, before running anything, when its reset did not come out clean. */
function isNotClean(answer: unknown): boolean {
  return answer !== null && typeof answer === 'object' && (answer as { kind?: unknown }).kind === 'not_clean';
}

function disposeSlot(slot: Slot): void {
  hardenedBusy.delete(slot);
  if (slot.hardened !== null) {
    slot.hardened = null;
    hardenedAlive.set(slot.memMB, (hardenedAlive.get(slot.memMB) ?? 1) - 1);
    const list = hardenedIdle.get(slot.memMB);
    const at = list?.indexOf(slot) ?? -1;
    if (at >= 0) list?.splice(at, 1);
  }
  if (!slot.isolate.isDisposed) slot.isolate.dispose();
  for (const script of slot.scripts.values()) {
    try {
      script.release();
    } catch {
      // already gone with its isolate
    }
  }
  slot.scripts.clear();
  slot.bootstrap = null;
}

function releaseContext(prepared: Prepared): void {
  prepared.sink.job = null;
  for (const ref of prepared.factories.values()) ref.release();
  prepared.factories.clear();
  prepared.dispatch.release();
  prepared.context.release();
}

// --- running jobs ------------------------------------------------------------------------

/** The entry of `key` in a least-recently-used map (oldest first), marked as just used. */
function lruGet<V>(map: Map<string, V>, key: string): V | undefined {
  const entry = map.get(key);
  if (entry !== undefined) {
    map.delete(key);
    map.set(key, entry);
  }
  return entry;
}

/** Adds an entry to a least-recently-used map, releasing the oldest ones past `max`. */
function lruSet<V extends { release(): void }>(map: Map<string, V>, key: string, value: V, max: number): void {
  map.set(key, value);
  while (map.size > max) {
    const oldest = map.keys().next().value as string;
    map.get(oldest)?.release();
    map.delete(oldest);
  }
}

function cachedData(hash: string): ivm.ExternalCopy<ArrayBuffer> | undefined {
  return lruGet(codeCache, hash);
}

function remember(hash: string, data: ivm.ExternalCopy<ArrayBuffer> | undefined): void {
  if (data !== undefined) lruSet(codeCache, hash, data, CODE_CACHE_ENTRIES);
}

async function compileScript(slot: Slot, spec: HostJob): Promise<ivm.Script> {
  const known = lruGet(slot.scripts, spec.codeHash);
  if (known !== undefined) return known;
  // The wrapper keeps the code's line numbers: it adds nothing before the first line.
  const wrapped = wrapCommonJs(spec.source ?? '');
  const cached = cachedData(spec.codeHash);
  const script = await slot.isolate.compileScript(wrapped, {
    filename: spec.filename,
    ...(cached === undefined ? { produceCachedData: true } : { cachedData: cached }),
  });
  if (cached === undefined) remember(spec.codeHash, (script as ivm.Script & ivm.CachedDataResult).cachedData);
  lruSet(slot.scripts, spec.codeHash, script, SCRIPTS_PER_ISOLATE);
  return script;
}

/**
 * The factory of `spec`'s CommonJS code in `prepared`, evaluated now if this context has none
 * yet. Synchronous: evaluating the wrapper defines a function and runs none of the code (source.ts
 * `wrapsWhole`), so there is no need to leave this thread for it.
 */
async function factoryFor(job: Job, slot: Slot, prepared: Prepared): Promise<ivm.Reference<unknown>> {
  const { codeHash } = job.spec;
  const known = lruGet(prepared.factories, codeHash);
  if (known !== undefined) return known;
  const script = await compileScript(slot, job.spec);
  const factory = script.runSync(prepared.context, { reference: true, timeout: remainingMs(job) }) as ivm.Reference<unknown>;
  lruSet(prepared.factories, codeHash, factory, FACTORIES_PER_CONTEXT);
  return factory;
}

/**
 * Runs the job's code in `prepared`: one call into the isolate for script and wasm jobs, which
 * also resets a dirty hardened context before the code runs. Throws NotClean when that reset
 * (or a module job's own) did not come out clean; nothing of the job has run then.
 */
async function callUser(job: Job, slot: Slot, prepared: Prepared): Promise<unknown> {
  const { spec } = job;
  const resultOptions = { result: { promise: true as const, copy: true as const } };
  let answer: unknown;
  if (spec.format === 'wasm') {
    const bytes = new ivm.ExternalCopy(spec.wasm ?? new Uint8Array(0)).copyInto({ release: true });
    const seed = beginRun(job, prepared);
    job.userStartedAt = performance.now();
    answer = await prepared.dispatch.apply(undefined, ['wasm', bytes, spec.inputJson, spec.outputBytes, seed], { ...resultOptions, timeout: remainingMs(job) });
  } else if (spec.format === 'script') {
    const factory = await factoryFor(job, slot, prepared);
    const seed = beginRun(job, prepared);
    job.userStartedAt = performance.now();
    job.cpuAtStart = slot.isolate.cpuTime;
    if (prepared.hardened && job.mayRunSync && runsSync(spec.codeHash)) answer = await runScriptSync(job, slot.isolate, prepared, factory, seed);
    else answer = await prepared.dispatch.apply(undefined, ['script', factory.derefInto(), spec.inputJson, spec.outputBytes, seed], { ...resultOptions, timeout: remainingMs(job) });
  } else {
    // A module's body runs when it is evaluated, before `dispatch`: the reset comes first, alone.
    const seed = beginRun(job, prepared);
    if (seed !== undefined && prepared.dispatch.applySync(undefined, ['reset', seed], { timeout: 1_000 }) !== true) throw new NotClean();
    const cached = cachedData(spec.codeHash);
    const module = await slot.isolate.compileModule(spec.source ?? '', {
      filename: spec.filename,
      ...(cached === undefined ? { produceCachedData: true } : { cachedData: cached }),
    });
    if (cached === undefined) remember(spec.codeHash, (module as ivm.Module & ivm.CachedDataResult).cachedData);
    try {
      module.instantiateSync(prepared.context, (specifier) => {
        throw new Error(`Cannot import "${specifier}": the isolate backend has no modules; bundle the code into one file or use a process backend (isolation "namespace")`);
      });
      job.userStartedAt = performance.now();
      await module.evaluate({ timeout: remainingMs(job) });
      return await prepared.dispatch.apply(undefined, ['module', module.namespace.derefInto(), spec.inputJson, spec.outputBytes], {
        ...resultOptions,
        timeout: remainingMs(job),
      });
    } finally {
      module.release();
    }
  }
  if (isNotClean(answer)) throw new NotClean();
  return answer;
}

function timings(job: Job): { startMs: number; execMs: number } {
  const now = performance.now();
  const userStart = job.userStartedAt || now;
  return { startMs: userStart - job.startedAt, execMs: now - userStart };
}

function classify(job: Job, error: unknown): { code: WorkloadErrorCode; message: string; stack?: string } {
  const message = error instanceof Error ? (error.name === 'Error' ? error.message : `${error.name}: ${error.message}`) : String(error);
  const stack = error instanceof Error && typeof error.stack === 'string' ? error.stack : undefined;
  if (job.abortCode !== null) return { code: job.abortCode, message: job.abortCode === 'timeout' ? `timed out after ${job.spec.timeoutMs} ms` : 'killed' };
  if (/due to memory limit/.test(message)) return { code: 'memory_limit', message: `the isolate went over mem_mb (${job.spec.memMB} MiB); raise resources.mem_mb` };
  if (/Script execution timed out/.test(message)) return { code: 'timeout', message: `timed out after ${job.spec.timeoutMs} ms` };
  if (/Isolate was disposed|Promise was abandoned/.test(message)) return { code: 'sandbox_crashed', message: `the isolate died: ${message}` };
  if (isMemoryMessage(message)) return { code: 'memory_limit', message: `${message} (mem_mb is ${job.spec.memMB} MiB; raise resources.mem_mb)`, ...(stack === undefined ? {} : { stack }) };
  return { code: 'exception', message, ...(stack === undefined ? {} : { stack }) };
}

function isMemoryMessage(message: string): boolean {
  return /Array buffer allocation failed|Maximum memory size exceeded|is over what mem_mb leaves|is over mem_mb|Out of memory/i.test(message);
}

/** Turns the isolate's answer (untrusted: the user's code shaped the context it came from) into a result. */
function fromAnswer(job: Job, answer: unknown): HostResult {
  const t = timings(job);
  const reused = (job.slot?.runs ?? 0) > 0;
  if (answer === null || typeof answer !== 'object') return { ok: false, code: 'backend_error', message: 'the isolate gave no answer', ...t, reused };
  const a = answer as Record<string, unknown>;
  if (a.ok === true) {
    if (a.json === undefined) return { ok: true, ...t, reused };
    if (typeof a.json !== 'string') return { ok: false, code: 'output_invalid', message: 'the return value cannot be turned into JSON', ...t, reused };
    if (a.json.length > MAX_OUTPUT_JSON_BYTES) {
      return { ok: false, code: 'output_invalid', message: `the return value is over ${MAX_OUTPUT_JSON_BYTES} bytes of JSON`, ...t, reused };
    }
    return { ok: true, outputJson: a.json, ...t, reused };
  }
  const name = typeof a.name === 'string' ? a.name : 'Error';
  const message = typeof a.message === 'string' ? a.message : '';
  const stack = typeof a.stack === 'string' && a.stack !== '' ? a.stack : `${name}: ${message}`;
  if (a.kind === 'output_invalid') return { ok: false, code: 'output_invalid', message, ...t, reused };
  if (a.wasmFull === true || isMemoryMessage(message)) {
    return { ok: false, code: 'memory_limit', message: `${name}: ${message} (mem_mb is ${job.spec.memMB} MiB; raise resources.mem_mb)`, stack, ...t, reused };
  }
  return { ok: false, code: 'exception', message: `${name}: ${message}`, stack, ...t, reused };
}

function finish(job: Job, result: HostResult, reusable: boolean): void {
  if (job.finished) return;
  job.finished = true;
  jobs.delete(job.id);
  if (job.deadline !== null) clearTimeout(job.deadline);
  for (const handle of job.timers.values()) clearTimeout(handle);
  job.timers.clear();
  const { slot, prepared } = job;
  if (prepared?.hardened === true && slot !== null) {
    send({ t: 'done', id: job.id, result: { ...result, hardened: true, ...(job.ranSync ? { sync: true } : {}) } });
    slot.runs++;
    if (result.ok && job.spec.format === 'script' && job.cpuAtStart > 0n) {
      try {
        noteRun(job.spec.codeHash, Number(slot.isolate.cpuTime - job.cpuAtStart) / 1e6, job.ranSync);
      } catch {
        // a disposed isolate has no CPU time to read
      }
    }
    // A timer callback still running (or queued) in the isolate could run after the next run's
    // reset: such an isolate is not reused.
    finishHardened(slot, prepared, reusable && job.firing === 0, result.execMs);
    return;
  }
  if (prepared !== null) {
    try {
      releaseContext(prepared);
    } catch {
      reusable = false;
    }
  }
  send({ t: 'done', id: job.id, result });
  if (slot === null) return;
  slot.runs++;
  if (reusable && !slot.isolate.isDisposed && slot.runs < MAX_RUNS_PER_ISOLATE) {
    try {
      const heap = slot.isolate.getHeapStatisticsSync();
      if (heap.used_heap_size + heap.externally_allocated_size < REUSE_HEAP_SHARE * slot.memMB * 1024 * 1024) {
        putIdle(job.spec, slot);
        return;
      }
    } catch {
      // fall through: dispose
    }
  }
  disposeSlot(slot);
}

async function finishWithError(job: Job, error: unknown): Promise<void> {
  const { code, message, stack } = classify(job, error);
  if (job.slot !== null) disposeSlot(job.slot);
  finish(job, { ok: false, code, message, ...(stack === undefined ? {} : { stack }), ...timings(job), reused: (job.slot?.runs ?? 0) > 0 }, false);
  return Promise.resolve();
}

async function runJob(id: number, spec: HostJob): Promise<void> {
  const job: Job = {
    id,
    spec,
    startedAt: performance.now(),
    slot: null,
    prepared: null,
    timers: new Map(),
    deadline: null,
    abortCode: null,
    userStartedAt: 0,
    finished: false,
    generation: 0,
    firing: 0,
    mayRunSync: true,
    ranSync: false,
    cpuAtStart: 0n,
  };
  jobs.set(id, job);
  // The host's own deadline, independent of the server's: disposing the isolate stops any
  // code (a loop, a promise that never settles) at once.
  job.deadline = setTimeout(() => abort(job, 'timeout'), spec.timeoutMs);
  try {
    for (let attempt = 0; ; attempt++) {
      try {
        await attemptJob(job, attempt < MAX_RESET_RETRIES);
        return;
      } catch (error) {
        if (!(error instanceof NotClean || error instanceof SliceExceeded) || job.finished) throw error;
        // Nothing of the job reached anyone: its isolate goes, and the job starts again on another
        // (after a slice, the usual way; the stopped try's output was held in the isolate).
        const { slot, prepared } = job;
        if (prepared !== null) prepared.sink.job = null;
        job.slot = null;
        job.prepared = null;
        job.userStartedAt = 0;
        job.ranSync = false;
        // Timers the stopped try armed must not fire into the next one.
        for (const handle of job.timers.values()) clearTimeout(handle);
        job.timers.clear();
        job.firing = 0;
        if (slot !== null) retireHardened(slot);
        if (error instanceof SliceExceeded) {
          if (error.cpuMs >= SYNC_SLICE_MS / 2) noteSlow(spec.codeHash);
          job.mayRunSync = false;
          continue;
        }
        if (attempt >= MAX_RESET_RETRIES) throw new Error('no isolate could be reset cleanly for this run', { cause: error });
      }
    }
  } catch (error) {
    if (!job.finished) await finishWithError(job, error);
  }
}

/** One try at running `job`: takes an isolate (a hardened one when `hardened`), runs, finishes. */
async function attemptJob(job: Job, hardenedOk: boolean): Promise<void> {
  const { spec } = job;
  const hardened = hardenedBroken || !hardenedOk ? null : (takeHardened(spec) ?? (await waitHardened(job)));
  if (job.finished) {
    if (hardened !== null) releaseHardened(hardened);
    return;
  }
  let slot: Slot;
  let prepared: Prepared;
  if (hardened?.hardened != null) {
    slot = hardened;
    job.slot = slot;
    prepared = hardened.hardened;
  } else {
    slot = takeIdle(spec) ?? takeFresh(spec.memMB);
    job.slot = slot;
    const spare = slot.spare;
    slot.spare = null;
    slot.spareReady = false;
    prepared = spare !== null ? await spare : await prepareContext(slot);
    if (job.finished) {
      releaseContext(prepared);
      return;
    }
  }
  job.prepared = prepared;
  prepared.sink.job = job;
  const answer = await callUser(job, slot, prepared);
  const result = fromAnswer(job, answer);
  // A run whose code threw is as clean as one that returned: its context goes away either way.
  const reusable = result.ok || result.code === 'exception' || result.code === 'output_invalid';
  finish(job, result, reusable);
}

function abort(job: Job, code: 'timeout' | 'killed'): void {
  if (job.finished || job.abortCode !== null) return;
  job.abortCode = code;
  // A run still waiting for a hardened isolate stops waiting.
  const waiting = hardenedWaiting.get(job.spec.memMB);
  const at = waiting?.findIndex((w) => w.job === job) ?? -1;
  if (at >= 0) waiting?.splice(at, 1)[0]?.resolve(null);
  // Disposing rejects whatever the job awaits in this isolate; runJob then reports `code`.
  if (job.slot !== null) disposeSlot(job.slot);
  else void finishWithError(job, new Error(code));
}

// --- the channel -------------------------------------------------------------------------

function onMessage(message: ToHost): void {
  if (message.t === 'run') {
    void runJob(message.id, message.job);
  } else if (message.t === 'cancel') {
    const job = jobs.get(message.id);
    if (job !== undefined) abort(job, message.code);
  }
}

function main(): void {
  const decode = createFrameDecoder<ToHost>(onMessage);
  process.stdin.on('data', (chunk: Buffer) => {
    try {
      decode(chunk);
    } catch (error) {
      log('error', `bad frame from the server: ${String(error)}`);
      flushOutboxSync();
      process.exit(65);
    }
  });
  // The server went away: nothing is left to serve.
  process.stdin.on('end', () => process.exit(0));
  for (const memMB of PREWARM_MEM_MB) fresh.set(memMB, []);
  for (let i = 0; i < PREWARM_HARDENED; i++) for (const memMB of PREWARM_MEM_MB) requestBuild(memMB);
  // Fresh isolates are warmed only for a host without hardened contexts (see pumpBuilds).
  if (hardenedBroken) refill();
  send({ t: 'ready', pid: process.pid });
}

main();
