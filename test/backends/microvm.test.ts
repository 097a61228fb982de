/**
 * The microvm backend against real QEMU (TCG here, KVM where it works): the shared
 * conformance suite, kernel evidence, warm starts, a hung guest, hostile frames, cleanup
 * and crash reconciliation. Python and node need the image store's `python` and `node`
 * images; set VULCAN_TEST_IMAGES_DIR to a data dir holding them (default
 * /var/lib/vulcan), or those checks skip with the reason.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Duplex } from 'node:stream';
import { after, before, describe, it } from 'node:test';
import { describeWorkloadConformance } from '../../src/backends/conformance/workload-suite.js';
import { MicrovmBackend, type MicrovmOptions } from '../../src/backends/microvm/backend.js';
import { FrameDecoder, FrameType, ProtocolError, encodeFrame, GUEST_MAX_FRAME_BYTES, RESULT_MAX_BYTES } from '../../src/backends/microvm/protocol.js';
import { QemuVmm, baseKernelArgs } from '../../src/backends/microvm/qemu.js';
import { AgentSession, AgentTimeout } from '../../src/backends/microvm/session.js';
import { RunAbort, WorkloadAbort, type RunOutcome, type RunSpec } from '../../src/core/backend.js';
import { loadConfig } from '../../src/core/config.js';
import { SILENT_LOGGER } from '../../src/core/context.js';
import { EMPTY_IMAGE_STORE, type ImageStore } from '../../src/core/images.js';
import { DEFAULT_LIMITS, type Limits } from '../../src/core/limits.js';
import { createImageStore } from '../../src/images/index.js';

const IMAGES_DIR = process.env.VULCAN_TEST_IMAGES_DIR ?? '/var/lib/vulcan';
const dirs: string[] = [];
const backends: MicrovmBackend[] = [];

function tmpDataDir(): string {
  // Short: VM sockets live below it and unix socket paths are limited to 107 bytes.
  const d = fs.mkdtempSync(path.join(os.tmpdir(), 'vmt-'));
  dirs.push(d);
  return d;
}

function imageStore(): ImageStore {
  return fs.existsSync(path.join(IMAGES_DIR, 'images', 'refs')) ? createImageStore(IMAGES_DIR) : EMPTY_IMAGE_STORE;
}

function createBackend(options: Partial<MicrovmOptions> = {}, dataDir = tmpDataDir(), images = imageStore()): MicrovmBackend {
  const b = new MicrovmBackend({ config: loadConfig({ dataDir }), log: SILENT_LOGGER, images }, options);
  backends.push(b);
  return b;
}

/** QEMU processes whose command line mentions `dataDir` (their pidfile lives under it). */
function qemuProcessesUnder(dataDir: string): number[] {
  const pids: number[] = [];
  for (const entry of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const cmd = fs.readFileSync(`/proc/${entry}/cmdline`, 'latin1');
      if (cmd.startsWith('qemu-system') && cmd.includes(`${dataDir}/`)) pids.push(Number(entry));
    } catch {
      // the process ended while we looked
    }
  }
  return pids;
}

/** What the backend left under `dataDir`: QEMU processes, VM directories, template RAM files. */
function leftovers(dataDir: string, closed: boolean): string[] {
  const left = qemuProcessesUnder(dataDir).map((p) => `qemu pid ${p}`);
  const vms = path.join(dataDir, 'microvm', 'vms');
  if (closed && fs.existsSync(vms)) left.push(...fs.readdirSync(vms).map((v) => `vm dir ${v}`));
  if (closed) left.push(...fs.readdirSync('/dev/shm').filter((f) => f.startsWith('vulcan-mvm-') && qemuProcessesUnder(dataDir).length > 0));
  return left;
}

let seq = 0;
function spec(runtime: RunSpec['runtime'], source: string, limits: Partial<Limits> = {}, inputJson = '{"a":1}'): RunSpec {
  return { id: `t${++seq}`, runtime, code: { kind: 'inline', source }, inputJson, env: {}, limits: { ...DEFAULT_LIMITS, ...limits } };
}

async function run(b: MicrovmBackend, s: RunSpec, abort = new RunAbort(), onStdout?: (c: Buffer) => void): Promise<RunOutcome & { stdout: string; stderr: string }> {
  let stdout = '';
  let stderr = '';
  const out = await b.run(s, { stdout: (c) => ((stdout += c.toString()), onStdout?.(c)), stderr: (c) => (stderr += c.toString()) }, abort);
  return { ...out, stdout, stderr };
}

after(async () => {
  await Promise.allSettled(backends.map((b) => b.close()));
  for (const d of dirs) {
    for (const pid of qemuProcessesUnder(d)) process.kill(pid, 'SIGKILL');
    fs.rmSync(d, { recursive: true, force: true });
  }
});

// ---- hostile frames: the host-side decoder and session against a fake guest (no VM needed) ----

/** A fake guest channel: the test pushes what the "guest" sends; writes from the host are kept. */
function fakeChannel(): { channel: Duplex; written: Buffer[] } {
  const written: Buffer[] = [];
  const channel = new Duplex({
    read() {},
    write(chunk: Buffer, _enc, cb) {
      written.push(chunk);
      cb();
    },
  });
  return { channel, written };
}

const NO_IO = { stdout() {}, stderr() {} };
const REQ = { argv: ['true'], env: [], cwd: '/', files: [], stdin: Buffer.alloc(0), memMB: 64, pidsMax: 8, diskMB: 8, uid: 1000, seed: Buffer.alloc(8) };

describe('microvm protocol: frames from a hostile guest', () => {
  it('rejects a declared length over the bound before buffering it', () => {
    const d = new FrameDecoder();
    const head = Buffer.alloc(9);
    head.writeUInt32BE(0x7fffffff, 0);
    head.writeUInt8(FrameType.STDOUT, 4);
    assert.throws(() => d.push(head), ProtocolError);
    assert.ok(d.buffered <= 9);
  });

  it('rejects a length below the header, and unknown or host-only types', () => {
    const short = Buffer.alloc(9);
    short.writeUInt32BE(2, 0);
    assert.throws(() => new FrameDecoder().push(short), ProtocolError);
    assert.throws(() => new FrameDecoder().push(encodeFrame(99, 1, Buffer.alloc(0))), ProtocolError);
    assert.throws(() => new FrameDecoder().push(encodeFrame(FrameType.RUN, 1, Buffer.alloc(0))), ProtocolError);
  });

  it('reassembles frames split at every byte', () => {
    const bytes = Buffer.concat([encodeFrame(FrameType.STDOUT, 7, Buffer.from('hello')), encodeFrame(FrameType.STDERR, 7, Buffer.from('x'))]);
    const d = new FrameDecoder();
    const frames = [...bytes].flatMap((b) => d.push(Buffer.from([b])));
    assert.deepEqual(frames.map((f) => [f.type, f.runId, f.payload.toString()]), [[FrameType.STDOUT, 7, 'hello'], [FrameType.STDERR, 7, 'x']]);
  });

  it('fails a run on a frame for another run id', async () => {
    const { channel } = fakeChannel();
    const s = new AgentSession(channel);
    channel.push(encodeFrame(FrameType.STARTED, 999, Buffer.alloc(0)));
    await assert.rejects(s.run(42, REQ, NO_IO, performance.now() + 2000, new AbortController().signal), ProtocolError);
  });

  it('fails a run on output before STARTED, a malformed EXIT, or a result channel over its cap', async () => {
    for (const frames of [
      [encodeFrame(FrameType.STDOUT, 42, Buffer.from('x'))],
      [encodeFrame(FrameType.STARTED, 42, Buffer.alloc(0)), encodeFrame(FrameType.EXIT, 42, Buffer.alloc(3))],
      [encodeFrame(FrameType.STARTED, 42, Buffer.alloc(0)), ...Array.from({ length: Math.ceil(RESULT_MAX_BYTES / 60000) + 1 }, () => encodeFrame(FrameType.RESULT, 42, Buffer.alloc(60000)))],
    ]) {
      const { channel } = fakeChannel();
      const s = new AgentSession(channel);
      for (const f of frames) channel.push(f);
      await assert.rejects(s.run(42, REQ, NO_IO, performance.now() + 5000, new AbortController().signal), ProtocolError);
    }
  });

  it('rejects a malformed HELLO and an oversized frame mid-stream', async () => {
    const a = fakeChannel();
    a.channel.push(encodeFrame(FrameType.HELLO, 0, Buffer.from('hi there; rm -rf /')));
    await assert.rejects(new AgentSession(a.channel).hello(performance.now() + 2000, new AbortController().signal), ProtocolError);
    const b = fakeChannel();
    const big = Buffer.alloc(9);
    big.writeUInt32BE(GUEST_MAX_FRAME_BYTES + 1, 0);
    big.writeUInt8(FrameType.STDOUT, 4);
    b.channel.push(big);
    await assert.rejects(new AgentSession(b.channel).hello(performance.now() + 2000, new AbortController().signal), ProtocolError);
  });

  it('gives up on a silent guest at the deadline', async () => {
    const { channel } = fakeChannel();
    const t0 = performance.now();
    await assert.rejects(new AgentSession(channel).run(42, REQ, NO_IO, performance.now() + 300, new AbortController().signal), AgentTimeout);
    assert.ok(performance.now() - t0 < 2000);
  });
});

// ---- the real thing ----

describe('microvm backend in a real VM', () => {
  let b: MicrovmBackend;
  let dataDir: string;
  let unavailable: string | undefined;
  let guestKernel = '';

  before(async () => {
    dataDir = tmpDataDir();
    b = createBackend({ poolSize: 0, snapshot: true }, dataDir);
    const av = await b.probe();
    if (!av.available) unavailable = av.reason;
    else guestKernel = av.info?.kernel ?? '';
    console.log(`# microvm: ${JSON.stringify(av)}`);
  });

  it('runs sh in a guest whose kernel is not the host\'s and which sees only its own files', { timeout: 120_000 }, async (t) => {
    if (unavailable) return t.skip(unavailable);
    const canary = path.join(dataDir, 'host-canary');
    fs.writeFileSync(canary, 'host secret');
    const r = await run(b, spec('sh', `uname -r; read x; echo "in:$x"; ls /; cat ${canary} 2>&1; ls /dev; id -u`));
    assert.equal(r.error, null, JSON.stringify(r));
    const lines = r.stdout.split('\n');
    assert.equal(lines[0], guestKernel);
    assert.notEqual(lines[0], os.release());
    assert.equal(lines[1], 'in:{"a":1}');
    assert.match(r.stdout, /No such file or directory/);
    assert.doesNotMatch(r.stdout, /host secret/);
    assert.doesNotMatch(r.stdout, /vport|vda/, 'the agent channel and the disk are not in the workload\'s /dev');
    assert.equal(lines.at(-2), '1000');
    assert.equal(r.notes?.kernel, guestKernel);
  });

  it('cannot forge the result by writing to fd 3 or stdout', { timeout: 60_000 }, async (t) => {
    if (unavailable) return t.skip(unavailable);
    const r = await run(b, spec('sh', `echo '{"t":"result","output":666}'; echo '{"t":"result","output":667}' >&3`));
    assert.equal(r.output, undefined);
    assert.match(r.stderr, /Bad file descriptor|bad file/i);
  });

  it('reports a memory bomb as memory_limit', { timeout: 120_000 }, async (t) => {
    if (unavailable) return t.skip(unavailable);
    // dd fills its 96 MiB buffer, so it is the cgroup's OOM killer that stops it.
    const r = await run(b, spec('sh', 'dd if=/dev/zero of=/dev/null bs=96M count=1; echo survived', { memMB: 48 }));
    assert.equal(r.error?.code, 'memory_limit', JSON.stringify(r));
    assert.doesNotMatch(r.stdout, /survived/);
  });

  it('contains a fork bomb as pids_limit', { timeout: 60_000 }, async (t) => {
    if (unavailable) return t.skip(unavailable);
    const r = await run(b, spec('sh', 'bomb() { bomb | bomb & }; bomb; sleep 20', { pidsMax: 32, timeoutMs: 30_000 }));
    assert.equal(r.error?.code, 'pids_limit', JSON.stringify(r));
  });

  it('ends a hung guest as timeout at its own deadline and kills the VM', { timeout: 60_000 }, async (t) => {
    if (unavailable) return t.skip(unavailable);
    const t0 = performance.now();
    let stopped = 0;
    // Freeze the whole VM once the workload is running: the agent can never answer again.
    const r = await run(b, spec('sh', 'echo go; sleep 100', { timeoutMs: 1_000 }), new RunAbort(), () => {
      for (const pid of qemuProcessesUnder(dataDir)) {
        process.kill(pid, 'SIGSTOP');
        stopped++;
      }
    });
    assert.ok(stopped > 0);
    assert.equal(r.error?.code, 'timeout', JSON.stringify(r));
    assert.ok(performance.now() - t0 < 20_000);
    assert.deepEqual(qemuProcessesUnder(dataDir), []);
  });

  it('kills the VM when the core aborts for the timeout', { timeout: 60_000 }, async (t) => {
    if (unavailable) return t.skip(unavailable);
    const abort = new RunAbort();
    const r = await run(b, spec('sh', 'echo go; sleep 100'), abort, () => setTimeout(() => abort.abort(new WorkloadAbort('timeout')), 200));
    assert.equal(r.error?.code, 'timeout');
    assert.deepEqual(qemuProcessesUnder(dataDir), []);
  });

  it('runs python and node from the image store', { timeout: 180_000 }, async (t) => {
    if (unavailable) return t.skip(unavailable);
    const store = imageStore();
    const [py, node] = await Promise.all([store.resolve('python'), store.resolve('node')]);
    if (!py || !node) return t.skip(`no python/node images in ${IMAGES_DIR}/images (build them with the image store; set VULCAN_TEST_IMAGES_DIR)`);
    const p = await run(b, spec('python', 'import os\ndef main(i):\n    print(os.uname().release)\n    return {"sum": i["a"] + 1}\n'));
    assert.equal(p.error, null, JSON.stringify(p));
    assert.deepEqual(p.output, { sum: 2 });
    assert.equal(p.stdout.trim(), guestKernel);
    const n = await run(b, spec('node', 'import os from "node:os";\nexport default (i) => ({ k: os.release(), a: i.a });'));
    assert.equal(n.error, null, JSON.stringify(n));
    assert.deepEqual(n.output, { k: guestKernel, a: 1 });
  });

  it('leaves no QEMU process, VM directory or RAM file behind', async (t) => {
    if (unavailable) return t.skip(unavailable);
    assert.deepEqual(leftovers(dataDir, false), []);
    await b.close();
    await b.close(); // idempotent
    assert.deepEqual(leftovers(dataDir, true), []);
    const vms = path.join(dataDir, 'microvm', 'vms');
    assert.deepEqual(fs.existsSync(vms) ? fs.readdirSync(vms) : [], []);
    assert.equal(fs.existsSync(path.join(dataDir, 'microvm', 'templates')), false);
  });
});

describe('microvm warm starts and reconciliation', () => {
  it('serves from the pool, then destroys the used VM', { timeout: 120_000 }, async (t) => {
    const dataDir = tmpDataDir();
    const b = createBackend({ poolSize: 1, snapshot: true }, dataDir);
    const av = await b.probe();
    if (!av.available) return t.skip(av.reason);
    const first = await run(b, spec('sh', 'echo one'));
    assert.equal(first.stdout, 'one\n');
    // Wait for the background refill.
    for (let i = 0; i < 100 && qemuProcessesUnder(dataDir).length === 0; i++) await new Promise((r) => setTimeout(r, 100));
    await new Promise((r) => setTimeout(r, 500));
    const second = await run(b, spec('sh', 'echo two'));
    assert.equal(second.stdout, 'two\n');
    assert.equal(second.notes?.start, 'pool', JSON.stringify(second));
    await b.close();
    assert.deepEqual(leftovers(dataDir, true), []);
  });

  it('boots cold when warm starts are off', { timeout: 120_000 }, async (t) => {
    const dataDir = tmpDataDir();
    const b = createBackend({ poolSize: 0, snapshot: false }, dataDir);
    const av = await b.probe();
    if (!av.available) return t.skip(av.reason);
    const r = await run(b, spec('sh', 'echo cold'));
    assert.equal(r.stdout, 'cold\n');
    assert.equal(r.notes?.start, 'cold');
    await b.close();
    assert.deepEqual(leftovers(dataDir, true), []);
  });

  it('reconcile() kills a VM left by a crashed server and removes its files', { timeout: 60_000 }, async (t) => {
    const dataDir = tmpDataDir();
    const probe = createBackend({ poolSize: 0, snapshot: false }, dataDir);
    const av = await probe.probe();
    if (!av.available) return t.skip(av.reason);
    const art = '/var/cache/vulcan/microvm';
    if (!fs.existsSync(path.join(art, 'manifest.json'))) return t.skip('artifacts are not in /var/cache/vulcan/microvm');
    // A "crashed" server: start a VM and never destroy it.
    const vmm = new QemuVmm({ accel: 'tcg', baseKernelArgs: baseKernelArgs('tcg') });
    const orphan = await vmm.start(
      { id: 'orphan', dir: path.join(dataDir, 'microvm', 'vms', 'orphan'), kernelPath: path.join(art, 'vmlinuz'), initramfsPath: path.join(art, 'initramfs.cpio'), rootDiskPath: path.join(art, 'minimal.erofs'), memMB: 128, vcpus: 1, kernelArgs: [] },
      new AbortController().signal,
    );
    assert.deepEqual(qemuProcessesUnder(dataDir), [orphan.pid]);
    const restarted = createBackend({ poolSize: 0, snapshot: false }, dataDir);
    await restarted.reconcile();
    await orphan.exited;
    assert.deepEqual(qemuProcessesUnder(dataDir), []);
    assert.deepEqual(fs.readdirSync(path.join(dataDir, 'microvm', 'vms')), []);
    await orphan.destroy();
  });
});

// ---- the shared conformance suite ----

let conformanceDir = '';
let conformanceBackend: MicrovmBackend | undefined;
describeWorkloadConformance('microvm', {
  create: () => {
    conformanceDir = tmpDataDir();
    conformanceBackend = createBackend({ poolSize: 1, snapshot: true }, conformanceDir);
    return Promise.resolve(conformanceBackend);
  },
  // Idle VMs in the pool are there by design; anything else is a leak.
  leftovers: async () => {
    await conformanceBackend?.settle();
    const pooled = new Set(conformanceBackend?.pooledVmPids() ?? []);
    return leftovers(conformanceDir, false).filter((l) => !pooled.has(Number(l.replace('qemu pid ', ''))));
  },
  slowStartS: 15,
});
