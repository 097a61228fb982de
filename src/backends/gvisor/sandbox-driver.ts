/**
 * Sandboxes on the gvisor backend: one long-lived gVisor sandbox (`runsc run --detach` on an
 * OCI bundle) per sandbox, on an image from the store, in its own host cgroup, running the
 * Vulcan sandbox agent from the agent bundle (src/sandboxes/agent-bundle.ts) mounted
 * read-only at /.vulcan-agent.
 *
 * How it differs from a gvisor workload (gvisor-backend.ts):
 * - It must outlive the server (restart reconciliation): `runsc run --detach` returns once
 *   the sandbox runs, and the sentry and gofer are reparented away from the server (runsc
 *   attached to its parent would kill them with it). Its runsc state lives in its own root,
 *   `<dataDir>/gvisor-sandboxes/state`, and its cgroups are `gvsbx-<data dir tag>-<id>`, so
 *   the workload side's start-up cleanup (`gv-…` groups, `<dataDir>/gvisor/state`) never
 *   touches them.
 * - The transport: runsc cannot hand the sandbox a descriptor, so the agent listens on a
 *   path (`VULCAN_AGENT_SOCKET=/.vulcan-run/agent.sock`) and runsc runs with
 *   `--host-uds=create`: the gofer binds a real host unix socket in the bind-mounted
 *   directory, which the server connects to. The directory is a host tmpfs of its own
 *   (64 KiB, 16 inodes) inside a root-only 0700 directory: the sandbox cannot fill the host's
 *   disk through it, and no hard link to a host socket can appear in it. The sandbox can
 *   still put a symlink there, so the server connects with `connectNoFollow`
 *   (src/sandboxes/agent-socket.ts: O_PATH|O_NOFOLLOW, fstat, /proc/self/fd/N). `create` only lets the
 *   sandbox make sockets, not connect to host ones (`open`).
 * - Pause and resume are `runsc pause`/`runsc resume` (gVisor stops its own kernel's tasks;
 *   memory and processes are kept).
 */
import { execFile, spawn } from 'node:child_process';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import type { Duplex } from 'node:stream';
import { promisify } from 'node:util';
import { dataDirTag } from '../../core/config.js';
import type { BackendContext } from '../../core/context.js';
import { VulcanError } from '../../core/errors.js';
import type { AttachResult, SandboxCapabilities, SandboxDriver, SandboxHandle, SandboxLimits, SandboxSpec } from '../../core/sandbox.js';
import { createCgroup, listCgroups, reapStaleCgroups, type Cgroup } from '../../host/cgroups.js';
import { AGENT_MOUNT, agentArgv, ensureAgentBundle } from '../../sandboxes/agent-bundle.js';
import { readReply, sendRequest } from '../../sandboxes/protocol.js';
import { pidStartTime } from '../namespace/sandbox-driver.js';
import { connectNoFollow } from '../../sandboxes/agent-socket.js';
import { ociConfig, SANDBOX_UID } from './bundle.js';
import { hostLimits } from './host-limits.js';
import { unmountIfMounted } from './payload.js';
import { findRunsc, joinCgroupArgv, runscState, type RunscPlatform } from './runsc.js';

const execFileP = promisify(execFile);

/** cgroup names of gvisor sandboxes start with this (workloads use `gv-`). */
export const GVISOR_SANDBOX_CGROUP_PREFIX = 'gvsbx-';

/** The cgroup prefix of one server's gvisor sandboxes: `gvsbx-<data dir tag>-`. */
export function gvisorSandboxCgroupPrefix(dataDir: string): string {
  return `${GVISOR_SANDBOX_CGROUP_PREFIX}${dataDirTag(dataDir)}-`;
}

/** Where one server keeps its gvisor sandboxes: `<dataDir>/gvisor-sandboxes` (`state/` is runsc's root). */
export function gvisorSandboxRoot(dataDir: string): string {
  return path.join(dataDir, 'gvisor-sandboxes');
}

/** Where the agent's socket directory is mounted inside. */
export const AGENT_RUN_MOUNT = '/.vulcan-run';
const SOCKET_NAME = 'agent.sock';
/** The per-sandbox host tmpfs that holds the socket directory and the sandbox's log. */
const HOST_TMPFS_BYTES = 1024 * 1024;
const HOST_TMPFS_INODES = 16;
/** How long a new sandbox's agent has to answer (node under ptrace starts in ≈ 1 s here). */
const AGENT_START_TIMEOUT_MS = 30_000;
/** How often a sandbox's sentry pid is checked. */
const LIVENESS_POLL_MS = 1_000;
/** How long one runsc command (pause, resume, state, delete) may take. */
const RUNSC_TIMEOUT_MS = 15_000;

/** What the driver stores to re-attach. */
interface Persisted {
  /** The sentry (`runsc-sandbox`) process on the host and its start time. */
  readonly pid: number;
  readonly pidStart: string;
  readonly cgroup: string;
  /** `<root>/<id>`: bundle/, host/ (the tmpfs: run/agent.sock, sandbox.log). */
  readonly dir: string;
  /** The runsc container id. */
  readonly container: string;
}

function isPersisted(v: Readonly<Record<string, unknown>>): v is Persisted & Record<string, unknown> {
  return typeof v.pid === 'number' && typeof v.pidStart === 'string' && typeof v.cgroup === 'string' && typeof v.dir === 'string' && typeof v.container === 'string';
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const hostDir = (dir: string) => path.join(dir, 'host');
const socketPath = (dir: string) => path.join(hostDir(dir), 'run', SOCKET_NAME);
const logPath = (dir: string) => path.join(hostDir(dir), 'sandbox.log');

function logTail(dir: string): string {
  try {
    return fs.readFileSync(logPath(dir), 'utf8').slice(-600).trim();
  } catch {
    return '';
  }
}

/** Connects to the agent and waits for its `ping` answer. */
async function ping(socket: string, timeoutMs: number): Promise<void> {
  const sock = await connectNoFollow(socket, { signal: AbortSignal.timeout(timeoutMs) });
  try {
    sendRequest(sock, { op: 'ping' });
    const r = await readReply(sock, AbortSignal.timeout(timeoutMs));
    if (!r.ok) throw new Error(r.error.message);
  } finally {
    sock.destroy();
  }
}

/** What the driver needs from the backend: runsc and the platform its probe chose. */
export interface GvisorHost {
  readonly runsc: string | null;
  readonly platform: RunscPlatform;
}

/** runsc for one state root. */
class Runsc {
  constructor(
    readonly bin: string,
    readonly root: string,
  ) {}

  async run(args: readonly string[], what: string): Promise<void> {
    try {
      await execFileP(this.bin, ['--root', this.root, ...args], { timeout: RUNSC_TIMEOUT_MS });
    } catch (err) {
      const e = err as { stderr?: string; message: string };
      throw new Error(`runsc ${what} failed: ${(e.stderr ?? '').trim() || e.message}`, { cause: err });
    }
  }

  /** Removes the container's state, killing what is left of it. Never throws. */
  async forceDelete(container: string): Promise<void> {
    await this.run(['delete', '-force', container], 'delete').catch(() => undefined);
    // runsc can leave its files when the sandbox died under it; they carry the id.
    let files: string[];
    try {
      files = await fsp.readdir(this.root);
    } catch {
      return;
    }
    for (const f of files) if (f.includes(container)) await fsp.rm(path.join(this.root, f), { recursive: true, force: true });
  }

  /** The container ids runsc keeps in this root. */
  async list(): Promise<string[]> {
    try {
      const { stdout } = await execFileP(this.bin, ['--root', this.root, 'list', '-quiet'], { timeout: RUNSC_TIMEOUT_MS });
      return stdout.split('\n').map((l) => l.trim()).filter(Boolean);
    } catch {
      return [];
    }
  }
}

/** Removes everything one sandbox made on the host. Never throws; idempotent. */
async function removeAll(runsc: Runsc | undefined, container: string, dir: string, cgroup: Cgroup | undefined): Promise<void> {
  // SIGKILL to the sentry, the gofer and the ptrace stubs first (paused or not: runsc's
  // pause is inside gVisor's kernel, host signals still land); runsc then only cleans up.
  await cgroup?.killAll().catch(() => undefined);
  if (runsc) await runsc.forceDelete(container);
  await cgroup?.destroy().catch(() => undefined);
  await unmountIfMounted(hostDir(dir));
  await fsp.rm(dir, { recursive: true, force: true }).catch(() => undefined);
}

class GvisorSandbox implements SandboxHandle {
  readonly died: Promise<string>;
  private resolveDied: (reason: string) => void = () => undefined;
  private destroying: Promise<void> | undefined;
  private readonly poll: NodeJS.Timeout;

  constructor(
    readonly id: string,
    private readonly p: Persisted,
    private readonly cgroup: Cgroup,
    private readonly runsc: Runsc,
  ) {
    this.died = new Promise((resolve) => (this.resolveDied = resolve));
    this.poll = setInterval(() => {
      if (this.destroying || pidStartTime(p.pid) === p.pidStart) return;
      clearInterval(this.poll);
      const oom = this.cgroup.stats().oomKills > 0;
      const tail = logTail(p.dir);
      this.resolveDied(oom ? 'the sandbox ran out of memory (resources.mem_mb) and was killed' : `the gVisor sandbox exited${tail ? `: ${tail}` : ''}`);
    }, LIVENESS_POLL_MS);
    this.poll.unref();
  }

  get persisted(): Readonly<Record<string, unknown>> {
    return { ...this.p };
  }

  connect(signal?: AbortSignal): Promise<Duplex> {
    return connectNoFollow(socketPath(this.p.dir), signal ? { signal } : {});
  }

  pause(): Promise<void> {
    return this.runsc.run(['pause', this.p.container], 'pause');
  }

  resume(): Promise<void> {
    return this.runsc.run(['resume', this.p.container], 'resume');
  }

  /** Stops watching without killing (the server is closing; the sandbox lives on). */
  detach(): void {
    clearInterval(this.poll);
  }

  destroy(): Promise<void> {
    this.destroying ??= (async () => {
      clearInterval(this.poll);
      await removeAll(this.runsc, this.p.container, this.p.dir, this.cgroup);
    })();
    return this.destroying;
  }
}

export class GvisorSandboxDriver implements SandboxDriver {
  readonly capabilities: SandboxCapabilities = { pause: true, reattach: true, pty: true, preview: true };
  readonly defaultImage = 'minimal';
  private readonly root: string;
  private readonly stateDir: string;
  private readonly prefix: string;
  private readonly live = new Set<GvisorSandbox>();

  constructor(
    private readonly ctx: BackendContext,
    private readonly host: () => GvisorHost,
  ) {
    this.root = gvisorSandboxRoot(ctx.config.dataDir);
    this.stateDir = path.join(this.root, 'state');
    this.prefix = gvisorSandboxCgroupPrefix(ctx.config.dataDir);
  }

  private runsc(): Runsc | undefined {
    const bin = this.host().runsc ?? findRunsc();
    return bin ? new Runsc(bin, this.stateDir) : undefined;
  }

  private bundleConfig(spec: SandboxSpec, rootfsDir: string, agentDir: string, runDir: string): object {
    return ociConfig({
      rootfsDir,
      argv: agentArgv(),
      // The agent's own environment; each exec gets the one the manager sends.
      env: ['PATH=/usr/local/bin:/usr/bin:/bin', 'HOME=/work', 'LANG=C.UTF-8', `VULCAN_AGENT_SOCKET=${AGENT_RUN_MOUNT}/${SOCKET_NAME}`],
      cwd: '/work',
      limits: spec.limits,
      hostname: 'vulcan',
      mounts: [
        { destination: AGENT_MOUNT, type: 'bind', source: agentDir, options: ['rbind', 'ro', 'nosuid', 'nodev'] },
        { destination: AGENT_RUN_MOUNT, type: 'bind', source: runDir, options: ['rbind', 'rw', 'nosuid', 'nodev', 'noexec'] },
      ],
    });
  }

  async create(spec: SandboxSpec, signal: AbortSignal): Promise<SandboxHandle> {
    if (!/^[A-Za-z0-9_-]{1,64}$/.test(spec.id)) throw new Error(`bad sandbox id ${spec.id}`);
    const runsc = this.runsc();
    if (!runsc) throw new Error('runsc (gVisor) is not installed: apt-get install runsc, or set VULCAN_RUNSC');
    const image = await this.ctx.images.resolve(spec.image);
    if (!image) throw new VulcanError('unknown_image', `no image named ${JSON.stringify(spec.image)} in the image store; see \`vulcan image ls\`, or drop image to use "${this.defaultImage}"`, { details: { field: 'image', image: spec.image } });
    const agent = ensureAgentBundle(this.ctx.config.dataDir, this.ctx.config.installDir);
    const { platform } = this.host();

    await fsp.mkdir(this.stateDir, { recursive: true, mode: 0o700 });
    await fsp.chmod(this.root, 0o700);
    const dir = path.join(this.root, spec.id);
    const container = spec.id;
    const cgroupName = `${this.prefix}${spec.id}`;
    let cgroup: Cgroup | undefined;
    try {
      await fsp.mkdir(dir, { mode: 0o700 });
      const bundleDir = path.join(dir, 'bundle');
      await fsp.mkdir(bundleDir, { mode: 0o700 });
      await fsp.mkdir(hostDir(dir), { mode: 0o700 });
      await execFileP('mount', ['-t', 'tmpfs', '-o', `size=${HOST_TMPFS_BYTES},nr_inodes=${HOST_TMPFS_INODES},mode=0700,nosuid,nodev,noexec`, 'vulcan-gvsbx', hostDir(dir)]);
      const runDir = path.join(hostDir(dir), 'run');
      await fsp.mkdir(runDir, { mode: 0o700 });
      // The agent runs as the sandbox's user and must be able to bind its socket here.
      await fsp.chown(runDir, SANDBOX_UID, SANDBOX_UID);
      await fsp.writeFile(path.join(bundleDir, 'config.json'), JSON.stringify(this.bundleConfig(spec, image.rootfsDir, agent.dir, runDir)), { mode: 0o600 });

      cgroup = await createCgroup(cgroupName, hostLimits(spec.limits, platform));
      const runscArgs = ['--root', this.stateDir, `--platform=${platform}`, '--network=none', '--ignore-cgroups', '--host-uds=create', 'run', '--detach', '--bundle', bundleDir, container];
      const [sh, ...shArgs] = joinCgroupArgv(cgroup.procsFiles, [runsc.bin, ...runscArgs]);
      const log = fs.openSync(logPath(dir), 'a', 0o600);
      let exit: Promise<{ code: number | null; sig: NodeJS.Signals | null }>;
      try {
        // The sandbox's stdout/stderr (the agent's messages) go to the log on the capped tmpfs.
        const child = spawn(sh ?? '/bin/sh', shArgs, { stdio: ['ignore', log, log], cwd: bundleDir, env: { PATH: '/usr/sbin:/usr/bin:/sbin:/bin' } });
        const onAbort = () => child.kill('SIGKILL');
        signal.addEventListener('abort', onAbort, { once: true });
        exit = new Promise((resolve, reject) => {
          child.once('error', reject);
          child.once('exit', (code, sig) => resolve({ code, sig }));
        }).finally(() => signal.removeEventListener('abort', onAbort)) as typeof exit;
      } finally {
        fs.closeSync(log);
      }
      const ran = await exit;
      if (signal.aborted) throw new Error('the sandbox start was aborted');
      if (ran.code !== 0) throw new Error(`runsc could not start the sandbox (${ran.sig ?? `exit ${String(ran.code)}`}): ${logTail(dir) || 'no message'}`);

      const st = await runscState(runsc.bin, this.stateDir, container);
      const pidStart = st && st.pid > 0 ? pidStartTime(st.pid) : null;
      if (!st || pidStart === null) throw new Error(`the gVisor sandbox vanished while starting: ${logTail(dir) || 'no message'}`);
      const deadline = AbortSignal.any([signal, AbortSignal.timeout(AGENT_START_TIMEOUT_MS)]);
      for (;;) {
        try {
          await ping(socketPath(dir), 2_000);
          break;
        } catch (err) {
          if (pidStartTime(st.pid) !== pidStart) throw new Error(`the sandbox exited while starting: ${logTail(dir) || 'no message'}`, { cause: err });
          if (deadline.aborted) throw new Error(`the sandbox agent did not answer within ${AGENT_START_TIMEOUT_MS} ms: ${(err as Error).message}`, { cause: err });
          await sleep(50);
        }
      }
      const sb = new GvisorSandbox(spec.id, { pid: st.pid, pidStart, cgroup: cgroupName, dir, container }, cgroup, runsc);
      this.track(sb);
      return sb;
    } catch (err) {
      await removeAll(runsc, container, dir, cgroup);
      throw err;
    }
  }

  private track(sb: GvisorSandbox): void {
    this.live.add(sb);
    void sb.died.then(() => this.live.delete(sb));
  }

  async attach(id: string, persisted: Readonly<Record<string, unknown>>, limits: SandboxLimits, paused: boolean): Promise<AttachResult> {
    if (!isPersisted(persisted)) return { ok: false, reason: 'its record has no gVisor sandbox information' };
    const p = persisted;
    const runsc = this.runsc();
    const hasGroup = listCgroups().includes(p.cgroup);
    const existing = hasGroup ? await createCgroup(p.cgroup, hostLimits(limits, this.host().platform)) : undefined;
    const fail = async (reason: string): Promise<AttachResult> => {
      await removeAll(runsc, p.container, p.dir, existing);
      return { ok: false, reason };
    };
    if (!runsc) return fail('runsc is no longer installed');
    if (pidStartTime(p.pid) !== p.pidStart) return fail('its gVisor sandbox was gone when the server restarted');
    if (!existing) return fail('its cgroup was gone when the server restarted');
    const st = await runscState(runsc.bin, this.stateDir, p.container);
    if (!st || (st.status !== 'running' && st.status !== 'paused')) return fail(`runsc reports it ${st ? st.status : 'unknown'} after the restart`);
    const sb = new GvisorSandbox(id, p, existing, runsc);
    try {
      // The server may have died between runsc and its record: make runsc agree with the record.
      if (paused && st.status === 'running') await sb.pause();
      if (!paused && st.status === 'paused') await sb.resume();
      if (!paused) await ping(socketPath(p.dir), 5_000);
    } catch (err) {
      await sb.destroy();
      return { ok: false, reason: `its agent did not answer after the restart: ${(err as Error).message}` };
    }
    this.track(sb);
    return { ok: true, handle: sb };
  }

  async reapOrphans(keep: ReadonlySet<string>): Promise<string[]> {
    const keepGroups = new Set([...keep].map((id) => `${this.prefix}${id}`));
    const removed = (await reapStaleCgroups(this.prefix, keepGroups)).map((n) => `cgroup ${n}`);
    const runsc = this.runsc();
    if (runsc && fs.existsSync(this.stateDir)) {
      for (const c of await runsc.list()) {
        if (keep.has(c)) continue;
        await runsc.forceDelete(c);
        removed.push(`runsc container ${c}`);
      }
    }
    let dirs: string[] = [];
    try {
      dirs = await fsp.readdir(this.root);
    } catch {
      // none yet
    }
    for (const d of dirs) {
      if (d === 'state' || keep.has(d)) continue;
      await removeAll(undefined, d, path.join(this.root, d), undefined);
      removed.push(`directory ${d}`);
    }
    return removed;
  }

  /** Stops watching sandboxes; they keep running for the next server process. */
  close(): void {
    for (const sb of this.live) sb.detach();
    this.live.clear();
  }
}
