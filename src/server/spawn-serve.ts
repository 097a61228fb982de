/**
 * `vulcan serve` as a child process on a random loopback port, for the test helpers, the
 * conformance suites and the benchmark: resolves with its URL once it listens (it logs
 * `vulcan is serving` with the URL), rejects with its stderr when it exits or stalls.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import path from 'node:path';
import readline from 'node:readline';
import { findInstallDir } from '../core/config.js';

export interface ServeProcess {
  readonly url: string;
  readonly child: ChildProcess;
  /** Sends `signal` (SIGTERM by default) unless it has exited, and waits for the exit. */
  readonly stop: (signal?: NodeJS.Signals) => Promise<void>;
}

export interface SpawnServeOptions {
  readonly dataDir: string;
  /** Extra environment; VULCAN_LOG_LEVEL is `info` (the URL comes from the log). */
  readonly env?: Readonly<Record<string, string>>;
  /** How long to wait for it to listen. Default 60 s. */
  readonly timeoutMs?: number;
}

export async function spawnVulcanServe(opts: SpawnServeOptions): Promise<ServeProcess> {
  const bin = path.join(findInstallDir(), 'bin', 'vulcan');
  const child = spawn(process.execPath, [bin, 'serve', '--port', '0', '--data-dir', opts.dataDir], {
    env: { ...process.env, ...opts.env, VULCAN_LOG_LEVEL: 'info' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  let stderr = '';
  child.stderr?.on('data', (c: Buffer) => (stderr = (stderr + c.toString()).slice(-4000)));
  const stop = async (signal: NodeJS.Signals = 'SIGTERM') => {
    if (child.exitCode === null && child.signalCode === null) child.kill(signal);
    await exited;
  };
  const timeoutMs = opts.timeoutMs ?? 60_000;
  try {
    const url = await new Promise<string>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`vulcan serve did not start in ${timeoutMs / 1000} s: ${stderr}`)), timeoutMs);
      if (!child.stdout) return reject(new Error('no stdout pipe'));
      const lines = readline.createInterface({ input: child.stdout });
      lines.on('line', (line) => {
        try {
          const msg = JSON.parse(line) as { msg?: string; url?: string };
          if (msg.msg === 'vulcan is serving' && msg.url) {
            clearTimeout(timer);
            // Later lines are drained unread (below): under the benchmark's load the server logs
            // one per request, and parsing them would take this process's share of the CPU.
            lines.close();
            resolve(msg.url);
          }
        } catch {
          // not a log line
        }
      });
      child.once('exit', (code) => {
        clearTimeout(timer);
        reject(new Error(`vulcan serve exited (${String(code)}): ${stderr}`));
      });
    });
    child.stdout?.resume();
    return { url, child, stop };
  } catch (err) {
    await stop('SIGKILL');
    throw err;
  }
}
