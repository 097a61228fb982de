/**
 * microvm sandboxes beyond the conformance suite:
 * - the channel multiplexer's host side against a hostile guest (real unix sockets; the
 *   "guest" end writes raw frames): oversize lengths, unknown types, unknown channel ids,
 *   window overruns, data after EOF; and a clean round trip with flow control;
 * - connecting to a QEMU socket that is bound but not yet listening (QEMU binds, then listens);
 * - isolation seen from inside a real microVM sandbox through the HTTP API: its own guest
 *   kernel, no host files, no network.
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
