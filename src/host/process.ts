/**
 * A started sandbox process as the backends use it: its output pipes, its result channel,
 * and one promise for its end (exit and both pipes drained).
 */
import { spawn } from 'node:child_process';
import type { Socket } from 'node:net';
import type { Readable } from 'node:stream';
import { Spawner } from './spawner.js';

export interface SandboxProcess {
  readonly stdout: Readable;
  readonly stderr: Readable;
  /** fd 3, when asked for. */
  readonly result: Readable | undefined;
  /** Resolves once the process exited and its stdout and stderr ended. */
  readonly closed: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  kill(signal: NodeJS.Signals): void;
}

export interface SpawnProcessOptions {
  readonly file: string;
  readonly args: readonly string[];
  readonly stdin?: Buffer | string;
  /** Data for fds 3… (4… with `resultFd`), each written and closed. */
  readonly data?: readonly (Buffer | string)[];
  readonly resultFd?: boolean;
  /** native/vulcan-spawnd, to start it without forking this process (src/host/spawner.ts). */
  readonly spawnd?: string;
}

/** Starts a process with an empty environment in `/`, feeding stdin and the data fds. */
export function spawnProcess(opts: SpawnProcessOptions): SandboxProcess {
  if (opts.spawnd !== undefined) return Spawner.for(opts.spawnd).spawn(opts);
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
    stdout: child.stdout,
    stderr: child.stderr,
    result: opts.resultFd ? (child.stdio[3] as Readable) : undefined,
    closed: new Promise((resolve, reject) => {
      child.on('error', reject);
      child.on('close', (code, signal) => resolve({ code, signal }));
    }),
    kill: (signal) => child.kill(signal),
  };
}
