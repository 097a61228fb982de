/**
 * The server's side of the sandbox agent protocol (the agent is src/sandboxes/agent/agent.ts).
 *
 * One request per connection. The server sends one JSON line `{ "op": …, … }\n`.
 * - Simple ops (`ping`, `stat`, `list`, `glob`, `remove`, `move`, `chmod`, `mkdir`) answer
 *   one JSON line: `{ "ok": true, … }` or `{ "ok": false, "error": { "errno", "message" } }`.
 * - `read` and `tar-out` answer a JSON line, then raw bytes until the agent ends.
 * - `write` and `tar-in`: the server sends raw bytes after its line and half-closes; the
 *   agent answers one JSON line when everything is on disk.
 * - `connect` answers a JSON line, then the connection is a raw pipe to the port.
 * - `exec` is framed both ways: `[type u8][length u32 BE][payload]`. Agent → server:
 *   1 stdout, 2 stderr, 3 exit (JSON). Server → agent: 1 stdin, 2 end of stdin,
 *   3 resize (JSON `{rows, cols}`), 4 signal (JSON `{signal}`).
 *
 * Whatever comes from the agent is untrusted (it runs inside the sandbox next to the
 * user's code): lines and frames are bounded and parsed defensively.
 */
import type { Duplex } from 'node:stream';
import { VulcanError, type ApiErrorCode } from '../core/errors.js';

export const AGENT_FRAME = { stdout: 1, stderr: 2, exit: 3 } as const;
export const SERVER_FRAME = { stdin: 1, stdinEof: 2, resize: 3, signal: 4 } as const;

/** Longest JSON line accepted from an agent (lists of 10 000 entries fit). */
export const MAX_REPLY_LINE_BYTES = 16 * 1024 * 1024;
/** Largest frame accepted from an agent. */
export const MAX_FRAME_BYTES = 4 * 1024 * 1024;

/** An agent's answer line. */
export type AgentReply = { ok: true; [k: string]: unknown } | { ok: false; error: { errno: string; message: string } };

/** What an exec ended with. */
export interface ExecExit {
  exit_code: number | null;
  signal: string | null;
  timed_out: boolean;
  duration_ms: number;
}

export function encodeFrame(type: number, payload: Buffer | string): Buffer {
  const body = typeof payload === 'string' ? Buffer.from(payload) : payload;
  const head = Buffer.allocUnsafe(5);
  head.writeUInt8(type, 0);
  head.writeUInt32BE(body.length, 1);
  return Buffer.concat([head, body]);
}

/** Splits a byte stream into frames. */
export class FrameDecoder {
  private buf: Buffer = Buffer.alloc(0);

  push(chunk: Buffer): { type: number; body: Buffer }[] {
    this.buf = this.buf.length ? Buffer.concat([this.buf, chunk]) : chunk;
    const out: { type: number; body: Buffer }[] = [];
    while (this.buf.length >= 5) {
      const len = this.buf.readUInt32BE(1);
      if (len > MAX_FRAME_BYTES) throw new Error(`agent frame of ${len} bytes is too large`);
      if (this.buf.length < 5 + len) break;
      out.push({ type: this.buf.readUInt8(0), body: this.buf.subarray(5, 5 + len) });
      this.buf = this.buf.subarray(5 + len);
    }
    return out;
  }
}

/** Sends a request line. */
export function sendRequest(sock: Duplex, req: Record<string, unknown>): void {
  sock.write(`${JSON.stringify(req)}\n`);
}

/**
 * Reads the agent's answer line; bytes after it are put back on the stream. Rejects when
 * the connection ends first or the line is too long.
 */
export function readReply(sock: Duplex, signal?: AbortSignal): Promise<AgentReply> {
  return new Promise((resolve, reject) => {
    const parts: Buffer[] = [];
    let size = 0;
    const onData = (chunk: Buffer) => {
      const nl = chunk.indexOf(10);
      if (nl < 0) {
        parts.push(chunk);
        size += chunk.length;
        if (size > MAX_REPLY_LINE_BYTES) fail(new Error('the sandbox agent sent an over-long answer'));
        return;
      }
      parts.push(chunk.subarray(0, nl));
      cleanup();
      sock.pause();
      const rest = chunk.subarray(nl + 1);
      if (rest.length) sock.unshift(rest);
      try {
        const parsed = JSON.parse(Buffer.concat(parts).toString('utf8')) as AgentReply;
        if (typeof parsed !== 'object' || parsed === null || typeof parsed.ok !== 'boolean') throw new Error('not an answer');
        resolve(parsed);
      } catch (err) {
        reject(new Error(`the sandbox agent sent a malformed answer: ${(err as Error).message}`));
      }
    };
    const fail = (err: Error) => {
      cleanup();
      reject(err);
    };
    const onEnd = () => fail(new Error('the sandbox agent closed the connection without an answer'));
    const onAbort = () => {
      fail(signal?.reason instanceof Error ? signal.reason : new Error('aborted'));
      sock.destroy();
    };
    const cleanup = () => {
      sock.off('data', onData);
      sock.off('end', onEnd);
      sock.off('close', onEnd);
      sock.off('error', fail);
      signal?.removeEventListener('abort', onAbort);
    };
    sock.on('data', onData);
    sock.on('end', onEnd);
    sock.on('close', onEnd);
    sock.on('error', fail);
    signal?.addEventListener('abort', onAbort, { once: true });
    sock.resume();
  });
}

const ERRNO_CODES: Readonly<Record<string, ApiErrorCode>> = {
  ENOENT: 'not_found',
  ENOTDIR: 'conflict',
  EISDIR: 'conflict',
  EEXIST: 'conflict',
  ENOTEMPTY: 'conflict',
  EBUSY: 'conflict',
  EXDEV: 'conflict',
  EACCES: 'invalid_path',
  EPERM: 'invalid_path',
  EROFS: 'invalid_path',
  ELOOP: 'invalid_path',
  ENAMETOOLONG: 'invalid_path',
  ENOSPC: 'payload_too_large',
  EDQUOT: 'payload_too_large',
  EFBIG: 'payload_too_large',
  EINVAL: 'invalid_request',
  ECONNREFUSED: 'backend_unavailable',
};

/** Maps an agent's `{ errno, message }` to the API error a client can act on. */
export function agentErrorToApi(err: { errno: string; message: string }, what: string): VulcanError {
  const code = ERRNO_CODES[err.errno] ?? 'internal';
  let message = `${what}: ${err.message}`;
  if (err.errno === 'ENOSPC' || err.errno === 'EDQUOT') message = `${what}: the sandbox's disk is full (resources.disk_mb)`;
  if (err.errno === 'EACCES' || err.errno === 'EPERM' || err.errno === 'EROFS') message = `${what}: not writable or not permitted inside the sandbox (${err.errno}); only /work and /tmp are writable`;
  return new VulcanError(code, message, { details: { errno: err.errno } });
}
