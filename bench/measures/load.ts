/**
 * The load measures, through the HTTP API: hello-world throughput from many keep-alive
 * clients for a fixed time, CPU-bound throughput (a ≈ 1 s task, N at a time), and the
 * largest concurrency that holds within an error and latency bound and a memory budget.
 * The load generator is undici's connection pool driven by one loop per client.
 */
import { spawn } from 'node:child_process';
import { Pool } from 'undici';
import { summarize, type Stats } from '../stats.js';
import { bareCpuArgv, cpuBody, cpuChecksum, describeFailure, helloBody, helloOk, runSync, timeArgv, type MeasureRuntime } from './workloads.js';

export interface LoadResult {
  /** Completed requests per second. */
  readonly rate: number;
  readonly completed: number;
  readonly errors: number;
  /** Client-side latency of each completed request, ms. */
  readonly latencies: number[];
  readonly firstError?: string;
}

/**
 * `clients` loops each send `fire` back to back for `seconds` (after a short warm-up that is
 * not counted); requests still in flight at the end are awaited and not counted.
 */
export async function closedLoop(origin: string, clients: number, seconds: number, fire: (pool: Pool) => Promise<{ ok: boolean; why?: string }>): Promise<LoadResult> {
  const pool = new Pool(origin, { connections: clients, pipelining: 1, headersTimeout: 0, bodyTimeout: 0 });
  try {
    const warmUntil = performance.now() + 300;
    await Promise.all(
      Array.from({ length: clients }, async () => {
        while (performance.now() < warmUntil) await fire(pool);
      }),
    );
    let completed = 0;
    let errors = 0;
    let firstError: string | undefined;
    const latencies: number[] = [];
    const t0 = performance.now();
    const until = t0 + seconds * 1000;
    await Promise.all(
      Array.from({ length: clients }, async () => {
        while (performance.now() < until) {
          const s = performance.now();
          let r: { ok: boolean; why?: string };
          try {
            r = await fire(pool);
          } catch (err) {
            r = { ok: false, why: (err as Error).message };
          }
          const end = performance.now();
          if (end > until) break;
          if (r.ok) {
            completed++;
            latencies.push(end - s);
          } else {
            errors++;
            firstError ??= r.why;
          }
        }
      }),
    );
    return { rate: completed / seconds, completed, errors, latencies, ...(firstError ? { firstError } : {}) };
  } finally {
    await pool.close();
  }
}

/** Hello-world throughput of one backend. */
export function helloThroughput(url: string, isolation: string, runtime: MeasureRuntime, clients: number, seconds: number): Promise<LoadResult> {
  const body = helloBody(isolation, runtime);
  return closedLoop(new URL(url).origin, clients, seconds, async (pool) => {
    const { rec } = await runSync(url, body, pool);
    return helloOk(runtime, rec) ? { ok: true } : { ok: false, why: describeFailure(rec) };
  });
}

/** A bare Node HTTP server returning a constant, in its own process: the throughput floor. */
export async function bareHttpFloor(clients: number, seconds: number): Promise<number> {
  const code = "const s=require('http').createServer((q,r)=>{q.resume();q.on('end',()=>r.end('ok'))});s.listen(0,'127.0.0.1',()=>console.log(s.address().port))";
  const child = spawn(process.execPath, ['-e', code], { stdio: ['ignore', 'pipe', 'inherit'] });
  try {
    const port = await new Promise<number>((resolve, reject) => {
      child.stdout.once('data', (c: Buffer) => resolve(Number(c.toString().trim())));
      child.once('exit', (c) => reject(new Error(`bare server exited (${String(c)})`)));
    });
    const r = await closedLoop(`http://127.0.0.1:${port}`, clients, seconds, async (pool) => {
      const res = await pool.request({ path: '/', method: 'GET' });
      await res.body.text();
      return { ok: res.statusCode === 200 };
    });
    return r.rate;
  } finally {
    child.kill('SIGKILL');
  }
}

/**
 * Iterations of the CPU task that take ≈ `targetMs` bare on this host: one timed probe run,
 * scaled (the interpreter's start-up is measured separately and taken off).
 */
export async function calibrateCpu(lang: 'python' | 'js', targetMs = 1000): Promise<number> {
  const probeN = lang === 'python' ? 2_000_000 : 50_000_000;
  const empty = await timeArgv(bareCpuArgv(lang, 0));
  const probe = await timeArgv(bareCpuArgv(lang, probeN));
  const perIter = Math.max(1e-9, (probe - empty) / probeN);
  return Math.max(1000, Math.round(targetMs / perIter));
}

export interface CpuResult {
  /** Tasks completed per second with `parallel` at a time. */
  readonly rate: number;
  readonly tasks: number;
  readonly latencies: number[];
}

/** `parallel` loops each run `perLoop` tasks; the rate is tasks ÷ wall seconds. */
async function cpuLoop(parallel: number, perLoop: number, task: () => Promise<void>): Promise<CpuResult> {
  const latencies: number[] = [];
  const t0 = performance.now();
  await Promise.all(
    Array.from({ length: parallel }, async () => {
      for (let i = 0; i < perLoop; i++) {
        const s = performance.now();
        await task();
        latencies.push(performance.now() - s);
      }
    }),
  );
  const seconds = (performance.now() - t0) / 1000;
  return { rate: latencies.length / seconds, tasks: latencies.length, latencies };
}

/** CPU-bound throughput of one backend through the API. */
export function cpuThroughput(url: string, isolation: string, runtime: MeasureRuntime, n: number, parallel: number, perLoop: number): Promise<CpuResult> {
  const body = cpuBody(isolation, runtime, n);
  if (!body) throw new Error(`no CPU task for runtime ${runtime}`);
  const want = cpuChecksum(n);
  return cpuLoop(parallel, perLoop, async () => {
    const { rec } = await runSync(url, body);
    if (rec.status !== 'completed' || rec.output !== want) throw new Error(`CPU task failed: ${describeFailure(rec)}`);
  });
}

/** The same CPU task run bare on the host, `parallel` at a time: the floor. */
export function cpuFloor(lang: 'python' | 'js', n: number, parallel: number, perLoop: number): Promise<CpuResult> {
  const argv = bareCpuArgv(lang, n);
  return cpuLoop(parallel, perLoop, async () => {
    await timeArgv(argv);
  });
}

export interface ConcurrencyResult {
  /** The largest concurrency that held the bounds. */
  readonly max: number;
  /** Every level tried: concurrency, p50/p99 ms and errors. */
  readonly levels: readonly { readonly concurrency: number; readonly latency: Stats; readonly errors: number }[];
  /** Why the ramp stopped. */
  readonly stoppedBy: string;
}

/**
 * Raises concurrency (1, 2, 4, …) of hello-world requests, `rounds` batches per level, until
 * an error appears, the p99 passes `p99BoundMs`, the next level's memory (level × MiB per
 * workload) passes `memBudgetMB`, or `maxLevel` is reached.
 */
export async function maxConcurrent(opts: {
  readonly url: string;
  readonly isolation: string;
  readonly runtime: MeasureRuntime;
  readonly memPerWorkloadMB: number;
  readonly memBudgetMB: number;
  readonly p99BoundMs: number;
  readonly maxLevel: number;
  readonly rounds: number;
  /** Stops before a level that would likely end past this many ms from the start. */
  readonly budgetMs: number;
  readonly progress: (msg: string) => void;
}): Promise<ConcurrencyResult> {
  const body = helloBody(opts.isolation, opts.runtime);
  const levels: { concurrency: number; latency: Stats; errors: number }[] = [];
  let max = 0;
  let stoppedBy = `reached the ramp's top (${opts.maxLevel})`;
  const pool = new Pool(new URL(opts.url).origin, { connections: opts.maxLevel, pipelining: 1, headersTimeout: 0, bodyTimeout: 0 });
  const t0 = performance.now();
  try {
    for (let c = 1; c <= opts.maxLevel; c *= 2) {
      const last = levels.at(-1);
      // The next level takes about twice the last one's p99 per batch when CPU-bound; more
      // under emulation (TCG), so three times is the estimate.
      if (last && performance.now() - t0 + 3 * last.latency.p99 * opts.rounds > opts.budgetMs) {
        stoppedBy = `the time budget (${(opts.budgetMs / 1000).toFixed(0)} s) before level ${c}`;
        break;
      }
      if (c * opts.memPerWorkloadMB > opts.memBudgetMB) {
        stoppedBy = `memory budget: ${c} × ${opts.memPerWorkloadMB.toFixed(1)} MiB > ${opts.memBudgetMB} MiB`;
        break;
      }
      const lat: number[] = [];
      let errors = 0;
      let why = '';
      for (let r = 0; r < opts.rounds; r++) {
        await Promise.all(
          Array.from({ length: c }, async () => {
            try {
              const { rec, ms } = await runSync(opts.url, body, pool);
              if (helloOk(opts.runtime, rec)) lat.push(ms);
              else {
                errors++;
                why ||= describeFailure(rec);
              }
            } catch (err) {
              errors++;
              why ||= (err as Error).message;
            }
          }),
        );
      }
      const latency = summarize(lat);
      levels.push({ concurrency: c, latency, errors });
      opts.progress(`${opts.isolation} concurrency ${c}: p99 ${latency.p99.toFixed(0)} ms, ${errors} errors`);
      if (errors > 0) {
        stoppedBy = `errors at ${c}: ${why}`;
        break;
      }
      if (latency.p99 > opts.p99BoundMs) {
        stoppedBy = `p99 ${latency.p99.toFixed(0)} ms > bound ${opts.p99BoundMs.toFixed(0)} ms at ${c}`;
        break;
      }
      max = c;
    }
  } finally {
    await pool.close();
  }
  return { max, levels, stoppedBy };
}
