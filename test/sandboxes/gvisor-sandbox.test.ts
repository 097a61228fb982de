/**
 * Sandboxes on the gvisor backend, against real runsc: evidence from inside that the code
 * runs on gVisor's kernel with no host files and no network (on `minimal`, a busybox image
 * with no node: the agent brings its own); the files API confined to the sandbox (symlinks
 * to host files, a symlink-swap race); a symlink planted at the agent's socket path cannot
 * redirect the root server to a host socket; the WebSocket PTY; unknown images; a server
 * killed outright (SIGKILL) re-attaches live sandboxes, marks dead ones lost and destroys
 * orphans; and nothing is left on the host.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { connectNoFollow } from '../../src/sandboxes/agent-socket.js';
import { gvisorSandboxCgroupPrefix, gvisorSandboxRoot } from '../../src/backends/gvisor/sandbox-driver.js';
import { findRunsc } from '../../src/backends/gvisor/runsc.js';
import { reapStaleCgroups } from '../../src/host/cgroups.js';
import { Sandbox } from '../../src/sdk/index.js';
import { eventually, tempDir } from '../helpers/context.js';
import { checkPtyShell } from '../helpers/pty.js';
import { gvisorSandboxLeftovers, startGvisorServe } from './gvisor-helpers.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Why these tests cannot run here, or undefined. */
function hostSkipReason(): string | undefined {
  if (process.getuid?.() !== 0) return 'gvisor sandboxes need root (runsc, cgroups, mounts)';
  if (!findRunsc()) return 'runsc is not installed (apt-get install runsc)';
  return undefined;
}
const SKIP = hostSkipReason();

describe('connectNoFollow: the server never follows what a sandbox planted at a socket path', () => {
  it('connects to a socket; refuses a symlink to a socket, a FIFO and a file', { skip: SKIP }, async () => {
    const dir = tempDir('vulcan-nofollow-');
    const server = net.createServer((s) => s.on('error', () => undefined).end());
    let accepted = 0;
    server.on('connection', () => accepted++);
    try {
      const real = path.join(dir, 'real.sock');
      await new Promise<void>((r) => server.listen(real, r));
      const s = await connectNoFollow(real);
      s.on('error', () => undefined).destroy();
      assert.equal(accepted, 1);
      fs.symlinkSync(real, path.join(dir, 'link.sock'));
      await assert.rejects(connectNoFollow(path.join(dir, 'link.sock')), /symlink/);
      fs.writeFileSync(path.join(dir, 'file'), 'x');
      await assert.rejects(connectNoFollow(path.join(dir, 'file')), /not a socket/);
      execFileSync('mkfifo', [path.join(dir, 'fifo')]);
      await assert.rejects(connectNoFollow(path.join(dir, 'fifo')), /not a socket/);
      await assert.rejects(connectNoFollow(path.join(dir, 'missing')), /ENOENT/);
      await sleep(50);
      assert.equal(accepted, 1, 'the symlinked socket was never reached');
    } finally {
      server.close();
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('sandboxes on gvisor', { skip: SKIP }, () => {
  const dataDir = tempDir('vulcan-gvsbx-');
  let server: { url: string; stop: (signal?: NodeJS.Signals) => Promise<void> } | undefined;
  let sbx: Sandbox;
  const made: Sandbox[] = [];
  const canary = `/tmp/vulcan-host-canary-${randomBytes(6).toString('hex')}`;
  const CANARY_TEXT = 'HOST-SECRET-CANARY';
  const url = () => server?.url ?? '';

  const create = async (opts: Parameters<typeof Sandbox.create>[0] = {}) => {
    const s = await Sandbox.create({ url: url(), isolation: 'gvisor', ...opts });
    made.push(s);
    return s;
  };
  const api = async (method: string, p: string, body?: unknown) => {
    const res = await fetch(`${url()}${p}`, {
      method,
      headers: body === undefined ? {} : typeof body === 'string' ? { 'content-type': 'application/octet-stream' } : { 'content-type': 'application/json' },
      ...(body === undefined ? {} : { body: typeof body === 'string' ? body : JSON.stringify(body) }),
    });
    const text = await res.text();
    let json: { error?: { code: string; message: string } } & Record<string, unknown> = {};
    try {
      json = JSON.parse(text) as typeof json;
    } catch {
      // raw bytes
    }
    return { status: res.status, json, text };
  };

  before(async () => {
    fs.writeFileSync(canary, CANARY_TEXT);
    server = await startGvisorServe(dataDir);
    sbx = await create();
  });
  after(async () => {
    for (const s of made) await Sandbox.connect(s.id, { url: url() }).then((x) => x.destroy()).catch(() => undefined);
    await server?.stop().catch(() => undefined);
    fs.rmSync(canary, { force: true });
    const left = await eventually(() => gvisorSandboxLeftovers(dataDir));
    fs.rmSync(dataDir, { recursive: true, force: true });
    assert.deepEqual(left, [], `left on the host (sandboxes: ${made.map((s) => s.id).join(', ')})`);
  });

  it('runs on minimal (no node in the image) with gVisor\'s kernel, no host files, no network', async () => {
    assert.equal(sbx.info.isolation_used, 'gvisor');
    assert.equal(sbx.info.image, 'minimal');
    assert.equal((await sbx.exec(['sh', '-c', 'command -v node || echo none'])).stdout, 'none\n', 'the image has no node; the agent runs on its own');
    assert.equal((await sbx.exec(['uname', '-r'])).stdout.trim(), '4.4.0');
    assert.match((await sbx.exec(['dmesg'])).stdout, /Starting gVisor/);
    assert.equal((await sbx.exec(['id', '-u'])).stdout.trim(), '1000');
    const host = await sbx.exec(['sh', '-c', `cat ${canary}; ls /root /home 2>&1; cat /etc/shadow 2>&1; echo end`]);
    assert.doesNotMatch(host.stdout, new RegExp(CANARY_TEXT));
    assert.equal(fs.existsSync(canary), true);
    const hostShadow = fs.readFileSync('/etc/shadow', 'utf8');
    const rootLine = hostShadow.split('\n').find((l) => l.startsWith('root:')) ?? 'root:';
    assert.ok(!host.stdout.includes(rootLine), 'the host /etc/shadow is not reachable');
    const ifaces = (await sbx.exec(['cat', '/proc/net/dev'])).stdout;
    const names = ifaces.split('\n').slice(2).map((l) => l.split(':')[0]?.trim()).filter(Boolean);
    assert.deepEqual(names, ['lo'], `interfaces: ${ifaces}`);
    const egress = await sbx.exec(['sh', '-c', 'wget -q -T 2 -O - http://1.1.1.1/ >/dev/null 2>&1 && echo open || echo blocked'], { timeoutS: 20 });
    assert.equal(egress.stdout.trim(), 'blocked');
    // The root is the image's, read-only: only /work and /tmp are writable.
    const ro = await sbx.exec(['sh', '-c', 'echo x > /etc/evil 2>&1 || echo refused']);
    assert.match(ro.stdout, /refused/);
  });

  it('files: symlinks to host paths and a symlink-swap race never reach a host file', { timeout: 60_000 }, async () => {
    const status = async (p: string) => (await api('GET', `/v1/sandboxes/${sbx.id}/files?path=${encodeURIComponent(p)}`)).status;
    const mk = await sbx.exec(['sh', '-c', `ln -s /etc/shadow /work/shadow; ln -s ${canary} /work/canary-link; ln -s / /work/hostroot; ln -s /root /work/rootdir; echo done`]);
    assert.equal(mk.stdout, 'done\n');
    const shadow = await api('GET', `/v1/sandboxes/${sbx.id}/files?path=/work/shadow`);
    assert.ok(shadow.status === 404 || shadow.status === 403 || shadow.status === 400, `reading /etc/shadow through a link: ${shadow.status} ${shadow.text.slice(0, 200)}`);
    assert.ok(!shadow.text.includes('root:'), 'never the host shadow');
    for (const p of ['/work/canary-link', `/work/../../..${canary}`, canary]) assert.equal(await status(p), 404, p);
    // gVisor 2022-12 resolves any path through a symlink to "/" to "/" itself (a directory:
    // 409), inside the sandbox's own tree: still never the host's file.
    const viaRoot = await api('GET', `/v1/sandboxes/${sbx.id}/files?path=${encodeURIComponent(`/work/hostroot${canary}`)}`);
    assert.ok([404, 409].includes(viaRoot.status), `${viaRoot.status} ${viaRoot.text.slice(0, 200)}`);
    assert.ok(!viaRoot.text.includes(CANARY_TEXT));
    // A write through a link to a host path lands inside the sandbox (or nowhere), never on the host.
    const hostTarget = `/root/vulcan-gvsbx-pwned-${randomBytes(4).toString('hex')}`;
    await sbx.exec(['ln', '-s', hostTarget, '/work/out-link']);
    const w = await api('PUT', `/v1/sandboxes/${sbx.id}/files?path=/work/out-link`, 'pwned');
    assert.notEqual(w.status, 500, w.text);
    assert.equal(fs.existsSync(hostTarget), false, 'no host file was written');
    // The swap race: a loop flips a link between the canary, / and a sandbox file.
    await sbx.files.write('/work/race-file', 'sandbox-content');
    await sbx.exec(['sh', '-c', `setsid sh -c 'while :; do ln -sfn ${canary} /work/race; ln -sfn / /work/race; ln -sfn /work/race-file /work/race; done' </dev/null >/dev/null 2>&1 & echo $! > /tmp/race.pid`]);
    const seen = new Set<string>();
    for (let round = 0; round < 6; round++) {
      const results = await Promise.all(
        ['/work/race', `/work/race${canary}`].flatMap((p) =>
          Array.from({ length: 4 }, async () => {
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

  it('a symlink planted at the agent socket path cannot redirect the server to a host socket', { timeout: 60_000 }, async () => {
    const hostSock = path.join(gvisorSandboxRoot(dataDir), sbx.id, 'host', 'run', 'agent.sock');
    assert.ok(fs.lstatSync(hostSock).isSocket(), 'the agent socket is a host socket in the sandbox directory');
    // From inside, this runsc's gofer refuses to touch a host socket entry at all (without
    // --host-uds=open): the sandbox cannot rename, remove or replace it.
    const tries = await sbx.exec(['sh', '-c', 'mv /.vulcan-run/agent.sock /.vulcan-run/x 2>&1; rm -f /.vulcan-run/agent.sock 2>&1; ln -sf /tmp/decoy.sock /.vulcan-run/agent.sock 2>&1; echo end']);
    assert.match(tries.stdout, /not permitted/);
    assert.ok(fs.lstatSync(hostSock).isSocket(), 'the socket is still there');
    // Another runsc (or gofer bug) might let it: plant exactly what such a sandbox could, on
    // the host side, and check the server never follows it, neither to a host socket nor
    // even back to the sandbox's own agent.
    const decoyDir = tempDir('vulcan-decoy-');
    const decoyPath = path.join(decoyDir, 'decoy.sock');
    let decoyHits = 0;
    const decoy = net.createServer((c) => {
      decoyHits++;
      c.on('error', () => undefined).end('{"ok":true}\n');
    });
    await new Promise<void>((r) => decoy.listen(decoyPath, r));
    const realSock = path.join(path.dirname(hostSock), 'real.sock');
    try {
      fs.renameSync(hostSock, realSock);
      for (const target of [decoyPath, realSock]) {
        fs.symlinkSync(target, hostSock);
        const r = await api('POST', `/v1/sandboxes/${sbx.id}/exec`, { cmd: ['true'] });
        assert.ok(r.status >= 500, `exec through a symlink to ${target}: ${r.status} ${r.text}`);
        assert.match(r.text, /not a socket|symlink/);
        const f = await api('GET', `/v1/sandboxes/${sbx.id}/files?path=/work/race-file`);
        assert.ok(f.status >= 500, `read through a symlink to ${target}: ${f.status}`);
        fs.unlinkSync(hostSock);
      }
      assert.equal(decoyHits, 0, 'the server never connected to the host socket the link named');
    } finally {
      if (fs.lstatSync(hostSock, { throwIfNoEntry: false })?.isSymbolicLink()) fs.unlinkSync(hostSock);
      if (fs.existsSync(realSock)) fs.renameSync(realSock, hostSock);
      decoy.close();
      fs.rmSync(decoyDir, { recursive: true, force: true });
    }
    assert.equal((await sbx.exec(['true'])).exit_code, 0, 'with its socket back, the sandbox answers again');
  });

  it('WebSocket exec: an interactive PTY with resize, and the exit code out', { timeout: 30_000 }, async () => {
    await checkPtyShell(sbx, { polls: 200, resizeSettleMs: 200 });
  });

  it('an unknown image is refused with a clear error and starts nothing', async () => {
    const r = await api('POST', '/v1/sandboxes', { isolation: 'gvisor', image: 'no-such-image' });
    assert.equal(r.status, 422, r.text);
    assert.equal(r.json.error?.code, 'unknown_image');
    assert.match(r.json.error?.message ?? '', /no-such-image/);
    assert.deepEqual(
      gvisorSandboxLeftovers(dataDir).filter((l) => !made.some((s) => l.includes(s.id))),
      [],
    );
  });

  it('a server killed outright: live and paused sandboxes re-attach, a dead one is lost, orphans are destroyed', { timeout: 180_000 }, async () => {
    const [live, doomed, frozen] = await Promise.all([0, 1, 2].map(() => create({ image: 'minimal' })));
    if (!live || !doomed || !frozen) throw new Error('create failed');
    await live.files.write('/work/state.txt', 'before the crash');
    await live.exec(['sh', '-c', 'setsid sleep 600 </dev/null >/dev/null 2>&1 & echo $! > /tmp/sleeper.pid']);
    await frozen.exec(['sh', '-c', "setsid sh -c 'i=0; while :; do i=$((i+1)); echo $i > /tmp/count; sleep 0.05; done' </dev/null >/dev/null 2>&1 &"]);
    await sleep(300);
    await frozen.pause();
    await server?.stop('SIGKILL');
    server = undefined;
    // While the server is down: one sandbox dies (its sentry and gofer killed), and an orphan directory appears.
    await reapStaleCgroups(`${gvisorSandboxCgroupPrefix(dataDir)}${doomed.id}`);
    const orphanDir = path.join(gvisorSandboxRoot(dataDir), '01ORPHANORPHANORPHANORPHAN');
    fs.mkdirSync(orphanDir);

    server = await startGvisorServe(dataDir);
    const again = await Sandbox.connect(live.id, { url: url() });
    assert.equal(again.info.state, 'running');
    assert.equal((await again.files.read('/work/state.txt')).toString(), 'before the crash');
    assert.equal((await again.exec(['sh', '-c', 'kill -0 "$(cat /tmp/sleeper.pid)" && echo alive'])).stdout, 'alive\n');

    const lost = await Sandbox.connect(doomed.id, { url: url() });
    assert.equal(lost.info.state, 'lost');
    assert.match(lost.info.end_reason ?? '', /gone/);
    assert.equal((await api('POST', `/v1/sandboxes/${doomed.id}/exec`, { cmd: ['true'] })).status, 410);
    assert.equal(fs.existsSync(path.join(gvisorSandboxRoot(dataDir), doomed.id)), false, 'what was left of the lost one is removed');

    const thawed = await Sandbox.connect(frozen.id, { url: url() });
    assert.equal(thawed.info.state, 'paused');
    await thawed.resume();
    const a = Number((await thawed.files.read('/tmp/count')).toString());
    await sleep(400);
    const b = Number((await thawed.files.read('/tmp/count')).toString());
    assert.ok(b > a, `the paused sandbox runs on after resume (${a} → ${b})`);

    assert.equal(fs.existsSync(orphanDir), false, 'the orphan directory is removed');
    await again.destroy();
    await thawed.destroy();
    const left = await eventually(() => gvisorSandboxLeftovers(dataDir).filter((l) => l.includes(live.id) || l.includes(doomed.id) || l.includes(frozen.id)));
    assert.deepEqual(left, []);
  });

  it('destroy: every process, cgroup, mount, runsc container and directory of the sandbox is gone', { timeout: 60_000 }, async () => {
    const s = await create({ image: 'python' });
    await s.exec(['sh', '-c', 'nohup sleep 600 >/dev/null 2>&1 &']); // python image: Debian's coreutils
    assert.ok(gvisorSandboxLeftovers(dataDir).some((l) => l.includes(s.id)), 'the sandbox shows up while it runs');
    await s.destroy();
    assert.equal((await s.refresh()).state, 'destroyed');
    assert.deepEqual(await eventually(() => gvisorSandboxLeftovers(dataDir).filter((l) => l.includes(s.id))), []);
  });
});
