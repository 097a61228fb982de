/**
 * The `vulcan` CLI as a user runs it: a real `vulcan serve` child process, and the commands
 * against it through VULCAN_URL.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import { after, before, describe, it } from 'node:test';
import { promisify } from 'node:util';
import { tempDir } from '../helpers/context.js';
import { spawnServer, VULCAN_BIN, type ChildServer } from '../helpers/server.js';

const run = promisify(execFile);

describe('CLI', () => {
  let server: ChildServer;
  let dataDir: string;
  const vulcan = async (...args: string[]) => {
    try {
      const { stdout, stderr } = await run(process.execPath, [VULCAN_BIN, ...args], { env: { ...process.env, VULCAN_URL: server.url, NO_COLOR: '1' } });
      return { code: 0, stdout, stderr };
    } catch (err) {
      const e = err as { code: number; stdout: string; stderr: string };
      return { code: e.code, stdout: e.stdout, stderr: e.stderr };
    }
  };

  before(async () => {
    dataDir = tempDir('vulcan-cli-');
    server = await spawnServer(dataDir);
  });
  after(async () => {
    await server.stop();
    fs.rmSync(dataDir, { recursive: true, force: true });
  });

  it('vulcan run prints the output, the isolation used and the time taken', async () => {
    const r = await vulcan('run', '--runtime', 'python', '--code', 'def main(input): return input["a"] + input["b"]', '--input', '{"a":1,"b":2}');
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, '3\n');
    assert.match(r.stderr, /completed · isolation namespace · \d+ ms/);
  });

  it('--json prints the record; a failing workload exits non-zero', async () => {
    const r = await vulcan('run', '--runtime', 'sh', '--code', 'exit 4', '--json');
    assert.equal(r.code, 1);
    const rec = JSON.parse(r.stdout) as { status: string; exit_code: number; error: { code: string } };
    assert.equal(rec.status, 'failed');
    assert.equal(rec.exit_code, 4);
    assert.equal(rec.error.code, 'nonzero_exit');
  });

  it('a timeout exits 124', async () => {
    const r = await vulcan('run', '--runtime', 'sh', '--code', 'sleep 60', '--timeout', '1');
    assert.equal(r.code, 124);
    assert.match(r.stderr, /timeout/);
  });

  it('--async, status, logs -f, ls and kill', async () => {
    const started = await vulcan('run', '--async', '--runtime', 'sh', '--code', 'echo one; sleep 0.3; echo two');
    assert.equal(started.code, 0, started.stderr);
    const id = started.stdout.trim();
    assert.match(id, /^[0-9A-Z]{26}$/);
    const logs = await vulcan('logs', '-f', id);
    assert.equal(logs.code, 0, logs.stderr);
    assert.equal(logs.stdout, 'one\ntwo\n');
    const status = await vulcan('status', id);
    assert.match(status.stdout, /completed/);
    const ls = await vulcan('ls');
    assert.match(ls.stdout, new RegExp(id));
    const long = (await vulcan('run', '--async', '--runtime', 'sh', '--code', 'sleep 60')).stdout.trim();
    await new Promise((r) => setTimeout(r, 300));
    const killed = await vulcan('kill', long);
    assert.equal(killed.code, 0, killed.stderr);
    assert.match(killed.stdout, /killed/);
    const again = await vulcan('kill', long);
    assert.notEqual(again.code, 0);
    assert.match(again.stderr, /conflict/);
  });

  it('vulcan backends lists every backend', async () => {
    const r = await vulcan('backends');
    for (const name of ['isolate', 'namespace', 'gvisor', 'container', 'microvm']) assert.match(r.stdout, new RegExp(`^${name}\\s`, 'm'));
  });

  it('a bad request prints the error code and message and exits 2', async () => {
    const r = await vulcan('run', '--runtime', 'cobol', '--code', 'x');
    assert.equal(r.code, 2);
    assert.match(r.stderr, /unknown_runtime/);
  });

  it('no server: says so and where it looked', async () => {
    const { stderr } = await run(process.execPath, [VULCAN_BIN, 'ls'], { env: { ...process.env, VULCAN_URL: 'http://127.0.0.1:9' } }).catch((e: { stderr: string }) => e);
    assert.match(stderr, /cannot reach the Vulcan server at http:\/\/127\.0\.0\.1:9/);
  });
});
