/**
 * The gvisor backend: each workload in its own gVisor sandbox (runsc on an OCI bundle that
 * Vulcan writes), on a root filesystem from the image store. No daemon.
 *
 * The walls: gVisor's user-space kernel catches every syscall; no network (`--network=none`);
 * a read-only root with size-capped tmpfs at /tmp and /work; no capabilities; and a host
 * cgroup around the whole sandbox (sentry + gofer) for memory, tasks and CPU. runsc runs
 * with `--ignore-cgroups` inside Vulcan's own cgroup, so the limits, the OOM count and the
 * kill-everything on timeout all go through src/host/cgroups.ts like the namespace backend.
 */
import { workloadError } from '../../core/outcome.js';
import { execFile, spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import type { Acceptance, Availability, Backend, BackendCapabilities, RunIO, RunOutcome, RunSpec } from '../../core/backend.js';
import { RunAbort, WorkloadAbort } from '../../core/backend.js';
import { dataDirTag } from '../../core/config.js';
import type { BackendContext } from '../../core/context.js';
import type { WorkloadError } from '../../core/errors.js';
import type { JsonValue, Runtime } from '../../core/types.js';
import { cgroupSupport, createCgroup, reapStaleCgroups, type Cgroup } from '../../host/cgroups.js';
import { RUNTIME_IMAGES } from '../../images/builtins.js';
import { bundleConfig } from './bundle.js';
import { isCodeRuntime, preparePayload, readRunnerReport, runnersDir, unmountIfMounted, watchReady, type Payload } from './payload.js';
import { hostLimits } from './host-limits.js';
import { GvisorSandboxDriver } from './sandbox-driver.js';
import { findRunsc, joinCgroupArgv, platformCandidates, runscVersion, type RunscPlatform } from './runsc.js';

const execFileP = promisify(execFile);

const RUNTIMES = ['python', 'node', 'sh', 'oci'] as const satisfies readonly Runtime[];
/** cgroup names of this backend start with this, so reconciliation finds only ours. */
/** How long the probe's test sandbox may take on one platform. */
const PROBE_TIMEOUT_MS = 8_000;
export class GvisorBackend implements Backend {
  readonly name = 'gvisor';
  readonly isolation = "gVisor's user-space kernel (runsc) on a read-only image root, no network, cgroups";
  readonly runtimes: readonly Runtime[] = RUNTIMES;
  readonly capabilities: BackendCapabilities = { sandboxes: true, pause: true, images: true, warmStart: false, network: false };
  /** Long-lived sandboxes on runsc (sandbox-driver.ts), on the runsc and platform the probe chose. */
  readonly sandboxDriver: GvisorSandboxDriver;

  private readonly baseDir: string;
  private readonly stateDir: string;
  private runsc: string | null = null;
  private platform: RunscPlatform = 'ptrace';
  private closed = false;

  /** This node's cgroups: `gv-<data dir tag>-<id>`, so reconciliation removes only ours. */
  private readonly cgroupPrefix: string;

  constructor(private readonly ctx: BackendContext) {
    this.cgroupPrefix = `gv-${dataDirTag(ctx.config.dataDir)}-`;
    this.baseDir = path.join(ctx.config.dataDir, 'gvisor');
    this.stateDir = path.join(this.baseDir, 'state');
    this.sandboxDriver = new GvisorSandboxDriver(ctx, () => ({ runsc: this.runsc, platform: this.platform }));
  }

  async probe(): Promise<Availability> {
    try {
      const runsc = findRunsc();
      if (!runsc) return { available: false, reason: 'runsc (gVisor) is not installed: apt-get install runsc, or set VULCAN_RUNSC' };
      if (process.getuid?.() !== 0) return { available: false, reason: 'the gvisor backend runs runsc as root; start the server as root' };
      const cg = cgroupSupport();
      if (!cg.ok) return { available: false, reason: cg.reason };
      if (!fs.existsSync(path.join(runnersDir(this.ctx.config.installDir), 'runner.py'))) return { available: false, reason: `the runners are missing from ${runnersDir(this.ctx.config.installDir)}` };
      const minimal = await this.ctx.images.resolve(RUNTIME_IMAGES.sh ?? 'minimal');
      if (!minimal) return { available: false, reason: 'the built-in image "minimal" is not in the image store: run setup (scripts/setup.d/30-images.sh) or `vulcan image build minimal`' };
      this.runsc = runsc;
      // A platform counts only when a real sandbox runs on it: /dev/kvm can open and still
      // hang an old runsc (seen here: a 2022 runsc on a nested-KVM 6.18 guest spins forever).
      const failures: string[] = [];
      let chosen: { platform: RunscPlatform; why: string; ms: number } | undefined;
      for (const cand of await platformCandidates(runsc)) {
        this.platform = cand.platform;
        const t0 = performance.now();
        const out = await this.run(
          { id: `probe${process.pid}${cand.platform}${Date.now()}`, runtime: 'oci', image: minimal.name, cmd: ['/bin/true'], inputJson: 'null', env: {}, limits: { ...this.ctx.config.defaults, memMB: 64, timeoutMs: PROBE_TIMEOUT_MS } },
          { stdout: () => undefined, stderr: () => undefined },
          RunAbort.after(PROBE_TIMEOUT_MS),
        );
        if (out.exitCode === 0) {
          chosen = { platform: cand.platform, why: [cand.why, ...failures].join('; '), ms: performance.now() - t0 };
          break;
        }
        failures.push(`${cand.platform} failed its test sandbox (${out.error?.message ?? `exit ${out.exitCode}`})`);
      }
      if (!chosen) {
        this.runsc = null;
        return { available: false, reason: `no gVisor platform works here: ${failures.join('; ')}` };
      }
      this.platform = chosen.platform;
      const platform = chosen.platform;
      const why = chosen.why;
      const t0 = chosen.ms;
      const version = await runscVersion(runsc);
      return { available: true, info: { runsc: version, platform, platformWhy: why, cgroup: cg.version, probeMs: String(Math.round(t0)) } };
    } catch (err) {
      this.runsc = null;
      return { available: false, reason: `probe failed: ${(err as Error).message}` };
    }
  }

  accepts(spec: RunSpec): Acceptance {
    if (!(RUNTIMES as readonly Runtime[]).includes(spec.runtime)) return { ok: false, reason: `gvisor runs ${RUNTIMES.join(', ')}, not ${spec.runtime}` };
    if (spec.runtime === 'oci' && spec.image === undefined) return { ok: false, reason: 'oci workloads need an image' };
    return { ok: true, reason: `${spec.runtime} runs under gVisor's kernel (${this.platform})` };
  }

  async reconcile(): Promise<void> {
    const reaped = await reapStaleCgroups(this.cgroupPrefix);
    let leftovers: string[] = [];
    try {
      leftovers = fs.readdirSync(this.baseDir).filter((d) => d.startsWith('w-'));
    } catch {
      // nothing yet
    }
    for (const d of leftovers) {
      await unmountIfMounted(path.join(this.baseDir, d, 'vulcan', 'out'));
      fs.rmSync(path.join(this.baseDir, d), { recursive: true, force: true });
    }
    fs.rmSync(this.stateDir, { recursive: true, force: true });
    if (reaped.length > 0 || leftovers.length > 0) this.ctx.log.warn({ cgroups: reaped, dirs: leftovers }, 'removed gvisor sandboxes left by an earlier server');
  }

  close(): Promise<void> {
    this.closed = true;
    return Promise.resolve();
  }

  async run(spec: RunSpec, io: RunIO, abort: RunAbort): Promise<RunOutcome> {
    const signal = abort.signal;
    if (this.closed) throw new Error('the gvisor backend is closed');
    const runsc = this.runsc ?? findRunsc();
    if (!runsc) throw new Error('runsc is not installed');
    const t0 = performance.now();
    const imageName = spec.image ?? RUNTIME_IMAGES[spec.runtime];
    const image = imageName === undefined ? null : await this.ctx.images.resolve(imageName);
    if (!image) {
      return { exitCode: null, error: { code: 'backend_error', message: `no image named ${JSON.stringify(imageName ?? '')} in the image store (image); see \`vulcan image ls\`` }, startMs: 0, execMs: 0 };
    }
    if (spec.runtime !== 'oci' && !isCodeRuntime(spec.runtime)) throw new Error(`gvisor cannot run ${spec.runtime}`);
    if (!/^[A-Za-z0-9_-]{1,64}$/.test(spec.id)) throw new Error(`bad workload id ${spec.id}`);

    fs.mkdirSync(this.stateDir, { recursive: true, mode: 0o700 });
    const workDir = path.join(this.baseDir, `w-${spec.id}`);
    const payload = await preparePayload(workDir, spec, image, this.ctx.config.installDir);
    let cgroup: Cgroup | undefined;
    try {
      cgroup = await createCgroup(`${this.cgroupPrefix}${spec.id}`, hostLimits(spec.limits, this.platform));
      const bundleDir = path.join(workDir, 'bundle');
      fs.mkdirSync(bundleDir, { mode: 0o700 });
      const config = bundleConfig({ rootfsDir: image.rootfsDir, argv: payload.argv, env: payload.env, cwd: payload.cwd, inDir: payload.inDir, outDir: payload.outDir, limits: spec.limits, hostname: 'vulcan' });
      fs.writeFileSync(path.join(bundleDir, 'config.json'), JSON.stringify(config));
      return await this.runSandbox(runsc, spec, payload, cgroup, bundleDir, io, signal, t0);
    } finally {
      await this.forceDelete(runsc, spec.id);
      await cgroup?.destroy();
      await payload.dispose();
    }
  }

  /** Removes runsc's state for `id` when a killed sandbox left it. */
  private async forceDelete(runsc: string, id: string): Promise<void> {
    const left = fs.existsSync(this.stateDir) && fs.readdirSync(this.stateDir).some((f) => f.includes(id));
    if (!left) return;
    await execFileP(runsc, ['--root', this.stateDir, 'delete', '-force', id], { timeout: 10_000 }).catch(() => undefined);
    for (const f of fs.readdirSync(this.stateDir)) if (f.includes(id)) fs.rmSync(path.join(this.stateDir, f), { recursive: true, force: true });
  }

  private async runSandbox(runsc: string, spec: RunSpec, payload: Payload, cgroup: Cgroup, bundleDir: string, io: RunIO, signal: AbortSignal, t0: number): Promise<RunOutcome> {
    const runscArgs = ['--root', this.stateDir, `--platform=${this.platform}`, '--network=none', '--ignore-cgroups', 'run', '--bundle', bundleDir, spec.id];
    // A tiny shell joins the cgroup first, so runsc and everything it starts are born inside.
    const [sh, ...shArgs] = joinCgroupArgv(cgroup.procsFiles, [runsc, ...runscArgs]);
    const child = spawn(sh ?? '/bin/sh', shArgs, {
      stdio: ['pipe', 'pipe', 'pipe'],
      cwd: bundleDir,
      env: { PATH: '/usr/sbin:/usr/bin:/sbin:/bin' },
      detached: true,
    });

    let readyAt: number | undefined;
    let abortKind: WorkloadAbort['kind'] | undefined;
    let pidsHit = false;
    const kill = () => {
      cgroup.killAll().catch((err: unknown) => this.ctx.log.error({ err, id: spec.id }, 'cannot kill gvisor cgroup'));
      try {
        if (child.pid !== undefined) process.kill(-child.pid, 'SIGKILL');
      } catch {
        // gone
      }
    };
    const onAbort = () => {
      abortKind = signal.reason instanceof WorkloadAbort ? signal.reason.kind : 'killed';
      kill();
    };
    if (signal.aborted) onAbort();
    else signal.addEventListener('abort', onAbort, { once: true });

    // The runner's first line ("ready") marks when the code starts; the gofer writes it to the host tmpfs.
    const stopWatch = watchReady(payload, () => (readyAt ??= performance.now()));
    const pidsTimer = setInterval(() => {
      if (!pidsHit && cgroup.stats().pidsMaxHits > 0) {
        pidsHit = true;
        kill();
      }
    }, 50);

    child.stdout.on('data', (c: Buffer) => io.stdout(c));
    child.stderr.on('data', (c: Buffer) => io.stderr(c));
    child.stdin.on('error', () => undefined);
    child.stdin.end(payload.stdin);

    const exit = await new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve, reject) => {
      child.on('error', reject);
      child.on('close', (c, s) => resolve({ code: c, signal: s }));
    }).finally(() => {
      clearInterval(pidsTimer);
      stopWatch();
      signal.removeEventListener('abort', onAbort);
    });
    const end = performance.now();
    // Whatever survived the runsc process (a sentry whose parent died) goes now.
    await cgroup.killAll().catch(() => undefined);
    const stats = cgroup.stats();

    const report = readRunnerReport(payload);
    if (report.ready) readyAt ??= end;
    const result = report.result;
    const channelError: WorkloadError | undefined = report.invalid === undefined ? undefined : { code: 'output_invalid', message: report.invalid };
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
    if (error?.code === 'nonzero_exit' && exit.code === 125) throw new Error('could not join the sandbox cgroup');

    return {
      exitCode: exit.code,
      ...(result?.t === 'result' ? { output: result.output as JsonValue } : {}),
      error,
      startMs,
      execMs,
      notes: {
        platform: this.platform,
        image: spec.image ?? RUNTIME_IMAGES[spec.runtime] ?? '',
        ...(payload.hasRunner ? {} : { timings: 'oci workloads have no runner to mark when the code starts: start_ms covers the whole run' }),
      },
    };
  }
}
