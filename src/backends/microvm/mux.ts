/**
 * The host side of the sandbox channel multiplexer: many independent byte streams to the
 * Node sandbox agent inside a microVM over its one virtio-serial port (the guest side is
 * guest/agent/sandbox.c; frame types in guest/agent/protocol.h).
 *
 * Frames are the workload protocol's (`u32 length | u8 type | u32 id | payload`), with the
 * id naming a channel. Flow control is a per-channel window: neither side may have more than
 * `MUX_WINDOW_BYTES` unacknowledged bytes in flight, so the host never buffers more than
 * that per channel, whatever the guest does.
 *
 * Everything the guest sends is hostile. A frame over `MUX_MAX_FRAME_BYTES`, a type the guest
 * may not send, data for a channel the host never opened, data beyond the window or after
 * EOF, a malformed WINDOW: each is a `ProtocolError`, after which the mux is dead and the
 * driver kills the VM. Frames for channels the host already closed are stale and ignored.
 */
import crypto from 'node:crypto';
import { Duplex } from 'node:stream';
import { FRAME_HEADER_BYTES, FrameDecoder, ProtocolError } from './protocol.js';

/** Frame types of the multiplexer (guest/agent/protocol.h). */
export const MuxType = {
  READY: 8,
  OPENED: 9,
  G_DATA: 10,
  G_EOF: 11,
  G_CLOSE: 12,
  G_WINDOW: 13,
  AGENT_EXIT: 14,
  HELLO: 17,
  OPEN: 18,
  DATA: 19,
  EOF: 20,
  CLOSE: 21,
  WINDOW: 22,
} as const;

/** Unacknowledged bytes allowed in flight per channel and direction. */
export const MUX_WINDOW_BYTES = 256 * 1024;
/** Largest frame either side sends, header included (one 32 KiB virtio-serial write). */
export const MUX_MAX_FRAME_BYTES = 32 * 1024;
/** Most channels open at once (the guest's table has as many slots). */
export const MUX_MAX_CHANNELS = 256;
const MAX_DATA = MUX_MAX_FRAME_BYTES - FRAME_HEADER_BYTES;
const GUEST_MUX_TYPES: ReadonlySet<number> = new Set([MuxType.OPENED, MuxType.G_DATA, MuxType.G_EOF, MuxType.G_CLOSE, MuxType.G_WINDOW, MuxType.AGENT_EXIT]);
/** Most text accepted in a CLOSE reason. */
const MAX_REASON_BYTES = 512;

/** The byte stream the mux runs over (a socket to QEMU's chardev). */
export interface MuxTransport {
  write(data: Buffer): unknown;
  on(event: 'data', fn: (chunk: Buffer) => void): unknown;
  on(event: 'close', fn: () => void): unknown;
  destroy(): unknown;
}

function frame(type: number, id: number, payload: Buffer = Buffer.alloc(0)): Buffer {
  const head = Buffer.alloc(FRAME_HEADER_BYTES);
  head.writeUInt32BE(payload.length + 5, 0);
  head.writeUInt8(type, 4);
  head.writeUInt32BE(id >>> 0, 5);
  return Buffer.concat([head, payload]);
}

function u32(v: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(v >>> 0, 0);
  return b;
}

/** One channel: a Duplex whose bytes travel as DATA frames. */
class MuxChannel extends Duplex {
  /** Bytes the guest may still send us. */
  recvCredit = MUX_WINDOW_BYTES;
  /** Bytes delivered but not yet granted back (held while our reader is slow). */
  owed = 0;
  /** Bytes we may still send the guest. */
  sendCredit = MUX_WINDOW_BYTES;
  gotEof = false;
  remoteClosed = false;
  opened = false;
  #pending: { data: Buffer; cb: (err?: Error | null) => void } | undefined;
  #finalCb: ((err?: Error | null) => void) | undefined;

  constructor(
    readonly id: number,
    private readonly mux: ChannelMux,
  ) {
    super({ allowHalfOpen: true });
  }

  override _read(): void {
    if (this.owed > 0 && !this.remoteClosed) {
      this.recvCredit += this.owed;
      this.mux.send(MuxType.WINDOW, this.id, u32(this.owed));
      this.owed = 0;
    }
  }

  override _write(chunk: Buffer, _enc: BufferEncoding, cb: (err?: Error | null) => void): void {
    if (this.remoteClosed) return cb();
    this.#pending = { data: chunk, cb };
    this.pump();
  }

  override _final(cb: (err?: Error | null) => void): void {
    if (this.remoteClosed) return cb();
    this.#finalCb = cb;
    this.pump();
  }

  override _destroy(err: Error | null, cb: (err?: Error | null) => void): void {
    this.mux.forget(this, !this.remoteClosed);
    this.#pending?.cb(err ?? new Error('channel closed'));
    this.#pending = undefined;
    cb(err);
  }

  /** Sends what the window allows. */
  pump(): void {
    while (this.#pending && this.sendCredit > 0 && !this.remoteClosed) {
      const p = this.#pending;
      const n = Math.min(p.data.length, this.sendCredit, MAX_DATA);
      this.mux.send(MuxType.DATA, this.id, p.data.subarray(0, n));
      this.sendCredit -= n;
      if (n === p.data.length) {
        this.#pending = undefined;
        p.cb();
      } else {
        p.data = p.data.subarray(n);
      }
    }
    if (this.remoteClosed && this.#pending) {
      const p = this.#pending;
      this.#pending = undefined;
      p.cb();
    }
    if (!this.#pending && this.#finalCb) {
      const cb = this.#finalCb;
      this.#finalCb = undefined;
      if (!this.remoteClosed) this.mux.send(MuxType.EOF, this.id);
      cb();
    }
  }

  onData(payload: Buffer): void {
    if (this.gotEof) throw new ProtocolError(`data after EOF on channel ${this.id}`);
    if (payload.length > this.recvCredit) throw new ProtocolError(`channel ${this.id} overran its window (${payload.length} > ${this.recvCredit})`);
    this.recvCredit -= payload.length;
    this.owed += payload.length;
    if (this.push(payload)) this._read();
  }

  onEof(): void {
    if (this.gotEof) throw new ProtocolError(`a second EOF on channel ${this.id}`);
    this.gotEof = true;
    this.push(null);
  }

  onWindow(payload: Buffer): void {
    if (payload.length !== 4) throw new ProtocolError(`WINDOW payload of ${payload.length} bytes`);
    const more = payload.readUInt32BE(0);
    if (more > MUX_WINDOW_BYTES || this.sendCredit + more > MUX_WINDOW_BYTES) throw new ProtocolError(`channel ${this.id} granted a window beyond ${MUX_WINDOW_BYTES}`);
    this.sendCredit += more;
    this.pump();
  }

  onClose(reason: string): void {
    this.remoteClosed = true;
    this.pump();
    if (!this.gotEof) {
      this.destroy(new Error(`the sandbox agent connection was reset${reason ? `: ${reason}` : ''}`));
    } else if (this.writableFinished || this.writableEnded) {
      // Both ways are done; let the reader drain what is buffered before 'close'.
      if (this.readableEnded) this.destroy();
      else this.once('end', () => this.destroy());
    }
  }
}

/** Why a mux died. */
export type MuxDeath = { readonly kind: 'violation'; readonly error: ProtocolError } | { readonly kind: 'closed' };

/**
 * A multiplexer over one connected transport, after `handshake`. `open` gives independent
 * channels; `dead` resolves when the transport closes or the guest breaks the protocol.
 */
export class ChannelMux {
  readonly #t: MuxTransport;
  readonly #decoder = new FrameDecoder(MUX_MAX_FRAME_BYTES, GUEST_MUX_TYPES);
  readonly #channels = new Map<number, MuxChannel>();
  readonly #opening = new Map<number, { resolve: (c: MuxChannel) => void; reject: (e: Error) => void; ch: MuxChannel }>();
  #nextId = 1;
  #dead: MuxDeath | undefined;
  readonly dead: Promise<MuxDeath>;
  #resolveDead: (d: MuxDeath) => void = () => undefined;
  /** Set once the guest reports that the Node agent exited (its wait status). */
  agentExit: number | undefined;
  #onAgentExit: ((status: number) => void) | undefined;

  private constructor(t: MuxTransport, rest: Buffer) {
    this.#t = t;
    this.dead = new Promise((resolve) => (this.#resolveDead = resolve));
    t.on('data', (chunk) => this.#feed(chunk));
    t.on('close', () => this.#die({ kind: 'closed' }));
    if (rest.length) this.#feed(rest);
  }

  /**
   * Says HELLO with a fresh nonce and waits for READY carrying it. Bytes before READY are
   * what an earlier host left in flight and are skipped. Rejects at `deadlineMs`
   * (performance.now() time) or when the transport closes.
   */
  static handshake(t: MuxTransport, deadlineMs: number, signal?: AbortSignal): Promise<ChannelMux> {
    const nonce = crypto.randomBytes(8);
    const want = frame(MuxType.READY, 0, nonce);
    return new Promise((resolve, reject) => {
      let seen = Buffer.alloc(0);
      let done = false;
      const finish = (err: Error | null, mux?: ChannelMux) => {
        if (done) return;
        done = true;
        clearTimeout(timer);
        signal?.removeEventListener('abort', onAbort);
        stop();
        if (err) reject(err);
        else if (mux) resolve(mux);
      };
      const onData = (chunk: Buffer) => {
        if (done) return;
        seen = Buffer.concat([seen, chunk]);
        const at = seen.indexOf(want);
        if (at < 0) {
          // Keep only what could still be the start of READY: memory stays bounded.
          if (seen.length > want.length) seen = seen.subarray(seen.length - want.length + 1);
          return;
        }
        const rest = Buffer.from(seen.subarray(at + want.length));
        done = true;
        clearTimeout(timer);
        signal?.removeEventListener('abort', onAbort);
        stop();
        resolve(new ChannelMux(t, rest));
      };
      let stop = () => undefined as unknown;
      const onAbort = () => finish(new Error('aborted while connecting to the guest agent'));
      const timer = setTimeout(() => finish(new Error('the guest agent did not answer HELLO in time')), Math.max(0, deadlineMs - performance.now()));
      signal?.addEventListener('abort', onAbort, { once: true });
      // A socket keeps its listeners: swap ours out once READY is seen.
      const listeners = { data: onData, close: () => finish(new Error('the guest channel closed during the handshake')) };
      t.on('data', (c) => listeners.data(c));
      t.on('close', () => listeners.close());
      stop = () => {
        listeners.data = () => undefined;
        listeners.close = () => undefined;
      };
      t.write(frame(MuxType.HELLO, 0, nonce));
    });
  }

  /** Calls `fn` once, when the guest reports that the Node agent exited. */
  onAgentExit(fn: (status: number) => void): void {
    this.#onAgentExit = fn;
    if (this.agentExit !== undefined) fn(this.agentExit);
  }

  /** Opens a channel to the agent's socket; rejects when the guest cannot connect it. */
  open(signal?: AbortSignal): Promise<Duplex> {
    if (this.#dead) return Promise.reject(new Error(`the guest channel is ${this.#dead.kind === 'closed' ? 'closed' : `dead: ${this.#dead.error.message}`}`));
    if (this.#channels.size + this.#opening.size >= MUX_MAX_CHANNELS) return Promise.reject(new Error(`more than ${MUX_MAX_CHANNELS} connections to the sandbox agent are open`));
    const id = this.#nextId++;
    const ch = new MuxChannel(id, this);
    return new Promise<Duplex>((resolve, reject) => {
      const onAbort = () => {
        this.#opening.delete(id);
        this.send(MuxType.CLOSE, id);
        reject(new Error('aborted while opening a connection to the sandbox agent'));
      };
      signal?.addEventListener('abort', onAbort, { once: true });
      this.#opening.set(id, {
        ch,
        resolve: (c) => {
          signal?.removeEventListener('abort', onAbort);
          resolve(c);
        },
        reject: (e) => {
          signal?.removeEventListener('abort', onAbort);
          reject(e);
        },
      });
      this.send(MuxType.OPEN, id);
    });
  }

  /** Closes every channel and the transport. Idempotent. */
  close(): void {
    this.#die({ kind: 'closed' });
    this.#t.destroy();
  }

  /** Channels open now (for tests). */
  get openChannels(): number {
    return this.#channels.size;
  }

  /** @internal */
  send(type: number, id: number, payload?: Buffer): void {
    if (!this.#dead) this.#t.write(frame(type, id, payload));
  }

  /** @internal: a channel went away on our side. */
  forget(ch: MuxChannel, tell: boolean): void {
    if (this.#channels.get(ch.id) !== ch) return;
    this.#channels.delete(ch.id);
    if (tell) this.send(MuxType.CLOSE, ch.id);
  }

  #feed(chunk: Buffer): void {
    if (this.#dead) return;
    try {
      for (const f of this.#decoder.push(chunk)) this.#frame(f.type, f.runId, f.payload);
    } catch (err) {
      const error = err instanceof ProtocolError ? err : new ProtocolError(String(err));
      this.#die({ kind: 'violation', error });
      this.#t.destroy();
    }
  }

  #frame(type: number, id: number, payload: Buffer): void {
    if (type === MuxType.AGENT_EXIT) {
      if (id !== 0 || payload.length !== 4) throw new ProtocolError('malformed AGENT_EXIT');
      this.agentExit = payload.readUInt32BE(0);
      this.#onAgentExit?.(this.agentExit);
      return;
    }
    if (id === 0 || id >= this.#nextId) throw new ProtocolError(`frame type ${type} for channel ${id}, which the host never opened`);
    const opening = this.#opening.get(id);
    if (opening) {
      this.#opening.delete(id);
      if (type === MuxType.OPENED) {
        if (payload.length !== 0) throw new ProtocolError('OPENED with a payload');
        opening.ch.opened = true;
        this.#channels.set(id, opening.ch);
        opening.resolve(opening.ch);
      } else if (type === MuxType.G_CLOSE) {
        opening.reject(new Error(`the guest could not reach the sandbox agent: ${payload.subarray(0, MAX_REASON_BYTES).toString('utf8').replace(/[^\x20-\x7e]/g, '?')}`));
      } else {
        throw new ProtocolError(`frame type ${type} before OPENED on channel ${id}`);
      }
      return;
    }
    const ch = this.#channels.get(id);
    if (!ch) {
      if (type === MuxType.OPENED) throw new ProtocolError(`OPENED for channel ${id}, which is not opening`);
      return; // closed by us meanwhile: stale
    }
    switch (type) {
      case MuxType.G_DATA:
        ch.onData(payload);
        break;
      case MuxType.G_EOF:
        if (payload.length !== 0) throw new ProtocolError('EOF with a payload');
        ch.onEof();
        break;
      case MuxType.G_WINDOW:
        ch.onWindow(payload);
        break;
      case MuxType.G_CLOSE:
        this.#channels.delete(id);
        ch.onClose(payload.subarray(0, MAX_REASON_BYTES).toString('utf8').replace(/[^\x20-\x7e]/g, '?'));
        break;
      default:
        throw new ProtocolError(`OPENED for channel ${id}, which is already open`);
    }
  }

  #die(d: MuxDeath): void {
    if (this.#dead) return;
    this.#dead = d;
    const err = new Error(d.kind === 'closed' ? 'the guest channel closed' : `the guest broke the channel protocol: ${d.error.message}`);
    for (const o of this.#opening.values()) o.reject(err);
    this.#opening.clear();
    for (const ch of this.#channels.values()) {
      ch.remoteClosed = true;
      ch.destroy(err);
    }
    this.#channels.clear();
    this.#resolveDead(d);
  }
}
