/**
 * The workload store's write thread: the INSERTs and UPDATEs of workloads in flight, and their
 * commits, run on a worker thread with its own SQLite connection, off the API server's event
 * loop (under load they were ≈ 12 % of its busy time, and that loop is what caps throughput).
 *
 * The main side (`WriteThread`) queues each write and posts a turn's writes as one batch; the
 * thread runs every batch it has received in one transaction and acknowledges the last. Callers
 * that report a write to someone wait for its acknowledgement (`committed`). If the thread fails
 * a transaction or dies, it is stopped, and its unacknowledged batches (in order) and every later
 * write run on the main connection instead, committed before anyone waiting is told; replays
 * are idempotent (the main side inserts with OR IGNORE; the updates only move rows forward),
 * so a batch the thread committed just before it was stopped does no harm run twice.
 *
 * This file is also the thread's entry point (it runs `threadMain` when it is not the main
 * thread).
 */
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { isMainThread, parentPort, receiveMessageOnPort, Worker, workerData, type MessagePort } from 'node:worker_threads';
import { openConnection } from './db.js';

/** One write: the statement (see workloads.ts WORKLOAD_WRITES) and its named parameters. */
export interface WriteOp {
  readonly k: 'insert' | 'running' | 'finish';
  readonly p: Record<string, unknown>;
}

/**
 * A write as it crosses to the thread: the statement and its parameters by position. Positional
 * arrays rather than the named objects: the structured clone of an object writes and reads
 * back every key (and builds the object's shape), and named binding looks every key up again.
 */
type WireOp = readonly [WriteOp['k'], readonly unknown[]];

interface Batch {
  readonly seq: number;
  readonly ops: readonly WireOp[];
}

/** A statement with its named parameters (`@name`) made positional, and their names in order. */
interface Positional {
  readonly sql: string;
  readonly names: readonly string[];
}
type Statements = Readonly<Record<WriteOp['k'], Positional>>;

function positional(sql: string): Positional {
  return { sql: sql.replace(/@(\w+)/g, '?'), names: [...sql.matchAll(/@(\w+)/g)].map((m) => m[1] ?? '') };
}

/** The thread's start-up data. */
interface ThreadData {
  readonly file: string;
  readonly statements: Statements;
}

interface Ack {
  readonly seq: number;
  readonly error?: string;
}

/** Blob columns: they arrive as Uint8Array (structured clone) and are bound as Buffers. */
const BLOBS = ['stdout', 'stderr'];

/** The main side of the write thread. */
export class WriteThread {
  private readonly worker: Worker;
  private queue: WriteOp[] = [];
  private seq = 0;
  private acked = 0;
  private readonly unacked = new Map<number, readonly WriteOp[]>();
  private waiters: { seq: number; resolve: () => void }[] = [];
  private dead = false;
  /** Set once close() began: new writes go to the main connection. */
  private draining = false;
  private closing: Promise<void> | null = null;
  /** The statements as the thread runs them: positional, with the names in their order. */
  private readonly statements: Statements;

  constructor(
    file: string,
    sql: Readonly<Record<WriteOp['k'], string>>,
    /** Runs writes on the main connection and commits them before returning: a dead thread's share. */
    private readonly fallback: (ops: readonly WriteOp[]) => void,
    private readonly onError: (error: unknown) => void,
  ) {
    this.statements = { insert: positional(sql.insert), running: positional(sql.running), finish: positional(sql.finish) };
    this.worker = new Worker(new URL(import.meta.url), { workerData: { file, statements: this.statements } satisfies ThreadData });
    this.worker.unref();
    this.worker.on('message', (ack: Ack) => this.onAck(ack));
    this.worker.on('error', (error) => this.die(error));
    this.worker.on('exit', (code) => this.die(new Error(`the store's write thread exited (code ${code})`)));
  }

  /** Queues a write; a turn's writes leave as one batch. */
  push(op: WriteOp): void {
    if (this.dead || this.draining) {
      this.fallback([op]);
      return;
    }
    this.queue.push(op);
    if (this.queue.length === 1) setImmediate(() => this.post());
  }

  /** Nothing is queued or on its way to the thread: a write committed elsewhere now overtakes none of its. */
  get idle(): boolean {
    return !this.dead && !this.draining && this.queue.length === 0 && this.unacked.size === 0;
  }

  /** Resolves once every write queued so far is committed. */
  committed(): Promise<void> {
    // Writes queued now leave in the next batch.
    const target = this.queue.length > 0 ? this.seq + 1 : this.seq;
    if (target <= this.acked) return Promise.resolve();
    return new Promise((resolve) => this.waiters.push({ seq: target, resolve }));
  }

  /** Commits what is queued, waits for it, and stops the thread. Idempotent. */
  close(): Promise<void> {
    this.closing ??= (async () => {
      this.draining = true;
      this.post();
      await this.committed();
      this.dead = true;
      await this.worker.terminate();
      this.replayUnacked();
    })();
    return this.closing;
  }

  private post(): void {
    if (this.queue.length === 0) return;
    const ops = this.queue;
    this.queue = [];
    if (this.dead) {
      this.runHere(ops);
      return;
    }
    const seq = ++this.seq;
    this.unacked.set(seq, ops);
    const wire: WireOp[] = ops.map((op) => [op.k, this.statements[op.k].names.map((name) => op.p[name])]);
    this.worker.postMessage({ seq, ops: wire } satisfies Batch);
  }

  private onAck(ack: Ack): void {
    if (this.dead) return;
    if (ack.error !== undefined) {
      // Its transaction was rolled back. Later batches may already be on their way to it: stop
      // it, and run all that is not acknowledged here, in order.
      this.die(new Error(`the store's write thread could not commit: ${ack.error}`));
      void this.worker.terminate();
      return;
    }
    for (const seq of [...this.unacked.keys()]) {
      if (seq > ack.seq) break;
      this.unacked.delete(seq);
    }
    this.acked = Math.max(this.acked, ack.seq);
    this.wake();
  }

  /** The thread is gone: what it had not committed, and everything after, runs here. */
  private die(error: unknown): void {
    if (this.dead) return;
    this.dead = true;
    if (this.closing === null) this.onError(error);
    this.replayUnacked();
  }

  /** Runs here, in order, every batch the thread did not acknowledge and what is queued; then tells the waiters. */
  private replayUnacked(): void {
    const batches = [...this.unacked.values()];
    this.unacked.clear();
    const queued = this.queue;
    this.queue = [];
    if (queued.length > 0) batches.push(queued);
    for (const ops of batches) this.runHere(ops);
    this.acked = this.seq;
    this.wake();
  }

  private runHere(ops: readonly WriteOp[]): void {
    try {
      this.fallback(ops);
    } catch (error) {
      this.onError(error);
    }
  }

  private wake(): void {
    const ready = this.waiters.filter((w) => w.seq <= this.acked);
    this.waiters = this.waiters.filter((w) => w.seq > this.acked);
    for (const w of ready) w.resolve();
  }
}

/** A blob column's value as SQLite binds it: a Uint8Array (as structured clone delivers it) as a Buffer. */
function blob(v: unknown): unknown {
  return v instanceof Uint8Array && !Buffer.isBuffer(v) ? Buffer.from(v.buffer, v.byteOffset, v.byteLength) : v;
}

/** Binds blobs as Buffers (named parameters on the main connection). */
export function bindable(p: Record<string, unknown>): Record<string, unknown> {
  const out = { ...p };
  for (const key of BLOBS) if (key in out) out[key] = blob(out[key]);
  return out;
}

/** The write thread's nice value (see yieldToEventLoop). */
const THREAD_NICE = 10;
/** util-linux's chrt (Essential in Debian): Node has no call for a thread's scheduling policy. */
const CHRT = '/usr/bin/chrt';

/**
 * Puts this thread behind the server's event loop, which every request waits on: nice
 * THREAD_NICE and SCHED_BATCH (when the event loop posts a batch, the woken thread does not
 * preempt it). Under load the thread then commits bigger batches rather than taking the loop's
 * CPU. Best effort: Linux only, and the policy is set by util-linux's chrt; without either the
 * thread runs like the rest.
 */
function yieldToEventLoop(): void {
  let tid: number;
  try {
    tid = Number(path.basename(fs.readlinkSync('/proc/thread-self')));
    os.setPriority(tid, THREAD_NICE);
  } catch {
    return;
  }
  // A missing chrt is an error in the result, not a throw.
  spawnSync(CHRT, ['--batch', '--pid', '0', String(tid)], { stdio: 'ignore', timeout: 5_000 });
}

/** The thread: its own connection; every batch waiting is run in one transaction. */
function threadMain(port: MessagePort, data: ThreadData): void {
  yieldToEventLoop();
  const db = openConnection(data.file);
  const prepare = ({ sql, names }: Positional) => ({ stmt: db.prepare(sql), blobs: names.flatMap((name, i) => (BLOBS.includes(name) ? [i] : [])) });
  const stmts = { insert: prepare(data.statements.insert), running: prepare(data.statements.running), finish: prepare(data.statements.finish) };
  const runAll = db.transaction((batches: Batch[]) => {
    for (const batch of batches) {
      for (const [k, params] of batch.ops) {
        const { stmt, blobs } = stmts[k];
        const args = params as unknown[]; // this thread's own copy
        for (const i of blobs) args[i] = blob(args[i]);
        stmt.run(args);
      }
    }
  });
  port.on('message', (first: Batch) => {
    const batches = [first];
    for (let more = receiveMessageOnPort(port); more !== undefined; more = receiveMessageOnPort(port)) batches.push(more.message as Batch);
    const last = batches[batches.length - 1]?.seq ?? first.seq;
    try {
      runAll(batches);
      port.postMessage({ seq: last } satisfies Ack);
    } catch (error) {
      port.postMessage({ seq: last, error: error instanceof Error ? error.message : String(error) } satisfies Ack);
    }
  });
}

if (!isMainThread && parentPort !== null) threadMain(parentPort, workerData as ThreadData);
