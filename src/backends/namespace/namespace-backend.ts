/**
 * The namespace backend: each workload in a fresh bubblewrap sandbox (Linux namespaces)
 * inside its own cgroup (memory, pids, cpu), running on the host's read-only /usr.
 */
import fs from 'node:fs';
import path from 'node:path';
import type { Acceptance, Availability, Backend, BackendCapabilities, RunAbort, RunIO, RunOutcome, RunSpec } from '../../core/backend.js';
import { WorkloadAbort } from '../../core/backend.js';
import { dataDirTag } from '../../core/config.js';
import type { BackendContext } from '../../core/context.js';
import type { WorkloadError } from '../../core/errors.js';
import { workloadError } from '../../core/outcome.js';
import type { JsonValue, Runtime } from '../../core/types.js';
import { BWRAP_PATH, cgexecPathFor, publishStatic, spawnBwrap, startBwrap, type BwrapFile } from '../../host/bwrap.js';
import { cgroupSupport, createCgroup, ensureFavorDynamicMods, reapStaleCgroups, type Cgroup } from '../../host/cgroups.js';
import { jsonToPythonLiteral } from './python-literal.js';
import { readResultChannel, type RunnerMessage } from './result-channel.js';
import { NamespaceSandboxDriver } from './sandbox-driver.js';

const RUNTIMES = ['python', 'node', 'sh'] as const satisfies readonly Runtime[];
type NamespaceRuntime = (typeof RUNTIMES)[number];

/** How often the pids limit is checked while a workload runs. */
const PIDS_POLL_MS = 50;
/** The largest result line a runner may send (the code's return value as JSON). */
export const RESULT_MAX_BYTES = 4 * 1024 * 1024;

const RUNNER_FILES = { python: 'runner.py', node: 'runner.mjs', sh: 'run-sh.sh' } as const;
const INLINE_ENTRY = { python: '/work/main.py', node: '/work/main.js', sh: '/work/main.sh' } as const;

/** The argv that runs `entry` with the runtime's runner inside the sandbox. */
function runnerArgv(runtime: NamespaceRuntime, entry: string): string[] {
  switch (runtime) {
    case 'python':
      return ['/usr/bin/python3', '-I', '-S', '-X', 'utf8', '/vulcan/lib/runner.py', entry];
    case 'node':
      return ['/usr/bin/node', '--experimental-detect-module', '--disable-warning=ExperimentalWarning', '/vulcan/lib/runner.mjs', entry];
    case 'sh':
      return ['/bin/sh', '/vulcan/lib/run-sh.sh', entry];
  }
}

function isNamespaceRuntime(r: Runtime): r is NamespaceRuntime {
  return (RUNTIMES as readonly Runtime[]).includes(r);
}

export class NamespaceBackend implements Backend {
  readonly name = 'namespace';
  readonly isolation = 'Linux namespaces (user, pid, net, ipc, uts, mount, cgroup) + cgroups, via bubblewrap';
  readonly runtimes: readonly Runtime[] = RUNTIMES;
  readonly capabilities: BackendCapabilities = { sandboxes: true, pause: true, images: true, warmStart: false, network: false };
  /** Long-lived sandboxes on this backend (issue 6): src/backends/namespace/sandbox-driver.ts. */
  readonly sandboxDriver: NamespaceSandboxDriver;

  private readonly cgexecPath: string;
  private readonly cgroupPrefix: string;
  private readonly runnerSources: Readonly<Record<string, string>>;
  private runnerDir: string | undefined;
  /** cgroups being removed after their workload ended. */
  private readonly removals = new Set<Promise<void>>();

  constructor(private readonly ctx: BackendContext) {
    this.cgexecPath = cgexecPathFor(ctx.config.installDir);
    // This node's cgroups: `ns-<data dir tag>-<id>`, so reconciliation removes only ours.
    this.cgroupPrefix = `ns-${dataDirTag(ctx.config.dataDir)}-`;
    this.sandboxDriver = new NamespaceSandboxDriver(ctx);
    const dir = path.join(ctx.config.installDir, 'src', 'backends', 'namespace', 'runners');
    this.runnerSources = Object.fromEntries([...Object.values(RUNNER_FILES), 'unpack.sh'].map((f) => [f, fs.readFileSync(path.join(dir, f), 'utf8')]));
  }

  /** The runners, published once where the sandbox user can read them; bound at /vulcan/lib. */
  private runners(): string {
    this.runnerDir ??= publishStatic('runners', this.runnerSources);
    return this.runnerDir;
  }

  async probe(): Promise<Availability> {
    if (!fs.existsSync(BWRAP_PATH)) return { available: false, reason: `bubblewrap is not installed (${BWRAP_PATH} missing): apt-get install bubblewrap` };
    if (!fs.existsSync(this.cgexecPath)) return { available: false, reason: `${this.cgexecPath} is missing: run scripts/build-native.sh (setup does)` };
    const cg = cgroupSupport();
    if (!cg.ok) return { available: false, reason: cg.reason };
    // Start one real sandbox: proves user namespaces and the helper work on this host.
    const child = spawnBwrap({ argv: ['/bin/true'], env: {}, diskMB: 1, cgexecPath: this.cgexecPath, stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr?.on('data', (c: Buffer) => (stderr += c.toString()));
    const code = await new Promise<number | null>((resolve) => {
      child.on('error', () => resolve(-1));
      child.on('close', (c) => resolve(c));
    });
    if (code !== 0) return { available: false, reason: `a test sandbox failed to start (exit ${code}): ${stderr.trim() || 'no message'}` };
    // Cheap cgroup migrations (see docs/backends/namespace.md, "Starting fast").
    return { available: true, info: { cgroup: cg.version, cgroupFavorDynmods: ensureFavorDynamicMods() } };
  }

  accepts(spec: RunSpec): Acceptance {
    if (!isNamespaceRuntime(spec.runtime)) return { ok: false, reason: `namespace runs ${RUNTIMES.join(', ')}, not ${spec.runtime}` };
    if (spec.image !== undefined) return { ok: true, reason: `${spec.runtime} runs as a process in a namespace sandbox on image ${spec.image}` };
    return { ok: true, reason: `${spec.runtime} runs as a process in a namespace sandbox` };
  }

  async reconcile(): Promise<void> {
    const reaped = await reapStaleCgroups(this.cgroupPrefix);
    if (reaped.length > 0) this.ctx.log.warn({ cgroups: reaped }, 'removed cgroups left by an earlier server');
  }

  async close(): Promise<void> {
    await Promise.all([...this.removals]);
  }

  async run(spec: RunSpec, io: RunIO, abort: RunAbort): Promise<RunOutcome> {
    const signal = abort.signal;
    if (!isNamespaceRuntime(spec.runtime)) throw new Error(`namespace cannot run ${spec.runtime}`);
    const runtime = spec.runtime;
    const t0 = performance.now();
    const { limits } = spec;
    const cgroup = await createCgroup(`${this.cgroupPrefix}${spec.id}`, {
      memBytes: limits.memMB * 1024 * 1024,
      pidsMax: limits.pidsMax,
      cpus: limits.cpus,
    });
    try {
      return await this.runInCgroup(spec, runtime, cgroup, io, signal, t0);
    } finally {
      // Every process is dead before run() resolves. Removing the empty group waits for the
      // kernel to uncharge its memory (~2 ms on v1), so that part finishes in the background;
      // close() waits for it, and reconcile() removes any a crash left.
      await cgroup.killAll();
      const removal: Promise<void> = cgroup
        .destroy()
        .catch((err: unknown) => this.ctx.log.error({ err, cgroup: cgroup.name }, 'cannot remove cgroup'))
        .finally(() => this.removals.delete(removal));
      this.removals.add(removal);
    }
  }

  private async runInCgroup(spec: RunSpec, runtime: NamespaceRuntime, cgroup: Cgroup, io: RunIO, signal: AbortSignal, t0: number): Promise<RunOutcome> {
    const pyInput = runtime === 'python' ? jsonToPythonLiteral(spec.inputJson) : null;
    const files: BwrapFile[] = [
      pyInput === null ? { dest: '/vulcan/input.json', data: spec.inputJson } : { dest: '/vulcan/input.py', data: pyInput },
    ];
    let argv: string[];
    const code = spec.code;
    if (code === undefined) throw new Error('namespace needs code');
    if (code.kind === 'inline') {
      files.push({ dest: INLINE_ENTRY[runtime], data: code.source, writable: true, mode: 0o644 });
      argv = runnerArgv(runtime, INLINE_ENTRY[runtime]);
    } else {
      files.push({ dest: '/vulcan/code.tar.gz', data: code.tarGz });
      argv = ['/bin/sh', '/vulcan/lib/unpack.sh', ...runnerArgv(runtime, path.posix.join('/work', code.entrypoint))];
    }

    let rootfs: string | undefined;
    if (spec.image !== undefined) {
      const image = await this.ctx.images.resolve(spec.image);
      if (!image) throw new Error(`no image ${spec.image} in the store`);
      rootfs = image.rootfsDir;
    }
    const child = startBwrap({
      argv,
      ...(rootfs === undefined ? {} : { rootfs }),
      env: spec.env,
      diskMB: spec.limits.diskMB,
      files,
      roBinds: [{ src: this.runners(), dest: '/vulcan/lib' }],
      cgroup,
      resultFd: true,
      stdin: runtime === 'sh' ? spec.inputJson : '',
      cgexecPath: this.cgexecPath,
    });

    let readyAt: number | undefined;
    let result: RunnerMessage | undefined;
    let channelError: WorkloadError | undefined;
    let pidsHit = false;
    let abortKind: WorkloadAbort['kind'] | undefined;

    const kill = () => {
      cgroup.killAll().catch((err: unknown) => this.ctx.log.error({ err, id: spec.id }, 'cannot kill cgroup'));
      child.kill('SIGKILL');
    };
    const onAbort = () => {
      abortKind = signal.reason instanceof WorkloadAbort ? signal.reason.kind : 'killed';
      kill();
    };
    if (signal.aborted) onAbort();
    else signal.addEventListener('abort', onAbort, { once: true });

    const pidsTimer = setInterval(() => {
      if (!pidsHit && cgroup.stats().pidsMaxHits > 0) {
        pidsHit = true;
        kill();
      }
    }, PIDS_POLL_MS);

    child.stdout.on('data', (c: Buffer) => io.stdout(c));
    child.stderr.on('data', (c: Buffer) => io.stderr(c));
    const channel = child.result;
    const channelDone =
      channel !== undefined
        ? readResultChannel(channel, RESULT_MAX_BYTES, (msg) => {
            if (msg.t === 'ready') readyAt ??= performance.now();
            else result ??= msg;
          }).catch((err: unknown) => {
            channelError = { code: 'output_invalid', message: (err as Error).message };
            kill();
          })
        : Promise.resolve();

    const exit = await child.closed.finally(() => {
      clearInterval(pidsTimer);
      signal.removeEventListener('abort', onAbort);
    });
    await channelDone;
    const end = performance.now();
    const stats = cgroup.stats();
    const startMs = (readyAt ?? end) - t0;
    const execMs = readyAt === undefined ? 0 : end - readyAt;

    const error = workloadError(
      {
        ...(abortKind ? { aborted: abortKind } : {}),
        oomKilled: stats.oomKills > 0,
        pidsLimitHit: pidsHit || stats.pidsMaxHits > 0,
        ...(channelError ? { channelError } : {}),
        ...(result?.t === 'error' ? { runnerError: { code: result.code, message: result.message } } : {}),
        exitCode: exit.code,
        signal: exit.signal,
      },
      spec.limits,
    );
    // The helper or bwrap failing before the runner started is the host's fault, not the code's.
    if (error?.code === 'nonzero_exit' && readyAt === undefined && exit.code !== null && exit.code >= 120) {
      throw new Error(`the sandbox failed to start (exit ${exit.code})`);
    }

    return {
      exitCode: exit.code,
      output: result?.t === 'result' ? (result.output as JsonValue) : undefined,
      error,
      startMs,
      execMs,
    };
  }
}
