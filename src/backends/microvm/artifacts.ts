/**
 * The files a microVM boots from: the guest kernel, the initramfs with the agent, and one
 * read-only erofs disk per root filesystem, converted once from the image store and cached
 * by digest.
 */
import { execFile } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import type { ImageRef } from '../../core/images.js';

const run = promisify(execFile);

/** What guest/build.sh produced (its manifest.json), with absolute paths. */
export interface GuestArtifacts {
  readonly dir: string;
  readonly buildId: string;
  readonly kernelVersion: string;
  readonly kernelPath: string;
  readonly initramfsPath: string;
  /** A busybox erofs, used for `sh` when the image store has no `minimal` image. */
  readonly minimalRootfsPath: string;
}

interface Manifest {
  buildId: string;
  kernelVersion: string;
  kernel: string;
  initramfs: string;
  minimalRootfs: string;
}

function isManifest(v: unknown): v is Manifest {
  if (typeof v !== 'object' || v === null) return false;
  const m = v as Record<string, unknown>;
  return ['buildId', 'kernelVersion', 'kernel', 'initramfs', 'minimalRootfs'].every((k) => typeof m[k] === 'string');
}

/**
 * Builds (or finds up to date) the guest artifacts in the first writable directory of
 * `dirs`, by running guest/build.sh, which is idempotent. Throws with what to install.
 */
export async function ensureGuestArtifacts(installDir: string, dirs: readonly string[]): Promise<GuestArtifacts> {
  const script = path.join(installDir, 'guest', 'build.sh');
  const errors: string[] = [];
  for (const dir of dirs) {
    try {
      await fs.promises.mkdir(dir, { recursive: true });
      await run('bash', [script, dir], { timeout: 300_000, maxBuffer: 4 * 1024 * 1024 });
      const manifest: unknown = JSON.parse(await fs.promises.readFile(path.join(dir, 'manifest.json'), 'utf8'));
      if (!isManifest(manifest)) throw new Error(`${dir}/manifest.json is malformed`);
      return {
        dir,
        buildId: manifest.buildId,
        kernelVersion: manifest.kernelVersion,
        kernelPath: path.join(dir, manifest.kernel),
        initramfsPath: path.join(dir, manifest.initramfs),
        minimalRootfsPath: path.join(dir, manifest.minimalRootfs),
      };
    } catch (err) {
      const e = err as { stderr?: string; message?: string };
      errors.push(`${dir}: ${(e.stderr ?? '').trim() || e.message}`);
    }
  }
  throw new Error(`cannot build the microVM guest artifacts (run scripts/setup.d/40-microvm.sh as root): ${errors.join('; ')}`);
}

/** The hex part of a `sha256:<hex>` digest, checked so it is safe in a file name. */
function digestHex(digest: string): string {
  const m = /^sha256:([0-9a-f]{16,64})$/.exec(digest);
  if (!m?.[1]) throw new Error(`image digest ${JSON.stringify(digest)} is not sha256:<hex>`);
  return m[1];
}

/**
 * Converts images to erofs disks, once per digest. Concurrent requests for one digest share
 * a single conversion; a half-written disk is never used (write to a temp name, rename).
 */
export class RootfsCache {
  readonly #dir: string;
  readonly #pending = new Map<string, Promise<string>>();

  constructor(dir: string) {
    this.#dir = dir;
  }

  /** The erofs disk for `image`, building it when it is not cached yet. */
  disk(image: ImageRef): Promise<string> {
    const hex = digestHex(image.digest);
    let p = this.#pending.get(hex);
    if (!p) {
      p = this.#build(hex, image.rootfsDir);
      this.#pending.set(hex, p);
      p.catch(() => this.#pending.delete(hex));
    }
    return p;
  }

  async #build(hex: string, rootfsDir: string): Promise<string> {
    const out = path.join(this.#dir, `${hex}.erofs`);
    if (fs.existsSync(out)) return out;
    await fs.promises.mkdir(this.#dir, { recursive: true });
    const tmp = `${out}.${crypto.randomBytes(4).toString('hex')}.tmp`;
    try {
      // -T0: reproducible timestamps. Ownership is kept as the store unpacked it.
      await run('mkfs.erofs', ['--quiet', '-T0', tmp, rootfsDir], { timeout: 600_000 });
      await fs.promises.rename(tmp, out);
    } catch (err) {
      await fs.promises.rm(tmp, { force: true });
      throw new Error(`cannot convert ${rootfsDir} to an erofs disk: ${(err as Error).message}`, { cause: err });
    }
    return out;
  }
}
