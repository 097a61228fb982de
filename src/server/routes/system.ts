/**
 * Health, backends, metrics and the OpenAPI document.
 */
import { Type } from 'typebox';
import type { FastifyInstance } from 'fastify';
import type { AppParts } from '../app.js';
import { BackendList } from '../schemas.js';

export function registerSystemRoutes(app: FastifyInstance, parts: AppParts): void {
  const started = Date.now();

  app.get(
    '/healthz',
    { schema: { summary: 'Health check', response: { 200: Type.Object({ status: Type.String(), node: Type.String(), uptime_s: Type.Number() }) } } },
    () => ({ status: 'ok', node: parts.config.nodeName, uptime_s: Math.round((Date.now() - started) / 1000) }),
  );

  app.get('/v1/backends', { schema: { summary: 'Every backend: available or why not, runtimes, capabilities', response: { 200: BackendList } } }, () => ({
    backends: parts.backends.describe(),
  }));

  app.get('/metrics', { schema: { summary: 'Prometheus metrics (text format)', hide: false } }, async (_req, reply) => {
    const text = await parts.metrics.registry.metrics();
    return reply.type(parts.metrics.registry.contentType).send(text);
  });

  app.get('/openapi.json', { schema: { hide: true } }, () => app.swagger());
}
