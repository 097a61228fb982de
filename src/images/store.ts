/**
 * The image store: content-addressed root filesystems under `<dataDir>/images`.
 *
 * Layout:
 *   rootfs/<hex>/   an unpacked root filesystem, named by its content digest (read-only by contract)
 *   meta/<hex>.json what is known of that tree (size, runtime config, how it was made)
 *   refs/<name>.json  a name pointing at a digest
 *   tmp/            trees being built or imported; renamed into rootfs/ when complete
 * Two names with the same content share one tree. `rm` removes the name, and the tree when
 * no other name points at it.
 */
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { Readable } from 'node:stream';
import { VulcanError } from '../core/errors.js';
import type { ImageRef, ImageStore } from '../core/images.js';
import { buildBusybox, buildDebian, DEFAULT_MIRROR, type BuildRecipe } from './build.js';
import { digestTree } from './digest.js';
import { HostileTarballError, newExtractStats, type ExtractStats } from './extract.js';
import { importArchive, type ImageRuntimeConfig, type ImportFormat } from './import.js';

/** Store names: lowercase letters, digits, `.`, `_`, `-`; 1 to 64 characters. */
export const IMAGE_NAME_RE = /^[a-z0-9][a-z0-9._-]{0,63}$/;

/** How an image came to be. */
export type ImageSource =
  | { readonly kind: 'build'; readonly recipe: BuildRecipe }
  | { readonly kind: 'import'; readonly format: ImportFormat; readonly layers: number; readonly file?: string };

/** Everything the store knows of one image (`image inspect`, `GET /v1/images`). */
export interface ImageInfo extends ImageRef {
  readonly createdAt: string;
  readonly sizeBytes: number;
  readonly fileCount: number;
  readonly source: ImageSource;
  /** Entries changed to be safe on the way in (setuid bits cleared, devices skipped). */
  readonly neutralised: number;
  readonly neutralisedNotes: readonly string[];
}

/** Caps against tar bombs. */
export interface ImageLimits {
  /** Most bytes an image may unpack to. Default 8 GiB. */
  readonly maxBytes: number;
  /** Most entries. Default 1 000 000. */
  readonly maxEntries: number;
}

export const DEFAULT_IMAGE_LIMITS: ImageLimits = { maxBytes: 8 * 1024 ** 3, maxEntries: 1_000_000 };

export interface BuildOptions {
  readonly name: string;
  /** Debian packages on top of minbase; ignored for `busybox`. */
  readonly packages?: readonly string[];
  /** `busybox` builds the `minimal` kind of image; default `debian`. */
  readonly kind?: 'debian' | 'busybox';
  /** Debian suite. Default env `VULCAN_DEBIAN_SUITE`, else `bookworm`. */
  readonly suite?: string;
  /** Debian mirror. Default env `VULCAN_DEBIAN_MIRROR`, else deb.debian.org. */
  readonly mirror?: string;
  /** Progress lines for people. */
  readonly onProgress?: (msg: string) => void;
  readonly signal?: AbortSignal;
}

export interface ImportOptions {
  /** The name to store it under. Default: the name the archive carries (RepoTags). */
  readonly name?: string;
  readonly onProgress?: (msg: string) => void;
  readonly signal?: AbortSignal;
}

/** The store's full interface: the `ImageStore` backends see, plus management. */
export interface LocalImageStore extends ImageStore {
  /** `<dataDir>/images`. */
  readonly dir: string;
  resolve(name: string): Promise<ImageInfo | null>;
  /** Every image, by name. */
  list(): Promise<ImageInfo[]>;
  /** One image; throws `not_found`. */
  inspect(name: string): Promise<ImageInfo>;
  /** Removes a name (and its tree when unshared); throws `not_found`. */
  remove(name: string): Promise<void>;
  /** Builds an image and stores it under `opts.name` (replacing what the name pointed at). */
  build(opts: BuildOptions): Promise<ImageInfo>;
  /** Imports a `docker save` tarball, an OCI layout tarball or a rootfs tarball. Throws `invalid_request` for a hostile or unreadable one. */
  importTarball(source: string | (() => Readable), opts?: ImportOptions): Promise<ImageInfo>;
}

interface StoredRef {
  readonly name: string;
  readonly digest: string;
  readonly createdAt: string;
  readonly source: ImageSource;
}

interface StoredMeta {
  readonly digest: string;
  readonly sizeBytes: number;
  readonly fileCount: number;
  readonly config: ImageRuntimeConfig;
  readonly neutralised: number;
  readonly neutralisedNotes: readonly string[];
}

/** Checks an image name; throws `invalid_request` naming the field. */
export function checkImageName(name: string): void {
  if (!IMAGE_NAME_RE.test(name)) throw new VulcanError('invalid_request', `image name ${JSON.stringify(name)} must be 1-64 of a-z, 0-9, '.', '_', '-', starting with a letter or digit (name)`, { details: { field: 'name' } });
}

/** Mount points every sandbox needs, made in every image so a read-only root still works. */
const MOUNT_POINTS: readonly [string, number][] = [
  ['proc', 0o555],
  ['sys', 0o555],
  ['dev', 0o755],
  ['tmp', 0o1777],
  ['work', 0o777],
  ['vulcan', 0o755],
  // The sandbox agent bundle and the agent's socket directory (gvisor sandboxes): made
  // here so that no backend ever has to create a mount point in a shared image.
  ['.vulcan-agent', 0o755],
  ['.vulcan-run', 0o755],
];

function writeJsonAtomic(file: string, value: unknown): void {
  const tmp = `${file}.${randomBytes(4).toString('hex')}.tmp`;
  fs.writeFileSync(tmp, `${JSON.stringify(value, null, 2)}\n`);
  fs.renameSync(tmp, file);
}

function readJsonOrNull<T>(file: string): T | null {
  try {
    return JSON.parse(fs.readFileSync(file, 'utf8')) as T;
  } catch {
    return null;
  }
}

class FsImageStore implements LocalImageStore {
  readonly dir: string;

  constructor(
    dataDir: string,
    private readonly limits: ImageLimits,
  ) {
    this.dir = path.join(dataDir, 'images');
  }

  private p(...parts: string[]): string {
    return path.join(this.dir, ...parts);
  }

  private ensureLayout(): void {
    for (const d of ['rootfs', 'meta', 'refs', 'tmp']) fs.mkdirSync(this.p(d), { recursive: true, mode: 0o755 });
  }

  private info(ref: StoredRef): ImageInfo | null {
    const hex = ref.digest.replace(/^sha256:/, '');
    const meta = readJsonOrNull<StoredMeta>(this.p('meta', `${hex}.json`));
    const rootfsDir = this.p('rootfs', hex);
    if (!meta || !fs.existsSync(rootfsDir)) return null;
    return {
      name: ref.name,
      digest: ref.digest,
      rootfsDir,
      config: meta.config,
      createdAt: ref.createdAt,
      sizeBytes: meta.sizeBytes,
      fileCount: meta.fileCount,
      source: ref.source,
      neutralised: meta.neutralised,
      neutralisedNotes: meta.neutralisedNotes,
    };
  }

  resolve(name: string): Promise<ImageInfo | null> {
    if (!IMAGE_NAME_RE.test(name)) return Promise.resolve(null);
    const ref = readJsonOrNull<StoredRef>(this.p('refs', `${name}.json`));
    return Promise.resolve(ref ? this.info(ref) : null);
  }

  list(): Promise<ImageInfo[]> {
    let names: string[];
    try {
      names = fs.readdirSync(this.p('refs')).filter((f) => f.endsWith('.json'));
    } catch {
      return Promise.resolve([]);
    }
    const out: ImageInfo[] = [];
    for (const f of names.sort()) {
      const ref = readJsonOrNull<StoredRef>(this.p('refs', f));
      const info = ref ? this.info(ref) : null;
      if (info) out.push(info);
    }
    return Promise.resolve(out);
  }

  async inspect(name: string): Promise<ImageInfo> {
    const info = await this.resolve(name);
    if (!info) throw new VulcanError('not_found', `no image named ${JSON.stringify(name)}; see \`vulcan image ls\``, { details: { name } });
    return info;
  }

  async remove(name: string): Promise<void> {
    const info = await this.inspect(name);
    fs.rmSync(this.p('refs', `${name}.json`), { force: true });
    this.collect(info.digest);
  }

  /** Removes the tree of `digest` when no name points at it any more. */
  private collect(digest: string): void {
    const still = fs
      .readdirSync(this.p('refs'))
      .filter((f) => f.endsWith('.json'))
      .some((f) => readJsonOrNull<StoredRef>(this.p('refs', f))?.digest === digest);
    if (still) return;
    const hex = digest.replace(/^sha256:/, '');
    // Rename first, so a half-deleted tree is never visible under its digest.
    const doomed = this.p('tmp', `rm-${hex}-${randomBytes(4).toString('hex')}`);
    try {
      fs.renameSync(this.p('rootfs', hex), doomed);
    } catch {
      // already gone
    }
    fs.rmSync(doomed, { recursive: true, force: true });
    fs.rmSync(this.p('meta', `${hex}.json`), { force: true });
  }

  /** A fresh staging directory under tmp/. */
  private staging(): string {
    this.ensureLayout();
    const dir = this.p('tmp', `new-${Date.now()}-${randomBytes(6).toString('hex')}`);
    fs.mkdirSync(dir, { mode: 0o700 });
    return dir;
  }

  /** Adds mount points, digests the tree, moves it into rootfs/ and points `name` at it. */
  private commit(name: string, tree: string, config: ImageRuntimeConfig, source: ImageSource, stats: ExtractStats): ImageInfo {
    for (const [d, mode] of MOUNT_POINTS) {
      const abs = path.join(tree, d);
      let st: fs.Stats | undefined;
      try {
        st = fs.lstatSync(abs);
      } catch {
        st = undefined;
      }
      if (st === undefined) {
        fs.mkdirSync(abs);
        fs.chmodSync(abs, mode);
      }
    }
    fs.chmodSync(tree, 0o755);
    const summary = digestTree(tree);
    const hex = summary.digest.slice('sha256:'.length);
    const target = this.p('rootfs', hex);
    if (fs.existsSync(target)) fs.rmSync(tree, { recursive: true, force: true });
    else {
      try {
        fs.renameSync(tree, target);
      } catch (err) {
        // Another build or import of the same content won the race: keep its tree.
        const code = (err as NodeJS.ErrnoException).code;
        if (code !== 'ENOTEMPTY' && code !== 'EEXIST') throw err;
        fs.rmSync(tree, { recursive: true, force: true });
      }
    }
    const meta: StoredMeta = { digest: summary.digest, sizeBytes: summary.sizeBytes, fileCount: summary.fileCount, config, neutralised: stats.neutralised, neutralisedNotes: stats.notes };
    writeJsonAtomic(this.p('meta', `${hex}.json`), meta);
    const previous = readJsonOrNull<StoredRef>(this.p('refs', `${name}.json`));
    const ref: StoredRef = { name, digest: summary.digest, createdAt: new Date().toISOString(), source };
    writeJsonAtomic(this.p('refs', `${name}.json`), ref);
    if (previous && previous.digest !== summary.digest) this.collect(previous.digest);
    const info = this.info(ref);
    if (!info) throw new Error(`image ${name} vanished while it was stored`);
    return info;
  }

  async build(opts: BuildOptions): Promise<ImageInfo> {
    checkImageName(opts.name);
    const onProgress = opts.onProgress ?? (() => undefined);
    const recipe: BuildRecipe =
      opts.kind === 'busybox'
        ? { kind: 'busybox' }
        : {
            kind: 'debian',
            packages: [...(opts.packages ?? [])].sort(),
            suite: opts.suite ?? process.env.VULCAN_DEBIAN_SUITE ?? 'bookworm',
            mirror: opts.mirror ?? process.env.VULCAN_DEBIAN_MIRROR ?? DEFAULT_MIRROR,
          };
    const dir = this.staging();
    const root = path.join(dir, 'rootfs');
    fs.mkdirSync(root);
    try {
      let stats = newExtractStats();
      if (recipe.kind === 'busybox') {
        onProgress('copying busybox');
        await buildBusybox(root);
      } else {
        try {
          stats = (await buildDebian(recipe, root, { ...this.limits, ...(opts.signal ? { signal: opts.signal } : {}) }, onProgress)).stats;
        } catch (err) {
          if (err instanceof Error && /is not a Debian|is not an http|not a Debian suite/.test(err.message)) throw new VulcanError('invalid_request', err.message, { cause: err });
          throw err;
        }
      }
      onProgress('hashing the tree');
      const info = this.commit(opts.name, root, { env: ['PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'] }, { kind: 'build', recipe }, stats);
      onProgress(`stored ${opts.name} ${info.digest.slice(0, 19)} (${Math.round(info.sizeBytes / 2 ** 20)} MiB)`);
      return info;
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  }

  async importTarball(source: string | (() => Readable), opts: ImportOptions = {}): Promise<ImageInfo> {
    if (opts.name !== undefined) checkImageName(opts.name);
    const onProgress = opts.onProgress ?? (() => undefined);
    let open: () => Readable;
    if (typeof source === 'string') {
      if (!fs.existsSync(source)) throw new VulcanError('not_found', `no such file ${source}`, { details: { file: source } });
      open = () => fs.createReadStream(source);
    } else open = source;
    const dir = this.staging();
    try {
      const outer = path.join(dir, 'outer');
      const root = path.join(dir, 'rootfs');
      fs.mkdirSync(outer);
      let result;
      try {
        result = await importArchive(open, outer, root, { ...this.limits, ...(opts.signal ? { signal: opts.signal } : {}) }, onProgress);
      } catch (err) {
        if (err instanceof HostileTarballError) {
          throw new VulcanError('invalid_request', `refused the image tarball: ${err.message}`, { details: { entry: err.entry }, cause: err });
        }
        throw err;
      }
      const name = opts.name ?? result.image.suggestedName;
      if (name === undefined) throw new VulcanError('invalid_request', 'the archive carries no image name; give one (name, --name)', { details: { field: 'name' } });
      checkImageName(name);
      onProgress('hashing the tree');
      const info = this.commit(name, root, result.image.config, { kind: 'import', format: result.image.format, layers: result.image.layers, ...(typeof source === 'string' ? { file: path.resolve(source) } : {}) }, result.tree.stats);
      onProgress(`stored ${name} ${info.digest.slice(0, 19)} (${Math.round(info.sizeBytes / 2 ** 20)} MiB)`);
      return info;
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  }
}

/**
 * Creates the image store of a data directory (`<dataDir>/images`). Cheap: nothing is read
 * until asked.
 */
export function createImageStore(dataDir: string, limits: ImageLimits = DEFAULT_IMAGE_LIMITS): LocalImageStore {
  return new FsImageStore(dataDir, limits);
}

/** A Readable from bytes, for imports from memory (HTTP uploads, tests). */
export function bufferSource(data: Buffer): () => Readable {
  return () => Readable.from([data]);
}
