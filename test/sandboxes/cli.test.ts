/**
 * The `vulcan sandbox` commands and `vulcan certify`, run as a user runs them (bin/vulcan
 * as a child process) against a real server.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { tempDir } from '../helpers/context.js';
import { startTestServer, VULCAN_BIN, type TestServer } from '../helpers/server.js';

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

function vulcan(url: string, args: string[], input?: string): Promise<Run> {
  return new Promise((resolve) => {
    const child = execFile(process.execPath, [VULCAN_BIN, ...args], { env: { ...process.env, VULCAN_URL: url, NO_COLOR: '1' }, timeout: 120_000, maxBuffer: 16 * 1024 * 1024 }, (err, stdout, stderr) => {
      resolve({ code: err ? (typeof err.code === 'number' ? err.code : 1) : 0, stdout, stderr });
    });
    if (input !== undefined) child.stdin?.end(input);
    else child.stdin?.end();
  });
}

describe('CLI: vulcan sandbox', () => {
  let server: TestServer;
  const dir = tempDir('vulcan-sbx-cli-');
  before(async () => {
    server = await startTestServer({ backends: ['namespace'] });
  });
  after(async () => {
    await server.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('create, ls, exec, cp both ways, shell, pause, resume, rm', { timeout: 60_000 }, async () => {
    const created = await vulcan(server.url, ['sandbox', 'create', '--ttl', '600', '--meta', 'owner=cli']);
    assert.equal(created.code, 0, created.stderr);
    const id = created.stdout.trim();
    assert.match(id, /^[0-9A-Z]{26}$/);
    try {
      const ls = await vulcan(server.url, ['sandbox', 'ls', '--meta', 'owner=cli']);
      assert.match(ls.stdout, new RegExp(`${id}\\s+running\\s+namespace`));
      const ex = await vulcan(server.url, ['sandbox', 'exec', id, '--', 'sh', '-c', 'echo out; echo err >&2; exit 5']);
      assert.equal(ex.code, 5);
      assert.equal(ex.stdout, 'out\n');
      assert.equal(ex.stderr, 'err\n');
      const local = path.join(dir, 'up.txt');
      fs.writeFileSync(local, 'from the host\n');
      fs.chmodSync(local, 0o640);
      const up = await vulcan(server.url, ['sandbox', 'cp', local, `${id}:/work/in/up.txt`]);
      assert.equal(up.code, 0, up.stderr);
      assert.equal((await vulcan(server.url, ['sandbox', 'exec', id, 'cat', '/work/in/up.txt'])).stdout, 'from the host\n');
      const back = path.join(dir, 'down.txt');
      const down = await vulcan(server.url, ['sandbox', 'cp', `${id}:/work/in/up.txt`, back]);
      assert.equal(down.code, 0, down.stderr);
      assert.equal(fs.readFileSync(back, 'utf8'), 'from the host\n');
      const sh = await vulcan(server.url, ['sandbox', 'shell', id], 'echo $((40+2))\nexit 4\n');
      assert.equal(sh.code, 4, sh.stderr);
      assert.match(sh.stdout, /42/);
      assert.match((await vulcan(server.url, ['sandbox', 'pause', id])).stdout, /paused/);
      const refused = await vulcan(server.url, ['sandbox', 'exec', id, 'true']);
      assert.equal(refused.code, 2);
      assert.match(refused.stderr, /conflict/);
      assert.match((await vulcan(server.url, ['sandbox', 'resume', id])).stdout, /running/);
    } finally {
      const rm = await vulcan(server.url, ['sandbox', 'rm', id]);
      assert.equal(rm.code, 0, rm.stderr);
    }
    const gone = await vulcan(server.url, ['sandbox', 'exec', id, 'true']);
    assert.match(gone.stderr, /sandbox_destroyed/);
  });

  it('vulcan certify namespace --format markdown --output FILE writes a passing signoff report', { timeout: 120_000 }, async () => {
    const out = path.join(dir, 'namespace-certification.md');
    const r = await vulcan(server.url, ['certify', 'namespace', '--format', 'markdown', '--output', out]);
    assert.equal(r.code, 0, r.stderr);
    const md = fs.readFileSync(out, 'utf8');
    assert.match(md, /Overall status: \*\*PASS\*\*/);
    assert.match(md, /\| bubblewrap \| yes \| bubblewrap \d/);
    for (const c of ['health', 'spawn-exec', 'files', 'streaming-exec', 'live-preview', 'pause-resume', 'destroy', 'restart-reconciliation']) assert.match(md, new RegExp(`\\| ${c} \\| pass \\|`));
    assert.match(md, /## Known caveats/);
    assert.match(md, /Owner\/signoff/);
  });
});
