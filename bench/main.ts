/**
 * The benchmark: starts a Vulcan server (or uses --url), runs each available backend's rows
 * through the real HTTP API, each next to its raw floor measured in the same run, and
 * prints the table (or JSON).
 *
 *   npm run bench -- [--backends a,b] [--quick] [--json] [--out DIR] [--url URL]
 */
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import readline from 'node:readline';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { BACKEND_NAMES, type BackendName } from '../src/core/types.js';
import { VulcanClient } from '../src/sdk/index.js';
import type { BenchContext, BenchRow } from './types.js';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const VULCAN_BIN = path.resolve(HERE, '..', '..', 'bin', 'vulcan');

/** A rows module exports `bench<Name>(ctx)`. */
async function loadRows(name: BackendName): Promise<((ctx: BenchContext) => Promise<BenchRow[]>) | undefined> {
  const fn = `bench${name[0]?.toUpperCase() ?? ''}${name.slice(1)}`;
  try {
    const mod = (await import(`./rows/${name}.js`)) as Record<string, unknown>;
    const f = mod[fn];
    return typeof f === 'function' ? (f as (ctx: BenchContext) => Promise<BenchRow[]>) : undefined;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ERR_MODULE_NOT_FOUND') return undefined;
    throw err;
  }
}

async function startServer(dataDir: string): Promise<{ url: string; child: ChildProcess }> {
  const child = spawn(process.execPath, [VULCAN_BIN, 'serve', '--port', '0', '--data-dir', dataDir], { env: { ...process.env, VULCAN_LOG_LEVEL: 'info' }, stdio: ['ignore', 'pipe', 'pipe'] });
  const url = await new Promise<string>((resolve, reject) => {
    const rl = readline.createInterface({ input: child.stdout as NodeJS.ReadableStream });
    rl.on('line', (line) => {
      try {
        const m = JSON.parse(line) as { msg?: string; url?: string };
        if (m.msg === 'vulcan is serving' && m.url) resolve(m.url);
      } catch {
        // not a log line
      }
    });
    child.once('exit', (code) => reject(new Error(`vulcan serve exited ${String(code)}`)));
  });
  child.stdout?.resume();
  return { url, child };
}

const fmt = (n: number, unit: string) => (unit === 'req/s' ? n.toFixed(0) : n.toFixed(1));

/** The markdown table of rows. */
export function markdownTable(rows: readonly BenchRow[]): string {
  const lines = ['| backend | measure | p50 | p99 | n | floor | floor p50 | floor p99 | ratio | target | met |', '|---|---|---|---|---|---|---|---|---|---|---|'];
  for (const r of rows) {
    lines.push(
      `| ${r.backend} | ${r.measure} | ${fmt(r.value.p50, r.unit)} ${r.unit} | ${fmt(r.value.p99, r.unit)} ${r.unit} | ${r.value.n} | ${r.floor?.name ?? '-'} | ${r.floor ? `${fmt(r.floor.value.p50, r.unit)} ${r.unit}` : '-'} | ${r.floor ? `${fmt(r.floor.value.p99, r.unit)} ${r.unit}` : '-'} | ${r.ratio === undefined ? '-' : `${r.ratio.toFixed(2)}×`} | ${r.target ?? '-'} | ${r.met === undefined ? '-' : r.met ? 'yes' : 'NO'} |`,
    );
  }
  return lines.join('\n');
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      backends: { type: 'string' },
      quick: { type: 'boolean', default: false },
      json: { type: 'boolean', default: false },
      out: { type: 'string' },
      url: { type: 'string' },
      samples: { type: 'string' },
    },
  });
  const quick = values.quick ?? false;
  const samples = values.samples ? Number(values.samples) : quick ? 8 : 40;
  const progress = (msg: string) => process.stderr.write(`[bench] ${msg}\n`);
  let child: ChildProcess | undefined;
  let dataDir: string | undefined;
  let url = values.url;
  if (!url) {
    dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'vulcan-bench-'));
    ({ url, child } = await startServer(dataDir));
    progress(`server at ${url}`);
  }
  try {
    const client = new VulcanClient({ url });
    const infos = await client.backends();
    const wanted = values.backends ? (values.backends.split(',') as BackendName[]) : [...BACKEND_NAMES];
    const rows: BenchRow[] = [];
    const skipped: { backend: string; reason: string }[] = [];
    for (const name of wanted) {
      const info = infos.find((b) => b.name === name);
      if (!info?.available) {
        skipped.push({ backend: name, reason: info?.reason ?? 'not on this node' });
        progress(`skip ${name}: ${info?.reason ?? 'not on this node'}`);
        continue;
      }
      const fn = await loadRows(name);
      if (!fn) {
        skipped.push({ backend: name, reason: 'no benchmark rows yet' });
        continue;
      }
      progress(`${name}…`);
      rows.push(...(await fn({ url, samples, quick, progress })));
    }
    const result = { machine: { cpus: os.cpus()[0]?.model ?? 'unknown', cores: os.availableParallelism(), memory_gib: Math.round(os.totalmem() / 2 ** 30), kernel: os.release(), kvm: fs.existsSync('/dev/kvm'), node: process.version }, quick, samples, rows, skipped, finished_at: new Date().toISOString() };
    if (values.out) {
      fs.mkdirSync(values.out, { recursive: true });
      fs.writeFileSync(path.join(values.out, 'results.json'), JSON.stringify(result, null, 2));
      fs.writeFileSync(path.join(values.out, 'results.md'), `${markdownTable(rows)}\n`);
    }
    if (values.json) process.stdout.write(`${JSON.stringify(result, null, 2)}\n`);
    else {
      process.stdout.write(`${markdownTable(rows)}\n`);
      for (const s of skipped) process.stdout.write(`skipped ${s.backend}: ${s.reason}\n`);
    }
  } finally {
    child?.kill('SIGTERM');
    if (child) await new Promise((r) => child?.once('exit', r));
    if (dataDir) fs.rmSync(dataDir, { recursive: true, force: true });
  }
}

await main();
