/**
 * Stats: `GET /v1/stats` (counts by status and latency percentiles per backend and runtime
 * over a window, from the store), `GET /v1/stats/benchmark` (the latest benchmark result),
 * `GET /v1/stats/benchmark/report` (its HTML report) and `POST /v1/stats/benchmark` (starts
 * a quick benchmark of this server in the background and streams its progress as
 * Server-Sent Events: `progress`, then `result`, then `end`).
 *
 * It also feeds `vulcan_sandbox_memory_bytes` from the cgroups of running workloads.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import readline from 'node:readline';
import type { FastifyInstance } from 'fastify';
import { Type } from 'typebox';
import { VulcanError } from '../../core/errors.js';
import { BACKEND_NAMES } from '../../core/types.js';
import { StatsStore } from '../../store/stats.js';
import type { AppParts } from '../app.js';
import { cgroupMemoryByBackend } from '../sandbox-memory.js';
import { SseStream } from '../sse.js';

/** Default and largest window of `GET /v1/stats`, seconds. */
export const STATS_DEFAULT_WINDOW_S = 3600;
export const STATS_MAX_WINDOW_S = 30 * 24 * 3600;

const Percentiles = Type.Object({ p50: Type.Union([Type.Number(), Type.Null()]), p99: Type.Union([Type.Number(), Type.Null()]) });
const StatsResponse = Type.Object({
  node: Type.String(),
  window_s: Type.Number(),
  since: Type.String({ description: 'Start of the window (ISO 8601); workloads created since count.' }),
  counts: Type.Record(Type.String(), Type.Integer(), { description: 'Workloads created in the window, by status now.' }),
  latency: Type.Array(
    Type.Object({
      backend: Type.String(),
      runtime: Type.String(),
      n: Type.Integer(),
      duration_ms: Percentiles,
      start_ms: Percentiles,
      exec_ms: Percentiles,
    }),
    { description: 'Finished workloads per backend and runtime: p50 and p99 of duration, start and exec, in ms.' },
  ),
  sampled: Type.Boolean({ description: 'True when percentiles come from the newest 200 000 workloads of a larger window.' }),
});
const StatsQuery = Type.Object({ window_s: Type.Optional(Type.Integer({ minimum: 1, maximum: STATS_MAX_WINDOW_S, description: `Seconds back from now. Default ${STATS_DEFAULT_WINDOW_S}.` })) });
const BenchmarkRequest = Type.Object(
  {
    backends: Type.Optional(Type.Array(Type.Union(BACKEND_NAMES.map((b) => Type.Literal(b))), { minItems: 1, description: 'Backends to measure; all available by default.' })),
    mode: Type.Optional(Type.Union([Type.Literal('quick'), Type.Literal('tiny')], { description: 'quick (default, a few minutes) or tiny (a smoke run, seconds per backend).' })),
  },
  { additionalProperties: false },
);

/** One background benchmark run: its events so far (for late subscribers) and its listeners. */
class BenchmarkRun {
  readonly events: { event: string; data: unknown }[] = [];
  private readonly listeners = new Set<(e: { event: string; data: unknown }) => void>();
  done = false;

  constructor(readonly child: ChildProcess) {}

  emit(event: string, data: unknown): void {
    const e = { event, data };
    this.events.push(e);
    for (const l of this.listeners) l(e);
  }

  subscribe(fn: (e: { event: string; data: unknown }) => void): () => void {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }
}

export function registerStatsRoutes(app: FastifyInstance, parts: AppParts): void {
  const { config } = parts;
  let stats: StatsStore | undefined;
  const store = () => (stats ??= new StatsStore(config.dataDir));
  const benchDir = path.join(config.dataDir, 'benchmark');
  let current: BenchmarkRun | undefined;

  parts.metrics.addSandboxMemorySource(() => cgroupMemoryByBackend(store().running()));

  app.addHook('onClose', async () => {
    const run = current;
    if (run && !run.done) {
      run.child.kill('SIGTERM');
      await new Promise((r) => (run.child.exitCode !== null || run.child.signalCode !== null ? r(null) : run.child.once('exit', r)));
    }
    stats?.close();
  });

  app.get(
    '/v1/stats',
    { schema: { summary: 'Counts by status, and p50/p99 latency per backend and runtime, over a window', querystring: StatsQuery, response: { 200: StatsResponse, 400: Type.Ref('Error') } } },
    (req) => {
      const windowS = (req.query as { window_s?: number }).window_s ?? STATS_DEFAULT_WINDOW_S;
      const since = Date.now() - windowS * 1000;
      const s = store().workloadStats(since);
      return { node: config.nodeName, window_s: windowS, since: new Date(since).toISOString(), counts: s.counts, latency: s.latency, sampled: s.sampled };
    },
  );

  app.get(
    '/v1/stats/benchmark',
    { schema: { summary: 'The latest benchmark result (the JSON of `vulcan benchmark --json`)', response: { 200: Type.Object({}, { additionalProperties: true }), 404: Type.Ref('Error') } } },
    async (_req, reply) => {
      let text: string;
      try {
        text = await fs.promises.readFile(path.join(benchDir, 'results.json'), 'utf8');
      } catch {
        throw new VulcanError('not_found', 'no benchmark has run on this node yet; POST /v1/stats/benchmark starts one');
      }
      return reply.type('application/json').send(text);
    },
  );

  app.get(
    '/v1/stats/benchmark/report',
    { schema: { summary: 'The latest benchmark report (self-contained HTML with charts)', response: { 200: { description: 'text/html', type: 'string' }, 404: Type.Ref('Error') } } },
    async (_req, reply) => {
      let html: string;
      try {
        html = await fs.promises.readFile(path.join(benchDir, 'report.html'), 'utf8');
      } catch {
        throw new VulcanError('not_found', 'no benchmark has run on this node yet; POST /v1/stats/benchmark starts one');
      }
      return reply.type('text/html; charset=utf-8').send(html);
    },
  );

  app.post(
    '/v1/stats/benchmark',
    {
      schema: {
        summary: 'Start a quick benchmark of this node in the background; streams progress (Server-Sent Events: progress, result, end). A run already going is followed instead.',
        body: BenchmarkRequest,
        response: { 200: { description: 'text/event-stream', type: 'string' }, 400: Type.Ref('Error'), 503: Type.Ref('Error') },
      },
      // No body at all means the defaults (a quick run of every available backend).
      preValidation: (req, _reply, done) => {
        req.body ??= {};
        done();
      },
    },
    async (req, reply) => {
      const body = (req.body ?? {}) as { backends?: string[]; mode?: 'quick' | 'tiny' };
      if (!current || current.done) current = startRun(body);
      const run = current;
      reply.hijack();
      const sse = new SseStream(reply.raw, Number(req.headers['last-event-id'] ?? 0) || 0);
      for (const e of run.events) sse.send(e.event, e.data);
      if (run.done) return sse.close();
      // The run goes on when the client hangs up: it is in the background.
      const unsubscribe = run.subscribe((e) => {
        sse.send(e.event, e.data);
        if (e.event === 'end') sse.close();
      });
      sse.onClose(unsubscribe);
    },
  );

  function startRun(body: { backends?: string[]; mode?: 'quick' | 'tiny' }): BenchmarkRun {
    const script = path.join(config.installDir, 'dist', 'bench', 'main.js');
    if (!fs.existsSync(script)) throw new VulcanError('backend_unavailable', `the benchmark is not built (${script} is missing); run npm run build`);
    const addr = app.server.address();
    const port = typeof addr === 'object' && addr ? addr.port : config.port;
    const host = config.host === '0.0.0.0' || config.host === '::' ? '127.0.0.1' : config.host;
    const url = `http://${host.includes(':') ? `[${host}]` : host}:${port}`;
    const args = [script, `--${body.mode ?? 'quick'}`, '--url', url, '--server-pid', String(process.pid), '--out', benchDir, '--json'];
    if (body.backends) args.push('--backends', body.backends.join(','));
    const child = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    const run = new BenchmarkRun(child);
    run.emit('progress', { line: `benchmark started: ${body.mode ?? 'quick'} run of ${url}` });
    readline.createInterface({ input: child.stderr as NodeJS.ReadableStream }).on('line', (line) => run.emit('progress', { line: line.replace(/^\[bench\] /, '') }));
    let stdout = '';
    child.stdout?.on('data', (c: Buffer) => (stdout += c.toString()));
    child.on('error', (err) => app.log.error({ err }, 'benchmark run failed to start'));
    child.once('close', (code, signal) => {
      let result: unknown = null;
      try {
        result = JSON.parse(stdout);
      } catch {
        // no result: the run failed; its progress lines say why
      }
      if (result) run.emit('result', result);
      run.done = true;
      run.emit('end', { ok: code === 0 && result !== null, exit_code: code, signal });
      app.log.info({ exit_code: code, signal }, 'benchmark run ended');
    });
    return run;
  }
}
