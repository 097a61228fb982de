/**
 * microvm sandboxes beyond the conformance suite:
 * - the channel multiplexer's host side against a hostile guest (real unix sockets; the
 *   "guest" end writes raw frames): oversize lengths, unknown types, unknown channel ids,
 *   window overruns, data after EOF; and a clean round trip with flow control;
 * - connecting to a QEMU socket that is bound but not yet listening (QEMU binds, then listens);
 * - isolation seen from inside a real microVM sandbox through the HTTP API: its own guest
 *   kernel, no host files, no network;
 * - pause to disk, seen from inside the guest and on the host: a background process keeps
 *   its pid and runs on, a file in the guest's tmpfs survives, QEMU is gone while paused and
 *   the snapshot is there, the snapshot is gone after resume and destroy; the fallback to a
 *   plain QMP stop when the save fails; a failed resume; a paused sandbox across a server
 *   restart (re-attached paused, lost without its snapshot, an orphan's snapshot reaped).
 */
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { connectUnix } from '../../src/backends/microvm/sandbox-driver.js';
import { ChannelMux, MUX_MAX_FRAME_BYTES, MUX_WINDOW_BYTES, MuxType } from '../../src/backends/microvm/mux.js';
import { loadConfig } from '../../src/core/config.js';
import { Sandbox } from '../../src/sdk/index.js';
import { spawnVulcanServe, type ServeProcess } from '../../src/server/spawn-serve.js';
import { createHash } from 'node:crypto';
import { processesWith } from '../helpers/context.js';
import { microvmSandboxLeftovers } from './microvm-leftovers.js';

function frame(type: number, id: number, payload: Buffer = Buffer.alloc(0), declared?: number): Buffer {
  const h = Buffer.alloc(9);
  h.writeUInt32BE(declared ?? payload.length + 5, 0);
  h.writeUInt8(type, 4);
  h.writeUInt32BE(id, 5);
  return Buffer.concat([h, payload]);
}

/** A connected pair of real unix sockets: the host mux on one end, a scripted guest on the other. */
async function pair(): Promise<{ host: net.Socket; guest: net.Socket; done: () => void }> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vulcan-mux-'));
  const p = path.join(dir, 's');
  const server = net.createServer();
  await new Promise<void>((r) => server.listen(p, r));
  const guestP = new Promise<net.Socket>((r) => server.once('connection', r));
  const host = net.connect(p);
  const guest = await guestP;
  host.on('error', () => undefined);
  guest.on('error', () => undefined);
  return {
    host,
    guest,
    done: () => {
      host.destroy();
      guest.destroy();
      server.close();
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** A guest that answers HELLO (after some stale bytes) and OPENs; returns the mux and the frames it got. */
async function connected(): Promise<{ mux: ChannelMux; guest: net.Socket; got: { type: number; id: number; payload: Buffer }[]; done: () => void }> {
  const { host, guest, done } = await pair();
  const got: { type: number; id: number; payload: Buffer }[] = [];
  let buf = Buffer.alloc(0);
  guest.on('data', (c: Buffer) => {
    buf = Buffer.concat([buf, c]);
    while (buf.length >= 9 && buf.length >= buf.readUInt32BE(0) + 4) {
      const len = buf.readUInt32BE(0);
      const f = { type: buf.readUInt8(4), id: buf.readUInt32BE(5), payload: buf.subarray(9, len + 4) };
      buf = buf.subarray(len + 4);
      got.push(f);
      if (f.type === MuxType.HELLO) guest.write(Buffer.concat([Buffer.from('stale bytes of an earlier host\x00\x00\x00\x01'), frame(MuxType.READY, 0, f.payload)]));
      if (f.type === MuxType.OPEN) guest.write(frame(MuxType.OPENED, f.id));
    }
  });
  const mux = await ChannelMux.handshake(host, performance.now() + 5_000);
  return { mux, guest, got, done };
}

describe('microvm sandbox channel mux: a hostile guest', () => {
  it('round-trips bytes both ways within the window, and half-closes', async () => {
    const { mux, guest, got, done } = await connected();
    try {
      const ch = await mux.open();
      const big = Buffer.alloc(MUX_WINDOW_BYTES * 3, 7);
      ch.end(big);
      // The host stops at the window until the guest grants more.
      await new Promise((r) => setTimeout(r, 200));
      const sent = () => got.filter((f) => f.type === MuxType.DATA).reduce((n, f) => n + f.payload.length, 0);
      assert.equal(sent(), MUX_WINDOW_BYTES);
      assert.ok(got.filter((f) => f.type === MuxType.DATA).every((f) => f.payload.length + 9 <= MUX_MAX_FRAME_BYTES));
      for (let i = 0; i < 2; i++) {
        const w = Buffer.alloc(4);
        w.writeUInt32BE(MUX_WINDOW_BYTES, 0);
        guest.write(frame(MuxType.G_WINDOW, 1, w));
        await new Promise((r) => setTimeout(r, 100));
      }
      assert.equal(sent(), big.length);
      assert.ok(got.some((f) => f.type === MuxType.EOF && f.id === 1));
      const chunks: Buffer[] = [];
      ch.on('data', (c: Buffer) => chunks.push(c));
      guest.write(Buffer.concat([frame(MuxType.G_DATA, 1, Buffer.from('hello ')), frame(MuxType.G_DATA, 1, Buffer.from('host')), frame(MuxType.G_EOF, 1), frame(MuxType.G_CLOSE, 1)]));
      await new Promise((r) => ch.once('end', r));
      assert.equal(Buffer.concat(chunks).toString(), 'hello host');
    } finally {
      done();
    }
  });

  const violations: [string, (g: net.Socket) => void, RegExp][] = [
    ['an oversize declared length', (g) => g.write(frame(MuxType.G_DATA, 1, Buffer.alloc(0), 1 << 30)), /length/],
    ['a length under the header', (g) => g.write(frame(MuxType.G_DATA, 1, Buffer.alloc(0), 2)), /length/],
    ['an unknown frame type', (g) => g.write(frame(99, 1)), /unknown frame type/],
    ['a host-only frame type', (g) => g.write(frame(MuxType.OPEN, 1)), /unknown frame type/],
    ['a channel id the host never opened', (g) => g.write(frame(MuxType.G_DATA, 777, Buffer.from('x'))), /never opened/],
    ['channel 0 data', (g) => g.write(frame(MuxType.G_DATA, 0, Buffer.from('x'))), /never opened/],
    // The host's reader is paused here: past its stream buffer, the host grants nothing back.
    ['data beyond the window', (g) => { for (let i = 0; i <= (2 * MUX_WINDOW_BYTES) / 16_000; i++) g.write(frame(MuxType.G_DATA, 1, Buffer.alloc(16_000))); }, /overran its window/],
    ['data after EOF', (g) => g.write(Buffer.concat([frame(MuxType.G_EOF, 1), frame(MuxType.G_DATA, 1, Buffer.from('x'))])), /after EOF/],
    ['a window grant beyond the limit', (g) => { const w = Buffer.alloc(4); w.writeUInt32BE(0xffffffff, 0); g.write(frame(MuxType.G_WINDOW, 1, w)); }, /window beyond/],
    ['a malformed AGENT_EXIT', (g) => g.write(frame(MuxType.AGENT_EXIT, 0, Buffer.from('x'))), /AGENT_EXIT/],
  ];
  for (const [what, send, why] of violations) {
    it(`kills the mux on ${what}`, async () => {
      const { mux, guest, done } = await connected();
      try {
        const ch = await mux.open();
        ch.on('error', () => undefined);
        send(guest);
        const d = await mux.dead;
        assert.equal(d.kind, 'violation');
        assert.match(d.kind === 'violation' ? d.error.message : '', why);
        assert.ok(ch.destroyed, 'the open channel is torn down');
        await assert.rejects(mux.open(), /dead/);
      } finally {
        done();
      }
    });
  }

  it('ignores stale frames for a channel it closed, and reports a refused open', async () => {
    const { mux, guest, done } = await connected();
    try {
      const ch = await mux.open();
      ch.destroy();
      guest.write(frame(MuxType.G_DATA, 1, Buffer.from('late')));
      // The next open is refused by the guest: the host rejects it without dying.
      guest.removeAllListeners('data');
      guest.on('data', (c: Buffer) => {
        for (let at = 0; at + 9 <= c.length; at += c.readUInt32BE(at) + 4) {
          if (c.readUInt8(at + 4) === MuxType.OPEN) guest.write(frame(MuxType.G_CLOSE, c.readUInt32BE(at + 5), Buffer.from('connect to the agent: No such file')));
        }
      });
      await assert.rejects(mux.open(), /could not reach the sandbox agent: connect to the agent/);
      assert.equal(mux.openChannels, 0);
      await assert.rejects(Promise.race([mux.dead.then(() => Promise.reject(new Error('died'))), new Promise((_, rej) => setTimeout(() => rej(new Error('alive')), 100))]), /alive/);
    } finally {
      done();
    }
  });
});

const noQemu = (() => {
  try {
    execFileSync('qemu-system-x86_64', ['--version'], { stdio: 'ignore' });
    return fs.existsSync('/var/lib/vulcan/images/refs/python.json') || fs.existsSync(path.join(loadConfig().imagesDataDir, 'images', 'refs', 'python.json')) ? '' : 'no python image in the image store (run setup)';
  } catch {
    return 'qemu-system-x86_64 is not installed (scripts/setup.d/40-microvm.sh)';
  }
})();

describe('microvm sandbox: connecting to QEMU sockets', () => {
  it('waits out a socket that is bound but not listening yet, and without settling reports the refusal', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vulcan-settle-'));
    const p = path.join(dir, 'qmp.sock');
    // What QEMU does: bind() first, listen() a moment later. Python, because node binds and
    // listens in one call.
    const py = [
      'import socket,sys,time',
      's=socket.socket(socket.AF_UNIX)',
      `s.bind(${JSON.stringify(p)})`,
      'print("bound",flush=True)',
      'time.sleep(0.3)',
      's.listen(1)',
      'c,_=s.accept()',
      'c.sendall(b"hello")',
      'c.close()',
    ].join('\n');
    const child = spawn('python3', ['-c', py], { stdio: ['ignore', 'pipe', 'inherit'] });
    try {
      await new Promise<void>((r) => child.stdout.once('data', () => r()));
      assert.ok(fs.existsSync(p), 'the socket file exists before listen()');
      await assert.rejects(connectUnix(p), { code: 'ECONNREFUSED' }, 'without settling, a bound socket refuses');
      const sock = await connectUnix(p, undefined, 2_000);
      const got = await new Promise<string>((r) => sock.once('data', (c: Buffer) => r(c.toString())));
      assert.equal(got, 'hello');
      sock.destroy();
    } finally {
      child.kill();
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('microvm sandbox: isolation seen from inside', { skip: noQemu || undefined }, () => {
  let server: ServeProcess;
  let dataDir: string;
  let sbx: Sandbox;
  before(async () => {
    dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'vulcan-mvmsbx-'));
    server = await spawnVulcanServe({ dataDir, env: { VULCAN_IMAGES_DATA_DIR: loadConfig().imagesDataDir }, timeoutMs: 120_000 });
    sbx = await Sandbox.create({ url: server.url, isolation: 'microvm', image: 'python', ttlS: 600 });
  });
  after(async () => {
    await sbx?.destroy().catch(() => undefined);
    await server?.stop();
    const left = await microvmSandboxLeftovers(dataDir);
    fs.rmSync(dataDir, { recursive: true, force: true });
    assert.deepEqual(left, [], `left on the host by sandbox ${sbx?.id ?? '?'}`);
  });

  it('runs on its own guest kernel, not the host kernel', async () => {
    const host = os.release();
    const r = await sbx.exec(['uname', '-r']);
    assert.equal(r.exit_code, 0, r.stderr);
    const guest = r.stdout.trim();
    assert.notEqual(guest, host);
    assert.match(guest, /cloud-amd64$/);
  });

  it('sees none of the host files', async () => {
    const canary = path.join(dataDir, 'host-canary.txt');
    fs.writeFileSync(canary, 'host secret');
    const r = await sbx.exec(['sh', '-c', `cat ${canary} /etc/hostname 2>&1; ls /proc/1/root 2>&1; cat /proc/1/cmdline 2>&1; ls ${path.dirname(dataDir)} | head -3`]);
    assert.doesNotMatch(r.stdout, /host secret/);
    // PID 1 is the guest agent, invisible to the sandbox's user (hidepid).
    assert.doesNotMatch(r.stdout, /vulcan serve|node/);
    const read = await sbx.files.read(canary).then(
      () => 'read',
      (e: { status?: number }) => e.status,
    );
    assert.equal(read, 404);
  });

  it('has no network but its own loopback', async () => {
    const r = await sbx.exec(['/usr/bin/python3', '-c', [
      'import socket',
      'for host in ["1.1.1.1", "10.0.2.2"]:',
      '  try:',
      '    socket.create_connection((host, 80), timeout=2); print("open", host)',
      '  except OSError as e: print("blocked", host)',
      'print(sorted(n for _, n in socket.if_nameindex()))',
    ].join('\n')]);
    assert.equal(r.exit_code, 0, r.stderr);
    assert.equal(r.stdout, "blocked 1.1.1.1\nblocked 10.0.2.2\n['lo']\n");
  });
});

describe('microvm sandbox: pause to disk', { skip: noQemu || undefined }, () => {
  let server: ServeProcess;
  let dataDir: string;
  const made: Sandbox[] = [];
  let sbx: Sandbox;
  /** The background process started before the first pause: pid and start time (stat field 22). */
  let bg: { pid: string; start: string };

  const env = () => ({ VULCAN_IMAGES_DATA_DIR: loadConfig().imagesDataDir });
  const vmDir = (id: string) => path.join(dataDir, 'microvm', 'sbx', id);
  const tag = (id: string) => `vulcan-sbx-${createHash('sha256').update(dataDir).digest('hex').slice(0, 8)}-${id}`;
  const qemus = (id: string) => processesWith('qemu-system', tag(id));
  const snapshot = (id: string) => path.join(vmDir(id), 'snapshot.vmstate');
  /** Pid, start time and state of `pid` as the guest sees it, the file in /tmp, and the tick counter. */
  const probe = async (s: Sandbox, pid: string) => {
    const r = await s.exec(['sh', '-c', `cut -d' ' -f3,22 /proc/${pid}/stat; cat /tmp/ram-canary.txt; cat /tmp/ticks`]);
    assert.equal(r.exit_code, 0, r.stderr);
    const [stat = '', canary = '', ticks = ''] = r.stdout.trim().split('\n');
    const [state = '', start = ''] = stat.split(' ');
    return { state, start, canary, ticks: Number(ticks) };
  };
  const p50 = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] ?? NaN;

  before(async () => {
    dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'vulcan-mvmpz-'));
    server = await spawnVulcanServe({ dataDir, env: env(), timeoutMs: 120_000 });
    sbx = await Sandbox.create({ url: server.url, isolation: 'microvm', image: 'python', ttlS: 900 });
    made.push(sbx);
    // /tmp is the overlay's tmpfs upper layer: guest RAM, nothing on the host's disk.
    const r = await sbx.exec(['sh', '-c', [
      "grep -E ' / overlay | /tmp ' /proc/mounts | head -1",
      'echo "written before the pause $$" > /tmp/ram-canary.txt',
      "nohup sh -c 'i=0; while :; do i=$((i+1)); echo $i > /tmp/ticks; sleep 0.1; done' >/dev/null 2>&1 &",
      'echo $!',
    ].join('\n')]);
    assert.equal(r.exit_code, 0, r.stderr);
    const [mounts = '', pid = ''] = r.stdout.trim().split('\n');
    assert.match(mounts, /overlay/, 'the sandbox root is the tmpfs-backed overlay');
    const st = await probe(sbx, pid);
    bg = { pid, start: st.start };
  });
  after(async () => {
    for (const s of made) await s.destroy().catch(() => undefined);
    await server?.stop();
    const left = await microvmSandboxLeftovers(dataDir);
    fs.rmSync(dataDir, { recursive: true, force: true });
    assert.deepEqual(left, [], `left on the host by sandboxes ${made.map((s) => s.id).join(', ')}`);
  });

  it('pause ends QEMU and keeps a snapshot; resume brings back the same processes and RAM, and drops the snapshot', async () => {
    const rootDisk = qemuDisk(sbx.id);
    const diskBefore = fs.statSync(rootDisk);
    const canary = (await probe(sbx, bg.pid)).canary;
    assert.match(canary, /^written before the pause \d+$/);
    const pauseMs: number[] = [];
    const resumeMs: number[] = [];
    for (let i = 0; i < 3; i++) {
      const before = await probe(sbx, bg.pid);
      let t0 = performance.now();
      const p = await sbx.pause();
      pauseMs.push(performance.now() - t0);
      assert.equal(p.state, 'paused');
      assert.deepEqual(qemus(sbx.id), [], 'no QEMU holds the paused sandbox');
      const size = fs.statSync(snapshot(sbx.id)).size;
      assert.ok(size > 16 * 1024 * 1024, `the snapshot holds the guest's RAM (${size} bytes)`);
      assert.ok(fs.existsSync(path.join(vmDir(sbx.id), 'snapshot.json')));
      const refused = await sbx.exec(['true']).then(() => 0, (e: { status?: number }) => e.status ?? -1);
      assert.equal(refused, 409, 'exec while paused is refused');
      t0 = performance.now();
      await sbx.resume();
      resumeMs.push(performance.now() - t0);
      assert.equal(fs.existsSync(snapshot(sbx.id)), false, 'the snapshot is deleted after a resume');
      assert.equal(fs.existsSync(path.join(vmDir(sbx.id), 'snapshot.json')), false);
      assert.equal(qemus(sbx.id).length, 1, 'one QEMU runs the resumed sandbox');
      const afterResume = await probe(sbx, bg.pid);
      assert.equal(afterResume.start, bg.start, 'the background process is the same one (pid and start time)');
      assert.notEqual(afterResume.state, 'Z');
      assert.equal(afterResume.canary, canary, 'the file in the guest tmpfs survived');
      assert.ok(afterResume.ticks >= before.ticks, `the counter kept its value (${before.ticks} → ${afterResume.ticks})`);
      await new Promise((r) => setTimeout(r, 1_000));
      const later = await probe(sbx, bg.pid);
      assert.ok(later.ticks > afterResume.ticks, `the background process runs on after resume (${afterResume.ticks} → ${later.ticks})`);
    }
    const diskAfter = fs.statSync(rootDisk);
    assert.deepEqual([diskAfter.size, diskAfter.mtimeMs], [diskBefore.size, diskBefore.mtimeMs], 'the root disk did not change');
    console.log(`# microvm pause to disk p50 ${Math.round(p50(pauseMs))} ms [${pauseMs.map(Math.round).join(', ')}], resume p50 ${Math.round(p50(resumeMs))} ms [${resumeMs.map(Math.round).join(', ')}], load ${os.loadavg()[0]?.toFixed(2)}`);
  });

  it('falls back to a plain QMP stop when the state cannot be saved, and resumes from that', async () => {
    // A directory where the state file goes: opening it for writing fails (as a full disk would).
    const part = path.join(vmDir(sbx.id), 'snapshot.vmstate.part');
    fs.mkdirSync(part);
    const running = await cpuMsOver(qemuPid(sbx.id), 1_500);
    try {
      const p = await sbx.pause();
      assert.equal(p.state, 'paused');
      assert.equal(qemus(sbx.id).length, 1, 'the QEMU is kept, stopped');
      assert.equal(fs.existsSync(snapshot(sbx.id)), false);
      // A stopped TCG guest costs its QEMU next to no CPU; the running one (a shell loop) costs plenty.
      const used = await cpuMsOver(qemuPid(sbx.id), 1_500);
      assert.ok(used < Math.max(50, running / 3), `the stopped guest's QEMU used ${used} ms of CPU in 1.5 s (${running} ms running)`);
      console.log(`# QEMU CPU over 1.5 s: ${running} ms running, ${used} ms stopped`);
    } finally {
      fs.rmSync(part, { recursive: true, force: true });
    }
    await sbx.resume();
    const st = await probe(sbx, bg.pid);
    assert.equal(st.start, bg.start);
  });

  it('a failed resume leaves a clear error and no QEMU, keeps the snapshot, and a later resume works', async () => {
    await sbx.pause();
    const file = snapshot(sbx.id);
    const whole = `${file}.whole`;
    fs.renameSync(file, whole);
    fs.writeFileSync(file, fs.readFileSync(whole).subarray(0, 1024 * 1024));
    try {
      const err = await sbx.resume().then(() => undefined, (e: Error & { status?: number; code?: string }) => e);
      assert.ok(err, 'resuming from a truncated snapshot fails');
      assert.equal(err.status, 503);
      assert.match(err.message, /cannot resume sandbox .* from its snapshot: .*QEMU exited.*the snapshot is kept/s);
      assert.deepEqual(qemus(sbx.id), [], 'nothing of the failed resume runs');
      assert.equal((await sbx.refresh()).state, 'paused');
    } finally {
      fs.renameSync(whole, file);
    }
    await sbx.resume();
    const st = await probe(sbx, bg.pid);
    assert.equal(st.start, bg.start);
  });

  it('across a server restart: paused to disk comes back paused and resumes; without its snapshot it is lost; an orphan snapshot is reaped', async () => {
    const other = await Sandbox.create({ url: server.url, isolation: 'microvm', image: 'python', ttlS: 900 });
    made.push(other);
    await sbx.pause();
    await other.pause();
    await server.stop();
    // other loses its snapshot; a directory with a snapshot but no record is an orphan.
    fs.rmSync(snapshot(other.id));
    const orphan = vmDir('01ORPHANORPHANORPHANORPHAN');
    fs.mkdirSync(orphan);
    fs.copyFileSync(path.join(vmDir(sbx.id), 'snapshot.json'), path.join(orphan, 'snapshot.json'));
    fs.writeFileSync(path.join(orphan, 'snapshot.vmstate'), Buffer.alloc(1024 * 1024, 1));
    server = await spawnVulcanServe({ dataDir, env: env(), timeoutMs: 120_000 });
    const again = await Sandbox.connect(sbx.id, { url: server.url });
    made.splice(made.indexOf(sbx), 1, again);
    sbx = again;
    assert.equal(again.info.state, 'paused', `after the restart the sandbox is ${again.info.state} (${again.info.end_reason ?? ''})`);
    assert.deepEqual(qemus(again.id), [], 'still no QEMU while paused');
    assert.ok(fs.existsSync(snapshot(again.id)), 'the snapshot is still there');
    const lost = await Sandbox.connect(other.id, { url: server.url }).then((s) => s.info);
    assert.equal(lost.state, 'lost');
    assert.match(lost.end_reason ?? '', /no snapshot/);
    assert.equal(fs.existsSync(vmDir(other.id)), false, 'the lost sandbox left nothing');
    assert.equal(fs.existsSync(orphan), false, 'the orphan snapshot was removed');
    await again.resume();
    const st = await probe(again, bg.pid);
    assert.equal(st.start, bg.start, 'the background process survived the pause and the restart');
    assert.match(st.canary, /^written before the pause/);
    assert.equal(fs.existsSync(snapshot(again.id)), false);
  });

  it('destroy while paused removes the snapshot, the directory and every process', async () => {
    await sbx.pause();
    assert.ok(fs.existsSync(snapshot(sbx.id)));
    await sbx.destroy();
    assert.equal((await sbx.refresh()).state, 'destroyed');
    assert.equal(fs.existsSync(vmDir(sbx.id)), false);
    assert.deepEqual(qemus(sbx.id), []);
  });

  /** The pid of a sandbox's running QEMU (vm.json). */
  function qemuPid(id: string): number {
    return (JSON.parse(fs.readFileSync(path.join(vmDir(id), 'vm.json'), 'utf8')) as { pid: number }).pid;
  }

  /** The root disk a sandbox's QEMU was started with (vm.json). */
  function qemuDisk(id: string): string {
    const meta = JSON.parse(fs.readFileSync(path.join(vmDir(id), 'vm.json'), 'utf8')) as { disks: string[] };
    const d = meta.disks[0];
    assert.ok(d, 'vm.json names the root disk');
    return d;
  }
});

/** CPU time (user + system) `pid` uses over `ms`, in ms. */
async function cpuMsOver(pid: number, ms: number): Promise<number> {
  const ticks = () => {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return Number(f[11]) + Number(f[12]);
  };
  const a = ticks();
  await new Promise((r) => setTimeout(r, ms));
  return ((ticks() - a) * 1000) / 100;
}
