/**
 * The container backend: each workload in a fresh OCI container made through the Docker
 * Engine API (or Podman's compatible API) over a unix socket. The OCI runtime is runc by
 * default; runsc and kata where the daemon has them and a test container really runs.
 *
 * How containers are made (nothing from the request reaches binds, privileges, devices or
 * host namespaces; the only binds are the server's own per-workload directories):
 * NetworkMode none; CapDrop ALL; no-new-privileges; read-only root with tmpfs at /tmp and
 * /work; Memory = MemorySwap; NanoCpus; PidsLimit; logging off (output streams over attach);
 * labels that mark them as Vulcan's, for reconciliation.
 */
import { workloadError } from '../../core/outcome.js';
import fs from 'node:fs';
import path from 'node:path';
import type { Readable } from 'node:stream';
import * as tar from 'tar';
import type { Acceptance, Availability, Backend, BackendCapabilities, RunIO, RunOutcome, RunSpec } from '../../core/backend.js';
import { RunAbort, WorkloadAbort } from '../../core/backend.js';
import { dataDirTag } from '../../core/config.js';
import type { BackendContext } from '../../core/context.js';
import type { ImageRef } from '../../core/images.js';
import type { Limits } from '../../core/limits.js';
import type { JsonValue, Runtime } from '../../core/types.js';
import { RUNTIME_IMAGES } from '../../images/builtins.js';
import { SANDBOX_UID } from '../gvisor/bundle.js';
import { createSlot, fillSlot, isCodeRuntime, preparePayload, readRunnerReport, runnersDir, unmountIfMounted, watchReady, type Payload, type Slot } from '../gvisor/payload.js';
import { DockerClient, DockerError, dockerSocketPath, type AttachedStreams, type ContainerCreateBody } from './docker-client.js';
import { cleanupLeakedRuntime } from './leaks.js';
import { LABEL_MANAGED, LABEL_NODE, LABEL_POOL, LABEL_SANDBOX, LABEL_WORKLOAD } from './labels.js';
import { ContainerSandboxDriver } from './sandbox-driver.js';

const RUNTIMES = ['python', 'node', 'sh', 'oci'] as const satisfies readonly Runtime[];
export { LABEL_MANAGED, LABEL_NODE, LABEL_POOL, LABEL_SANDBOX, LABEL_WORKLOAD } from './labels.js';
/** OCI runtimes the probe tries besides the default, when the daemon lists them. */
const OPTIONAL_RUNTIMES = ['runsc', 'kata', 'kata-runtime', 'io.containerd.kata.v2'];
const PROBE_TIMEOUT_MS = 30_000;

export interface ContainerBackendOptions {
  /** The OCI runtime to run workloads with. Default env `VULCAN_CONTAINER_RUNTIME`, else `runc`. */
  readonly runtime?: string;
  /**
   * Containers kept started ahead, per (image, disk size, runtime), their shell blocked on
   * stdin until a workload takes one; 0 turns the pool off. Default env
   * `VULCAN_CONTAINER_POOL`, else 1. A pooled container serves one workload and is removed.
   */
  readonly poolSize?: number;
}

/** The daemon image of a store image: `vulcan/<name>:<first 12 hex of the digest>`. */
export function daemonImageRef(image: ImageRef): { repo: string; tag: string; ref: string } {
  const tag = image.digest.replace(/^sha256:/, '').slice(0, 12);
  const repo = `vulcan/${image.name}`;
  return { repo, tag, ref: `${repo}:${tag}` };
}

export class ContainerBackend implements Backend {
  readonly name = 'container';
  readonly runtimes: readonly Runtime[] = RUNTIMES;
  readonly capabilities: BackendCapabilities = { sandboxes: true, pause: true, images: true, warmStart: false, network: false };
  readonly ociRuntime: string;
  /** Long-lived sandboxes as containers running the sandbox agent (sandbox-driver.ts). */
  readonly sandboxDriver: ContainerSandboxDriver;

  private client: DockerClient | null = null;
  private readonly baseDir: string;
  private readonly loaded = new Map<string, Promise<void>>();
  private closed = false;
  private readonly poolSize: number;
  private readonly pool = new Map<string, WarmContainer[]>();
  private readonly filling = new Set<string>();
  /** What the probe found for each runtime the daemon lists. */
  runtimeStatus: Record<string, string> = {};

  constructor(
    private readonly ctx: BackendContext,
    opts: ContainerBackendOptions = {},
  ) {
    this.ociRuntime = opts.runtime ?? process.env.VULCAN_CONTAINER_RUNTIME ?? 'runc';
    const envPool = Number(process.env.VULCAN_CONTAINER_POOL ?? 1);
    this.poolSize = Math.max(0, Math.min(16, Math.floor(opts.poolSize ?? (Number.isFinite(envPool) ? envPool : 1))));
    this.baseDir = path.join(ctx.config.dataDir, 'container');
    this.sandboxDriver = new ContainerSandboxDriver(ctx, this);
  }

  get isolation(): string {
    return `OCI container (${this.ociRuntime}) through the Docker Engine API: no network, no capabilities, read-only root, cgroups`;
  }

  /** The Engine API client (made on first use; shared with the sandbox driver). */
  getClient(): DockerClient {
    this.client ??= new DockerClient(dockerSocketPath());
    return this.client;
  }

  async probe(): Promise<Availability> {
    let socket: string;
    try {
      socket = dockerSocketPath();
    } catch (err) {
      return { available: false, reason: (err as Error).message };
    }
    if (!fs.existsSync(socket)) return { available: false, reason: `no Docker socket at ${socket}: start dockerd (scripts/setup.d/31-docker.sh does) or point DOCKER_HOST=unix://PATH at Docker or Podman` };
    if (process.getuid?.() !== 0) return { available: false, reason: 'the container backend mounts a tmpfs per workload and runs as root; start the server as root' };
    try {
      const client = this.getClient();
      await client.ping();
      const [info, version] = await Promise.all([client.info(), client.version()]);
      const minimal = await this.ctx.images.resolve(RUNTIME_IMAGES.sh ?? 'minimal');
      if (!minimal) return { available: false, reason: 'the built-in image "minimal" is not in the image store: run setup (scripts/setup.d/30-images.sh) or `vulcan image build minimal`' };
      if (!fs.existsSync(path.join(runnersDir(this.ctx.config.installDir), 'runner.py'))) return { available: false, reason: `the runners are missing from ${runnersDir(this.ctx.config.installDir)}` };
      const listed = Object.keys(info.Runtimes ?? {});
      const toTry = [...new Set(['runc', this.ociRuntime, ...OPTIONAL_RUNTIMES.filter((r) => listed.includes(r))])];
      this.runtimeStatus = {};
      for (const rt of toTry) {
        if (!listed.includes(rt)) {
          this.runtimeStatus[rt] = 'not registered with the daemon';
          continue;
        }
        const why = await this.tryRuntime(rt, minimal);
        this.runtimeStatus[rt] = why === null ? 'ok' : `unavailable: ${why}`;
      }
      const mine = this.runtimeStatus[this.ociRuntime] ?? 'not probed';
      const working = Object.entries(this.runtimeStatus)
        .filter(([, v]) => v === 'ok')
        .map(([k]) => k);
      if (mine !== 'ok') return { available: false, reason: `OCI runtime ${this.ociRuntime} ${mine} (set VULCAN_CONTAINER_RUNTIME to one that works here: ${working.join(', ') || 'none'})` };
      return {
        available: true,
        info: {
          daemon: `${version.Components?.some((c) => /podman/i.test(c.Name)) ? 'podman' : 'docker'} ${version.Version ?? '?'} (API ${version.ApiVersion ?? '?'})`,
          socket,
          runtime: this.ociRuntime,
          runtimes: Object.entries(this.runtimeStatus)
            .filter(([, v]) => v === 'ok')
            .map(([k]) => k)
            .join(','),
          ...Object.fromEntries(Object.entries(this.runtimeStatus).map(([k, v]) => [`runtime.${k}`, v])),
          cgroup: `${info.CgroupVersion ?? '?'} (${info.CgroupDriver ?? '?'})`,
        },
      };
    } catch (err) {
      return { available: false, reason: `the Docker daemon at ${socket} did not answer: ${(err as Error).message}` };
    }
  }

  /** Runs `/bin/true` with runtime `rt`; null when it works, else the daemon's reason. Leaves nothing behind. */
  private async tryRuntime(rt: string, minimal: ImageRef): Promise<string | null> {
    const out = await this.run(
      { id: `probe-${rt.replace(/[^a-z0-9]/gi, '')}-${process.pid}-${Date.now()}`, runtime: 'oci', image: minimal.name, cmd: ['/bin/true'], inputJson: 'null', env: {}, limits: { ...this.ctx.config.defaults, memMB: 64, timeoutMs: PROBE_TIMEOUT_MS } },
      { stdout: () => undefined, stderr: () => undefined },
      RunAbort.after(PROBE_TIMEOUT_MS),
      rt,
    ).catch((err: unknown) => ({ exitCode: null, error: { code: 'backend_error' as const, message: (err as Error).message } }));
    if (out.exitCode === 0) return null;
    return out.error?.message ?? `exit ${out.exitCode}`;
  }

  accepts(spec: RunSpec): Acceptance {
    if (!(RUNTIMES as readonly Runtime[]).includes(spec.runtime)) return { ok: false, reason: `container runs ${RUNTIMES.join(', ')}, not ${spec.runtime}` };
    if (spec.runtime === 'oci' && spec.image === undefined) return { ok: false, reason: 'oci workloads need an image' };
    return { ok: true, reason: `${spec.runtime} runs in an OCI container (${this.ociRuntime})` };
  }

  async reconcile(): Promise<void> {
    const client = this.getClient();
    // Sandbox containers outlive the server on purpose: the sandbox driver re-attaches or reaps them.
    const stale = (await client.listContainers([`${LABEL_MANAGED}=true`, `${LABEL_NODE}=${dataDirTag(this.ctx.config.dataDir)}`]).catch(() => [])).filter((c) => c.Labels[LABEL_SANDBOX] === undefined);
    for (const c of stale) {
      await client.removeContainer(c.Id).catch((err: unknown) => this.ctx.log.warn({ err, id: c.Id }, 'cannot remove a stale container'));
      await cleanupLeakedRuntime(c.Id);
    }
    let dirs: string[] = [];
    try {
      dirs = fs.readdirSync(this.baseDir).filter((d) => d.startsWith('w-'));
    } catch {
      // none
    }
    for (const d of dirs) {
      await unmountIfMounted(path.join(this.baseDir, d, 'vulcan', 'out'));
      fs.rmSync(path.join(this.baseDir, d), { recursive: true, force: true });
    }
    // Daemon images of store images that were removed or rebuilt since they were loaded.
    const images = await client.listImages('vulcan/*').catch(() => []);
    for (const img of images) {
      for (const ref of img.RepoTags ?? []) {
        const m = /^vulcan\/([^:]+):([a-f0-9]{12})$/.exec(ref);
        if (!m) continue;
        const current = await this.ctx.images.resolve(m[1] ?? '');
        if (current && current.digest.slice(7, 19) === m[2]) continue;
        await client.removeImage(ref).catch((err: unknown) => this.ctx.log.warn({ err, ref }, 'cannot remove a stale daemon image'));
        this.loaded.delete(ref);
      }
    }
    if (stale.length > 0 || dirs.length > 0) this.ctx.log.warn({ containers: stale.map((c) => c.Id.slice(0, 12)), dirs }, 'removed containers left by an earlier server');
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    // Ends the sandbox driver's waits on the daemon (the sandboxes live on), or closing the client would wait for them.
    this.sandboxDriver.close();
    // Wait for pool fills in flight, then remove every idle container.
    for (let i = 0; i < 100 && this.filling.size > 0; i++) await new Promise((r) => setTimeout(r, 50));
    const idle = [...this.pool.values()].flat();
    this.pool.clear();
    await Promise.all(idle.map((w) => this.discardWarm(w)));
    await this.client?.close();
  }

  /** Makes sure the daemon has `image` (a `docker import` of its tree), once per digest. */
  ensureImage(image: ImageRef): Promise<void> {
    const { repo, tag, ref } = daemonImageRef(image);
    let p = this.loaded.get(ref);
    if (!p) {
      p = (async () => {
        const client = this.getClient();
        if (await client.hasImage(ref)) return;
        const stream = tar.create({ cwd: image.rootfsDir, portable: false, preservePaths: false, noDirRecurse: false }, ['.']) as unknown as Readable;
        await client.importImage(stream, repo, tag);
      })();
      this.loaded.set(ref, p);
      p.catch(() => this.loaded.delete(ref));
    }
    return p;
  }

  async run(spec: RunSpec, io: RunIO, abort: RunAbort, runtimeOverride?: string): Promise<RunOutcome> {
    const signal = abort.signal;
    if (this.closed) throw new Error('the container backend is closed');
    const t0 = performance.now();
    const imageName = spec.image ?? RUNTIME_IMAGES[spec.runtime];
    const image = imageName === undefined ? null : await this.ctx.images.resolve(imageName);
    if (!image) return { exitCode: null, error: { code: 'backend_error', message: `no image named ${JSON.stringify(imageName ?? '')} in the image store (image); see \`vulcan image ls\`` }, startMs: 0, execMs: 0 };
    if (spec.runtime !== 'oci' && !isCodeRuntime(spec.runtime)) throw new Error(`container cannot run ${spec.runtime}`);
    if (!/^[A-Za-z0-9_-]{1,80}$/.test(spec.id)) throw new Error(`bad workload id ${spec.id}`);
    await this.ensureImage(image);
    fs.mkdirSync(this.baseDir, { recursive: true, mode: 0o711 });
    const runtime = runtimeOverride ?? this.ociRuntime;
    const poolable = this.poolSize > 0 && runtimeOverride === undefined && spec.runtime !== 'oci';
    const key = `${daemonImageRef(image).ref}|${spec.limits.diskMB}|${runtime}`;
    const warm = poolable ? this.takeWarm(key) : undefined;
    try {
      return await (warm ? this.runWarm(warm, spec, image, io, signal, t0) : this.runCold(spec, image, runtime, io, signal, t0));
    } finally {
      // Refill after the run, so the pre-start does not compete with this workload for the CPU.
      if (poolable) this.refill(key, image, spec.limits.diskMB, runtime);
    }
  }

  /** A fresh container made for this workload: create, attach, start. */
  private async runCold(spec: RunSpec, image: ImageRef, runtime: string, io: RunIO, signal: AbortSignal, t0: number): Promise<RunOutcome> {
    const payload = await preparePayload(path.join(this.baseDir, `w-${spec.id}`), spec, image, this.ctx.config.installDir);
    const client = this.getClient();
    let containerId: string | undefined;
    try {
      containerId = await client.createContainer(
        `vulcan-${spec.id}`,
        this.createBody({ image, argv: payload.argv, env: payload.env, cwd: payload.cwd, binds: workloadBinds(payload.inDir, payload.outDir), limits: spec.limits, runtime, stdin: payload.stdin !== undefined, labels: { [LABEL_WORKLOAD]: spec.id } }),
      );
      const id = containerId;
      const streams = await client.attach(
        id,
        payload.stdin !== undefined,
        (b) => io.stdout(b),
        (b) => io.stderr(b),
      );
      const waiting = client.waitContainer(id);
      waiting.catch(() => undefined);
      return await this.execute(client, id, streams, waiting, payload, spec, runtime, signal, t0, async () => {
        await client.startContainer(id);
        if (payload.stdin !== undefined) streams.endStdin(payload.stdin);
      });
    } catch (err) {
      if (err instanceof DockerError) {
        // The daemon refused the container (a runtime that cannot start here, say): a backend fault with the daemon's words.
        return { exitCode: null, error: { code: 'backend_error', message: `the Docker daemon refused the container: ${err.message}` }, startMs: performance.now() - t0, execMs: 0 };
      }
      throw err;
    } finally {
      if (containerId !== undefined) {
        await client.removeContainer(containerId).catch((err: unknown) => this.ctx.log.error({ err, id: spec.id }, 'cannot remove container'));
        // runsc under dockerd can leak its shim and sandbox when start fails (see leaks.ts).
        if (runtime !== 'runc') await cleanupLeakedRuntime(containerId);
      }
      await payload.dispose();
    }
  }

  /** A pre-started container whose shell waits on stdin: fill its slot, set the limits, say go. */
  private async runWarm(w: WarmContainer, spec: RunSpec, image: ImageRef, io: RunIO, signal: AbortSignal, t0: number): Promise<RunOutcome> {
    const client = this.getClient();
    try {
      const payload = fillSlot(w.slot, spec, image, this.ctx.config.installDir);
      fs.writeFileSync(path.join(w.slot.inDir, 'start.sh'), startScript(payload), { mode: 0o644 });
      w.io = io;
      const memBytes = spec.limits.memMB * 1024 * 1024;
      return await this.execute(client, w.id, w.streams, w.waiting, payload, spec, w.runtime, signal, t0, async () => {
        await client.updateContainer(w.id, { Memory: memBytes, MemorySwap: memBytes, NanoCpus: Math.round(spec.limits.cpus * 1e9), PidsLimit: spec.limits.pidsMax });
        w.streams.endStdin(`go\n${payload.stdin ?? ''}`);
      });
    } finally {
      await client.removeContainer(w.id).catch((err: unknown) => this.ctx.log.error({ err, id: spec.id }, 'cannot remove container'));
      w.streams.destroy();
      await w.slot.dispose();
    }
  }

  /** Resolves when no pool fill is in flight (for benchmarks that must not measure beside one). */
  async whenPoolFilled(): Promise<void> {
    while (this.filling.size > 0) await new Promise((r) => setTimeout(r, 10));
  }

  private takeWarm(key: string): WarmContainer | undefined {
    const list = this.pool.get(key) ?? [];
    while (list.length > 0) {
      const w = list.shift();
      if (w && !w.exited) return w;
      if (w) void this.discardWarm(w);
    }
    return undefined;
  }

  /** Tops the pool for `key` up to `poolSize` in the background. */
  private refill(key: string, image: ImageRef, diskMB: number, runtime: string): void {
    if (this.closed || this.filling.has(key)) return;
    this.filling.add(key);
    void (async () => {
      try {
        let list = this.pool.get(key);
        if (!list) this.pool.set(key, (list = []));
        while (!this.closed && list.length < this.poolSize) {
          const w = await this.createWarm(image, diskMB, runtime);
          if (this.closed) {
            await this.discardWarm(w);
            break;
          }
          list.push(w);
        }
      } catch (err) {
        this.ctx.log.warn({ err, key }, 'cannot pre-start a container; workloads start cold');
      } finally {
        this.filling.delete(key);
      }
    })();
  }

  private async createWarm(image: ImageRef, diskMB: number, runtime: string): Promise<WarmContainer> {
    const client = this.getClient();
    const slot = await createSlot(path.join(this.baseDir, `w-pool-${Date.now()}-${Math.random().toString(36).slice(2, 10)}`));
    let id: string | undefined;
    try {
      const env = [...(image.config.env ?? ['PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'])];
      id = await client.createContainer(
        `vulcan-pool-${path.basename(slot.workDir).slice(7)}`,
        this.createBody({ image, argv: ['/bin/sh', '-c', 'read -r _ && exec /bin/sh /vulcan/start.sh'], env, cwd: '/work', binds: workloadBinds(slot.inDir, slot.outDir), limits: { ...this.ctx.config.defaults, diskMB }, runtime, stdin: true, labels: { [LABEL_POOL]: 'true' } }),
      );
      const w: WarmContainer = { id, slot, runtime, exited: false, io: undefined, streams: undefined as unknown as AttachedStreams, waiting: Promise.resolve({ StatusCode: 0 }) };
      w.streams = await client.attach(
        id,
        true,
        (b) => w.io?.stdout(b),
        (b) => w.io?.stderr(b),
      );
      w.waiting = client.waitContainer(id);
      w.waiting.then(
        () => (w.exited = true),
        () => (w.exited = true),
      );
      await client.startContainer(id);
      return w;
    } catch (err) {
      if (id !== undefined) await client.removeContainer(id).catch(() => undefined);
      await slot.dispose();
      throw err;
    }
  }

  private async discardWarm(w: WarmContainer): Promise<void> {
    w.streams.destroy();
    await this.getClient()
      .removeContainer(w.id)
      .catch(() => undefined);
    await w.slot.dispose();
  }

  /**
   * The one container shape (workloads, the pool, sandboxes): no network, no capabilities,
   * no-new-privileges, uid 1000, read-only root, tmpfs /tmp and /work of `diskMB`. `binds`
   * are always the server's own directories, never anything from a request.
   */
  createBody(o: { image: ImageRef; argv: readonly string[]; env: readonly string[]; cwd: string; binds: readonly string[]; limits: Pick<Limits, 'memMB' | 'diskMB' | 'cpus' | 'pidsMax'>; runtime: string; stdin: boolean; labels: Record<string, string>; init?: boolean; log?: boolean }): ContainerCreateBody {
    const memBytes = o.limits.memMB * 1024 * 1024;
    const tmpfsOpts = `rw,nosuid,nodev,size=${o.limits.diskMB}m,mode=1777`;
    return {
      Image: daemonImageRef(o.image).ref,
      Cmd: o.argv,
      Env: o.env,
      WorkingDir: o.cwd,
      User: `${SANDBOX_UID}:${SANDBOX_UID}`,
      Labels: { [LABEL_MANAGED]: 'true', [LABEL_NODE]: dataDirTag(this.ctx.config.dataDir), ...o.labels },
      AttachStdin: o.stdin,
      AttachStdout: true,
      AttachStderr: true,
      OpenStdin: o.stdin,
      StdinOnce: o.stdin,
      Tty: false,
      NetworkDisabled: true,
      Hostname: 'vulcan',
      HostConfig: {
        NetworkMode: 'none',
        CapDrop: ['ALL'],
        SecurityOpt: ['no-new-privileges'],
        ReadonlyRootfs: true,
        Tmpfs: { '/tmp': tmpfsOpts, '/work': tmpfsOpts },
        Binds: o.binds,
        Memory: memBytes,
        MemorySwap: memBytes,
        NanoCpus: Math.round(o.limits.cpus * 1e9),
        PidsLimit: o.limits.pidsMax,
        Runtime: o.runtime,
        LogConfig: o.log ? { Type: 'json-file', Config: { 'max-size': '256k', 'max-file': '1' } } : { Type: 'none', Config: {} },
        Privileged: false,
        IpcMode: 'private',
        PidMode: '',
        Init: o.init ?? false,
      },
    };
  }

  /** Starts (via `go`), waits, and turns what happened into an outcome. */
  private async execute(client: DockerClient, id: string, streams: AttachedStreams, waiting: Promise<{ StatusCode: number }>, payload: Payload, spec: RunSpec, runtime: string, signal: AbortSignal, t0: number, go: () => Promise<void>): Promise<RunOutcome> {
    let abortKind: WorkloadAbort['kind'] | undefined;
    let readyAt: number | undefined;
    let pidsHit = false;
    const onAbort = () => {
      abortKind = signal.reason instanceof WorkloadAbort ? signal.reason.kind : 'killed';
      void client.killContainer(id).catch(() => undefined);
    };
    const stopWatch = watchReady(payload, () => (readyAt ??= performance.now()));
    if (signal.aborted) onAbort();
    else signal.addEventListener('abort', onAbort, { once: true });
    const pidsTimer = setInterval(() => {
      if (!pidsHit && pidsMaxEvents(id) > 0) {
        pidsHit = true;
        void client.killContainer(id).catch(() => undefined);
      }
    }, 50);
    let exitCode: number | null;
    let startError: string | undefined;
    try {
      try {
        await go();
      } catch (err) {
        if (err instanceof DockerError) startError = err.message;
        else throw err;
      }
      if (startError === undefined) {
        const w = await waiting;
        exitCode = w.StatusCode;
        // The stream ends right after the exit; give it a moment to drain.
        await Promise.race([streams.done, new Promise((r) => setTimeout(r, 2000))]);
      } else exitCode = null;
    } finally {
      clearInterval(pidsTimer);
      stopWatch();
      signal.removeEventListener('abort', onAbort);
      streams.destroy();
    }
    const end = performance.now();
    if (startError !== undefined) return { exitCode: null, error: { code: 'backend_error', message: `the ${runtime} runtime could not start the container: ${startError}` }, startMs: end - t0, execMs: 0 };
    // Only a non-zero exit can be an OOM kill; skip the round trip otherwise.
    const state =
      exitCode === 0
        ? undefined
        : await client
            .inspectContainer(id)
            .then((c) => c.State)
            .catch(() => undefined);
    if (!pidsHit && pidsMaxEvents(id) > 0) pidsHit = true;

    const report = readRunnerReport(payload);
    if (report.ready) readyAt ??= end;
    const result = report.result;
    const startMs = (readyAt ?? end) - t0;
    const execMs = readyAt === undefined ? 0 : end - readyAt;
    const error = workloadError(
      {
        ...(abortKind ? { aborted: abortKind } : {}),
        oomKilled: state?.OOMKilled === true,
        pidsLimitHit: pidsHit,
        ...(report.invalid !== undefined ? { channelError: { code: 'output_invalid', message: report.invalid } } : {}),
        ...(result?.t === 'error' ? { runnerError: { code: result.code, message: result.message } } : {}),
        exitCode,
      },
      spec.limits,
    );
    return {
      exitCode: exitCode === 137 && (abortKind || state?.OOMKilled || pidsHit) ? null : exitCode,
      ...(result?.t === 'result' ? { output: result.output as JsonValue } : {}),
      error,
      startMs,
      execMs,
      notes: {
        runtime,
        image: `vulcan/${spec.image ?? RUNTIME_IMAGES[spec.runtime] ?? ''}`,
        ...(payload.hasRunner ? {} : { timings: 'oci workloads have no runner to mark when the code starts: start_ms covers the whole run' }),
      },
    };
  }
}

/** A workload's only binds: the server's own workload dirs, the code read-only at /vulcan and the result tmpfs at /vulcan/out. */
function workloadBinds(inDir: string, outDir: string): string[] {
  return [`${inDir}:/vulcan:ro`, `${outDir}:/vulcan/out:rw`];
}

/** A container started ahead of time, its shell blocked on stdin until a workload arrives. */
interface WarmContainer {
  readonly id: string;
  readonly slot: Slot;
  readonly runtime: string;
  streams: AttachedStreams;
  waiting: Promise<{ StatusCode: number }>;
  exited: boolean;
  /** Where output goes once a workload owns it. */
  io: RunIO | undefined;
}

const ENV_NAME_RE = /^[A-Za-z_][A-Za-z0-9_]*$/;
const shq = (s: string) => `'${s.replace(/'/g, `'\\''`)}'`;

/** The script a warm container's shell execs: the workload's cwd, environment and argv. */
export function startScript(p: Payload): string {
  const lines = [`cd ${shq(p.cwd)} || exit 121`];
  for (const kv of p.env) {
    const eq = kv.indexOf('=');
    const name = kv.slice(0, eq);
    if (eq <= 0 || !ENV_NAME_RE.test(name)) throw new Error(`bad environment variable name ${JSON.stringify(name)}`);
    lines.push(`export ${name}=${shq(kv.slice(eq + 1))}`);
  }
  lines.push(`exec ${p.argv.map(shq).join(' ')}`);
  return `${lines.join('\n')}\n`;
}

/** How often a Docker container's cgroup refused a fork (pids.events `max`; cgroupfs driver, v1 or v2); 0 when unknown. */
function pidsMaxEvents(id: string): number {
  for (const p of [`/sys/fs/cgroup/pids/docker/${id}/pids.events`, `/sys/fs/cgroup/docker/${id}/pids.events`, `/sys/fs/cgroup/system.slice/docker-${id}.scope/pids.events`]) {
    try {
      return Number(/max (\d+)/.exec(fs.readFileSync(p, 'utf8'))?.[1] ?? 0);
    } catch {
      // not this layout
    }
  }
  return 0;
}
