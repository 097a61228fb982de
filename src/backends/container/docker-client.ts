/**
 * A small typed client for the Docker Engine API (and Podman's Docker-compatible API) over
 * a unix socket, on undici. Only what the container backend needs. Errors from the daemon
 * become `DockerError` with the daemon's own message, so it can be reported as a reason.
 */
import type { Readable } from 'node:stream';
import { Agent, request, upgrade } from 'undici';
import type { Duplex } from 'node:stream';

/** The API version spoken: Docker 20.10+ and Podman 3+ serve it. */
export const DOCKER_API_VERSION = 'v1.41';
export const DEFAULT_DOCKER_SOCKET = '/var/run/docker.sock';

/** An answer from the daemon that is not a success. */
export class DockerError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly path: string,
  ) {
    super(message);
    this.name = 'DockerError';
  }
}

/**
 * The socket to use: `DOCKER_HOST` when it is `unix://PATH`, else /var/run/docker.sock.
 * Throws for a non-unix DOCKER_HOST (tcp:// and ssh:// are not supported).
 */
export function dockerSocketPath(env: NodeJS.ProcessEnv = process.env): string {
  const host = env.DOCKER_HOST;
  if (host === undefined || host === '') return DEFAULT_DOCKER_SOCKET;
  if (host.startsWith('unix://')) return host.slice('unix://'.length);
  throw new Error(`DOCKER_HOST=${host} is not supported: the container backend speaks to a unix:// socket only`);
}

export interface ContainerCreateBody {
  Image: string;
  Cmd: readonly string[];
  Env: readonly string[];
  WorkingDir: string;
  User: string;
  Labels: Record<string, string>;
  AttachStdin: boolean;
  AttachStdout: boolean;
  AttachStderr: boolean;
  OpenStdin: boolean;
  StdinOnce: boolean;
  Tty: false;
  NetworkDisabled: true;
  Hostname: string;
  HostConfig: {
    NetworkMode: 'none';
    CapDrop: readonly string[];
    SecurityOpt: readonly string[];
    ReadonlyRootfs: true;
    Tmpfs: Record<string, string>;
    Binds: readonly string[];
    Memory: number;
    MemorySwap: number;
    NanoCpus: number;
    PidsLimit: number;
    Runtime: string;
    /** `none` for workloads (output streams over attach); sandboxes keep a capped json-file log of their agent. */
    LogConfig: { Type: 'none' | 'json-file'; Config: Record<string, string> };
    Privileged: false;
    IpcMode: 'private';
    PidMode: '';
    /** docker-init as PID 1 (reaps orphaned zombies): sandboxes, whose agent is not an init. */
    Init: boolean;
  };
}

export interface ContainerState {
  Status: string;
  Running: boolean;
  OOMKilled: boolean;
  Paused: boolean;
  ExitCode: number;
  Error: string;
  Pid: number;
}

/** A multiplexed attach stream split into stdout and stderr. */
export interface AttachedStreams {
  /** Writes to the container's stdin, then closes it. */
  endStdin(data?: string | Buffer): void;
  /** Resolves when the daemon ends the stream (the container exited). */
  readonly done: Promise<void>;
  destroy(): void;
}

export class DockerClient {
  private readonly agent: Agent;
  private closed = false;

  constructor(readonly socketPath: string) {
    this.agent = new Agent({ connect: { socketPath }, keepAliveTimeout: 10_000, pipelining: 0 });
  }

  private url(path: string): string {
    return `http://docker/${DOCKER_API_VERSION}${path}`;
  }

  /** One request; JSON in and out. Throws DockerError for a non-2xx answer. */
  async call<T = unknown>(method: 'GET' | 'POST' | 'DELETE', path: string, body?: unknown, opts: { timeoutMs?: number; signal?: AbortSignal } = {}): Promise<T> {
    const res = await request(this.url(path), {
      method,
      dispatcher: this.agent,
      headers: body === undefined ? {} : { 'content-type': 'application/json' },
      ...(body === undefined ? {} : { body: JSON.stringify(body) }),
      headersTimeout: opts.timeoutMs ?? 60_000,
      bodyTimeout: opts.timeoutMs ?? 60_000,
      ...(opts.signal ? { signal: opts.signal } : {}),
    });
    const text = await res.body.text();
    if (res.statusCode >= 300) {
      let message = text.trim();
      try {
        message = (JSON.parse(text) as { message?: string }).message ?? message;
      } catch {
        // plain text
      }
      throw new DockerError(res.statusCode, message || `HTTP ${res.statusCode}`, path);
    }
    if (text === '') return undefined as T;
    try {
      return JSON.parse(text) as T;
    } catch {
      return text as T;
    }
  }

  ping(): Promise<unknown> {
    return this.call('GET', '/_ping', undefined, { timeoutMs: 5000 });
  }

  info(): Promise<{ Runtimes?: Record<string, unknown>; DefaultRuntime?: string; CgroupVersion?: string; CgroupDriver?: string; ServerVersion?: string; Name?: string }> {
    return this.call('GET', '/info', undefined, { timeoutMs: 10_000 });
  }

  version(): Promise<{ Version?: string; ApiVersion?: string; Components?: { Name: string }[] }> {
    return this.call('GET', '/version', undefined, { timeoutMs: 10_000 });
  }

  /** True when the daemon has the image `ref`. */
  async hasImage(ref: string): Promise<boolean> {
    try {
      await this.call('GET', `/images/${encodeURIComponent(ref)}/json`);
      return true;
    } catch (err) {
      if (err instanceof DockerError && err.status === 404) return false;
      throw err;
    }
  }

  /** `docker import`: a root filesystem tarball becomes the image `repo:tag`. */
  async importImage(tarball: Readable, repo: string, tag: string): Promise<void> {
    const res = await request(this.url(`/images/create?fromSrc=-&repo=${encodeURIComponent(repo)}&tag=${encodeURIComponent(tag)}`), {
      method: 'POST',
      dispatcher: this.agent,
      headers: { 'content-type': 'application/x-tar' },
      body: tarball,
      headersTimeout: 600_000,
      bodyTimeout: 600_000,
    });
    const text = await res.body.text();
    if (res.statusCode >= 300) throw new DockerError(res.statusCode, text.trim(), '/images/create');
    // The daemon streams JSON progress; an error arrives inside it with a 200.
    for (const line of text.split('\n')) {
      if (!line.trim()) continue;
      try {
        const m = JSON.parse(line) as { error?: string };
        if (m.error) throw new DockerError(500, m.error, '/images/create');
      } catch (err) {
        if (err instanceof DockerError) throw err;
      }
    }
  }

  /** Images whose reference matches `pattern` (e.g. `vulcan/*`). */
  listImages(pattern: string): Promise<{ Id: string; RepoTags: string[] | null }[]> {
    return this.call('GET', `/images/json?filters=${encodeURIComponent(JSON.stringify({ reference: [pattern] }))}`);
  }

  async removeImage(ref: string): Promise<void> {
    await this.call('DELETE', `/images/${encodeURIComponent(ref)}`);
  }

  async createContainer(name: string, body: ContainerCreateBody): Promise<string> {
    const r = await this.call<{ Id: string }>('POST', `/containers/create?name=${encodeURIComponent(name)}`, body);
    return r.Id;
  }

  startContainer(id: string): Promise<unknown> {
    return this.call('POST', `/containers/${id}/start`);
  }

  /**
   * Waits for the container to exit: `next-exit` (call before start so an instant exit is
   * not missed) or `not-running` (returns at once for a stopped container). `signal` ends the wait.
   */
  waitContainer(id: string, condition: 'next-exit' | 'not-running' = 'next-exit', signal?: AbortSignal): Promise<{ StatusCode: number; Error?: { Message?: string } | null }> {
    return this.call('POST', `/containers/${id}/wait?condition=${condition}`, undefined, { timeoutMs: 24 * 3600_000, ...(signal ? { signal } : {}) });
  }

  /** Freezes every process of a running container (the cgroup freezer). */
  async pauseContainer(id: string): Promise<void> {
    await this.call('POST', `/containers/${id}/pause`);
  }

  async unpauseContainer(id: string): Promise<void> {
    await this.call('POST', `/containers/${id}/unpause`);
  }

  /** The last `tail` lines of a container's stdout and stderr (json-file or local log drivers), demultiplexed. */
  async logs(id: string, tail: number): Promise<string> {
    const res = await request(this.url(`/containers/${id}/logs?stdout=1&stderr=1&tail=${tail}`), { method: 'GET', dispatcher: this.agent, headersTimeout: 10_000, bodyTimeout: 10_000 });
    const body = Buffer.from(await res.body.arrayBuffer());
    if (res.statusCode >= 300) throw new DockerError(res.statusCode, body.toString('utf8').trim(), `/containers/${id}/logs`);
    const parts: Buffer[] = [];
    for (let i = 0; i + 8 <= body.length; ) {
      const size = body.readUInt32BE(i + 4);
      parts.push(body.subarray(i + 8, i + 8 + size));
      i += 8 + size;
    }
    return Buffer.concat(parts).toString('utf8');
  }

  /** Changes a container's limits (running or not). */
  updateContainer(id: string, limits: { Memory: number; MemorySwap: number; NanoCpus: number; PidsLimit: number }): Promise<unknown> {
    return this.call('POST', `/containers/${id}/update`, limits);
  }

  async inspectContainer(id: string): Promise<{ Id: string; State: ContainerState; Config?: { Labels?: Record<string, string> | null } }> {
    return this.call('GET', `/containers/${id}/json`);
  }

  async killContainer(id: string): Promise<void> {
    await this.call('POST', `/containers/${id}/kill?signal=SIGKILL`).catch((err: unknown) => {
      // 404: already gone; 409: not running.
      if (!(err instanceof DockerError) || (err.status !== 404 && err.status !== 409)) throw err;
    });
  }

  async removeContainer(id: string): Promise<void> {
    await this.call('DELETE', `/containers/${id}?force=1&v=1`).catch((err: unknown) => {
      if (!(err instanceof DockerError) || err.status !== 404) throw err;
    });
  }

  /** Containers (running or not) with every one of `labels` (`key=value`). */
  listContainers(labels: readonly string[]): Promise<{ Id: string; Names: string[]; Labels: Record<string, string>; State: string }[]> {
    const filters = JSON.stringify({ label: labels });
    return this.call('GET', `/containers/json?all=1&filters=${encodeURIComponent(filters)}`);
  }

  /**
   * Attaches to a created container's stdin/stdout/stderr (a hijacked connection) and
   * demultiplexes the 8-byte-framed stream: [stream, 0, 0, 0, size (u32 BE)] + payload.
   */
  async attach(id: string, withStdin: boolean, onStdout: (b: Buffer) => void, onStderr: (b: Buffer) => void): Promise<AttachedStreams> {
    const { socket } = await upgrade(this.url(`/containers/${id}/attach?stream=1&stdout=1&stderr=1${withStdin ? '&stdin=1' : ''}`), {
      method: 'POST',
      dispatcher: this.agent,
      protocol: 'tcp',
    });
    return demux(socket, onStdout, onStderr);
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.agent.close();
  }
}

/** Splits Docker's multiplexed stream into its two outputs. */
export function demux(socket: Duplex, onStdout: (b: Buffer) => void, onStderr: (b: Buffer) => void): AttachedStreams {
  let pending: Buffer = Buffer.alloc(0);
  socket.on('data', (chunk: Buffer) => {
    pending = pending.length === 0 ? chunk : Buffer.concat([pending, chunk]);
    while (pending.length >= 8) {
      const size = pending.readUInt32BE(4);
      if (pending.length < 8 + size) break;
      const stream = pending[0];
      const payload = pending.subarray(8, 8 + size);
      if (stream === 2) onStderr(payload);
      else if (stream === 1 || stream === 0) onStdout(payload);
      pending = pending.subarray(8 + size);
    }
  });
  const done = new Promise<void>((resolve) => {
    socket.on('end', () => resolve());
    socket.on('close', () => resolve());
    socket.on('error', () => resolve());
  });
  return {
    endStdin(data) {
      if (data !== undefined && data.length > 0) socket.write(data);
      socket.end();
    },
    done,
    destroy: () => socket.destroy(),
  };
}
