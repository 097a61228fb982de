/**
 * The shared vocabulary of Vulcan: runtimes, isolation names and workload states.
 * Name constants live here so that every layer spells them the same way.
 */

/** Runtimes a workload can ask for. Each backend lists the ones it serves. */
export const RUNTIMES = ['node', 'python', 'sh', 'js', 'ts', 'wasm', 'oci'] as const;
export type Runtime = (typeof RUNTIMES)[number];

/** Concrete isolation backends, weakest to strongest wall. */
export const BACKEND_NAMES = ['isolate', 'namespace', 'gvisor', 'container', 'microvm'] as const;
export type BackendName = (typeof BACKEND_NAMES)[number];

/** What a request may ask for: a backend by name, or `auto` to let the scheduler pick. */
export const ISOLATIONS = ['auto', ...BACKEND_NAMES] as const;
export type Isolation = (typeof ISOLATIONS)[number];

/** States a workload passes through. The last four are terminal. */
export const WORKLOAD_STATUSES = ['pending', 'running', 'completed', 'failed', 'timeout', 'killed'] as const;
export type WorkloadStatus = (typeof WORKLOAD_STATUSES)[number];
export type TerminalStatus = Extract<WorkloadStatus, 'completed' | 'failed' | 'timeout' | 'killed'>;

export const TERMINAL_STATUSES: readonly TerminalStatus[] = ['completed', 'failed', 'timeout', 'killed'];

/** True when a workload in this status will never change again. */
export function isTerminal(status: WorkloadStatus): status is TerminalStatus {
  return (TERMINAL_STATUSES as readonly string[]).includes(status);
}

/** A JSON value, as it travels in `input` and `output`. */
export type JsonValue = null | boolean | number | string | JsonValue[] | { [key: string]: JsonValue };
