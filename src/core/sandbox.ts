/**
 * The sandbox driver contract: what a backend provides to run long-lived sandboxes
 * (issue 6). It is optional: a backend that can host sandboxes exposes a `sandboxDriver`
 * property (see `sandboxDriverOf`); the others are skipped by `isolation: "auto"` and
 * answer `backend_unavailable` when named.
 *
 * The split of work, so that shared logic lives once (src/sandboxes/):
 * - a driver starts a sandbox that runs the Vulcan sandbox agent (src/sandboxes/agent/),
 *   gives the server byte-stream connections to that agent, and freezes, thaws, re-attaches
 *   and destroys the sandbox;
 * - everything a user asks of a sandbox (exec, streaming, the PTY, every file operation,
 *   the preview relay) is spoken to the agent by the sandbox manager, over the agent
 *   protocol, from inside the sandbox. The host never opens a path a user named, so path
 *   confinement does not depend on each backend getting it right.
 */
import type { Duplex } from 'node:stream';
import type { Backend } from './backend.js';

/** What one sandbox may use. Units are in the names. */
export interface SandboxLimits {
  /** CPU quota in cores. */
  readonly cpus: number;
  /** Memory cap in MiB (swap included). On namespace, files in /work and /tmp count too (tmpfs). */
  readonly memMB: number;
  /** Size cap of each writable filesystem (/work, /tmp) in MiB. */
  readonly diskMB: number;
  /** Most processes and threads. */
  readonly pidsMax: number;
}

/** One sandbox to start, validated and defaulted by the manager. */
export interface SandboxSpec {
  /** The sandbox's id (a ULID); name cgroups, directories and containers after it. */
  readonly id: string;
  /** The image: `host` (namespace: the host's read-only /usr) or a name from the image store. */
  readonly image: string;
  readonly limits: SandboxLimits;
  /** Environment every exec starts with (names already checked). */
  readonly env: Readonly<Record<string, string>>;
}

/** Optional sandbox features, as readonly flags a caller can check. */
export interface SandboxCapabilities {
  /** Can freeze and thaw the sandbox, keeping memory and processes. */
  readonly pause: boolean;
  /** Sandboxes survive a server restart and are re-attached. */
  readonly reattach: boolean;
  /** Can run a command on a pseudo-terminal (the WebSocket shell). */
  readonly pty: boolean;
  /** The preview relay reaches TCP ports inside the sandbox. */
  readonly preview: boolean;
}

/** A running sandbox, as its driver sees it. */
export interface SandboxHandle {
  readonly id: string;
  /**
   * JSON the driver needs to re-attach after a server restart (pids, cgroup names, paths).
   * The manager stores it with the sandbox's record and hands it back to `attach`.
   */
  readonly persisted: Readonly<Record<string, unknown>>;
  /**
   * Opens a new byte-stream connection to the agent inside the sandbox. Each call is an
   * independent connection; the caller ends it. Rejects when the agent cannot be reached.
   */
  connect(signal?: AbortSignal): Promise<Duplex>;
  /** Freezes every process of the sandbox, keeping memory (a capability: `pause`). */
  pause(): Promise<void>;
  /** Thaws what `pause` froze. */
  resume(): Promise<void>;
  /**
   * Resolves, with a reason for people, once the sandbox has died on its own (its agent
   * crashed, it was OOM-killed). Never rejects. Not resolved by `destroy`.
   */
  readonly died: Promise<string>;
  /**
   * Kills every process of the sandbox and removes everything it made on the host
   * (cgroups, mounts, directories, sockets). Idempotent; resolves once all is gone.
   */
  destroy(): Promise<void>;
}

/** What `attach` found. */
export type AttachResult = { readonly ok: true; readonly handle: SandboxHandle } | { readonly ok: false; readonly reason: string };

/** The optional sandbox driver of a backend. */
export interface SandboxDriver {
  readonly capabilities: SandboxCapabilities;
  /** The image used when a request names none (namespace: `host`). */
  readonly defaultImage: string;
  /**
   * Starts a sandbox and resolves once its agent answers. On failure it leaves nothing
   * behind and rejects with a message for people. `signal` aborts the start.
   */
  create(spec: SandboxSpec, signal: AbortSignal): Promise<SandboxHandle>;
  /**
   * Re-attaches to a sandbox that an earlier server process started, from its `persisted`
   * record. `paused` says the record was paused (its processes are frozen and cannot
   * answer). When the sandbox cannot be re-attached, it is destroyed as far as possible and
   * the result says why.
   */
  attach(id: string, persisted: Readonly<Record<string, unknown>>, limits: SandboxLimits, paused: boolean): Promise<AttachResult>;
  /**
   * Destroys sandboxes of this driver that have no record in `keep` (orphans of a crash).
   * Called once at start-up, after every `attach`. Returns what it removed, for the log.
   */
  reapOrphans(keep: ReadonlySet<string>): Promise<string[]>;
  /** Stops watching sandboxes when the server closes; the sandboxes themselves live on. Idempotent. */
  close(): void;
}

/** A backend that can host sandboxes. */
export interface SandboxCapableBackend extends Backend {
  readonly sandboxDriver: SandboxDriver;
}

/** The backend's sandbox driver, when it has one. */
export function sandboxDriverOf(backend: Backend): SandboxDriver | undefined {
  const d = (backend as Partial<SandboxCapableBackend>).sandboxDriver;
  return d && typeof d.create === 'function' ? d : undefined;
}

/** States a sandbox passes through. `destroyed` and `lost` are terminal. */
export const SANDBOX_STATES = ['starting', 'running', 'paused', 'destroyed', 'lost'] as const;
export type SandboxState = (typeof SANDBOX_STATES)[number];
