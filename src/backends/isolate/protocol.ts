/**
 * The wire protocol between the isolate backend (in the API server) and an isolate host
 * (a child process that runs V8 isolates). Messages are JSON text, each framed by a 4-byte
 * big-endian length, over the host's stdin (requests) and stdout (replies). JSON rather than V8's
 * serialiser: every field is a string, number or boolean but a wasm job's bytes (sent as base64),
 * and `JSON.stringify`/`JSON.parse` cost ≈ 3 µs a frame where `v8.serialize`/`deserialize` cost
 * 4–6 µs — on both sides of every run. Frames
 * rather than Node's IPC channel because they pass through any wrapper (bwrap, cgroups)
 * without depending on inherited descriptor numbers or environment variables.
 */
import type { WorkloadErrorCode } from '../../core/errors.js';

/** One job: code already transpiled and checked by the server side. */
export interface HostJob {
  /** `module` (ESM with `export default`), `script` (CommonJS-style `module.exports`), or `wasm`. */
  readonly format: 'module' | 'script' | 'wasm';
  /** JavaScript source, for `module` and `script`. */
  readonly source?: string;
  /** The module bytes, for `wasm`. */
  readonly wasm?: Uint8Array;
  /** sha256 of what runs; keys the code cache and the warm isolates. */
  readonly codeHash: string;
  /** The input as JSON text; parsed inside the isolate. */
  readonly inputJson: string;
  /** Per-isolate memory cap in MiB (V8 heap plus ArrayBuffers plus Wasm memories). */
  readonly memMB: number;
  /** Wall-clock budget in ms; the host also enforces it, independently of the server. */
  readonly timeoutMs: number;
  /** Per-stream output cap in bytes; the host stops forwarding past it (plus one chunk). */
  readonly outputBytes: number;
  /** Name shown in stack traces. */
  readonly filename: string;
}

/** What came of one job, as the host saw it. */
export type HostResult =
  | {
      readonly ok: true;
      readonly outputJson?: string;
      readonly startMs: number;
      readonly execMs: number;
      readonly reused: boolean;
      /** True when the run had a hardened context (SES lockdown, reset between runs) rather than a fresh one. */
      readonly hardened?: boolean;
      /** True when the run was made synchronously on the host's thread (host/main.ts SYNC_SLICE_MS). */
      readonly sync?: boolean;
    }
  | {
      readonly ok: false;
      readonly code: WorkloadErrorCode;
      readonly message: string;
      /** The error's stack, for stderr. */
      readonly stack?: string;
      readonly startMs: number;
      readonly execMs: number;
      readonly reused: boolean;
      readonly hardened?: boolean;
    };

/** Server → host. */
export type ToHost =
  | { readonly t: 'run'; readonly id: number; readonly job: HostJob }
  /** Ends a job now (its isolate is disposed); the host still answers `done`. */
  | { readonly t: 'cancel'; readonly id: number; readonly code: 'timeout' | 'killed' };

/** Host → server. */
export type FromHost =
  | { readonly t: 'ready'; readonly pid: number }
  | { readonly t: 'out'; readonly id: number; readonly fd: 1 | 2; readonly data: string }
  | { readonly t: 'done'; readonly id: number; readonly result: HostResult }
  /** A fault of the host (not of any job) worth logging. */
  | { readonly t: 'log'; readonly level: 'warn' | 'error'; readonly msg: string };

/**
 * The CommonJS wrapper a `script` job's source is compiled in, as a classic script: a factory
 * that returns a new `function (exports, module) {…}` each time it is called. The host evaluates
 * it once per context and calls the factory in every run, so each run gets a function object of
 * its own (what a run stores on it, through `arguments.callee` in sloppy code, goes with it)
 * without evaluating the source again. It adds nothing before the first line, so line numbers
 * stay the code's own. The server checks (source.ts `wrapsWhole`) that the source cannot end the
 * wrapper early: evaluating it must define the factory and run none of the code.
 */
export function wrapCommonJs(source: string): string {
  return `${COMMONJS_HEAD}${source}${COMMONJS_TAIL}`;
}
export const COMMONJS_HEAD = '(function () { return function (exports, module) {';
export const COMMONJS_TAIL = '\n}; })';

/** Most bytes one frame may carry: a 1 MiB source or a 6 MiB body's wasm, with room to spare. */
export const MAX_FRAME_BYTES = 64 * 1024 * 1024;

/** A run's job as it travels: a wasm module's bytes as base64. */
interface WireJob extends Omit<HostJob, 'wasm'> {
  readonly wasmBase64?: string;
}

/** Serialises one message into a frame. */
export function encodeFrame(message: ToHost | FromHost): Buffer {
  let wire: unknown = message;
  if (message.t === 'run' && message.job.wasm !== undefined) {
    const { wasm, ...rest } = message.job;
    wire = { ...message, job: { ...rest, wasmBase64: Buffer.from(wasm.buffer, wasm.byteOffset, wasm.byteLength).toString('base64') } satisfies WireJob };
  }
  const body = JSON.stringify(wire);
  const length = Buffer.byteLength(body);
  const frame = Buffer.allocUnsafe(4 + length);
  frame.writeUInt32BE(length, 0);
  frame.write(body, 4);
  return frame;
}

function decodeBody(bytes: Buffer): unknown {
  const message = JSON.parse(bytes.toString('utf8')) as { t?: unknown; job?: WireJob };
  if (message.t === 'run' && typeof message.job?.wasmBase64 === 'string') {
    const { wasmBase64, ...rest } = message.job;
    message.job = { ...rest, wasm: Buffer.from(wasmBase64, 'base64') } as WireJob;
  }
  return message;
}

/**
 * Splits a byte stream into messages. Feed it chunks; it calls `onMessage` for each complete
 * frame. Throws on a frame over `MAX_FRAME_BYTES` (a broken or hostile peer).
 */
export function createFrameDecoder<T>(onMessage: (message: T) => void): (chunk: Buffer) => void {
  let pending: Buffer[] = [];
  let pendingBytes = 0;
  return (chunk: Buffer) => {
    pending.push(chunk);
    pendingBytes += chunk.length;
    if (pendingBytes < 4) return;
    let buf = pending.length === 1 ? chunk : Buffer.concat(pending, pendingBytes);
    let offset = 0;
    while (buf.length - offset >= 4) {
      const len = buf.readUInt32BE(offset);
      if (len > MAX_FRAME_BYTES) throw new Error(`isolate host frame of ${len} bytes is over the ${MAX_FRAME_BYTES}-byte cap`);
      if (buf.length - offset - 4 < len) break;
      const message = decodeBody(buf.subarray(offset + 4, offset + 4 + len)) as T;
      offset += 4 + len;
      onMessage(message);
    }
    buf = buf.subarray(offset);
    pending = buf.length > 0 ? [buf] : [];
    pendingBytes = buf.length;
  };
}
