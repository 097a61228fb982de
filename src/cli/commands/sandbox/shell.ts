import type { Command } from 'commander';
import WebSocket from 'ws';
import { Sandbox } from '../../../sdk/index.js';
import { serverUrl } from './shared.js';

export function registerSandboxShell(sandbox: Command): void {
  sandbox
    .command('shell')
    .description('an interactive shell (a PTY) in a sandbox; exits with the shell\'s exit code')
    .argument('<id>')
    .option('--cmd <arg>', 'argv instead of a login shell (repeatable)', (v: string, acc: string[]) => [...acc, v], [] as string[])
    .action(async (id: string, o: { cmd: string[] }) => {
      const sbx = await Sandbox.connect(id, { url: serverUrl() });
      const tty = process.stdin.isTTY && process.stdout.isTTY;
      const ws = new WebSocket(sbx.shellUrl({ ...(o.cmd.length ? { cmd: o.cmd } : {}), rows: process.stdout.rows || 24, cols: process.stdout.columns || 80, pty: true }));
      const code = await new Promise<number>((resolve, reject) => {
        ws.on('unexpected-response', (_req, res) => {
          let body = '';
          res.on('data', (c: Buffer) => (body += c.toString()));
          res.on('end', () => reject(new Error(`cannot open the shell (HTTP ${String(res.statusCode)}): ${body}`)));
        });
        ws.on('error', reject);
        ws.on('open', () => {
          if (tty) process.stdin.setRawMode(true);
          process.stdin.on('data', (d: Buffer) => ws.send(d, { binary: true }));
          process.stdin.on('end', () => ws.send(JSON.stringify({ type: 'eof' })));
          process.stdout.on('resize', () => ws.send(JSON.stringify({ type: 'resize', rows: process.stdout.rows, cols: process.stdout.columns })));
        });
        ws.on('message', (data: Buffer, isBinary: boolean) => {
          if (isBinary) return void process.stdout.write(data);
          const m = JSON.parse(data.toString()) as { type: string; exit_code?: number | null; data?: string; message?: string };
          if (m.type === 'exit') resolve(m.exit_code ?? 1);
          else if (m.type === 'stderr' && m.data) process.stderr.write(m.data);
          else if (m.type === 'error') reject(new Error(m.message ?? 'the shell failed'));
        });
        ws.on('close', () => resolve(0));
      }).finally(() => {
        if (tty) process.stdin.setRawMode(false);
        process.stdin.pause();
        ws.close();
      });
      process.exitCode = code;
    });
}
