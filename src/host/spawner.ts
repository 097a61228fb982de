/**
 * Starting sandbox processes without forking the API server.
 *
 * `child_process.spawn` forks, and a fork copies the parent's page tables: for the
 * ~110 MiB server that is ~8 ms of blocked event loop per sandbox start (2 ms at 50 MiB,
 * 11 ms at 150 MiB, 21 ms at 350 MiB, measured here), a third of a bare bubblewrap start.
 * So one small helper process, native/vulcan-spawnd.c, forks instead; its fork costs
 * ~0.1 ms. The server listens on a unix socket in a root-only directory; the helper's child
 * connects once per stdio slot (introducing each connection with a random 16-byte token and
 * the slot number), puts them on fds 0..n-1 and execs. The server gets stream sockets, just
 * what child_process.spawn gives (libuv's stdio "pipes" are socketpairs too).
 *
 * The helper dies with the server; the programs it starts are vulcan-cgexec shims, which
 * kill their sandboxes' cgroups when it does.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { PassThrough, type Readable } from 'node:stream';
import type { SandboxProcess, SpawnProcessOptions } from './process.js';

const RUN_DIR = '/run/vulcan';
const TOKEN_BYTES = 16;
const HELLO_BYTES = TOKEN_BYTES + 1;
const REPLY_BYTES = 1 + TOKEN_BYTES + 4;
/** How long a connection may take to introduce itself. */
const HELLO_TIMEOUT_MS = 5_000;
/** After the exit is known, how long slots that never connected are waited for. */
const LATE_SLOT_MS = 2_000;

type Exit = { code: number | null; signal: NodeJS.Signals | null };

interface Job {
  readonly slots: number;
  /** Data written to a slot when it connects, then its write side ends (stdin and data fds). */
  readonly feed: Map<number, Buffer | string>;
  /** Streams that a slot's output is piped into (stdout, stderr, the result channel). */
  readonly sinks: Map<number, PassThrough>;
  readonly sockets: net.Socket[];
  connected: number;
  exit?: Exit;
  lateTimer?: NodeJS.Timeout;
  onExit: (exit: Exit) => void;
  onError: (err: Error) => void;
}

/** Number → name; the first of aliases (SIGABRT, not SIGIOT; SIGIO, not SIGPOLL), as Node's spawn reports them. */
const SIGNAL_NAMES = new Map<number, NodeJS.Signals>();
for (const [name, num] of Object.entries(os.constants.signals)) if (!SIGNAL_NAMES.has(num)) SIGNAL_NAMES.set(num, name as NodeJS.Signals);

function decodeWaitStatus(status: number): Exit {
  const sig = status & 0x7f;
  if (sig === 0) return { code: (status >> 8) & 0xff, signal: null };
  return { code: null, signal: SIGNAL_NAMES.get(sig) ?? 'SIGKILL' };
}

/** A request to vulcan-spawnd: u32le length, the type, the token, then `body`. */
function controlFrame(type: 'S' | 'K', token: Buffer, body: Buffer): Buffer {
  const head = Buffer.alloc(4 + 1 + TOKEN_BYTES);
  head.writeUInt32LE(1 + TOKEN_BYTES + body.length, 0);
  head.write(type, 4, 'latin1');
  token.copy(head, 5);
  return Buffer.concat([head, body]);
}

/** Removes socket directories of servers that are gone. */
function sweepStale(): void {
  let names: string[];
  try {
    names = fs.readdirSync(RUN_DIR);
  } catch {
    return;
  }
  for (const n of names) {
    const m = /^spawn-(\d+)-/.exec(n);
    if (m && !fs.existsSync(`/proc/${m[1]}`)) fs.rmSync(path.join(RUN_DIR, n), { recursive: true, force: true });
  }
}

export class Spawner {
  private static readonly instances = new Map<string, Spawner>();

  /** The shared spawner for the helper at `helperPath`, started on first use. */
  static for(helperPath: string): Spawner {
    let s = Spawner.instances.get(helperPath);
    if (!s || s.dead) {
      s = new Spawner(helperPath);
      Spawner.instances.set(helperPath, s);
    }
    return s;
  }

  private readonly jobs = new Map<string, Job>();
  private readonly dir: string;
  private readonly server: net.Server;
  private readonly helper: ChildProcess;
  /** Frames written before the socket listens wait here, in order (a kill must never overtake its spawn). */
  private queued: Buffer[] | undefined = [];
  private dead = false;
  private replyBuf: Buffer = Buffer.alloc(0);

  private constructor(helperPath: string) {
    fs.mkdirSync(RUN_DIR, { recursive: true, mode: 0o755 });
    sweepStale();
    this.dir = fs.mkdtempSync(path.join(RUN_DIR, `spawn-${process.pid}-`));
    fs.chmodSync(this.dir, 0o700);
    const sock = path.join(this.dir, 's');
    this.server = net.createServer({ allowHalfOpen: true }, (c) => this.accept(c));
    this.server.unref();
    this.server.once('error', (err) => this.fail(err));
    this.server.listen(sock, () => {
      const frames = this.queued ?? [];
      this.queued = undefined;
      for (const f of frames) this.send(f);
    });
    this.helper = spawn(helperPath, [sock], { stdio: ['pipe', 'pipe', 'inherit'], cwd: '/', env: {} });
    this.helper.unref();
    const out = this.helper.stdout as net.Socket;
    const inp = this.helper.stdin as net.Socket;
    out.unref();
    inp.unref();
    inp.on('error', () => undefined);
    out.on('data', (c: Buffer) => this.onReplies(c));
    this.helper.on('error', (err) => this.fail(err));
    this.helper.on('exit', (code, signal) => this.fail(new Error(`vulcan-spawnd exited (${signal ?? String(code)})`)));
    process.once('exit', () => fs.rmSync(this.dir, { recursive: true, force: true }));
  }

  /** Starts `opts.file` with fds 0..n-1 connected; the same contract as spawnProcess. */
  spawn(opts: SpawnProcessOptions): SandboxProcess {
    const token = randomBytes(TOKEN_BYTES);
    const key = token.toString('hex');
    const extra = (opts.resultFd ? 1 : 0) + (opts.data?.length ?? 0);
    const slots = 3 + extra;
    const feed = new Map<number, Buffer | string>([[0, opts.stdin ?? '']]);
    const first = opts.resultFd ? 4 : 3;
    (opts.data ?? []).forEach((d, i) => feed.set(first + i, d));
    const sinks = new Map<number, PassThrough>([
      [1, new PassThrough()],
      [2, new PassThrough()],
    ]);
    if (opts.resultFd) sinks.set(3, new PassThrough());
    let onExit: (e: Exit) => void = () => undefined;
    let onError: (e: Error) => void = () => undefined;
    const exited = new Promise<Exit>((resolve, reject) => {
      onExit = resolve;
      onError = reject;
    });
    const job: Job = { slots, feed, sinks, sockets: [], connected: 0, onExit, onError };
    this.jobs.set(key, job);
    this.refWhileBusy();

    this.send(controlFrame('S', token, Buffer.concat([Buffer.from([slots]), Buffer.from([opts.file, ...opts.args].map((s) => `${s}\0`).join(''))])));

    const ended = [...sinks.values()].map((s) => new Promise<void>((resolve) => s.once('end', resolve).once('close', resolve)));
    const closed = exited.then(async (exit) => {
      await Promise.all(ended);
      return exit;
    });
    closed.catch(() => undefined);
    return {
      stdout: sinks.get(1) as Readable,
      stderr: sinks.get(2) as Readable,
      result: sinks.get(3),
      closed,
      kill: (signal) => {
        if (job.exit || this.dead) return;
        this.send(controlFrame('K', token, Buffer.from([os.constants.signals[signal]])));
      },
    };
  }

  /** Keeps the event loop alive while a job is pending (and only then: an idle spawner must not hold a process open). */
  private refWhileBusy(): void {
    const out = this.helper.stdout as net.Socket | null;
    if (this.jobs.size > 0) {
      out?.ref();
      this.server.ref();
    } else {
      out?.unref();
      this.server.unref();
    }
  }

  private send(frame: Buffer): void {
    if (this.dead) return;
    if (this.queued) this.queued.push(frame);
    else this.helper.stdin?.write(frame);
  }

  private accept(c: net.Socket): void {
    let buf = Buffer.alloc(0);
    const timer = setTimeout(() => c.destroy(), HELLO_TIMEOUT_MS);
    c.on('error', () => undefined);
    const onData = (chunk: Buffer) => {
      buf = Buffer.concat([buf, chunk]);
      if (buf.length < HELLO_BYTES) return;
      clearTimeout(timer);
      c.off('data', onData);
      c.pause();
      const key = buf.subarray(0, TOKEN_BYTES).toString('hex');
      const job = this.jobs.get(key);
      const slot = buf[TOKEN_BYTES] ?? 255;
      if (!job || slot >= job.slots || job.sockets[slot]) {
        c.destroy();
        return;
      }
      job.sockets[slot] = c;
      job.connected++;
      const rest = buf.subarray(HELLO_BYTES);
      const sink = job.sinks.get(slot);
      if (sink) {
        if (rest.length > 0) c.unshift(rest);
        c.end();
        c.pipe(sink);
      } else {
        c.resume();
        c.end(job.feed.get(slot) ?? '');
      }
      if (job.exit && job.connected === job.slots) {
        clearTimeout(job.lateTimer);
        this.jobs.delete(key);
        this.refWhileBusy();
        job.onExit(job.exit);
      }
    };
    c.on('data', onData);
  }

  private onReplies(chunk: Buffer): void {
    this.replyBuf = this.replyBuf.length === 0 ? chunk : Buffer.concat([this.replyBuf, chunk]);
    while (this.replyBuf.length >= REPLY_BYTES) {
      const msg = this.replyBuf.subarray(0, REPLY_BYTES);
      this.replyBuf = this.replyBuf.subarray(REPLY_BYTES);
      const key = msg.subarray(1, 1 + TOKEN_BYTES).toString('hex');
      const value = msg.readInt32LE(1 + TOKEN_BYTES);
      if (msg[0] === 0x45 /* E */) this.finish(key, decodeWaitStatus(value));
      else this.finish(key, undefined, new Error(`vulcan-spawnd could not start the process (errno ${value})`));
    }
  }

  /** Records a job's end; slots that never connected are ended once the stragglers had their chance. */
  private finish(key: string, exit: Exit | undefined, err?: Error): void {
    const job = this.jobs.get(key);
    if (!job) return;
    this.jobs.delete(key);
    if (!this.dead) this.refWhileBusy();
    const endMissing = () => {
      for (const [slot, sink] of job.sinks) if (!job.sockets[slot]) sink.end();
    };
    if (err || !exit) {
      for (const s of job.sockets) s?.destroy();
      endMissing();
      job.onError(err ?? new Error('no exit status'));
      return;
    }
    job.exit = exit;
    if (job.connected === job.slots) {
      job.onExit(exit);
      return;
    }
    // Still listening for this job's late connections for a moment (same event-loop turn in practice).
    this.jobs.set(key, job);
    job.lateTimer = setTimeout(() => {
      this.jobs.delete(key);
      this.refWhileBusy();
      endMissing();
      job.onExit(exit);
    }, LATE_SLOT_MS);

  }

  private fail(err: Error): void {
    if (this.dead) return;
    this.dead = true;
    this.server.close();
    fs.rmSync(this.dir, { recursive: true, force: true });
    for (const key of [...this.jobs.keys()]) this.finish(key, undefined, err);
  }
}

/** The helper next to vulcan-cgexec in build/, when it was built. */
export function spawndPathNextTo(cgexecPath: string): string | undefined {
  const p = path.join(path.dirname(cgexecPath), 'vulcan-spawnd');
  return fs.existsSync(p) ? p : undefined;
}
