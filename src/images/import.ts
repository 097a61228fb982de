/**
 * Importing images from tarballs: a `docker save` archive (legacy or OCI-flavoured), an OCI
 * image layout, or a plain root filesystem tarball (`docker export`, `tar -C root .`).
 * The outer archive is unpacked with the same hostile-tarball rules as the layers.
 */
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import type { Readable } from 'node:stream';
import { applyLayer, HostileTarballError, parseTar, safeComponents, TreeWriter, type ExtractOptions } from './extract.js';

/** What the archive turned out to be. */
export type ImportFormat = 'docker-save' | 'oci-layout' | 'rootfs';

/** The runtime config an image carries (OCI `config`): argv, environment, working dir. */
export interface ImageRuntimeConfig {
  readonly cmd?: readonly string[];
  readonly env?: readonly string[];
  readonly workdir?: string;
}

export interface ImportedImage {
  readonly format: ImportFormat;
  readonly config: ImageRuntimeConfig;
  /** The name the archive suggests (`RepoTags`, `org.opencontainers.image.ref.name`), sanitised. */
  readonly suggestedName?: string;
  readonly layers: number;
}

const OCI_INDEX = 'application/vnd.oci.image.index.v1+json';
const DOCKER_LIST = 'application/vnd.docker.distribution.manifest.list.v2+json';
const ZSTD_MAGIC = Buffer.from([0x28, 0xb5, 0x2f, 0xfd]);

/** Turns `registry/repo/name:tag` into a store name (`name`). */
export function sanitizeName(ref: string): string | undefined {
  const noDigest = ref.split('@')[0] ?? '';
  const last = noDigest.split('/').pop() ?? '';
  const repo = last.split(':')[0] ?? '';
  const name = repo
    .toLowerCase()
    .replace(/[^a-z0-9._-]+/g, '-')
    .replace(/^[^a-z0-9]+/, '')
    .slice(0, 64);
  return name === '' ? undefined : name;
}

/** A file inside the unpacked outer archive, refusing paths that escape it through symlinks. */
function blobPath(outer: string, rel: string, what: string): string {
  const parts = safeComponents(rel, what);
  const abs = path.join(outer, ...parts);
  let real: string;
  try {
    real = fs.realpathSync(abs);
  } catch {
    throw new HostileTarballError(`${what} ${JSON.stringify(rel)} is not in the archive`, rel);
  }
  const outerReal = fs.realpathSync(outer);
  if (!real.startsWith(`${outerReal}/`)) throw new HostileTarballError(`${what} ${JSON.stringify(rel)} resolves outside the archive; refusing it`, rel);
  if (!fs.lstatSync(real).isFile()) throw new HostileTarballError(`${what} ${JSON.stringify(rel)} is not a regular file`, rel);
  return real;
}

function ociBlob(outer: string, digest: unknown, what: string, verify: boolean): string {
  if (typeof digest !== 'string' || !/^sha256:[a-f0-9]{64}$/.test(digest)) throw new HostileTarballError(`${what} has a bad digest ${JSON.stringify(digest)}`, String(digest));
  const hex = digest.slice('sha256:'.length);
  const file = blobPath(outer, `blobs/sha256/${hex}`, what);
  if (verify) {
    const h = createHash('sha256');
    const fd = fs.openSync(file, 'r');
    try {
      const buf = Buffer.allocUnsafe(1 << 20);
      for (;;) {
        const n = fs.readSync(fd, buf, 0, buf.length, null);
        if (n === 0) break;
        h.update(buf.subarray(0, n));
      }
    } finally {
      fs.closeSync(fd);
    }
    if (h.digest('hex') !== hex) throw new HostileTarballError(`${what} ${digest} does not match its content`, digest);
  }
  return file;
}

function readJson(file: string, what: string): unknown {
  const st = fs.statSync(file);
  if (st.size > 16 * 1024 * 1024) throw new HostileTarballError(`${what} is too large`, what);
  try {
    return JSON.parse(fs.readFileSync(file, 'utf8'));
  } catch (err) {
    throw new HostileTarballError(`${what} is not valid JSON: ${(err as Error).message}`, what);
  }
}

function obj(v: unknown): Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v) ? (v as Record<string, unknown>) : {};
}

function strings(v: unknown): string[] | undefined {
  return Array.isArray(v) && v.every((s) => typeof s === 'string') ? v : undefined;
}

function runtimeConfig(configJson: unknown): ImageRuntimeConfig {
  const c = obj(obj(configJson).config);
  const entrypoint = strings(c.Entrypoint) ?? [];
  const cmd = strings(c.Cmd) ?? [];
  const argv = [...entrypoint, ...cmd];
  const env = strings(c.Env);
  const workdir = typeof c.WorkingDir === 'string' && c.WorkingDir !== '' ? c.WorkingDir : undefined;
  return { ...(argv.length > 0 ? { cmd: argv } : {}), ...(env ? { env } : {}), ...(workdir ? { workdir } : {}) };
}

function checkNotZstd(file: string, what: string): void {
  const fd = fs.openSync(file, 'r');
  const head = Buffer.alloc(4);
  try {
    fs.readSync(fd, head, 0, 4, 0);
  } finally {
    fs.closeSync(fd);
  }
  if (head.equals(ZSTD_MAGIC)) throw new HostileTarballError(`${what} is zstd-compressed, which this store cannot read yet; save the image uncompressed or with gzip`, what);
}

/**
 * Unpacks the archive read from `open()` into `outerDir`, then, when it is an image (it has
 * `manifest.json` or `index.json`), applies its layers in order into `rootfsDir`. A plain
 * root filesystem tarball is unpacked straight into `rootfsDir`.
 */
export async function importArchive(open: () => Readable, outerDir: string, rootfsDir: string, limits: Omit<ExtractOptions, 'devices' | 'whiteouts'>, onProgress: (msg: string) => void): Promise<{ image: ImportedImage; tree: TreeWriter }> {
  onProgress('unpacking the archive');
  const outer = new TreeWriter(outerDir, { ...limits, devices: 'reject', whiteouts: false });
  await parseTar(open(), (e) => outer.writeEntry(e), limits.signal);

  const hasManifest = fs.existsSync(path.join(outerDir, 'manifest.json'));
  const hasIndex = fs.existsSync(path.join(outerDir, 'index.json'));
  if (!hasManifest && !hasIndex) {
    // A plain rootfs: what we unpacked is the tree itself.
    fs.rmSync(rootfsDir, { recursive: true, force: true });
    fs.renameSync(outerDir, rootfsDir);
    return { image: { format: 'rootfs', config: {}, layers: 1 }, tree: outer };
  }

  let layerFiles: string[];
  let configJson: unknown;
  let suggested: string | undefined;
  let format: ImportFormat;
  if (hasManifest) {
    format = 'docker-save';
    const manifest = readJson(blobPath(outerDir, 'manifest.json', 'manifest.json'), 'manifest.json');
    const first = Array.isArray(manifest) ? obj(manifest[0]) : undefined;
    if (!first) throw new HostileTarballError('manifest.json holds no image', 'manifest.json');
    const layers = strings(first.Layers);
    if (!layers || typeof first.Config !== 'string') throw new HostileTarballError('manifest.json has no Config or Layers', 'manifest.json');
    layerFiles = layers.map((l) => blobPath(outerDir, l, 'layer'));
    configJson = readJson(blobPath(outerDir, first.Config, 'image config'), 'image config');
    const tag = strings(first.RepoTags)?.[0];
    suggested = tag ? sanitizeName(tag) : undefined;
  } else {
    format = 'oci-layout';
    let index = obj(readJson(blobPath(outerDir, 'index.json', 'index.json'), 'index.json'));
    let manifest: Record<string, unknown> | undefined;
    for (let depth = 0; depth < 4 && !manifest; depth++) {
      const list = Array.isArray(index.manifests) ? index.manifests.map(obj) : [];
      const pick = list.find((m) => {
        const p = obj(m.platform);
        return p.os === undefined || (p.os === 'linux' && (p.architecture === 'amd64' || p.architecture === undefined));
      });
      if (!pick) throw new HostileTarballError('index.json lists no linux/amd64 manifest', 'index.json');
      const ref = obj(pick.annotations)['org.opencontainers.image.ref.name'];
      if (typeof ref === 'string') suggested ??= sanitizeName(ref);
      const imageName = obj(pick.annotations)['io.containerd.image.name'];
      if (typeof imageName === 'string') suggested = sanitizeName(imageName) ?? suggested;
      const body = obj(readJson(ociBlob(outerDir, pick.digest, 'manifest', true), 'manifest'));
      if (pick.mediaType === OCI_INDEX || pick.mediaType === DOCKER_LIST || body.mediaType === OCI_INDEX || Array.isArray(body.manifests)) index = body;
      else manifest = body;
    }
    if (!manifest) throw new HostileTarballError('index.json nests indexes too deeply', 'index.json');
    const layers = Array.isArray(manifest.layers) ? manifest.layers.map(obj) : [];
    layerFiles = layers.map((l, i) => ociBlob(outerDir, l.digest, `layer ${i}`, true));
    configJson = readJson(ociBlob(outerDir, obj(manifest.config).digest, 'image config', true), 'image config');
  }

  const tree = new TreeWriter(rootfsDir, { ...limits, devices: 'reject', whiteouts: true });
  fs.mkdirSync(rootfsDir, { recursive: true });
  for (const [i, file] of layerFiles.entries()) {
    onProgress(`applying layer ${i + 1}/${layerFiles.length}`);
    checkNotZstd(file, `layer ${i + 1}`);
    await applyLayer(tree, () => fs.createReadStream(file), limits.signal);
  }
  fs.rmSync(outerDir, { recursive: true, force: true });
  return { image: { format, config: runtimeConfig(configJson), ...(suggested ? { suggestedName: suggested } : {}), layers: layerFiles.length }, tree };
}
