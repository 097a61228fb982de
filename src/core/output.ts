/**
 * Output capture shared by every backend: each stream is capped at `Limits.outputBytes`
 * (bytes past it are dropped and the stream is marked truncated), the interleaving of the
 * two streams is kept for log replay, and live subscribers get each kept chunk as it comes.
 * The server's memory per workload is bounded by twice the cap.
 */
import type { RunIO } from './backend.js';

export type StreamName = 'stdout' | 'stderr';

/** One chunk of output, as log subscribers receive it. */
export interface OutputChunk {
  readonly stream: StreamName;
  readonly data: Buffer;
}

export class OutputCollector implements RunIO {
  private readonly parts: Record<StreamName, Buffer[]> = { stdout: [], stderr: [] };
  private readonly sizes: Record<StreamName, number> = { stdout: 0, stderr: 0 };
  private readonly truncatedFlags: Record<StreamName, boolean> = { stdout: false, stderr: false };
  /** [stream, bytes] runs, merged when the same stream continues. */
  readonly index: [StreamName, number][] = [];
  private readonly listeners = new Set<(c: OutputChunk) => void>();

  constructor(private readonly capBytes: number) {}

  stdout(chunk: Buffer): void {
    this.push('stdout', chunk);
  }

  stderr(chunk: Buffer): void {
    this.push('stderr', chunk);
  }

  private push(stream: StreamName, chunk: Buffer): void {
    const room = this.capBytes - this.sizes[stream];
    if (room <= 0) {
      if (chunk.length > 0) this.truncatedFlags[stream] = true;
      return;
    }
    let kept = chunk;
    if (chunk.length > room) {
      kept = chunk.subarray(0, room);
      this.truncatedFlags[stream] = true;
    }
    // Copy: the producer may reuse its buffer.
    kept = Buffer.from(kept);
    this.parts[stream].push(kept);
    this.sizes[stream] += kept.length;
    const last = this.index.at(-1);
    if (last && last[0] === stream) last[1] += kept.length;
    else this.index.push([stream, kept.length]);
    for (const l of this.listeners) l({ stream, data: kept });
  }

  /** Everything kept so far, in order of arrival (for late subscribers). */
  replay(): OutputChunk[] {
    return replayStored(this.bytes('stdout'), this.bytes('stderr'), this.index);
  }

  /** Subscribes to chunks from now on; returns the unsubscribe function. */
  subscribe(fn: (c: OutputChunk) => void): () => void {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }

  bytes(stream: StreamName): Buffer {
    const parts = this.parts[stream];
    if (parts.length > 1) this.parts[stream] = [Buffer.concat(parts)];
    return this.parts[stream][0] ?? Buffer.alloc(0);
  }

  truncated(stream: StreamName): boolean {
    return this.truncatedFlags[stream];
  }
}

/** Splits stored streams back into the chunks of `index`, in their original order. */
export function replayStored(stdout: Buffer, stderr: Buffer, index: readonly (readonly [StreamName, number])[]): OutputChunk[] {
  const out: OutputChunk[] = [];
  const offsets = { stdout: 0, stderr: 0 };
  const all = { stdout, stderr };
  for (const [stream, n] of index) {
    out.push({ stream, data: all[stream].subarray(offsets[stream], offsets[stream] + n) });
    offsets[stream] += n;
  }
  return out;
}
