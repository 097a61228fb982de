/**
 * One conversation with a guest agent over its channel, with the guest treated as hostile:
 * every frame is bounded (protocol.ts), every frame's run id and type are checked against
 * what may come next, the result channel is capped, and every wait has a deadline.
 * Any breach ends the session with a `ProtocolError`; the caller then kills the VM.
 */
import type { Duplex } from 'node:stream';
import type { RunIO } from '../../core/backend.js';
import {
  FrameDecoder,
  FrameType,
  ProtocolError,
  RESULT_MAX_BYTES,
  decodeExit,
  decodeHello,
  encodeFrame,
  encodeRun,
  type ExitInfo,
  type Frame,
  type RunRequest,
} from './protocol.js';

/** What the agent reported about one run. */
export interface AgentRunResult {
  readonly exit: ExitInfo;
  /** The runner's result channel (fd 3), as text; at most `RESULT_MAX_BYTES`. */
  readonly resultText: string;
  /** `performance.now()` when the agent said the process started. */
  readonly startedAt: number;
}

/** The session ended because the caller's signal aborted. */
export class SessionAborted extends Error {
  constructor() {
    super('session aborted');
    this.name = 'SessionAborted';
  }
}

/** The agent sent FAULT: it could not set up or start the workload. */
export class AgentFault extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'AgentFault';
  }
}

/** The channel closed or the deadline passed before the agent answered. */
export class AgentTimeout extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'AgentTimeout';
  }
}

/** Reads frames from a guest channel, one at a time, each with a deadline. */
export class AgentSession {
  readonly #channel: Duplex;
  readonly #decoder = new FrameDecoder();
  #queue: Frame[] = [];
  #failure: Error | null = null;
  #wake: (() => void) | null = null;

  constructor(channel: Duplex) {
    this.#channel = channel;
    channel.on('data', (chunk: Buffer) => {
      if (this.#failure) return;
      try {
        this.#queue.push(...this.#decoder.push(chunk));
      } catch (err) {
        this.#fail(err instanceof Error ? err : new ProtocolError(String(err)));
        channel.pause();
      }
      // A guest that floods the host faster than we consume is stopped: no unbounded queue.
      if (this.#queue.length > 256) channel.pause();
      this.#wake?.();
    });
    channel.on('end', () => this.#fail(new AgentTimeout('the agent channel closed')));
    channel.on('close', () => this.#fail(new AgentTimeout('the agent channel closed')));
    channel.on('error', (err) => this.#fail(new AgentTimeout(`the agent channel failed: ${err.message}`)));
  }

  #fail(err: Error): void {
    this.#failure ??= err;
    this.#wake?.();
  }

  /** Waits for the next frame until `deadline` (a `performance.now()` time) or `signal`. */
  async next(deadline: number, signal: AbortSignal): Promise<Frame> {
    for (;;) {
      const frame = this.#queue.shift();
      if (frame) {
        if (this.#queue.length < 64) this.#channel.resume();
        return frame;
      }
      if (this.#failure) throw this.#failure;
      if (signal.aborted) throw new SessionAborted();
      const left = deadline - performance.now();
      if (left <= 0) throw new AgentTimeout('the agent did not answer in time');
      await new Promise<void>((resolve) => {
        const done = (): void => {
          clearTimeout(timer);
          signal.removeEventListener('abort', done);
          this.#wake = null;
          resolve();
        };
        const timer = setTimeout(done, left);
        signal.addEventListener('abort', done, { once: true });
        this.#wake = done;
      });
    }
  }

  /** Waits for HELLO; returns the guest's kernel release. */
  async hello(deadline: number, signal: AbortSignal): Promise<string> {
    const frame = await this.next(deadline, signal);
    if (frame.type === FrameType.FAULT) throw new AgentFault(frame.payload.toString('utf8', 0, 1024));
    if (frame.type !== FrameType.HELLO || frame.runId !== 0) throw new ProtocolError(`expected HELLO, got frame type ${frame.type}`);
    return decodeHello(frame.payload).kernelRelease;
  }

  /**
   * Sends RUN and follows the run to its EXIT, forwarding stdout and stderr to `io`.
   * `onStarted` fires once when the agent has started the process.
   */
  async run(runId: number, req: RunRequest, io: RunIO, deadline: number, signal: AbortSignal, onStarted?: () => void): Promise<AgentRunResult> {
    if (runId === 0) throw new RangeError('run id 0 is reserved for HELLO');
    this.#channel.write(encodeFrame(FrameType.RUN, runId, encodeRun(req)));
    const result: Buffer[] = [];
    let resultBytes = 0;
    let startedAt = Number.NaN;
    for (;;) {
      const frame = await this.next(deadline, signal);
      if (frame.type === FrameType.FAULT) throw new AgentFault(frame.payload.toString('utf8', 0, 1024));
      if (frame.runId !== runId) throw new ProtocolError(`frame for run ${frame.runId}, expected ${runId}`);
      switch (frame.type) {
        case FrameType.STARTED:
          if (!Number.isNaN(startedAt)) throw new ProtocolError('STARTED twice');
          startedAt = performance.now();
          onStarted?.();
          break;
        case FrameType.STDOUT:
        case FrameType.STDERR:
          if (Number.isNaN(startedAt)) throw new ProtocolError('output before STARTED');
          if (frame.type === FrameType.STDOUT) io.stdout(frame.payload);
          else io.stderr(frame.payload);
          break;
        case FrameType.RESULT:
          resultBytes += frame.payload.length;
          if (resultBytes > RESULT_MAX_BYTES) throw new ProtocolError(`result channel over ${RESULT_MAX_BYTES} bytes`);
          result.push(frame.payload);
          break;
        case FrameType.EXIT:
          if (Number.isNaN(startedAt)) throw new ProtocolError('EXIT before STARTED');
          return { exit: decodeExit(frame.payload), resultText: Buffer.concat(result).toString('utf8'), startedAt };
        default:
          throw new ProtocolError(`unexpected frame type ${frame.type} during a run`);
      }
    }
  }
}
