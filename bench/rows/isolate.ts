/**
 * Benchmark rows of the isolate backend, through the HTTP API, each beside its raw floor
 * measured in the same run:
 * - cold start (new code each request) and warm start (the same code again): client-side
 *   latency of `POST /v1/workloads`, next to isolated-vm in-process (bench/floors/isolate-floor.ts);
 * - hello-world throughput with 50 concurrent clients, next to a bare Node HTTP server that
 *   returns a constant, driven by the same load generator: wrk (C, one thread, keep-alive) when
 *   it is installed (setup installs it), else an undici loop in this process. On a 2-core
 *   machine the load generator shares the CPU with what it measures: wrk takes ≈ 0.015 ms of CPU
 *   per request, the undici loop ≈ 0.1 ms, a sixth of what a request costs the server. A full
 *   run makes three rounds, alternating API and bare server, and reports each side's median:
 *   this shared virtual machine's speed drifts by ±20 % within minutes.
 */
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Pool, request } from 'undici';
import { summarize, timeSerial } from '../stats.js';
import type { BenchContext, BenchRow } from '../types.js';

const HELLO = 'export default (input) => ({ hello: input.name })';
const CLIENTS = 50;
/**
 * The throughput target: the issue's 3 000 req/s, which it sets beside a bare server doing
 * ≈ 22 000 here. This machine's speed moves both by ±30 % within the day, so the row is met only
 * when the ratio holds too, not whenever a fast minute lifts the absolute number.
 */
const TARGET_RPS = 3000;
const TARGET_RATIO = TARGET_RPS / 22_000;
/**
 * Seconds of load before an API round is measured, the first round and the others. Rounds
 * measured after 1 s of load rose round after round (2 209, 2 534, 2 602 req/s at 06:45 UTC on
 * 11-24, the bare server steady): V8 is still optimising the server's concurrent request path,
 * which the serial rows before barely ran. The row is about a server that has been up a while.
 */
const API_FIRST_WARMUP_S = 8;
const API_WARMUP_S = 3;
/** Throughput rounds (API, then bare server) in a full run: the median of each side is reported. */
const THROUGHPUT_ROUNDS = 3;
/** How long the server is driven before the start rows (see benchIsolate). */
const SERVER_WARMUP_MS = 1_500;

async function post(url: string, code: string): Promise<void> {
  const res = await request(`${url}/v1/workloads`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ runtime: 'js', isolation: 'isolate', code, input: { name: 'bench' } }),
  });
  const body = (await res.body.json()) as { status?: string; output?: { hello?: string } };
  if (res.statusCode !== 200 || body.status !== 'completed' || body.output?.hello !== 'bench') {
    throw new Error(`isolate hello world did not complete: HTTP ${res.statusCode} ${JSON.stringify(body).slice(0, 300)}`);
  }
}

/** Runs the in-process floor in a child (isolated-vm needs --no-node-snapshot). */
async function floor(samples: number): Promise<{ cold: number[]; warm: number[] }> {
  const script = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', 'floors', 'isolate-floor.js');
  const child = spawn(process.execPath, ['--no-node-snapshot', script, String(samples)], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  child.stdout.on('data', (c: Buffer) => (out += c.toString()));
  child.stderr.on('data', (c: Buffer) => (err += c.toString()));
  const code = await new Promise<number | null>((resolve) => child.on('close', resolve));
  if (code !== 0) throw new Error(`isolate floor failed (exit ${String(code)}): ${err.trim()}`);
  return JSON.parse(out) as { cold: number[]; warm: number[] };
}

/** Requests per second that `clients` keep-alive loops get from `fire` over `seconds`. */
async function throughput(origin: string, seconds: number, fire: (pool: Pool) => Promise<void>): Promise<number> {
  const pool = new Pool(origin, { connections: CLIENTS, pipelining: 1 });
  try {
    // A short warm-up fills the connection pool and the backend's warm isolates.
    const warmUntil = performance.now() + 500;
    await Promise.all(Array.from({ length: CLIENTS }, async () => {
      while (performance.now() < warmUntil) await fire(pool);
    }));
    let done = 0;
    const t0 = performance.now();
    const until = t0 + seconds * 1000;
    await Promise.all(Array.from({ length: CLIENTS }, async () => {
      while (performance.now() < until) {
        await fire(pool);
        done++;
      }
    }));
    return done / ((performance.now() - t0) / 1000);
  } finally {
    await pool.close();
  }
}

const WRK = '/usr/bin/wrk';

/**
 * wrk's script: the request, and a count of answers that are not HTTP 200 with a completed
 * workload (checked in every thread, summed at the end), printed with the totals.
 */
function wrkScript(body: string | null): string {
  return `${body === null ? '' : `wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\nwrk.body = [==[${body}]==]\n`}
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args) bad = 0 end
function response(status, headers, body)
  if status ~= 200 or ${body === null ? 'false' : `not string.find(body, '"status":"completed"', 1, true)`} then bad = bad + 1 end
end
function done(summary, latency, requests)
  local b = 0
  for _, t in ipairs(threads) do b = b + t:get("bad") end
  local e = summary.errors
  io.write(string.format("VULCAN requests=%d duration_us=%d bad=%d errors=%d\\n", summary.requests, summary.duration, b, e.connect + e.read + e.write + e.timeout))
end
`;
}

/** Requests per second wrk gets with CLIENTS connections over `seconds` (after a short warm-up run). */
async function wrkRate(url: string, seconds: number, body: string | null, warmS = 1): Promise<number> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vulcan-wrk-'));
  try {
    const script = path.join(dir, 'load.lua');
    fs.writeFileSync(script, wrkScript(body));
    const once = async (secs: number): Promise<number> => {
      const child = spawn(WRK, ['-t1', `-c${CLIENTS}`, `-d${secs}s`, '-s', script, url], { stdio: ['ignore', 'pipe', 'pipe'] });
      let out = '';
      child.stdout.on('data', (c: Buffer) => (out += c.toString()));
      child.stderr.on('data', (c: Buffer) => (out += c.toString()));
      const code = await new Promise<number | null>((resolve) => child.on('close', resolve));
      const m = /VULCAN requests=(\d+) duration_us=(\d+) bad=(\d+) errors=(\d+)/.exec(out);
      if (code !== 0 || m === null) throw new Error(`wrk failed (exit ${String(code)}): ${out.trim().slice(-500)}`);
      const [requests, durationUs, bad, errors] = m.slice(1).map(Number) as [number, number, number, number];
      if (bad > 0 || errors > 0) throw new Error(`throughput run had ${bad} bad answers and ${errors} socket errors of ${requests}: ${out.trim().slice(-500)}`);
      return requests / (durationUs / 1e6);
    };
    await once(warmS);
    return await once(seconds);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

/** A bare Node HTTP server returning a constant, in its own process, on a random port. */
async function bareServer(): Promise<{ origin: string; close: () => void }> {
  const code = "const s=require('http').createServer((q,r)=>{q.resume();q.on('end',()=>r.end('ok'))});s.listen(0,'127.0.0.1',()=>console.log(s.address().port))";
  const child = spawn(process.execPath, ['-e', code], { stdio: ['ignore', 'pipe', 'inherit'] });
  const port = await new Promise<number>((resolve, reject) => {
    child.stdout.once('data', (c: Buffer) => resolve(Number(c.toString().trim())));
    child.once('exit', (c) => reject(new Error(`bare server exited (${String(c)})`)));
  });
  return { origin: `http://127.0.0.1:${port}`, close: () => child.kill('SIGKILL') };
}

export async function benchIsolate(ctx: BenchContext): Promise<BenchRow[]> {
  const n = ctx.samples;
  ctx.progress('isolate: raw floor (isolated-vm in-process)');
  const raw = await floor(n);

  // The server's own JIT warm-up: a server that has been up a while has its request path
  // optimised by V8; one started a moment ago by the benchmark has not. Serial requests of
  // another code for SERVER_WARMUP_MS (the floor warms up too: its first 5 runs are dropped).
  ctx.progress('isolate: server warm-up');
  await post(ctx.url, HELLO); // hosts and warm pools up
  for (const until = performance.now() + SERVER_WARMUP_MS; performance.now() < until; ) await post(ctx.url, `${HELLO} // server warm-up`);

  ctx.progress('isolate: cold start (new code each request)');
  const run = Date.now();
  const cold = await timeSerial(n, (i) => post(ctx.url, `${HELLO} // cold ${run}-${i}`));

  ctx.progress('isolate: warm start (the same code again)');
  for (let i = 0; i < 5; i++) await post(ctx.url, HELLO);
  const warm = await timeSerial(n, () => post(ctx.url, HELLO));

  ctx.progress(`isolate: throughput, ${CLIENTS} clients`);
  const seconds = ctx.quick ? 2 : 5;
  const rounds = ctx.quick ? 1 : THROUGHPUT_ROUNDS;
  const body = JSON.stringify({ runtime: 'js', isolation: 'isolate', code: HELLO, input: { name: 'bench' } });
  const useWrk = fs.existsSync(WRK);
  const loadgen = useWrk ? 'wrk -t1' : 'an undici loop (install wrk for a lighter load generator)';
  const apiRate = (round: number) =>
    useWrk
      ? wrkRate(`${ctx.url}/v1/workloads`, seconds, body, ctx.quick ? 1 : round === 0 ? API_FIRST_WARMUP_S : API_WARMUP_S)
      : throughput(ctx.url, seconds, async (pool) => {
          const res = await pool.request({ path: '/v1/workloads', method: 'POST', headers: { 'content-type': 'application/json' }, body });
          const text = await res.body.text();
          if (res.statusCode !== 200 || !text.includes('"completed"')) throw new Error(`throughput request failed: HTTP ${res.statusCode} ${text.slice(0, 200)}`);
        });
  const apiRates: number[] = [];
  const bareRates: number[] = [];
  const bare = await bareServer();
  try {
    // Rounds alternate between the API and the bare server, so a slow spell of this shared
    // machine falls on both; each side's median is reported.
    for (let round = 0; round < rounds; round++) {
      apiRates.push(await apiRate(round));
      bareRates.push(
        useWrk
          ? await wrkRate(`${bare.origin}/`, seconds, null)
          : await throughput(bare.origin, seconds, async (pool) => {
              const res = await pool.request({ path: '/', method: 'GET' });
              await res.body.text();
            }),
      );
      ctx.progress(`isolate throughput round ${round + 1}/${rounds}: ${Math.round(apiRates[round] ?? 0)} req/s (bare ${Math.round(bareRates[round] ?? 0)})`);
    }
  } finally {
    bare.close();
  }

  ctx.progress('isolate: latency beside a runaway isolate');
  const alone = await timeSerial(n, () => post(ctx.url, HELLO));
  const runaway = await request(`${ctx.url}/v1/workloads/async`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ runtime: 'js', isolation: 'isolate', code: 'export default () => { for (;;) {} }', resources: { timeout_s: 120 } }),
  });
  const { id: runawayId } = (await runaway.body.json()) as { id: string };
  let beside: number[];
  try {
    await new Promise((r) => setTimeout(r, 100));
    beside = await timeSerial(n, () => post(ctx.url, HELLO));
  } finally {
    await (await request(`${ctx.url}/v1/workloads/${runawayId}`, { method: 'DELETE' })).body.text();
  }
  const aloneStats = summarize(alone);
  const besideStats = summarize(beside);

  const coldStats = summarize(cold);
  const warmStats = summarize(warm);
  const rawCold = summarize(raw.cold);
  const rawWarm = summarize(raw.warm);
  const apiStats = summarize(apiRates);
  const bareStats = summarize(bareRates);
  const throughputRatio = apiStats.p50 / bareStats.p50;
  return [
    {
      backend: 'isolate',
      measure: 'cold_start',
      unit: 'ms',
      value: coldStats,
      floor: { name: 'isolated-vm in-process: new isolate + context + compile + call', value: rawCold },
      ratio: coldStats.p50 / rawCold.p50,
      target: 'p50 ≤ 10 ms',
      met: coldStats.p50 <= 10,
      note: 'POST /v1/workloads, js hello world, new source each request (client-side latency)',
    },
    {
      backend: 'isolate',
      measure: 'warm_start',
      unit: 'ms',
      value: warmStats,
      floor: { name: 'isolated-vm in-process: new context in a live isolate + compile + call', value: rawWarm },
      ratio: warmStats.p50 / rawWarm.p50,
      target: 'p50 ≤ 2 ms',
      met: warmStats.p50 <= 2,
      note: 'POST /v1/workloads, the same js hello world again (client-side latency)',
    },
    {
      backend: 'isolate',
      measure: 'latency_beside_runaway',
      unit: 'ms',
      value: besideStats,
      floor: { name: 'the same warm hello world with no runaway, same run', value: aloneStats },
      ratio: besideStats.p50 / aloneStats.p50,
      target: 'p50 ≤ 2× floor',
      met: besideStats.p50 <= 2 * aloneStats.p50,
      note: 'warm js hello world while another tenant spins an infinite loop in an isolate',
    },
    {
      backend: 'isolate',
      measure: 'throughput',
      unit: 'req/s',
      value: apiStats,
      floor: { name: 'bare node http server returning a constant, same load generator', value: bareStats },
      ratio: throughputRatio,
      target: `≥ ${TARGET_RPS} req/s (median) and ≥ ${TARGET_RATIO.toFixed(3)}× bare`,
      met: apiStats.p50 >= TARGET_RPS && throughputRatio >= TARGET_RATIO,
      note: `${CLIENTS} keep-alive connections from ${loadgen}, POST /v1/workloads js hello world; ${rounds} round(s) of ${seconds} s, alternating with the bare server: ${apiRates.map((r) => Math.round(r)).join(', ')} req/s (bare ${bareRates.map((r) => Math.round(r)).join(', ')})`,
    },
  ];
}
