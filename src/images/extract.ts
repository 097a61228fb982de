/**
 * Hostile-tarball-safe extraction of root filesystem layers.
 *
 * Every tarball is treated as hostile, whoever made it. The rules:
 * - an entry with an absolute path or a `..` component is refused (the whole import fails);
 * - nothing is ever written through a symlink: every parent of an entry must be a real
 *   directory inside the tree, or the import fails;
 * - a hardlink must name a regular file already inside the tree, reached without symlinks;
 * - symlink targets are kept as they are: they resolve inside the sandbox's own root, and
 *   the store never follows them;
 * - device nodes are refused (`devices: 'reject'`, imports) or skipped (`'skip'`, Debian
 *   builds, whose /dev is replaced by the sandbox's own); FIFOs and sockets are skipped;
 * - setuid and setgid bits are cleared (counted in `ExtractStats.neutralised`);
 * - the total size and the number of entries are capped (against tar bombs).
 * Layers of an image apply in order with OCI/AUFS whiteouts (`.wh.NAME`, `.wh..wh..opq`).
 */
import fs from 'node:fs';
import path from 'node:path';
import type { Readable } from 'node:stream';
import { Parser, type ReadEntry } from 'tar';

/** Why a tarball was refused. The message names the entry and the rule. */
export class HostileTarballError extends Error {
  constructor(
    message: string,
    readonly entry: string,
  ) {
    super(message);
    this.name = 'HostileTarballError';
  }
}

export interface ExtractOptions {
  /** What to do with character and block devices. */
  readonly devices: 'reject' | 'skip';
  /** Honour whiteout entries (image layers). Default true. */
  readonly whiteouts?: boolean;
  /** Most bytes of file content, summed over everything extracted into this tree. */
  readonly maxBytes: number;
  /** Most entries, summed likewise. */
  readonly maxEntries: number;
  readonly signal?: AbortSignal;
}

/** What an extraction did; shared across the layers of one image. */
export interface ExtractStats {
  bytes: number;
  entries: number;
  /** Entries changed to be safe: setuid/setgid bits cleared, devices/FIFOs skipped. */
  neutralised: number;
  /** The first few neutralised entries, for the report. */
  notes: string[];
}

export function newExtractStats(): ExtractStats {
  return { bytes: 0, entries: 0, neutralised: 0, notes: [] };
}

const WHITEOUT_PREFIX = '.wh.';
const OPAQUE = '.wh..wh..opq';
const MAX_NOTES = 20;

/** Splits a tar path into checked components; throws on absolute paths and `..`. */
export function safeComponents(raw: string, what = 'entry'): string[] {
  if (raw.includes('\0')) throw new HostileTarballError(`${what} ${JSON.stringify(raw)} contains a NUL byte`, raw);
  if (raw.startsWith('/')) throw new HostileTarballError(`${what} ${JSON.stringify(raw)} has an absolute path; refusing the tarball`, raw);
  const parts = raw.split('/').filter((p) => p !== '' && p !== '.');
  if (parts.includes('..')) throw new HostileTarballError(`${what} ${JSON.stringify(raw)} climbs out of the tree with '..'; refusing the tarball`, raw);
  return parts;
}

/**
 * One root filesystem being assembled in `root`, a fresh directory that only this process
 * writes to. Tracks which directories are known to be real, so that checks stay cheap.
 */
export class TreeWriter {
  private readonly realDirs = new Set<string>(['']);

  constructor(
    readonly root: string,
    readonly opts: ExtractOptions,
    readonly stats: ExtractStats = newExtractStats(),
  ) {}

  private note(msg: string): void {
    this.stats.neutralised++;
    if (this.stats.notes.length < MAX_NOTES) this.stats.notes.push(msg);
  }

  private forget(rel: string): void {
    this.realDirs.delete(rel);
    const prefix = `${rel}/`;
    for (const d of this.realDirs) if (d.startsWith(prefix)) this.realDirs.delete(d);
  }

  /** Makes sure every parent of `parts` is a real directory (creating missing ones); never follows a symlink. */
  private ensureParents(parts: readonly string[], raw: string): string {
    let rel = '';
    for (let i = 0; i < parts.length - 1; i++) {
      rel = rel === '' ? (parts[i] as string) : `${rel}/${parts[i] as string}`;
      if (this.realDirs.has(rel)) continue;
      const abs = path.join(this.root, rel);
      let st: fs.Stats | undefined;
      try {
        st = fs.lstatSync(abs);
      } catch {
        st = undefined;
      }
      if (st === undefined) fs.mkdirSync(abs, { mode: 0o755 });
      else if (st.isSymbolicLink()) throw new HostileTarballError(`entry ${JSON.stringify(raw)} would be written through the symlink ${JSON.stringify(rel)}; refusing the tarball`, raw);
      else if (!st.isDirectory()) throw new HostileTarballError(`entry ${JSON.stringify(raw)} has a parent ${JSON.stringify(rel)} that is not a directory`, raw);
      this.realDirs.add(rel);
    }
    return path.join(this.root, ...parts);
  }

  /** Removes whatever is at `abs` (any type), without following symlinks. */
  private removeAt(abs: string, rel: string): void {
    let st: fs.Stats;
    try {
      st = fs.lstatSync(abs);
    } catch {
      return;
    }
    if (st.isDirectory()) {
      fs.rmSync(abs, { recursive: true, force: true });
      this.forget(rel);
    } else fs.unlinkSync(abs);
  }

  /** Applies one whiteout entry (pass 1 of a layer). */
  applyWhiteout(raw: string): void {
    const parts = safeComponents(raw);
    const base = parts[parts.length - 1];
    if (base === undefined || !base.startsWith(WHITEOUT_PREFIX)) return;
    let parentAbs: string;
    try {
      parentAbs = this.ensureParents(parts, raw);
    } catch (err) {
      if (err instanceof HostileTarballError) throw err;
      return;
    }
    parentAbs = path.dirname(parentAbs);
    const parentRel = parts.slice(0, -1).join('/');
    if (base === OPAQUE) {
      for (const child of fs.readdirSync(parentAbs)) this.removeAt(path.join(parentAbs, child), parentRel === '' ? child : `${parentRel}/${child}`);
      return;
    }
    const name = base.slice(WHITEOUT_PREFIX.length);
    if (name === '' || name === '.' || name === '..') throw new HostileTarballError(`whiteout ${JSON.stringify(raw)} names nothing`, raw);
    this.removeAt(path.join(parentAbs, name), parentRel === '' ? name : `${parentRel}/${name}`);
  }

  private countEntry(raw: string, size: number): void {
    this.stats.entries++;
    this.stats.bytes += size;
    if (this.stats.entries > this.opts.maxEntries) throw new HostileTarballError(`the tarball has more than ${this.opts.maxEntries} entries`, raw);
    if (this.stats.bytes > this.opts.maxBytes) throw new HostileTarballError(`the tarball unpacks to more than ${Math.round(this.opts.maxBytes / 2 ** 20)} MiB`, raw);
  }

  private safeMode(raw: string, mode: number): number {
    let m = mode & 0o7777;
    if (m & 0o6000) {
      m &= ~0o6000;
      this.note(`${raw}: cleared setuid/setgid`);
    }
    return m;
  }

  /**
   * Writes one entry (pass 2 of a layer). Synchronous on purpose: the parser emits entries
   * and their data in order, and sync handlers keep that order without a queue.
   */
  writeEntry(entry: ReadEntry): void {
    const raw = entry.path;
    const parts = safeComponents(raw);
    const base = parts[parts.length - 1];
    if (base === undefined) {
      // The root itself ("./"): nothing to create.
      entry.resume();
      return;
    }
    if (this.opts.whiteouts !== false && base.startsWith(WHITEOUT_PREFIX)) {
      entry.resume();
      return;
    }
    const rel = parts.join('/');
    const size = entry.size ?? 0;
    this.countEntry(raw, entry.type === 'File' || entry.type === 'OldFile' || entry.type === 'ContiguousFile' ? size : 0);
    const abs = this.ensureParents(parts, raw);
    const uid = entry.uid ?? 0;
    const gid = entry.gid ?? 0;
    const mode = this.safeMode(raw, entry.mode ?? 0o644);
    switch (entry.type) {
      case 'Directory': {
        let st: fs.Stats | undefined;
        try {
          st = fs.lstatSync(abs);
        } catch {
          st = undefined;
        }
        if (st && !st.isDirectory()) {
          fs.unlinkSync(abs);
          st = undefined;
        }
        if (!st) fs.mkdirSync(abs, { mode: 0o700 });
        fs.chownSync(abs, uid, gid);
        fs.chmodSync(abs, mode);
        this.realDirs.add(rel);
        entry.resume();
        return;
      }
      case 'File':
      case 'OldFile':
      case 'ContiguousFile': {
        this.removeAt(abs, rel);
        const fd = fs.openSync(abs, fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_EXCL | fs.constants.O_NOFOLLOW, 0o600);
        let open = true;
        const close = () => {
          if (!open) return;
          open = false;
          fs.fchownSync(fd, uid, gid);
          fs.fchmodSync(fd, mode);
          fs.closeSync(fd);
        };
        entry.on('data', (chunk: Buffer) => {
          let off = 0;
          while (off < chunk.length) off += fs.writeSync(fd, chunk, off);
        });
        entry.on('end', () => {
          close();
          if (entry.mtime) fs.utimesSync(abs, entry.mtime, entry.mtime);
        });
        entry.on('error', () => {
          if (open) {
            open = false;
            fs.closeSync(fd);
          }
        });
        return;
      }
      case 'SymbolicLink': {
        const target = entry.linkpath ?? '';
        if (target === '' || target.includes('\0')) throw new HostileTarballError(`symlink ${JSON.stringify(raw)} has an empty or invalid target`, raw);
        this.removeAt(abs, rel);
        fs.symlinkSync(target, abs);
        fs.lchownSync(abs, uid, gid);
        entry.resume();
        return;
      }
      case 'Link': {
        const linkRaw = entry.linkpath ?? '';
        const targetParts = safeComponents(linkRaw, 'hardlink target');
        if (targetParts.length === 0) throw new HostileTarballError(`hardlink ${JSON.stringify(raw)} points at the root`, raw);
        const targetAbs = this.ensureParentsExisting(targetParts, raw);
        let st: fs.Stats;
        try {
          st = fs.lstatSync(targetAbs);
        } catch {
          throw new HostileTarballError(`hardlink ${JSON.stringify(raw)} points at ${JSON.stringify(linkRaw)}, which is not in the tree`, raw);
        }
        if (!st.isFile()) throw new HostileTarballError(`hardlink ${JSON.stringify(raw)} points at ${JSON.stringify(linkRaw)}, which is not a regular file`, raw);
        if (targetAbs === abs) {
          entry.resume();
          return;
        }
        this.removeAt(abs, rel);
        fs.linkSync(targetAbs, abs);
        entry.resume();
        return;
      }
      case 'CharacterDevice':
      case 'BlockDevice': {
        if (this.opts.devices === 'reject') throw new HostileTarballError(`entry ${JSON.stringify(raw)} is a device node; images may not carry devices`, raw);
        this.note(`${raw}: skipped device node`);
        entry.resume();
        return;
      }
      case 'FIFO': {
        this.note(`${raw}: skipped FIFO`);
        entry.resume();
        return;
      }
      default:
        throw new HostileTarballError(`entry ${JSON.stringify(raw)} has an unsupported type ${entry.type}`, raw);
    }
  }

  /** Like ensureParents, but for a path that must already exist: creates nothing. */
  private ensureParentsExisting(parts: readonly string[], raw: string): string {
    let rel = '';
    for (let i = 0; i < parts.length - 1; i++) {
      rel = rel === '' ? (parts[i] as string) : `${rel}/${parts[i] as string}`;
      if (this.realDirs.has(rel)) continue;
      let st: fs.Stats;
      try {
        st = fs.lstatSync(path.join(this.root, rel));
      } catch {
        throw new HostileTarballError(`hardlink in ${JSON.stringify(raw)} points at a path that is not in the tree`, raw);
      }
      if (!st.isDirectory()) throw new HostileTarballError(`hardlink ${JSON.stringify(raw)} points through ${JSON.stringify(rel)}, which is not a real directory; refusing the tarball`, raw);
      this.realDirs.add(rel);
    }
    return path.join(this.root, ...parts);
  }
}

/**
 * Streams `input` (a tar, gzip'd or not) through tar's parser, calling `onEntry` per entry
 * in order. Rejects with the first error thrown by `onEntry`, or the parser's.
 */
export function parseTar(input: Readable, onEntry: (entry: ReadEntry) => void, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    let failed = false;
    const parser = new Parser({ strict: true });
    const fail = (err: unknown) => {
      if (failed) return;
      failed = true;
      input.unpipe(parser);
      input.destroy();
      reject(err instanceof Error ? err : new Error(String(err)));
    };
    const onAbort = () => fail(signal?.reason ?? new Error('aborted'));
    if (signal?.aborted) return onAbort();
    signal?.addEventListener('abort', onAbort, { once: true });
    parser.on('entry', (entry: ReadEntry) => {
      if (failed) {
        entry.resume();
        return;
      }
      try {
        onEntry(entry);
      } catch (err) {
        entry.resume();
        fail(err);
      }
    });
    parser.on('error', (err: Error) => fail(new HostileTarballError(`not a readable tar archive: ${err.message}`, '')));
    parser.on('warn', (code: string, message: string | Error) => {
      // strict: true turns most warnings into errors; anything left is a corrupt archive.
      fail(new HostileTarballError(`not a readable tar archive: ${code} ${message instanceof Error ? message.message : message}`, ''));
    });
    input.on('error', fail);
    parser.on('end', () => {
      signal?.removeEventListener('abort', onAbort);
      if (!failed) resolve();
    });
    input.pipe(parser);
  });
}

/** Applies one layer file to `tree`: whiteouts first (they only hide lower layers), then entries. */
export async function applyLayer(tree: TreeWriter, open: () => Readable, signal?: AbortSignal): Promise<void> {
  if (tree.opts.whiteouts !== false) {
    await parseTar(
      open(),
      (entry) => {
        const base = path.posix.basename(entry.path.replace(/\/+$/, ''));
        if (base.startsWith(WHITEOUT_PREFIX)) tree.applyWhiteout(entry.path.replace(/\/+$/, ''));
        entry.resume();
      },
      signal,
    );
  }
  await parseTar(open(), (entry) => tree.writeEntry(entry), signal);
}
