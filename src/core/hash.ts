/**
 * sha256 as hex. Node's one-shot `crypto.hash` (20.12 and newer) costs a third of a
 * `createHash` object per call, and the API hashes every request's input; older Nodes take the
 * object.
 */
import crypto from 'node:crypto';

export const sha256 =
  typeof crypto.hash === 'function'
    ? (data: string | Uint8Array): string => crypto.hash('sha256', data, 'hex')
    : (data: string | Uint8Array): string => crypto.createHash('sha256').update(data).digest('hex');
