/**
 * What every rows file needs: timing one workload through the HTTP API (client-side, with
 * its result checked) and timing one floor command.
 */
import { spawn } from 'node:child_process';
import { request } from 'undici';

/** POSTs one sync workload and returns the client-side milliseconds; throws unless it completed with `expect`. */
export async function timeWorkload(url: string, body: object, expect: unknown): Promise<number> {
  const t0 = performance.now();
  const res = await request(`${url}/v1/workloads`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
  const rec = (await res.body.json()) as { status?: string; output?: unknown };
  const ms = performance.now() - t0;
  if (res.statusCode !== 200 || rec.status !== 'completed' || JSON.stringify(rec.output ?? null) !== JSON.stringify(expect ?? null)) {
    throw new Error(`workload ${JSON.stringify(body).slice(0, 120)} failed: HTTP ${res.statusCode} ${JSON.stringify(rec).slice(0, 300)}`);
  }
  return ms;
}

/** Runs a command to its end and returns the milliseconds; throws on a non-zero exit. */
export async function timeCommand(cmd: string, args: readonly string[], cwd?: string): Promise<number> {
  const t0 = performance.now();
  const code = await new Promise<number | null>((resolve, reject) => {
    const child = spawn(cmd, args, { stdio: 'ignore', ...(cwd ? { cwd } : {}) });
    child.on('error', reject);
    child.on('close', resolve);
  });
  if (code !== 0) throw new Error(`${cmd} ${args.join(' ')} exited ${String(code)}`);
  return performance.now() - t0;
}

/** The `info` a backend's probe published, from GET /v1/backends. */
export async function backendInfo(url: string, name: string): Promise<Record<string, string>> {
  const res = await request(`${url}/v1/backends`);
  const body = (await res.body.json()) as { backends: { name: string; info?: Record<string, string> }[] };
  return body.backends.find((b) => b.name === name)?.info ?? {};
}
