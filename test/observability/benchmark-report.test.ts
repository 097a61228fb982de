/**
 * The benchmark through the API and in a browser: `POST /v1/stats/benchmark` runs a tiny
 * benchmark of a real test server in the background and streams its progress (SSE),
 * `GET /v1/stats/benchmark` then returns the result, and the HTML report it serves renders
 * in headless Chromium (Debian's, through playwright-core) with no page errors and readable
 * charts. The screenshot is kept at dist/test-artifacts/benchmark-report.png.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { createParser } from 'eventsource-parser';
import { chromium, type Browser } from 'playwright-core';
import type { BenchmarkResult } from '../../bench/result.js';
import { testConfig } from '../helpers/context.js';
import { startTestServer, type TestServer } from '../helpers/server.js';

const CHROMIUM = '/usr/bin/chromium';
const CHROMIUM_ARGS = ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--no-first-run'];
const SCREENSHOT = path.join(testConfig().installDir, 'dist', 'test-artifacts', 'benchmark-report.png');

/** POSTs and reads the SSE stream to its `end` event. */
async function streamBenchmark(url: string, body: unknown): Promise<{ event: string; data: unknown }[]> {
  const res = await fetch(`${url}/v1/stats/benchmark`, { method: 'POST', headers: { 'content-type': 'application/json', accept: 'text/event-stream' }, body: JSON.stringify(body) });
  assert.equal(res.status, 200);
  assert.match(res.headers.get('content-type') ?? '', /text\/event-stream/);
  const events: { event: string; data: unknown }[] = [];
  let ended = false;
  const parser = createParser({
    onEvent: (ev) => {
      events.push({ event: ev.event ?? 'message', data: JSON.parse(ev.data) });
      if (ev.event === 'end') ended = true;
    },
  });
  const decoder = new TextDecoder();
  for await (const chunk of res.body as AsyncIterable<Uint8Array>) {
    parser.feed(decoder.decode(chunk, { stream: true }));
    if (ended) break;
  }
  return events;
}

describe('benchmark through the API, and its HTML report in Chromium', () => {
  let server: TestServer;
  let browser: Browser | undefined;
  before(async () => {
    server = await startTestServer({ backends: ['namespace', 'isolate'] });
  });
  after(async () => {
    await browser?.close();
    await server.close();
  });

  it('GET /v1/stats/benchmark is a 404 that says how to start one, before any run', async () => {
    const res = await fetch(`${server.url}/v1/stats/benchmark`);
    assert.equal(res.status, 404);
    const body = (await res.json()) as { error: { code: string; message: string } };
    assert.equal(body.error.code, 'not_found');
    assert.match(body.error.message, /POST \/v1\/stats\/benchmark/);
  });

  it('POST refuses an unknown backend with a 400', async () => {
    const res = await fetch(`${server.url}/v1/stats/benchmark`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"backends":["nope"]}' });
    assert.equal(res.status, 400);
  });

  it('POST /v1/stats/benchmark streams progress, then the result, then end; GET returns the result', { timeout: 180_000 }, async () => {
    const events = await streamBenchmark(server.url, { mode: 'tiny', backends: ['namespace', 'isolate'] });
    const progress = events.filter((e) => e.event === 'progress').map((e) => (e.data as { line: string }).line);
    assert.ok(progress.some((l) => /namespace: done/.test(l)), `progress lines: ${progress.join('\n')}`);
    const end = events.at(-1);
    assert.equal(end?.event, 'end');
    assert.deepEqual(end?.data, { ok: true, exit_code: 0, signal: null }, progress.slice(-20).join('\n'));
    const result = events.find((e) => e.event === 'result')?.data as BenchmarkResult;
    assert.deepEqual(result.backends, ['isolate', 'namespace']);
    const mem = result.rows.find((r) => r.backend === 'namespace' && r.measure === 'memory_per_workload');
    assert.ok((mem?.value.p50 ?? 0) > 1, `memory measured through the server's own pid: ${mem?.value.p50 ?? 'nothing'} MiB`);

    const latest = (await (await fetch(`${server.url}/v1/stats/benchmark`)).json()) as BenchmarkResult;
    assert.deepEqual(latest, result);
  });

  it('the report renders in headless Chromium with no page errors, charts drawn', { skip: fs.existsSync(CHROMIUM) ? false : `${CHROMIUM} is missing: install Debian's chromium package (scripts/setup.d/50-observability.sh)`, timeout: 90_000 }, async () => {
    browser = await chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS, headless: true });
    const page = await browser.newPage({ viewport: { width: 1100, height: 900 } });
    const errors: string[] = [];
    page.on('pageerror', (err) => errors.push(err.message));
    page.on('console', (msg) => {
      if (msg.type() === 'error') errors.push(msg.text());
    });
    const failed: string[] = [];
    page.on('requestfailed', (req) => failed.push(req.url()));
    const res = await page.goto(`${server.url}/v1/stats/benchmark/report`, { waitUntil: 'load' });
    assert.equal(res?.status(), 200);
    assert.match(res?.headers()['content-type'] ?? '', /text\/html/);
    assert.equal(await page.title().then((t) => t.startsWith('Vulcan benchmark')), true);
    // The charts: a latency distribution with a lane per backend, and bar charts.
    const charts = await page.locator('svg[role="img"]').evaluateAll((els) => els.map((e) => ({ label: e.getAttribute('aria-label') ?? '', width: e.getBoundingClientRect().width, dots: e.querySelectorAll('circle').length, bars: e.querySelectorAll('rect').length })));
    const dist = charts.find((c) => c.label.startsWith('Hello-world round trip'));
    assert.ok(dist && dist.dots >= 4 && dist.width > 500, `distribution chart: ${JSON.stringify(charts)}`);
    assert.ok(charts.some((c) => c.label.startsWith('Hello-world throughput') && c.bars >= 2), 'throughput bars');
    assert.ok(charts.some((c) => c.label.startsWith('Memory per workload') && c.bars >= 2), 'memory bars');
    assert.ok((await page.locator('table').first().locator('tr').count()) > 10, 'the full table');
    fs.mkdirSync(path.dirname(SCREENSHOT), { recursive: true });
    await page.screenshot({ path: SCREENSHOT, fullPage: true });
    assert.ok(fs.statSync(SCREENSHOT).size > 20_000, 'a screenshot with something in it');
    process.stdout.write(`# screenshot: ${SCREENSHOT}\n`);
    assert.deepEqual(errors, [], 'no page errors');
    assert.deepEqual(failed, [], 'no failed requests (the page is self-contained)');
  });
});
