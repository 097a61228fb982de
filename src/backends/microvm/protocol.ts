/**
 * The host side of the framed host ↔ guest-agent protocol (the guest side is
 * guest/agent/protocol.h; keep both in step, `PROTOCOL_VERSION`).
 *
 * A frame is `u32 length | u8 type | u32 runId | payload`, big endian, where `length`
 * counts everything after itself. Everything the guest sends is hostile: the decoder
 * rejects a frame whose declared length exceeds `GUEST_MAX_FRAME_BYTES` before buffering
 * it, and the session (session.ts) checks types, run ids and deadlines.
 */

export const PROTOCOL_VERSION = 1;

/** Bytes before the payload: length (4), type (1), run id (4). */
export const FRAME_HEADER_BYTES = 9;
/** Largest frame the guest may send (header included); the agent splits bigger payloads. */
export const GUEST_MAX_FRAME_BYTES = 64 * 1024;
/** Largest frame the host sends (a RUN carrying the code, an archive and the input). */
export const HOST_MAX_FRAME_BYTES = 16 * 1024 * 1024;
/** Most bytes of the runner's result channel (fd 3) the host accepts for one run. */
export const RESULT_MAX_BYTES = 2 * 1024 * 1024;

/** Frame types. Guest → host below 16, host → guest from 16. */
export const FrameType = {
  HELLO: 1,
  STARTED: 2,
  STDOUT: 3,
  STDERR: 4,
  RESULT: 5,
  EXIT: 6,
  FAULT: 7,
  RUN: 16,
} as const;
export type FrameTypeCode = (typeof FrameType)[keyof typeof FrameType];

const GUEST_TYPES: ReadonlySet<number> = new Set([1, 2, 3, 4, 5, 6, 7]);

/** Fields of a RUN frame. */
export const RunField = { ARG: 1, ENV: 2, CWD: 3, FILE: 4, STDIN: 5, LIMITS: 6, SEED: 7 } as const;

/** EXIT flags, set by the agent from the workload's cgroup and writable layer. */
export const ExitFlag = { OOM: 1, PIDS: 2, DISK_FULL: 4, RESULT_TRUNCATED: 8 } as const;

/** One decoded frame. */
export interface Frame {
  readonly type: number;
  readonly runId: number;
  readonly payload: Buffer;
}

/** The guest broke the protocol; the VM is killed and the run fails. */
export class ProtocolError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ProtocolError';
  }
}

/** Encodes one frame. Throws when the frame would exceed `maxBytes`. */
export function encodeFrame(type: number, runId: number, payload: Buffer, maxBytes = HOST_MAX_FRAME_BYTES): Buffer {
  const length = 5 + payload.length;
  if (length + 4 > maxBytes) throw new RangeError(`frame of ${length + 4} bytes exceeds ${maxBytes}`);
  const header = Buffer.alloc(FRAME_HEADER_BYTES);
  header.writeUInt32BE(length, 0);
  header.writeUInt8(type, 4);
  header.writeUInt32BE(runId >>> 0, 5);
  return Buffer.concat([header, payload]);
}

/**
 * Splits a byte stream from the guest into frames. Holds at most one frame's worth of
 * bytes; a declared length outside 5..`maxFrameBytes`, or a type the guest may not send,
 * throws `ProtocolError` at once (the caller then kills the VM).
 */
export class FrameDecoder {
  #chunks: Buffer[] = [];
  #buffered = 0;

  /** `allowedTypes`: the frame types the guest may send on this channel (default: the workload protocol's). */
  constructor(
    private readonly maxFrameBytes = GUEST_MAX_FRAME_BYTES,
    private readonly allowedTypes: ReadonlySet<number> = GUEST_TYPES,
  ) {}

  /** Feeds bytes; returns every frame now complete, in order. */
  push(chunk: Buffer): Frame[] {
    this.#chunks.push(chunk);
    this.#buffered += chunk.length;
    const frames: Frame[] = [];
    for (;;) {
      if (this.#buffered < FRAME_HEADER_BYTES) break;
      const head = this.#peek(FRAME_HEADER_BYTES);
      const length = head.readUInt32BE(0);
      const type = head.readUInt8(4);
      if (length < 5 || length + 4 > this.maxFrameBytes) {
        throw new ProtocolError(`guest frame length ${length} is outside 5..${this.maxFrameBytes - 4}`);
      }
      if (!this.allowedTypes.has(type)) throw new ProtocolError(`guest sent unknown frame type ${type}`);
      if (this.#buffered < length + 4) break;
      const whole = this.#take(length + 4);
      frames.push({ type, runId: whole.readUInt32BE(5), payload: whole.subarray(FRAME_HEADER_BYTES) });
    }
    return frames;
  }

  /** Bytes held for an incomplete frame. */
  get buffered(): number {
    return this.#buffered;
  }

  #peek(n: number): Buffer {
    const first = this.#chunks[0];
    if (first !== undefined && first.length >= n) return first.subarray(0, n);
    const all = Buffer.concat(this.#chunks);
    this.#chunks = [all];
    return all.subarray(0, n);
  }

  #take(n: number): Buffer {
    const all = this.#chunks.length === 1 && this.#chunks[0] !== undefined ? this.#chunks[0] : Buffer.concat(this.#chunks);
    const out = Buffer.from(all.subarray(0, n));
    const rest = all.subarray(n);
    this.#chunks = rest.length > 0 ? [rest] : [];
    this.#buffered = rest.length;
    return out;
  }
}

/** A file the agent creates inside the guest's root before running. */
export interface GuestFile {
  /** Absolute path inside the guest root, without `..` (at most 255 bytes). */
  readonly path: string;
  readonly mode: number;
  readonly content: Buffer;
}

/** Everything one RUN frame carries. */
export interface RunRequest {
  readonly argv: readonly string[];
  readonly env: readonly string[];
  readonly cwd: string;
  readonly files: readonly GuestFile[];
  readonly stdin: Buffer;
  readonly memMB: number;
  readonly pidsMax: number;
  readonly diskMB: number;
  readonly uid: number;
  /** Fresh random bytes; clones of one snapshot would otherwise share their CRNG state. */
  readonly seed: Buffer;
}

function field(tag: number, value: Buffer): Buffer {
  const head = Buffer.alloc(5);
  head.writeUInt8(tag, 0);
  head.writeUInt32BE(value.length, 1);
  return Buffer.concat([head, value]);
}

/** Encodes a RUN request's payload. */
export function encodeRun(req: RunRequest): Buffer {
  const parts: Buffer[] = [];
  for (const arg of req.argv) parts.push(field(RunField.ARG, Buffer.from(arg)));
  for (const e of req.env) parts.push(field(RunField.ENV, Buffer.from(e)));
  parts.push(field(RunField.CWD, Buffer.from(req.cwd)));
  for (const f of req.files) {
    const p = Buffer.from(f.path);
    if (p.length === 0 || p.length > 255 || !f.path.startsWith('/') || f.path.split('/').includes('..')) {
      throw new RangeError(`bad guest path ${JSON.stringify(f.path)}`);
    }
    const head = Buffer.alloc(6);
    head.writeUInt32BE(f.mode, 0);
    head.writeUInt16BE(p.length, 4);
    parts.push(field(RunField.FILE, Buffer.concat([head, p, f.content])));
  }
  if (req.stdin.length > 0) parts.push(field(RunField.STDIN, req.stdin));
  const limits = Buffer.alloc(16);
  limits.writeUInt32BE(req.memMB, 0);
  limits.writeUInt32BE(req.pidsMax, 4);
  limits.writeUInt32BE(req.diskMB, 8);
  limits.writeUInt32BE(req.uid, 12);
  parts.push(field(RunField.LIMITS, limits));
  parts.push(field(RunField.SEED, req.seed));
  return Buffer.concat(parts);
}

/** How the workload's process ended, from an EXIT frame. */
export interface ExitInfo {
  /** The exit code, or null when a signal ended it. */
  readonly exitCode: number | null;
  readonly signal: number;
  readonly flags: number;
  readonly execMs: number;
}

/** Decodes an EXIT payload; throws `ProtocolError` when it is not exactly 16 bytes. */
export function decodeExit(payload: Buffer): ExitInfo {
  if (payload.length !== 16) throw new ProtocolError(`EXIT payload is ${payload.length} bytes, not 16`);
  const code = payload.readUInt32BE(0);
  return {
    exitCode: code === 0xffffffff ? null : code & 0xff,
    signal: payload.readUInt32BE(4) & 0x7f,
    flags: payload.readUInt32BE(8),
    execMs: payload.readUInt32BE(12),
  };
}

/** Parses a HELLO payload (`vulcan-agent <version> <kernel release>`). */
export function decodeHello(payload: Buffer): { version: number; kernelRelease: string } {
  if (payload.length > 256) throw new ProtocolError('HELLO payload too long');
  const m = /^vulcan-agent (\d{1,4}) ([\w.+~-]{1,128})$/.exec(payload.toString('latin1'));
  if (!m?.[1] || !m[2]) throw new ProtocolError('malformed HELLO');
  const version = Number(m[1]);
  if (version !== PROTOCOL_VERSION) throw new ProtocolError(`agent speaks protocol ${version}, host ${PROTOCOL_VERSION}`);
  return { version, kernelRelease: m[2] };
}
