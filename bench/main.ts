/**
 * The benchmark: starts a Vulcan server (or uses --url), runs each available backend's rows
 * (bench/rows/<backend>.ts, each beside its raw floor measured in the same run) and the
 * common measures (bench/measures/common.ts) through the real HTTP API, shows progress on
 * stderr, and prints the table (or JSON). `--out DIR` also writes results.json, results.md
 * and report.html (self-contained, with charts).
 *
 *   npm run bench -- [--backends a,b] [--quick] [--tiny] [--samples N] [--json] [--out DIR] [--url URL] [--mem-budget-mb MiB]
 *   vulcan benchmark …   (the same code)
 */
import { spawnVulcanServe } from '../src/server/spawn-serve.js';
import type { ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { BACKEND_NAMES, type BackendName } from '../src/core/types.js';
import { VulcanClient } from '../src/sdk/index.js';
import { planFor, runCommonMeasures, SharedFloors, type Distribution, type MeasureError } from './measures/common.js';
import { describeMachine } from './measures/machine.js';
import { htmlReport } from './report/html.js';
import { markdownReport } from './report/markdown.js';
import { RESULT_VERSION, type BenchmarkResult } from './result.js';
import type { BenchContext, BenchRow } from './types.js';

/** Most workloads the benchmark's own server runs at once, so the ramp meets the backend's limit, not the queue's. */
const BENCH_MAX_CONCURRENT = 64;

/** What a benchmark run is asked to do. */
export interface BenchmarkOptions {
  /** Backends to measure; all by default (unavailable ones are listed as skipped). */
  readonly backends?: readonly string[];
  /** A short run (under 5 minutes on a 2-core machine). */
  readonly quick?: boolean;
  /** A smoke run for CI: seconds per backend, no meaningful numbers. */
  readonly tiny?: boolean;
  /** Samples per latency measure. Default 40, 8 with quick, 2 with tiny. */
  readonly samples?: number;
  /** A running server to measure; by default the benchmark starts its own. */
  readonly url?: string;
  /** The pid of the server at `url`, when it is on this host: memory per workload reads its processes. */
  readonly serverPid?: number;
  /** The memory budget for max concurrent and throughput clients, MiB. Default a quarter of the host's memory, at most 4096. */
  readonly memBudgetMB?: number;
  /** Progress lines for people. */
  readonly progress?: (msg: string) => void;
  readonly signal?: AbortSignal;
}

type RowsFn = (ctx: BenchContext) => Promise<BenchRow[]>;

/**
 * The rows modules of a backend: `rows/<name>.js` exporting `bench<Name>(ctx)`, then
 * `rows/sandbox-<name>.js` exporting `benchSandbox<Name>(ctx)` (its long-lived sandboxes),
 * each where it exists.
 */
async function loadRowsModules(name: BackendName): Promise<{ file: string; fn: RowsFn }[]> {
  const cap = `${name[0]?.toUpperCase() ?? ''}${name.slice(1)}`;
  const out: { file: string; fn: RowsFn }[] = [];
  for (const [file, fnName] of [
    [name, `bench${cap}`],
    [`sandbox-${name}`, `benchSandbox${cap}`],
  ] as const) {
    const fn = await loadRows(file, fnName);
    if (fn) out.push({ file, fn });
  }
  return out;
}

async function loadRows(file: string, fn: string): Promise<RowsFn | undefined> {
  try {
    const mod = (await import(`./rows/${file}.js`)) as Record<string, unknown>;
    const f = mod[fn];
    return typeof f === 'function' ? (f as RowsFn) : undefined;
  } catch (err) {
    // Only this rows file being absent is fine; a rows file whose own imports fail is an error.
    if ((err as NodeJS.ErrnoException).code === 'ERR_MODULE_NOT_FOUND' && (err as Error).message.includes(`rows/${file}.js'`)) return undefined;
    throw err;
  }
}

/**
 * The data dir whose image store the benchmark's server shares (gvisor, container and
 * microvm run images): VULCAN_IMAGES_DATA_DIR, else VULCAN_DATA_DIR or /var/lib/vulcan, else
 * the tests' /var/lib/vulcan; the first that has an `images` directory.
 */
export function imagesDataDir(): string | undefined {
  const candidates = [process.env.VULCAN_IMAGES_DATA_DIR, process.env.VULCAN_DATA_DIR ?? '/var/lib/vulcan', '/var/lib/vulcan'];
  return candidates.find((d): d is string => d !== undefined && d !== '' && fs.existsSync(path.join(d, 'images')));
}

async function startServer(dataDir: string): Promise<{ url: string; child: ChildProcess }> {
  // A fresh data dir (its own database), sharing the built images through a symlink.
  const images = imagesDataDir();
  if (images) fs.symlinkSync(path.join(images, 'images'), path.join(dataDir, 'images'));
  const { url, child } = await spawnVulcanServe({ dataDir, env: { VULCAN_MAX_CONCURRENT: String(BENCH_MAX_CONCURRENT) }, timeoutMs: 120_000 });
  return { url, child };
}

/** The run's mode from its options. */
function modeOf(opts: BenchmarkOptions): BenchmarkResult['mode'] {
  return opts.tiny ? 'tiny' : opts.quick ? 'quick' : 'full';
}

/** Runs the benchmark and returns its result. Starts (and always stops) its own server unless `url` is given. */
export async function runBenchmark(opts: BenchmarkOptions = {}): Promise<BenchmarkResult> {
  const started = new Date();
  const t0 = performance.now();
  const mode = modeOf(opts);
  const samples = opts.samples ?? (mode === 'tiny' ? 2 : mode === 'quick' ? 8 : 40);
  const memBudgetMB = opts.memBudgetMB ?? Math.min(4096, Math.floor(os.totalmem() / 2 ** 20 / 4));
  const progress = (msg: string) => opts.progress?.(`+${((performance.now() - t0) / 1000).toFixed(1)}s ${msg}`);
  // Always in the registry's order (weakest wall first), whatever order the flag named them in.
  const wanted = opts.backends?.length ? BACKEND_NAMES.filter((b) => opts.backends?.includes(b)) : [...BACKEND_NAMES];
  for (const b of opts.backends ?? []) if (!(BACKEND_NAMES as readonly string[]).includes(b)) throw new Error(`--backends: unknown backend ${JSON.stringify(b)}; choose from ${BACKEND_NAMES.join(', ')}`);

  progress('describing the machine');
  const machine = await describeMachine();
  let child: ChildProcess | undefined;
  let dataDir: string | undefined;
  let url = opts.url;
  const rows: BenchRow[] = [];
  const distributions: Distribution[] = [];
  const skipped: { backend: string; reason: string }[] = [];
  const errors: MeasureError[] = [];
  const measured: string[] = [];
  try {
    if (!url) {
      dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'vulcan-bench-'));
      progress('starting a server (probing backends)');
      ({ url, child } = await startServer(dataDir));
      progress(`server at ${url}`);
    }
    const client = new VulcanClient({ url });
    const infos = await client.backends();
    const plan = planFor(mode, samples, memBudgetMB);
    const floors = new SharedFloors(plan);
    for (const name of wanted) {
      opts.signal?.throwIfAborted();
      const info = infos.find((b) => b.name === name);
      if (!info?.available) {
        skipped.push({ backend: name, reason: info?.reason ?? 'not loaded on this node' });
        progress(`skip ${name}: ${info?.reason ?? 'not loaded on this node'}`);
        continue;
      }
      measured.push(name);
      const have = new Set<string>();
      for (const { file, fn } of await loadRowsModules(name)) {
        progress(`${name}: rows (bench/rows/${file})`);
        try {
          const got = await fn({ url, samples, quick: mode !== 'full', progress });
          for (const r of got) have.add(r.measure);
          rows.push(...got);
        } catch (err) {
          errors.push({ backend: name, measure: `rows:${file}`, message: (err as Error).message });
          progress(`${name}: rows (${file}) failed: ${(err as Error).message}`);
        }
      }
      const common = await runCommonMeasures({
        url,
        ...((child?.pid ?? opts.serverPid) !== undefined ? { serverPid: child?.pid ?? opts.serverPid } : {}),
        backend: name,
        runtimes: info.runtimes,
        have,
        plan,
        floors,
        progress,
      });
      rows.push(...common.rows);
      distributions.push(...common.distributions);
      errors.push(...common.errors);
      progress(`${name}: done`);
    }
  } finally {
    if (child) {
      const exited = new Promise((r) => child?.once('exit', r));
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
      await exited;
    }
    if (dataDir) fs.rmSync(dataDir, { recursive: true, force: true });
  }
  return {
    version: RESULT_VERSION,
    mode,
    quick: mode !== 'full',
    samples,
    mem_budget_mb: memBudgetMB,
    machine,
    backends: measured,
    rows,
    distributions,
    skipped,
    errors,
    started_at: started.toISOString(),
    finished_at: new Date().toISOString(),
    duration_s: Math.round((performance.now() - t0) / 100) / 10,
  };
}

/** Writes results.json, results.md and report.html into `dir`. */
export function writeResult(dir: string, result: BenchmarkResult): void {
  fs.mkdirSync(dir, { recursive: true });
  const write = (name: string, text: string) => {
    // Write then rename, so a reader (GET /v1/stats/benchmark) never sees half a file.
    fs.writeFileSync(path.join(dir, `.${name}.tmp`), text);
    fs.renameSync(path.join(dir, `.${name}.tmp`), path.join(dir, name));
  };
  write('results.md', markdownReport(result));
  write('report.html', htmlReport(result));
  write('results.json', `${JSON.stringify(result, null, 2)}\n`);
}

/** Options of the command line (`npm run bench --` and `vulcan benchmark`). */
export interface BenchmarkCliOptions extends Omit<BenchmarkOptions, 'progress' | 'signal'> {
  readonly json?: boolean;
  readonly out?: string;
}

/** The command: runs, shows progress on stderr, prints the table or JSON, writes `out`. Returns the exit code. */
export async function benchmarkCommand(opts: BenchmarkCliOptions): Promise<number> {
  const result = await runBenchmark({ ...opts, progress: (msg) => process.stderr.write(`[bench] ${msg}\n`) });
  if (opts.out) {
    writeResult(opts.out, result);
    process.stderr.write(`[bench] wrote ${path.join(opts.out, 'results.json')}, results.md and report.html\n`);
  }
  process.stdout.write(opts.json ? `${JSON.stringify(result, null, 2)}\n` : markdownReport(result));
  return result.backends.length === 0 ? 1 : 0;
}

/** Parses a positive number option. */
export function positive(name: string, raw: string | undefined): number | undefined {
  if (raw === undefined) return undefined;
  const n = Number(raw);
  if (!Number.isFinite(n) || n <= 0) throw new Error(`${name} must be a positive number; got ${JSON.stringify(raw)}`);
  return n;
}

async function cli(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: {
      backends: { type: 'string' },
      quick: { type: 'boolean', default: false },
      tiny: { type: 'boolean', default: false },
      json: { type: 'boolean', default: false },
      out: { type: 'string' },
      url: { type: 'string' },
      samples: { type: 'string' },
      'mem-budget-mb': { type: 'string' },
      'server-pid': { type: 'string' },
    },
  });
  const samples = positive('--samples', values.samples);
  const memBudgetMB = positive('--mem-budget-mb', values['mem-budget-mb']);
  const serverPid = positive('--server-pid', values['server-pid']);
  return benchmarkCommand({
    ...(values.backends ? { backends: values.backends.split(',').map((s) => s.trim()).filter(Boolean) } : {}),
    quick: values.quick ?? false,
    tiny: values.tiny ?? false,
    json: values.json ?? false,
    ...(values.out ? { out: values.out } : {}),
    ...(values.url ? { url: values.url } : {}),
    ...(samples ? { samples: Math.round(samples) } : {}),
    ...(memBudgetMB ? { memBudgetMB } : {}),
    ...(serverPid ? { serverPid } : {}),
  });
}

// Run as a program (`node dist/bench/main.js`), not when imported by `vulcan benchmark` or the server.
if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  try {
    process.exitCode = await cli(process.argv.slice(2));
  } catch (err) {
    process.stderr.write(`bench: ${(err as Error).message}\n`);
    process.exitCode = 2;
  }
}
