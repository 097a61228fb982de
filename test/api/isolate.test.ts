/**
 * The isolate backend through the API: `auto` routing by parsing, the reason in the record,
 * and a runaway isolate that does not stop other workloads.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { startTestServer, type TestServer } from '../helpers/server.js';

describe('API: isolate and auto', () => {
  let server: TestServer;
  let skip: string | undefined;
  before(async () => {
    server = await startTestServer({ backends: ['isolate', 'namespace'] });
    const iso = (await server.client.backends()).find((b) => b.name === 'isolate');
    if (!iso?.available) skip = `isolate unavailable: ${iso?.reason ?? 'not loaded'}`;
  });
  after(async () => {
    await server.close();
  });

  it('auto sends js, ts and wasm to an isolate', async (t) => {
    if (skip) return t.skip(skip);
    const js = await server.client.run({ runtime: 'js', code: 'export default (i) => i.x + 1', input: { x: 1 } });
    assert.equal(js.isolation_used, 'isolate');
    assert.equal(js.output, 2);
    const ts = await server.client.run({ runtime: 'ts', code: 'export default (i: { x: number }): number => i.x * 2', input: { x: 4 } });
    assert.equal(ts.isolation_used, 'isolate');
    assert.equal(ts.output, 8);
  });

  it('auto sends node code without Node built-ins to an isolate, and code that imports one to namespace', async (t) => {
    if (skip) return t.skip(skip);
    const pure = await server.client.run({ runtime: 'node', code: 'export default (i) => i.map((x) => x * x)', input: [1, 2, 3] });
    assert.equal(pure.isolation_used, 'isolate');
    assert.deepEqual(pure.output, [1, 4, 9]);
    assert.match(pure.isolation_reason ?? '', /^auto:/);
    const withFs = await server.client.run({ runtime: 'node', code: "import os from 'node:os';\nexport default () => typeof os.cpus()", input: null });
    assert.equal(withFs.isolation_used, 'namespace');
    assert.equal(withFs.output, 'object');
    assert.match(withFs.isolation_reason ?? '', /isolate: .*node:os/);
  });

  it('a runaway isolate ends as timeout while other workloads keep completing', async (t) => {
    if (skip) return t.skip(skip);
    const runaway = await server.client.runAsync({ runtime: 'js', code: 'export default () => { for (;;) {} }', resources: { timeout_s: 3 } });
    const others = await Promise.all(Array.from({ length: 10 }, (_, i) => server.client.run({ runtime: 'js', code: `export default () => ${i}` })));
    assert.deepEqual(others.map((r) => r.output), [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
    const rec = await server.client.wait(runaway.id);
    assert.equal(rec.status, 'timeout');
  });
});
