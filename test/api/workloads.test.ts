/**
 * The workloads API end to end, on the namespace backend: sync and async runs, log
 * streaming, kill, listing, system routes, a server that stays healthy through bombs, and
 * restart reconciliation with a real `vulcan serve` process.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { after, before, describe, it } from 'node:test';
import { ConflictError, NotFoundError, type LogEvent } from '../../src/sdk/index.js';
import { dataDirTag } from '../../src/core/config.js';
import { cgroupsLeft, eventually, processesWith, tempDir } from '../helpers/context.js';
import { spawnServer, startTestServer, type TestServer } from '../helpers/server.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function collect(gen: AsyncGenerator<LogEvent>): Promise<LogEvent[]> {
  const out: LogEvent[] = [];
  for await (const ev of gen) out.push(ev);
  return out;
}

describe('API: workloads', () => {
  let server: TestServer;
  before(async () => {
    server = await startTestServer();
  });
  after(async () => {
    await server.close();
  });

  it('POST /v1/workloads runs python and answers the full record', async () => {
    const rec = await server.client.run({ runtime: 'python', code: 'def main(input):\n    return input["a"] + input["b"]\n', input: { a: 1, b: 2 } });
    assert.equal(rec.status, 'completed');
    assert.equal(rec.output, 3);
    assert.equal(rec.isolation, 'auto');
    assert.equal(rec.isolation_used, 'namespace');
    assert.match(rec.isolation_reason ?? '', /namespace/);
    assert.equal(typeof rec.node, 'string');
    assert.equal(rec.error, null);
    assert.ok((rec.duration_ms ?? 0) > 0);
    assert.ok((rec.timings.start_ms ?? 0) > 0 && (rec.timings.exec_ms ?? -1) >= 0);
    assert.deepEqual(await server.client.get(rec.id), rec);
  });

  it('async: 202 at once, then the record; logs stream live in order and replay for a late subscriber', async () => {
    const acc = await server.client.runAsync({ runtime: 'sh', code: 'for i in 1 2 3; do echo line$i; sleep 0.2; done\necho oops >&2\necho done\n' });
    assert.match(acc.id, /^[0-9A-Z]{26}$/);
    assert.equal(acc.status, 'pending');
    const live = await collect(server.client.logs(acc.id));
    // Chunk boundaries are the pipe's; what is guaranteed is the bytes of each stream and the
    // order in which the streams take turns, so consecutive chunks of one stream are merged.
    const text = (evs: LogEvent[]) =>
      evs
        .map((e, i) => (e.type === 'end' ? `end:${e.record.status}` : `${evs[i - 1]?.type === e.type ? '' : `${e.type}:`}${e.data}`))
        .join('');
    assert.equal(text(live), 'stdout:line1\nline2\nline3\nstderr:oops\nstdout:done\nend:completed');
    assert.ok(live.filter((e) => e.type === 'stdout').length >= 3, 'lines arrive as they are printed, not all at the end');
    const late = await collect(server.client.logs(acc.id));
    assert.equal(text(late), text(live));
    const rec = await server.client.get(acc.id);
    assert.equal(rec.status, 'completed');
    assert.equal(rec.mode, 'async');
    assert.equal(rec.stdout, 'line1\nline2\nline3\ndone\n');
  });

  it('GET shows running while it runs; DELETE kills it (killed), then 409; unknown is 404', async () => {
    const { id } = await server.client.runAsync({ runtime: 'sh', code: 'echo started\nsleep 600\n' });
    let rec = await server.client.get(id);
    for (let i = 0; i < 50 && rec.status !== 'running'; i++) {
      await sleep(50);
      rec = await server.client.get(id);
    }
    assert.equal(rec.status, 'running');
    const killed = await server.client.kill(id);
    assert.equal(killed.status, 'killed');
    assert.equal(killed.error?.code, 'killed');
    await assert.rejects(server.client.kill(id), (err: unknown) => err instanceof ConflictError && err.status === 409);
    await assert.rejects(server.client.kill('01NOPE'), (err: unknown) => err instanceof NotFoundError);
    assert.deepEqual(await eventually(() => cgroupsLeft('ns-', id)), []);
  });

  it('a caller that hangs up on a sync run kills the workload', async () => {
    const ac = new AbortController();
    const p = server.client.run({ runtime: 'sh', code: 'sleep 600\n' }, { signal: ac.signal });
    await sleep(400);
    ac.abort();
    await assert.rejects(p);
    let rec = (await server.client.list({ limit: 1 })).items[0];
    for (let i = 0; i < 50 && rec && !['killed', 'failed', 'completed', 'timeout'].includes(rec.status); i++) {
      await sleep(50);
      rec = await server.client.get(rec.id);
    }
    assert.equal(rec?.status, 'killed');
  });

  it('lists newest first, pages with a cursor and filters by status', async () => {
    const ids: string[] = [];
    for (let i = 0; i < 3; i++) ids.push((await server.client.run({ runtime: 'sh', code: `exit ${i === 1 ? 1 : 0}\n` })).id);
    const first = await server.client.list({ limit: 2 });
    assert.deepEqual(first.items.map((r) => r.id), [ids[2], ids[1]]);
    assert.ok(first.next_cursor);
    const second = await server.client.list({ limit: 2, cursor: first.next_cursor ?? '' });
    assert.equal(second.items[0]?.id, ids[0]);
    const failed = await server.client.list({ status: 'failed', limit: 50 });
    assert.ok(failed.items.some((r) => r.id === ids[1]));
    assert.ok(failed.items.every((r) => r.status === 'failed'));
  });

  it('stays healthy through a memory bomb, a fork bomb and a flood, and runs the next workload', async () => {
    const bombs = await Promise.all([
      server.client.run({ runtime: 'python', code: 'x = []\nwhile True:\n    x.append(b"x" * 8388608)\n', resources: { mem_mb: 64 } }),
      server.client.run({ runtime: 'python', code: 'import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n' }),
      server.client.run({ runtime: 'sh', code: 'yes flood\n', resources: { timeout_s: 2 } }),
    ]);
    assert.deepEqual(
      bombs.map((b) => b.error?.code),
      ['memory_limit', 'pids_limit', 'timeout'],
    );
    assert.equal(bombs[2]?.stdout_truncated, true);
    assert.equal((await server.client.health()).status, 'ok');
    const rec = await server.client.run({ runtime: 'node', code: 'export default () => "still fine"' });
    assert.equal(rec.output, 'still fine');
    assert.deepEqual(await eventually(() => cgroupsLeft(`ns-${dataDirTag(server.dataDir)}-`)), []);
  });

  it('GET /v1/backends lists every backend with availability and reasons', async () => {
    const list = await server.client.backends();
    const ns = list.find((b) => b.name === 'namespace');
    assert.equal(ns?.available, true);
    assert.deepEqual([...(ns?.runtimes ?? [])].sort(), ['node', 'python', 'sh']);
    assert.equal(typeof ns?.capabilities.pause, 'boolean');
  });

  it('serves /healthz, /metrics (Prometheus text) and /openapi.json', async () => {
    const health = await fetch(`${server.url}/healthz`);
    assert.equal(health.status, 200);
    const metrics = await (await fetch(`${server.url}/metrics`)).text();
    for (const name of ['vulcan_workloads_total', 'vulcan_workload_duration_seconds_bucket', 'vulcan_workloads_running', 'vulcan_backend_available', 'vulcan_http_request_duration_seconds']) {
      assert.ok(metrics.includes(name), `missing ${name}`);
    }
    assert.match(metrics, /vulcan_workloads_total\{isolation="namespace",runtime="python",status="completed"\} \d+/);
    assert.match(metrics, /vulcan_workload_duration_seconds_count\{isolation="namespace",runtime="python",phase="start"\} \d+/);
    assert.match(metrics, /vulcan_backend_available\{backend="namespace"\} 1/);
    const doc = (await (await fetch(`${server.url}/openapi.json`)).json()) as { openapi: string; paths: Record<string, unknown> };
    assert.match(doc.openapi, /^3\./);
    for (const p of ['/v1/workloads', '/v1/workloads/async', '/v1/workloads/{id}', '/v1/workloads/{id}/logs', '/v1/backends', '/healthz', '/metrics']) {
      assert.ok(doc.paths[p], `openapi lacks ${p}`);
    }
  });
});

describe('API: restart reconciliation', () => {
  it('a workload running when the server is killed ends as failed/host_restarted; nothing is left', async () => {
    const dataDir = tempDir('vulcan-restart-');
    const first = await spawnServer(dataDir);
    let id = '';
    try {
      ({ id } = await first.client.runAsync({ runtime: 'sh', code: 'sleep 600\n' }));
      for (let i = 0; i < 100 && (await first.client.get(id)).status !== 'running'; i++) await sleep(50);
      assert.equal((await first.client.get(id)).status, 'running');
    } finally {
      await first.stop('SIGKILL');
    }
    // The sandbox dies with its parent (bwrap --die-with-parent).
    for (let i = 0; i < 100 && processesWith('bwrap', '/vulcan/lib/').length > 0; i++) await sleep(50);
    assert.deepEqual(processesWith('bwrap', '/vulcan/lib/'), []);
    const second = await spawnServer(dataDir);
    try {
      const rec = await second.client.get(id);
      assert.equal(rec.status, 'failed');
      assert.equal(rec.error?.code, 'host_restarted');
      assert.deepEqual(await eventually(() => cgroupsLeft('ns-', id)), [], 'the restarted server removes the dead cgroup');
      const next = await second.client.run({ runtime: 'sh', code: 'echo ok\n' });
      assert.equal(next.stdout, 'ok\n');
    } finally {
      await second.stop();
      fs.rmSync(dataDir, { recursive: true, force: true });
    }
  });
});
