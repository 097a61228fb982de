/**
 * Checks a workload's `code_archive` (a gzip'd tar) before anything runs: every entry
 * stays inside the archive's root (no absolute paths, no `..`, no symlink or hardlink that
 * points out), only files, directories and links, no setuid bits, a bounded unpacked size,
 * and the entrypoint is a regular file in it.
 */
import path from 'node:path';
import { Parser, type ReadEntry } from 'tar';
import { VulcanError } from '../core/errors.js';

const ALLOWED_TYPES = new Set(['File', 'OldFile', 'ContiguousFile', 'Directory', 'SymbolicLink', 'Link']);

function bad(message: string, entry?: string): never {
  throw new VulcanError('invalid_request', `code_archive: ${message}`, { details: { field: 'code_archive', ...(entry === undefined ? {} : { entry }) } });
}

/** A path inside the archive's root, or null when it escapes. */
function inside(p: string): string | null {
  if (p.startsWith('/') || p.includes('\0')) return null;
  const n = path.posix.normalize(p);
  if (n === '..' || n.startsWith('../')) return null;
  return n.replace(/\/$/, '');
}

/**
 * Validates `tarGz` and returns the normalised entrypoint. Throws `invalid_request` (400)
 * naming the offending entry.
 */
export async function checkArchive(tarGz: Buffer, entrypoint: string, maxUnpackedBytes: number): Promise<string> {
  const entry = inside(entrypoint);
  if (entry === null || entry === '' || entry === '.') bad(`entrypoint ${JSON.stringify(entrypoint)} must be a relative path inside the archive`);
  const files = new Set<string>();
  let total = 0;
  await new Promise<void>((resolve, reject) => {
    const parser = new Parser({
      strict: true,
      onReadEntry: (e: ReadEntry) => {
        try {
          const name = inside(e.path);
          if (name === null) bad(`entry ${JSON.stringify(e.path)} points outside the archive`, e.path);
          if (!ALLOWED_TYPES.has(e.type)) bad(`entry ${JSON.stringify(e.path)} is a ${e.type}; only files, directories and links are allowed`, e.path);
          if (e.mode !== undefined && (e.mode & 0o6000) !== 0) bad(`entry ${JSON.stringify(e.path)} has a setuid or setgid bit`, e.path);
          if (e.type === 'SymbolicLink') {
            const target = e.linkpath ?? '';
            if (target.startsWith('/') || inside(path.posix.join(path.posix.dirname(name), target)) === null) {
              bad(`symlink ${JSON.stringify(e.path)} -> ${JSON.stringify(target)} points outside the archive`, e.path);
            }
          }
          if (e.type === 'Link' && inside(e.linkpath ?? '') === null) bad(`hardlink ${JSON.stringify(e.path)} points outside the archive`, e.path);
          total += e.size ?? 0;
          if (total > maxUnpackedBytes) bad(`unpacks to more than ${maxUnpackedBytes} bytes`);
          if (e.type === 'File' || e.type === 'OldFile' || e.type === 'ContiguousFile') files.add(name);
        } catch (err) {
          const e = err instanceof Error ? err : new Error(String(err));
          reject(e);
          parser.abort(e);
        }
        e.resume();
      },
    });
    parser.on('error', (err: Error) => reject(err instanceof VulcanError ? err : new VulcanError('invalid_request', `code_archive is not a valid tar.gz: ${err.message}`, { details: { field: 'code_archive' } })));
    parser.on('end', () => resolve());
    parser.end(tarGz);
  });
  if (!files.has(entry)) bad(`entrypoint ${JSON.stringify(entrypoint)} is not a file in the archive`);
  return entry;
}
