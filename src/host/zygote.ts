/**
 * The server side of the zygote (zygote-main.ts): start processes without forking the
 * server. `zygoteSpawn()` returns the child's pipes and its exit, like a thin ChildProcess.
 * When the zygote cannot start, processes are spawned directly.
 */
import { fork, spawn, type ChildProcess } from 'node:child_process';
import type { Socket } from 'node:net';
import path from 'node:path';
import { PassThrough, type Readable } from 'node:stream';
import { fileURLToPath } from 'node:url';

export type ZygoteRequest =
  | { t: 'spawn'; id: number; file: string; args: string[]; stdin: Buffer | string; data: (Buffer | string)[]; resultFd: boolean }
  | { t: 'kill'; id: number; signal: NodeJS.Signals };

export type ZygoteReply =
  | { t: 'stdout'; id: number; pid: number }
  | { t: 'stderr' | 'result'; id: number }
  | { t: 'exit'; id: number; code: number | null; signal: NodeJS.Signals | null }
  | { t: 'error'; id: number; message: string };

/** A process started through the zygote. */
export interface ZygoteChild {
  readonly stdout: Readable;
  readonly stderr: Readable;
  /** fd 3, when asked for. */
  readonly result: Readable | undefined;
  /** Resolves once the process exited and its stdout and stderr ended. */
  readonly closed: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  kill(signal: NodeJS.Signals): void;
}

export interface ZygoteSpawnOptions {
  readonly file: string;
  readonly args: readonly string[];
  readonly stdin?: Buffer | string;
  /** Data for fds 3… (4… with `resultFd`), each written and closed. */
  readonly data?: readonly (Buffer | string)[];
  readonly resultFd?: boolean;
}

interface Pending {
  readonly out: PassThrough;
  readonly err: PassThrough;
  readonly res: PassThrough | undefined;
  readonly exit: (v: { code: number | null; signal: NodeJS.Signals | null }) => void;
  readonly fail: (e: Error) => void;
}

const MAIN = path.join(path.dirname(fileURLToPath(import.meta.url)), 'zygote-main.js');

class Zygote {
  private proc: ChildProcess | undefined;
  private nextId = 1;
  private readonly pending = new Map<number, Pending>();

  private ensure(): ChildProcess {
    if (this.proc && this.proc.connected) return this.proc;
    const proc = fork(MAIN, [], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'], serialization: 'advanced', execArgv: ['--max-old-space-size=64'] });
    proc.on('message', (m: ZygoteReply, handle?: Socket) => this.onMessage(m, handle));
    proc.on('exit', () => {
      if (this.proc === proc) this.proc = undefined;
      for (const p of this.pending.values()) p.fail(new Error('the zygote exited'));
      this.pending.clear();
    });
    // Never keep the server alive for the zygote's sake.
    proc.unref();
    proc.channel?.unref();
    this.proc = proc;
    return proc;
  }

  private onMessage(m: ZygoteReply, handle?: Socket): void {
    const p = this.pending.get(m.id);
    if (!p) {
      handle?.destroy();
      return;
    }
    switch (m.t) {
      case 'stdout':
        handle?.pipe(p.out);
        break;
      case 'stderr':
        handle?.pipe(p.err);
        break;
      case 'result':
        if (p.res) handle?.pipe(p.res);
        else handle?.destroy();
        break;
      case 'exit':
        this.pending.delete(m.id);
        p.exit({ code: m.code, signal: m.signal });
        break;
      case 'error':
        this.pending.delete(m.id);
        p.fail(new Error(m.message));
        break;
    }
  }

  spawn(opts: ZygoteSpawnOptions): ZygoteChild {
    const proc = this.ensure();
    const id = this.nextId++;
    const out = new PassThrough();
    const err = new PassThrough();
    const res = opts.resultFd ? new PassThrough() : undefined;
    const streamsEnded = Promise.all([out, err].map((s) => new Promise<void>((r) => s.once('end', () => r()).once('close', () => r()))));
    let exitOf: (v: { code: number | null; signal: NodeJS.Signals | null }) => void = () => undefined;
    let failOf: (e: Error) => void = () => undefined;
    const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve, reject) => {
      exitOf = resolve;
      failOf = (e) => {
        for (const s of [out, err, res]) s?.end();
        reject(e);
      };
    });
    this.pending.set(id, { out, err, res, exit: exitOf, fail: failOf });
    proc.send({ t: 'spawn', id, file: opts.file, args: [...opts.args], stdin: opts.stdin ?? '', data: [...(opts.data ?? [])], resultFd: opts.resultFd ?? false } satisfies ZygoteRequest);
    return {
      stdout: out,
      stderr: err,
      result: res,
      closed: exited.then(async (v) => {
        await streamsEnded;
        return v;
      }),
      kill: (signal) => {
        if (this.pending.has(id)) this.proc?.send({ t: 'kill', id, signal } satisfies ZygoteRequest);
      },
    };
  }

  close(): void {
    this.proc?.kill('SIGKILL');
    this.proc = undefined;
  }
}

let zygote: Zygote | undefined;

/** Starts `opts.file` through the zygote (started on first use). */
export function zygoteSpawn(opts: ZygoteSpawnOptions): ZygoteChild {
  zygote ??= new Zygote();
  return zygote.spawn(opts);
}

/** Starts a process directly from this one: the same shape, for when no zygote is wanted. */
export function directSpawn(opts: ZygoteSpawnOptions): ZygoteChild {
  const extra = (opts.resultFd ? 1 : 0) + (opts.data?.length ?? 0);
  const child = spawn(opts.file, [...opts.args], { stdio: ['pipe', 'pipe', 'pipe', ...Array<'pipe'>(extra).fill('pipe')], cwd: '/', env: {} });
  child.stdin?.on('error', () => undefined);
  child.stdin?.end(opts.stdin ?? '');
  const first = opts.resultFd ? 4 : 3;
  (opts.data ?? []).forEach((d, i) => {
    const s = child.stdio[first + i] as Socket | null;
    s?.on('error', () => undefined);
    s?.end(d);
  });
  return {
    stdout: child.stdout as Readable,
    stderr: child.stderr as Readable,
    result: opts.resultFd ? (child.stdio[3] as Readable) : undefined,
    closed: new Promise((resolve, reject) => {
      child.on('error', reject);
      child.on('close', (code, signal) => resolve({ code, signal }));
    }),
    kill: (signal) => child.kill(signal),
  };
}

/** Stops the zygote (its children die with it). */
export function closeZygote(): void {
  zygote?.close();
  zygote = undefined;
}
