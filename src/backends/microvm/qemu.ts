/**
 * The QEMU implementation of the VMM layer: `qemu-system-x86_64 -M microvm`, with KVM when
 * a test boot proves it works and TCG otherwise.
 *
 * Each VM gets a directory holding two unix sockets that the host listens on and QEMU
 * connects to as a client (so there is no connect-retry race): `agent.sock` behind the
 * virtio-serial port `vulcan.agent`, and, for templates only, `qmp.sock`. QEMU writes its
 * pid to `qemu.pid`; reconcile.ts uses it, with the `-name vulcan-<id>` tag, after a crash.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { pipeline } from 'node:stream/promises';
import type { Accel, VmConfig, VmExit, VmHandle, Vmm } from './vmm.js';

/** The QEMU binary; Debian's qemu-system-x86 package. */
export const QEMU_BINARY = 'qemu-system-x86_64';
/** Longest unix socket path Linux accepts (sun_path is 108 bytes, NUL included). */
const MAX_SOCKET_PATH = 107;
const CONSOLE_TAIL_BYTES = 16 * 1024;
/** How long QEMU may take to start and connect its sockets. */
const CONNECT_TIMEOUT_MS = 15_000;

/** Options of the QEMU VMM. */
export interface QemuOptions {
  readonly accel: Accel;
  /** Kernel command-line words every VM gets (console, TSC calibration, …). */
  readonly baseKernelArgs: readonly string[];
  readonly binary?: string;
}

/**
 * Kernel arguments for a guest under this host: quiet serial console, no reboot loop, and
 * under TCG the host's TSC frequency, because Linux 6.1's TSC calibration often hangs in an
 * emulated guest (see MACHINE-NOTES.md).
 */
export function baseKernelArgs(accel: Accel): string[] {
  const args = ['console=ttyS0', 'quiet', 'panic=-1', 'reboot=t', 'i8042.noaux', 'i8042.nokbd', 'nomodeset', 'random.trust_cpu=on'];
  if (accel === 'tcg') {
    const khz = hostTscKHz();
    if (khz) args.push(`tsc_early_khz=${khz}`, `lpj=${Math.round((khz * 1000) / 250)}`);
  }
  return args;
}

/** The host's TSC frequency in kHz from /proc/cpuinfo (`cpu MHz`), or null. */
export function hostTscKHz(): number | null {
  try {
    const m = /^cpu MHz\s*:\s*([\d.]+)/m.exec(fs.readFileSync('/proc/cpuinfo', 'utf8'));
    return m?.[1] ? Math.round(Number(m[1]) * 1000) : null;
  } catch {
    return null;
  }
}

function listen(socketPath: string): Promise<net.Server> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once('error', reject);
    server.listen(socketPath, () => {
      server.off('error', reject);
      resolve(server);
    });
  });
}

/** The first connection to `server`; listened for at once, so an early connect is not lost. */
function firstConnection(server: net.Server): Promise<net.Socket> {
  return new Promise((resolve) => server.once('connection', resolve));
}

function accept(conn: Promise<net.Socket>, ms: number, exited: Promise<VmExit>, what: string): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`QEMU did not connect ${what} within ${ms} ms`)), ms);
    void conn.then((sock) => {
      clearTimeout(timer);
      resolve(sock);
    });
    void exited.then((e) => {
      clearTimeout(timer);
      reject(new Error(`QEMU exited (code ${e.code}, signal ${e.signal}) before connecting ${what}`));
    });
  });
}

/**
 * Where a VM's channels go. By default the host listens and QEMU connects; with `listen`,
 * QEMU listens on each path (a VM that outlives the server, which reconnects after a
 * restart) and the serial console goes to `console` instead of QEMU's stdout.
 */
export interface QemuSockets {
  readonly agent?: string;
  readonly qmp?: string;
  readonly console?: string;
  readonly listen?: boolean;
}

/** The argv of one VM. Exported for the bench's bare-boot floor and for tests. */
export function qemuArgs(cfg: VmConfig, accel: Accel, kernelArgs: readonly string[], sockets: QemuSockets): string[] {
  const server = sockets.listen ? ',server=on,wait=off' : '';
  const args = [
    '-name', `vulcan-${cfg.id}`,
    '-M', `microvm,x-option-roms=off,isa-serial=on,rtc=on,pit=off,pic=off${cfg.memoryFile ? ',memory-backend=mem' : ''}`,
    '-accel', accel,
    ...(accel === 'kvm' ? ['-cpu', 'host'] : []),
    '-m', `${cfg.memMB}M`,
    '-smp', String(cfg.vcpus),
    '-nodefaults', '-no-user-config', '-nographic', '-no-reboot',
    ...(sockets.listen && sockets.console ? ['-chardev', `socket,id=con,path=${sockets.console}${server}`, '-serial', 'chardev:con'] : ['-serial', 'stdio']),
    '-kernel', cfg.kernelPath,
    '-initrd', cfg.initramfsPath,
    '-append', [...kernelArgs, ...cfg.kernelArgs].join(' '),
    '-pidfile', path.join(cfg.dir, 'qemu.pid'),
  ];
  if (cfg.memoryFile) {
    args.push('-object', `memory-backend-file,id=mem,size=${cfg.memMB}M,mem-path=${cfg.memoryFile.path},share=${cfg.memoryFile.shared ? 'on' : 'off'}`);
    // Without the source's run state, a clone starts running as soon as it is restored.
    args.push('-global', 'migration.store-global-state=off');
  }
  if (cfg.rootDiskPath) {
    args.push('-drive', `id=root,file=${cfg.rootDiskPath},format=raw,if=none,readonly=on,cache=unsafe,file.locking=off`);
    args.push('-device', 'virtio-blk-device,drive=root');
  }
  for (const [i, d] of (cfg.extraDisks ?? []).entries()) {
    args.push('-drive', `id=d${i},file=${d.path},format=raw,if=none,readonly=on,cache=unsafe,file.locking=off`);
    args.push('-device', `virtio-blk-device,drive=d${i},serial=${d.serial}`);
  }
  if (sockets.agent) {
    args.push('-device', 'virtio-serial-device,max_ports=2');
    args.push('-chardev', `socket,id=agent,path=${sockets.agent}${server}`);
    args.push('-device', 'virtserialport,chardev=agent,name=vulcan.agent');
  }
  if (sockets.qmp) {
    args.push('-chardev', `socket,id=qmp,path=${sockets.qmp}${server}`, '-mon', 'chardev=qmp,mode=control');
  }
  if (cfg.restoreFrom) {
    // The state is loaded over QMP once x-ignore-shared is set (start()).
    args.push('-incoming', 'defer');
  }
  // seccomp: no exec, no privilege changes once the guest runs (saveVmState needs no exec).
  args.push('-sandbox', 'on,obsolete=deny,elevateprivileges=deny,resourcecontrol=deny,spawn=deny');
  return args;
}

/** A tiny QMP client: one command at a time, events ignored. */
export class Qmp {
  #buf = '';
  #waiters: Array<{ settle: (msg: Record<string, unknown>) => void; fail: (err: Error) => void }> = [];
  #closed: Error | undefined;

  constructor(private readonly sock: net.Socket) {
    sock.setEncoding('utf8');
    // QEMU going away (killed, crashed) is reported by its exit; a command still waiting for
    // its answer fails with the connection.
    sock.on('error', () => undefined);
    sock.on('close', () => {
      this.#closed = new Error('the QMP connection closed (QEMU exited or stopped answering)');
      for (const w of this.#waiters.splice(0)) w.fail(this.#closed);
    });
    sock.on('data', (d: string) => {
      this.#buf += d;
      if (this.#buf.length > 1024 * 1024) this.sock.destroy(new Error('QMP reply too large'));
      let nl: number;
      while ((nl = this.#buf.indexOf('\n')) >= 0) {
        const line = this.#buf.slice(0, nl).trim();
        this.#buf = this.#buf.slice(nl + 1);
        if (!line) continue;
        let msg: Record<string, unknown>;
        try {
          msg = JSON.parse(line) as Record<string, unknown>;
        } catch {
          continue;
        }
        if ('event' in msg) continue;
        this.#waiters.shift()?.settle(msg);
      }
    });
  }

  /** Waits for the greeting and enters command mode. */
  async handshake(): Promise<void> {
    await this.#next(() => undefined);
    await this.execute('qmp_capabilities');
  }

  /**
   * Runs one command. Rejects with QEMU's error, when the connection closes, or when `signal`
   * aborts (the answer, when it comes, is then dropped: replies stay in order).
   */
  execute(command: string, args?: Record<string, unknown>, signal?: AbortSignal): Promise<unknown> {
    return this.#next(() => this.sock.write(`${JSON.stringify(args ? { execute: command, arguments: args } : { execute: command })}\n`), command, signal);
  }

  #next(send: () => void, command?: string, signal?: AbortSignal): Promise<unknown> {
    return new Promise((resolve, reject) => {
      if (this.#closed) return reject(this.#closed);
      if (signal?.aborted) return reject(signal.reason as Error);
      let done = false;
      const onAbort = () => {
        done = true;
        reject(signal?.reason as Error);
      };
      signal?.addEventListener('abort', onAbort, { once: true });
      this.#waiters.push({
        settle: (msg) => {
          signal?.removeEventListener('abort', onAbort);
          if (done) return;
          if ('error' in msg) reject(new Error(`QMP ${command ?? 'greeting'}: ${JSON.stringify(msg.error)}`));
          else resolve(msg.return);
        },
        fail: (err) => {
          signal?.removeEventListener('abort', onAbort);
          if (!done) reject(err);
        },
      });
      send();
    });
  }
}

/** `p`, or the signal's reason as soon as it aborts. */
function untilAborted<T>(p: Promise<T>, signal: AbortSignal): Promise<T> {
  if (signal.aborted) return Promise.reject(signal.reason as Error);
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => reject(signal.reason as Error);
    signal.addEventListener('abort', onAbort, { once: true });
    p.then(resolve, reject).finally(() => signal.removeEventListener('abort', onAbort));
  });
}

/** The unix socket a VM's state is streamed through, in the VM's directory. */
export const MIGRATION_SOCKET = 'mig.sock';
/** Migration bandwidth cap while saving a stopped guest: none worth the name (QEMU's default is 128 MiB/s). */
const SAVE_BANDWIDTH_BYTES_PER_S = 64 * 1024 ** 3;
const MIGRATION_POLL_MS = 20;

/** Where `saveVmState` writes, and the socket QEMU streams the state through. */
export interface SaveTarget {
  /** The state file; written in place, removed again when the save fails. */
  readonly file: string;
  /** A unix socket path the host listens on while QEMU sends (removed afterwards). */
  readonly socketPath: string;
}

/**
 * Stops the guest and saves its state (devices, and RAM unless `x-ignore-shared` leaves it in
 * a shared memory file) to `target.file`. Resolves with the bytes written.
 *
 * QEMU 7.2 has no `file:` migration target, `exec:` needs the seccomp `spawn` permission and
 * `fd:` needs SCM_RIGHTS, which node cannot send: so QEMU connects to a unix socket the host
 * listens on and the host writes the stream to the file. Only a paused guest is saved:
 * migrating a running TCG guest restored corrupt memory (MACHINE-NOTES.md).
 */
export async function saveVmState(qmp: Qmp, target: SaveTarget, signal: AbortSignal): Promise<number> {
  signal.throwIfAborted();
  await qmp.execute('stop', undefined, signal);
  await fs.promises.rm(target.socketPath, { force: true });
  const server = await listen(target.socketPath);
  const out = fs.createWriteStream(target.file, { mode: 0o600 });
  const opened = once(out, 'open');
  let conn: net.Socket | undefined;
  try {
    await untilAborted(opened, signal);
    const connected = firstConnection(server);
    await qmp.execute('migrate-set-parameters', { 'max-bandwidth': SAVE_BANDWIDTH_BYTES_PER_S }, signal);
    await qmp.execute('migrate', { uri: `unix:${target.socketPath}` }, signal);
    let streamed = false;
    const written = (async () => {
      conn = await connected;
      await pipeline(conn, out);
      streamed = true;
    })();
    written.catch(() => undefined);
    for (;;) {
      signal.throwIfAborted();
      const info = (await qmp.execute('query-migrate', undefined, signal)) as { status?: string; 'error-desc'?: string };
      if (info.status === 'completed') break;
      if (info.status === 'failed' || info.status === 'cancelled') throw new Error(`saving the VM state failed: ${info['error-desc'] ?? info.status}`);
      // A failed write (disk full) ends the wait at once.
      await Promise.race([new Promise((r) => setTimeout(r, MIGRATION_POLL_MS)), ...(streamed ? [] : [written])]);
    }
    // QEMU closes the stream once it is done: the file is whole when the pipeline ends.
    await untilAborted(written, signal);
    return out.bytesWritten;
  } catch (err) {
    await qmp.execute('migrate_cancel', undefined, AbortSignal.timeout(5_000)).catch(() => undefined);
    conn?.destroy();
    out.destroy();
    await fs.promises.rm(target.file, { force: true }).catch(() => undefined);
    throw err;
  } finally {
    server.close();
    await fs.promises.rm(target.socketPath, { force: true });
  }
}

/**
 * Loads a saved state into a QEMU started with `-incoming defer` whose fd 3 is the state
 * file (spawn's stdio), so no helper process is needed. With `wait`, resolves once the load
 * is complete and returns the run state it left (`paused` for a guest saved while stopped).
 */
export async function loadVmState(qmp: Qmp, opts: { readonly wait: boolean; readonly signal?: AbortSignal }): Promise<string | undefined> {
  await qmp.execute('migrate-incoming', { uri: 'fd:3' }, opts.signal);
  if (!opts.wait) return undefined;
  for (;;) {
    opts.signal?.throwIfAborted();
    const st = (await qmp.execute('query-status', undefined, opts.signal)) as { status?: string };
    if (st.status !== 'inmigrate') return st.status;
    await new Promise((r) => setTimeout(r, MIGRATION_POLL_MS));
  }
}

class QemuVm implements VmHandle {
  readonly pid: number;
  readonly exited: Promise<VmExit>;
  channel!: net.Socket;
  qmp?: Qmp;
  readonly servers: net.Server[] = [];
  #console: Buffer[] = [];
  #consoleBytes = 0;
  #destroyed?: Promise<void>;

  constructor(
    readonly id: string,
    readonly dir: string,
    private readonly child: ChildProcess,
  ) {
    if (child.pid === undefined) throw new Error('QEMU did not start');
    this.pid = child.pid;
    this.exited = new Promise((resolve) => {
      child.once('exit', (code, signal) => resolve({ code, signal }));
    });
    const keep = (chunk: Buffer): void => {
      this.#console.push(chunk);
      this.#consoleBytes += chunk.length;
      while (this.#consoleBytes > CONSOLE_TAIL_BYTES && this.#console.length > 1) {
        this.#consoleBytes -= this.#console.shift()?.length ?? 0;
      }
    };
    child.stdout?.on('data', keep);
    child.stderr?.on('data', keep);
  }

  consoleTail(): string {
    return Buffer.concat(this.#console).toString('utf8').slice(-CONSOLE_TAIL_BYTES);
  }

  async saveState(file: string, signal: AbortSignal): Promise<void> {
    if (!this.qmp) throw new Error('saveState needs a VM started with control: true');
    await saveVmState(this.qmp, { file, socketPath: path.join(this.dir, MIGRATION_SOCKET) }, signal);
  }

  destroy(): Promise<void> {
    this.#destroyed ??= (async () => {
      if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill('SIGKILL');
      await this.exited;
      this.channel?.destroy();
      for (const s of this.servers) s.close();
      await fs.promises.rm(this.dir, { recursive: true, force: true });
    })();
    return this.#destroyed;
  }
}

/** QEMU `-M microvm`. */
export class QemuVmm implements Vmm {
  readonly name = 'qemu';
  readonly accel: Accel;
  readonly #binary: string;
  readonly #kernelArgs: readonly string[];

  constructor(options: QemuOptions) {
    this.accel = options.accel;
    this.#binary = options.binary ?? QEMU_BINARY;
    this.#kernelArgs = options.baseKernelArgs;
  }

  async start(cfg: VmConfig, signal: AbortSignal): Promise<VmHandle> {
    await fs.promises.mkdir(cfg.dir, { recursive: true, mode: 0o700 });
    const agentPath = path.join(cfg.dir, 'agent.sock');
    const qmpPath = path.join(cfg.dir, 'qmp.sock');
    if (qmpPath.length > MAX_SOCKET_PATH) throw new Error(`VM directory ${cfg.dir} is too long for a unix socket path; use a shorter --data-dir`);
    const agentServer = await listen(agentPath);
    const control = cfg.control === true || cfg.restoreFrom !== undefined;
    const qmpServer = control ? await listen(qmpPath) : undefined;
    const agentConn = firstConnection(agentServer);
    const qmpConn = qmpServer ? firstConnection(qmpServer) : undefined;
    let stateFd: number | undefined;
    let vm: QemuVm | undefined;
    try {
      if (cfg.restoreFrom) stateFd = fs.openSync(cfg.restoreFrom, 'r');
      const argv = qemuArgs(cfg, this.accel, this.#kernelArgs, { agent: agentPath, qmp: control ? qmpPath : undefined });
      const child = spawn(this.#binary, argv, {
        stdio: ['ignore', 'pipe', 'pipe', ...(stateFd === undefined ? [] : [stateFd])],
        detached: false,
      });
      if (child.pid === undefined) {
        const [err] = (await once(child, 'error')) as [Error];
        throw new Error(`cannot start ${this.#binary}: ${err.message}`);
      }
      vm = new QemuVm(cfg.id, cfg.dir, child);
      vm.servers.push(agentServer, ...(qmpServer ? [qmpServer] : []));
      await fs.promises.writeFile(path.join(cfg.dir, 'vm.json'), JSON.stringify({ id: cfg.id, pid: child.pid, tag: `vulcan-${cfg.id}` }));
      const onAbort = (): void => void vm?.destroy();
      signal.addEventListener('abort', onAbort, { once: true });
      try {
        const [channel, qmpSock] = await Promise.all([
          accept(agentConn, CONNECT_TIMEOUT_MS, vm.exited, 'the agent channel'),
          qmpConn ? accept(qmpConn, CONNECT_TIMEOUT_MS, vm.exited, 'QMP') : Promise.resolve(undefined),
        ]);
        channel.on('error', () => undefined);
        vm.channel = channel;
        if (qmpSock) {
          vm.qmp = new Qmp(qmpSock);
          const exited = vm.exited.then((e) => Promise.reject(new Error(`QEMU exited (code ${e.code}, signal ${e.signal}) during the QMP handshake`)));
          await Promise.race([vm.qmp.handshake(), exited]);
          // Template and clones both leave RAM out of the migration stream: it lives in the file.
          if (cfg.memoryFile) await vm.qmp.execute('migrate-set-capabilities', { capabilities: [{ capability: 'x-ignore-shared', state: true }] });
          if (cfg.restoreFrom) await loadVmState(vm.qmp, { wait: false });
        }
      } finally {
        signal.removeEventListener('abort', onAbort);
      }
      signal.throwIfAborted();
      return vm;
    } catch (err) {
      if (vm) {
        await vm.destroy();
        const tail = vm.consoleTail().trim().split('\n').slice(-5).join(' | ');
        if (err instanceof Error && tail) err.message += ` (QEMU said: ${tail})`;
      } else {
        agentServer.close();
        qmpServer?.close();
        await fs.promises.rm(cfg.dir, { recursive: true, force: true });
      }
      throw err;
    } finally {
      if (stateFd !== undefined) fs.closeSync(stateFd);
    }
  }
}

/**
 * Boots the kernel and initramfs with no devices to the agent's first printed line
 * (`vulcan_bare=1`), then kills QEMU. The floor the benchmark compares cold starts with,
 * and the test that proves KVM works. Resolves with the milliseconds from spawn to the line.
 */
export async function bareBoot(opts: {
  accel: Accel;
  kernelPath: string;
  initramfsPath: string;
  memMB?: number;
  timeoutMs: number;
  binary?: string;
}): Promise<number> {
  const args = [
    '-M', 'microvm,x-option-roms=off,isa-serial=on,rtc=on,pit=off,pic=off',
    '-accel', opts.accel,
    ...(opts.accel === 'kvm' ? ['-cpu', 'host'] : []),
    '-m', `${opts.memMB ?? 256}M`, '-smp', '1',
    '-nodefaults', '-no-user-config', '-nographic', '-no-reboot',
    '-serial', 'stdio',
    '-kernel', opts.kernelPath, '-initrd', opts.initramfsPath,
    '-append', [...baseKernelArgs(opts.accel), 'vulcan_bare=1'].join(' '),
  ];
  const t0 = performance.now();
  const child = spawn(opts.binary ?? QEMU_BINARY, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let seen = '';
  try {
    return await new Promise<number>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no boot line within ${opts.timeoutMs} ms: ${seen.slice(-300)}`)), opts.timeoutMs);
      const onData = (d: Buffer): void => {
        seen = (seen + d.toString('latin1')).slice(-4096);
        if (seen.includes('VULCAN-BARE-BOOT')) {
          clearTimeout(timer);
          resolve(performance.now() - t0);
        }
      };
      child.stdout.on('data', onData);
      child.stderr.on('data', onData);
      child.once('error', (err) => {
        clearTimeout(timer);
        reject(err);
      });
      child.once('exit', (code) => {
        clearTimeout(timer);
        reject(new Error(`QEMU exited with ${code} before the boot line: ${seen.slice(-300).trim()}`));
      });
    });
  } finally {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGKILL');
      await once(child, 'exit');
    }
  }
}
