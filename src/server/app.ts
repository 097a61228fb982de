/**
 * The HTTP API (Fastify): routes, validation, the error contract and request metrics.
 * `buildApp` wires parts that `startServer` (serve.ts) created; tests may build it too.
 */
import swagger from '@fastify/swagger';
import { Ajv } from 'ajv';
import Fastify, { LogController, type FastifyBaseLogger, type FastifyError, type FastifyInstance } from 'fastify';
import type { Config } from '../core/config.js';
import { VulcanError, type ApiErrorCode } from '../core/errors.js';
import type { BackendSet } from '../scheduler/backend-set.js';
import type { WorkloadManager } from '../scheduler/workload-manager.js';
import type { SandboxManager } from '../sandboxes/manager.js';
import type { WorkloadStore } from '../store/workloads.js';
import type { Metrics } from './metrics.js';
import { registerSystemRoutes } from './routes/system.js';
import { registerWorkloadRoutes } from './routes/workloads.js';
import { registerImageRoutes } from './routes/images.js';
import type { LocalImageStore } from '../images/index.js';
import { registerSandboxRoutes } from './routes/sandboxes.js';
import { registerStatsRoutes } from './routes/stats.js';
import { ErrorBody, MAX_BODY_BYTES, Workload } from './schemas.js';

export interface AppParts {
  readonly config: Config;
  /** The node's logger (pino); Fastify logs requests through it. */
  readonly log: FastifyBaseLogger;
  readonly store: WorkloadStore;
  readonly manager: WorkloadManager;
  readonly backends: BackendSet;
  readonly metrics: Metrics;
  readonly version: string;
  /** The node's image store. */
  readonly images: LocalImageStore;
  /** Long-lived sandboxes (issue 6). */
  readonly sandboxes: SandboxManager;
}

/** Maps a failed schema check to the code a client can act on. */
function validationCode(instancePath: string, context: string | undefined): ApiErrorCode {
  if (context !== 'body') return 'invalid_request';
  if (instancePath.startsWith('/runtime')) return 'unknown_runtime';
  if (instancePath.startsWith('/isolation')) return 'unknown_isolation';
  if (instancePath.startsWith('/resources')) return 'limit_out_of_range';
  return 'invalid_request';
}

/** Turns any thrown error into the API's error body. Unknown errors become an opaque 500. */
export function toApiError(err: unknown): VulcanError | null {
  if (err instanceof VulcanError) return err;
  const e = err as FastifyError & { validation?: { instancePath: string; message?: string; params?: Record<string, unknown> }[]; validationContext?: string };
  if (e.validation && e.validation.length > 0) {
    const first = e.validation[0];
    const where = `${e.validationContext ?? 'request'}${first?.instancePath ?? ''}`.replace(/\//g, '.');
    let msg = first?.message ?? 'is invalid';
    if (first?.params && 'additionalProperty' in first.params) msg = `has an unknown field ${JSON.stringify(first.params.additionalProperty)}`;
    if (first?.params && 'allowedValues' in first.params) msg = `must be one of ${(first.params.allowedValues as unknown[]).join(', ')}`;
    const code = validationCode(first?.instancePath ?? '', e.validationContext);
    return new VulcanError(code, `${where} ${msg}`, { details: { field: where, errors: e.validation } });
  }
  switch (e.code) {
    case 'FST_ERR_CTP_INVALID_MEDIA_TYPE':
    case 'FST_ERR_CTP_INVALID_CONTENT_LENGTH':
      return new VulcanError('unsupported_media_type', 'send the body as JSON with content-type: application/json');
    case 'FST_ERR_CTP_BODY_TOO_LARGE':
      return new VulcanError('payload_too_large', `the request body is larger than ${MAX_BODY_BYTES} bytes`);
    case 'FST_ERR_CTP_EMPTY_JSON_BODY':
      return new VulcanError('invalid_request', 'the body is empty; send a JSON object');
    case 'FST_ERR_CTP_INVALID_JSON_BODY':
      return new VulcanError('invalid_request', `the body is not valid JSON: ${e.message}`);
  }
  if (typeof e.statusCode === 'number' && e.statusCode >= 400 && e.statusCode < 500) {
    if (e.statusCode === 413) return new VulcanError('payload_too_large', e.message);
    if (e.statusCode === 415) return new VulcanError('unsupported_media_type', e.message);
    return new VulcanError('invalid_request', e.message);
  }
  return null;
}

declare module 'fastify' {
  interface FastifyRequest {
    /** The workload a `POST /v1/workloads` ran: its request's log line names it. */
    workloadId: string | null;
  }
}

export async function buildApp(parts: AppParts): Promise<FastifyInstance> {
  const app = Fastify({
    loggerInstance: parts.log,
    bodyLimit: MAX_BODY_BYTES,
    // Requests are logged once, at the end, by the onResponse hook below.
    logController: new LogController({ disableRequestLogging: true }),
    return503OnClosing: true,
    forceCloseConnections: true,
  });

  // Bodies are checked strictly (a string is never a number); query strings are coerced.
  const strict = new Ajv({ coerceTypes: false, useDefaults: true, removeAdditional: false, allErrors: false, strict: false });
  const loose = new Ajv({ coerceTypes: 'array', useDefaults: true, removeAdditional: false, allErrors: false, strict: false });
  app.setValidatorCompiler(({ schema, httpPart }) => (httpPart === 'body' ? strict.compile(schema) : loose.compile(schema)));
  // Response schemas document the API; replies are serialised as they are.
  app.setSerializerCompiler(() => (data) => JSON.stringify(data));
  app.removeContentTypeParser('text/plain');

  await app.register(swagger, {
    openapi: {
      info: { title: 'Vulcan', version: parts.version, description: 'Run untrusted code on your own hardware, with the isolation you choose.' },
      servers: [{ url: `http://${parts.config.host}:${parts.config.port}` }],
    },
  });
  app.decorateRequest('workloadId', null);
  app.addSchema(Workload);
  app.addSchema(ErrorBody);

  app.setErrorHandler((err, req, reply) => {
    const api = toApiError(err);
    if (api) {
      parts.metrics.apiErrors.inc({ code: api.code });
      return reply.code(api.status).send(api.toJSON());
    }
    req.log.error({ err }, 'unhandled error');
    parts.metrics.apiErrors.inc({ code: 'internal' });
    return reply.code(500).send(new VulcanError('internal', `internal error (request ${req.id}); see the server log`).toJSON());
  });
  app.setNotFoundHandler((req, reply) => {
    parts.metrics.apiErrors.inc({ code: 'not_found' });
    return reply.code(404).send(new VulcanError('not_found', `no route ${req.method} ${req.url.split('?')[0] ?? ''}; see /openapi.json`).toJSON());
  });

  app.addHook('onResponse', (req, reply, done) => {
    const route = req.routeOptions.url ?? 'unmatched';
    const seconds = reply.elapsedTime / 1000;
    parts.metrics.observeHttp(req.method, route, reply.statusCode, seconds);
    const workload = req.workloadId === null ? {} : { workload: req.workloadId };
    req.log.info({ method: req.method, route, url: req.url, status: reply.statusCode, ms: Math.round(reply.elapsedTime * 100) / 100, ...workload }, 'request');
    done();
  });

  registerWorkloadRoutes(app, parts);
  registerImageRoutes(app, parts);
  registerSystemRoutes(app, parts);
  registerSandboxRoutes(app, parts);
  registerStatsRoutes(app, parts);
  await app.ready();
  return app;
}
