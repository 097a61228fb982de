/**
 * The OCI runtime spec (config.json) of one gVisor sandbox.
 */
import type { Limits } from '../../core/limits.js';

/** The uid/gid the code runs as inside (gVisor's kernel, not the host's). */
export const SANDBOX_UID = 1000;

/** An OCI mount entry. */
export interface OciMount {
  readonly destination: string;
  readonly type: string;
  readonly source: string;
  readonly options?: readonly string[];
}

/** What every gVisor sandbox of Vulcan's shares: a workload's or a long-lived sandbox's. */
export interface OciOptions {
  readonly rootfsDir: string;
  readonly argv: readonly string[];
  readonly env: readonly string[];
  readonly cwd: string;
  readonly limits: Pick<Limits, 'memMB' | 'pidsMax' | 'cpus' | 'diskMB'>;
  readonly hostname: string;
  /** Mounts after /proc, /sys, /tmp and /work (bind mounts of host directories). */
  readonly mounts: readonly OciMount[];
}

export interface BundleOptions {
  readonly rootfsDir: string;
  readonly argv: readonly string[];
  readonly env: readonly string[];
  readonly cwd: string;
  /** Host dir mounted read-only at /vulcan, and the writable result dir inside it. */
  readonly inDir: string;
  readonly outDir: string;
  readonly limits: Limits;
  readonly hostname: string;
}

/**
 * Builds config.json: read-only root, size-capped tmpfs at /tmp and /work, no capabilities,
 * no_new_privs, fresh namespaces (network included: runsc runs with --network=none), and
 * the limits also written in the spec so gVisor's kernel reports them to the code.
 */
export function ociConfig(o: OciOptions): object {
  const tmpfs = (dest: string) => ({ destination: dest, type: 'tmpfs', source: 'tmpfs', options: ['nosuid', 'nodev', `size=${o.limits.diskMB}m`, 'mode=1777'] });
  return {
    ociVersion: '1.0.2',
    process: {
      terminal: false,
      user: { uid: SANDBOX_UID, gid: SANDBOX_UID },
      args: o.argv,
      env: o.env,
      cwd: o.cwd,
      noNewPrivileges: true,
      capabilities: { bounding: [], effective: [], inheritable: [], permitted: [], ambient: [] },
      rlimits: [{ type: 'RLIMIT_NOFILE', hard: 4096, soft: 1024 }],
    },
    root: { path: o.rootfsDir, readonly: true },
    hostname: o.hostname,
    mounts: [
      { destination: '/proc', type: 'proc', source: 'proc' },
      { destination: '/sys', type: 'sysfs', source: 'sysfs', options: ['nosuid', 'noexec', 'nodev', 'ro'] },
      tmpfs('/tmp'),
      tmpfs('/work'),
      ...o.mounts,
    ],
    linux: {
      namespaces: [{ type: 'pid' }, { type: 'network' }, { type: 'ipc' }, { type: 'uts' }, { type: 'mount' }],
      resources: {
        memory: { limit: o.limits.memMB * 1024 * 1024 },
        pids: { limit: o.limits.pidsMax },
        cpu: { quota: Math.max(1000, Math.round(o.limits.cpus * 100_000)), period: 100_000 },
      },
    },
  };
}

/** config.json of a workload: `ociConfig` with the runner's /vulcan (read-only) and /vulcan/out (the result tmpfs). */
export function bundleConfig(o: BundleOptions): object {
  return ociConfig({
    ...o,
    mounts: [
      { destination: '/vulcan', type: 'bind', source: o.inDir, options: ['rbind', 'ro', 'nosuid', 'nodev'] },
      { destination: '/vulcan/out', type: 'bind', source: o.outDir, options: ['rbind', 'rw', 'nosuid', 'nodev', 'noexec'] },
    ],
  });
}
