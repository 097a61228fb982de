/**
 * Sandboxes in the SDK: long-lived environments you run commands in, move files in and
 * out of, and preview the web servers of.
 *
 * @example
 * const sbx = await Sandbox.create({ url: 'http://127.0.0.1:7423', ttlS: 600 });
 * try {
 *   await sbx.files.write('/work/hello.py', 'print("hi")');
 *   const r = await sbx.exec(['python3', '/work/hello.py']);
 *   console.log(r.stdout); // hi
 * } finally {
 *   await sbx.destroy();
 * }
 *
 * Every call that can take long accepts an `AbortSignal` (`signal`).
 */
import { Readable } from 'node:stream';
import type { ReadableStream as WebReadableStream } from 'node:stream/web';
import { createParser, type EventSourceMessage } from 'eventsource-parser';
import type { SandboxRecord } from '../store/sandboxes.js';
import { DEFAULT_URL } from './client.js';
import { errorFromBody, VulcanApiError } from './errors.js';

export type { SandboxRecord };

/** 410: the sandbox was destroyed (or lost); create a new one. */
export class SandboxDestroyedError extends VulcanApiError {
  override name = 'SandboxDestroyedError';
}

/** Options of `Sandbox.create`. Units are in the names. */
export interface SandboxCreateOptions {
  /** Base URL of a Vulcan server. Default http://127.0.0.1:7423 (the CLI reads VULCAN_URL). */
  readonly url?: string;
  /** `auto` (default) or a backend that hosts sandboxes (`namespace`). */
  readonly isolation?: string;
  readonly image?: string;
  readonly cpus?: number;
  readonly memoryMB?: number;
  readonly diskMB?: number;
  /** Seconds until the sandbox is destroyed. Server default 3600. */
  readonly ttlS?: number;
  /** Seconds without activity before it is stopped; 0 never. Server default 900. */
  readonly idleTimeoutS?: number;
  readonly env?: Readonly<Record<string, string>>;
  readonly metadata?: Readonly<Record<string, string>>;
  readonly signal?: AbortSignal;
}

export interface ExecOptions {
  readonly env?: Readonly<Record<string, string>>;
  readonly cwd?: string;
  /** Seconds before the command is killed. Server default 300. */
  readonly timeoutS?: number;
  /** Text for the command's stdin. */
  readonly stdin?: string;
  readonly signal?: AbortSignal;
}

/** What a finished command gave. A non-zero `exit_code` is not an error. */
export interface ExecResult {
  exit_code: number | null;
  signal: string | null;
  stdout: string;
  stderr: string;
  stdout_truncated: boolean;
  stderr_truncated: boolean;
  timed_out: boolean;
  duration_ms: number;
}

/** One event of `execStream`. */
export type ExecEvent =
  | { readonly type: 'stdout' | 'stderr'; readonly data: string }
  | { readonly type: 'exit'; readonly exit_code: number | null; readonly signal: string | null; readonly timed_out: boolean; readonly duration_ms: number };

/** One file or directory. `mode` holds the permission bits; `mtime` is ISO 8601. */
export interface FileEntry {
  name: string;
  path: string;
  type: 'file' | 'dir' | 'symlink' | 'other';
  size: number;
  mode: number;
  mtime: string;
  target?: string;
}

type Body = string | Uint8Array | Readable | ReadableStream<Uint8Array>;

interface CallOptions {
  readonly signal?: AbortSignal | undefined;
}

/** A sandbox on a Vulcan server. */
export class Sandbox {
  /** The files API of this sandbox. Paths are absolute inside the sandbox. */
  readonly files: SandboxFiles;

  private constructor(
    readonly url: string,
    /** The sandbox's record as last seen (refresh with `refresh()`). */
    public info: SandboxRecord,
  ) {
    this.files = new SandboxFiles(this);
  }

  get id(): string {
    return this.info.id;
  }

  /** Creates a sandbox and waits until it can run commands. */
  static async create(opts: SandboxCreateOptions = {}): Promise<Sandbox> {
    const url = (opts.url ?? DEFAULT_URL).replace(/\/+$/, '');
    const resources = {
      ...(opts.cpus !== undefined ? { cpus: opts.cpus } : {}),
      ...(opts.memoryMB !== undefined ? { mem_mb: opts.memoryMB } : {}),
      ...(opts.diskMB !== undefined ? { disk_mb: opts.diskMB } : {}),
    };
    const body = {
      ...(opts.isolation ? { isolation: opts.isolation } : {}),
      ...(opts.image ? { image: opts.image } : {}),
      ...(Object.keys(resources).length ? { resources } : {}),
      ...(opts.ttlS !== undefined ? { ttl_s: opts.ttlS } : {}),
      ...(opts.idleTimeoutS !== undefined ? { idle_timeout_s: opts.idleTimeoutS } : {}),
      ...(opts.env ? { env: opts.env } : {}),
      ...(opts.metadata ? { metadata: opts.metadata } : {}),
    };
    const rec = await call<SandboxRecord>(url, 'POST', '/v1/sandboxes', { json: body, signal: opts.signal });
    return new Sandbox(url, rec);
  }

  /** A handle on an existing sandbox. */
  static async connect(id: string, opts: { url?: string; signal?: AbortSignal } = {}): Promise<Sandbox> {
    const url = (opts.url ?? DEFAULT_URL).replace(/\/+$/, '');
    return new Sandbox(url, await call<SandboxRecord>(url, 'GET', `/v1/sandboxes/${encodeURIComponent(id)}`, { signal: opts.signal }));
  }

  /** Sandboxes on a server, filtered by state and metadata. */
  static async list(opts: { url?: string; state?: string; metadata?: Readonly<Record<string, string>>; signal?: AbortSignal } = {}): Promise<SandboxRecord[]> {
    const url = (opts.url ?? DEFAULT_URL).replace(/\/+$/, '');
    const qs = new URLSearchParams();
    if (opts.state) qs.set('state', opts.state);
    for (const [k, v] of Object.entries(opts.metadata ?? {})) qs.set(`metadata.${k}`, v);
    const s = qs.toString();
    return (await call<{ items: SandboxRecord[] }>(url, 'GET', `/v1/sandboxes${s ? `?${s}` : ''}`, { signal: opts.signal })).items;
  }

  /** @internal */
  path(suffix: string): string {
    return `/v1/sandboxes/${encodeURIComponent(this.id)}${suffix}`;
  }

  /** @internal */
  call<T>(method: string, suffix: string, opts: { json?: unknown; body?: Body; signal?: AbortSignal | undefined; raw?: boolean } = {}): Promise<T> {
    return call<T>(this.url, method, this.path(suffix), opts);
  }

  /** Reads the record again. */
  async refresh(opts: CallOptions = {}): Promise<SandboxRecord> {
    this.info = await this.call<SandboxRecord>('GET', '', opts);
    return this.info;
  }

  /** Runs an argv and waits for it. */
  exec(cmd: readonly string[], opts: ExecOptions = {}): Promise<ExecResult> {
    return this.call<ExecResult>('POST', '/exec', { json: execBody(cmd, opts), signal: opts.signal });
  }

  /** Runs an argv and yields its output as it comes, then one `exit` event. */
  async *execStream(cmd: readonly string[], opts: ExecOptions = {}): AsyncGenerator<ExecEvent> {
    const res = await send(this.url, 'POST', this.path('/exec'), { json: execBody(cmd, opts), signal: opts.signal, accept: 'text/event-stream' });
    if (!res.body) throw new VulcanApiError('http_error', 'no body in the stream answer', res.status);
    const queue: ExecEvent[] = [];
    let failure: VulcanApiError | undefined;
    const parser = createParser({
      onEvent: (ev: EventSourceMessage) => {
        const data: unknown = JSON.parse(ev.data);
        if (ev.event === 'stdout' || ev.event === 'stderr') queue.push({ type: ev.event, data: data as string });
        else if (ev.event === 'exit') queue.push({ type: 'exit', ...(data as Omit<Extract<ExecEvent, { type: 'exit' }>, 'type'>) });
        else if (ev.event === 'error') failure = errorFromBody({ error: data }, 500);
      },
    });
    const decoder = new TextDecoder();
    for await (const chunk of res.body as AsyncIterable<Uint8Array>) {
      parser.feed(decoder.decode(chunk, { stream: true }));
      while (queue.length) {
        const ev = queue.shift();
        if (!ev) break;
        yield ev;
        if (ev.type === 'exit') return;
      }
      if (failure) throw failure;
    }
    if (failure) throw failure;
    throw new VulcanApiError('connection_failed', 'the exec stream ended without an exit event', 0);
  }

  /** The URL that reaches `port` inside the sandbox (HTTP and WebSocket). */
  previewUrl(port: number, path = '/'): string {
    return `${this.url}${this.path(`/ports/${port}`)}${path.startsWith('/') ? path : `/${path}`}`;
  }

  /** The WebSocket URL of an interactive command (default: a login shell on a PTY). */
  shellUrl(opts: { cmd?: readonly string[]; rows?: number; cols?: number; pty?: boolean } = {}): string {
    const qs = new URLSearchParams();
    for (const a of opts.cmd ?? []) qs.append('cmd', a);
    if (opts.rows) qs.set('rows', String(opts.rows));
    if (opts.cols) qs.set('cols', String(opts.cols));
    if (opts.pty === false) qs.set('pty', '0');
    const s = qs.toString();
    return `${this.url.replace(/^http/, 'ws')}${this.path('/exec/ws')}${s ? `?${s}` : ''}`;
  }

  /** Freezes the sandbox (memory and processes kept; the TTL clock stops). */
  async pause(opts: CallOptions = {}): Promise<SandboxRecord> {
    this.info = await this.call<SandboxRecord>('POST', '/pause', { json: {}, signal: opts.signal });
    return this.info;
  }

  async resume(opts: CallOptions = {}): Promise<SandboxRecord> {
    this.info = await this.call<SandboxRecord>('POST', '/resume', { json: {}, signal: opts.signal });
    return this.info;
  }

  /** Sets the TTL to `ttlS` seconds from now. */
  async setTimeout(ttlS: number, opts: CallOptions = {}): Promise<SandboxRecord> {
    this.info = await this.call<SandboxRecord>('POST', '/timeout', { json: { ttl_s: ttlS }, signal: opts.signal });
    return this.info;
  }

  /** Destroys the sandbox. Idempotent. */
  async destroy(opts: CallOptions = {}): Promise<void> {
    await this.call<null>('DELETE', '', { signal: opts.signal });
  }
}

/** The files API of one sandbox. */
export class SandboxFiles {
  constructor(private readonly sbx: Sandbox) {}

  private q(params: Record<string, string | number | boolean | undefined>): string {
    const qs = new URLSearchParams();
    for (const [k, v] of Object.entries(params)) if (v !== undefined) qs.set(k, String(v));
    return `?${qs.toString()}`;
  }

  /** A file's bytes. */
  async read(path: string, opts: CallOptions = {}): Promise<Buffer> {
    const res = await send(this.sbx.url, 'GET', this.sbx.path(`/files${this.q({ path })}`), { signal: opts.signal });
    return Buffer.from(await res.arrayBuffer());
  }

  /** A file's bytes as a stream (for large files). */
  async readStream(path: string, opts: CallOptions = {}): Promise<Readable> {
    const res = await send(this.sbx.url, 'GET', this.sbx.path(`/files${this.q({ path })}`), { signal: opts.signal });
    if (!res.body) return Readable.from([]);
    return Readable.fromWeb(res.body as WebReadableStream<Uint8Array>);
  }

  /** Writes a file (parents are made); `data` may be a stream for large files. `mode` is octal, e.g. 0o755. */
  write(path: string, data: Body, opts: CallOptions & { mode?: number } = {}): Promise<{ path: string; size: number; mode: number }> {
    return this.sbx.call('PUT', `/files${this.q({ path, mode: opts.mode?.toString(8) })}`, { body: data, signal: opts.signal });
  }

  list(path: string, opts: CallOptions & { depth?: number } = {}): Promise<{ entries: FileEntry[]; truncated: boolean }> {
    return this.sbx.call('GET', `/files/list${this.q({ path, depth: opts.depth })}`, { signal: opts.signal });
  }

  stat(path: string, opts: CallOptions = {}): Promise<FileEntry> {
    return this.sbx.call('GET', `/files/stat${this.q({ path })}`, { signal: opts.signal });
  }

  move(from: string, to: string, opts: CallOptions = {}): Promise<{ from: string; to: string }> {
    return this.sbx.call('POST', '/files/move', { json: { from, to }, signal: opts.signal });
  }

  /** Changes permission bits (0 to 0o777; setuid, setgid and sticky are refused). */
  chmod(path: string, mode: number, opts: CallOptions = {}): Promise<{ path: string; mode: number }> {
    return this.sbx.call('POST', '/files/chmod', { json: { path, mode }, signal: opts.signal });
  }

  mkdir(path: string, opts: CallOptions = {}): Promise<{ path: string }> {
    return this.sbx.call('POST', '/files/mkdir', { json: { path }, signal: opts.signal });
  }

  async remove(path: string, opts: CallOptions & { recursive?: boolean } = {}): Promise<void> {
    await this.sbx.call('DELETE', `/files${this.q({ path, recursive: opts.recursive })}`, { signal: opts.signal });
  }

  /** Paths matching a glob (`*`, `?`, `**`, `[…]`); relative patterns are under /work. */
  glob(pattern: string, opts: CallOptions = {}): Promise<{ paths: string[]; truncated: boolean }> {
    return this.sbx.call('GET', `/files/glob${this.q({ pattern })}`, { signal: opts.signal });
  }

  /** A tar of a directory, as a stream. */
  async downloadArchive(path: string, opts: CallOptions = {}): Promise<Readable> {
    const res = await send(this.sbx.url, 'GET', this.sbx.path(`/archive${this.q({ path })}`), { signal: opts.signal });
    if (!res.body) return Readable.from([]);
    return Readable.fromWeb(res.body as WebReadableStream<Uint8Array>);
  }

  /** Extracts a tar into a directory. */
  async uploadArchive(path: string, tar: Body, opts: CallOptions = {}): Promise<void> {
    await this.sbx.call('PUT', `/archive${this.q({ path })}`, { body: tar, signal: opts.signal });
  }
}

function execBody(cmd: readonly string[], opts: ExecOptions): Record<string, unknown> {
  return {
    cmd,
    ...(opts.env ? { env: opts.env } : {}),
    ...(opts.cwd ? { cwd: opts.cwd } : {}),
    ...(opts.timeoutS !== undefined ? { timeout_s: opts.timeoutS } : {}),
    ...(opts.stdin !== undefined ? { stdin: opts.stdin } : {}),
  };
}

async function send(url: string, method: string, path: string, opts: { json?: unknown; body?: Body; signal?: AbortSignal | undefined; accept?: string }): Promise<Response> {
  const headers: Record<string, string> = {};
  let body: BodyInit | undefined;
  let duplex = false;
  if (opts.json !== undefined) {
    headers['content-type'] = 'application/json';
    body = JSON.stringify(opts.json);
  } else if (opts.body !== undefined) {
    headers['content-type'] = 'application/octet-stream';
    const b = opts.body;
    if (typeof b === 'string' || b instanceof Uint8Array) body = b as BodyInit;
    else {
      body = (b instanceof Readable ? Readable.toWeb(b) : b) as unknown as BodyInit;
      duplex = true;
    }
  }
  if (opts.accept) headers.accept = opts.accept;
  let res: Response;
  try {
    const init: RequestInit & { duplex?: 'half' } = {
      method,
      headers,
      ...(body === undefined ? {} : { body }),
      ...(duplex ? { duplex: 'half' } : {}),
      ...(opts.signal ? { signal: opts.signal } : {}),
    };
    res = await fetch(`${url}${path}`, init);
  } catch (err) {
    if ((err as Error).name === 'AbortError' || (err as Error).name === 'TimeoutError') throw err;
    throw new VulcanApiError('connection_failed', `cannot reach the Vulcan server at ${url} (set VULCAN_URL): ${(err as Error).message}`, 0);
  }
  if (!res.ok) {
    const text = await res.text();
    let parsed: unknown = text;
    try {
      parsed = JSON.parse(text);
    } catch {
      // not JSON
    }
    const e = errorFromBody(parsed, res.status);
    if (e.code === 'sandbox_destroyed') throw new SandboxDestroyedError(e.code, e.message, e.status, e.details);
    throw e;
  }
  return res;
}

async function call<T>(url: string, method: string, path: string, opts: { json?: unknown; body?: Body; signal?: AbortSignal | undefined }): Promise<T> {
  const res = await send(url, method, path, opts);
  const text = await res.text();
  return (text === '' ? null : JSON.parse(text)) as T;
}
