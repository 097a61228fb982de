/**
 * The contract every isolation backend implements. A backend is a folder under
 * `src/backends/<name>/` whose class `implements Backend`; the registry
 * (`src/backends/registry.ts`) loads it lazily by name.
 *
 * What the core does for every backend, so a backend must not do it again:
 * - validates the request and resolves `Limits` (src/core/limits.ts);
 * - caps captured output (the `RunIO` it hands in already discards bytes past the cap);
 * - runs the wall-clock timeout and client kills, by aborting `signal`;
 * - records the workload and maps a `RunOutcome` to a terminal status.
 */
import type { WorkloadError } from './errors.js';
import type { Limits } from './limits.js';
import type { BackendName, JsonValue, Runtime } from './types.js';

/** The user's code, as the API accepted it (already validated). */
export type CodeSource =
  /** Inline source. For `wasm` it is the base64 of a module. */
  | { readonly kind: 'inline'; readonly source: string }
  /** A gzip'd tarball, already checked for escaping paths; `entrypoint` is a file inside it. */
  | { readonly kind: 'archive'; readonly tarGz: Buffer; readonly entrypoint: string };

/** One workload to run, fully validated and defaulted. */
export interface RunSpec {
  /** The workload's id (a ULID); use it to name cgroups, containers and VMs. */
  readonly id: string;
  readonly runtime: Runtime;
  /** The code to run. Absent only for `oci`, which runs `cmd` in `image`. */
  readonly code?: CodeSource;
  /** The input, as JSON text. */
  readonly inputJson: string;
  /** Extra environment for the code; names already checked. */
  readonly env: Readonly<Record<string, string>>;
  readonly limits: Limits;
  /** An image name from the image store, where the request named one. */
  readonly image?: string;
  /** The argv for `oci` workloads. */
  readonly cmd?: readonly string[];
}

/** Where a backend sends what the code prints. Chunks are forwarded in order. */
export interface RunIO {
  stdout(chunk: Buffer): void;
  stderr(chunk: Buffer): void;
}

/**
 * What came of one run, as the backend saw it. The core turns it into a terminal status:
 * aborted by timeout → `timeout`; aborted by a client → `killed`; `error` set → `failed`;
 * otherwise `completed`.
 */
export interface RunOutcome {
  /** The process's exit code; null when it was killed by a signal or there was no process. */
  readonly exitCode: number | null;
  /** The code's return value (`main(input)`, the default export); undefined when it gave none. */
  readonly output?: JsonValue;
  /** Why the code did not complete, when it did not. */
  readonly error: WorkloadError | null;
  /** Milliseconds from the start of `run` until the user's code began to run. */
  readonly startMs: number;
  /** Milliseconds the user's code ran. */
  readonly execMs: number;
  /** Why this backend was chosen, or other notes for the record (optional). */
  readonly notes?: Readonly<Record<string, string>>;
}

/** Why an abort signal fired; `signal.reason` is one of these. */
export class WorkloadAbort extends Error {
  constructor(readonly kind: 'timeout' | 'killed' | 'shutdown') {
    super(`workload ${kind}`);
    this.name = 'WorkloadAbort';
  }
}

/**
 * A run's cancellation, as the workload manager hands it to `Backend.run`. `signal` is a real
 * AbortSignal for the APIs that take one (spawn, fetch, timers), made on first use: Node 20
 * takes ≈ 4 µs and 1.4 KiB to make an AbortSignal, a fair share of a sub-millisecond isolate
 * run, which listens with `onAbort` instead.
 */
export class RunAbort {
  private why: WorkloadAbort | undefined;
  private controller: AbortController | undefined;
  private listeners: (() => void)[] | undefined;

  /** One that times out after `ms` (like `AbortSignal.timeout`; the timer does not hold the process). */
  static after(ms: number): RunAbort {
    const abort = new RunAbort();
    setTimeout(() => abort.abort(new WorkloadAbort('timeout')), ms).unref();
    return abort;
  }

  get aborted(): boolean {
    return this.why !== undefined;
  }

  /** Why it was aborted; undefined while it was not. */
  get reason(): WorkloadAbort | undefined {
    return this.why;
  }

  /** An AbortSignal that aborts with this run (already aborted if the run is). */
  get signal(): AbortSignal {
    if (this.controller === undefined) {
      this.controller = new AbortController();
      if (this.why !== undefined) this.controller.abort(this.why);
    }
    return this.controller.signal;
  }

  /**
   * Aborts the run: `onAbort` listeners, then the signal's. Only the first call counts. A
   * listener that throws stops neither the others nor the signal; the first error is thrown
   * at the end.
   */
  abort(reason: WorkloadAbort): void {
    if (this.why !== undefined) return;
    this.why = reason;
    const listeners = this.listeners ?? [];
    this.listeners = undefined;
    const errors: unknown[] = [];
    for (const fn of listeners) {
      try {
        fn();
      } catch (error) {
        errors.push(error);
      }
    }
    this.controller?.abort(reason);
    if (errors.length > 0) throw errors[0];
  }

  /** Calls `fn` once when the run is aborted, at once if it already is; returns a function that removes it. */
  onAbort(fn: () => void): () => void {
    if (this.why !== undefined) {
      fn();
      return () => undefined;
    }
    (this.listeners ??= []).push(fn);
    return () => {
      const i = this.listeners?.indexOf(fn) ?? -1;
      if (i >= 0) this.listeners?.splice(i, 1);
    };
  }
}

/** Optional features a caller can check before relying on them. */
export interface BackendCapabilities {
  /** Runs long-lived sandboxes (exec, files), not only one-shot workloads. */
  readonly sandboxes: boolean;
  /** Can freeze and thaw a sandbox, keeping memory and processes. */
  readonly pause: boolean;
  /** Runs an image from the image store (`image`, `runtime: "oci"`). */
  readonly images: boolean;
  /** Has some warm start (pool, cache, snapshot). */
  readonly warmStart: boolean;
  /** The guest can reach the network when asked (never by default). */
  readonly network: boolean;
}

/** Whether a backend can run on this host now. */
export type Availability = { readonly available: true; readonly info?: Readonly<Record<string, string>> } | { readonly available: false; readonly reason: string };

/** Whether a backend will take a particular workload (used by `auto`). */
export type Acceptance = { readonly ok: true; readonly reason: string } | { readonly ok: false; readonly reason: string };

/** The contract of an isolation backend. */
export interface Backend {
  /** The name clients use in `isolation`. */
  readonly name: BackendName;
  /** One line on the wall this backend puts up, for people (`GET /v1/backends`). */
  readonly isolation: string;
  /** The runtimes it serves. */
  readonly runtimes: readonly Runtime[];
  readonly capabilities: BackendCapabilities;

  /**
   * Checks the host once (binaries, cgroup controllers, daemons) and says whether this
   * backend can run. Called at start-up and cached by the registry; must not throw.
   * An unavailable backend never runs code, and the platform never falls back to running
   * code unsandboxed.
   */
  probe(): Promise<Availability>;

  /**
   * Says whether this backend will take `spec`, and why. `auto` tries backends in order and
   * moves on when one says no. Synchronous and cheap: it must not start anything.
   */
  accepts(spec: RunSpec): Acceptance;

  /**
   * Runs one workload to its end and resolves with what came of it. It rejects only for a
   * fault of the host or the backend, never for anything the code did.
   * When `abort` fires, it kills everything the workload made and resolves promptly.
   * Before it resolves, every process, cgroup, mount, container and VM it made is gone.
   */
  run(spec: RunSpec, io: RunIO, abort: RunAbort): Promise<RunOutcome>;

  /**
   * Removes what an earlier server process left behind (cgroups, containers, VMs), at
   * start-up, before any workload runs. Optional.
   */
  reconcile?(): Promise<void>;

  /** Stops pools and helper processes. Idempotent. */
  close(): Promise<void>;
}
