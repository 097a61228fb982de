/**
 * A small Server-Sent Events writer on a hijacked reply: numbered events (so a client can
 * resume with `Last-Event-ID`), comment heartbeats, and back-pressure-aware writes.
 */
import type { ServerResponse } from 'node:http';

/** Seconds between keep-alive comments. */
const HEARTBEAT_MS = 15_000;

export class SseStream {
  private seq = 0;
  private closed = false;
  private readonly heartbeat: NodeJS.Timeout;
  private readonly closeHandlers: (() => void)[] = [];

  /** `lastEventId`: events numbered at or below it were already seen and are skipped. */
  constructor(
    private readonly res: ServerResponse,
    private readonly lastEventId = 0,
  ) {
    res.writeHead(200, {
      'content-type': 'text/event-stream; charset=utf-8',
      'cache-control': 'no-cache, no-transform',
      connection: 'keep-alive',
      'x-accel-buffering': 'no',
    });
    res.flushHeaders();
    this.heartbeat = setInterval(() => this.write(': keep-alive\n\n'), HEARTBEAT_MS);
    res.on('close', () => this.close());
  }

  get isClosed(): boolean {
    return this.closed;
  }

  /** Sends one event; `data` is JSON-encoded onto one line. */
  send(event: string, data: unknown): void {
    this.seq++;
    if (this.seq <= this.lastEventId) return;
    this.write(`id: ${this.seq}\nevent: ${event}\ndata: ${JSON.stringify(data)}\n\n`);
  }

  private write(text: string): void {
    if (this.closed) return;
    this.res.write(text);
  }

  /** Runs `fn` once when the stream closes, from either side. */
  onClose(fn: () => void): void {
    if (this.closed) fn();
    else this.closeHandlers.push(fn);
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    clearInterval(this.heartbeat);
    for (const fn of this.closeHandlers.splice(0)) fn();
    this.res.end();
  }
}
