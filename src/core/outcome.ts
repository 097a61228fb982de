/**
 * How a process backend turns what it saw at a workload's end into the workload's error:
 * one order of precedence for every backend (abort, memory, pids, a bad result channel,
 * the runner's own report, the exit code).
 */
import type { WorkloadAbort } from './backend.js';
import type { WorkloadError } from './errors.js';
import type { Limits } from './limits.js';

/** What a backend saw when a workload's process (or container, or VM) ended. */
export interface ProcessEnd {
  /** Why the run was aborted, when it was. */
  readonly aborted?: WorkloadAbort['kind'];
  /** The kernel's OOM killer acted in the sandbox. */
  readonly oomKilled: boolean;
  /** A fork failed at the pids limit. */
  readonly pidsLimitHit: boolean;
  /** The result channel was unreadable or too large. */
  readonly channelError?: WorkloadError;
  /** The runner reported the code's error (exception, disk_limit…). */
  readonly runnerError?: WorkloadError;
  readonly exitCode: number | null;
  readonly signal?: string | null;
}

/** The workload's error for `end`, or null when it completed. */
export function workloadError(end: ProcessEnd, limits: Limits): WorkloadError | null {
  if (end.aborted === 'timeout') return { code: 'timeout', message: `timed out after ${limits.timeoutMs / 1000}s (resources.timeout_s)` };
  if (end.aborted) return { code: 'killed', message: 'killed on request' };
  if (end.oomKilled) return { code: 'memory_limit', message: `went over the memory limit of ${limits.memMB} MiB (resources.mem_mb)` };
  if (end.pidsLimitHit) return { code: 'pids_limit', message: `hit the limit of ${limits.pidsMax} processes` };
  if (end.channelError) return end.channelError;
  if (end.runnerError) return end.runnerError;
  if (end.exitCode !== 0) {
    return { code: 'nonzero_exit', message: end.exitCode === null ? `killed by ${end.signal ?? 'a signal'}` : `exited with code ${end.exitCode}` };
  }
  return null;
}
