/**
 * Benchmark rows of sandboxes on the namespace backend, through the HTTP API, each beside
 * its raw floor measured in the same run:
 * - `sandbox_create_to_first_exec`: POST /v1/sandboxes, then POST …/exec of `echo ok`,
 *   client-side, next to a bare `bwrap --unshare-all … node -e 0` (the agent is a node
 *   process, so that is the floor of starting one);
 * - `sandbox_exec_roundtrip_true`: POST …/exec of `true` in a running sandbox (keep-alive),
 *   p50 and p99, next to fork+exec of `true` on the host from Node. Target: p50 ≤ 5 ms.
 *
 * Wire it from bench/main.ts for the namespace backend:
 *   rows.push(...(await (await import('./rows/sandbox-namespace.js')).benchSandboxNamespace(ctx)));
 */
import { spawn } from 'node:child_process';
import { Pool } from 'undici';
import { summarize } from '../stats.js';
import type { BenchContext, BenchRow } from '../types.js';
import { bareBwrapArgv } from './namespace.js';

/** The target for the exec round trip of `true` on namespace. */
export const EXEC_ROUNDTRIP_TARGET_MS = 5;

function run(file: string, args: readonly string[]): Promise<number> {
  const t0 = performance.now();
  return new Promise((resolve, reject) => {
    const child = spawn(file, args, { stdio: 'ignore' });
    child.on('error', reject);
    child.on('close', (code) => (code === 0 ? resolve(performance.now() - t0) : reject(new Error(`${file} exited ${String(code)}`))));
  });
}

async function json(pool: Pool, method: 'POST' | 'DELETE', path: string, body?: unknown): Promise<{ status: number; body: Record<string, unknown> }> {
  const res = await pool.request({ method, path, headers: body === undefined ? {} : { 'content-type': 'application/json' }, ...(body === undefined ? {} : { body: JSON.stringify(body) }) });
  const text = await res.body.text();
  return { status: res.statusCode, body: text ? (JSON.parse(text) as Record<string, unknown>) : {} };
}

async function createAndExec(pool: Pool): Promise<{ ms: number; id: string }> {
  const t0 = performance.now();
  const c = await json(pool, 'POST', '/v1/sandboxes', { isolation: 'namespace', ttl_s: 300 });
  if (c.status !== 201) throw new Error(`sandbox create failed: HTTP ${c.status} ${JSON.stringify(c.body).slice(0, 300)}`);
  const id = String(c.body.id);
  const e = await json(pool, 'POST', `/v1/sandboxes/${id}/exec`, { cmd: ['echo', 'ok'] });
  const ms = performance.now() - t0;
  if (e.status !== 200 || e.body.stdout !== 'ok\n') throw new Error(`first exec failed: HTTP ${e.status} ${JSON.stringify(e.body).slice(0, 300)}`);
  return { ms, id };
}

export async function benchSandboxNamespace(ctx: BenchContext): Promise<BenchRow[]> {
  const pool = new Pool(ctx.url, { connections: 2 });
  const made: string[] = [];
  try {
    // Create-to-first-exec: fewer samples, each is a whole sandbox.
    const nCreate = Math.max(3, Math.min(ctx.samples, 20));
    const created: number[] = [];
    const bare: number[] = [];
    const floorArgv = bareBwrapArgv(['/usr/bin/node', '-e', '0']);
    await run('/usr/bin/bwrap', floorArgv);
    for (let i = 0; i < nCreate; i++) {
      bare.push(await run('/usr/bin/bwrap', floorArgv));
      const { ms, id } = await createAndExec(pool);
      created.push(ms);
      await json(pool, 'DELETE', `/v1/sandboxes/${id}`);
      if (i % 5 === 4) ctx.progress(`sandbox create-to-first-exec ${i + 1}/${nCreate}`);
    }
    const createStats = summarize(created);
    const createFloor = summarize(bare);

    // Exec round trip of `true` in one running sandbox, next to fork+exec of `true` here.
    const { id } = await createAndExec(pool);
    made.push(id);
    const nExec = Math.max(50, ctx.samples * 5);
    const execs: number[] = [];
    const forks: number[] = [];
    for (let i = 0; i < 10; i++) await json(pool, 'POST', `/v1/sandboxes/${id}/exec`, { cmd: ['true'] });
    for (let i = 0; i < nExec; i++) {
      forks.push(await run('/bin/true', []));
      const t0 = performance.now();
      const r = await json(pool, 'POST', `/v1/sandboxes/${id}/exec`, { cmd: ['true'] });
      execs.push(performance.now() - t0);
      if (r.status !== 200 || r.body.exit_code !== 0) throw new Error(`exec true failed: HTTP ${r.status} ${JSON.stringify(r.body).slice(0, 300)}`);
      if (i % 50 === 49) ctx.progress(`sandbox exec round trip ${i + 1}/${nExec}`);
    }
    const execStats = summarize(execs);
    const forkStats = summarize(forks);
    return [
      {
        backend: 'namespace',
        measure: 'sandbox_create_to_first_exec',
        unit: 'ms',
        value: createStats,
        floor: { name: 'bare bwrap --unshare-all node -e 0', value: createFloor },
        ratio: createStats.p50 / createFloor.p50,
        note: 'POST /v1/sandboxes then POST /exec ["echo","ok"], client-side; the sandbox is deleted untimed',
      },
      {
        backend: 'namespace',
        measure: 'sandbox_exec_roundtrip_true',
        unit: 'ms',
        value: execStats,
        floor: { name: 'fork+exec /bin/true from node on the host', value: forkStats },
        ratio: execStats.p50 / forkStats.p50,
        target: `p50 ≤ ${EXEC_ROUNDTRIP_TARGET_MS} ms`,
        met: execStats.p50 <= EXEC_ROUNDTRIP_TARGET_MS,
        note: 'POST /v1/sandboxes/:id/exec ["true"] in a running sandbox, keep-alive, client-side',
      },
    ];
  } finally {
    for (const id of made) await json(pool, 'DELETE', `/v1/sandboxes/${id}`).catch(() => undefined);
    await pool.close();
  }
}
