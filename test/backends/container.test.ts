/**
 * The container backend against the real Docker daemon (scripts/setup.d/31-docker.sh starts
 * it): the shared conformance suite on runc, and on runsc wherever the daemon can run it
 * (here it cannot: the probe says why, and leaves nothing behind), plus an imported OCI
 * image, isolation evidence, reconciliation and a missing daemon.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { createHarness, type Harness } from '../../src/backends/conformance/harness.js';
import { describeWorkloadConformance } from '../../src/backends/conformance/workload-suite.js';
import { ContainerBackend, LABEL_MANAGED, LABEL_NODE, LABEL_POOL } from '../../src/backends/container/container-backend.js';
import { dataDirTag } from '../../src/core/config.js';
import { importTestImage } from '../helpers/images.js';
import { DockerClient, dockerSocketPath } from '../../src/backends/container/docker-client.js';
import { processesOf } from '../../src/backends/container/leaks.js';
import { createImageStore, ensureBuiltinImages } from '../../src/images/index.js';
import { processesWith, tempDir, testConfig, testContext } from '../helpers/context.js';

const TEST_IMAGES_DIR = process.env.VULCAN_TEST_IMAGES_DIR ?? '/var/lib/vulcan';
const dataDir = tempDir('vulcan-container-');
const store = createImageStore(TEST_IMAGES_DIR);
let storeReady: Promise<unknown> | undefined;

async function newBackend(runtime = 'runc', poolSize = 0): Promise<ContainerBackend> {
  storeReady ??= ensureBuiltinImages(store);
  await storeReady;
  return new ContainerBackend(testContext(store, testConfig(dataDir)), { runtime, poolSize });
}

/**
 * Vulcan's containers, runtime processes and mounts/dirs under this test's data dir. With
 * `idlePool`, a warm pool's idle containers (running, never used) and their slots are allowed:
 * they belong to the backend until close(), which the particulars check.
 */
async function leftovers(idlePool = false): Promise<string[]> {
  const out: string[] = [];
  let pooled = 0;
  if (fs.existsSync(dockerSocketPath())) {
    const client = new DockerClient(dockerSocketPath());
    try {
      for (const c of await client.listContainers([`${LABEL_MANAGED}=true`])) {
        if (idlePool && c.Labels[LABEL_POOL] === 'true' && c.State === 'running') pooled++;
        else out.push(`container ${c.Id.slice(0, 12)} ${c.State}`);
      }
    } finally {
      await client.close();
    }
  }
  out.push(...processesWith('runsc', 'moby'));
  const shims = processesWith('containerd-shim', 'moby');
  if (shims.length > pooled) out.push(...shims);
  for (const line of fs.readFileSync('/proc/self/mounts', 'utf8').split('\n')) if (line.includes(dataDir) && !(idlePool && line.includes('/w-pool-'))) out.push(`mount ${line}`);
  const base = path.join(dataDir, 'container');
  if (fs.existsSync(base)) for (const d of fs.readdirSync(base)) if (!(idlePool && d.startsWith('w-pool-'))) out.push(`dir ${d}`);
  return out;
}

after(() => {
  fs.rmSync(dataDir, { recursive: true, force: true });
});

describeWorkloadConformance('container/runc', {
  create: () => newBackend('runc', 1),
  leftovers: () => leftovers(true),
});

describeWorkloadConformance('container/runc (no pool)', {
  create: () => newBackend('runc', 0),
  leftovers: () => leftovers(),
});

describeWorkloadConformance('container/runsc', {
  create: () => newBackend('runsc', 1),
  leftovers: () => leftovers(true),
});

describe('container: particulars', () => {
  let backend: ContainerBackend;
  let h: Harness;
  let unavailable: string | undefined;

  before(async () => {
    backend = await newBackend('runc');
    const av = await backend.probe();
    if (!av.available) unavailable = av.reason;
    else {
      await importTestImage(store, 'ct-test-image');
      h = createHarness(backend);
    }
  });
  after(async () => {
    await h?.close();
    await backend?.close();
    if (!unavailable) {
      await store.remove('ct-test-image').catch(() => undefined);
      // Reconciliation drops daemon images whose store image is gone.
      const b = await newBackend();
      await b.reconcile();
      await b.close();
      const client = new DockerClient(dockerSocketPath());
      try {
        assert.deepEqual(await client.listImages('vulcan/ct-test-image'), []);
      } finally {
        await client.close();
      }
    }
  });

  it('probes every runtime the daemon lists; one that cannot run here is reported with the daemon reason and leaves nothing', { timeout: 120_000 }, async (t) => {
    if (unavailable) return t.skip(unavailable);
    const status = backend.runtimeStatus;
    assert.equal(status.runc, 'ok');
    for (const [rt, s] of Object.entries(status)) t.diagnostic(`${rt}: ${s}`);
    if (status.runsc !== undefined && status.runsc !== 'ok') {
      assert.match(status.runsc, /^unavailable: /);
      const rs = await newBackend('runsc');
      const av = await rs.probe();
      await rs.close();
      assert.equal(av.available, false);
      assert.match(av.available ? '' : av.reason, /runsc unavailable/);
    }
    assert.deepEqual(await leftovers(), []);
    assert.deepEqual(processesWith('runsc-sandbox', 'moby'), []);
  });

  it('the container sees no Docker socket, no network, no capabilities, a read-only root', { timeout: 60_000 }, async (t) => {
    if (unavailable) return t.skip(unavailable);
    const rec = await h.run({ runtime: 'sh', code: 'for s in /var/run/docker.sock /run/docker.sock /run/containerd/containerd.sock; do [ -e $s ] && echo "found $s"; done\nfor i in $(tail -n +3 /proc/net/dev | cut -d: -f1); do echo "if:$i"; done\ntouch /usr/x 2>/dev/null || echo ro-root\necho ok > /tmp/t && echo tmp-writable\nid -u\ngrep -E "^(CapEff|NoNewPrivs)" /proc/self/status\n' });
    assert.equal(rec.status, 'completed', JSON.stringify(rec));
    assert.doesNotMatch(rec.stdout, /found /);
    assert.match(rec.stdout, /ro-root/);
    assert.match(rec.stdout, /tmp-writable/);
    assert.match(rec.stdout, /^1000$/m);
    assert.match(rec.stdout, /^CapEff:\s+0+$/m);
    assert.match(rec.stdout, /^NoNewPrivs:\s+1$/m);
    const ifaces = rec.stdout.split('\n').filter((l) => l.startsWith('if:'));
    assert.deepEqual(ifaces, ['if:lo']);
  });

  it('runs an imported OCI image: cmd, the image config env and workdir', { timeout: 120_000 }, async (t) => {
    if (unavailable) return t.skip(unavailable);
    const rec = await h.run({ runtime: 'oci', image: 'ct-test-image', cmd: ['/bin/sh', '/app/hello.sh', 'argv-ok'] });
    assert.equal(rec.status, 'completed', JSON.stringify(rec));
    assert.match(rec.stdout, /hello from an imported image: argv-ok from-config/);
    assert.match(rec.stdout, /data inside the image/);
  });

  it("reconcile removes the containers an earlier server of this data dir left, and not another node's", { timeout: 60_000 }, async (t) => {
    if (unavailable) return t.skip(unavailable);
    const client = new DockerClient(dockerSocketPath());
    try {
      const minimal = await store.inspect('minimal');
      const ref = `vulcan/minimal:${minimal.digest.slice(7, 19)}`;
      const create = (name: string, tag: string) =>
        client.call<{ Id: string }>('POST', `/containers/create?name=${name}-${process.pid}`, { Image: ref, Cmd: ['/bin/sleep', '300'], Labels: { [LABEL_MANAGED]: 'true', [LABEL_NODE]: tag }, HostConfig: { NetworkMode: 'none' } });
      const id = await create('vulcan-stale', dataDirTag(dataDir));
      const other = await create('vulcan-other-node', 'someone-else');
      await client.startContainer(id.Id);
      await backend.reconcile();
      assert.deepEqual(await client.listContainers([`${LABEL_MANAGED}=true`, `${LABEL_NODE}=${dataDirTag(dataDir)}`]), []);
      assert.deepEqual(processesOf(id.Id), []);
      assert.equal((await client.listContainers([`${LABEL_NODE}=someone-else`])).length, 1, "another node's container was removed");
      await client.removeContainer(other.Id);
    } finally {
      await client.close();
    }
  });

  it('reports itself unavailable, with the reason, when the socket is missing or DOCKER_HOST is not unix://', async () => {
    const saved = process.env.DOCKER_HOST;
    try {
      process.env.DOCKER_HOST = 'unix:///nonexistent/docker.sock';
      const b1 = await newBackend();
      const av1 = await b1.probe();
      await b1.close();
      assert.equal(av1.available, false);
      assert.match(av1.available ? '' : av1.reason, /no Docker socket at \/nonexistent\/docker.sock/);
      process.env.DOCKER_HOST = 'tcp://127.0.0.1:2375';
      const b2 = await newBackend();
      const av2 = await b2.probe();
      await b2.close();
      assert.match(av2.available ? '' : av2.reason, /unix:\/\/ socket only/);
    } finally {
      if (saved === undefined) delete process.env.DOCKER_HOST;
      else process.env.DOCKER_HOST = saved;
    }
  });

  it('a warm pool serves workloads (env quoting included) and close() removes its idle containers', { timeout: 120_000 }, async (t) => {
    if (unavailable) return t.skip(unavailable);
    const pooled = await newBackend('runc', 2);
    assert.ok((await pooled.probe()).available);
    const ph = createHarness(pooled);
    try {
      const tricky = "it's $HOME `id` \\ \"q\"";
      for (let i = 0; i < 3; i++) {
        const rec = await ph.run({ runtime: 'sh', code: 'printf "%s|" "$Q"; pwd; cat\n', env: { Q: tricky }, input: { i } });
        assert.equal(rec.status, 'completed', JSON.stringify(rec));
        assert.equal(rec.stdout, `${tricky}|/work\n{"i":${i}}`);
      }
      await pooled.whenPoolFilled();
      const client = new DockerClient(dockerSocketPath());
      try {
        assert.ok((await client.listContainers([`${LABEL_POOL}=true`])).length >= 1, 'the pool holds a pre-started container');
      } finally {
        await client.close();
      }
    } finally {
      await ph.close();
      await pooled.close();
    }
    assert.deepEqual(await leftovers(), []);
  });

  it('leaves nothing behind after the particulars', async (t) => {
    if (unavailable) return t.skip(unavailable);
    await backend.close();
    assert.deepEqual(await leftovers(), []);
  });
});
