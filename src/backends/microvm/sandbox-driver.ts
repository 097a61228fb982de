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
 * - **Pause** stops the vCPUs (QMP `stop`), saves RAM and devices to `snapshot.vmstate`
 *   (qemu.ts `saveVmState`) and ends QEMU: a paused sandbox holds no host RAM. Resume starts
 *   the same argv with `-incoming defer`, loads the file, `cont`s, says HELLO again and pings
 *   the agent: processes and memory (tmpfs included) are as they were. When the save fails,
 *   the guest stays stopped in its live QEMU (a plain `stop`) and a warning is logged.
 *
 * Everything lives in `<dataDir>/microvm/sbx/<id>/` (sockets, `qemu.pid`, `vm.json`,
 * `qemu.log`, the snapshot while paused); destroy kills QEMU and removes it.
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
import type { BackendContext, Logger } from '../../core/context.js';
import { VulcanError } from '../../core/errors.js';
import type { AttachResult, SandboxCapabilities, SandboxDriver, SandboxHandle, SandboxLimits, SandboxSpec } from '../../core/sandbox.js';
import { AGENT_MOUNT, agentArgv, ensureAgentBundle } from '../../sandboxes/agent-bundle.js';
import { readReply, sendRequest } from '../../sandboxes/protocol.js';
import type { GuestArtifacts } from './artifacts.js';
import { ChannelMux } from './mux.js';
import { baseKernelArgs, loadVmState, MIGRATION_SOCKET, Qmp, QEMU_BINARY, qemuArgs, saveVmState } from './qemu.js';
import type { Accel } from './vmm.js';
import { sha256 } from '../../core/hash.js';

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

/** Connections to a live VM's sockets (made on create, again on attach and resume). */
interface Links {
  readonly qmp: Qmp;
  readonly qmpSock: net.Socket;
  readonly consoleSock: net.Socket | undefined;
}

/** One running QEMU of a sandbox. A sandbox paused to disk has none. */
interface Vm {
  readonly pid: number;
  readonly pidStart: string;
  readonly links: Links;
  /** Set when this server process started it: its exit is the death signal (else polled). */
  readonly child: ChildProcess | undefined;
}

/**
 * `vm.json` in the sandbox's directory: the QEMU now running (or last run) and how to start
 * it again. The manager stores `persisted` only at create, so after a resume the pid here is
 * the one to trust.
 */
interface VmMeta {
  readonly id: string;
  readonly pid: number;
  readonly pidStart: string;
  readonly tag: string;
  /** QEMU's argv at create; a resume starts the same machine with `-incoming defer` added. */
  readonly argv?: readonly string[];
  /** The read-only disk images the VM has open (root, agent bundle). */
  readonly disks?: readonly string[];
}

/** The saved VM state of a sandbox paused to disk (RAM + devices). */
const SNAPSHOT_STATE = 'snapshot.vmstate';
/** Written last, once the state file is whole: its presence means the snapshot is usable. */
const SNAPSHOT_META = 'snapshot.json';
/** The state file while QEMU is still streaming it (qemu.ts `saveVmState`). */
const SNAPSHOT_PART = `${SNAPSHOT_STATE}.part`;
/** Saving guest RAM under TCG on a loaded host: generous. */
const SAVE_TIMEOUT_MS = 180_000;
/** Loading the state, `cont`, HELLO and ping after a resume. */
const RESTORE_TIMEOUT_MS = 120_000;
/** One HELLO attempt after a restore; a guest that held half a frame of the old host needs a second. */
const RESTORE_HELLO_ATTEMPT_MS = 10_000;

/** What `snapshot.json` records. */
interface SnapshotMeta {
  readonly bytes: number;
  readonly saveMs: number;
  readonly savedAt: number;
  /** size:mtime:inode of each disk at save time: a disk that changed cannot be resumed on. */
  readonly disks: Readonly<Record<string, string>>;
}

async function readVmMeta(dir: string): Promise<VmMeta | undefined> {
  try {
    const m = JSON.parse(await fsp.readFile(path.join(dir, 'vm.json'), 'utf8')) as Record<string, unknown>;
    if (typeof m.id !== 'string' || typeof m.pid !== 'number' || typeof m.pidStart !== 'string' || typeof m.tag !== 'string') return undefined;
    const argv = Array.isArray(m.argv) && m.argv.every((a) => typeof a === 'string') ? m.argv : undefined;
    const disks = Array.isArray(m.disks) && m.disks.every((a) => typeof a === 'string') ? m.disks : undefined;
    return { id: m.id, pid: m.pid, pidStart: m.pidStart, tag: m.tag, argv, disks };
  } catch {
    return undefined;
  }
}

async function writeJsonAtomic(file: string, value: unknown): Promise<void> {
  const tmp = `${file}.tmp`;
  await fsp.writeFile(tmp, JSON.stringify(value), { mode: 0o600 });
  await fsp.rename(tmp, file);
}

async function diskIdentity(disks: readonly string[]): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  for (const d of disks) {
    const st = await fsp.stat(d);
    out[d] = `${st.size}:${st.mtimeMs}:${st.ino}`;
  }
  return out;
}

/** The usable snapshot in `dir`, or undefined. */
async function readSnapshot(dir: string): Promise<SnapshotMeta | undefined> {
  try {
    const m = JSON.parse(await fsp.readFile(path.join(dir, SNAPSHOT_META), 'utf8')) as SnapshotMeta;
    await fsp.access(path.join(dir, SNAPSHOT_STATE));
    return m;
  } catch {
    return undefined;
  }
}

async function removeSnapshot(dir: string): Promise<void> {
  // The marker goes first: a state file without it is never mistaken for a whole snapshot.
  for (const f of [SNAPSHOT_META, `${SNAPSHOT_META}.tmp`, SNAPSHOT_STATE, SNAPSHOT_PART]) await fsp.rm(path.join(dir, f), { force: true }).catch(() => undefined);
}

/**
 * Starts a sandbox's QEMU from `argv` (detached, in its own session, listening on its
 * sockets) and brings it to an agent that answers `ping`. With `restoreFrom`, QEMU starts
 * with `-incoming defer`, loads that state file (fd 3), and `cont`s the guest it restored.
 * On failure nothing of this start is left running; the directory is kept.
 */
async function startVm(
  dir: string,
  meta: Omit<VmMeta, 'pid' | 'pidStart'> & { readonly argv: readonly string[] },
  opts: { readonly restoreFrom?: string; readonly signal: AbortSignal; readonly timeoutMs: number },
): Promise<{ vm: Vm; mux: ChannelMux }> {
  let child: ChildProcess | undefined;
  let pidStart: string | undefined;
  let links: Links | undefined;
  let mux: ChannelMux | undefined;
  const consoleText: Buffer[] = [];
  const tail = () => Buffer.concat(consoleText).toString('utf8').trim().split('\n').slice(-5).join(' | ');
  try {
    // Sockets of an earlier QEMU would accept nothing: wait for the new ones.
    for (const f of ['qmp.sock', 'mux.sock', 'con.sock', MIGRATION_SOCKET]) await fsp.rm(path.join(dir, f), { force: true });
    const log = fs.openSync(path.join(dir, 'qemu.log'), 'a', 0o600);
    let stateFd: number | undefined;
    try {
      if (opts.restoreFrom) stateFd = fs.openSync(opts.restoreFrom, 'r');
      const argv = opts.restoreFrom ? [...meta.argv, '-incoming', 'defer'] : [...meta.argv];
      // Its own session, no pipes to us: the VM outlives the server (restart reconciliation).
      // fd 3 is the state to load (loadVmState), so QEMU needs no helper process.
      child = spawn(QEMU_BINARY, argv, { stdio: ['ignore', log, log, ...(stateFd === undefined ? [] : [stateFd])], detached: true, cwd: '/', env: {} });
    } finally {
      fs.closeSync(log);
      if (stateFd !== undefined) fs.closeSync(stateFd);
    }
    const spawned = child;
    const pid = await new Promise<number>((resolve, reject) => {
      if (spawned.pid !== undefined) resolve(spawned.pid);
      spawned.once('error', (err) => reject(new Error(`cannot start ${QEMU_BINARY}: ${err.message}`)));
    });
    child.unref();
    pidStart = procStat(pid)?.start;
    if (!pidStart) throw new Error('QEMU exited at once');
    await writeJsonAtomic(path.join(dir, 'vm.json'), { ...meta, pid, pidStart } satisfies VmMeta);
    const exited = new Promise<never>((_, reject) => {
      spawned.once('exit', (code, sig) => {
        let log = '';
        try {
          log = fs.readFileSync(path.join(dir, 'qemu.log'), 'utf8').slice(-400).trim();
        } catch {
          // no log
        }
        reject(new Error(`QEMU exited (${sig ?? `code ${String(code)}`})${log ? `: ${log}` : ''}`));
      });
    });
    exited.catch(() => undefined);
    const deadline = performance.now() + opts.timeoutMs;
    const signal = AbortSignal.any([opts.signal, AbortSignal.timeout(opts.timeoutMs)]);
    for (let t0 = performance.now(); !['qmp.sock', 'mux.sock', 'con.sock'].every((f) => fs.existsSync(path.join(dir, f))); ) {
      if (performance.now() - t0 > SOCKET_WAIT_MS) throw new Error(`QEMU did not create its sockets within ${SOCKET_WAIT_MS} ms`);
      signal.throwIfAborted();
      await Promise.race([exited, sleep(20)]);
    }
    links = await Promise.race([exited, link(dir, signal, SOCKET_SETTLE_MS)]);
    links.consoleSock?.on('data', (c: Buffer) => {
      consoleText.push(c);
      if (consoleText.length > 64) consoleText.shift();
    });
    if (opts.restoreFrom) {
      const status = await Promise.race([exited, loadVmState(links.qmp, { wait: true, signal })]);
      if (status !== 'paused' && status !== 'running') throw new Error(`the restored VM is ${status ?? 'in an unknown state'}, not paused`);
      if (status === 'paused') await withTimeout(links.qmp.execute('cont'), QMP_TIMEOUT_MS, 'QMP cont');
    }
    // A restored guest may still hold half a frame of the host before the pause: a fresh
    // connection (the guest sees the port close and reopen) and a new HELLO resynchronise it.
    for (;;) {
      const attemptEnd = opts.restoreFrom ? Math.min(deadline, performance.now() + RESTORE_HELLO_ATTEMPT_MS) : deadline;
      try {
        mux = await Promise.race([exited, handshake(dir, attemptEnd, signal, SOCKET_SETTLE_MS)]);
        break;
      } catch (err) {
        if ((err as Error).message.startsWith('QEMU exited') || signal.aborted || attemptEnd >= deadline) throw err;
      }
    }
    for (;;) {
      try {
        await Promise.race([exited, ping(mux, 5_000)]);
        break;
      } catch (err) {
        if ((err as Error).message.startsWith('QEMU exited') || signal.aborted || mux.agentExit !== undefined) throw err;
        await sleep(200);
      }
    }
    return { vm: { pid, pidStart, links, child }, mux };
  } catch (err) {
    mux?.close();
    links?.qmpSock.destroy();
    links?.consoleSock?.destroy();
    if (child?.pid !== undefined && pidStart) await killAndWait(child.pid, pidStart);
    else child?.kill('SIGKILL');
    const t = tail();
    throw new Error(`${(err as Error).message}${t ? ` (console: ${t})` : ''}`, { cause: err });
  }
}

class MicrovmSandbox implements SandboxHandle {
  readonly died: Promise<string>;
  #resolveDied: (reason: string) => void = () => undefined;
  #destroying: Promise<void> | undefined;
  /** Aborted by destroy: a pause or resume in flight gives up. */
  readonly #abort = new AbortController();
  /** Pause and resume run one at a time. */
  #op: Promise<unknown> = Promise.resolve();
  #poll: NodeJS.Timeout | undefined;
  #mux: Promise<ChannelMux> | undefined;
  #console: Buffer[] = [];
  #consoleBytes = 0;
  /** The running QEMU; undefined while paused to disk. */
  #vm: Vm | undefined;
  /** The guest is stopped in a live QEMU (QMP `stop`): the fallback, or re-attached so. */
  #stopped = false;
  #last: { pid: number; pidStart: string };

  constructor(
    readonly id: string,
    private readonly meta: { readonly tag: string; readonly dir: string; readonly argv?: readonly string[]; readonly disks?: readonly string[] },
    vm: Vm | undefined,
    last: { pid: number; pidStart: string },
    private readonly log: Logger,
  ) {
    this.died = new Promise((resolve) => (this.#resolveDied = resolve));
    this.#last = last;
    if (vm) this.#watch(vm);
  }

  get persisted(): Readonly<Record<string, unknown>> {
    return { pid: this.#last.pid, pidStart: this.#last.pidStart, tag: this.meta.tag, dir: this.meta.dir };
  }

  /** Makes `vm` the running QEMU and watches it. */
  #watch(vm: Vm): void {
    this.#vm = vm;
    this.#last = { pid: vm.pid, pidStart: vm.pidStart };
    vm.links.consoleSock?.on('data', (chunk: Buffer) => {
      this.#console.push(chunk);
      this.#consoleBytes += chunk.length;
      while (this.#consoleBytes > CONSOLE_TAIL_BYTES && this.#console.length > 1) this.#consoleBytes -= this.#console.shift()?.length ?? 0;
    });
    clearInterval(this.#poll);
    if (vm.child) {
      vm.child.once('exit', (code, signal) => {
        if (this.#vm === vm) this.#die(`its VM exited (${signal ?? `code ${String(code)}`})${this.#tail()}`);
      });
    } else {
      this.#poll = setInterval(() => {
        if (this.#vm === vm && !isOurQemu(vm.pid, vm.pidStart, this.meta.tag)) this.#die('its VM is gone');
      }, LIVENESS_POLL_MS);
      this.#poll.unref();
    }
  }

  /** Stops watching `vm`, drops its connections and kills it (the sandbox is on disk now). */
  async #retire(vm: Vm): Promise<void> {
    this.#vm = undefined;
    clearInterval(this.#poll);
    const mux = this.#mux;
    this.#mux = undefined;
    void mux?.then((m) => m.close(), () => undefined);
    vm.links.qmpSock.destroy();
    vm.links.consoleSock?.destroy();
    await killAndWait(vm.pid, vm.pidStart);
    for (const f of ['qmp.sock', 'mux.sock', 'con.sock', 'qemu.pid']) await fsp.rm(path.join(this.meta.dir, f), { force: true });
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
        m.onAgentExit((status) => {
          if (this.#mux === mux) this.#die(`the sandbox agent exited (wait status ${status})${this.#tail()}`);
        });
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
    if (!this.#mux) throw new Error(this.#vm ? 'the sandbox is paused since the server restarted; resume it first' : 'the sandbox is paused to disk; resume it first');
    const mux = await this.#mux;
    return mux.open(signal);
  }

  #serial<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.#op.then(() => {
      if (this.#destroying) throw new Error(`sandbox ${this.id} is being destroyed`);
      return fn();
    });
    this.#op = run.catch(() => undefined);
    return run;
  }

  /**
   * Stops the guest, saves RAM and devices to `snapshot.vmstate` and ends QEMU, so a paused
   * sandbox holds no host RAM. When the save fails (disk full, …) the guest stays stopped in
   * its live QEMU, as a plain QMP `stop`, and a warning is logged: pause never fails for want
   * of disk.
   */
  pause(): Promise<void> {
    return this.#serial(async () => {
      const vm = this.#vm;
      if (!vm || this.#stopped) return;
      const dir = this.meta.dir;
      const t0 = performance.now();
      let snap: SnapshotMeta;
      try {
        if (!this.meta.argv || !this.meta.disks) throw new Error('its record has no QEMU command line (made by an older server)');
        const signal = AbortSignal.any([this.#abort.signal, AbortSignal.timeout(SAVE_TIMEOUT_MS)]);
        const bytes = await saveVmState(vm.links.qmp, { file: path.join(dir, SNAPSHOT_PART), socketPath: path.join(dir, MIGRATION_SOCKET) }, signal);
        await fsp.rename(path.join(dir, SNAPSHOT_PART), path.join(dir, SNAPSHOT_STATE));
        snap = { bytes, saveMs: Math.round(performance.now() - t0), savedAt: Date.now(), disks: await diskIdentity(this.meta.disks) };
        await writeJsonAtomic(path.join(dir, SNAPSHOT_META), snap);
      } catch (err) {
        await removeSnapshot(dir);
        if (this.#abort.signal.aborted) throw err;
        // saveVmState stops the guest first; make sure it is stopped whatever failed.
        await withTimeout(vm.links.qmp.execute('stop'), QMP_TIMEOUT_MS, 'QMP stop');
        this.#stopped = true;
        this.log.warn({ sandbox: this.id, err: (err as Error).message }, 'microvm: cannot save a paused sandbox to disk; it stays paused in memory (QMP stop)');
        return;
      }
      await this.#retire(vm);
      this.log.info({ sandbox: this.id, bytes: snap.bytes, ms: Math.round(performance.now() - t0) }, 'microvm: sandbox paused to disk');
    });
  }

  /**
   * Continues a guest stopped in memory, or starts QEMU again from the snapshot (the same
   * argv, `-incoming defer`), `cont`s it, says HELLO and pings the agent, then deletes the
   * snapshot. A failed resume kills what it started and keeps the snapshot for a retry.
   */
  resume(): Promise<void> {
    return this.#serial(async () => {
      const dir = this.meta.dir;
      const vm = this.#vm;
      if (vm) {
        await withTimeout(vm.links.qmp.execute('cont'), QMP_TIMEOUT_MS, 'QMP cont');
        this.#stopped = false;
        if (!this.#mux) {
          // Re-attached while paused: the guest could not answer HELLO until now.
          const mux = handshake(dir, performance.now() + ATTACH_TIMEOUT_MS);
          this.adoptMux(mux);
          await mux;
        }
        await removeSnapshot(dir);
        return;
      }
      const t0 = performance.now();
      try {
        const snap = await readSnapshot(dir);
        if (!snap) throw new Error(`its snapshot (${path.join(dir, SNAPSHOT_STATE)}) is missing`);
        if (!this.meta.argv || !this.meta.disks) throw new Error('its record has no QEMU command line');
        const now = await diskIdentity(this.meta.disks).catch((err: Error) => ({ error: err.message }));
        for (const [d, id] of Object.entries(snap.disks)) {
          if ((now as Record<string, string>)[d] !== id) throw new Error(`the disk ${d} changed or is gone since the pause, and the saved guest expects the old one`);
        }
        const { vm: started, mux } = await startVm(dir, { id: this.id, tag: this.meta.tag, argv: this.meta.argv, disks: this.meta.disks }, {
          restoreFrom: path.join(dir, SNAPSHOT_STATE),
          signal: this.#abort.signal,
          timeoutMs: RESTORE_TIMEOUT_MS,
        });
        this.#watch(started);
        this.adoptMux(Promise.resolve(mux));
      } catch (err) {
        throw new VulcanError(
          'backend_unavailable',
          `cannot resume sandbox ${this.id} from its snapshot: ${(err as Error).message}. Nothing of the attempt is left running and the snapshot is kept: resume again, or destroy the sandbox`,
          { details: { id: this.id }, cause: err },
        );
      }
      await removeSnapshot(dir);
      this.log.info({ sandbox: this.id, ms: Math.round(performance.now() - t0) }, 'microvm: sandbox resumed from disk');
    });
  }

  /** Records that the re-attached guest is stopped in its live QEMU (resume is `cont`). */
  markStopped(): Promise<void> {
    return this.#serial(() => {
      this.#stopped = true;
      return Promise.resolve();
    });
  }

  /** Stops watching and drops the connections; the VM (or its snapshot) lives on (the server is closing). */
  detach(): void {
    clearInterval(this.#poll);
    const mux = this.#mux;
    this.#mux = undefined;
    void mux?.then((m) => m.close(), () => undefined);
    this.#vm?.links.qmpSock.destroy();
    this.#vm?.links.consoleSock?.destroy();
  }

  destroy(): Promise<void> {
    this.#destroying ??= (async () => {
      this.#abort.abort();
      await this.#op;
      clearInterval(this.#poll);
      const vm = this.#vm;
      if (vm) await killAndWait(vm.pid, vm.pidStart);
      // A start cut short may have left a QEMU that never became #vm.
      const meta = await readVmMeta(this.meta.dir);
      if (meta && meta.tag === this.meta.tag && isOurQemu(meta.pid, meta.pidStart, meta.tag)) await killAndWait(meta.pid, meta.pidStart);
      void this.#mux?.then((m) => m.close(), () => undefined);
      vm?.links.qmpSock.destroy();
      vm?.links.consoleSock?.destroy();
      await fsp.rm(this.meta.dir, { recursive: true, force: true });
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
    this.#tagPrefix = `vulcan-sbx-${sha256(ctx.config.dataDir).slice(0, 8)}-`;
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
      const meta = { id: spec.id, tag, argv, disks: [rootDisk, agentDisk] };
      let started: { vm: Vm; mux: ChannelMux };
      try {
        started = await startVm(dir, meta, { signal, timeoutMs: AGENT_START_TIMEOUT_MS });
      } catch (err) {
        throw new Error(`the sandbox VM did not come up: ${(err as Error).message}`, { cause: err });
      }
      const sb = new MicrovmSandbox(spec.id, { tag, dir, argv, disks: meta.disks }, started.vm, started.vm, this.#ctx.log);
      sb.adoptMux(Promise.resolve(started.mux));
      this.#track(sb);
      return sb;
    } catch (err) {
      await fsp.rm(dir, { recursive: true, force: true });
      throw err;
    }
  }

  #track(sb: MicrovmSandbox): void {
    this.#live.add(sb);
    void sb.died.then(() => this.#live.delete(sb));
  }

  /**
   * Re-attaches a sandbox after a restart. Its live QEMU (the pid in `vm.json`, checked by
   * start time and `-name` tag) is reconnected; a sandbox paused to disk has no QEMU and
   * comes back paused from its snapshot (resumed at once when its record says running).
   * With neither, it is lost.
   */
  async attach(id: string, persisted: Readonly<Record<string, unknown>>, _limits: SandboxLimits, paused: boolean): Promise<AttachResult> {
    // The id names a directory that may be removed: never `.`, `..` or anything with a slash.
    if (!/^[A-Za-z0-9_-]+$/.test(id) || !isPersisted(persisted) || persisted.tag !== `${this.#tagPrefix}${id}` || path.dirname(persisted.dir) !== this.#root || path.basename(persisted.dir) !== id) {
      return { ok: false, reason: 'its record has no VM information' };
    }
    const dir = persisted.dir;
    const tag = persisted.tag;
    // vm.json names the QEMU now running: a resume starts a new one after the record was made.
    const meta = await readVmMeta(dir);
    const cur = meta && meta.tag === tag ? meta : persisted;
    const sandboxMeta = { tag, dir, argv: meta?.argv, disks: meta?.disks };
    const lose = async (reason: string): Promise<AttachResult> => {
      if (isOurQemu(cur.pid, cur.pidStart, tag)) await killAndWait(cur.pid, cur.pidStart);
      await fsp.rm(dir, { recursive: true, force: true });
      return { ok: false, reason };
    };
    if (isOurQemu(cur.pid, cur.pidStart, tag)) {
      let links: Links | undefined;
      let mux: ChannelMux | undefined;
      try {
        links = await link(dir, AbortSignal.timeout(ATTACH_TIMEOUT_MS));
        const status = ((await withTimeout(links.qmp.execute('query-status'), QMP_TIMEOUT_MS, 'QMP query-status')) as { status?: string }).status;
        if (status === 'running' || status === 'paused') {
          // A live guest wins over a snapshot (a resume that loaded it, or a pause cut short).
          await removeSnapshot(dir);
          const sb = new MicrovmSandbox(id, sandboxMeta, { pid: cur.pid, pidStart: cur.pidStart, links, child: undefined }, cur, this.#ctx.log);
          if (status === 'paused' || paused) {
            // A stopped guest cannot answer HELLO: the channel is made on resume.
            if (status === 'running') await sb.pause();
            else if (!paused) await sb.resume();
            else await sb.markStopped();
          } else {
            mux = await handshake(dir, performance.now() + ATTACH_TIMEOUT_MS);
            await ping(mux, ATTACH_TIMEOUT_MS);
            sb.adoptMux(Promise.resolve(mux));
          }
          this.#track(sb);
          return { ok: true, handle: sb };
        }
        // Mid-save (postmigrate, finish-migrate) or mid-load (inmigrate): the snapshot decides.
        links.qmpSock.destroy();
        links.consoleSock?.destroy();
        await killAndWait(cur.pid, cur.pidStart);
      } catch (err) {
        mux?.close();
        links?.qmpSock.destroy();
        links?.consoleSock?.destroy();
        return lose(`its VM did not answer after the restart: ${(err as Error).message}`);
      }
    }
    if (!(await readSnapshot(dir))) return lose('its VM was gone when the server restarted and it left no snapshot to resume from');
    const sb = new MicrovmSandbox(id, sandboxMeta, undefined, cur, this.#ctx.log);
    if (!paused) {
      try {
        await sb.resume();
      } catch (err) {
        return lose(`its VM could not be restored from its snapshot after the restart: ${(err as Error).message}`);
      }
    }
    this.#track(sb);
    return { ok: true, handle: sb };
  }

  async reapOrphans(keep: ReadonlySet<string>): Promise<string[]> {
    const removed: string[] = [];
    const dirs = await fsp.readdir(this.#root).catch(() => [] as string[]);
    for (const d of dirs) {
      if (keep.has(d)) continue;
      const dir = path.join(this.#root, d);
      const meta = await readVmMeta(dir);
      if (meta && meta.tag === `${this.#tagPrefix}${d}` && isOurQemu(meta.pid, meta.pidStart, meta.tag)) {
        await killAndWait(meta.pid, meta.pidStart);
        removed.push(`VM ${d} (pid ${meta.pid})`);
      }
      // With it goes a snapshot of a sandbox paused to disk.
      const snap = await readSnapshot(dir);
      await fsp.rm(dir, { recursive: true, force: true });
      removed.push(snap ? `directory ${dir} (with a ${snap.bytes}-byte snapshot)` : `directory ${dir}`);
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

  /** Stops watching; the VMs (and snapshots) stay for the next server process. */
  close(): void {
    for (const sb of this.#live) sb.detach();
    this.#live.clear();
  }
}
