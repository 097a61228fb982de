/**
 * A `vulcan serve` child process for the benchmark: a temp data dir, a random port, the
 * node's images shared (VULCAN_IMAGES_DATA_DIR), extra environment for a backend's
 * settings. Everything it made is removed by `close()`.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import readline from 'node:readline';
import { fileURLToPath } from 'node:url';
import { loadConfig } from '../src/core/config.js';

const VULCAN_BIN = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', 'bin', 'vulcan');

export interface BenchServer {
  readonly url: string;
  readonly child: ChildProcess;
  close(): Promise<void>;
}

export async function startBenchServer(extraEnv: Readonly<Record<string, string>> = {}): Promise<BenchServer> {
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'vulcan-bench-'));
  const env = { ...process.env, VULCAN_LOG_LEVEL: 'info', VULCAN_IMAGES_DATA_DIR: loadConfig().imagesDataDir, ...extraEnv };
  const child = spawn(process.execPath, [VULCAN_BIN, 'serve', '--port', '0', '--data-dir', dataDir], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr?.on('data', (c: Buffer) => (stderr = (stderr + c.toString()).slice(-4000)));
  const close = async () => {
    if (child.exitCode === null && child.signalCode === null) {
      const exited = new Promise((r) => child.once('exit', r));
      child.kill('SIGTERM');
      await exited;
    }
    fs.rmSync(dataDir, { recursive: true, force: true });
  };
  try {
    const url = await new Promise<string>((resolve, reject) => {
      if (!child.stdout) return reject(new Error('no stdout'));
      const rl = readline.createInterface({ input: child.stdout });
      rl.on('line', (line) => {
        try {
          const m = JSON.parse(line) as { msg?: string; url?: string };
          if (m.msg === 'vulcan is serving' && m.url) resolve(m.url);
        } catch {
          // not a log line
        }
      });
      child.once('exit', (code) => reject(new Error(`vulcan serve exited ${String(code)}: ${stderr}`)));
    });
    child.stdout?.resume();
    return { url, child, close };
  } catch (err) {
    await close();
    throw err;
  }
}
