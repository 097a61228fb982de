/**
 * Sandboxes end to end on the namespace backend, through the HTTP API and the SDK: bad
 * input, exec, the files API against adversarial paths (traversal, encodings, NUL,
 * symlinks out, a symlink-swap race, setuid), a 100 MiB round trip, pause/resume, TTL and
 * idle, the preview proxy (HTTP, WebSocket, only the sandbox's own ports), the WebSocket
 * PTY, and that nothing is left on the host.
 */
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import path from 'node:path';
import { Readable } from 'node:stream';
import { after, before, describe, it } from 'node:test';
import WebSocket from 'ws';
import { sandboxCgroupPrefix } from '../../src/backends/namespace/sandbox-driver.js';
import { Sandbox, SandboxDestroyedError, type ExecResult } from '../../src/sdk/index.js';
import { checkPtyShell } from '../helpers/pty.js';
import { cgroupsLeft } from '../helpers/context.js';
import { startTestServer, type TestServer } from '../helpers/server.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('sandboxes on namespace', () => {
  let server: TestServer;
  let sbx: Sandbox;
  const made: Sandbox[] = [];
  const canary = `/tmp/vulcan-host-canary-${randomBytes(6).toString('hex')}`;
  const CANARY_TEXT = 'HOST-SECRET-CANARY';

  const create = async (opts: Parameters<typeof Sandbox.create>[0] = {}) => {
    const s = await Sandbox.create({ url: server.url, isolation: 'namespace', ...opts });
    made.push(s);
    return s;
  };
  const api = async (method: string, p: string, body?: unknown, headers: Record<string, string> = {}) => {
    const res = await fetch(`${server.url}${p}`, {
      method,
      headers: body === undefined ? headers : { 'content-type': 'application/json', ...headers },
      ...(body === undefined ? {} : { body: typeof body === 'string' ? body : JSON.stringify(body) }),
    });
    const text = await res.text();
    let json: { error?: { code: string; message: string } } & Record<string, unknown> = {};
    try {
      json = JSON.parse(text) as typeof json;
    } catch {
      // raw
    }
    return { status: res.status, json, text };
  };

  before(async () => {
    fs.writeFileSync(canary, CANARY_TEXT);
    server = await startTestServer({ backends: ['namespace'] });
    sbx = await create();
  });
  after(async () => {
    for (const s of made) await s.destroy().catch(() => undefined);
    const prefix = sandboxCgroupPrefix(server.dataDir);
    const dir = path.join(server.dataDir, 'sandboxes');
    const dirs = fs.existsSync(dir) ? fs.readdirSync(dir) : [];
    await server.close();
    fs.rmSync(canary, { force: true });
    assert.deepEqual(cgroupsLeft(prefix), [], 'no sandbox cgroup is left');
    assert.deepEqual(dirs, [], 'no sandbox directory is left');
  });

  it('create answers 201 with the record; bad input gets its code and starts nothing', async () => {
    assert.equal(sbx.info.state, 'running');
    assert.equal(sbx.info.isolation_used, 'namespace');
    assert.equal(sbx.info.image, 'host');
    assert.equal(sbx.info.ttl_s, 3600);
    assert.equal(sbx.info.idle_timeout_s, 900);
    assert.match(sbx.info.id, /^[0-9A-Z]{26}$/);
    assert.ok(Date.parse(sbx.info.expires_at ?? '') > Date.now() + 3500_000);
    const before = (await api('GET', '/v1/sandboxes')).json.items as unknown[];
    const bad: [unknown, number, string][] = [
      [{ isolation: 'nope' }, 422, 'unknown_isolation'],
      [{ resources: { mem_mb: 'lots' } }, 422, 'limit_out_of_range'],
      [{ resources: { mem_mb: 1 } }, 422, 'limit_out_of_range'],
      [{ resources: { disk_mb: 0 } }, 422, 'limit_out_of_range'],
      [{ resources: { cpus: 1e9 } }, 422, 'limit_out_of_range'],
      [{ ttl_s: -1 }, 422, 'limit_out_of_range'],
      [{ ttl_s: '60' }, 400, 'invalid_request'],
      [{ idle_timeout_s: Number.MAX_SAFE_INTEGER }, 422, 'limit_out_of_range'],
      [{ env: { 'BAD NAME': 'x' } }, 400, 'invalid_request'],
      [{ image: 'python' }, 400, 'invalid_request'],
      [{ surprise: true }, 400, 'invalid_request'],
      [{ isolation: 'isolate' }, 503, 'backend_unavailable'],
      ['{not json', 400, 'invalid_request'],
    ];
    for (const [body, status, code] of bad) {
      const r = await api('POST', '/v1/sandboxes', body);
      assert.equal(r.status, status, `${JSON.stringify(body)} → ${r.text}`);
      assert.equal(r.json.error?.code, code, JSON.stringify(body));
    }
    const ct = await fetch(`${server.url}/v1/sandboxes`, { method: 'POST', headers: { 'content-type': 'text/plain' }, body: '{}' });
    assert.equal(ct.status, 415);
    assert.equal((await api('GET', '/v1/sandboxes/01NOPE')).status, 404);
    assert.equal((await api('POST', '/v1/sandboxes/01NOPE/exec', { cmd: ['true'] })).status, 404);
    assert.deepEqual(((await api('GET', '/v1/sandboxes')).json.items as unknown[]).length, before.length, 'nothing was recorded');
    const listed = (await api('GET', '/v1/sandboxes?state=running')).json.items as { id: string }[];
    assert.ok(listed.some((s) => s.id === sbx.id));
    assert.equal((await api('GET', '/v1/sandboxes?state=bogus')).status, 400);
  });

  it('lists by metadata', async () => {
    const tagged = await create({ metadata: { team: 'blue', job: '7' } });
    const hit = await Sandbox.list({ url: server.url, metadata: { team: 'blue' } });
    assert.deepEqual(
      hit.map((s) => s.id),
      [tagged.id],
    );
    assert.deepEqual(await Sandbox.list({ url: server.url, metadata: { team: 'red' } }), []);
    await tagged.destroy();
  });

  it('exec: argv, exit codes, stdin, env, cwd, timeout, missing commands; bad bodies are 400', async () => {
    const r = await sbx.exec(['sh', '-c', 'echo out; echo err >&2; exit 7']);
    assert.equal(r.exit_code, 7);
    assert.equal(r.stdout, 'out\n');
    assert.equal(r.stderr, 'err\n');
    assert.equal(r.timed_out, false);
    assert.ok(r.duration_ms >= 0);
    const argv = await sbx.exec(['printf', '%s|', 'a b', '$HOME', ';rm -rf /']);
    assert.equal(argv.stdout, 'a b|$HOME|;rm -rf /|', 'arguments reach the program as they are, never through a shell');
    assert.equal((await sbx.exec(['cat'], { stdin: 'piped in' })).stdout, 'piped in');
    const env = await sbx.exec(['sh', '-c', 'echo $FOO:$HOME:$(id -u):$(pwd)'], { env: { FOO: 'bar' }, cwd: '/tmp' });
    assert.equal(env.stdout, 'bar:/work:1000:/tmp\n');
    const t0 = Date.now();
    const slow = await sbx.exec(['sleep', '30'], { timeoutS: 0.5 });
    assert.equal(slow.timed_out, true);
    assert.ok(Date.now() - t0 < 5000);
    const missing = await sbx.exec(['/no/such/binary']);
    assert.equal(missing.exit_code, 127);
    for (const body of [{ cmd: 'echo hi' }, { cmd: [] }, {}, { cmd: ['true'], timeout_s: -1 }, { cmd: ['true'], cwd: 'relative' }]) {
      const res = await api('POST', `/v1/sandboxes/${sbx.id}/exec`, body);
      assert.ok(res.status === 400 || res.status === 422, `${JSON.stringify(body)} → ${res.status}`);
    }
    const big = 'x'.repeat(3 * 1024 * 1024);
    const wc = await sbx.exec(['wc', '-c'], { stdin: big });
    assert.equal(wc.stdout.trim(), String(big.length), 'a 3 MiB stdin arrives whole');
    const flood = await sbx.exec(['head', '-c', String(3 * 1024 * 1024), '/dev/zero']);
    assert.equal(flood.stdout.length, 1024 * 1024);
    assert.equal(flood.stdout_truncated, true, 'the buffered answer keeps 1 MiB and says so');
    let streamed = 0;
    for await (const ev of sbx.execStream(['sh', '-c', 'head -c 20000000 /dev/zero | tr "\\0" a'])) if (ev.type === 'stdout') streamed += ev.data.length;
    assert.equal(streamed, 20_000_000, 'the event stream is not capped and loses nothing');
    const serverEnv = await sbx.exec(['env']);
    assert.doesNotMatch(serverEnv.stdout, /VULCAN_|npm_/, 'the server environment does not leak in');
  });

  it('files: paths are confined; traversal, encodings, NUL and symlinks never reach the host', async () => {
    const f = sbx.files;
    const status = async (p: string) => (await api('GET', `/v1/sandboxes/${sbx.id}/files?path=${p}`)).status;
    // Refused outright.
    for (const p of ['', 'relative.txt', '..%2F..%2Fetc%2Fpasswd', 'work/x', '%2Fwork%2Fa%00b']) {
      const r = await api('GET', `/v1/sandboxes/${sbx.id}/files?path=${p}`);
      assert.equal(r.status, 400, p);
      assert.equal(r.json.error?.code, 'invalid_path', p);
    }
    assert.equal((await api('GET', `/v1/sandboxes/${sbx.id}/files`)).json.error?.code, 'invalid_path');
    // Resolved inside the sandbox: the host canary is never there.
    const names = [canary, `/work/../../..${canary}`, encodeURIComponent(`/work/../..${canary}`), `/work/%2e%2e/%2e%2e${canary}`, `/work/%252e%252e${canary}`, `//${canary}`];
    for (const p of names) assert.equal(await status(p), 404, p);
    const passwd = (await f.read('/work/../../../etc/passwd')).toString();
    assert.match(passwd, /^sandbox:x:1000/m, "`..` resolves to the sandbox's own /etc/passwd");
    // Symlinks and hardlinks made inside point inside.
    const mk = await sbx.exec(['sh', '-c', `ln -s / /work/hostroot; ln -s ${canary} /work/canary-link; ln -s /etc /work/etc-link; ln /usr/bin/env /work/hard 2>&1; echo done`]);
    assert.match(mk.stdout, /done/);
    assert.match(mk.stdout, /Invalid cross-device link|Operation not permitted|cross-device/i, 'no hardlink onto a host file');
    assert.equal(await status(`/work/hostroot${canary}`), 404);
    assert.equal(await status('/work/canary-link'), 404);
    const viaLink = await api('PUT', `/v1/sandboxes/${sbx.id}/files?path=/work/etc-link/evil`, 'x', { 'content-type': 'application/octet-stream' });
    // The sandbox's root is its own (bwrap's tmpfs): the write lands in the sandbox's /etc.
    assert.equal(viaLink.status, 200, viaLink.text);
    assert.equal((await sbx.exec(['cat', '/etc/evil'])).stdout, 'x');
    assert.equal(fs.existsSync('/etc/evil'), false, 'never on the host');
    const ro = await api('PUT', `/v1/sandboxes/${sbx.id}/files?path=/usr/bin/evil`, 'x', { 'content-type': 'application/octet-stream' });
    assert.equal(ro.json.error?.code, 'invalid_path');
    assert.equal(fs.existsSync('/usr/bin/evil'), false);
    const st = await f.stat('/work/hostroot');
    assert.equal(st.type, 'symlink');
    assert.equal(st.target, '/');
    // Setuid bits cannot be set.
    await f.write('/work/tool', '#!/bin/sh\necho tool\n', { mode: 0o755 });
    for (const mode of [0o4755, 0o2755, 0o1777, '4755', 'rwx', -1]) {
      const r = await api('POST', `/v1/sandboxes/${sbx.id}/files/chmod`, { path: '/work/tool', mode });
      assert.equal(r.status, 400, `mode ${String(mode)}`);
    }
    assert.equal((await api('PUT', `/v1/sandboxes/${sbx.id}/files?path=/work/s&mode=4755`, 'x', { 'content-type': 'application/octet-stream' })).status, 400);
    assert.equal((await f.chmod('/work/tool', 0o700)).mode, 0o700);
    assert.equal((await sbx.exec(['/work/tool'])).stdout, 'tool\n');
    // Directories.
    await f.mkdir('/work/d/e');
    await f.write('/work/d/e/x', 'x');
    assert.equal((await api('GET', `/v1/sandboxes/${sbx.id}/files?path=/work/d`)).status, 409, 'reading a directory');
    assert.equal((await api('DELETE', `/v1/sandboxes/${sbx.id}/files?path=/work/d`)).status, 409, 'a non-empty directory needs recursive');
    assert.equal((await api('DELETE', `/v1/sandboxes/${sbx.id}/files?path=/work/d&recursive=true`)).status, 204);
    assert.equal((await api('DELETE', `/v1/sandboxes/${sbx.id}/files?path=/work/d`)).status, 404);
    assert.equal((await api('GET', `/v1/sandboxes/${sbx.id}/files/list?path=/work&depth=0`)).status, 400);
    assert.equal((await api('POST', `/v1/sandboxes/${sbx.id}/files/move`, { from: '/work/nope', to: '/work/x' })).status, 404);
  });

  it('files: a symlink-swap race inside the sandbox never yields a host file', async () => {
    await sbx.files.write('/work/race-file', 'sandbox-content');
    await sbx.exec(['sh', '-c', `nohup sh -c 'while :; do ln -sfn ${canary} /work/race; ln -sfn / /work/race; ln -sfn /work/race-file /work/race; done' >/dev/null 2>&1 & echo $! > /tmp/race.pid`]);
    const seen = new Set<string>();
    for (let round = 0; round < 10; round++) {
      const results = await Promise.all(
        [`/work/race`, `/work/race${canary}`].flatMap((p) =>
          Array.from({ length: 5 }, async () => {
            const r = await api('GET', `/v1/sandboxes/${sbx.id}/files?path=${encodeURIComponent(p)}`);
            return r.status === 200 ? r.text : String(r.status);
          }),
        ),
      );
      for (const r of results) seen.add(r);
    }
    await sbx.exec(['sh', '-c', 'kill $(cat /tmp/race.pid)']);
    assert.ok(![...seen].some((s) => s.includes(CANARY_TEXT)), `saw ${[...seen].join(', ')}`);
    for (const s of seen) assert.ok(['sandbox-content', '404', '409'].includes(s), `unexpected answer ${s}`);
  });

  it('files: a 100 MiB file round-trips byte-identical, streamed both ways', { timeout: 120_000 }, async () => {
    const total = 100 * 1024 * 1024;
    const chunk = 1024 * 1024;
    const up = createHash('sha256');
    let sent = 0;
    const body = new Readable({
      read() {
        if (sent >= total) {
          this.push(null);
          return;
        }
        const b = randomBytes(chunk);
        up.update(b);
        sent += b.length;
        this.push(b);
      },
    });
    const w = await sbx.files.write('/work/big.bin', body);
    assert.equal(w.size, total);
    const st = await sbx.files.stat('/work/big.bin');
    assert.equal(st.size, total);
    const down = createHash('sha256');
    let got = 0;
    for await (const c of await sbx.files.readStream('/work/big.bin')) {
      down.update(c as Buffer);
      got += (c as Buffer).length;
    }
    assert.equal(got, total);
    assert.equal(down.digest('hex'), up.digest('hex'));
    await sbx.files.remove('/work/big.bin');
  });

  it('archives: a directory goes out as tar and comes back in', async () => {
    await sbx.files.write('/work/arc/one.txt', 'one');
    await sbx.files.write('/work/arc/sub/two.txt', 'two');
    const parts: Buffer[] = [];
    for await (const c of await sbx.files.downloadArchive('/work/arc')) parts.push(c as Buffer);
    const tar = Buffer.concat(parts);
    assert.ok(tar.length >= 2048);
    await sbx.files.uploadArchive('/work/copy', tar);
    assert.equal((await sbx.files.read('/work/copy/sub/two.txt')).toString(), 'two');
    await sbx.exec(['sh', '-c', 'mkdir -p /tmp/suid && touch /tmp/suid/s && chmod 4755 /tmp/suid/s && tar -C /tmp/suid -cf /tmp/suid.tar .']);
    const suidTar = await sbx.files.read('/tmp/suid.tar');
    await sbx.files.uploadArchive('/work/suid', suidTar);
    assert.equal((await sbx.files.stat('/work/suid/s')).mode & 0o7000, 0, 'an archive brings no setuid bit');
    const bad = await api('PUT', `/v1/sandboxes/${sbx.id}/archive?path=/work/x`, 'not a tar', { 'content-type': 'application/x-tar' });
    assert.equal(bad.status, 400);
  });

  it('pause keeps processes and stops the TTL clock; resume goes on; the clocks stop sandboxes', { timeout: 30_000 }, async () => {
    const [ttl, paused, idle, busy] = await Promise.all([create({ ttlS: 1 }), create({ ttlS: 2 }), create({ idleTimeoutS: 1 }), create({ idleTimeoutS: 1 })]);
    const p = await paused.pause();
    assert.equal(p.state, 'paused');
    assert.equal(p.expires_at, null);
    assert.ok((p.ttl_remaining_s ?? 0) >= 1);
    assert.equal((await api('POST', `/v1/sandboxes/${paused.id}/files/mkdir`, { path: '/work/x' })).status, 409);
    const longExec = busy.exec(['sleep', '2.5']);
    await sleep(3000);
    // The TTL ran out; the idle one stopped; the busy one's exec kept it alive; the paused one waits.
    assert.equal((await ttl.refresh()).state, 'destroyed');
    assert.equal(ttl.info.end_reason, 'ttl');
    await assert.rejects(ttl.exec(['true']), (e: unknown) => e instanceof SandboxDestroyedError && e.status === 410);
    assert.equal((await idle.refresh()).state, 'destroyed');
    assert.equal(idle.info.end_reason, 'idle');
    const r: ExecResult = await longExec;
    assert.equal(r.exit_code, 0, 'a long exec counts as activity');
    assert.equal((await paused.refresh()).state, 'paused');
    const resumed = await paused.resume();
    assert.equal(resumed.state, 'running');
    assert.ok(Date.parse(resumed.expires_at ?? '') - Date.now() > 1000, 'the TTL left at pause time is still there');
    await paused.setTimeout(1);
    await sleep(1600);
    assert.equal((await paused.refresh()).state, 'destroyed');
    await busy.destroy();
  });

  it('preview: HTTP and WebSocket reach the port inside; only the sandbox\'s own ports; bad ports are 400', { timeout: 30_000 }, async () => {
    const serverJs = `
const http = require('http');
const s = http.createServer((req, res) => { let b = ''; req.on('data', (c) => (b += c)); req.on('end', () => { res.setHeader('x-inner', 'yes'); res.end(JSON.stringify({ method: req.method, url: req.url, body: b, host: req.headers.host })); }); });
s.on('upgrade', (req, sock) => { sock.write('HTTP/1.1 101 Switching Protocols\\r\\nUpgrade: echo\\r\\nConnection: Upgrade\\r\\n\\r\\n'); sock.on('data', (d) => sock.write('echo:' + d)); });
s.listen(9090, '127.0.0.1');`;
    await sbx.files.write('/work/srv.cjs', serverJs);
    await sbx.exec(['sh', '-c', 'nohup /usr/bin/node /work/srv.cjs >/tmp/srv.log 2>&1 &']);
    let res: Response | undefined;
    for (let i = 0; i < 100; i++) {
      res = await fetch(`${sbx.previewUrl(9090, '/a/b?x=1&y=%2F')}`, { method: 'POST', body: 'payload' });
      if (res.status === 200) break;
      await sleep(100);
    }
    assert.equal(res?.status, 200);
    assert.equal(res?.headers.get('x-inner'), 'yes');
    const echoed = (await res?.json()) as { method: string; url: string; body: string };
    assert.deepEqual({ method: echoed.method, url: echoed.url, body: echoed.body }, { method: 'POST', url: '/a/b?x=1&y=%2F', body: 'payload' });
    // WebSocket (any upgrade) through the preview.
    const { port } = new URL(server.url);
    const echo = await new Promise<string>((resolve, reject) => {
      const s = net.connect(Number(port), '127.0.0.1', () => {
        s.write(`GET /v1/sandboxes/${sbx.id}/ports/9090/ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n`);
      });
      let buf = '';
      s.on('data', (d) => {
        buf += d.toString();
        if (buf.includes('\r\n\r\n') && !buf.includes('echo:')) s.write('ping');
        if (buf.includes('echo:ping')) {
          s.destroy();
          resolve(buf);
        }
      });
      s.on('error', reject);
      setTimeout(() => reject(new Error(`no echo: ${buf}`)), 5000);
    });
    assert.match(echo, /^HTTP\/1.1 101/);
    // A host port with a secret is not reachable: the sandbox has its own loopback.
    const host = http.createServer((_q, r) => r.end('HOST-PORT-SECRET'));
    await new Promise<void>((r) => host.listen(0, '127.0.0.1', r));
    const hostPort = (host.address() as net.AddressInfo).port;
    try {
      const leak = await fetch(sbx.previewUrl(hostPort));
      assert.equal(leak.status, 503);
      assert.doesNotMatch(await leak.text(), /HOST-PORT-SECRET/);
      const inside = await sbx.exec(['/usr/bin/python3', '-c', `import urllib.request\ntry:\n print(urllib.request.urlopen("http://127.0.0.1:${hostPort}", timeout=2).read())\nexcept Exception as e: print("refused")`]);
      assert.equal(inside.stdout.trim(), 'refused');
    } finally {
      host.close();
    }
    for (const p of ['0', '65536', 'abc', '-1', '80.5']) assert.equal((await fetch(`${server.url}/v1/sandboxes/${sbx.id}/ports/${p}/`)).status, 400, p);
    assert.equal((await fetch(`${server.url}/v1/sandboxes/01NOPE/ports/80/`)).status, 404);
  });

  it('WebSocket exec: an interactive PTY with resize, and the exit code out', { timeout: 20_000 }, async () => {
    await checkPtyShell(sbx);
    // Without a PTY: stderr apart, and signals reach the command.
    const plain = new WebSocket(sbx.shellUrl({ cmd: ['sh', '-c', 'echo ready >&2; sleep 60'], pty: false }));
    const ended = await new Promise<{ type: string; signal?: string | null }>((resolve, reject) => {
      plain.on('message', (data, isBinary) => {
        if (isBinary) return;
        const m = JSON.parse((data as Buffer).toString()) as { type: string; data?: string; signal?: string | null };
        if (m.type === 'stderr' && m.data === 'ready\n') plain.send(JSON.stringify({ type: 'signal', signal: 'SIGTERM' }));
        if (m.type === 'exit') resolve(m);
      });
      plain.on('error', reject);
    });
    assert.equal(ended.signal, 'SIGTERM');
    const bad = new WebSocket(`${server.url.replace('http', 'ws')}/v1/sandboxes/01NOPE/exec/ws`);
    const status = await new Promise<number>((resolve) => bad.on('unexpected-response', (_q, r) => resolve(r.statusCode ?? 0)));
    assert.equal(status, 404);
  });

  it('destroy: 204, then destroyed and 410 on every call; processes, cgroup and directory are gone', async () => {
    const s = await create();
    await s.exec(['sh', '-c', 'nohup sleep 600 >/dev/null 2>&1 &']);
    const prefix = sandboxCgroupPrefix(server.dataDir);
    assert.equal(cgroupsLeft(`${prefix}${s.id}`).length, 1);
    const del = await api('DELETE', `/v1/sandboxes/${s.id}`);
    assert.equal(del.status, 204);
    assert.equal((await s.refresh()).state, 'destroyed');
    assert.deepEqual(cgroupsLeft(`${prefix}${s.id}`), []);
    assert.equal(fs.existsSync(path.join(server.dataDir, 'sandboxes', s.id)), false);
    for (const [m, p, b] of [
      ['POST', '/exec', { cmd: ['true'] }],
      ['GET', '/files?path=/work/x', undefined],
      ['POST', '/pause', {}],
      ['POST', '/timeout', { ttl_s: 5 }],
      ['GET', '/ports/80/', undefined],
    ] as const) {
      const r = await api(m, `/v1/sandboxes/${s.id}${p}`, b);
      assert.equal(r.status, 410, `${m} ${p}`);
      assert.equal(r.json.error?.code, 'sandbox_destroyed');
    }
    assert.equal((await api('DELETE', `/v1/sandboxes/${s.id}`)).status, 204, 'DELETE again is harmless');
  });
});
