/**
 * Sandboxes on the microvm backend: one long-lived QEMU microVM per sandbox, with its own
 * guest kernel, running the Vulcan sandbox agent (src/sandboxes/agent/agent.ts) from the
 * agent bundle.
 *
 * - **Disks.** The image's erofs root (the workload backend's cache) under a tmpfs overlay
 *   of `disk_mb`, and the agent bundle (its own node, libraries, the agent, the PTY helper)
 *   packed once per bundle digest into a read-only erofs disk that the guest mounts at
 *   /.vulcan-agent. The guest tells the two apart by the bundle disk's virtio serial.
 * - **Guest.** The C guest agent (guest/agent/sandbox.c, `vulcan_mode=sandbox`) is PID 1:
 *   it starts the Node agent as uid 1000 in a chroot, in a cgroup with `mem_mb` and the pids
 *   cap, and multiplexes channels to the agent's socket over one virtio-serial port
 *   (mux.ts). No network device: the preview relay goes through the agent to the guest's
 *   own loopback.
 * - **Outliving the server.** QEMU runs in its own session and *listens* on the VM's three
 *   sockets (channel, QMP, serial console), so a restarted server reconnects to a live VM:
 *   `attach` checks the pid (with its start time and `-name` tag), says HELLO on the channel
 *   and pings the agent.
 * - **Pause** is QMP `stop`/`cont`: the vCPUs stop, memory and processes stay.
 *
 * Everything lives in `<dataDir>/microvm/sbx/<id>/` (sockets, `qemu.pid`, `vm.json`,
 * `qemu.log`); destroy kills QEMU and removes it.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { execFile } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import type { Duplex } from 'node:stream';
import { promisify } from 'node:util';
import type { BackendContext } from '../../core/context.js';
import type { AttachResult, SandboxCapabilities, SandboxDriver, SandboxHandle, SandboxLimits, SandboxSpec } from '../../core/sandbox.js';
import { AGENT_MOUNT, agentArgv, ensureAgentBundle } from '../../sandboxes/agent-bundle.js';
import { readReply, sendRequest } from '../../sandboxes/protocol.js';
import type { GuestArtifacts } from './artifacts.js';
import { ChannelMux } from './mux.js';
import { baseKernelArgs, Qmp, QEMU_BINARY, qemuArgs } from './qemu.js';
import type { Accel } from './vmm.js';

const run = promisify(execFile);

/** Guest RAM above `mem_mb`: the kernel, PID 1 and page cache (the agent counts in `mem_mb`, as on namespace). */
export const SANDBOX_MEM_OVERHEAD_MB = 128;
/** A boot under TCG plus the Node agent's start (seconds under emulation). */
const AGENT_START_TIMEOUT_MS = 180_000;
/** After a restart, a live guest answers HELLO and ping within this (generous: a loaded TCG guest is slow). */
const ATTACH_TIMEOUT_MS = 60_000;
const QMP_TIMEOUT_MS = 10_000;
const SOCKET_WAIT_MS = 15_000;
/** How long a freshly created QEMU socket may refuse connections before listen() catches up. */
const SOCKET_SETTLE_MS = 2_000;
const LIVENESS_POLL_MS = 1_000;
const CONSOLE_TAIL_BYTES = 16 * 1024;
/** Longest unix socket path (sun_path is 108 bytes with its NUL). */
const MAX_SOCKET_PATH = 107;
const BUNDLE_SERIAL = 'vulcan-agent';

/** What the driver needs from the microvm backend (artifacts, accelerator, image disks). */
export interface MicrovmSandboxDeps {
  prepare(): Promise<{ readonly artifacts: GuestArtifacts; readonly accel: Accel }>;
  /** The read-only erofs root disk of `image`; rejects with what to do when there is none. */
  rootDisk(image: string): Promise<string>;
}

/** What the driver stores to re-attach. */
interface Persisted {
  readonly pid: number;
  readonly pidStart: string;
  readonly tag: string;
  readonly dir: string;
}

function isPersisted(v: Readonly<Record<string, unknown>>): v is Persisted & Record<string, unknown> {
  return typeof v.pid === 'number' && Number.isInteger(v.pid) && v.pid > 1 && typeof v.pidStart === 'string' && typeof v.tag === 'string' && typeof v.dir === 'string';
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Field 22 of /proc/<pid>/stat (start time) and field 3 (state), or null when gone. */
function procStat(pid: number): { start: string; state: string } | null {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return fields[19] && fields[0] ? { start: fields[19], state: fields[0] } : null;
  } catch {
    return null;
  }
}

/** The pid is that QEMU, alive: same start time, not a zombie, `-name <tag>` on its command line. */
function isOurQemu(pid: number, pidStart: string, tag: string): boolean {
  const st = procStat(pid);
  if (!st || st.start !== pidStart || st.state === 'Z') return false;
  try {
    const argv = fs.readFileSync(`/proc/${pid}/cmdline`, 'latin1').split('\0');
    return argv.some((a, i) => a === tag && argv[i - 1] === '-name');
  } catch {
    return false;
  }
}

async function killAndWait(pid: number, pidStart: string): Promise<void> {
  try {
    process.kill(pid, 'SIGKILL');
  } catch {
    return;
  }
  for (let i = 0; i < 500; i++) {
    const st = procStat(pid);
    if (!st || st.start !== pidStart || st.state === 'Z') return;
    await sleep(10);
  }
}

/**
 * Connects to a unix socket. QEMU binds its listening sockets before it calls listen(), so a
 * socket file can exist for a moment while connecting is still refused: with `settleMs`, a
 * refused or missing socket is tried again every 10 ms for that long.
 */
export async function connectUnix(p: string, signal?: AbortSignal, settleMs = 0): Promise<net.Socket> {
  const until = performance.now() + settleMs;
  for (;;) {
    try {
      return await connectUnixOnce(p, signal);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if ((code !== 'ECONNREFUSED' && code !== 'ENOENT') || performance.now() >= until || signal?.aborted) throw err;
      await sleep(10);
    }
  }
}

function connectUnixOnce(p: string, signal?: AbortSignal): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const sock = net.connect({ path: p });
    const onAbort = () => {
      sock.destroy();
      reject(new Error(`aborted while connecting to ${p}`));
    };
    signal?.addEventListener('abort', onAbort, { once: true });
    sock.once('connect', () => {
      signal?.removeEventListener('abort', onAbort);
      sock.removeAllListeners('error');
      sock.on('error', () => undefined);
      resolve(sock);
    });
    sock.once('error', (err) => {
      signal?.removeEventListener('abort', onAbort);
      reject(err);
    });
  });
}

async function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([p, new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`${what} did not answer within ${ms} ms`)), ms)))]);
  } finally {
    clearTimeout(timer);
  }
}

/** Connections to a live VM's sockets (made on create, again on attach). */
interface Links {
  readonly qmp: Qmp;
  readonly qmpSock: net.Socket;
  readonly consoleSock: net.Socket | undefined;
}

class MicrovmSandbox implements SandboxHandle {
  readonly died: Promise<string>;
  #resolveDied: (reason: string) => void = () => undefined;
  #destroying: Promise<void> | undefined;
  #poll: NodeJS.Timeout | undefined;
  #mux: Promise<ChannelMux> | undefined;
  #console: Buffer[] = [];
  #consoleBytes = 0;

  constructor(
    readonly id: string,
    private readonly p: Persisted,
    private readonly links: Links,
    child: ChildProcess | undefined,
  ) {
    this.died = new Promise((resolve) => (this.#resolveDied = resolve));
    links.consoleSock?.on('data', (chunk: Buffer) => {
      this.#console.push(chunk);
      this.#consoleBytes += chunk.length;
      while (this.#consoleBytes > CONSOLE_TAIL_BYTES && this.#console.length > 1) this.#consoleBytes -= this.#console.shift()?.length ?? 0;
    });
    if (child) {
      child.once('exit', (code, signal) => this.#die(`its VM exited (${signal ?? `code ${String(code)}`})${this.#tail()}`));
    } else {
      this.#poll = setInterval(() => {
        if (!isOurQemu(p.pid, p.pidStart, p.tag)) this.#die('its VM is gone');
      }, LIVENESS_POLL_MS);
      this.#poll.unref();
    }
  }

  get persisted(): Readonly<Record<string, unknown>> {
    return { ...this.p };
  }

  #tail(): string {
    const t = Buffer.concat(this.#console).toString('utf8').trim().split('\n').slice(-3).join(' | ');
    return t ? `; console: ${t}` : '';
  }

  #die(reason: string): void {
    clearInterval(this.#poll);
    if (!this.#destroying) this.#resolveDied(reason);
  }

  /** Uses `mux` for connections, and watches it for protocol violations and the agent's exit. */
  adoptMux(mux: Promise<ChannelMux>): void {
    this.#mux = mux;
    void mux.then(
      (m) => {
        m.onAgentExit((status) => this.#die(`the sandbox agent exited (wait status ${status})${this.#tail()}`));
        void m.dead.then((d) => {
          if (d.kind === 'violation') {
            // A guest that breaks the protocol is not trusted again: the VM is killed.
            this.#die(`the guest broke the channel protocol (${d.error.message}); its VM was killed`);
            void this.destroy();
          } else if (!this.#destroying && this.#mux === mux) {
            this.#die(`the channel to its VM closed${this.#tail()}`);
          }
        });
      },
      () => undefined,
    );
  }

  async connect(signal?: AbortSignal): Promise<Duplex> {
    if (!this.#mux) throw new Error('the sandbox is paused since the server restarted; resume it first');
    const mux = await this.#mux;
    return mux.open(signal);
  }

  async pause(): Promise<void> {
    await withTimeout(this.links.qmp.execute('stop'), QMP_TIMEOUT_MS, 'QMP stop');
  }

  async resume(): Promise<void> {
    await withTimeout(this.links.qmp.execute('cont'), QMP_TIMEOUT_MS, 'QMP cont');
    if (!this.#mux) {
      // Re-attached while paused: the guest could not answer HELLO until now.
      const mux = handshake(this.p.dir, performance.now() + ATTACH_TIMEOUT_MS);
      this.adoptMux(mux);
      await mux;
    }
  }

  /** Stops watching and drops the connections; the VM lives on (the server is closing). */
  detach(): void {
    clearInterval(this.#poll);
    const mux = this.#mux;
    this.#mux = undefined;
    void mux?.then((m) => m.close(), () => undefined);
    this.links.qmpSock.destroy();
    this.links.consoleSock?.destroy();
  }

  destroy(): Promise<void> {
    this.#destroying ??= (async () => {
      clearInterval(this.#poll);
      await killAndWait(this.p.pid, this.p.pidStart);
      void this.#mux?.then((m) => m.close(), () => undefined);
      this.links.qmpSock.destroy();
      this.links.consoleSock?.destroy();
      await fsp.rm(this.p.dir, { recursive: true, force: true });
    })();
    return this.#destroying;
  }
}

/** Connects to a VM's channel socket and says HELLO. */
async function handshake(dir: string, deadlineMs: number, signal?: AbortSignal, settleMs = 0): Promise<ChannelMux> {
  const sock = await connectUnix(path.join(dir, 'mux.sock'), signal, settleMs);
  try {
    return await ChannelMux.handshake(sock, deadlineMs, signal);
  } catch (err) {
    sock.destroy();
    throw err;
  }
}

/** Opens a channel and waits for the agent's `ping` answer. */
async function ping(mux: ChannelMux, timeoutMs: number): Promise<void> {
  const signal = AbortSignal.timeout(timeoutMs);
  const conn = await mux.open(signal);
  try {
    sendRequest(conn, { op: 'ping' });
    const r = await readReply(conn, signal);
    if (!r.ok) throw new Error(r.error.message);
  } finally {
    conn.destroy();
  }
}

/** Connects QMP and the console of a VM whose sockets exist. */
async function link(dir: string, signal?: AbortSignal, settleMs = 0): Promise<Links> {
  const qmpSock = await connectUnix(path.join(dir, 'qmp.sock'), signal, settleMs);
  const qmp = new Qmp(qmpSock);
  try {
    await withTimeout(qmp.handshake(), QMP_TIMEOUT_MS, 'QMP');
  } catch (err) {
    qmpSock.destroy();
    throw err;
  }
  const consoleSock = await connectUnix(path.join(dir, 'con.sock'), signal, settleMs).catch(() => undefined);
  return { qmp, qmpSock, consoleSock };
}

/** The sandbox driver of the microvm backend. */
export class MicrovmSandboxDriver implements SandboxDriver {
  readonly capabilities: SandboxCapabilities = { pause: true, reattach: true, pty: true, preview: true };
  readonly defaultImage = 'minimal';
  readonly #ctx: BackendContext;
  readonly #deps: MicrovmSandboxDeps;
  readonly #root: string;
  /** `vulcan-sbx-<8 hex of the data dir>-`: two servers on one host never reap each other's VMs. */
  readonly #tagPrefix: string;
  readonly #live = new Set<MicrovmSandbox>();
  #bundleDisk: Promise<string> | undefined;

  constructor(ctx: BackendContext, deps: MicrovmSandboxDeps) {
    this.#ctx = ctx;
    this.#deps = deps;
    this.#root = path.join(ctx.config.dataDir, 'microvm', 'sbx');
    this.#tagPrefix = `vulcan-sbx-${crypto.createHash('sha256').update(ctx.config.dataDir).digest('hex').slice(0, 8)}-`;
  }

  /** The agent bundle as a read-only erofs disk, made once per bundle digest. */
  #agentDisk(): Promise<string> {
    this.#bundleDisk ??= (async () => {
      const bundle = ensureAgentBundle(this.#ctx.config.dataDir, this.#ctx.config.installDir);
      const dir = path.join(this.#ctx.config.dataDir, 'microvm', 'agent-disks');
      const out = path.join(dir, `${bundle.digest}.erofs`);
      if (fs.existsSync(out)) return out;
      await fsp.mkdir(dir, { recursive: true });
      const stage = await fsp.mkdtemp(path.join(dir, '.stage-'));
      const tmp = `${out}.${crypto.randomBytes(4).toString('hex')}.tmp`;
      try {
        // mkdtemp makes 0700: the disk's root directory must let uid 1000 in.
        await fsp.chmod(stage, 0o755);
        await fsp.cp(bundle.dir, stage, { recursive: true });
        // The guest agent reads how to start the Node agent from here (NUL-separated argv).
        await fsp.writeFile(path.join(stage, '.vulcan-argv'), `${agentArgv(AGENT_MOUNT).join('\0')}\0`, { mode: 0o644 });
        await run('mkfs.erofs', ['--quiet', '-T0', '--all-root', tmp, stage], { timeout: 300_000 });
        await fsp.rename(tmp, out);
      } catch (err) {
        await fsp.rm(tmp, { force: true });
        throw new Error(`cannot pack the sandbox agent into a disk: ${(err as Error).message}`, { cause: err });
      } finally {
        await fsp.rm(stage, { recursive: true, force: true });
      }
      return out;
    })();
    this.#bundleDisk.catch(() => (this.#bundleDisk = undefined));
    return this.#bundleDisk;
  }

  async create(spec: SandboxSpec, signal: AbortSignal): Promise<SandboxHandle> {
    const { artifacts, accel } = await this.#deps.prepare();
    const [rootDisk, agentDisk] = await Promise.all([this.#deps.rootDisk(spec.image), this.#agentDisk()]);
    signal.throwIfAborted();
    const dir = path.join(this.#root, spec.id);
    if (path.join(dir, 'mux.sock').length > MAX_SOCKET_PATH) throw new Error(`${dir} is too long for a unix socket path; use a shorter --data-dir`);
    if (dir.includes(',')) throw new Error(`the data dir ${dir} contains a comma, which QEMU's options cannot carry; use another --data-dir`);
    await fsp.mkdir(dir, { recursive: true, mode: 0o700 });
    const tag = `${this.#tagPrefix}${spec.id}`;
    let child: ChildProcess | undefined;
    let pidStart: string | undefined;
    let links: Links | undefined;
    let mux: ChannelMux | undefined;
    try {
      const vcpus = Math.max(1, Math.min(Math.ceil(spec.limits.cpus), os.availableParallelism()));
      const argv = qemuArgs(
        {
          id: tag.slice('vulcan-'.length),
          dir,
          kernelPath: artifacts.kernelPath,
          initramfsPath: artifacts.initramfsPath,
          rootDiskPath: rootDisk,
          memMB: spec.limits.memMB + SANDBOX_MEM_OVERHEAD_MB,
          vcpus,
          kernelArgs: ['vulcan_mode=sandbox', `vulcan_disk_mb=${spec.limits.diskMB}`, `vulcan_mem_mb=${spec.limits.memMB}`, `vulcan_pids_max=${spec.limits.pidsMax}`],
          extraDisks: [{ path: agentDisk, serial: BUNDLE_SERIAL }],
        },
        accel,
        baseKernelArgs(accel),
        { agent: path.join(dir, 'mux.sock'), qmp: path.join(dir, 'qmp.sock'), console: path.join(dir, 'con.sock'), listen: true },
      );
      const log = fs.openSync(path.join(dir, 'qemu.log'), 'a', 0o600);
      try {
        // Its own session, no pipes to us: the VM outlives the server (restart reconciliation).
        child = spawn(QEMU_BINARY, argv, { stdio: ['ignore', log, log], detached: true, cwd: '/', env: {} });
      } finally {
        fs.closeSync(log);
      }
      const spawned = child;
      const pid = await new Promise<number>((resolve, reject) => {
        if (spawned.pid !== undefined) resolve(spawned.pid);
        spawned.once('error', (err) => reject(new Error(`cannot start ${QEMU_BINARY}: ${err.message}`)));
      });
      child.unref();
      pidStart = procStat(pid)?.start;
      if (!pidStart) throw new Error('QEMU exited at once');
      await fsp.writeFile(path.join(dir, 'vm.json'), JSON.stringify({ id: spec.id, pid, pidStart, tag }), { mode: 0o600 });
      const exited = new Promise<never>((_, reject) => {
        spawned.once('exit', (code, sig) => {
          let tail = '';
          try {
            tail = fs.readFileSync(path.join(dir, 'qemu.log'), 'utf8').slice(-400).trim();
          } catch {
            // no log
          }
          reject(new Error(`QEMU exited while the sandbox started (${sig ?? `code ${String(code)}`})${tail ? `: ${tail}` : ''}`));
        });
      });
      exited.catch(() => undefined);
      const deadline = performance.now() + AGENT_START_TIMEOUT_MS;
      const startSignal = AbortSignal.any([signal, AbortSignal.timeout(AGENT_START_TIMEOUT_MS)]);
      for (let t0 = performance.now(); !['qmp.sock', 'mux.sock', 'con.sock'].every((f) => fs.existsSync(path.join(dir, f))); ) {
        if (performance.now() - t0 > SOCKET_WAIT_MS) throw new Error(`QEMU did not create its sockets within ${SOCKET_WAIT_MS} ms`);
        await Promise.race([exited, sleep(20)]);
      }
      links = await Promise.race([exited, link(dir, startSignal, SOCKET_SETTLE_MS)]);
      const consoleText: Buffer[] = [];
      links.consoleSock?.on('data', (c: Buffer) => {
        consoleText.push(c);
        if (consoleText.length > 64) consoleText.shift();
      });
      const tail = () => Buffer.concat(consoleText).toString('utf8').trim().split('\n').slice(-5).join(' | ');
      try {
        mux = await Promise.race([exited, handshake(dir, deadline, startSignal, SOCKET_SETTLE_MS)]);
        for (;;) {
          try {
            await Promise.race([exited, ping(mux, 5_000)]);
            break;
          } catch (err) {
            if ((err as Error).message.startsWith('QEMU exited') || startSignal.aborted || mux.agentExit !== undefined) throw err;
            await sleep(200);
          }
        }
      } catch (err) {
        const t = tail();
        throw new Error(`the sandbox VM did not come up: ${(err as Error).message}${t ? ` (console: ${t})` : ''}`, { cause: err });
      }
      const sb = new MicrovmSandbox(spec.id, { pid, pidStart, tag, dir }, links, child);
      sb.adoptMux(Promise.resolve(mux));
      this.#track(sb);
      return sb;
    } catch (err) {
      mux?.close();
      links?.qmpSock.destroy();
      links?.consoleSock?.destroy();
      if (child?.pid !== undefined && pidStart) await killAndWait(child.pid, pidStart);
      else child?.kill('SIGKILL');
      await fsp.rm(dir, { recursive: true, force: true });
      throw err;
    }
  }

  #track(sb: MicrovmSandbox): void {
    this.#live.add(sb);
    void sb.died.then(() => this.#live.delete(sb));
  }

  async attach(id: string, persisted: Readonly<Record<string, unknown>>, _limits: SandboxLimits, paused: boolean): Promise<AttachResult> {
    if (!isPersisted(persisted) || persisted.tag !== `${this.#tagPrefix}${id}` || path.dirname(persisted.dir) !== this.#root) {
      return { ok: false, reason: 'its record has no VM information' };
    }
    const p = persisted;
    if (!isOurQemu(p.pid, p.pidStart, p.tag)) {
      await fsp.rm(p.dir, { recursive: true, force: true });
      return { ok: false, reason: 'its VM was gone when the server restarted' };
    }
    let links: Links | undefined;
    let mux: ChannelMux | undefined;
    try {
      links = await link(p.dir, AbortSignal.timeout(ATTACH_TIMEOUT_MS));
      const status = (await withTimeout(links.qmp.execute('query-status'), QMP_TIMEOUT_MS, 'QMP query-status')) as { status?: string };
      const sb = new MicrovmSandbox(id, p, links, undefined);
      if (status.status === 'paused' || paused) {
        // A stopped guest cannot answer HELLO: the channel is made on resume.
        if (!paused) await sb.resume();
      } else {
        mux = await handshake(p.dir, performance.now() + ATTACH_TIMEOUT_MS);
        await ping(mux, ATTACH_TIMEOUT_MS);
        sb.adoptMux(Promise.resolve(mux));
      }
      this.#track(sb);
      return { ok: true, handle: sb };
    } catch (err) {
      mux?.close();
      links?.qmpSock.destroy();
      links?.consoleSock?.destroy();
      await killAndWait(p.pid, p.pidStart);
      await fsp.rm(p.dir, { recursive: true, force: true });
      return { ok: false, reason: `its VM did not answer after the restart: ${(err as Error).message}` };
    }
  }

  async reapOrphans(keep: ReadonlySet<string>): Promise<string[]> {
    const removed: string[] = [];
    const dirs = await fsp.readdir(this.#root).catch(() => [] as string[]);
    for (const d of dirs) {
      if (keep.has(d)) continue;
      const dir = path.join(this.#root, d);
      try {
        const meta = JSON.parse(await fsp.readFile(path.join(dir, 'vm.json'), 'utf8')) as { pid?: unknown; pidStart?: unknown; tag?: unknown };
        if (typeof meta.pid === 'number' && typeof meta.pidStart === 'string' && meta.tag === `${this.#tagPrefix}${d}` && isOurQemu(meta.pid, meta.pidStart, meta.tag)) {
          await killAndWait(meta.pid, meta.pidStart);
          removed.push(`VM ${d} (pid ${meta.pid})`);
        }
      } catch {
        // no vm.json: a start that died early
      }
      await fsp.rm(dir, { recursive: true, force: true });
      removed.push(`directory ${dir}`);
    }
    // QEMUs of this data dir whose directory is gone.
    for (const entry of await fsp.readdir('/proc').catch(() => [] as string[])) {
      if (!/^\d+$/.test(entry)) continue;
      const pid = Number(entry);
      let argv: string[];
      try {
        argv = fs.readFileSync(`/proc/${pid}/cmdline`, 'latin1').split('\0');
      } catch {
        continue;
      }
      const i = argv.indexOf('-name');
      const name = i >= 0 ? argv[i + 1] : undefined;
      if (!name?.startsWith(this.#tagPrefix) || keep.has(name.slice(this.#tagPrefix.length))) continue;
      const st = procStat(pid);
      if (st) {
        await killAndWait(pid, st.start);
        removed.push(`VM ${name} (pid ${pid})`);
      }
    }
    return removed;
  }

  /** Stops watching; the VMs keep running for the next server process. */
  close(): void {
    for (const sb of this.#live) sb.detach();
    this.#live.clear();
  }
}
