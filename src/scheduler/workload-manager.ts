/**
 * Runs accepted workloads: records each, waits for a slot (at most `maxConcurrent` at
 * once), runs it on its backend under the wall-clock timeout, captures its output, and
 * writes exactly one terminal record. Everything here is shared by every backend.
 */
import { RunAbort, WorkloadAbort, type Backend, type RunOutcome, type RunSpec } from '../core/backend.js';
import type { Logger } from '../core/context.js';
import { VulcanError, type WorkloadError } from '../core/errors.js';
import { OutputCollector } from '../core/output.js';
import type { Isolation, TerminalStatus } from '../core/types.js';
import type { WorkloadRecord, WorkloadStore } from '../store/workloads.js';

/** Hooks for metrics; called once per workload at start and at its end. */
export interface WorkloadObserver {
  started(backend: string): void;
  finished(rec: WorkloadRecord, startMs: number | null, execMs: number | null): void;
}

/** A workload that has not ended yet: its output so far and its end. */
export interface LiveWorkload {
  readonly output: OutputCollector;
  /** Resolves with the terminal record once it is stored. */
  readonly done: Promise<WorkloadRecord>;
}

interface Slot {
  readonly spec: RunSpec;
  readonly backend: Backend;
  readonly reason: string;
  readonly abort: RunAbort;
  readonly output: OutputCollector;
  readonly mode: 'sync' | 'async';
  state: 'pending' | 'running';
}

export interface WorkloadManagerOptions {
  readonly store: WorkloadStore;
  readonly nodeName: string;
  readonly maxConcurrent: number;
  readonly log: Logger;
  readonly observer?: WorkloadObserver;
}

export class WorkloadManager {
  private readonly slots = new Map<string, Slot>();
  private readonly live = new Map<string, LiveWorkload>();
  private readonly queue: (() => void)[] = [];
  private running = 0;
  private closed = false;

  constructor(private readonly opts: WorkloadManagerOptions) {}

  /** Workloads not yet ended (pending or running). */
  get activeCount(): number {
    return this.slots.size;
  }

  get runningCount(): number {
    return this.running;
  }

  /**
   * Records `spec` as pending and starts it as soon as a slot is free. The returned
   * promise resolves with the terminal record; it never rejects.
   */
  submit(spec: RunSpec, isolation: Isolation, selection: { backend: Backend; reason: string }, mode: 'sync' | 'async', inputHash: string): LiveWorkload {
    if (this.closed) throw new VulcanError('backend_unavailable', 'the server is shutting down');
    // A free slot is taken now, and the row written as running: one write instead of two.
    const startsNow = this.running < this.opts.maxConcurrent && this.queue.length === 0;
    this.opts.store.insert({
      id: spec.id,
      mode,
      isolation,
      runtime: spec.runtime,
      nodeId: this.opts.nodeName,
      inputHash,
      cpus: spec.limits.cpus,
      memMB: spec.limits.memMB,
      timeoutS: spec.limits.timeoutMs / 1000,
      createdAt: Date.now(),
      ...(startsNow ? { running: { backend: selection.backend.name, reason: selection.reason, startedAt: Date.now() } } : {}),
    });
    if (startsNow) this.running++;
    const slot: Slot = {
      spec,
      backend: selection.backend,
      reason: selection.reason,
      abort: new RunAbort(),
      output: new OutputCollector(spec.limits.outputBytes),
      mode,
      state: 'pending',
    };
    this.slots.set(spec.id, slot);
    const done = this.execute(slot, startsNow);
    const live: LiveWorkload = { output: slot.output, done };
    this.live.set(spec.id, live);
    return live;
  }

  /** The live view of a workload that has not ended, or undefined. */
  getLive(id: string): LiveWorkload | undefined {
    return this.live.get(id);
  }

  /** Kills a workload that has not ended. Returns false when it is not active here. */
  kill(id: string): boolean {
    const slot = this.slots.get(id);
    if (!slot) return false;
    slot.abort.abort(new WorkloadAbort('killed'));
    return true;
  }

  /** Waits for a free slot; rejects with the abort reason when the workload is killed while it waits. */
  private acquire(abort: RunAbort): Promise<void> {
    if (this.running < this.opts.maxConcurrent) {
      this.running++;
      return Promise.resolve();
    }
    return new Promise<void>((resolve, reject) => {
      const grant = () => {
        stopListening();
        this.running++;
        resolve();
      };
      this.queue.push(grant);
      const stopListening = abort.onAbort(() => {
        const i = this.queue.indexOf(grant);
        if (i >= 0) this.queue.splice(i, 1);
        reject(abort.reason ?? new WorkloadAbort('killed'));
      });
    });
  }

  private release(): void {
    this.running--;
    const next = this.queue.shift();
    if (next) next();
  }

  private async execute(slot: Slot, holdsSlot: boolean): Promise<WorkloadRecord> {
    const { spec, backend } = slot;
    const { store } = this.opts;
    let outcome: RunOutcome | undefined;
    let hostError: WorkloadError | undefined;
    let t0 = performance.now();
    let acquired = false;
    try {
      // Yield once so the caller has the live handle before anything can finish.
      acquired = holdsSlot;
      await Promise.resolve();
      if (!holdsSlot) {
        await this.acquire(slot.abort);
        acquired = true;
        store.markRunning(spec.id, backend.name, slot.reason, Date.now());
      }
      slot.state = 'running';
      t0 = performance.now();
      this.opts.observer?.started(backend.name);
      const timer = setTimeout(() => slot.abort.abort(new WorkloadAbort('timeout')), spec.limits.timeoutMs);
      try {
        outcome = await backend.run(spec, slot.output, slot.abort);
      } finally {
        clearTimeout(timer);
      }
    } catch (err) {
      if (!(err instanceof WorkloadAbort)) {
        this.opts.log.error({ err, workload: spec.id, backend: backend.name }, 'backend failed');
        hostError = { code: 'backend_error', message: `the ${backend.name} backend failed: ${(err as Error).message}` };
      }
    } finally {
      if (acquired) this.release();
    }
    const elapsed = performance.now() - t0;
    const reason = slot.abort.reason;
    const { status, error } = terminal(reason, outcome, hostError, spec);
    const rec: Parameters<WorkloadStore['finish']>[1] = {
      status,
      ...(outcome?.output === undefined || status !== 'completed' ? {} : { output: outcome.output }),
      stdout: slot.output.bytes('stdout'),
      stderr: slot.output.bytes('stderr'),
      stdoutTruncated: slot.output.truncated('stdout'),
      stderrTruncated: slot.output.truncated('stderr'),
      logIndex: slot.output.index,
      exitCode: outcome?.exitCode ?? null,
      error,
      durationMs: acquired ? elapsed : 0,
      startMs: outcome?.startMs ?? null,
      execMs: outcome?.execMs ?? null,
      finishedAt: Date.now(),
    };
    const stored = store.finishAndGet(spec.id, rec, { name: backend.name, reason: slot.reason }) ?? store.get(spec.id);
    this.slots.delete(spec.id);
    this.live.delete(spec.id);
    if (!stored) throw new Error(`workload ${spec.id} vanished from the store`);
    this.opts.observer?.finished(stored, rec.startMs, rec.execMs);
    // A sync workload that completed is named by its request's log line (routes/workloads.ts).
    this.opts.log[slot.mode === 'sync' && stored.status === 'completed' ? 'debug' : 'info'](
      {
        workload: stored.id,
        status: stored.status,
        isolation: stored.isolation_used,
        runtime: stored.runtime,
        duration_ms: stored.duration_ms,
        error_code: stored.error?.code ?? null,
      },
      'workload finished',
    );
    // Whoever awaits `done` reports the record: only once it is committed.
    await store.committed();
    return stored;
  }

  /** Kills every active workload (they end as failed/host_restarted) and refuses new ones. */
  async close(): Promise<void> {
    this.closed = true;
    const pending = [...this.live.values()].map((l) => l.done);
    for (const slot of this.slots.values()) slot.abort.abort(new WorkloadAbort('shutdown'));
    await Promise.allSettled(pending);
  }
}

function terminal(reason: WorkloadAbort | undefined, outcome: RunOutcome | undefined, hostError: WorkloadError | undefined, spec: RunSpec): { status: TerminalStatus; error: WorkloadError | null } {
  if (reason?.kind === 'timeout') return { status: 'timeout', error: { code: 'timeout', message: `timed out after ${spec.limits.timeoutMs / 1000}s; raise resources.timeout_s if it needs longer` } };
  if (reason?.kind === 'killed') return { status: 'killed', error: { code: 'killed', message: 'killed on request (DELETE /v1/workloads/:id)' } };
  if (reason?.kind === 'shutdown') return { status: 'failed', error: { code: 'host_restarted', message: 'the server stopped while this workload ran' } };
  if (hostError) return { status: 'failed', error: hostError };
  if (!outcome) return { status: 'failed', error: { code: 'backend_error', message: 'the backend returned nothing' } };
  if (outcome.error) return { status: 'failed', error: outcome.error };
  return { status: 'completed', error: null };
}
