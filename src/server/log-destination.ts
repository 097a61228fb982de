/**
 * Where the server's log lines go: stdout, written asynchronously, in batches.
 *
 * pino's asynchronous destination (sonic-boom) appends each line to the string it has not
 * written yet, and measures that whole string's UTF-8 length on every append; V8 flattens the
 * concatenated string to measure it, so while one write is in flight every new line copies all
 * the lines queued before it. At a few thousand requests a second (one line each) that was
 * ≈ 3.5 KiB copied per line and a tenth of everything the server allocated. And each write it
 * starts hands a string to libuv's thread pool, which costs the event loop ≈ 6 µs (waking a
 * pool thread), so it pays off to start fewer.
 *
 * Here lines wait in an array and leave joined, in one write: info and debug lines up to
 * BATCH_MS after the first of them (under load, one write per ≈ 60 requests instead of one per
 * one or two), a warning or an error at the end of the current turn, with everything queued
 * before it. What is queued is written before the process exits (and by `flushSync`); a SIGKILL
 * loses at most the last BATCH_MS of info lines.
 */
import fs from 'node:fs';
import { pino } from 'pino';

type Sink = ReturnType<typeof pino.destination>;

/** How long an info or debug line may wait for others to share its write. */
const BATCH_MS = 20;

/** Every destination made in this process (tests start many servers), flushed at exit. */
const live = new Set<WeakRef<BatchedLogDestination>>();
let exitHook = false;
function flushAllAtExit(dest: BatchedLogDestination): void {
  for (const ref of live) if (ref.deref() === undefined) live.delete(ref);
  live.add(new WeakRef(dest));
  if (exitHook) return;
  exitHook = true;
  process.on('exit', () => {
    for (const ref of live) {
      try {
        ref.deref()?.flushSync();
      } catch {
        // this destination's fd is gone; the others still get written
      }
    }
  });
}

/** Writes all of `data` to `fd`, blocking; retries a full non-blocking pipe for up to ≈ 1 s. */
function writeAllSync(fd: number, data: Buffer): void {
  let off = 0;
  for (let tries = 0; off < data.length && tries < 1000; ) {
    try {
      off += fs.writeSync(fd, data, off);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'EAGAIN') return;
      tries++;
      Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 1);
    }
  }
}

export class BatchedLogDestination {
  private lines: string[] = [];
  private readonly sink: Sink;
  private timer: NodeJS.Timeout | undefined;
  /** A warning or error waits in `lines`: they leave at the end of this turn. */
  private urgent = false;

  /**
   * `fd`: where the lines go (stdout unless given). `sync`: the sink below writes each batch
   * synchronously (tests); the server's is asynchronous.
   */
  constructor(private readonly fd = 1, sync = false) {
    this.sink = pino.destination({ dest: fd, sync });
    // pino's destination flushes itself at exit; what is still here must follow it.
    flushAllAtExit(this);
  }

  /** pino calls this with one complete line (`{"level":30,…}\n`). */
  write(line: string): boolean {
    if (this.lines.push(line) === 1) this.timer = setTimeout(this.drain, BATCH_MS);
    // Level 40 (warn) and above: its digit is the tenth character.
    if (!this.urgent && line.charCodeAt(9) >= 0x34 /* '4' */) {
      this.urgent = true;
      setImmediate(this.drain);
    }
    return true;
  }

  /** Takes the queued lines, joined, and forgets the drains scheduled for them. */
  private take(): string {
    clearTimeout(this.timer);
    this.timer = undefined;
    this.urgent = false;
    const text = this.lines.join('');
    this.lines = [];
    return text;
  }

  /** Hands the queued lines to the sink now. */
  private readonly drain = (): void => {
    const text = this.take();
    if (text !== '') this.sink.write(text);
  };

  /** pino's `logger.flush(cb)`. */
  flush(cb?: (err?: Error) => void): void {
    this.drain();
    this.sink.flush(cb);
  }

  /**
   * Writes everything queued, blocking: what the sink holds first, then the lines here, with
   * `fs.writeSync` (handing them to the sink would start an asynchronous write when it is idle).
   */
  flushSync(): void {
    const text = this.take();
    try {
      this.sink.flushSync();
    } catch {
      // not open yet, or already closed: its fd is still tried below
    }
    if (text !== '') writeAllSync(this.fd, Buffer.from(text));
  }
}
