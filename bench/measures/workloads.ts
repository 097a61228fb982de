/**
 * What the common measures run on each backend, through the HTTP API: the runtime picked
 * for the backend, and the three workloads every runtime can express (hello world, an idle
 * workload that stays alive, a fixed amount of CPU work), plus the same code run bare on the
 * host as the floor.
 */
import { spawn } from 'node:child_process';
import { request, type Pool } from 'undici';

/** Runtimes the common measures know how to write, in order of preference. */
export const MEASURE_RUNTIMES = ['python', 'js', 'node', 'sh'] as const;
export type MeasureRuntime = (typeof MEASURE_RUNTIMES)[number];

/** The first runtime of MEASURE_RUNTIMES that the backend serves, or undefined. */
export function pickRuntime(runtimes: readonly string[]): MeasureRuntime | undefined {
  return MEASURE_RUNTIMES.find((r) => runtimes.includes(r));
}

/** A workload request body (the API's shape). */
export interface WorkloadBody {
  readonly runtime: string;
  readonly isolation: string;
  readonly code: string;
  readonly input: unknown;
  readonly resources?: { readonly mem_mb?: number; readonly timeout_s?: number; readonly cpus?: number };
}

/** Hello world: returns `"hello " + input.name` (sh prints it). */
export function helloBody(isolation: string, runtime: MeasureRuntime): WorkloadBody {
  const code = {
    python: 'def main(input):\n    return "hello " + input["name"]\n',
    js: 'export default (input) => "hello " + input.name;\n',
    node: 'export default (input) => "hello " + input.name;\n',
    sh: 'echo hello bench\n',
  }[runtime];
  return { runtime, isolation, code, input: { name: 'bench' } };
}

/** An idle workload that stays alive `seconds` (sleeping, not spinning), for memory readings. */
export function idleBody(isolation: string, runtime: MeasureRuntime, seconds: number, memMB: number): WorkloadBody {
  const code = {
    python: 'import time\ndef main(input):\n    time.sleep(input["s"])\n    return 1\n',
    js: 'export default (input) => new Promise((r) => setTimeout(() => r(1), input.s * 1000));\n',
    node: 'export default (input) => new Promise((r) => setTimeout(() => r(1), input.s * 1000));\n',
    sh: `sleep ${seconds}\n`,
  }[runtime];
  return { runtime, isolation, code, input: { s: seconds }, resources: { mem_mb: memMB, timeout_s: Math.ceil(seconds + 60) } };
}

/** Source of the CPU task: `n` iterations of integer arithmetic, returning a checksum. */
function cpuSource(runtime: 'python' | 'js'): string {
  return runtime === 'python'
    ? 'def main(input):\n    s = 0\n    for i in range(input["n"]):\n        s = (s + i * i) % 1000003\n    return s\n'
    : 'export default (input) => { let s = 0; for (let i = 0; i < input.n; i++) s = (s + i * i) % 1000003; return s; };\n';
}

/** The CPU task's language for a runtime (sh has none). */
export function cpuLanguage(runtime: MeasureRuntime): 'python' | 'js' | undefined {
  if (runtime === 'python') return 'python';
  if (runtime === 'js' || runtime === 'node') return 'js';
  return undefined;
}

/** The CPU task as a workload: `n` iterations (calibrated so the bare floor takes ≈ 1 s). */
export function cpuBody(isolation: string, runtime: MeasureRuntime, n: number): WorkloadBody | undefined {
  if (!cpuLanguage(runtime)) return undefined;
  return { runtime, isolation, code: cpuSource(runtime === 'python' ? 'python' : 'js'), input: { n }, resources: { timeout_s: 120 } };
}

/** The expected checksum of the CPU task, so a wrong answer is caught. */
export function cpuChecksum(n: number): number {
  let s = 0;
  for (let i = 0; i < n; i++) s = (s + i * i) % 1000003;
  return s;
}

/** argv that runs the CPU task bare on the host (the floor), printing nothing. */
export function bareCpuArgv(lang: 'python' | 'js', n: number): string[] {
  if (lang === 'python') return ['/usr/bin/python3', '-c', `${cpuSource('python')}main({"n": ${n}})\n`];
  return [process.execPath, '-e', `let s = 0; for (let i = 0; i < ${n}; i++) s = (s + i * i) % 1000003;`];
}

/** argv that runs the idle workload bare on the host: the code's own memory, for the floor. */
export function bareIdleArgv(runtime: MeasureRuntime, seconds: number): string[] {
  if (runtime === 'python') return ['/usr/bin/python3', '-c', `import time\ntime.sleep(${seconds})\n`];
  if (runtime === 'sh') return ['/bin/sh', '-c', `sleep ${seconds}`];
  return [process.execPath, '-e', `setTimeout(() => {}, ${seconds * 1000})`];
}

/** Runs argv to its end; resolves with milliseconds taken. Throws on a non-zero exit. */
export async function timeArgv(argv: readonly string[]): Promise<number> {
  const [cmd, ...args] = argv;
  if (!cmd) throw new Error('empty argv');
  const t0 = performance.now();
  const code = await new Promise<number | null>((resolve, reject) => {
    const child = spawn(cmd, args, { stdio: 'ignore' });
    child.on('error', reject);
    child.on('close', resolve);
  });
  if (code !== 0) throw new Error(`${argv.join(' ').slice(0, 120)} exited ${String(code)}`);
  return performance.now() - t0;
}

/** A workload's record, as far as the measures read it. */
export interface RecordSummary {
  readonly id: string;
  readonly status: string;
  readonly output?: unknown;
  readonly stdout?: string;
  readonly error?: { readonly code: string; readonly message: string } | null;
}

/** Whether a finished record is the hello world's right answer. */
export function helloOk(runtime: MeasureRuntime, rec: RecordSummary): boolean {
  if (rec.status !== 'completed') return false;
  return runtime === 'sh' ? (rec.stdout ?? '').includes('hello bench') : rec.output === 'hello bench';
}

/** POST /v1/workloads (sync); resolves with the record and the client-side milliseconds. Never throws for an API error. */
export async function runSync(url: string, body: WorkloadBody, pool?: Pool): Promise<{ rec: RecordSummary; ms: number; httpStatus: number }> {
  const t0 = performance.now();
  const opts = { method: 'POST' as const, headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) };
  const res = pool ? await pool.request({ path: '/v1/workloads', ...opts }) : await request(`${url}/v1/workloads`, opts);
  const text = await res.body.text();
  const ms = performance.now() - t0;
  let rec: RecordSummary;
  try {
    const parsed = JSON.parse(text) as RecordSummary & { error?: { code: string; message: string } };
    rec = res.statusCode === 200 ? parsed : { id: '', status: 'rejected', error: parsed.error ?? { code: `http_${res.statusCode}`, message: text.slice(0, 200) } };
  } catch {
    rec = { id: '', status: 'rejected', error: { code: `http_${res.statusCode}`, message: text.slice(0, 200) } };
  }
  return { rec, ms, httpStatus: res.statusCode };
}

/** POST /v1/workloads/async; resolves with the id. */
export async function runAsync(url: string, body: WorkloadBody): Promise<string> {
  const res = await request(`${url}/v1/workloads/async`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
  const parsed = (await res.body.json()) as { id?: string; error?: { message?: string } };
  if (res.statusCode !== 202 || !parsed.id) throw new Error(`async submit failed: HTTP ${res.statusCode} ${parsed.error?.message ?? ''}`);
  return parsed.id;
}

/** GET /v1/workloads/:id. */
export async function getRecord(url: string, id: string): Promise<RecordSummary> {
  const res = await request(`${url}/v1/workloads/${id}`);
  return (await res.body.json()) as RecordSummary;
}

/** Describes why a record is not the expected answer, for errors and notes. */
export function describeFailure(rec: RecordSummary): string {
  return `${rec.status}${rec.error ? ` (${rec.error.code}: ${rec.error.message.slice(0, 200)})` : ''}`;
}
