/**
 * Sandboxes on the namespace backend: one long-lived bubblewrap sandbox per sandbox, in its
 * own cgroup, running the Vulcan sandbox agent (src/sandboxes/agent/agent.ts) on the host's
 * /usr (read-only).
 *
 * How it differs from a one-shot workload sandbox (src/host/bwrap.ts):
 * - It must outlive the server (restart reconciliation): no `--die-with-parent`, started
 *   in its own session (detached) by native/vulcan-sbx-launch.c, which has no parent-death
 *   signal. The server re-attaches by the bwrap pid (checked against its start time), the
 *   cgroup and the agent's socket.
 * - Writable /work and /tmp are tmpfs of `disk_mb` each, living in the sandbox's own mount
 *   namespace: they exist exactly as long as the sandbox does, and need no host directory
 *   that a symlink inside could point out of. Their pages are charged to the sandbox's
 *   memory cgroup, so `mem_mb` must leave room for the files kept there.
 * - The agent listens on a unix socket that the launcher creates as root in
 *   `<dataDir>/sandboxes/<id>/agent.sock`, a root-only directory never bound into the
 *   sandbox, and hands to the agent as fd 3.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import type { Duplex } from 'node:stream';
import { fileURLToPath } from 'node:url';
import type { BackendContext } from '../../core/context.js';
import type { AttachResult, SandboxCapabilities, SandboxDriver, SandboxHandle, SandboxLimits, SandboxSpec } from '../../core/sandbox.js';
import { BWRAP_PATH, ETC_GROUP, ETC_HOSTS, ETC_PASSWD, hostRootArgs, SANDBOX_HOST_ID, SANDBOX_INNER_ID } from '../../host/bwrap.js';
import { createCgroup, listCgroups, reapStaleCgroups, type Cgroup } from '../../host/cgroups.js';
import { AGENT_HEAP_MB } from '../../sandboxes/agent-bundle.js';
import { readReply, sendRequest } from '../../sandboxes/protocol.js';
import { sha256 } from '../../core/hash.js';

/** cgroup names of namespace sandboxes start with this (workloads use `ns-`). */
export const SANDBOX_CGROUP_PREFIX = 'sbx-';

/**
 * The cgroup prefix of one server's sandboxes: `sbx-<8 hex of the data dir>-`. cgroups are
 * host-wide while records are per data dir, so orphan reaping must only ever touch the
 * groups of its own data dir (two servers on one host must not reap each other).
 */
export function sandboxCgroupPrefix(dataDir: string): string {
  return `${SANDBOX_CGROUP_PREFIX}${sha256(dataDir).slice(0, 8)}-`;
}
/** How long a new sandbox's agent has to answer. */
const AGENT_START_TIMEOUT_MS = 15_000;
/** How often a re-attached sandbox's bwrap pid is checked. */
const LIVENESS_POLL_MS = 2_000;
/** The node that runs the agent: the server's own when it lives under /usr (the sandbox sees the host's /usr), else /usr/bin/node. */
const AGENT_NODE = process.execPath.startsWith('/usr/') ? process.execPath : '/usr/bin/node';

/** What the driver stores to re-attach. */
interface Persisted {
  readonly pid: number;
  readonly pidStart: string;
  readonly cgroup: string;
  readonly socket: string;
  readonly dir: string;
}

function isPersisted(v: Readonly<Record<string, unknown>>): v is Persisted & Record<string, unknown> {
  return typeof v.pid === 'number' && typeof v.pidStart === 'string' && typeof v.cgroup === 'string' && typeof v.socket === 'string' && typeof v.dir === 'string';
}

/** Field 22 of /proc/<pid>/stat (start time in clock ticks): tells a pid from a reused one. */
export function pidStartTime(pid: number): string | null {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return fields[19] ?? null;
  } catch {
    return null;
  }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Connects to an agent socket and waits for its `ping` answer. */
async function ping(socketPath: string, timeoutMs: number): Promise<void> {
  const sock = await connectUnix(socketPath, AbortSignal.timeout(timeoutMs));
  try {
    sendRequest(sock, { op: 'ping' });
    const r = await readReply(sock, AbortSignal.timeout(timeoutMs));
    if (!r.ok) throw new Error(r.error.message);
  } finally {
    sock.destroy();
  }
}

function connectUnix(socketPath: string, signal?: AbortSignal): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const sock = net.connect({ path: socketPath, allowHalfOpen: true });
    const onAbort = () => {
      sock.destroy();
      reject(new Error(`the sandbox agent did not answer at ${socketPath}`));
    };
    signal?.addEventListener('abort', onAbort, { once: true });
    sock.once('connect', () => {
      signal?.removeEventListener('abort', onAbort);
      resolve(sock);
    });
    sock.once('error', (err) => {
      signal?.removeEventListener('abort', onAbort);
      reject(err);
    });
  });
}

class NamespaceSandbox implements SandboxHandle {
  readonly died: Promise<string>;
  private resolveDied: (reason: string) => void = () => undefined;
  private destroying: Promise<void> | undefined;
  private poll: NodeJS.Timeout | undefined;
  /** A connection made ahead of need, which the agent has already accepted (see connect). */
  private spare: net.Socket | undefined;
  private closed = false;

  constructor(
    readonly id: string,
    private readonly p: Persisted,
    private readonly cgroup: Cgroup,
    child: ChildProcess | undefined,
  ) {
    this.died = new Promise((resolve) => (this.resolveDied = resolve));
    if (child) {
      child.once('exit', (code, signal) => {
        if (!this.destroying) this.resolveDied(`the sandbox exited (${signal ?? `code ${String(code)}`}); its log is ${path.join(p.dir, 'sandbox.log')}`);
      });
    } else {
      this.poll = setInterval(() => {
        if (!this.destroying && pidStartTime(p.pid) !== p.pidStart) {
          clearInterval(this.poll);
          this.resolveDied('the sandbox process is gone');
        }
      }, LIVENESS_POLL_MS);
      this.poll.unref();
    }
  }

  get persisted(): Readonly<Record<string, unknown>> {
    return { ...this.p };
  }

  /**
   * A connection to the agent. One made ahead of need is handed out when there is one: a
   * fresh connect costs the round trip of the agent accepting it (~0.5–0.9 ms of every exec
   * here). The next spare is made once the one handed out has closed, off the hot path.
   */
  connect(signal?: AbortSignal): Promise<Duplex> {
    const spare = this.spare;
    this.spare = undefined;
    if (spare && !spare.destroyed && !signal?.aborted) {
      spare.ref();
      spare.off('close', this.onSpareClose);
      spare.once('close', () => this.makeSpare());
      if (spare.readyState === 'open') return Promise.resolve(spare);
      // Still connecting: as good as a new connection.
      return new Promise((resolve, reject) => {
        spare.once('connect', () => resolve(spare));
        spare.once('error', reject);
      });
    }
    spare?.destroy();
    return connectUnix(this.p.socket, signal).then((sock) => {
      sock.once('close', () => this.makeSpare());
      return sock;
    });
  }

  /** Opens the next spare connection, unless there is one or the sandbox is going away. */
  makeSpare(): void {
    if (this.spare || this.closed || this.destroying) return;
    const sock = net.connect({ path: this.p.socket, allowHalfOpen: true });
    this.spare = sock;
    // While it waits, it must not keep a closing server alive (connect() refs it).
    sock.unref();
    sock.on('error', () => undefined);
    sock.once('close', this.onSpareClose);
  }

  private readonly onSpareClose = (): void => {
    if (this.spare?.destroyed) this.spare = undefined;
  };

  private dropSpare(): void {
    this.spare?.destroy();
    this.spare = undefined;
  }

  pause(): Promise<void> {
    return this.cgroup.freeze();
  }

  resume(): Promise<void> {
    return this.cgroup.thaw();
  }

  /** Stops watching without killing (the server is closing; the sandbox lives on). */
  detach(): void {
    this.closed = true;
    this.dropSpare();
    clearInterval(this.poll);
  }

  destroy(): Promise<void> {
    this.destroying ??= (async () => {
      this.dropSpare();
      clearInterval(this.poll);
      // A frozen group cannot die: thaw so the SIGKILLs land (killAll freezes again itself).
      await this.cgroup.thaw().catch(() => undefined);
      await this.cgroup.destroy();
      for (let i = 0; i < 200 && pidStartTime(this.p.pid) === this.p.pidStart; i++) {
        // bwrap is in the group and already killed; wait for its parent to reap it.
        let state: string | undefined;
        try {
          state = fs.readFileSync(`/proc/${this.p.pid}/stat`, 'utf8').split(') ')[1]?.[0];
        } catch {
          break;
        }
        if (state === 'Z') break;
        await sleep(10);
      }
      await fsp.rm(this.p.dir, { recursive: true, force: true });
    })();
    return this.destroying;
  }
}

export class NamespaceSandboxDriver implements SandboxDriver {
  readonly capabilities: SandboxCapabilities = { pause: true, reattach: true, pty: true, preview: true };
  readonly defaultImage = 'host';
  private readonly launcher: string;
  private readonly ptyHelper: string;
  private readonly spawnHelper: string;
  private readonly agentPath: string;
  private readonly root: string;
  private readonly live = new Set<NamespaceSandbox>();
  private readonly prefix: string;

  constructor(private readonly ctx: BackendContext) {
    this.launcher = path.join(ctx.config.installDir, 'build', 'vulcan-sbx-launch');
    this.ptyHelper = path.join(ctx.config.installDir, 'build', 'vulcan-pty');
    this.spawnHelper = path.join(ctx.config.installDir, 'build', 'vulcan-spawnd');
    this.agentPath = fileURLToPath(new URL('../../sandboxes/agent/agent.js', import.meta.url));
    this.root = path.join(ctx.config.dataDir, 'sandboxes');
    this.prefix = sandboxCgroupPrefix(ctx.config.dataDir);
  }

  /** Why this driver cannot run here, or null. */
  unavailableReason(): string | null {
    for (const f of [this.launcher, this.ptyHelper, this.spawnHelper]) if (!fs.existsSync(f)) return `${f} is missing: run scripts/build-native.sh (setup does)`;
    if (!fs.existsSync(this.agentPath)) return `${this.agentPath} is missing: run npm run build`;
    if (!fs.existsSync(AGENT_NODE)) return `the sandbox agent needs node under /usr (${AGENT_NODE} is missing)`;
    return null;
  }

  private bwrapArgs(spec: SandboxSpec, firstDataFd: number): { args: string[]; data: (Buffer | string)[] } {
    const size = String(spec.limits.diskMB * 1024 * 1024);
    const args = [
      '--unshare-all',
      '--unshare-user',
      '--new-session',
      '--cap-drop',
      'ALL',
      '--uid',
      String(SANDBOX_INNER_ID),
      '--gid',
      String(SANDBOX_INNER_ID),
      '--hostname',
      'vulcan',
      '--ro-bind',
      '/usr',
      '/usr',
      ...hostRootArgs(),
      '--proc',
      '/proc',
      '--dev',
      '/dev',
      '--perms',
      '1777',
      '--size',
      size,
      '--tmpfs',
      '/tmp',
      '--perms',
      '0755',
      '--size',
      size,
      '--tmpfs',
      '/work',
    ];
    // The agent lives in /.vulcan-agent, not /vulcan: workload leftovers checks look for
    // bwrap processes naming /vulcan/, and a sandbox is not a leftover workload.
    const files: { dest: string; data: Buffer | string; mode: number }[] = [
      { dest: '/etc/passwd', data: ETC_PASSWD, mode: 0o644 },
      { dest: '/etc/group', data: ETC_GROUP, mode: 0o644 },
      { dest: '/etc/hosts', data: ETC_HOSTS, mode: 0o644 },
      { dest: '/.vulcan-agent/agent.mjs', data: fs.readFileSync(this.agentPath), mode: 0o644 },
      { dest: '/.vulcan-agent/pty', data: fs.readFileSync(this.ptyHelper), mode: 0o755 },
      { dest: '/.vulcan-agent/spawnd', data: fs.readFileSync(this.spawnHelper), mode: 0o755 },
    ];
    const data: (Buffer | string)[] = [];
    let fd = firstDataFd;
    for (const f of files) {
      args.push('--perms', f.mode.toString(8).padStart(4, '0'), '--ro-bind-data', String(fd++), f.dest);
      data.push(f.data);
    }
    args.push('--clearenv', '--setenv', 'PATH', '/usr/local/bin:/usr/bin:/bin', '--setenv', 'HOME', '/work', '--setenv', 'LANG', 'C.UTF-8');
    args.push('--chdir', '/work', '--', AGENT_NODE, `--max-old-space-size=${AGENT_HEAP_MB}`, '/.vulcan-agent/agent.mjs');
    return { args, data };
  }

  async create(spec: SandboxSpec, signal: AbortSignal): Promise<SandboxHandle> {
    if (spec.image !== 'host') throw new Error(`namespace sandboxes run on the host's /usr; image ${spec.image} is not supported`);
    const missing = this.unavailableReason();
    if (missing) throw new Error(missing);
    const dir = path.join(this.root, spec.id);
    await fsp.mkdir(dir, { recursive: true, mode: 0o700 });
    const socket = path.join(dir, 'agent.sock');
    const cgroupName = `${this.prefix}${spec.id}`;
    let cgroup: Cgroup | undefined;
    let child: ChildProcess | undefined;
    try {
      cgroup = await createCgroup(cgroupName, { memBytes: spec.limits.memMB * 1024 * 1024, pidsMax: spec.limits.pidsMax, cpus: spec.limits.cpus });
      // fd 3 is the agent's listening socket (made by the launcher); data fds follow.
      const { args, data } = this.bwrapArgs(spec, 4);
      const log = fs.openSync(path.join(dir, 'sandbox.log'), 'a', 0o600);
      const cg = cgroup.procsFiles.flatMap((f) => ['-j', f]);
      try {
        child = spawn(this.launcher, ['-u', String(SANDBOX_HOST_ID), '-g', String(SANDBOX_HOST_ID), ...cg, '-l', socket, '--', BWRAP_PATH, ...args], {
          stdio: ['ignore', log, log, 'ignore', ...data.map(() => 'pipe' as const)],
          cwd: '/',
          env: {},
          detached: true,
        });
      } finally {
        fs.closeSync(log);
      }
      const spawned = child;
      data.forEach((d, i) => {
        const s = spawned.stdio[4 + i];
        if (s && 'end' in s) {
          s.on('error', () => undefined);
          s.end(d);
        }
      });
      child.unref();
      const exited = new Promise<never>((_, reject) => {
        spawned.once('exit', (code, sig) => {
          let tail = '';
          try {
            tail = fs.readFileSync(path.join(dir, 'sandbox.log'), 'utf8').slice(-500).trim();
          } catch {
            // no log
          }
          reject(new Error(`the sandbox exited while starting (${sig ?? `code ${String(code)}`}): ${tail || 'no message'}`));
        });
        spawned.once('error', reject);
      });
      exited.catch(() => undefined);
      // The socket exists before the agent runs; wait until it answers.
      const deadline = AbortSignal.any([signal, AbortSignal.timeout(AGENT_START_TIMEOUT_MS)]);
      for (;;) {
        try {
          await Promise.race([exited, ping(socket, 1_000)]);
          break;
        } catch (err) {
          if ((err as Error).message.startsWith('the sandbox exited')) throw err;
          if (deadline.aborted) throw new Error(`the sandbox agent did not answer within ${AGENT_START_TIMEOUT_MS} ms: ${(err as Error).message}`, { cause: err });
          await sleep(20);
        }
      }
      const pid = child.pid;
      const pidStart = pid === undefined ? null : pidStartTime(pid);
      if (pid === undefined || pidStart === null) throw new Error('the sandbox process vanished');
      const sb = new NamespaceSandbox(spec.id, { pid, pidStart, cgroup: cgroupName, socket, dir }, cgroup, child);
      sb.makeSpare();
      this.track(sb);
      return sb;
    } catch (err) {
      child?.kill('SIGKILL');
      await cgroup?.destroy().catch(() => undefined);
      await fsp.rm(dir, { recursive: true, force: true });
      throw err;
    }
  }

  private track(sb: NamespaceSandbox): void {
    this.live.add(sb);
    void sb.died.then(() => this.live.delete(sb));
  }

  async attach(id: string, persisted: Readonly<Record<string, unknown>>, limits: SandboxLimits, paused: boolean): Promise<AttachResult> {
    if (!isPersisted(persisted)) return { ok: false, reason: 'its record has no process information' };
    const p = persisted;
    const alive = pidStartTime(p.pid) === p.pidStart;
    const hasGroup = listCgroups().includes(p.cgroup);
    const cleanup = async () => {
      if (hasGroup) await reapStaleCgroups(p.cgroup).catch(() => []);
      await fsp.rm(p.dir, { recursive: true, force: true });
    };
    if (!alive) {
      await cleanup();
      return { ok: false, reason: 'its process was gone when the server restarted' };
    }
    if (!hasGroup) {
      try {
        process.kill(p.pid, 'SIGKILL');
      } catch {
        // gone
      }
      await cleanup();
      return { ok: false, reason: 'its cgroup was gone when the server restarted' };
    }
    const cgroup = await createCgroup(p.cgroup, { memBytes: limits.memMB * 1024 * 1024, pidsMax: limits.pidsMax, cpus: limits.cpus });
    const sb = new NamespaceSandbox(id, p, cgroup, undefined);
    if (!paused) {
      try {
        await ping(p.socket, 3_000);
      } catch (err) {
        await sb.destroy();
        return { ok: false, reason: `its agent did not answer after the restart: ${(err as Error).message}` };
      }
    }
    this.track(sb);
    return { ok: true, handle: sb };
  }

  async reapOrphans(keep: ReadonlySet<string>): Promise<string[]> {
    const keepGroups = new Set([...keep].map((id) => `${this.prefix}${id}`));
    const removed = (await reapStaleCgroups(this.prefix, keepGroups)).map((n) => `cgroup ${n}`);
    let dirs: string[] = [];
    try {
      dirs = await fsp.readdir(this.root);
    } catch {
      // none yet
    }
    for (const d of dirs) {
      if (keep.has(d)) continue;
      await fsp.rm(path.join(this.root, d), { recursive: true, force: true });
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
