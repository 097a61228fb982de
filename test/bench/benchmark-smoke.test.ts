/**
 * CI smoke of `vulcan benchmark`: a tiny run of every backend, as a user runs it (bin/vulcan,
 * which starts its own server), completes, and its JSON has every row and column. It asserts
 * no speeds: the numbers of a tiny run on a shared machine mean little.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import { after, describe, it } from 'node:test';
import { ROW_COLUMNS, type BenchmarkResult } from '../../bench/result.js';
import { tempDir } from '../helpers/context.js';
import { VULCAN_BIN } from '../helpers/server.js';

/** Measures the benchmark itself takes on every backend it measures (a rows file may add more). */
const COMMON_MEASURES = ['hello_roundtrip', 'memory_per_workload', 'max_concurrent', 'throughput', 'cpu_throughput'] as const;
/**
 * Backends the smoke covers. microvm is left out: its rows boot TCG guests for about a minute
 * even in a tiny run (no KVM acceleration is assumed); `vulcan benchmark --quick` covers it.
 */
const SMOKE_BACKENDS = ['isolate', 'namespace', 'gvisor', 'container'];
/** Backends whose hosts CI always has; on these every measure must succeed. */
const CORE_BACKENDS = ['namespace', 'isolate'];

function run(args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [VULCAN_BIN, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (c: Buffer) => (stdout += c.toString()));
    child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}

describe('vulcan benchmark --tiny --json (CI smoke)', () => {
  const out = tempDir('vulcan-bench-smoke-');
  after(() => fs.rmSync(out, { recursive: true, force: true }));

  it('completes, shows progress, and its JSON has every row and column', { timeout: 240_000 }, async () => {
    const r = await run(['benchmark', '--tiny', '--json', '--backends', SMOKE_BACKENDS.join(','), '--out', out]);
    assert.equal(r.code, 0, `exit ${String(r.code)}; stderr:\n${r.stderr.slice(-3000)}`);
    assert.match(r.stderr, /\[bench\] \+[\d.]+s .*done/, 'progress lines on stderr');
    const result = JSON.parse(r.stdout) as BenchmarkResult;

    assert.equal(result.version, 1);
    assert.equal(result.mode, 'tiny');
    for (const k of ['cpu_model', 'cores', 'memory_gib', 'kernel', 'kvm', 'versions'] as const) assert.ok(k in result.machine, `machine.${k}`);
    for (const tool of ['node', 'isolated-vm', 'bwrap', 'runsc', 'dockerd', 'qemu']) assert.equal(typeof result.machine.versions[tool], 'string', `version of ${tool}`);

    // Every backend is either measured or skipped with a reason.
    const named = new Set([...result.backends, ...result.skipped.map((s) => s.backend)]);
    assert.deepEqual([...named].sort(), [...SMOKE_BACKENDS].sort());
    for (const s of result.skipped) assert.ok(s.reason.length > 0, `${s.backend} skipped without a reason`);
    for (const core of CORE_BACKENDS) assert.ok(result.backends.includes(core), `${core} was measured (skipped: ${JSON.stringify(result.skipped)})`);

    // Every row has every column, in the right types.
    for (const row of result.rows) {
      for (const key of Object.keys(row)) assert.ok((ROW_COLUMNS as readonly string[]).includes(key), `unknown column ${key}`);
      assert.ok(result.backends.includes(row.backend));
      assert.equal(typeof row.measure, 'string');
      assert.ok(['ms', 'req/s', 'MiB', 'tasks/s', 'workloads'].includes(row.unit), `unit ${row.unit}`);
      for (const k of ['p50', 'p99', 'mean', 'n'] as const) assert.equal(typeof row.value[k], 'number', `${row.backend} ${row.measure} value.${k}`);
      assert.ok(Number.isFinite(row.value.p50) && row.value.n >= 1, `${row.backend} ${row.measure} has samples`);
      if (row.floor) {
        assert.equal(typeof row.floor.name, 'string');
        for (const k of ['p50', 'p99', 'mean', 'n'] as const) assert.equal(typeof row.floor.value[k], 'number');
        assert.equal(typeof row.ratio, 'number', `${row.backend} ${row.measure}: a floor comes with its ratio`);
      }
    }

    // Every measured backend has every common measure: as a row, or as a failure that says why.
    for (const backend of result.backends) {
      for (const measure of COMMON_MEASURES) {
        const row = result.rows.find((r) => r.backend === backend && r.measure === measure);
        const err = result.errors.find((e) => e.backend === backend && (e.measure === measure || e.measure === '*'));
        if (CORE_BACKENDS.includes(backend)) assert.ok(row, `${backend} ${measure}: ${err?.message ?? 'missing'}`);
        else assert.ok(row ?? err, `${backend} ${measure} is neither a row nor a failure`);
      }
    }
    // The raw floors of the issue, beside the core backends' start rows.
    assert.ok(result.rows.some((r) => r.backend === 'namespace' && r.floor?.name.startsWith('bare bwrap')));
    assert.ok(result.rows.some((r) => r.backend === 'isolate' && r.floor?.name.startsWith('isolated-vm in-process')));
    assert.ok(result.distributions.some((d) => d.backend === 'namespace' && d.samples.length > 0));
    // Not a speed: a new bwrap sandbox with python in it is more than 1 MiB, or the memory measure read nothing.
    const mem = result.rows.find((r) => r.backend === 'namespace' && r.measure === 'memory_per_workload');
    assert.ok((mem?.value.p50 ?? 0) > 1, `namespace memory per workload read ${mem?.value.p50 ?? 'nothing'} MiB`);

    // --out wrote the three files; the markdown has the table.
    for (const f of ['results.json', 'results.md', 'report.html']) assert.ok(fs.existsSync(`${out}/${f}`), f);
    assert.deepEqual(JSON.parse(fs.readFileSync(`${out}/results.json`, 'utf8')), result);
    assert.match(fs.readFileSync(`${out}/results.md`, 'utf8'), /\| backend \| measure \| p50 \| p99 \| n \| floor \|/);
  });

  it('refuses an unknown backend with a message that names the flag', async () => {
    const r = await run(['benchmark', '--tiny', '--backends', 'nope']);
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /--backends: unknown backend "nope"/);
  });
});
