/**
 * The host cgroup limits around a gVisor sandbox (sentry, gofer and, on ptrace, the stub
 * processes): shared by workloads and long-lived sandboxes.
 */
import type { Limits } from '../../core/limits.js';
import type { RunscPlatform } from './runsc.js';

/** Host memory the sentry and gofer need beyond the code's own `mem_mb`. */
export const GVISOR_MEMORY_OVERHEAD_MB = 64;
/**
 * Host tasks per guest process. gVisor's guest processes are not host processes, so the host
 * pids limit is this × `pidsMax` + a base for the sentry's and gofer's own threads. Measured
 * here on ptrace: 57 host tasks idle, +9 per sleeping guest process (a stub process and its
 * tracer threads). kvm and systrap need fewer. When the guest passes it, a fork fails in the
 * sentry and the whole sandbox dies: `pids_limit`.
 */
export const GVISOR_TASKS_PER_PROCESS: Readonly<Record<RunscPlatform, number>> = { ptrace: 10, systrap: 4, kvm: 2 };
export const GVISOR_BASE_TASKS = 96;

/** The host cgroup limits that hold a sandbox whose code gets `limits`. */
export function hostLimits(limits: Pick<Limits, 'memMB' | 'pidsMax' | 'cpus'>, platform: RunscPlatform): { memBytes: number; pidsMax: number; cpus: number } {
  return {
    memBytes: (limits.memMB + GVISOR_MEMORY_OVERHEAD_MB) * 1024 * 1024,
    pidsMax: GVISOR_BASE_TASKS + GVISOR_TASKS_PER_PROCESS[platform] * limits.pidsMax,
    cpus: limits.cpus,
  };
}
