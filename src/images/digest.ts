/**
 * The content digest of an unpacked root filesystem: a sha256 over a canonical listing of
 * every entry (path, type, mode, owner, and the sha256 of a file's bytes or a link's
 * target), sorted by path. Timestamps are left out, so the same content always has the
 * same digest however it was made.
 */
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';

export interface TreeSummary {
  /** `sha256:<hex>`. */
  readonly digest: string;
  /** Bytes of regular-file content (hardlinked files counted once per name). */
  readonly sizeBytes: number;
  readonly fileCount: number;
}

function hashFile(abs: string): string {
  const h = createHash('sha256');
  const fd = fs.openSync(abs, fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW);
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
  return h.digest('hex');
}

/** Walks `root` (never following symlinks) and returns its digest and size. */
export function digestTree(root: string): TreeSummary {
  const h = createHash('sha256');
  let sizeBytes = 0;
  let fileCount = 0;
  const walk = (rel: string) => {
    const names = fs.readdirSync(path.join(root, rel)).sort();
    for (const name of names) {
      const r = rel === '' ? name : `${rel}/${name}`;
      const abs = path.join(root, r);
      const st = fs.lstatSync(abs);
      const head = `${r}\0${(st.mode & 0o7777).toString(8)}\0${st.uid}\0${st.gid}\0`;
      if (st.isDirectory()) {
        h.update(`d\0${head}\n`);
        walk(r);
      } else if (st.isSymbolicLink()) {
        h.update(`l\0${head}${fs.readlinkSync(abs)}\n`);
      } else if (st.isFile()) {
        h.update(`f\0${head}${hashFile(abs)}\n`);
        sizeBytes += st.size;
        fileCount++;
      } else {
        h.update(`o\0${head}\n`);
      }
    }
  };
  walk('');
  return { digest: `sha256:${h.digest('hex')}`, sizeBytes, fileCount };
}
