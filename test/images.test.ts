/**
 * The image store against the real filesystem: builds, imports of `docker save` and OCI
 * layout tarballs (layers, whiteouts), hostile tarballs, and ls/inspect/rm.
 *
 * The built-in images (python, node: Debian minbase via mmdebstrap) are built once into
 * VULCAN_TEST_IMAGES_DIR (default /var/lib/vulcan) and reused by every run and
 * by the gvisor and container tests.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, describe, it } from 'node:test';
import zlib from 'node:zlib';
import { VulcanError } from '../src/core/errors.js';
import { bufferSource, createImageStore, ensureBuiltinImages, type LocalImageStore } from '../src/images/index.js';
import { rawTarGz, type RawEntry } from './helpers/tarball.js';

const TEST_IMAGES_DIR = process.env.VULCAN_TEST_IMAGES_DIR ?? '/var/lib/vulcan';
const isRoot = process.getuid?.() === 0;

const dirs: string[] = [];
function freshStore(): LocalImageStore {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vulcan-images-'));
  dirs.push(dir);
  return createImageStore(dir);
}
after(() => {
  for (const d of dirs) fs.rmSync(d, { recursive: true, force: true });
});

const tar = (entries: readonly RawEntry[]): Buffer => zlib.gunzipSync(rawTarGz(entries));
const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

/** A `docker save` (legacy layout) of the given layers. */
function dockerSave(layers: Buffer[], config: object, tag = 'example.org/team/tool:1.0'): Buffer {
  const cfg = Buffer.from(JSON.stringify(config));
  const entries: RawEntry[] = [{ name: `${sha(cfg)}.json`, body: cfg.toString() }];
  const names: string[] = [];
  layers.forEach((l, i) => {
    const n = `layer${i}/layer.tar`;
    names.push(n);
    entries.push({ name: `layer${i}/`, type: '5', mode: 0o755 }, { name: n, body: l.toString('latin1') });
  });
  entries.push({ name: 'manifest.json', body: JSON.stringify([{ Config: `${sha(cfg)}.json`, RepoTags: [tag], Layers: names }]) });
  return tarLatin1(entries);
}

/** rawTarGz writes bodies as UTF-8; layers are binary, so write them byte for byte. */
function tarLatin1(entries: readonly RawEntry[]): Buffer {
  const parts: Buffer[] = [];
  for (const e of entries) {
    const body = Buffer.from(e.body ?? '', e.name.endsWith('.tar') || e.name.startsWith('blobs/') ? 'latin1' : 'utf8');
    const one = tar([{ ...e, body: '' }]).subarray(0, 512);
    // Patch size and checksum for the real body.
    const h = Buffer.from(one);
    h.write(body.length.toString(8).padStart(11, '0') + '\0', 124, 12, 'latin1');
    h.fill(' ', 148, 156);
    let sum = 0;
    for (const b of h) sum += b;
    h.write(sum.toString(8).padStart(6, '0') + '\0 ', 148, 8, 'latin1');
    parts.push(h, body, Buffer.alloc((512 - (body.length % 512)) % 512));
  }
  parts.push(Buffer.alloc(1024));
  return Buffer.concat(parts);
}

/** An OCI image layout of the given (gzip'd) layers. */
function ociLayout(layersGz: Buffer[], config: object, refName = 'oci-tool'): Buffer {
  const entries: RawEntry[] = [{ name: 'oci-layout', body: '{"imageLayoutVersion":"1.0.0"}' }, { name: 'blobs/', type: '5', mode: 0o755 }, { name: 'blobs/sha256/', type: '5', mode: 0o755 }];
  const cfg = Buffer.from(JSON.stringify(config));
  const blob = (b: Buffer) => {
    entries.push({ name: `blobs/sha256/${sha(b)}`, body: b.toString('latin1') });
    return { digest: `sha256:${sha(b)}`, size: b.length };
  };
  const manifest = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: 'application/vnd.oci.image.manifest.v1+json',
      config: { mediaType: 'application/vnd.oci.image.config.v1+json', ...blob(cfg) },
      layers: layersGz.map((l) => ({ mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', ...blob(l) })),
    }),
  );
  const m = blob(manifest);
  entries.push({ name: 'index.json', body: JSON.stringify({ schemaVersion: 2, manifests: [{ mediaType: 'application/vnd.oci.image.manifest.v1+json', ...m, annotations: { 'org.opencontainers.image.ref.name': refName } }] }) });
  return tarLatin1(entries);
}

async function refused(store: LocalImageStore, data: Buffer, pattern: RegExp): Promise<void> {
  await assert.rejects(
    store.importTarball(bufferSource(data), { name: 'hostile' }),
    (err: unknown) => err instanceof VulcanError && err.code === 'invalid_request' && pattern.test(err.message),
  );
  assert.equal(await store.resolve('hostile'), null, 'a refused tarball left a name');
  assert.deepEqual(fs.readdirSync(path.join(store.dir, 'tmp')), [], 'a refused tarball left a staging dir');
}

describe('image store', { skip: isRoot ? false : 'needs root (image trees keep their owners)' }, () => {
  it('builds minimal from busybox; the same content gets the same digest and one tree', async () => {
    const store = freshStore();
    const a = await store.build({ name: 'minimal', kind: 'busybox' });
    const b = await store.build({ name: 'minimal2', kind: 'busybox' });
    assert.match(a.digest, /^sha256:[a-f0-9]{64}$/);
    assert.equal(a.digest, b.digest);
    assert.equal(a.rootfsDir, b.rootfsDir);
    assert.ok(fs.statSync(path.join(a.rootfsDir, 'usr/bin/busybox')).isFile());
    assert.equal(fs.readlinkSync(path.join(a.rootfsDir, 'bin')), 'usr/bin');
    for (const d of ['tmp', 'work', 'proc', 'dev', 'vulcan']) assert.ok(fs.statSync(path.join(a.rootfsDir, d)).isDirectory(), d);
    assert.deepEqual(
      (await store.list()).map((i) => i.name),
      ['minimal', 'minimal2'],
    );
    assert.equal(fs.readdirSync(path.join(store.dir, 'rootfs')).length, 1);
    // rm keeps the shared tree until its last name goes.
    await store.remove('minimal2');
    assert.ok(fs.existsSync(a.rootfsDir));
    await store.remove('minimal');
    assert.ok(!fs.existsSync(a.rootfsDir));
    assert.deepEqual(await store.list(), []);
    await assert.rejects(store.inspect('minimal'), (e: unknown) => e instanceof VulcanError && e.code === 'not_found');
    await assert.rejects(store.remove('minimal'), (e: unknown) => e instanceof VulcanError && e.code === 'not_found');
  });

  it('imports a docker save tarball: layers in order, whiteouts and opaque dirs honoured, config kept', async () => {
    const store = freshStore();
    const l1 = tar([
      { name: 'etc/', type: '5', mode: 0o755 },
      { name: 'etc/keep', body: 'keep' },
      { name: 'etc/gone', body: 'gone' },
      { name: 'app/', type: '5', mode: 0o755 },
      { name: 'app/old1', body: 'old' },
      { name: 'app/sub/', type: '5', mode: 0o755 },
      { name: 'app/sub/old2', body: 'old' },
      { name: 'bin/', type: '5', mode: 0o755 },
      { name: 'bin/tool', body: '#!/bin/sh\necho v1\n', mode: 0o755 },
    ]);
    const l2 = tar([
      { name: 'etc/.wh.gone', body: '' },
      { name: 'app/new', body: 'new' },
      { name: 'app/.wh..wh..opq', body: '' },
      { name: 'bin/tool', body: '#!/bin/sh\necho v2\n', mode: 0o755 },
      { name: 'bin/tool-link', type: '1', linkname: 'bin/tool' },
      { name: 'bin/abs-sym', type: '2', linkname: '/bin/tool' },
    ]);
    const img = await store.importTarball(bufferSource(dockerSave([l1, l2], { config: { Entrypoint: ['/bin/tool'], Cmd: ['--x'], Env: ['A=1'], WorkingDir: '/app' } })));
    assert.equal(img.name, 'tool');
    assert.deepEqual(img.config, { cmd: ['/bin/tool', '--x'], env: ['A=1'], workdir: '/app' });
    assert.equal(img.source.kind === 'import' && img.source.format, 'docker-save');
    const r = img.rootfsDir;
    assert.equal(fs.readFileSync(path.join(r, 'etc/keep'), 'utf8'), 'keep');
    assert.ok(!fs.existsSync(path.join(r, 'etc/gone')), 'whiteout ignored');
    assert.deepEqual(fs.readdirSync(path.join(r, 'app')).sort(), ['new'], 'opaque dir kept lower-layer files');
    assert.equal(fs.readFileSync(path.join(r, 'bin/tool'), 'utf8'), '#!/bin/sh\necho v2\n');
    assert.equal(fs.statSync(path.join(r, 'bin/tool-link')).ino, fs.statSync(path.join(r, 'bin/tool')).ino);
    assert.equal(fs.readlinkSync(path.join(r, 'bin/abs-sym')), '/bin/tool');
    assert.equal(fs.statSync(path.join(r, 'bin/tool')).mode & 0o777, 0o755);
    assert.ok(!fs.readdirSync(r).some((n) => n.startsWith('.wh.')));
  });

  it('imports an OCI image layout with gzip layers, verifying blob digests', async () => {
    const store = freshStore();
    const layer = rawTarGz([
      { name: 'hello/', type: '5', mode: 0o755 },
      { name: 'hello/world.txt', body: 'hi' },
    ]);
    const img = await store.importTarball(bufferSource(ociLayout([layer], { config: { Cmd: ['/bin/sh'] } })));
    assert.equal(img.name, 'oci-tool');
    assert.equal(fs.readFileSync(path.join(img.rootfsDir, 'hello/world.txt'), 'utf8'), 'hi');
    assert.equal(img.source.kind === 'import' && img.source.format, 'oci-layout');

    // The same archive with a layer that does not match its digest is refused.
    const tampered = ociLayout([layer], { config: {} });
    const bad = Buffer.from(tampered);
    const at = bad.indexOf(layer.subarray(0, 16));
    bad[at + 20] = (bad[at + 20] ?? 0) ^ 0xff;
    await refused(store, bad, /does not match its content|not a readable/);
  });

  it('imports a plain root filesystem tarball under the name given', async () => {
    const store = freshStore();
    const img = await store.importTarball(bufferSource(rawTarGz([{ name: './etc/', type: '5', mode: 0o755 }, { name: './etc/os-release', body: 'ID=test\n' }])), { name: 'plain' });
    assert.equal(img.source.kind === 'import' && img.source.format, 'rootfs');
    assert.equal(fs.readFileSync(path.join(img.rootfsDir, 'etc/os-release'), 'utf8'), 'ID=test\n');
    await assert.rejects(store.importTarball(bufferSource(rawTarGz([{ name: 'x', body: '' }]))), /carries no image name/);
    await assert.rejects(store.importTarball(bufferSource(rawTarGz([{ name: 'x', body: '' }])), { name: '../evil' }), /image name/);
  });

  describe('hostile tarballs are refused and nothing is written outside the store', () => {
    const outside = fs.mkdtempSync(path.join(os.tmpdir(), 'vulcan-outside-'));
    dirs.push(outside);
    const victim = path.join(outside, 'victim');
    fs.writeFileSync(victim, 'untouched');
    const untouched = () => {
      assert.equal(fs.readFileSync(victim, 'utf8'), 'untouched');
      assert.deepEqual(fs.readdirSync(outside), ['victim']);
    };

    it('../ paths', async () => {
      const store = freshStore();
      const rel = path.relative(path.join(store.dir, 'tmp', 'x', 'y'), victim);
      await refused(store, rawTarGz([{ name: rel, body: 'pwned' }]), /climbs out/);
      await refused(store, rawTarGz([{ name: 'a/../../b', body: 'pwned' }]), /climbs out/);
      untouched();
    });

    it('absolute paths', async () => {
      const store = freshStore();
      await refused(store, rawTarGz([{ name: victim, body: 'pwned' }]), /absolute path/);
      untouched();
    });

    it('writing through a symlink (absolute or escaping), in one layer or across layers', async () => {
      const store = freshStore();
      await refused(store, rawTarGz([{ name: 'esc', type: '2', linkname: outside }, { name: 'esc/victim', body: 'pwned' }]), /through the symlink/);
      await refused(store, rawTarGz([{ name: 'esc', type: '2', linkname: '../../../../../../..' + outside }, { name: 'esc/new', body: 'pwned' }]), /through the symlink/);
      const l1 = tar([{ name: 'etc', type: '2', linkname: outside }]);
      const l2 = tar([{ name: 'etc/victim', body: 'pwned' }]);
      await refused(store, dockerSave([l1, l2], { config: {} }), /through the symlink/);
      untouched();
    });

    it('hardlinks out of the tree', async () => {
      const store = freshStore();
      await refused(store, rawTarGz([{ name: 'h', type: '1', linkname: victim }]), /absolute path/);
      await refused(store, rawTarGz([{ name: 'h', type: '1', linkname: '../../../../../../../../' + victim.slice(1) }]), /climbs out/);
      await refused(store, rawTarGz([{ name: 'esc', type: '2', linkname: outside }, { name: 'h', type: '1', linkname: 'esc/victim' }]), /not a real directory/);
      untouched();
      assert.equal(fs.statSync(victim).nlink, 1);
    });

    it('device nodes', async () => {
      const store = freshStore();
      await refused(store, rawTarGz([{ name: 'dev/sda', type: '3', mode: 0o666 }]), /device node/);
    });

    it('setuid and setgid bits are cleared, and the image says so', async () => {
      const store = freshStore();
      const img = await store.importTarball(bufferSource(rawTarGz([{ name: 'su', body: 'x', mode: 0o4755 }, { name: 'sg', body: 'x', mode: 0o2755 }])), { name: 'suid' });
      assert.equal(fs.statSync(path.join(img.rootfsDir, 'su')).mode & 0o7777, 0o755);
      assert.equal(fs.statSync(path.join(img.rootfsDir, 'sg')).mode & 0o7777, 0o755);
      assert.equal(img.neutralised, 2);
    });

    it('a tar bomb over the size cap', async () => {
      const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vulcan-images-'));
      dirs.push(dir);
      const store = createImageStore(dir, { maxBytes: 1024 * 1024, maxEntries: 100 });
      const big = 'x'.repeat(600 * 1024);
      await refused(store, rawTarGz([{ name: 'a', body: big }, { name: 'b', body: big }]), /more than 1 MiB/);
      await refused(
        store,
        rawTarGz(Array.from({ length: 101 }, (_, i) => ({ name: `f${i}`, body: '' }))),
        /more than 100 entries/,
      );
    });

    it('garbage that is not a tar', async () => {
      const store = freshStore();
      await refused(store, Buffer.from('this is not a tarball at all, not even close'.repeat(20)), /not a readable tar|carries no image name|no image/);
    });
  });

  it('builds the built-in images once (python, node from Debian; minimal from busybox) and finds them cached', { timeout: 15 * 60_000 }, async () => {
    const store = createImageStore(TEST_IMAGES_DIR);
    const progress: string[] = [];
    const images = await ensureBuiltinImages(store, { onProgress: (m) => progress.push(m) });
    assert.deepEqual(
      images.map((i) => i.name),
      ['minimal', 'python', 'node'],
    );
    const byName = Object.fromEntries(images.map((i) => [i.name, i]));
    assert.ok(fs.existsSync(path.join(byName.python?.rootfsDir ?? '', 'usr/bin/python3')));
    assert.ok(fs.existsSync(path.join(byName.node?.rootfsDir ?? '', 'usr/bin/node')));
    // No device nodes and no setuid files in a built image.
    const devDir = path.join(byName.python?.rootfsDir ?? '', 'dev');
    const devices = fs.readdirSync(devDir).filter((n) => {
      const st = fs.lstatSync(path.join(devDir, n));
      return st.isCharacterDevice() || st.isBlockDevice();
    });
    assert.deepEqual(devices, []);
    const t0 = Date.now();
    const again = await ensureBuiltinImages(store);
    assert.ok(Date.now() - t0 < 2000, 'a second ensure should find every image cached');
    assert.deepEqual(
      again.map((i) => i.digest),
      images.map((i) => i.digest),
    );
  });
});
