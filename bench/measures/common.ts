/**
 * The measures every backend gets from the benchmark itself, through the HTTP API, beside
 * what its rows file (bench/rows/<backend>.ts) measures: hello-world round trip (the
 * latency distribution of the report), memory per workload, max concurrent within a memory
 * budget, hello-world throughput, and CPU-bound throughput. A measure that its rows file
 * already gives (same `measure` name) is not repeated.
 */
import os from 'node:os';
import { summarize } from '../stats.js';
import type { BenchRow } from '../types.js';
import { bareHttpFloor, calibrateCpu, cpuFloor, cpuThroughput, helloThroughput, maxConcurrent } from './load.js';
import { measureMemory } from './memory.js';
import { cpuLanguage, describeFailure, helloBody, helloOk, pickRuntime, runSync, timeArgv, type MeasureRuntime } from './workloads.js';

/** How hard the common measures try. */
export interface CommonPlan {
  readonly mode: 'tiny' | 'quick' | 'full';
  readonly samples: number;
  /** Idle workloads alive at once for the memory reading, and rounds of it. */
  readonly memoryK: number;
  readonly memoryRounds: number;
  /** The user's memory budget for max concurrent, MiB. */
  readonly memBudgetMB: number;
  /** Top of the concurrency ramp, and batches per level. */
  readonly maxLevel: number;
  readonly levelRounds: number;
  /** Hello-world throughput: clients and seconds; slow backends get a longer window, up to maxSeconds. */
  readonly clients: number;
  readonly seconds: number;
  readonly maxSeconds: number;
  /** Time budgets of the serial hello-world samples and of the concurrency ramp, ms: a slow backend (a TCG microVM) gets fewer samples, never fewer than 3. */
  readonly helloBudgetMs: number;
  readonly rampBudgetMs: number;
  /** CPU task: target milliseconds bare, tasks per loop, loops at once. */
  readonly cpuTaskMs: number;
  readonly cpuPerLoop: number;
  readonly cpuParallel: number;
  /**
   * Backends whose hello world takes longer than this (ms) skip the CPU-bound measure: under
   * emulation (a TCG microVM) one 1 s task takes most of a minute. Infinity in the full run.
   */
  readonly cpuSkipAboveMs: number;
}

/** The plan for a run: tiny (CI smoke), quick, or full. */
export function planFor(mode: 'tiny' | 'quick' | 'full', samples: number, memBudgetMB: number): CommonPlan {
  const cores = os.availableParallelism();
  if (mode === 'tiny') return { mode, samples, memoryK: 2, memoryRounds: 1, memBudgetMB, maxLevel: 2, levelRounds: 1, clients: 4, seconds: 1, maxSeconds: 3, helloBudgetMs: 5_000, rampBudgetMs: 10_000, cpuTaskMs: 200, cpuPerLoop: 1, cpuParallel: 1, cpuSkipAboveMs: 1500 };
  if (mode === 'quick') return { mode, samples, memoryK: 4, memoryRounds: 1, memBudgetMB, maxLevel: 16, levelRounds: 1, clients: 50, seconds: 3, maxSeconds: 5, helloBudgetMs: 8_000, rampBudgetMs: 10_000, cpuTaskMs: 1000, cpuPerLoop: 1, cpuParallel: cores, cpuSkipAboveMs: 1500 };
  return { mode, samples, memoryK: 8, memoryRounds: 3, memBudgetMB, maxLevel: 64, levelRounds: 3, clients: 50, seconds: 10, maxSeconds: 60, helloBudgetMs: 300_000, rampBudgetMs: 300_000, cpuTaskMs: 1000, cpuPerLoop: 3, cpuParallel: cores, cpuSkipAboveMs: Number.POSITIVE_INFINITY };
}

/** Floors shared by every backend, measured once per run and reused. */
export class SharedFloors {
  private http?: Promise<number>;
  private readonly cpuN = new Map<string, Promise<number>>();
  private readonly cpu = new Map<string, Promise<{ rate: number; n: number }>>();

  constructor(private readonly plan: CommonPlan) {}

  /** req/s of a bare Node HTTP server with the same clients and seconds. */
  httpRate(): Promise<number> {
    this.http ??= bareHttpFloor(this.plan.clients, this.plan.seconds);
    return this.http;
  }

  /** Iterations of the CPU task for `lang` (≈ cpuTaskMs bare). */
  cpuIterations(lang: 'python' | 'js'): Promise<number> {
    let p = this.cpuN.get(lang);
    if (!p) {
      p = calibrateCpu(lang, this.plan.cpuTaskMs);
      this.cpuN.set(lang, p);
    }
    return p;
  }

  /** tasks/s of the CPU task run bare, same parallelism. */
  cpuRate(lang: 'python' | 'js'): Promise<{ rate: number; n: number }> {
    let p = this.cpu.get(lang);
    if (!p) {
      p = (async () => {
        const n = await this.cpuIterations(lang);
        const r = await cpuFloor(lang, n, this.plan.cpuParallel, this.plan.cpuPerLoop);
        return { rate: r.rate, n };
      })();
      this.cpu.set(lang, p);
    }
    return p;
  }
}

/** Latency samples kept for the report's distribution charts. */
export interface Distribution {
  readonly backend: string;
  readonly measure: string;
  readonly unit: 'ms';
  readonly samples: readonly number[];
}

/** A measure that could not be taken, and why. */
export interface MeasureError {
  readonly backend: string;
  readonly measure: string;
  readonly message: string;
}

export interface CommonInput {
  readonly url: string;
  /** The server's pid, when the benchmark started it (memory needs it). */
  readonly serverPid?: number;
  readonly backend: string;
  readonly runtimes: readonly string[];
  /** Measures the rows file already gave. */
  readonly have: ReadonlySet<string>;
  readonly plan: CommonPlan;
  readonly floors: SharedFloors;
  readonly progress: (msg: string) => void;
}

export interface CommonOutput {
  readonly rows: BenchRow[];
  readonly distributions: Distribution[];
  readonly errors: MeasureError[];
}

/** Keeps at most `max` evenly spread samples, so the JSON and the report stay small. */
function thin(xs: readonly number[], max = 1000): number[] {
  if (xs.length <= max) return [...xs];
  const step = xs.length / max;
  return Array.from({ length: max }, (_, i) => xs[Math.floor(i * step)] ?? 0);
}

const round2 = (x: number) => Math.round(x * 100) / 100;

/** The bare interpreter start-up that hello_roundtrip is compared with. */
function bareStartArgv(runtime: MeasureRuntime): { argv: string[]; name: string } | undefined {
  if (runtime === 'python') return { argv: ['/usr/bin/python3', '-c', 'pass'], name: 'bare /usr/bin/python3 -c pass (fork+exec, no sandbox)' };
  if (runtime === 'node') return { argv: [process.execPath, '-e', '0'], name: 'bare node -e 0 (fork+exec, no sandbox)' };
  if (runtime === 'sh') return { argv: ['/bin/sh', '-c', 'echo hello bench >/dev/null'], name: 'bare sh -c echo (fork+exec, no sandbox)' };
  return undefined;
}

/** Runs the common measures on one backend; a measure that fails is reported and skipped. */
export async function runCommonMeasures(input: CommonInput): Promise<CommonOutput> {
  const { url, backend, plan, floors, progress } = input;
  const rows: BenchRow[] = [];
  const distributions: Distribution[] = [];
  const errors: MeasureError[] = [];
  const runtime = pickRuntime(input.runtimes);
  if (!runtime) {
    errors.push({ backend, measure: '*', message: `no runtime the common measures can write (it serves ${input.runtimes.join(', ')})` });
    return { rows, distributions, errors };
  }
  const attempt = async (measure: string, fn: () => Promise<void>) => {
    if (input.have.has(measure)) return;
    progress(`${backend}: ${measure}`);
    try {
      await fn();
    } catch (err) {
      const message = (err as Error).message;
      errors.push({ backend, measure, message });
      progress(`${backend}: ${measure} failed: ${message}`);
    }
  };

  // Hello-world round trip, serial: the distribution chart, and the scale for the rest.
  let helloP50 = 100;
  await attempt('hello_roundtrip', async () => {
    const body = helloBody(backend, runtime);
    const first = await runSync(url, body);
    if (!helloOk(runtime, first.rec)) throw new Error(`hello world failed: ${describeFailure(first.rec)}`);
    const bare = bareStartArgv(runtime);
    const lat: number[] = [];
    const floor: number[] = [];
    const t0 = performance.now();
    for (let i = 0; i < plan.samples; i++) {
      if (i >= 3 && performance.now() - t0 > plan.helloBudgetMs) {
        progress(`${backend}: hello_roundtrip stopped at ${i} samples (time budget ${plan.helloBudgetMs / 1000} s)`);
        break;
      }
      if (bare) floor.push(await timeArgv(bare.argv));
      const { rec, ms } = await runSync(url, body);
      if (!helloOk(runtime, rec)) throw new Error(`hello world failed: ${describeFailure(rec)}`);
      lat.push(ms);
    }
    const value = summarize(lat);
    helloP50 = value.p50;
    const f = bare ? summarize(floor) : undefined;
    rows.push({
      backend,
      measure: 'hello_roundtrip',
      unit: 'ms',
      value,
      ...(f && bare ? { floor: { name: bare.name, value: f }, ratio: value.p50 / f.p50 } : {}),
      note: `POST /v1/workloads (sync) ${runtime} hello world, one at a time, client-side latency`,
    });
    distributions.push({ backend, measure: 'hello_roundtrip', unit: 'ms', samples: lat.map(round2) });
  });

  let memPerWorkload = 64;
  await attempt('memory_per_workload', async () => {
    if (input.serverPid === undefined) throw new Error('needs a server the benchmark started itself (not --url): it reads the server\'s processes');
    // A slow starter (a TCG microVM) gets fewer, longer-lived idle workloads, so all are alive at once.
    const k = helloP50 > 1000 ? Math.min(2, plan.memoryK) : plan.memoryK;
    const seconds = Math.min(30, Math.max(2, 2 + (2 * helloP50 * k) / os.availableParallelism() / 1000));
    const m = await measureMemory({ url, serverPid: input.serverPid, isolation: backend, runtime, k, rounds: plan.memoryRounds, seconds, memMB: 128, progress });
    memPerWorkload = Math.max(1, m.perWorkload.p50);
    rows.push({
      backend,
      measure: 'memory_per_workload',
      unit: 'MiB',
      value: m.perWorkload,
      floor: { name: `the same idle ${runtime} code run bare on the host (PSS per process)`, value: m.bare },
      ratio: m.perWorkload.p50 / m.bare.p50,
      note: m.note,
    });
  });

  await attempt('max_concurrent', async () => {
    const bound = Math.max(1000, 10 * helloP50);
    const c = await maxConcurrent({ url, isolation: backend, runtime, memPerWorkloadMB: memPerWorkload, memBudgetMB: plan.memBudgetMB, p99BoundMs: bound, maxLevel: plan.maxLevel, rounds: plan.levelRounds, budgetMs: plan.rampBudgetMs, progress });
    if (c.max === 0) throw new Error(`not even one workload held the bounds: ${c.stoppedBy}`);
    const v = { p50: c.max, p99: c.max, mean: c.max, n: c.levels.length };
    rows.push({
      backend,
      measure: 'max_concurrent',
      unit: 'workloads',
      value: v,
      note: `hello world at 1, 2, 4, … at once (${plan.levelRounds} batch(es) per level); bounds: no errors, p99 ≤ ${bound.toFixed(0)} ms, level × ${memPerWorkload.toFixed(1)} MiB ≤ budget ${plan.memBudgetMB} MiB; stopped by ${c.stoppedBy}; levels ${c.levels.map((l) => `${l.concurrency}:p99=${l.latency.p99.toFixed(0)}ms${l.errors ? `,err=${l.errors}` : ''}`).join(' ')}`,
    });
  });

  await attempt('throughput', async () => {
    // Clients beyond what the memory budget holds would only measure swapping. A closed loop of
    // c clients sees requests take about c × p50 ÷ cores; the window must hold several of them,
    // so a slow backend gets a longer window (up to maxSeconds) and then fewer clients.
    const cores = os.availableParallelism();
    const budgetClients = Math.max(1, Math.min(plan.clients, Math.floor(plan.memBudgetMB / memPerWorkload)));
    const perRequestS = (c: number) => (c * helloP50) / cores / 1000;
    const seconds = Math.min(plan.maxSeconds, Math.max(plan.seconds, Math.ceil(3 * perRequestS(budgetClients))));
    const clients = Math.max(1, Math.min(budgetClients, Math.floor((seconds / 3) * cores * 1000 / Math.max(1, helloP50))));
    const capped = clients < plan.clients ? `; clients capped at ${clients} (${clients < budgetClients ? `so that a request completes well within the ${seconds} s window` : 'by the memory budget'})` : '';
    const r = await helloThroughput(url, backend, runtime, clients, seconds);
    if (r.completed === 0) throw new Error(`no request completed in ${seconds} s with ${clients} clients${r.firstError ? `: ${r.firstError}` : ''}`);
    const bare = await floors.httpRate();
    rows.push({
      backend,
      measure: 'throughput',
      unit: 'req/s',
      value: { p50: r.rate, p99: r.rate, mean: r.rate, n: r.completed },
      floor: { name: `bare node http server returning a constant, ${plan.clients} clients`, value: { p50: bare, p99: bare, mean: bare, n: 1 } },
      ratio: r.rate / bare,
      note: `${clients} keep-alive clients for ${seconds} s, POST /v1/workloads ${runtime} hello world; ${r.completed} completed, ${r.errors} errors${r.firstError ? ` (first: ${r.firstError.slice(0, 120)})` : ''}; request p50 ${summarize(r.latencies).p50.toFixed(0)} ms${capped}`,
    });
    distributions.push({ backend, measure: 'throughput_latency', unit: 'ms', samples: thin(r.latencies).map(round2) });
  });

  const lang = cpuLanguage(runtime);
  if (lang && helloP50 > plan.cpuSkipAboveMs) {
    errors.push({ backend, measure: 'cpu_throughput', message: `skipped in this ${plan.mode} run: a hello world takes ${(helloP50 / 1000).toFixed(1)} s here, so one ≈ 1 s task would take most of a minute; the full run (vulcan benchmark) measures it` });
    progress(`${backend}: cpu_throughput skipped (slow start; the full run measures it)`);
  } else if (lang) {
    await attempt('cpu_throughput', async () => {
      const n = await floors.cpuIterations(lang);
      const floor = await floors.cpuRate(lang);
      const r = await cpuThroughput(url, backend, runtime, n, plan.cpuParallel, plan.cpuPerLoop);
      const lat = summarize(r.latencies);
      rows.push({
        backend,
        measure: 'cpu_throughput',
        unit: 'tasks/s',
        value: { p50: r.rate, p99: r.rate, mean: r.rate, n: r.tasks },
        floor: { name: `the same ${lang} task run bare on the host, ${plan.cpuParallel} at a time`, value: { p50: floor.rate, p99: floor.rate, mean: floor.rate, n: r.tasks } },
        ratio: r.rate / floor.rate,
        note: `a ${lang} loop of ${n} iterations (≈ ${plan.cpuTaskMs} ms bare here), ${plan.cpuParallel} at a time, ${r.tasks} tasks; task latency p50 ${lat.p50.toFixed(0)} ms`,
      });
    });
  } else {
    errors.push({ backend, measure: 'cpu_throughput', message: `no CPU task written for runtime ${runtime}` });
  }
  return { rows, distributions, errors };
}
