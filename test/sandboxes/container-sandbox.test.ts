/**
 * Container sandboxes beyond the conformance checklist, against a real `vulcan serve` and
 * the real Docker daemon: isolation evidence from inside the container, file paths confined
 * by the agent (symlinks that point at host files), the agent socket's symlink guard (unit
 * and end to end, with a decoy host socket that must never be reached), restart
 * reconciliation of paused, killed and orphaned containers, and bad input.
 */
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import { after, before, describe, it } from 'node:test';
import { LABEL_MANAGED, LABEL_NODE, LABEL_SANDBOX } from '../../src/backends/container/container-backend.js';
import { DockerClient, dockerSocketPath } from '../../src/backends/container/docker-client.js';
import { connectConfined, SOCKET_MOUNT, SOCKET_NAME } from '../../src/backends/container/sandbox-driver.js';
import { dataDirTag } from '../../src/core/config.js';
import { Sandbox } from '../../src/sdk/index.js';
import { spawnVulcanServe, type ServeProcess } from '../../src/server/spawn-serve.js';
import { checkPtyShell } from '../helpers/pty.js';
import { containerLeftovers, TEST_IMAGES_DIR } from './container-helpers.js';

const skipReason = !fs.existsSync(dockerSocketPath())
  ? `no Docker socket at ${dockerSocketPath()}: start dockerd (scripts/setup.d/31-docker.sh)`
  : process.getuid?.() !== 0
    ? 'the container backend needs root'
    : !fs.existsSync(path.join(TEST_IMAGES_DIR, 'images', 'refs', 'minimal.json'))
      ? `the built-in images are not in ${TEST_IMAGES_DIR}: run setup (scripts/setup.d/30-images.sh)`
      : undefined;

/** A unix socket on the host that counts connections: the thing a redirected server would reach. */
async function decoy(dir: string): Promise<{ path: string; hits: () => number; close: () => Promise<void> }> {
  const p = path.join(dir, `decoy-${crypto.randomBytes(4).toString('hex')}.sock`);
  let hits = 0;
  const srv = net.createServer((c) => {
    hits++;
    c.destroy();
  });
  await new Promise<void>((r) => srv.listen(p, r));
  return { path: p, hits: () => hits, close: () => new Promise<void>((r) => srv.close(() => r())) };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('container sandboxes: the agent socket guard (connectConfined)', { skip: process.getuid?.() !== 0 ? 'needs root (chown to the sandbox uid)' : false }, () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vulcan-confined-'));
  after(() => fs.rmSync(dir, { recursive: true, force: true }));

  it('does not follow a symlink planted at the socket name, and never reaches its target', async () => {
    const d = await decoy(dir);
    try {
      const sockDir = fs.mkdtempSync(path.join(dir, 'sock-'));
      fs.symlinkSync(d.path, path.join(sockDir, SOCKET_NAME));
      // What a naive connect by path would do: reach the decoy.
      await new Promise<void>((resolve, reject) => net.connect(path.join(sockDir, SOCKET_NAME)).once('connect', resolve).once('error', reject));
      await sleep(50);
      assert.equal(d.hits(), 1, 'the decoy counts a naive connection');
      await assert.rejects(connectConfined(sockDir, SOCKET_NAME, { uid: 0 }), /not a socket \(a symlink\)/);
      await sleep(50);
      assert.equal(d.hits(), 1, 'connectConfined reached the symlink target');
      // A symlink to a directory that holds a socket (the parent is never followed either).
      fs.rmSync(path.join(sockDir, SOCKET_NAME));
      fs.symlinkSync(dir, path.join(sockDir, 'up'));
      await assert.rejects(connectConfined(sockDir, `up/${path.basename(d.path)}`, { uid: 0, dev: fs.statSync(sockDir).dev + 1 }), /on another filesystem|cannot be opened/);
      assert.equal(d.hits(), 1);
    } finally {
      await d.close();
    }
  });

  it('refuses a FIFO without blocking, and a socket owned by another uid', async () => {
    const sockDir = fs.mkdtempSync(path.join(dir, 'sock-'));
    execFileSync('mkfifo', [path.join(sockDir, SOCKET_NAME)]);
    const t0 = performance.now();
    await assert.rejects(connectConfined(sockDir, SOCKET_NAME, { uid: 1000 }), /not a socket/);
    assert.ok(performance.now() - t0 < 1000, 'opening the FIFO blocked');
    fs.rmSync(path.join(sockDir, SOCKET_NAME));
    const real = net.createServer((c) => c.end('hello'));
    await new Promise<void>((r) => real.listen(path.join(sockDir, SOCKET_NAME), r));
    try {
      await assert.rejects(connectConfined(sockDir, SOCKET_NAME, { uid: 1000 }), /owned by uid 0/);
      fs.chownSync(path.join(sockDir, SOCKET_NAME), 1000, 1000);
      const sock = await connectConfined(sockDir, SOCKET_NAME, { uid: 1000, dev: fs.statSync(sockDir).dev });
      const got = await new Promise<string>((r) => sock.once('data', (b: Buffer) => r(b.toString())));
      sock.destroy();
      assert.equal(got, 'hello');
    } finally {
      await new Promise<void>((r) => real.close(() => r()));
    }
  });
});

describe('container sandboxes through the API', { skip: skipReason ?? false }, () => {
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'vulcan-csbx-'));
  const hostDir = fs.mkdtempSync(path.join(os.tmpdir(), 'vulcan-csbx-host-'));
  fs.chmodSync(hostDir, 0o755);
  let server: ServeProcess | undefined;
  const made: string[] = [];
  const start = async () => (server = await spawnVulcanServe({ dataDir, env: { VULCAN_IMAGES_DATA_DIR: TEST_IMAGES_DIR, VULCAN_CONTAINER_POOL: '0' } }));
  const url = () => server?.url ?? '';
  const create = async (image = 'minimal') => {
    const s = await Sandbox.create({ url: url(), isolation: 'container', image, ttlS: 600 });
    made.push(s.id);
    return s;
  };
  const sh = async (s: Sandbox, script: string) => s.exec(['sh', '-c', script]);
  const client = new DockerClient(dockerSocketPath());
  const containerOf = async (id: string) => (await client.listContainers([`${LABEL_SANDBOX}=${id}`]))[0];

  before(async () => {
    await start();
  });

  after(async () => {
    for (const id of made) {
      await Sandbox.connect(id, { url: url() })
        .then((s) => s.destroy())
        .catch(() => undefined);
    }
    await server?.stop();
    const left = await containerLeftovers(dataDir);
    const root = path.join(dataDir, 'container', 'sandboxes');
    if (fs.existsSync(root)) left.push(...fs.readdirSync(root).map((d) => `directory ${d}`));
    // Whatever a failed test left is cleaned before the data dir goes, then reported.
    for (const c of await client.listContainers([`${LABEL_NODE}=${dataDirTag(dataDir)}`])) await client.removeContainer(c.Id).catch(() => undefined);
    for (const line of fs.readFileSync('/proc/self/mounts', 'utf8').split('\n')) {
      const where = line.split(' ')[1];
      if (where?.startsWith(`${dataDir}/`)) execFileSync('umount', ['-l', where]);
    }
    await client.close();
    fs.rmSync(dataDir, { recursive: true, force: true });
    fs.rmSync(hostDir, { recursive: true, force: true });
    assert.deepEqual(left, [], `left behind (sandboxes ${made.join(', ')})`);
  });

  it('isolation from inside: the image, not the host; no network; unprivileged', async () => {
    const canary = path.join(hostDir, 'canary');
    fs.writeFileSync(canary, 'host canary\n', { mode: 0o644 });
    const s = await create();
    const id = await sh(s, 'id -u; id -g');
    assert.equal(id.stdout, '1000\n1000\n');
    const status = (await s.exec(['cat', '/proc/self/status'])).stdout;
    assert.match(status, /^CapEff:\s+0000000000000000$/m);
    assert.match(status, /^CapPrm:\s+0000000000000000$/m);
    assert.match(status, /^CapBnd:\s+0000000000000000$/m);
    assert.match(status, /^NoNewPrivs:\s+1$/m);
    // The image's files: busybox, and none of the host's.
    assert.equal((await s.exec(['test', '-x', '/bin/busybox'])).exit_code, 0, 'minimal is busybox');
    for (const hostOnly of [process.execPath, canary, '/var/run/docker.sock', '/run/docker.sock', dataDir]) {
      assert.notEqual((await s.exec(['test', '-e', hostOnly])).exit_code, 0, `${hostOnly} is visible inside`);
    }
    assert.notEqual((await s.exec(['cat', canary])).stdout, 'host canary\n');
    // No network but loopback.
    const ifaces = (await s.exec(['cat', '/proc/net/dev'])).stdout
      .split('\n')
      .slice(2)
      .map((l) => l.split(':')[0]?.trim())
      .filter((x) => x);
    assert.deepEqual(ifaces, ['lo']);
    // Read-only root and agent bundle; writable /work and /tmp.
    assert.notEqual((await s.exec(['touch', '/etc/x'])).exit_code, 0, 'the root is writable');
    assert.notEqual((await s.exec(['touch', '/.vulcan-agent/x'])).exit_code, 0, 'the agent bundle is writable');
    assert.equal((await s.exec(['touch', '/work/x', '/tmp/x'])).exit_code, 0);
    // What the daemon was asked for.
    const c = await containerOf(s.id);
    assert.ok(c, 'no container for the sandbox');
    const info = await client.call<{ HostConfig: { CapDrop: string[]; NetworkMode: string; ReadonlyRootfs: boolean; Privileged: boolean; SecurityOpt: string[]; Binds: string[] }; Config: { User: string } }>('GET', `/containers/${c.Id}/json`);
    assert.deepEqual(info.HostConfig.CapDrop, ['ALL']);
    assert.equal(info.HostConfig.NetworkMode, 'none');
    assert.equal(info.HostConfig.ReadonlyRootfs, true);
    assert.equal(info.HostConfig.Privileged, false);
    assert.ok(info.HostConfig.SecurityOpt.includes('no-new-privileges'));
    assert.equal(info.Config.User, '1000:1000');
    assert.equal(info.HostConfig.Binds.length, 2, `binds: ${info.HostConfig.Binds.join(' ')}`);
  });

  it('file paths are confined: symlinks the sandbox makes to host files reach only its own', async () => {
    const secret = `host secret ${crypto.randomBytes(8).toString('hex')}\n`;
    const canary = path.join(hostDir, 'secret');
    fs.writeFileSync(canary, secret, { mode: 0o644 });
    const shadow = fs.readFileSync('/etc/shadow');
    const s = await create('python');
    const made = await sh(s, `ln -s /etc/shadow /work/shadow && ln -s ${canary} /work/canary && ln -s / /work/root && ln -s ${hostDir} /work/hostdir`);
    assert.equal(made.exit_code, 0, made.stderr);
    const outcome = (p: string) =>
      s.files.read(p).then(
        (b) => ({ ok: true as const, b }),
        (e: { status?: number; code?: string }) => ({ ok: false as const, status: e.status, code: e.code }),
      );
    const sh1 = await outcome('/work/shadow');
    // The image's own /etc/shadow (root-only, so the agent cannot read it), never the host's.
    assert.ok(!sh1.ok || !sh1.b.equals(shadow), 'the host /etc/shadow came back');
    for (const p of ['/work/canary', `/work/root${canary}`, '/work/hostdir/secret']) {
      const r = await outcome(p);
      assert.equal(r.ok, false, `${p} read something`);
      assert.equal(r.ok ? 0 : r.status, 404, `${p}: ${JSON.stringify(r)}`);
    }
    // Encoded and lexical traversal stay inside too.
    for (const q of [`/work/../../../..${canary}`, `%2e%2e/%2e%2e${canary}`, `/work/%2e%2e/%2e%2e${canary}`]) {
      const res = await fetch(`${url()}/v1/sandboxes/${s.id}/files?path=${q}`);
      const body = await res.text();
      assert.ok(!body.includes(secret.trim()), `${q} read the host file`);
      assert.ok([400, 404].includes(res.status), `${q}: ${res.status} ${body}`);
    }
    // Writing through the link changes the sandbox's file, never the host's.
    const listed = fs.readdirSync(hostDir).sort();
    await s.files.write('/work/canary', 'pwned');
    await s.files.write('/work/hostdir/secret', 'pwned').catch(() => undefined);
    assert.equal(fs.readFileSync(canary, 'utf8'), secret);
    assert.deepEqual(fs.readdirSync(hostDir).sort(), listed, 'a write through a link made a host file');
    const st = await s.files.stat('/work/root');
    assert.equal(st.type, 'symlink');
  });

  it('a symlink planted at the agent socket cannot redirect the server to another socket', async () => {
    const d = await decoy(hostDir);
    try {
      const s = await create();
      const planted = await sh(s, `rm -f ${SOCKET_MOUNT}/${SOCKET_NAME} && ln -s ${d.path} ${SOCKET_MOUNT}/${SOCKET_NAME} && ls -l ${SOCKET_MOUNT}`);
      assert.equal(planted.exit_code, 0, planted.stderr);
      // The same link, seen from the host, points at the decoy.
      const sockDir = path.join(dataDir, 'container', 'sandboxes', s.id, 'sock');
      assert.equal(fs.readlinkSync(path.join(sockDir, SOCKET_NAME)), d.path);
      const err = await s.exec(['true']).then(
        () => undefined,
        (e: { status?: number; code?: string; message?: string }) => e,
      );
      assert.ok(err, 'exec succeeded through a planted symlink');
      assert.equal(err.status, 500, JSON.stringify(err));
      assert.equal(d.hits(), 0, 'the server connected to the decoy socket');
      // Pointing at the Docker socket instead changes nothing either.
      fs.rmSync(path.join(sockDir, SOCKET_NAME));
      fs.symlinkSync(dockerSocketPath(), path.join(sockDir, SOCKET_NAME));
      assert.equal(await s.files.read('/etc/hostname').then(() => 200, (e: { status?: number }) => e.status), 500);
      // Destroy removes the sandbox's directory without touching the link's target.
      await s.destroy();
      assert.equal(fs.existsSync(path.join(dataDir, 'container', 'sandboxes', s.id)), false);
      assert.equal(fs.statSync(d.path).isSocket(), true, 'the decoy was removed through the link');
      assert.equal(await containerOf(s.id), undefined, 'the container is still there');
      assert.equal(d.hits(), 0);
    } finally {
      await d.close();
    }
  });

  it('files: a symlink-swap race inside the sandbox never yields a host file', { timeout: 60_000 }, async () => {
    const secret = `race secret ${crypto.randomBytes(8).toString('hex')}`;
    const canary = path.join(hostDir, 'race-canary');
    fs.writeFileSync(canary, secret, { mode: 0o644 });
    const s = await create();
    await s.files.write('/work/race-file', 'sandbox-content');
    await sh(s, `sh -c 'while :; do ln -sfn ${canary} /work/race; ln -sfn / /work/race; ln -sfn /work/race-file /work/race; done' >/dev/null 2>&1 & echo $! > /tmp/race.pid`);
    const seen = new Set<string>();
    for (let round = 0; round < 8; round++) {
      const answers = await Promise.all(
        ['/work/race', `/work/race${canary}`].flatMap((p) =>
          Array.from({ length: 4 }, async () => {
            const r = await fetch(`${url()}/v1/sandboxes/${s.id}/files?path=${encodeURIComponent(p)}`);
            const text = await r.text();
            return r.status === 200 ? text : String(r.status);
          }),
        ),
      );
      for (const a of answers) seen.add(a);
    }
    await sh(s, 'kill $(cat /tmp/race.pid)');
    assert.ok(![...seen].some((x) => x.includes(secret)), `saw ${[...seen].join(', ')}`);
    for (const x of seen) assert.ok(['sandbox-content', '404', '409'].includes(x), `unexpected answer ${x}`);
    await s.destroy();
  });

  it('files: a 100 MiB file round-trips byte-identical; archives go out and in', { timeout: 180_000 }, async () => {
    const s = await create();
    const total = 100 * 1024 * 1024;
    const up = crypto.createHash('sha256');
    let sent = 0;
    const body = new Readable({
      read() {
        if (sent >= total) {
          this.push(null);
          return;
        }
        const b = crypto.randomBytes(1024 * 1024);
        up.update(b);
        sent += b.length;
        this.push(b);
      },
    });
    assert.equal((await s.files.write('/work/big.bin', body)).size, total);
    const down = crypto.createHash('sha256');
    let got = 0;
    for await (const c of await s.files.readStream('/work/big.bin')) {
      down.update(c as Buffer);
      got += (c as Buffer).length;
    }
    assert.equal(got, total);
    assert.equal(down.digest('hex'), up.digest('hex'));
    await s.files.remove('/work/big.bin');
    await s.files.write('/work/arc/sub/two.txt', 'two');
    const parts: Buffer[] = [];
    for await (const c of await s.files.downloadArchive('/work/arc')) parts.push(c as Buffer);
    await s.files.uploadArchive('/tmp/copy', Buffer.concat(parts));
    assert.equal((await s.files.read('/tmp/copy/sub/two.txt')).toString(), 'two');
    // minimal's tar is BusyBox's: an archive still brings no setuid bit.
    const made = await sh(s, 'mkdir -p /tmp/suid && touch /tmp/suid/s && chmod 4755 /tmp/suid/s && tar -C /tmp/suid -cf /tmp/suid.tar .');
    assert.equal(made.exit_code, 0, made.stderr);
    await s.files.uploadArchive('/work/suid', await s.files.read('/tmp/suid.tar'));
    assert.equal((await s.files.stat('/work/suid/s')).mode & 0o7000, 0, 'an archive brought a setuid bit');
    await s.destroy();
  });

  it('the PTY shell over the WebSocket: a terminal with resize and the exit code', { timeout: 30_000 }, async () => {
    const s = await create();
    await checkPtyShell(s);
    await s.destroy();
  });

  it('preview reaches only the sandbox\'s own ports, never the host\'s loopback', async () => {
    const hostSrv = net.createServer((c) => c.end('HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\nhost'));
    await new Promise<void>((r) => hostSrv.listen(0, '127.0.0.1', r));
    try {
      const port = (hostSrv.address() as net.AddressInfo).port;
      const s = await create();
      const res = await fetch(s.previewUrl(port, '/'));
      const text = await res.text();
      assert.equal(res.status, 503, text);
      assert.notEqual(text, 'host');
      await s.destroy();
    } finally {
      await new Promise<void>((r) => hostSrv.close(() => r()));
    }
  });

  it('a sandbox whose agent dies is lost with the reason, and its container and directory are removed', { timeout: 30_000 }, async () => {
    const s = await create();
    // Killing the agent ends docker-init and so the container. The exec's parent is the
    // agent's spawn helper (or the agent, when it forks itself): find the agent by name.
    await sh(s, 'for p in /proc/[0-9]*; do [ "${p#/proc/}" != $$ ] && grep -q agent.mjs $p/cmdline 2>/dev/null && kill -9 ${p#/proc/}; done').catch(() => undefined);
    let info = await s.refresh();
    for (let i = 0; i < 100 && info.state !== 'lost'; i++) {
      await sleep(100);
      info = await s.refresh();
    }
    assert.equal(info.state, 'lost');
    assert.match(info.end_reason ?? '', /container exited \(code \d+\)/);
    for (let i = 0; i < 50 && (await containerOf(s.id)) !== undefined; i++) await sleep(100);
    assert.equal(await containerOf(s.id), undefined, 'the dead container was not removed');
    assert.equal(fs.existsSync(path.join(dataDir, 'container', 'sandboxes', s.id)), false);
  });

  it('several sandboxes start at once, each in its own container, and all go on destroy', { timeout: 120_000 }, async () => {
    const all = await Promise.all(['minimal', 'minimal', 'python', 'node'].map((image) => create(image)));
    const ids = await Promise.all(all.map(async (s) => (await s.exec(['cat', '/proc/sys/kernel/hostname'])).exit_code));
    assert.deepEqual(ids, [0, 0, 0, 0]);
    await all[0]?.files.write('/work/mine', 'zero');
    assert.notEqual((await all[1]?.exec(['cat', '/work/mine']))?.exit_code, 0, 'one sandbox sees another\'s files');
    const containers = await Promise.all(all.map((s) => containerOf(s.id)));
    assert.equal(new Set(containers.map((c) => c?.Id)).size, 4);
    await Promise.all(all.map((s) => s.destroy()));
    for (const s of all) {
      assert.equal(await containerOf(s.id), undefined);
      assert.equal(fs.existsSync(path.join(dataDir, 'container', 'sandboxes', s.id)), false);
    }
  });

  it('bad input: an unknown image is 422 unknown_image and starts nothing; too little memory says mem_mb', { timeout: 60_000 }, async () => {
    const before = (await client.listContainers([`${LABEL_NODE}=${dataDirTag(dataDir)}`])).length;
    for (const image of ['no-such-image', '../../etc', '/var/run/docker.sock']) {
      const res = await fetch(`${url()}/v1/sandboxes`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ isolation: 'container', image }) });
      const body = (await res.json()) as { error: { code: string; message: string } };
      assert.equal(res.status, 422, `${image}: ${JSON.stringify(body)}`);
      assert.equal(body.error.code, 'unknown_image');
      assert.match(body.error.message, /image/);
    }
    assert.equal((await client.listContainers([`${LABEL_NODE}=${dataDirTag(dataDir)}`])).length, before);
    const small = await fetch(`${url()}/v1/sandboxes`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ isolation: 'container', resources: { mem_mb: 16 } }) });
    const sb = (await small.json()) as { id?: string; error?: { code: string; message: string } };
    // 16 MiB is the smallest mem_mb: the agent may or may not fit; when it does not, the error names the field to change.
    if (small.status === 201) {
      const s16 = await Sandbox.connect(sb.id ?? '', { url: url() });
      assert.equal((await s16.exec(['echo', 'ok'])).stdout, 'ok\n');
      await s16.destroy();
    } else {
      assert.equal(small.status, 503, JSON.stringify(sb));
      assert.match(sb.error?.message ?? '', /mem_mb/);
    }
    assert.equal((await client.listContainers([`${LABEL_NODE}=${dataDirTag(dataDir)}`])).length, before);
  });

  it('restart: a paused sandbox stays paused, a killed one is lost with the reason, orphans are removed', async () => {
    const kept = await create();
    const killed = await create();
    await sh(kept, "sh -c 'i=0; while :; do i=$((i+1)); echo $i > /tmp/n; sleep 0.05; done' >/dev/null 2>&1 &"); // minimal (busybox) has no nohup
    await sleep(200);
    await kept.pause();
    await server?.stop();
    // While the server is down: one sandbox's container dies, and an orphan appears.
    const dead = await containerOf(killed.id);
    assert.ok(dead);
    await client.killContainer(dead.Id);
    const tag = dataDirTag(dataDir);
    const img = (await client.listImages('vulcan/minimal')).flatMap((i) => i.RepoTags ?? [])[0];
    assert.ok(img, 'the minimal image is not loaded in the daemon');
    const orphanId = '01ORPHANORPHANORPHANORPHAN';
    const orphan = await client.call<{ Id: string }>('POST', `/containers/create?name=vulcan-sbx-${orphanId}-${tag}`, {
      Image: img,
      Cmd: ['sleep', '600'],
      Labels: { [LABEL_MANAGED]: 'true', [LABEL_NODE]: tag, [LABEL_SANDBOX]: orphanId },
      HostConfig: { NetworkMode: 'none', CapDrop: ['ALL'] },
    });
    await client.startContainer(orphan.Id);
    const orphanDir = path.join(dataDir, 'container', 'sandboxes', orphanId);
    fs.mkdirSync(orphanDir, { recursive: true });
    await start();
    const k = await Sandbox.connect(kept.id, { url: url() });
    assert.equal(k.info.state, 'paused');
    const kc = await containerOf(kept.id);
    assert.equal(kc?.State, 'paused', 'the daemon does not hold the container paused');
    await k.resume();
    const a = Number((await k.files.read('/tmp/n')).toString());
    await sleep(300);
    const b = Number((await k.files.read('/tmp/n')).toString());
    assert.ok(b > a, `the background loop did not run on after resume (${a} → ${b})`);
    const l = await Sandbox.connect(killed.id, { url: url() });
    assert.equal(l.info.state, 'lost');
    assert.match(l.info.end_reason ?? '', /stopped when the server restarted/);
    assert.equal(await containerOf(killed.id), undefined, 'the dead container was not removed');
    assert.equal(fs.existsSync(path.join(dataDir, 'container', 'sandboxes', killed.id)), false);
    assert.equal(await containerOf(orphanId), undefined, 'the orphan container was not removed');
    assert.equal(fs.existsSync(orphanDir), false, 'the orphan directory was not removed');
    // The workload clean-up at start-up (reconcile) left the sandbox's container alone.
    assert.equal((await k.exec(['echo', 'still here'])).stdout, 'still here\n');
  });
});
