/**
 * Prometheus metrics against the real tools of Debian's prometheus package: a scrape of a
 * test server passes `promtool check metrics`, and a real Prometheus server on a random
 * port scrapes the test server and answers a PromQL query for a Vulcan metric through its
 * HTTP API. Skips, with the reason, where the package is not installed.
 */
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { tempDir, testConfig } from '../helpers/context.js';
import { startTestServer, type TestServer } from '../helpers/server.js';

const PROMTOOL = '/usr/bin/promtool';
const PROMETHEUS = '/usr/bin/prometheus';
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const addr = s.address();
      const port = typeof addr === 'object' && addr ? addr.port : 0;
      s.close(() => resolve(port));
    });
  });
}

describe('Prometheus metrics', () => {
  let server: TestServer;
  before(async () => {
    server = await startTestServer();
    // Data in every series family: a completed, a failed and a rejected request.
    await server.client.run({ runtime: 'python', code: 'def main(input):\n    return 1\n' });
    await server.client.run({ runtime: 'sh', code: 'exit 3\n' });
    await fetch(`${server.url}/v1/workloads`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"runtime":"cobol","code":"x"}' });
  });
  after(async () => {
    await server.close();
  });

  it('names every series by the conventions, and has the issue\'s series', async () => {
    const text = await (await fetch(`${server.url}/metrics`)).text();
    for (const name of [
      'vulcan_workloads_total',
      'vulcan_workload_duration_seconds_bucket',
      'vulcan_workloads_running',
      'vulcan_backend_available',
      'vulcan_pool_size',
      'vulcan_sandboxes_running',
      'vulcan_sandbox_memory_bytes',
      'vulcan_http_request_duration_seconds_bucket',
      'vulcan_api_errors_total',
      'process_cpu_seconds_total',
    ]) {
      assert.match(text, new RegExp(`^# (TYPE|HELP) ${name.replace(/_bucket$/, '')} `, 'm'), `${name} is declared`);
    }
    assert.match(text, /^vulcan_workload_duration_seconds_bucket\{[^}]*isolation="namespace",runtime="python",phase="start"/m);
    assert.match(text, /^vulcan_workload_duration_seconds_bucket\{[^}]*phase="exec"/m);
    assert.match(text, /^vulcan_workloads_total\{isolation="namespace",runtime="sh",status="failed"\} 1$/m);
    assert.match(text, /^vulcan_api_errors_total\{code="unknown_runtime"\} 1$/m);
    assert.match(text, /^vulcan_http_request_duration_seconds_bucket\{[^}]*route="\/v1\/workloads"/m);
    // Counters end in _total, and no series is in milliseconds.
    for (const m of text.matchAll(/^# TYPE (\S+) counter$/gm)) assert.match(m[1] ?? '', /_total$/);
    assert.doesNotMatch(text, /^[a-z_]+_(ms|milliseconds)[ {]/m);
  });

  it('a scrape passes promtool check metrics', { skip: fs.existsSync(PROMTOOL) ? false : `${PROMTOOL} is missing: install Debian's prometheus package (scripts/setup.d/50-observability.sh)` }, async () => {
    const text = await (await fetch(`${server.url}/metrics`)).text();
    const r = spawnSync(PROMTOOL, ['check', 'metrics'], { input: text, encoding: 'utf8' });
    assert.equal(r.status, 0, `promtool check metrics:\n${r.stdout}${r.stderr}`);
    assert.equal(`${r.stdout}${r.stderr}`.trim(), '', 'no lint findings');
  });

  describe('a real Prometheus server', { skip: fs.existsSync(PROMETHEUS) ? false : `${PROMETHEUS} is missing: install Debian's prometheus package (scripts/setup.d/50-observability.sh)` }, () => {
    let prom: ChildProcess | undefined;
    let promUrl = '';
    let log = '';
    const dir = tempDir('vulcan-prometheus-');
    before(async () => {
      const port = await freePort();
      promUrl = `http://127.0.0.1:${port}`;
      const target = new URL(server.url).host;
      fs.writeFileSync(
        path.join(dir, 'prometheus.yml'),
        `global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: vulcan\n    metrics_path: /metrics\n    static_configs:\n      - targets: ['${target}']\n`,
      );
      prom = spawn(PROMETHEUS, [`--config.file=${path.join(dir, 'prometheus.yml')}`, `--storage.tsdb.path=${path.join(dir, 'data')}`, `--web.listen-address=127.0.0.1:${port}`, '--log.level=warn'], { stdio: ['ignore', 'pipe', 'pipe'] });
      prom.stdout?.on('data', (c: Buffer) => (log += c.toString()));
      prom.stderr?.on('data', (c: Buffer) => (log += c.toString()));
      for (let i = 0; i < 120; i++) {
        const ok = await fetch(`${promUrl}/-/ready`).then((r) => r.ok, () => false);
        if (ok) return;
        if (prom.exitCode !== null) break;
        await sleep(250);
      }
      throw new Error(`prometheus did not become ready:\n${log.slice(-3000)}`);
    });
    after(async () => {
      if (prom && prom.exitCode === null && prom.signalCode === null) {
        const exited = new Promise((r) => prom?.once('exit', r));
        prom.kill('SIGTERM');
        await Promise.race([exited, sleep(10_000).then(() => prom?.kill('SIGKILL'))]);
      }
      fs.rmSync(dir, { recursive: true, force: true });
    });

    it('scrapes Vulcan and answers a PromQL query for a Vulcan metric', { timeout: 60_000 }, async () => {
      const query = 'sum by (status) (vulcan_workloads_total{isolation="namespace"})';
      let last: unknown;
      for (let i = 0; i < 120; i++) {
        const res = await fetch(`${promUrl}/api/v1/query?query=${encodeURIComponent(query)}`);
        const body = (await res.json()) as { status: string; data?: { result?: { metric: Record<string, string>; value: [number, string] }[] } };
        last = body;
        const result = body.data?.result ?? [];
        if (body.status === 'success' && result.length >= 2) {
          const byStatus: Record<string, number> = Object.fromEntries(result.map((r) => [r.metric.status ?? '', Number(r.value[1])]));
          assert.equal(byStatus.completed, 1);
          assert.equal(byStatus.failed, 1);
          // The scrape target is up, as Prometheus sees it.
          const up = (await (await fetch(`${promUrl}/api/v1/query?query=${encodeURIComponent('up{job="vulcan"}')}`)).json()) as { data: { result: { value: [number, string] }[] } };
          assert.equal(up.data.result[0]?.value[1], '1');
          return;
        }
        await sleep(250);
      }
      assert.fail(`no answer from Prometheus in 30 s: ${JSON.stringify(last)}\n${log.slice(-2000)}`);
    });

    it('every query of the Grafana dashboard evaluates, and names only series Vulcan exports', async () => {
      const dashboard = JSON.parse(fs.readFileSync(path.join(testConfig().installDir, 'grafana', 'vulcan-dashboard.json'), 'utf8')) as { panels: { title: string; targets?: { expr: string }[] }[] };
      const exprs = dashboard.panels.flatMap((p) => (p.targets ?? []).map((t) => ({ title: p.title, expr: t.expr })));
      assert.ok(exprs.length >= 10, 'panels for start times, throughput, errors, running counts, pools and memory');
      const scrape = await (await fetch(`${server.url}/metrics`)).text();
      for (const { title, expr } of exprs) {
        for (const m of expr.matchAll(/\b((?:vulcan|process)_[a-z_]+)/g)) {
          const family = (m[1] ?? '').replace(/_(bucket|count|sum)$/, '');
          assert.match(scrape, new RegExp(`^# TYPE ${family} `, 'm'), `${title}: ${m[1]} is exported`);
        }
        const q = expr.replaceAll('$instance', '.*').replaceAll('$__rate_interval', '1m');
        const body = (await (await fetch(`${promUrl}/api/v1/query?query=${encodeURIComponent(q)}`)).json()) as { status: string; error?: string };
        assert.equal(body.status, 'success', `${title}: ${q}: ${body.error ?? ''}`);
      }
    });
  });
});
