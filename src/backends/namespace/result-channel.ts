/**
 * The runners' result channel: JSON lines on fd 3, `{"t":"ready"}` then one
 * `{"t":"result","output":…}` or `{"t":"error","code":…,"message":…}`. The sandbox writes
 * it, so it is read as hostile: bounded in size, every message checked.
 */
import type { Readable } from 'node:stream';
import { WORKLOAD_ERROR_CODES, type WorkloadErrorCode } from '../../core/errors.js';

export type RunnerMessage =
  | { readonly t: 'ready' }
  | { readonly t: 'result'; readonly output: unknown }
  | { readonly t: 'error'; readonly code: WorkloadErrorCode; readonly message: string };

/** Error codes a runner may report; anything else becomes `exception`. */
const RUNNER_CODES: ReadonlySet<string> = new Set<WorkloadErrorCode>(['exception', 'memory_limit', 'pids_limit', 'disk_limit', 'output_invalid']);
const MAX_MESSAGE_CHARS = 4096;

/** Checks one parsed line; throws on anything that is not a runner message. */
export function parseRunnerMessage(line: string): RunnerMessage {
  const v: unknown = JSON.parse(line);
  if (typeof v !== 'object' || v === null || !('t' in v)) throw new Error('malformed result message');
  const m = v as Record<string, unknown>;
  if (m.t === 'ready') return { t: 'ready' };
  if (m.t === 'result') return { t: 'result', output: m.output ?? null };
  if (m.t === 'error') {
    const code = typeof m.code === 'string' && RUNNER_CODES.has(m.code) && (WORKLOAD_ERROR_CODES as readonly string[]).includes(m.code) ? (m.code as WorkloadErrorCode) : 'exception';
    const message = typeof m.message === 'string' ? m.message.slice(0, MAX_MESSAGE_CHARS) : 'the code failed';
    return { t: 'error', code, message };
  }
  throw new Error('unknown result message');
}

/**
 * Reads `stream` to its end, calling `onMessage` per line. Rejects when the total passes
 * `maxBytes` (the stream is destroyed) or a line is not a runner message.
 */
export function readResultChannel(stream: Readable, maxBytes: number, onMessage: (m: RunnerMessage) => void): Promise<void> {
  return new Promise((resolve, reject) => {
    let total = 0;
    let buf = '';
    let failed = false;
    const fail = (err: Error) => {
      if (failed) return;
      failed = true;
      stream.destroy();
      reject(err);
    };
    stream.setEncoding('utf8');
    stream.on('data', (chunk: string) => {
      if (failed) return;
      total += Buffer.byteLength(chunk);
      if (total > maxBytes) return fail(new Error(`the result is larger than ${maxBytes} bytes`));
      buf += chunk;
      let nl: number;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        if (line.trim() === '') continue;
        try {
          onMessage(parseRunnerMessage(line));
        } catch (err) {
          return fail(new Error(`the runner sent a bad result: ${(err as Error).message}`));
        }
      }
    });
    stream.on('error', (err) => fail(err));
    stream.on('end', () => {
      if (!failed) resolve();
    });
    stream.on('close', () => {
      if (!failed) resolve();
    });
  });
}
