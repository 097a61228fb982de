/**
 * Checks of the paths and modes a user gives the files API. Paths are absolute inside the
 * sandbox; `..` is resolved lexically against the sandbox's root (it can never climb above
 * `/`), and the agent then resolves symlinks inside the sandbox's own mount namespace, so no
 * spelling reaches a host file. What cannot be a sandbox path is refused with 400
 * `invalid_path`.
 */
import path from 'node:path';
import { VulcanError } from '../core/errors.js';

/** Longest path accepted (Linux PATH_MAX). */
export const MAX_PATH_BYTES = 4096;

/** The normalised sandbox path for `raw`, or a 400 `invalid_path` naming `field`. */
export function sandboxPath(raw: unknown, field = 'path'): string {
  if (typeof raw !== 'string' || raw.length === 0) throw new VulcanError('invalid_path', `${field} is required: an absolute path inside the sandbox, e.g. /work/file.txt`, { details: { field } });
  if (raw.includes('\0')) throw new VulcanError('invalid_path', `${field} contains a NUL byte`, { details: { field } });
  if (Buffer.byteLength(raw) > MAX_PATH_BYTES) throw new VulcanError('invalid_path', `${field} is longer than ${MAX_PATH_BYTES} bytes`, { details: { field } });
  if (!raw.startsWith('/')) throw new VulcanError('invalid_path', `${field} must be absolute inside the sandbox (start with /); got ${JSON.stringify(raw.slice(0, 200))}`, { details: { field } });
  // posix.normalize resolves `.` and `..`; a leading `/..` stays at `/`.
  const p = path.posix.normalize(raw);
  return p.length > 1 && p.endsWith('/') ? p.slice(0, -1) : p;
}

/**
 * A file mode from the API: a number (e.g. 420) or an octal string ("644", "0755").
 * Setuid, setgid and sticky bits are refused: they cannot be set through the API.
 */
export function fileMode(raw: unknown, field = 'mode'): number {
  let n: number;
  if (typeof raw === 'number') n = raw;
  else if (typeof raw === 'string' && /^0?o?[0-7]{1,4}$/.test(raw)) n = parseInt(raw.replace(/^0?o?/, '') || '0', 8);
  else throw new VulcanError('invalid_request', `${field} must be an octal string such as "644" or a number; got ${JSON.stringify(raw)}`, { details: { field } });
  if (!Number.isInteger(n) || n < 0 || n > 0o7777) throw new VulcanError('invalid_request', `${field} must be 0 to 0777`, { details: { field } });
  if (n & 0o7000) throw new VulcanError('invalid_request', `${field} may not set the setuid, setgid or sticky bits; use permissions up to 0777`, { details: { field } });
  return n;
}
