/**
 * The gvisor backend against real runsc and real cgroups: the shared conformance suite,
 * an imported OCI image, and evidence from inside that the code runs on gVisor's kernel.
 * Images come from VULCAN_TEST_IMAGES_DIR (default /var/lib/vulcan), built
 * once (test/images.test.ts or setup) and reused.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { createHarness, type Harness } from '../../src/backends/conformance/harness.js';
import { describeWorkloadConformance } from '../../src/backends/conformance/workload-suite.js';
import { createBackend } from '../../src/backends/gvisor/index.js';
import type { Backend } from '../../src/core/backend.js';
import { createImageStore, ensureBuiltinImages } from '../../src/images/index.js';
import { cgroupsLeft, processesWith, tempDir, testConfig, testContext } from '../helpers/context.js';
import { importTestImage } from '../helpers/images.js';

const TEST_IMAGES_DIR = process.env.VULCAN_TEST_IMAGES_DIR ?? '/var/lib/vulcan';
const dataDir = tempDir('vulcan-gvisor-');
const store = createImageStore(TEST_IMAGES_DIR);
let storeReady: Promise<unknown> | undefined;

async function newBackend(): Promise<Backend> {
  storeReady ??= ensureBuiltinImages(store);
  await storeReady;
  return createBackend(testContext(store, testConfig(dataDir)));
}

/** Everything a gvisor run could leave: cgroups, runsc processes, mounts, work dirs, runsc state. */
function leftovers(): string[] {
  const out = [...cgroupsLeft('gv-'), ...processesWith('runsc', dataDir)];
  for (const line of fs.readFileSync('/proc/self/mounts', 'utf8').split('\n')) if (line.includes(dataDir)) out.push(`mount ${line}`);
  const base = path.join(dataDir, 'gvisor');
  if (fs.existsSync(base)) for (const d of fs.readdirSync(base)) if (d !== 'state') out.push(`dir ${d}`);
  const state = path.join(base, 'state');
  if (fs.existsSync(state)) for (const f of fs.readdirSync(state)) out.push(`runsc state ${f}`);
  return out;
}

after(() => {
  fs.rmSync(dataDir, { recursive: true, force: true });
});

describeWorkloadConformance('gvisor', {
  create: newBackend,
  skip: {
    'fork-bomb':
      "each guest process costs the sentry memory, so a python fork bomb runs out of mem_mb before it reaches pidsMax processes and ends as memory_limit; 'gvisor: particulars' checks that fork bombs are contained (python → memory_limit, sh → pids_limit)",
  },
  leftovers: () => Promise.resolve(leftovers()),
});

describe('gvisor: particulars', () => {
  let backend: Backend;
  let h: Harness;
  let unavailable: string | undefined;

  before(async () => {
    backend = await newBackend();
    const av = await backend.probe();
    if (!av.available) unavailable = av.reason;
    else {
      await importTestImage(store, 'gv-test-image');
      h = createHarness(backend);
    }
  });
  after(async () => {
    await h?.close();
    await backend?.close();
    if (!unavailable) await store.remove('gv-test-image').catch(() => undefined);
  });

  it('reports the platform it chose, and why', { timeout: 60_000 }, async (t) => {
    if (unavailable) return t.skip(unavailable);
    const av = await backend.probe();
    assert.ok(av.available);
    assert.match(av.info?.platform ?? '', /^(kvm|systrap|ptrace)$/);
    assert.ok((av.info?.platformWhy ?? '').length > 0);
    t.diagnostic(`platform ${av.info?.platform}: ${av.info?.platformWhy}`);
  });

  it("the code runs on gVisor's kernel, not the host's", { timeout: 60_000 }, async (t) => {
    if (unavailable) return t.skip(unavailable);
    const rec = await h.run({ runtime: 'sh', code: 'uname -r\ndmesg\n' });
    assert.equal(rec.status, 'completed', JSON.stringify(rec));
    assert.match(rec.stdout, /Starting gVisor/);
    assert.ok(!rec.stdout.includes(os.release()), `sees the host kernel ${os.release()}`);
  });

  it('has no Docker socket, no host devices and a read-only root', { timeout: 60_000 }, async (t) => {
    if (unavailable) return t.skip(unavailable);
    const rec = await h.run({ runtime: 'sh', code: 'for s in /var/run/docker.sock /run/docker.sock /run/containerd/containerd.sock; do [ -e $s ] && echo "found $s"; done\nls /dev\ntouch /usr/x 2>&1 || echo ro-root\necho ok > /tmp/t && echo tmp-writable\nid -u\ngrep -E "^(CapEff|NoNewPrivs)" /proc/self/status\n' });
    assert.equal(rec.status, 'completed', JSON.stringify(rec));
    assert.doesNotMatch(rec.stdout, /found /);
    assert.doesNotMatch(rec.stdout, /\b(sda|vda|kvm|nvme)/);
    assert.match(rec.stdout, /ro-root/);
    assert.match(rec.stdout, /tmp-writable/);
    assert.match(rec.stdout, /^1000$/m);
    assert.match(rec.stdout, /^CapEff:\s+0+$/m);
  });

  it('runs an imported OCI image: cmd, the image config env and workdir', { timeout: 60_000 }, async (t) => {
    if (unavailable) return t.skip(unavailable);
    const rec = await h.run({ runtime: 'oci', image: 'gv-test-image', cmd: ['/bin/sh', '/app/hello.sh', 'argv-ok'], input: null });
    assert.equal(rec.status, 'completed', JSON.stringify(rec));
    assert.match(rec.stdout, /hello from an imported image: argv-ok from-config/);
    assert.match(rec.stdout, /data inside the image/);
    const failing = await h.run({ runtime: 'oci', image: 'gv-test-image', cmd: ['/bin/sh', '-c', 'exit 7'] });
    assert.equal(failing.status, 'failed');
    assert.equal(failing.exit_code, 7);
  });

  it('runs python with an image named in the request', { timeout: 60_000 }, async (t) => {
    if (unavailable) return t.skip(unavailable);
    const rec = await h.run({ runtime: 'python', image: 'python', code: 'import sys\ndef main(i):\n    return sys.version_info[0]\n' });
    assert.equal(rec.status, 'completed', JSON.stringify(rec));
    assert.equal(rec.output, 3);
  });

  it('contains fork bombs: a python one by memory, a cheap sh one by the task limit', { timeout: 90_000 }, async (t) => {
    if (unavailable) return t.skip(unavailable);
    const py = await h.run({ runtime: 'python', code: 'import os, time\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        time.sleep(0.01)\n', resources: { timeout_s: 20 } });
    assert.equal(py.status, 'failed', JSON.stringify(py));
    assert.match(py.error?.code ?? '', /^(memory_limit|pids_limit)$/);
    const sh = await h.run({ runtime: 'sh', code: 'f() { f | f & }\nf\nsleep 30\n', resources: { timeout_s: 20, mem_mb: 1024 } });
    assert.equal(sh.status, 'failed', JSON.stringify(sh));
    assert.equal(sh.error?.code, 'pids_limit', JSON.stringify(sh));
    assert.ok((sh.duration_ms ?? 0) < 15_000, `took ${sh.duration_ms} ms`);
    assert.deepEqual(leftovers(), []);
  });

  it('leaves nothing behind after the particulars', (t) => {
    if (unavailable) return t.skip(unavailable);
    assert.deepEqual(leftovers(), []);
  });
});
