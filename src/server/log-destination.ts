/**
 * Where the server's log lines go: stdout, written asynchronously, one write per event-loop
 * turn at most.
 *
 * pino's asynchronous destination (sonic-boom) appends each line to the string it has not
 * written yet, and measures that whole string's UTF-8 length on every append; V8 flattens the
 * concatenated string to measure it, so while one write is in flight every new line copies all
 * the lines queued before it. At a few thousand requests a second (one line each) that was
 * ≈ 3.5 KiB copied per line and a tenth of everything the server allocated. Here a turn's lines
 * are kept in an array and handed over joined, once, after the turn's I/O (`setImmediate`).
 * What is queued is written before the process exits (and by `flushSync`).
 */
import { pino } from 'pino';

type Sink = ReturnType<typeof pino.destination>;

/** Every destination made in this process (tests start many servers), flushed at exit. */
const live = new Set<WeakRef<BatchedLogDestination>>();
let exitHook = false;
function flushAllAtExit(dest: BatchedLogDestination): void {
  for (const ref of live) if (ref.deref() === undefined) live.delete(ref);
  live.add(new WeakRef(dest));
  if (exitHook) return;
  exitHook = true;
  process.on('exit', () => {
    for (const ref of live) ref.deref()?.flushSync();
  });
}

export class BatchedLogDestination {
  private lines: string[] = [];
  private readonly sink: Sink;

  constructor(fd = 1) {
    this.sink = pino.destination({ dest: fd, sync: false });
    // pino's destination flushes itself at exit; what is still here must follow it.
    flushAllAtExit(this);
  }

  /** pino calls this with one complete line. */
  write(line: string): boolean {
    if (this.lines.push(line) === 1) setImmediate(this.drain);
    return true;
  }

  /** Hands the queued lines to the sink now. */
  private readonly drain = (): void => {
    if (this.lines.length === 0) return;
    const text = this.lines.join('');
    this.lines = [];
    this.sink.write(text);
  };

  /** pino's `logger.flush(cb)`. */
  flush(cb?: (err?: Error) => void): void {
    this.drain();
    this.sink.flush(cb);
  }

  /** Writes everything queued, blocking. */
  flushSync(): void {
    this.drain();
    try {
      this.sink.flushSync();
    } catch {
      // not open yet, or already closed: nothing more can be written
    }
  }
}
