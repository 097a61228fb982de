/**
 * Benchmark rows of sandboxes on one backend, through the HTTP API, each beside its raw
 * floor measured in the same run (bench/rows/sandbox-<backend>.ts pick the floor):
 * - `sandbox_create_to_first_exec`: POST /v1/sandboxes, then POST …/exec of `echo ok`,
 *   client-side, next to the backend's bare start (bwrap, runsc do, docker run, a QEMU boot);
 * - `sandbox_exec_roundtrip_true`: POST …/exec of `true` in a running sandbox (keep-alive),
 *   p50 and p99, next to fork+exec of `true` on the host from Node. Target on namespace:
 *   p50 ≤ 5 ms.
 */
import { spawn } from 'node:child_process';
import { Pool } from 'undici';
import { summarize } from '../stats.js';
import type { BenchContext, BenchRow } from '../types.js';

export function run(file: string, args: readonly string[]): Promise<number> {
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

async function createAndExec(pool: Pool, opts: SandboxBenchOptions): Promise<{ ms: number; id: string }> {
  const t0 = performance.now();
  const c = await json(pool, 'POST', '/v1/sandboxes', { isolation: opts.backend, ttl_s: 300, ...(opts.image ? { image: opts.image } : {}) });
  if (c.status !== 201) throw new Error(`sandbox create failed: HTTP ${c.status} ${JSON.stringify(c.body).slice(0, 300)}`);
  const id = String(c.body.id);
  const e = await json(pool, 'POST', `/v1/sandboxes/${id}/exec`, { cmd: ['echo', 'ok'] });
  const ms = performance.now() - t0;
  if (e.status !== 200 || e.body.stdout !== 'ok\n') throw new Error(`first exec failed: HTTP ${e.status} ${JSON.stringify(e.body).slice(0, 300)}`);
  return { ms, id };
}

export interface SandboxBenchOptions {
  readonly backend: 'namespace' | 'gvisor' | 'container' | 'microvm';
  /** The image the sandboxes run on (default: the backend's). */
  readonly image?: string;
  /** The floor of a create: one bare start of the backend's wall, timed. */
  readonly floor: { readonly name: string; readonly time: () => Promise<number> };
  /** Most sandboxes created (each is a whole start; microVMs under TCG take seconds). */
  readonly maxCreates?: number;
  /** The exec round trip's target p50, when the issue sets one. */
  readonly execTargetMs?: number;
}

export async function benchSandboxes(ctx: BenchContext, opts: SandboxBenchOptions): Promise<BenchRow[]> {
  const pool = new Pool(ctx.url, { connections: 2 });
  const made: string[] = [];
  try {
    // Create-to-first-exec: fewer samples, each is a whole sandbox.
    const nCreate = Math.max(3, Math.min(ctx.samples, opts.maxCreates ?? 20));
    const created: number[] = [];
    const bare: number[] = [];
    await opts.floor.time();
    for (let i = 0; i < nCreate; i++) {
      bare.push(await opts.floor.time());
      const { ms, id } = await createAndExec(pool, opts);
      created.push(ms);
      await json(pool, 'DELETE', `/v1/sandboxes/${id}`);
      if (i % 5 === 4) ctx.progress(`${opts.backend} sandbox create-to-first-exec ${i + 1}/${nCreate}`);
    }
    const createStats = summarize(created);
    const createFloor = summarize(bare);

    // Exec round trip of `true` in one running sandbox, next to fork+exec of `true` here.
    const { id } = await createAndExec(pool, opts);
    made.push(id);
    const nExec = opts.backend === 'microvm' ? Math.max(20, ctx.samples) : Math.max(50, ctx.samples * 5);
    const execs: number[] = [];
    const forks: number[] = [];
    for (let i = 0; i < 10; i++) await json(pool, 'POST', `/v1/sandboxes/${id}/exec`, { cmd: ['true'] });
    for (let i = 0; i < nExec; i++) {
      forks.push(await run('/bin/true', []));
      const t0 = performance.now();
      const r = await json(pool, 'POST', `/v1/sandboxes/${id}/exec`, { cmd: ['true'] });
      execs.push(performance.now() - t0);
      if (r.status !== 200 || r.body.exit_code !== 0) throw new Error(`exec true failed: HTTP ${r.status} ${JSON.stringify(r.body).slice(0, 300)}`);
      if (i % 50 === 49) ctx.progress(`${opts.backend} sandbox exec round trip ${i + 1}/${nExec}`);
    }
    const execStats = summarize(execs);
    const forkStats = summarize(forks);
    return [
      {
        backend: opts.backend,
        measure: 'sandbox_create_to_first_exec',
        unit: 'ms',
        value: createStats,
        floor: { name: opts.floor.name, value: createFloor },
        ratio: createStats.p50 / createFloor.p50,
        note: 'POST /v1/sandboxes then POST /exec ["echo","ok"], client-side; the sandbox is deleted untimed',
      },
      {
        backend: opts.backend,
        measure: 'sandbox_exec_roundtrip_true',
        unit: 'ms',
        value: execStats,
        floor: { name: 'fork+exec /bin/true from node on the host', value: forkStats },
        ratio: execStats.p50 / forkStats.p50,
        ...(opts.execTargetMs === undefined ? {} : { target: `p50 ≤ ${opts.execTargetMs} ms`, met: execStats.p50 <= opts.execTargetMs }),
        note: 'POST /v1/sandboxes/:id/exec ["true"] in a running sandbox, keep-alive, client-side',
      },
    ];
  } finally {
    for (const id of made) await json(pool, 'DELETE', `/v1/sandboxes/${id}`).catch(() => undefined);
    await pool.close();
  }
}
