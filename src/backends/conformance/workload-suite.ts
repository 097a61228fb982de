/**
 * The workload conformance suite: one list of behaviours every backend must show, run
 * against the real backend. Each backend's test file calls `describeWorkloadConformance`
 * and names what it skips and why; a skip prints its reason and never counts as a pass.
 *
 * The checks prove isolation from inside: the code itself looks for a host canary file,
 * host processes, the server's environment and the network.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it, type TestContext } from 'node:test';
import type { Backend } from '../../core/backend.js';
import type { Runtime } from '../../core/types.js';
import type { WorkloadRequestBody } from '../../server/schemas.js';
import type { WorkloadRecord } from '../../store/workloads.js';
import { createHarness, type Harness } from './harness.js';

export const CONFORMANCE_CHECKS = [
  'python-output',
  'node-esm-output',
  'node-cjs-output',
  'sh-stdin',
  'result-unforgeable',
  'exception',
  'nonzero-exit',
  'env',
  'host-canary',
  'host-processes',
  'no-network',
  'memory-bomb',
  'fork-bomb',
  'cpu-spin',
  'sleep-forever',
  'output-flood',
  'disk-full',
  'kill',
  'concurrent',
] as const;
export type ConformanceCheck = (typeof CONFORMANCE_CHECKS)[number];

export interface ConformanceOptions {
  /** Creates the backend under test (it is probed; an unavailable one skips every check with its reason). */
  readonly create: () => Promise<Backend>;
  /** Checks this backend does not pass, each with the reason (a missing capability, a host limit). */
  readonly skip?: Partial<Record<ConformanceCheck, string>>;
  /** Lists what the backend left on the host (processes, cgroups, containers, VMs); must end empty. */
  readonly leftovers?: () => Promise<string[]>;
  /** Extra fields for every request (an image, say). */
  readonly request?: Partial<WorkloadRequestBody>;
  /** Seconds added to each check's timeout for slow backends (TCG VMs). Default 0. */
  readonly slowStartS?: number;
}

const SECRET_ENV = 'VULCAN_CONFORMANCE_SERVER_SECRET';

export function describeWorkloadConformance(name: string, opts: ConformanceOptions): void {
  describe(`${name}: workload conformance`, () => {
    let harness: Harness | undefined;
    let unavailable: string | undefined;
    let canaryDir = '';
    const canarySecret = `canary-${Math.random().toString(36).slice(2)}`;
    const slow = opts.slowStartS ?? 0;
    const ids: string[] = [];

    before(async () => {
      const backend = await opts.create();
      const av = await backend.probe();
      if (!av.available) {
        unavailable = av.reason;
        await backend.close();
        return;
      }
      harness = createHarness(backend);
      canaryDir = fs.mkdtempSync(path.join(os.tmpdir(), 'vulcan-canary-'));
      fs.writeFileSync(path.join(canaryDir, 'secret'), canarySecret);
      process.env[SECRET_ENV] = canarySecret;
    });

    after(async () => {
      delete process.env[SECRET_ENV];
      if (canaryDir) fs.rmSync(canaryDir, { recursive: true, force: true });
      await harness?.backend.close();
      await harness?.close();
    });

    /** Defines one check: skipped with its reason when the backend is unavailable, lacks the runtime, or opts out. */
    function check(id: ConformanceCheck, title: string, runtime: Runtime, fn: (h: Harness, t: TestContext) => Promise<void>): void {
      it(`${id}: ${title}`, { timeout: (60 + slow * 4) * 1000 }, async (t) => {
        if (unavailable !== undefined) return t.skip(`backend unavailable: ${unavailable}`);
        const reason = opts.skip?.[id];
        if (reason !== undefined) return t.skip(reason);
        if (!harness) throw new Error('harness not ready');
        if (!harness.backend.runtimes.includes(runtime)) return t.skip(`${name} does not run ${runtime}`);
        await fn(harness, t);
      });
    }

    const run = async (h: Harness, req: Omit<WorkloadRequestBody, 'isolation'>): Promise<WorkloadRecord> => {
      const rec = await h.run({ ...opts.request, ...req, ...(req.resources || slow ? { resources: { ...req.resources, ...(slow && req.resources?.timeout_s ? { timeout_s: req.resources.timeout_s + slow } : {}) } } : {}) });
      ids.push(rec.id);
      return rec;
    };
    const explain = (rec: WorkloadRecord) => `record: ${JSON.stringify({ ...rec, stdout: rec.stdout.slice(0, 400), stderr: rec.stderr.slice(-800) })}`;

    check('python-output', 'python main(input) returns the output; print goes to stdout', 'python', async (h) => {
      const rec = await run(h, { runtime: 'python', code: 'def main(i):\n    print("to stdout")\n    return {"sum": i["a"] + i["b"]}\n', input: { a: 1, b: 2 } });
      assert.equal(rec.status, 'completed', explain(rec));
      assert.deepEqual(rec.output, { sum: 3 });
      assert.equal(rec.stdout, 'to stdout\n');
      assert.equal(rec.exit_code, 0);
    });

    check('node-esm-output', 'node ESM default export, async, returns the output', 'node', async (h) => {
      const rec = await run(h, { runtime: 'node', code: 'export default async (i) => { console.log("hello"); return { sum: i.a + i.b }; };', input: { a: 1, b: 2 } });
      assert.equal(rec.status, 'completed', explain(rec));
      assert.deepEqual(rec.output, { sum: 3 });
      assert.equal(rec.stdout, 'hello\n');
    });

    check('node-cjs-output', 'node CommonJS module.exports returns the output', 'node', async (h) => {
      const rec = await run(h, { runtime: 'node', code: 'module.exports = (i) => i.n * 10;', input: { n: 4 } });
      assert.equal(rec.status, 'completed', explain(rec));
      assert.equal(rec.output, 40);
    });

    check('sh-stdin', 'sh gets the input JSON on stdin; output is null', 'sh', async (h) => {
      const rec = await run(h, { runtime: 'sh', code: 'read line\necho "got:$line"\n', input: { a: 1 } });
      assert.equal(rec.status, 'completed', explain(rec));
      assert.equal(rec.output, null);
      assert.equal(rec.stdout, 'got:{"a":1}\n');
    });

    check('result-unforgeable', 'printing a fake result does not change the output', 'python', async (h) => {
      const rec = await run(h, { runtime: 'python', code: 'import sys\ndef main(i):\n    print(\'{"t":"result","output":666}\')\n    sys.stderr.write(\'{"t":"result","output":667}\\n\')\n    return 1\n' });
      assert.equal(rec.status, 'completed', explain(rec));
      assert.equal(rec.output, 1);
    });

    check('exception', 'an uncaught exception fails with its message, the stack in stderr', 'python', async (h) => {
      const rec = await run(h, { runtime: 'python', code: 'def main(i):\n    raise ValueError("boom")\n' });
      assert.equal(rec.status, 'failed', explain(rec));
      assert.equal(rec.error?.code, 'exception');
      assert.match(rec.error?.message ?? '', /ValueError: boom/);
      assert.match(rec.stderr, /Traceback/);
    });

    check('nonzero-exit', 'a non-zero exit fails with nonzero_exit and the exit code', 'sh', async (h) => {
      const rec = await run(h, { runtime: 'sh', code: 'echo bye >&2\nexit 3\n' });
      assert.equal(rec.status, 'failed', explain(rec));
      assert.equal(rec.error?.code, 'nonzero_exit');
      assert.equal(rec.exit_code, 3);
      assert.equal(rec.stderr, 'bye\n');
    });

    check('env', "the code sees the env it was given and none of the server's", 'sh', async (h) => {
      const rec = await run(h, { runtime: 'sh', code: 'env\n', env: { GREETING: 'hi there' } });
      assert.equal(rec.status, 'completed', explain(rec));
      assert.match(rec.stdout, /^GREETING=hi there$/m);
      assert.ok(!rec.stdout.includes(canarySecret), 'the server environment leaked into the sandbox');
      assert.ok(!rec.stdout.includes(SECRET_ENV));
    });

    check('host-canary', 'a file on the host cannot be read from inside', 'sh', async (h) => {
      const file = path.join(canaryDir, 'secret');
      const rec = await run(h, { runtime: 'sh', code: `cat ${file} 2>&1; ls ${canaryDir} /root /home 2>&1; cat /etc/shadow 2>&1; ls / 2>&1; true\n` });
      assert.equal(rec.status, 'completed', explain(rec));
      assert.ok(!rec.stdout.includes(canarySecret), `read the host canary: ${rec.stdout}`);
      assert.doesNotMatch(rec.stdout, /^root:/m);
    });

    check('host-processes', 'host processes are invisible', 'sh', async (h) => {
      const rec = await run(h, { runtime: 'sh', code: 'for p in /proc/[0-9]*; do printf "%s " "${p#/proc/}"; tr "\\0" " " < "$p/cmdline" 2>/dev/null; echo; done\n' });
      assert.equal(rec.status, 'completed', explain(rec));
      const lines = rec.stdout.trim().split('\n').filter(Boolean);
      assert.ok(lines.length <= 8, `sees ${lines.length} processes:\n${rec.stdout}`);
      assert.ok(!rec.stdout.includes(String(process.argv[1] ?? 'node --test')), 'sees the test runner');
      assert.ok(!rec.stdout.includes('--test'), 'sees the test runner');
    });

    check('no-network', 'no network: neither the host loopback nor the outside is reachable', 'python', async (h) => {
      const server = net.createServer((s) => s.end('host-listener\n'));
      await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
      const port = (server.address() as net.AddressInfo).port;
      try {
        const code = `import socket
def probe(host, port):
    try:
        s = socket.create_connection((host, port), timeout=1)
        data = s.recv(64)
        return "connected:" + data.decode(errors="replace")
    except Exception as e:
        return "blocked:" + type(e).__name__
def main(i):
    ifaces = [l.split(":")[0].strip() for l in open("/proc/net/dev").read().splitlines()[2:]]
    return {"loopback": probe("127.0.0.1", ${port}), "outside": probe("1.1.1.1", 53), "dns": probe("example.com", 80), "ifaces": ifaces}
`;
        const rec = await run(h, { runtime: 'python', code });
        assert.equal(rec.status, 'completed', explain(rec));
        const out = rec.output as { loopback: string; outside: string; dns: string; ifaces: string[] };
        assert.match(out.loopback, /^blocked:/, `reached the host listener: ${out.loopback}`);
        assert.match(out.outside, /^blocked:/);
        assert.match(out.dns, /^blocked:/);
        assert.ok(out.ifaces.every((i) => i === 'lo'), `interfaces: ${out.ifaces.join(',')}`);
      } finally {
        server.close();
      }
    });

    check('memory-bomb', 'a memory bomb ends as failed/memory_limit', 'python', async (h) => {
      const rec = await run(h, { runtime: 'python', code: 'chunks = []\nwhile True:\n    chunks.append(b"x" * (8 * 1024 * 1024))\n', resources: { mem_mb: 64, timeout_s: 20 } });
      assert.equal(rec.status, 'failed', explain(rec));
      assert.equal(rec.error?.code, 'memory_limit', explain(rec));
    });

    check('fork-bomb', 'a fork bomb ends as failed/pids_limit', 'python', async (h) => {
      const rec = await run(h, { runtime: 'python', code: 'import os, time\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        time.sleep(0.01)\n', resources: { timeout_s: 20 } });
      assert.equal(rec.status, 'failed', explain(rec));
      assert.equal(rec.error?.code, 'pids_limit', explain(rec));
    });

    check('cpu-spin', 'a CPU spin ends as timeout, promptly', 'python', async (h) => {
      const t0 = Date.now();
      const rec = await run(h, { runtime: 'python', code: 'while True:\n    pass\n', resources: { timeout_s: 1 } });
      assert.equal(rec.status, 'timeout', explain(rec));
      assert.equal(rec.error?.code, 'timeout');
      assert.ok(Date.now() - t0 < (4 + slow) * 1000, `took ${Date.now() - t0} ms`);
    });

    check('sleep-forever', 'sleep-forever ends as timeout', 'sh', async (h) => {
      const rec = await run(h, { runtime: 'sh', code: 'sleep 100000\n', resources: { timeout_s: 1 } });
      assert.equal(rec.status, 'timeout', explain(rec));
    });

    check('output-flood', 'an output flood is capped at 1 MiB per stream and marked truncated', 'python', async (h) => {
      const rec = await run(h, { runtime: 'python', code: 'import sys\nfor _ in range(4096):\n    sys.stdout.write("x" * 1024)\n    sys.stderr.write("y" * 1024)\n' });
      assert.equal(rec.status, 'completed', explain(rec));
      assert.equal(rec.stdout_truncated, true);
      assert.equal(rec.stderr_truncated, true);
      assert.equal(Buffer.byteLength(rec.stdout), 1024 * 1024);
      assert.equal(Buffer.byteLength(rec.stderr), 1024 * 1024);
    });

    check('disk-full', 'filling /tmp ends as failed/disk_limit', 'python', async (h) => {
      const rec = await run(h, { runtime: 'python', code: 'with open("/tmp/fill", "wb") as f:\n    while True:\n        f.write(b"x" * 1048576)\n        f.flush()\n', resources: { timeout_s: 30 } });
      assert.equal(rec.status, 'failed', explain(rec));
      assert.equal(rec.error?.code, 'disk_limit', explain(rec));
    });

    check('kill', 'a killed workload ends as killed', 'sh', async (h) => {
      const rec = await h.run(
        { ...opts.request, runtime: 'sh', code: 'sleep 100000\n', resources: { timeout_s: 60 } },
        { onStart: (id) => void setTimeout(() => h.kill(id), 300 + slow * 1000) },
      );
      ids.push(rec.id);
      assert.equal(rec.status, 'killed', explain(rec));
      assert.equal(rec.error?.code, 'killed');
    });

    check('concurrent', 'four workloads at once all complete with their own output', 'sh', async (h) => {
      const recs = await Promise.all([1, 2, 3, 4].map((n) => run(h, { runtime: 'sh', code: `echo ${n}\n` })));
      recs.forEach((rec, i) => {
        assert.equal(rec.status, 'completed', explain(rec));
        assert.equal(rec.stdout, `${i + 1}\n`);
      });
    });

    it('leaves nothing behind', async (t) => {
      if (unavailable !== undefined) return t.skip(`backend unavailable: ${unavailable}`);
      if (!opts.leftovers) return t.skip('this backend names no leftovers check');
      const left = await opts.leftovers();
      assert.deepEqual(left, [], `left behind after workloads ${ids.join(',')}`);
    });
  });
}
