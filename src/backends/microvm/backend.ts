/**
 * The microvm backend: each workload runs in its own QEMU `-M microvm` guest with Debian's
 * cloud kernel, a static guest agent as init, and the image's root filesystem as a
 * read-only erofs disk under a tmpfs overlay.
 *
 * Starting a VM, fastest first:
 * 1. pool: a VM restored (or booted) ahead of time for this image and size;
 * 2. snapshot: a clone restored from a template (RAM file on /dev/shm mapped copy-on-write,
 *    ~52 KiB of device state via `-incoming`);
 * 3. cold: a full boot.
 * A VM serves one workload and is destroyed after it.
 */
import { spawnSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import {
  WorkloadAbort,
  type Acceptance,
  type Availability,
  type Backend,
  type BackendCapabilities,
  type RunAbort,
  type RunIO,
  type RunOutcome,
  type RunSpec,
} from '../../core/backend.js';
import type { BackendContext } from '../../core/context.js';
import type { Runtime } from '../../core/types.js';
import { ensureGuestArtifacts, RootfsCache, type GuestArtifacts } from './artifacts.js';
import { ProtocolError } from './protocol.js';
import { bareBoot, baseKernelArgs, QEMU_BINARY, QemuVmm } from './qemu.js';
import { reconcileVms } from './reconcile.js';
import { MicrovmSandboxDriver } from './sandbox-driver.js';
import { AgentFault, AgentSession, AgentTimeout, SessionAborted } from './session.js';
import type { Accel, VmHandle, Vmm } from './vmm.js';
import { buildRunRequest, loadRunners, toOutcome, type Runners } from './workload.js';
import { sha256 } from '../../core/hash.js';

/** Options of the microvm backend; every field has a default (`DEFAULT_MICROVM_OPTIONS`). */
export interface MicrovmOptions {
  /** `auto` uses KVM when a test boot with it works, TCG otherwise. */
  readonly accel: 'auto' | Accel;
  /** Ready VMs kept per (image, memory, vCPUs) once that shape has been used; 0 turns the pool off. */
  readonly poolSize: number;
  /** Start VMs by restoring a per-shape snapshot instead of booting (also used to refill the pool). */
  readonly snapshot: boolean;
  /** Guest RAM = `mem_mb` + this, for the kernel, the agent and page cache (the workload's cgroup gets `mem_mb`). */
  readonly memOverheadMB: number;
  /** Where guest/build.sh puts the kernel, initramfs and busybox disk; `<dataDir>/microvm/artifacts` is the fallback. */
  readonly artifactsDir: string;
  /** Deadline for a cold boot to reach the agent's HELLO. */
  readonly bootTimeoutMs: number;
}

/** The defaults: pool of 1 refilled from snapshots, because that measured fastest (docs/backends/microvm.md). */
export const DEFAULT_MICROVM_OPTIONS: MicrovmOptions = {
  accel: 'auto',
  poolSize: 1,
  snapshot: true,
  memOverheadMB: 64,
  artifactsDir: '/var/cache/vulcan/microvm',
  bootTimeoutMs: 60_000,
};

const RUNTIMES: readonly Runtime[] = ['python', 'node', 'sh', 'oci'];
const DEFAULT_IMAGE: Partial<Record<Runtime, string>> = { python: 'python', node: 'node', sh: 'minimal' };
/** Extra time past the workload's timeout before the host stops waiting on its own. */
const DEADLINE_GRACE_MS = 5_000;

/** Everything `probe()` found; computed once. */
interface Ready {
  readonly artifacts: GuestArtifacts;
  readonly vmm: Vmm;
  readonly accelReason: string;
  readonly runners: Runners;
}

/** The VM shape: VMs (and snapshots) are only interchangeable within one shape. */
interface Shape {
  readonly key: string;
  readonly diskPath: string;
  readonly memMB: number;
  readonly vcpus: number;
}

/** A started VM and its agent session. */
interface LiveVm {
  readonly handle: VmHandle;
  readonly session: AgentSession;
  readonly kernelRelease: string;
  readonly start: 'cold' | 'snapshot' | 'pool';
}

interface Template {
  readonly ramPath: string;
  readonly statePath: string;
  readonly kernelRelease: string;
}

function errMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/** The microvm backend. */
export class MicrovmBackend implements Backend {
  readonly name = 'microvm' as const;
  readonly isolation = 'a separate Linux kernel per workload in a QEMU microvm (KVM, or TCG emulation)';
  readonly runtimes = RUNTIMES;
  readonly capabilities: BackendCapabilities = { sandboxes: true, pause: true, images: true, warmStart: true, network: false };
  /** Long-lived sandboxes, one microVM each (sandbox-driver.ts). */
  readonly sandboxDriver: MicrovmSandboxDriver;

  readonly #ctx: BackendContext;
  readonly #opts: MicrovmOptions;
  readonly #root: string;
  readonly #tag: string;
  readonly #rootfs: RootfsCache;
  #ready?: Promise<Ready>;
  readonly #templates = new Map<string, Promise<Template>>();
  readonly #pool = new Map<string, LiveVm[]>();
  readonly #filling = new Map<string, number>();
  readonly #background = new Set<Promise<unknown>>();
  readonly #closer = new AbortController();
  #knownImages = new Set<string>();
  #closed = false;

  constructor(ctx: BackendContext, options: Partial<MicrovmOptions> = {}) {
    this.#ctx = ctx;
    this.#opts = { ...DEFAULT_MICROVM_OPTIONS, ...options };
    this.#root = path.join(ctx.config.dataDir, 'microvm');
    // Names this server's shared-memory files apart from another data dir's.
    this.#tag = sha256(this.#root).slice(0, 10);
    this.#rootfs = new RootfsCache(path.join(this.#root, 'rootfs'));
    this.sandboxDriver = new MicrovmSandboxDriver(ctx, {
      prepare: async () => {
        const r = await this.#prepare();
        return { artifacts: r.artifacts, accel: r.vmm.accel };
      },
      rootDisk: (image) => this.#sandboxDisk(image),
    });
  }

  /** The erofs root disk of a sandbox's image; `minimal` falls back to the built-in busybox disk. */
  async #sandboxDisk(imageName: string): Promise<string> {
    const image = await this.#ctx.images.resolve(imageName);
    if (image) return this.#rootfs.disk(image);
    if (imageName === 'minimal') return (await this.#prepare()).artifacts.minimalRootfsPath;
    throw new Error(`the image store has no ${imageName} image; build or import it (vulcan image build), or run the setup command`);
  }

  /** The options in force. */
  get options(): MicrovmOptions {
    return this.#opts;
  }

  probe(): Promise<Availability> {
    return this.#prepare().then(
      (r) => ({
        available: true as const,
        info: {
          vmm: r.vmm.name,
          accel: r.vmm.accel,
          accelReason: r.accelReason,
          kernel: r.artifacts.kernelVersion,
          warmStart: this.#opts.poolSize > 0 ? `pool of ${this.#opts.poolSize}${this.#opts.snapshot ? ' refilled from snapshots' : ''}` : this.#opts.snapshot ? 'snapshot' : 'none',
        },
      }),
      (err: unknown) => ({ available: false as const, reason: errMessage(err) }),
    );
  }

  accepts(spec: RunSpec): Acceptance {
    if (!RUNTIMES.includes(spec.runtime)) return { ok: false, reason: `microvm does not run ${spec.runtime}` };
    if (spec.runtime === 'oci' && (!spec.image || !spec.cmd?.length)) return { ok: false, reason: 'an oci workload needs image and cmd' };
    const image = spec.image ?? DEFAULT_IMAGE[spec.runtime];
    if (image && image !== 'minimal' && this.#knownImages.size > 0 && !this.#knownImages.has(image)) {
      return { ok: false, reason: `the image store has no ${image} image` };
    }
    return { ok: true, reason: 'a separate guest kernel per workload' };
  }

  async run(spec: RunSpec, io: RunIO, abort: RunAbort): Promise<RunOutcome> {
    const signal = abort.signal;
    const t0 = performance.now();
    const aborted = (): RunOutcome => {
      const kind = signal.reason instanceof WorkloadAbort ? signal.reason.kind : 'killed';
      const code = kind === 'timeout' ? 'timeout' : 'killed';
      return { exitCode: null, error: { code, message: `the workload was ${kind === 'timeout' ? 'stopped by its timeout' : 'killed'}; its VM was destroyed` }, startMs: performance.now() - t0, execMs: 0 };
    };
    if (signal.aborted) return aborted();
    const ready = await this.#prepare();
    const shape = await this.#shape(spec, ready);
    if ('error' in shape) return { exitCode: null, error: { code: 'backend_error', message: shape.error }, startMs: performance.now() - t0, execMs: 0 };

    let vm: LiveVm;
    try {
      vm = await this.#acquire(shape, ready, signal);
    } catch (err) {
      if (signal.aborted) return aborted();
      throw err;
    }
    const notes = { vmm: ready.vmm.name, accel: ready.vmm.accel, kernel: vm.kernelRelease, start: vm.start };
    let startedAt = Number.NaN;
    try {
      const request = buildRunRequest(spec, ready.runners);
      const runId = crypto.randomBytes(4).readUInt32BE(0) || 1;
      const deadline = performance.now() + spec.limits.timeoutMs + DEADLINE_GRACE_MS;
      const result = await vm.session.run(runId, request, io, deadline, signal, () => {
        startedAt = performance.now();
      });
      return toOutcome(result, result.startedAt - t0, notes);
    } catch (err) {
      const startMs = (Number.isNaN(startedAt) ? performance.now() : startedAt) - t0;
      const execMs = Number.isNaN(startedAt) ? 0 : performance.now() - startedAt;
      if (err instanceof SessionAborted || signal.aborted) return { ...aborted(), notes };
      const exited = await Promise.race([vm.handle.exited, new Promise<null>((r) => setTimeout(() => r(null), 50))]);
      if (err instanceof ProtocolError) {
        this.#ctx.log.warn({ vm: vm.handle.id, err: err.message }, 'microvm guest broke the agent protocol; VM killed');
        return { exitCode: null, error: { code: 'sandbox_crashed', message: `the guest broke the agent protocol (${err.message}); its VM was killed` }, startMs, execMs, notes };
      }
      if (err instanceof AgentFault) {
        return { exitCode: null, error: { code: 'backend_error', message: `the guest agent could not run the workload: ${err.message}` }, startMs, execMs, notes };
      }
      if (err instanceof AgentTimeout && exited === null && !err.message.includes('closed')) {
        return { exitCode: null, error: { code: 'timeout', message: 'the guest did not finish within its timeout; its VM was killed' }, startMs, execMs, notes };
      }
      const tail = vm.handle.consoleTail().trim().split('\n').slice(-3).join(' | ');
      return { exitCode: null, error: { code: 'sandbox_crashed', message: `the VM stopped during the run${tail ? `: ${tail}` : ''}` }, startMs, execMs, notes };
    } finally {
      await vm.handle.destroy();
      // Refill after the run, not during it: on a small host a restore competes with the workload for CPU.
      this.#keepWarm(shape, ready);
    }
  }

  /** Process ids of the idle VMs waiting in the pool (for tests and metrics). */
  pooledVmPids(): number[] {
    return [...this.#pool.values()].flat().map((vm) => vm.handle.pid);
  }

  /** Resolves once every background pool refill has finished. */
  async settle(): Promise<void> {
    while (this.#background.size > 0) await Promise.allSettled([...this.#background]);
  }

  async reconcile(): Promise<void> {
    await reconcileVms(path.join(this.#root, 'vms'), this.#ctx.log);
    // Templates of an earlier process: their RAM files live on /dev/shm until removed.
    await this.#removeTemplates();
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.#closer.abort();
    await Promise.allSettled([...this.#background]);
    const idle = [...this.#pool.values()].flat();
    this.#pool.clear();
    await Promise.allSettled(idle.map((vm) => vm.handle.destroy()));
    await this.#removeTemplates();
  }

  /** Builds artifacts, picks the accelerator and reads the runners; once. */
  #prepare(): Promise<Ready> {
    this.#ready ??= (async () => {
      const version = spawnSync(QEMU_BINARY, ['--version'], { encoding: 'utf8', timeout: 10_000 });
      if (version.status !== 0) throw new Error(`${QEMU_BINARY} is not installed or does not run (install qemu-system-x86: scripts/setup.d/40-microvm.sh)`);
      const artifacts = await ensureGuestArtifacts(this.#ctx.config.installDir, [this.#opts.artifactsDir, path.join(this.#root, 'artifacts')]);
      const { accel, reason } = await this.#chooseAccel(artifacts);
      const runners = await loadRunners(this.#ctx.config.installDir);
      await this.#refreshImages();
      this.#ctx.log.info({ accel, reason, kernel: artifacts.kernelVersion }, 'microvm backend ready');
      return { artifacts, vmm: new QemuVmm({ accel, baseKernelArgs: baseKernelArgs(accel) }), accelReason: reason, runners };
    })();
    return this.#ready;
  }

  async #chooseAccel(artifacts: GuestArtifacts): Promise<{ accel: Accel; reason: string }> {
    if (this.#opts.accel === 'tcg') return { accel: 'tcg', reason: 'TCG chosen by configuration' };
    let why: string;
    try {
      fs.accessSync('/dev/kvm', fs.constants.R_OK | fs.constants.W_OK);
      // /dev/kvm can exist and still fail (nested virtualisation without some MSRs): prove it with a boot.
      const ms = await bareBoot({ accel: 'kvm', kernelPath: artifacts.kernelPath, initramfsPath: artifacts.initramfsPath, timeoutMs: 5_000 });
      return { accel: 'kvm', reason: `KVM test boot took ${Math.round(ms)} ms` };
    } catch (err) {
      why = fs.existsSync('/dev/kvm') ? `/dev/kvm is present but a KVM test boot failed (${errMessage(err).slice(0, 200)})` : 'no /dev/kvm on this host';
    }
    if (this.#opts.accel === 'kvm') throw new Error(`accel kvm was asked for but ${why}`);
    return { accel: 'tcg', reason: `software emulation: ${why}` };
  }

  async #refreshImages(): Promise<void> {
    const names = ['python', 'node', 'minimal'];
    const found = await Promise.all(names.map((n) => this.#ctx.images.resolve(n).catch(() => null)));
    this.#knownImages = new Set(found.flatMap((img) => (img ? [img.name] : [])));
  }

  async #shape(spec: RunSpec, ready: Ready): Promise<Shape | { error: string }> {
    const imageName = spec.image ?? DEFAULT_IMAGE[spec.runtime];
    let diskPath: string;
    let diskId: string;
    const image = imageName ? await this.#ctx.images.resolve(imageName) : null;
    if (image) {
      diskPath = await this.#rootfs.disk(image);
      diskId = image.digest;
    } else if (imageName === 'minimal' && !spec.image) {
      diskPath = ready.artifacts.minimalRootfsPath;
      diskId = `builtin-minimal-${ready.artifacts.buildId}`;
    } else {
      void this.#refreshImages();
      return { error: `the image store has no ${imageName ?? '(none)'} image; build it (vulcan image build) or run the setup command` };
    }
    const vcpus = Math.max(1, Math.min(Math.ceil(spec.limits.cpus), os.availableParallelism()));
    const memMB = spec.limits.memMB + this.#opts.memOverheadMB;
    const key = sha256(`${diskId}|${ready.artifacts.buildId}|${memMB}|${vcpus}|${ready.vmm.accel}`).slice(0, 16);
    return { key, diskPath, memMB, vcpus };
  }

  #vmDir(): { id: string; dir: string } {
    const id = `${Date.now().toString(36)}-${crypto.randomBytes(5).toString('hex')}`;
    return { id, dir: path.join(this.#root, 'vms', id) };
  }

  async #acquire(shape: Shape, ready: Ready, signal: AbortSignal): Promise<LiveVm> {
    const pooled = this.#pool.get(shape.key);
    while (pooled && pooled.length > 0) {
      const vm = pooled.shift();
      if (!vm) break;
      const alive = await Promise.race([vm.handle.exited.then(() => false), Promise.resolve(true)]);
      if (alive) return { ...vm, start: 'pool' };
      void vm.handle.destroy();
    }
    return this.#launch(shape, ready, signal);
  }

  /** Starts a fresh VM: restored from this shape's snapshot when enabled, booted otherwise. */
  async #launch(shape: Shape, ready: Ready, signal: AbortSignal): Promise<LiveVm> {
    if (this.#opts.snapshot) {
      let template: Template | undefined;
      try {
        template = await this.#template(shape, ready);
      } catch (err) {
        this.#ctx.log.warn({ err: errMessage(err) }, 'microvm snapshot unavailable; booting cold');
      }
      if (template) {
        const { id, dir } = this.#vmDir();
        const handle = await ready.vmm.start(
          {
            id,
            dir,
            kernelPath: ready.artifacts.kernelPath,
            initramfsPath: ready.artifacts.initramfsPath,
            rootDiskPath: shape.diskPath,
            memMB: shape.memMB,
            vcpus: shape.vcpus,
            kernelArgs: [],
            memoryFile: { path: template.ramPath, shared: false },
            restoreFrom: template.statePath,
          },
          signal,
        );
        return { handle, session: new AgentSession(handle.channel), kernelRelease: template.kernelRelease, start: 'snapshot' };
      }
    }
    return this.#boot(shape, ready, signal, undefined);
  }

  /** Boots a VM to the agent's HELLO. With `ramPath`, its RAM lives in that shared file (a template). */
  async #boot(shape: Shape, ready: Ready, signal: AbortSignal, ramPath: string | undefined): Promise<LiveVm> {
    const { id, dir } = this.#vmDir();
    const handle = await ready.vmm.start(
      {
        id,
        dir,
        kernelPath: ready.artifacts.kernelPath,
        initramfsPath: ready.artifacts.initramfsPath,
        rootDiskPath: shape.diskPath,
        memMB: shape.memMB,
        vcpus: shape.vcpus,
        kernelArgs: [],
        ...(ramPath ? { memoryFile: { path: ramPath, shared: true }, control: true } : {}),
      },
      signal,
    );
    try {
      const session = new AgentSession(handle.channel);
      const kernelRelease = await session.hello(performance.now() + this.#opts.bootTimeoutMs, signal);
      return { handle, session, kernelRelease, start: 'cold' };
    } catch (err) {
      const tail = handle.consoleTail().trim().split('\n').slice(-5).join(' | ');
      await handle.destroy();
      if (err instanceof Error && !(err instanceof SessionAborted)) err.message = `VM boot failed: ${err.message}${tail ? ` (console: ${tail})` : ''}`;
      throw err;
    }
  }

  /** This shape's snapshot template, made once: boot, wait for HELLO, pause, save, kill. */
  #template(shape: Shape, ready: Ready): Promise<Template> {
    let p = this.#templates.get(shape.key);
    if (!p) {
      p = (async () => {
        const dir = path.join(this.#root, 'templates', shape.key);
        await fs.promises.mkdir(dir, { recursive: true });
        const ramPath = path.join('/dev/shm', `vulcan-mvm-${this.#tag}-${shape.key}.ram`);
        const statePath = path.join(dir, 'state');
        const vm = await this.#boot(shape, ready, this.#closer.signal, ramPath);
        try {
          await vm.handle.saveState(statePath, this.#closer.signal);
        } catch (err) {
          await fs.promises.rm(ramPath, { force: true });
          throw err;
        } finally {
          await vm.handle.destroy();
        }
        return { ramPath, statePath, kernelRelease: vm.kernelRelease };
      })();
      this.#templates.set(shape.key, p);
      p.catch(() => this.#templates.delete(shape.key));
    }
    return p;
  }

  /** After a shape is used, keep `poolSize` VMs of it ready, filled in the background. */
  #keepWarm(shape: Shape, ready: Ready): void {
    if (this.#closed || this.#opts.poolSize <= 0) return;
    const have = (this.#pool.get(shape.key)?.length ?? 0) + (this.#filling.get(shape.key) ?? 0);
    for (let i = have; i < this.#opts.poolSize; i++) {
      this.#filling.set(shape.key, (this.#filling.get(shape.key) ?? 0) + 1);
      const task = this.#launch(shape, ready, this.#closer.signal)
        .then(async (vm) => {
          if (this.#closed) return vm.handle.destroy();
          const list = this.#pool.get(shape.key) ?? [];
          list.push(vm);
          this.#pool.set(shape.key, list);
          return undefined;
        })
        .catch((err: unknown) => {
          if (!this.#closed) this.#ctx.log.warn({ err: errMessage(err) }, 'microvm pool refill failed');
        })
        .finally(() => {
          this.#filling.set(shape.key, (this.#filling.get(shape.key) ?? 1) - 1);
          this.#background.delete(task);
        });
      this.#background.add(task);
    }
  }

  async #removeTemplates(): Promise<void> {
    const templates = [...this.#templates.values()];
    this.#templates.clear();
    await Promise.allSettled(templates);
    await fs.promises.rm(path.join(this.#root, 'templates'), { recursive: true, force: true });
    const prefix = `vulcan-mvm-${this.#tag}-`;
    const shm = await fs.promises.readdir('/dev/shm').catch(() => [] as string[]);
    await Promise.all(shm.filter((f) => f.startsWith(prefix)).map((f) => fs.promises.rm(path.join('/dev/shm', f), { force: true })));
  }
}
