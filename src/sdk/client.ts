/**
 * The typed Vulcan client. Every endpoint of the API has a method here; API errors come
 * back as `VulcanApiError` subclasses rebuilt from the error `code`. The CLI and the
 * benchmark use only this.
 *
 * @example
 * const vulcan = new VulcanClient({ url: 'http://127.0.0.1:7423' });
 * const rec = await vulcan.run({ runtime: 'python', code: 'def main(i): return i * 2', input: 21 });
 * console.log(rec.output); // 42
 */
import { createParser, type EventSourceMessage } from 'eventsource-parser';
import type { BackendInfo } from '../scheduler/backend-set.js';
import type { WorkloadRecord } from '../store/workloads.js';
import type { WorkloadRequestBody } from '../server/schemas.js';
import { errorFromBody, VulcanApiError } from './errors.js';

export type { WorkloadRecord, BackendInfo };
export type WorkloadRequest = WorkloadRequestBody;

/** The default server URL; the CLI reads `VULCAN_URL`. */
export const DEFAULT_URL = 'http://127.0.0.1:7423';

export interface VulcanClientOptions {
  /** Base URL of a Vulcan server. Default http://127.0.0.1:7423. */
  readonly url?: string;
  /** Milliseconds to wait for an answer to a call that does not run code. Default 30 000. */
  readonly requestTimeoutMs?: number;
}

export interface CallOptions {
  /** Aborts the call (for `run`, hanging up also kills the workload on the server). */
  readonly signal?: AbortSignal;
}

/** An image as the API shows it. */
export interface ImageSummary {
  name: string;
  digest: string;
  size_bytes: number;
  file_count: number;
  created_at: string;
  source: unknown;
  config: { cmd?: string[]; env?: string[]; workdir?: string };
  neutralised: number;
  neutralised_notes: string[];
}

/** The answer to starting an image build or import. */
export interface ImageJobAccepted {
  job_id: string;
  name: string;
  state: string;
  /** Path of the job's event stream. */
  events: string;
}

/** One event of a workload's log stream. */
export type LogEvent = { readonly type: 'stdout' | 'stderr'; readonly data: string } | { readonly type: 'end'; readonly record: WorkloadRecord };

export class VulcanClient {
  readonly url: string;
  private readonly requestTimeoutMs: number;

  constructor(opts: VulcanClientOptions = {}) {
    this.url = (opts.url ?? DEFAULT_URL).replace(/\/+$/, '');
    this.requestTimeoutMs = opts.requestTimeoutMs ?? 30_000;
  }

  private async request<T>(method: string, path: string, body?: unknown, opts: CallOptions & { noTimeout?: boolean } = {}): Promise<T> {
    const signals = [opts.signal, opts.noTimeout ? undefined : AbortSignal.timeout(this.requestTimeoutMs)].filter((s): s is AbortSignal => s !== undefined);
    let res: Response;
    try {
      res = await fetch(`${this.url}${path}`, {
        method,
        headers: body === undefined ? {} : { 'content-type': 'application/json' },
        ...(body === undefined ? {} : { body: JSON.stringify(body) }),
        ...(signals.length ? { signal: AbortSignal.any(signals) } : {}),
      });
    } catch (err) {
      if ((err as Error).name === 'AbortError' || (err as Error).name === 'TimeoutError') throw err;
      throw new VulcanApiError('connection_failed', `cannot reach the Vulcan server at ${this.url} (set VULCAN_URL): ${(err as Error).cause instanceof Error ? ((err as Error).cause as Error).message : (err as Error).message}`, 0);
    }
    const text = await res.text();
    let parsed: unknown;
    try {
      parsed = text === '' ? null : JSON.parse(text);
    } catch {
      parsed = text;
    }
    if (!res.ok) throw errorFromBody(parsed, res.status);
    return parsed as T;
  }

  /** Runs a workload and waits for its terminal record. */
  run(req: WorkloadRequest, opts: CallOptions = {}): Promise<WorkloadRecord> {
    return this.request('POST', '/v1/workloads', req, { ...opts, noTimeout: true });
  }

  /** Starts a workload and returns its id at once. */
  runAsync(req: WorkloadRequest, opts: CallOptions = {}): Promise<{ id: string; status: string }> {
    return this.request('POST', '/v1/workloads/async', req, opts);
  }

  /** One workload's record. */
  get(id: string, opts: CallOptions = {}): Promise<WorkloadRecord> {
    return this.request('GET', `/v1/workloads/${encodeURIComponent(id)}`, undefined, opts);
  }

  /** Workloads, newest first. */
  list(query: { limit?: number; cursor?: string; status?: string } = {}, opts: CallOptions = {}): Promise<{ items: WorkloadRecord[]; next_cursor: string | null }> {
    const qs = new URLSearchParams();
    for (const [k, v] of Object.entries(query)) if (v !== undefined) qs.set(k, String(v));
    const s = qs.toString();
    return this.request('GET', `/v1/workloads${s ? `?${s}` : ''}`, undefined, opts);
  }

  /** Kills a running workload; resolves with its final record. */
  kill(id: string, opts: CallOptions = {}): Promise<WorkloadRecord> {
    return this.request('DELETE', `/v1/workloads/${encodeURIComponent(id)}`, undefined, opts);
  }

  /** Every backend on the node. */
  async backends(opts: CallOptions = {}): Promise<BackendInfo[]> {
    return (await this.request<{ backends: BackendInfo[] }>('GET', '/v1/backends', undefined, opts)).backends;
  }

  health(opts: CallOptions = {}): Promise<{ status: string; node: string; uptime_s: number }> {
    return this.request('GET', '/healthz', undefined, opts);
  }

  /** Waits until a workload has ended (polling), and returns its record. */
  async wait(id: string, opts: CallOptions & { intervalMs?: number } = {}): Promise<WorkloadRecord> {
    for (;;) {
      const rec = await this.get(id, opts);
      if (!['pending', 'running'].includes(rec.status)) return rec;
      await new Promise((r) => setTimeout(r, opts.intervalMs ?? 200));
      opts.signal?.throwIfAborted();
    }
  }

  /** Images in the node's store. */
  async images(opts: CallOptions = {}): Promise<ImageSummary[]> {
    return (await this.request<{ images: ImageSummary[] }>('GET', '/v1/images', undefined, opts)).images;
  }

  /** One image; throws NotFoundError. */
  image(name: string, opts: CallOptions = {}): Promise<ImageSummary> {
    return this.request('GET', `/v1/images/${encodeURIComponent(name)}`, undefined, opts);
  }

  /** Starts an image build; follow it with `imageJob(job_id)`. */
  buildImage(req: { name: string; packages?: string[]; busybox?: boolean; suite?: string }, opts: CallOptions = {}): Promise<ImageJobAccepted> {
    return this.request('POST', '/v1/images', req, opts);
  }

  /** Uploads a `docker save` or OCI layout tarball (streamed) and starts its import. */
  async importImage(tarball: ReadableStream<Uint8Array> | Blob, name?: string, opts: CallOptions = {}): Promise<ImageJobAccepted> {
    const res = await fetch(`${this.url}/v1/images/import${name ? `?name=${encodeURIComponent(name)}` : ''}`, {
      method: 'POST',
      headers: { 'content-type': 'application/x-tar' },
      body: tarball as BodyInit,
      // Node's fetch streams a request body only in half-duplex mode.
      ...({ duplex: 'half' } as object),
      ...(opts.signal ? { signal: opts.signal } : {}),
    });
    const body: unknown = await res.json().catch(() => null);
    if (!res.ok) throw errorFromBody(body, res.status);
    return body as ImageJobAccepted;
  }

  /** Removes an image. */
  async removeImage(name: string, opts: CallOptions = {}): Promise<void> {
    await this.request('DELETE', `/v1/images/${encodeURIComponent(name)}`, undefined, opts);
  }

  /** Progress lines of an image build or import, then its end. */
  async *imageJob(jobId: string, opts: CallOptions = {}): AsyncGenerator<{ type: 'progress'; line: string } | { type: 'end'; state: 'done' | 'failed'; image?: ImageSummary; error?: { code: string; message: string } }> {
    for await (const ev of this.sse(`/v1/images/jobs/${encodeURIComponent(jobId)}`, opts)) {
      if (ev.event === 'progress') yield { type: 'progress', line: ev.data as string };
      else if (ev.event === 'end') {
        yield { type: 'end', ...(ev.data as { state: 'done' | 'failed'; image?: ImageSummary; error?: { code: string; message: string } }) };
        return;
      }
    }
  }

  /** Server-Sent Events from `path`, each with its data parsed from JSON. */
  private async *sse(path: string, opts: CallOptions): AsyncGenerator<{ event: string; data: unknown }> {
    const res = await fetch(`${this.url}${path}`, { headers: { accept: 'text/event-stream' }, ...(opts.signal ? { signal: opts.signal } : {}) }).catch((err: Error) => {
      throw new VulcanApiError('connection_failed', `cannot reach the Vulcan server at ${this.url}: ${err.message}`, 0);
    });
    if (!res.ok || !res.body) throw errorFromBody(await res.json().catch(() => null), res.status);
    const queue: { event: string; data: unknown }[] = [];
    const parser = createParser({ onEvent: (ev: EventSourceMessage) => queue.push({ event: ev.event ?? 'message', data: JSON.parse(ev.data) as unknown }) });
    const decoder = new TextDecoder();
    for await (const chunk of res.body as AsyncIterable<Uint8Array>) {
      parser.feed(decoder.decode(chunk, { stream: true }));
      while (queue.length) {
        const ev = queue.shift();
        if (ev) yield ev;
      }
    }
  }

  /**
   * Streams a workload's output from the start: stdout and stderr chunks in order, then one
   * `end` event with the final record.
   */
  async *logs(id: string, opts: CallOptions = {}): AsyncGenerator<LogEvent> {
    for await (const ev of this.sse(`/v1/workloads/${encodeURIComponent(id)}/logs`, opts)) {
      if (ev.event === 'stdout' || ev.event === 'stderr') yield { type: ev.event, data: ev.data as string };
      else if (ev.event === 'end') {
        yield { type: 'end', record: ev.data as WorkloadRecord };
        return;
      }
    }
  }

}
