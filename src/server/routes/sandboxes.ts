/**
 * The sandboxes API (issue 6): lifecycle, exec (buffered, Server-Sent Events, WebSocket
 * PTY), files, archives and the preview proxy. All the work is the sandbox manager's
 * (src/sandboxes/manager.ts); this file maps HTTP to it.
 *
 * Raw bodies (file uploads, archives, proxied requests) are registered in a child scope
 * whose only content-type parser passes the request stream through untouched, so large
 * files stream and the JSON body limit does not apply to them.
 */
import http from 'node:http';
import type { Duplex } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { Type, type Static } from 'typebox';
import { WebSocketServer, type WebSocket } from 'ws';
import { VulcanError } from '../../core/errors.js';
import { ISOLATIONS } from '../../core/types.js';
import { SANDBOX_STATES, type SandboxState } from '../../core/sandbox.js';
import { SANDBOX_DEFAULTS, SANDBOX_RANGES, type ExecSession, type SandboxManager } from '../../sandboxes/manager.js';
import { fileMode, sandboxPath } from '../../sandboxes/paths.js';
import type { AppParts } from '../app.js';
import { ENV_NAME_PATTERN } from '../schemas.js';
import { SseStream } from '../sse.js';

const Env = Type.Record(Type.String({ pattern: ENV_NAME_PATTERN }), Type.String({ maxLength: 65536 }), { additionalProperties: false });
const Metadata = Type.Record(Type.String({ minLength: 1, maxLength: 128 }), Type.String({ maxLength: 1024 }), { maxProperties: 64 });

export const CreateSandboxBody = Type.Object(
  {
    isolation: Type.Optional(Type.Enum(ISOLATIONS, { description: 'auto (default) or a backend that hosts sandboxes' })),
    image: Type.Optional(Type.String({ minLength: 1, maxLength: 256, description: 'namespace: "host" (the host\'s read-only /usr), the default' })),
    resources: Type.Optional(
      Type.Object(
        {
          cpus: Type.Optional(Type.Number({ description: `CPU quota in cores. Default ${SANDBOX_DEFAULTS.cpus}.` })),
          mem_mb: Type.Optional(Type.Integer({ description: `Memory cap in MiB. Default ${SANDBOX_DEFAULTS.memMB}. On namespace, files in /work and /tmp count too.` })),
          disk_mb: Type.Optional(Type.Integer({ description: `Size cap of /work and of /tmp in MiB. Default ${SANDBOX_DEFAULTS.diskMB}.` })),
        },
        { additionalProperties: false },
      ),
    ),
    ttl_s: Type.Optional(Type.Number({ description: `Seconds until it is destroyed. Default ${SANDBOX_DEFAULTS.ttlS}.` })),
    idle_timeout_s: Type.Optional(Type.Number({ description: `Seconds without exec, file or preview traffic before it is stopped; 0 never. Default ${SANDBOX_DEFAULTS.idleTimeoutS}.` })),
    env: Type.Optional(Env),
    metadata: Type.Optional(Metadata),
  },
  { additionalProperties: false },
);

const ExecBody = Type.Object(
  {
    cmd: Type.Array(Type.String({ maxLength: 131072 }), { minItems: 1, maxItems: 4096, description: 'argv; never a host shell string (use ["sh","-c","…"] for a shell inside)' }),
    env: Type.Optional(Env),
    cwd: Type.Optional(Type.String({ minLength: 1, maxLength: 4096 })),
    timeout_s: Type.Optional(Type.Number({ description: `Default ${SANDBOX_DEFAULTS.execTimeoutS}.` })),
    stdin: Type.Optional(Type.String({ description: 'Text written to stdin, which is then closed' })),
  },
  { additionalProperties: false },
);
type ExecBodyT = Static<typeof ExecBody>;

const SandboxParams = Type.Object({ id: Type.String({ maxLength: 64 }) });
const PathQuery = Type.Object({ path: Type.Optional(Type.String()) });
const err = Type.Ref('Error');
const errors = { 400: err, 404: err, 409: err, 410: err, 413: err, 422: err, 503: err };

/** Bytes of each stream a buffered exec keeps. */
const EXEC_OUTPUT_CAP_BYTES = 1024 * 1024;

function execTimeoutMs(v: number | undefined): number {
  const s = v ?? SANDBOX_DEFAULTS.execTimeoutS;
  if (!Number.isFinite(s) || s < SANDBOX_RANGES.exec_timeout_s.min || s > SANDBOX_RANGES.exec_timeout_s.max) {
    throw new VulcanError('limit_out_of_range', `timeout_s must be from ${SANDBOX_RANGES.exec_timeout_s.min} to ${SANDBOX_RANGES.exec_timeout_s.max}; got ${String(s)}`, { details: { field: 'timeout_s' } });
  }
  return s * 1000;
}

function port(raw: unknown): number {
  const n = Number(raw);
  if (typeof raw !== 'string' || !/^\d{1,5}$/.test(raw) || n < 1 || n > 65535) throw new VulcanError('invalid_request', `port must be 1..65535; got ${JSON.stringify(raw)}`, { details: { field: 'port' } });
  return n;
}

const HOP_BY_HOP = new Set(['connection', 'keep-alive', 'proxy-authenticate', 'proxy-authorization', 'te', 'trailer', 'transfer-encoding', 'upgrade', 'proxy-connection']);

/** The part of a preview URL after `/ports/:port`, query included. */
function previewRest(url: string): string {
  const m = /^\/v1\/sandboxes\/[^/?]+\/ports\/[^/?]+(.*)$/.exec(url);
  const rest = m?.[1] ?? '';
  if (rest === '') return '/';
  return rest.startsWith('?') ? `/${rest}` : rest;
}

function errorText(e: VulcanError): string {
  return JSON.stringify(e.toJSON());
}

export function registerSandboxRoutes(app: FastifyInstance, parts: AppParts): void {
  const manager: SandboxManager = parts.sandboxes;
  const id = (req: FastifyRequest) => (req.params as { id: string }).id;

  app.post('/v1/sandboxes', { schema: { summary: 'Create a sandbox', body: CreateSandboxBody, response: { 201: Type.Unknown(), ...errors } } }, async (req, reply) => {
    const ac = new AbortController();
    const onClose = () => {
      if (!reply.raw.writableFinished) ac.abort();
    };
    reply.raw.on('close', onClose);
    try {
      const rec = await manager.create(req.body as Static<typeof CreateSandboxBody>, ac.signal);
      return await reply.code(201).header('location', `/v1/sandboxes/${rec.id}`).send(rec);
    } finally {
      reply.raw.off('close', onClose);
    }
  });

  app.get('/v1/sandboxes', { schema: { summary: 'List sandboxes; filter with state= and metadata.KEY=VALUE', response: { 200: Type.Unknown(), 400: err } } }, (req) => {
    const q = req.query as Record<string, string | string[] | undefined>;
    const state = q.state;
    if (state !== undefined && (typeof state !== 'string' || !(SANDBOX_STATES as readonly string[]).includes(state))) {
      throw new VulcanError('invalid_request', `state must be one of ${SANDBOX_STATES.join(', ')}`, { details: { field: 'state' } });
    }
    const metadata: Record<string, string> = {};
    for (const [k, v] of Object.entries(q)) if (k.startsWith('metadata.') && typeof v === 'string') metadata[k.slice('metadata.'.length)] = v;
    return { items: manager.list({ ...(state ? { state: state as SandboxState } : {}), metadata }) };
  });

  app.get('/v1/sandboxes/capabilities', { schema: { summary: 'Which backends host sandboxes, and what each can do' } }, () => ({ backends: manager.capabilities() }));

  app.get('/v1/sandboxes/:id', { schema: { summary: 'One sandbox', params: SandboxParams, response: { 200: Type.Unknown(), 404: err } } }, (req) => manager.get(id(req)));

  app.delete('/v1/sandboxes/:id', { schema: { summary: 'Destroy a sandbox (204)', params: SandboxParams, response: { 204: Type.Null(), 404: err } } }, async (req, reply) => {
    await manager.destroy(id(req));
    return reply.code(204).send();
  });

  app.post('/v1/sandboxes/:id/pause', { schema: { summary: 'Freeze a sandbox (memory and processes kept)', params: SandboxParams, response: { 200: Type.Unknown(), ...errors } } }, (req) => manager.pause(id(req)));
  app.post('/v1/sandboxes/:id/resume', { schema: { summary: 'Thaw a paused sandbox', params: SandboxParams, response: { 200: Type.Unknown(), ...errors } } }, (req) => manager.resume(id(req)));
  app.post(
    '/v1/sandboxes/:id/timeout',
    { schema: { summary: 'Set the TTL to ttl_s seconds from now', params: SandboxParams, body: Type.Object({ ttl_s: Type.Number() }, { additionalProperties: false }), response: { 200: Type.Unknown(), ...errors } } },
    (req) => manager.setTimeout(id(req), (req.body as { ttl_s: number }).ttl_s),
  );

  app.post(
    '/v1/sandboxes/:id/exec',
    { schema: { summary: 'Run an argv; with Accept: text/event-stream, stream stdout, stderr and exit events', params: SandboxParams, body: ExecBody, response: { 200: Type.Unknown(), ...errors } } },
    async (req, reply) => {
      const body = req.body as ExecBodyT;
      const execReq = {
        cmd: body.cmd,
        ...(body.env ? { env: body.env } : {}),
        ...(body.cwd !== undefined ? { cwd: sandboxPath(body.cwd, 'cwd') } : {}),
        timeoutMs: execTimeoutMs(body.timeout_s),
        ...(body.stdin !== undefined ? { stdin: Buffer.from(body.stdin) } : {}),
      };
      if ((req.headers.accept ?? '').includes('text/event-stream')) {
        const session = await manager.openExec(id(req), execReq);
        streamExec(reply, session);
        return reply;
      }
      const ac = new AbortController();
      const onClose = () => {
        if (!reply.raw.writableFinished) ac.abort();
      };
      reply.raw.on('close', onClose);
      try {
        return await manager.exec(id(req), execReq, EXEC_OUTPUT_CAP_BYTES, ac.signal);
      } finally {
        reply.raw.off('close', onClose);
      }
    },
  );

  // Files: JSON answers.
  const file = (what: string) => ({ schema: { summary: what, params: SandboxParams, response: { 200: Type.Unknown(), ...errors } } });
  app.get('/v1/sandboxes/:id/files/stat', { ...file('One entry: { name, path, type, size, mode, mtime }'), schema: { ...file('').schema, summary: 'One entry: { name, path, type, size, mode, mtime }', querystring: PathQuery } }, async (req) => {
    const p = sandboxPath((req.query as { path?: string }).path);
    return (await manager.call(id(req), { op: 'stat', path: p }, p)).entry;
  });
  app.get('/v1/sandboxes/:id/files/list', file('Entries under a directory, to depth (default 1)'), async (req) => {
    const q = req.query as { path?: string; depth?: string };
    const p = sandboxPath(q.path ?? '/work');
    const depth = q.depth === undefined ? 1 : Number(q.depth);
    if (!Number.isInteger(depth) || depth < 1 || depth > 32) throw new VulcanError('invalid_request', 'depth must be an integer from 1 to 32', { details: { field: 'depth' } });
    const r = await manager.call(id(req), { op: 'list', path: p, depth }, p);
    return { entries: r.entries, truncated: r.truncated };
  });
  app.get('/v1/sandboxes/:id/files/glob', file('Paths matching a glob (*, ?, **, [..]); relative patterns are under /work'), async (req) => {
    const raw = (req.query as { pattern?: string }).pattern;
    const pattern = sandboxPath(typeof raw === 'string' && raw !== '' && !raw.startsWith('/') ? `/work/${raw}` : raw, 'pattern');
    const r = await manager.call(id(req), { op: 'glob', pattern }, pattern);
    return { paths: r.paths, truncated: r.truncated };
  });
  app.post('/v1/sandboxes/:id/files/move', { schema: { ...file('Move or rename').schema, body: Type.Object({ from: Type.String(), to: Type.String() }, { additionalProperties: false }) } }, async (req) => {
    const b = req.body as { from: string; to: string };
    const from = sandboxPath(b.from, 'from');
    const to = sandboxPath(b.to, 'to');
    await manager.call(id(req), { op: 'move', from, to }, from);
    return { from, to };
  });
  app.post('/v1/sandboxes/:id/files/chmod', { schema: { ...file('Change a mode (no setuid, setgid or sticky bits)').schema, body: Type.Object({ path: Type.String(), mode: Type.Union([Type.Integer(), Type.String()]) }, { additionalProperties: false }) } }, async (req) => {
    const b = req.body as { path: string; mode: number | string };
    const p = sandboxPath(b.path);
    const mode = fileMode(b.mode);
    await manager.call(id(req), { op: 'chmod', path: p, mode }, p);
    return { path: p, mode };
  });
  app.post('/v1/sandboxes/:id/files/mkdir', { schema: { ...file('Make a directory and its parents').schema, body: Type.Object({ path: Type.String() }, { additionalProperties: false }) } }, async (req) => {
    const p = sandboxPath((req.body as { path: string }).path);
    await manager.call(id(req), { op: 'mkdir', path: p }, p);
    return { path: p };
  });
  app.delete('/v1/sandboxes/:id/files', { schema: { summary: 'Delete a file, or a directory (recursive=true for a non-empty one); 204', params: SandboxParams, response: { 204: Type.Null(), ...errors } } }, async (req, reply) => {
    const q = req.query as { path?: string; recursive?: string };
    const p = sandboxPath(q.path);
    await manager.call(id(req), { op: 'remove', path: p, recursive: q.recursive === 'true' || q.recursive === '1' }, p);
    return reply.code(204).send();
  });

  // Raw bodies: files, archives, preview.
  void app.register((raw, _opts, registered) => {
    raw.removeAllContentTypeParsers();
    raw.addContentTypeParser('*', (_req, _payload, done) => done(null));

    raw.get('/v1/sandboxes/:id/files', file('Read a file (raw bytes, streamed)'), async (req, reply) => {
      const p = sandboxPath((req.query as { path?: string }).path);
      const { meta, body, done } = await manager.openRead(id(req), { op: 'read', path: p }, p);
      reply.hijack();
      reply.raw.writeHead(200, {
        'content-type': 'application/octet-stream',
        'content-length': String(meta.size),
        'x-vulcan-mode': (Number(meta.mode) || 0).toString(8).padStart(4, '0'),
        'last-modified': new Date(String(meta.mtime)).toUTCString(),
      });
      await pipeline(body, reply.raw).catch(() => reply.raw.destroy());
      done();
    });

    raw.put('/v1/sandboxes/:id/files', file('Write a file from the raw body (streamed), making parent directories'), async (req) => {
      const q = req.query as { path?: string; mode?: string };
      const p = sandboxPath(q.path);
      const mode = q.mode === undefined ? 0o644 : fileMode(q.mode);
      const r = await manager.writeFrom(id(req), { op: 'write', path: p, mode }, req.raw, p);
      const expected = req.headers['content-length'];
      if (expected !== undefined && Number(expected) !== r.size) throw new VulcanError('invalid_request', `the upload was cut short: ${String(r.size)} of ${expected} bytes arrived`);
      return { path: p, size: r.size, mode };
    });

    raw.get('/v1/sandboxes/:id/archive', file('A tar of a directory (streamed)'), async (req, reply) => {
      const p = sandboxPath((req.query as { path?: string }).path ?? '/work');
      const { body, done } = await manager.openRead(id(req), { op: 'tar-out', path: p }, p);
      reply.hijack();
      reply.raw.writeHead(200, { 'content-type': 'application/x-tar' });
      await pipeline(body, reply.raw).catch(() => reply.raw.destroy());
      done();
    });

    raw.put('/v1/sandboxes/:id/archive', file('Extract a tar body into a directory'), async (req) => {
      const p = sandboxPath((req.query as { path?: string }).path ?? '/work');
      await manager.writeFrom(id(req), { op: 'tar-in', path: p }, req.raw, p);
      return { path: p };
    });

    const preview = async (req: FastifyRequest, reply: FastifyReply) => {
      const params = req.params as { id: string; port: string };
      const { sock, done } = await manager.connectPort(params.id, port(params.port));
      reply.hijack();
      proxyHttp(req, reply, sock, done, `/v1/sandboxes/${params.id}/ports/${params.port}`);
    };
    const previewSchema = { schema: { summary: 'Preview: proxied to the port inside the sandbox (HTTP and WebSocket)', hide: false } };
    raw.all('/v1/sandboxes/:id/ports/:port', previewSchema, preview);
    raw.all('/v1/sandboxes/:id/ports/:port/*', previewSchema, preview);
    registered();
  });

  registerUpgrades(app, manager);
}

function proxyHttp(req: FastifyRequest, reply: FastifyReply, sock: Duplex, done: () => void, prefix: string): void {
  const headers: http.OutgoingHttpHeaders = {};
  for (const [k, v] of Object.entries(req.headers)) if (!HOP_BY_HOP.has(k) && v !== undefined) headers[k] = v;
  headers['x-forwarded-prefix'] = prefix;
  headers['x-forwarded-for'] = req.ip;
  headers.connection = 'close';
  const res = reply.raw;
  const up = http.request({ method: req.method, path: previewRest(req.raw.url ?? '/'), headers, createConnection: () => sock });
  up.on('response', (u) => {
    const out: Record<string, string | string[]> = {};
    for (const [k, v] of Object.entries(u.headers)) if (!HOP_BY_HOP.has(k) && v !== undefined) out[k] = v;
    res.writeHead(u.statusCode ?? 502, out);
    pipeline(u, res)
      .catch(() => res.destroy())
      .finally(done);
  });
  up.on('error', (e) => {
    done();
    if (!res.headersSent) {
      res.writeHead(503, { 'content-type': 'application/json' });
      res.end(errorText(new VulcanError('backend_unavailable', `the preview upstream failed: ${e.message}`)));
    } else res.destroy();
  });
  res.on('close', () => {
    if (!res.writableFinished) {
      up.destroy();
      done();
    }
  });
  req.raw.pipe(up);
}

function streamExec(reply: FastifyReply, session: ExecSession): void {
  reply.hijack();
  const sse = new SseStream(reply.raw);
  let paused = false;
  session.onOutput((stream, chunk) => {
    sse.send(stream, chunk.toString('utf8'));
    // Back-pressure: a slow reader stops the command's output, not the server's memory.
    if (!paused && reply.raw.writableNeedDrain) {
      paused = true;
      session.pause();
      reply.raw.once('drain', () => {
        paused = false;
        session.resume();
      });
    }
  });
  sse.onClose(() => session.close());
  session.exited.then(
    (exit) => {
      sse.send('exit', exit);
      sse.close();
    },
    (e: unknown) => {
      const v = e instanceof VulcanError ? e : new VulcanError('internal', 'the command was lost');
      sse.send('error', v.toJSON().error);
      sse.close();
    },
  );
}

function httpError(socket: Duplex, e: unknown): void {
  const v = e instanceof VulcanError ? e : new VulcanError('internal', 'internal error; see the server log');
  const body = errorText(v);
  socket.end(`HTTP/1.1 ${v.status} ${http.STATUS_CODES[v.status] ?? ''}\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`);
}

/** WebSockets: the exec shell, and the preview relay for WebSocket upgrades. */
function registerUpgrades(app: FastifyInstance, manager: SandboxManager): void {
  const wss = new WebSocketServer({ noServer: true, maxPayload: 4 * 1024 * 1024 });
  const open = new Set<Duplex>();
  app.addHook('onClose', (_app, done) => {
    for (const c of wss.clients) c.terminate();
    for (const s of open) s.destroy();
    wss.close();
    done();
  });
  app.server.on('upgrade', (req: http.IncomingMessage, socket: Duplex, head: Buffer) => {
    const url = new URL(req.url ?? '/', 'http://vulcan');
    const shell = /^\/v1\/sandboxes\/([^/]+)\/exec\/ws$/.exec(url.pathname);
    const prev = /^\/v1\/sandboxes\/([^/]+)\/ports\/([^/]+)(?:\/.*)?$/.exec(url.pathname);
    if (!shell && !prev) {
      // Another handler may own it; when there is none, answer rather than hang.
      if (app.server.listenerCount('upgrade') === 1) httpError(socket, new VulcanError('not_found', `no WebSocket route ${url.pathname}`));
      return;
    }
    socket.on('error', () => undefined);
    open.add(socket);
    socket.on('close', () => open.delete(socket));
    if (shell) {
      void startShell(manager, wss, decodeURIComponent(shell[1] ?? ''), url.searchParams, req, socket, head).catch((e: unknown) => httpError(socket, e));
    } else if (prev) {
      void relayUpgrade(manager, decodeURIComponent(prev[1] ?? ''), prev[2] ?? '', req, socket, head).catch((e: unknown) => httpError(socket, e));
    }
  });
}

async function relayUpgrade(manager: SandboxManager, id: string, rawPort: string, req: http.IncomingMessage, socket: Duplex, head: Buffer): Promise<void> {
  const { sock, done } = await manager.connectPort(id, port(rawPort));
  const lines = [`${req.method ?? 'GET'} ${previewRest(req.url ?? '/')} HTTP/1.1`];
  for (let i = 0; i + 1 < req.rawHeaders.length; i += 2) lines.push(`${req.rawHeaders[i] ?? ''}: ${req.rawHeaders[i + 1] ?? ''}`);
  sock.write(`${lines.join('\r\n')}\r\n\r\n`);
  if (head.length) sock.write(head);
  socket.pipe(sock);
  sock.pipe(socket);
  const end = () => {
    socket.destroy();
    done();
  };
  sock.on('close', end);
  sock.on('error', end);
  socket.on('close', end);
}

const DEFAULT_SHELL = ['/bin/sh', '-c', 'if [ -x /bin/bash ]; then exec /bin/bash -l; else exec /bin/sh -l; fi'];

async function startShell(manager: SandboxManager, wss: WebSocketServer, id: string, q: URLSearchParams, req: http.IncomingMessage, socket: Duplex, head: Buffer): Promise<void> {
  const cmd = q.getAll('cmd');
  const pty = q.get('pty') !== '0';
  const rows = Number(q.get('rows') ?? 24);
  const cols = Number(q.get('cols') ?? 80);
  if (!Number.isInteger(rows) || !Number.isInteger(cols) || rows < 1 || cols < 1 || rows > 1000 || cols > 1000) throw new VulcanError('invalid_request', 'rows and cols must be integers from 1 to 1000');
  const cwd = q.get('cwd');
  const timeoutS = q.get('timeout_s');
  const session = await manager.openExec(id, {
    cmd: cmd.length ? cmd : DEFAULT_SHELL,
    ...(cwd ? { cwd: sandboxPath(cwd, 'cwd') } : {}),
    timeoutMs: timeoutS === null ? 0 : execTimeoutMs(Number(timeoutS)),
    streamStdin: true,
    ...(pty ? { pty: { rows, cols } } : {}),
  });
  wss.handleUpgrade(req, socket, head, (ws: WebSocket) => {
    session.onOutput((stream, chunk) => {
      if (ws.readyState !== ws.OPEN) return;
      if (stream === 'stdout') ws.send(chunk, { binary: true });
      else ws.send(JSON.stringify({ type: 'stderr', data: chunk.toString('utf8') }));
      // Back-pressure: a slow client stops the command's output rather than the server's memory.
      if (ws.bufferedAmount > 1024 * 1024) {
        session.pause();
        const wait = setInterval(() => {
          if (ws.readyState !== ws.OPEN || ws.bufferedAmount < 256 * 1024) {
            clearInterval(wait);
            session.resume();
          }
        }, 10);
      }
    });
    ws.on('message', (data: Buffer, isBinary: boolean) => {
      if (isBinary) return session.writeStdin(data);
      let msg: { type?: unknown; data?: unknown; rows?: unknown; cols?: unknown; signal?: unknown };
      try {
        msg = JSON.parse(data.toString('utf8')) as typeof msg;
      } catch {
        return ws.send(JSON.stringify({ type: 'error', code: 'invalid_request', message: 'text messages are JSON: {type: "stdin"|"resize"|"signal"|"eof"}' }));
      }
      if (msg.type === 'stdin' && typeof msg.data === 'string') session.writeStdin(Buffer.from(msg.data));
      else if (msg.type === 'resize' && Number.isInteger(msg.rows) && Number.isInteger(msg.cols)) session.resize(msg.rows as number, msg.cols as number);
      else if (msg.type === 'signal' && typeof msg.signal === 'string') session.signal(msg.signal);
      else if (msg.type === 'eof') session.endStdin();
    });
    ws.on('close', () => session.close());
    ws.on('error', () => session.close());
    session.exited.then(
      (exit) => {
        if (ws.readyState === ws.OPEN) ws.send(JSON.stringify({ type: 'exit', ...exit }));
        ws.close(1000, 'exited');
      },
      (e: unknown) => {
        const v = e instanceof VulcanError ? e : new VulcanError('internal', 'the command was lost');
        if (ws.readyState === ws.OPEN) ws.send(JSON.stringify({ type: 'error', code: v.code, message: v.message }));
        ws.close(1011, v.code);
      },
    );
  });
}
