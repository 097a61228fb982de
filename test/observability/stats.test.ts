/**
 * `GET /v1/stats`: counts by status and p50/p99 per backend and runtime over a window, read
 * from the store of a real server that ran real workloads; and the sandbox memory gauge fed
 * from the cgroups of running workloads.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { startTestServer, type TestServer } from '../helpers/server.js';

interface Stats {
  node: string;
  window_s: number;
  since: string;
  counts: Record<string, number>;
  latency: { backend: string; runtime: string; n: number; duration_ms: { p50: number | null; p99: number | null }; start_ms: { p50: number | null; p99: number | null }; exec_ms: { p50: number | null; p99: number | null } }[];
  sampled: boolean;
}

describe('GET /v1/stats', () => {
  let server: TestServer;
  before(async () => {
    server = await startTestServer();
  });
  after(async () => {
    await server.close();
  });

  const get = async (q = '') => {
    const res = await fetch(`${server.url}/v1/stats${q}`);
    return { status: res.status, body: (await res.json()) as Stats & { error?: { code: string; message: string } } };
  };

  it('is all zeros on a fresh node, with every status present', async () => {
    const { status, body } = await get();
    assert.equal(status, 200);
    assert.equal(body.window_s, 3600);
    assert.deepEqual(body.counts, { pending: 0, running: 0, completed: 0, failed: 0, timeout: 0, killed: 0 });
    assert.deepEqual(body.latency, []);
  });

  it('counts by status and gives p50 ≤ p99 per backend and runtime', async () => {
    for (let i = 0; i < 3; i++) await server.client.run({ runtime: 'python', code: 'def main(input):\n    return 1\n' });
    await server.client.run({ runtime: 'sh', code: 'exit 2\n' });
    await server.client.run({ runtime: 'sh', code: 'sleep 5\n', resources: { timeout_s: 1 } });
    const { body } = await get('?window_s=600');
    assert.equal(body.window_s, 600);
    assert.equal(body.counts.completed, 3);
    assert.equal(body.counts.failed, 1);
    assert.equal(body.counts.timeout, 1);
    const py = body.latency.find((g) => g.backend === 'namespace' && g.runtime === 'python');
    const sh = body.latency.find((g) => g.backend === 'namespace' && g.runtime === 'sh');
    assert.equal(py?.n, 3);
    assert.equal(sh?.n, 2);
    for (const g of [py, sh]) {
      for (const phase of ['duration_ms', 'start_ms'] as const) {
        const p = g?.[phase];
        assert.ok(p && p.p50 !== null && p.p99 !== null && p.p50 > 0 && p.p50 <= p.p99, `${g?.runtime} ${phase}: ${JSON.stringify(p)}`);
      }
    }
    assert.ok((sh?.duration_ms.p99 ?? 0) >= 900, 'the timed-out workload ran about a second');
  });

  it('a window in the future of every workload counts nothing; a bad window is a 400 that names the field', async () => {
    await new Promise((r) => setTimeout(r, 1100));
    const { body } = await get('?window_s=1');
    assert.equal(body.counts.completed, 0);
    const bad = await get('?window_s=0');
    assert.equal(bad.status, 400);
    assert.equal(bad.body.error?.code, 'invalid_request');
    assert.match(bad.body.error?.message ?? '', /window_s/);
    assert.equal((await get('?window_s=abc')).status, 400);
  });

  it('vulcan_sandbox_memory_bytes shows a running workload\'s cgroup memory', { timeout: 30_000 }, async () => {
    const { id } = await server.client.runAsync({ runtime: 'python', code: 'import time\nx = bytearray(24 * 1024 * 1024)\ntime.sleep(3)\n' });
    let seen = 0;
    // Read until the allocation shows (the interpreter starts small), or the workload ends.
    for (let i = 0; i < 40 && seen <= 16 * 1024 * 1024; i++) {
      await new Promise((r) => setTimeout(r, 100));
      const text = await (await fetch(`${server.url}/metrics`)).text();
      seen = Math.max(seen, Number(/^vulcan_sandbox_memory_bytes\{backend="namespace"\} (\d+)/m.exec(text)?.[1] ?? 0));
    }
    await server.client.wait(id);
    assert.ok(seen > 16 * 1024 * 1024, `namespace sandbox memory ${seen} bytes while a workload held 24 MiB`);
  });
});
