/**
 * Hand-built tarballs for tests, including hostile ones that a normal tar tool refuses to
 * write (`../` names, absolute symlinks, device nodes).
 */
import zlib from 'node:zlib';

export interface RawEntry {
  name: string;
  /** '0' file, '2' symlink, '1' hardlink, '5' directory, '3' char device. Default '0'. */
  type?: '0' | '1' | '2' | '3' | '5';
  body?: string;
  linkname?: string;
  mode?: number;
}

function header(e: RawEntry, size: number): Buffer {
  const h = Buffer.alloc(512);
  const put = (s: string, off: number, len: number) => h.write(s, off, Math.min(len, Buffer.byteLength(s)), 'utf8');
  const oct = (n: number, len: number) => n.toString(8).padStart(len - 1, '0') + '\0';
  put(e.name, 0, 100);
  put(oct(e.mode ?? 0o644, 8), 100, 8);
  put(oct(0, 8), 108, 8);
  put(oct(0, 8), 116, 8);
  put(oct(size, 12), 124, 12);
  put(oct(Math.floor(Date.now() / 1000), 12), 136, 12);
  h.fill(' ', 148, 156);
  put(e.type ?? '0', 156, 1);
  put(e.linkname ?? '', 157, 100);
  put('ustar\0', 257, 6);
  put('00', 263, 2);
  let sum = 0;
  for (const b of h) sum += b;
  put(sum.toString(8).padStart(6, '0') + '\0 ', 148, 8);
  return h;
}

/** A gzip'd tar of exactly these entries. */
export function rawTarGz(entries: readonly RawEntry[]): Buffer {
  const parts: Buffer[] = [];
  for (const e of entries) {
    const body = Buffer.from(e.type === undefined || e.type === '0' ? (e.body ?? '') : '');
    parts.push(header(e, body.length), body, Buffer.alloc((512 - (body.length % 512)) % 512));
  }
  parts.push(Buffer.alloc(1024));
  return zlib.gzipSync(Buffer.concat(parts));
}
