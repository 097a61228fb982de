/**
 * The workloads API: run (sync and async), read, list, stream logs, kill.
 */
import { Type } from 'typebox';
import type { FastifyInstance, FastifyReply } from 'fastify';
import { randomFillSync } from 'node:crypto';
import { monotonicFactory } from 'ulid';
import { VulcanError } from '../../core/errors.js';
import { replayStored, type OutputChunk } from '../../core/output.js';
import type { WorkloadStatus } from '../../core/types.js';
import type { AppParts } from '../app.js';
import { IdParams, ListQuery, WorkloadAccepted, WorkloadList, WorkloadRequest, type WorkloadRequestBody } from '../schemas.js';
import { SseStream } from '../sse.js';
import { validateWorkload } from '../validate.js';

/**
 * Random numbers for ULIDs from a pooled buffer: ulid's default source asks WebCrypto once per
 * character (16 calls per new millisecond), which showed up in the request profile.
 */
const randomPool = Buffer.alloc(4096);
let randomAt = randomPool.length;
function pooledRandom(): number {
  if (randomAt >= randomPool.length - 1) {
    randomFillSync(randomPool);
    randomAt = 0;
  }
  const value = randomPool.readUInt16BE(randomAt);
  randomAt += 2;
  return value / 65536;
}
const ulid = monotonicFactory(pooledRandom);
const errorResponses = {
  400: Type.Ref('Error'),
  404: Type.Ref('Error'),
  409: Type.Ref('Error'),
  413: Type.Ref('Error'),
  415: Type.Ref('Error'),
  422: Type.Ref('Error'),
  503: Type.Ref('Error'),
};

function notFound(id: string): VulcanError {
  return new VulcanError('not_found', `no workload ${id}`, { details: { id } });
}

export function registerWorkloadRoutes(app: FastifyInstance, parts: AppParts): void {
  const { store, manager, backends, config } = parts;

  /** Validates, picks a backend and submits; nothing is recorded when any step refuses. */
  async function accept(body: WorkloadRequestBody, mode: 'sync' | 'async') {
    const { spec, isolation, inputHash } = await validateWorkload(ulid(), body, config.defaults);
    if (spec.image !== undefined && (await parts.images.resolve(spec.image)) === null) {
      throw new VulcanError('unknown_image', `no image ${JSON.stringify(spec.image)} in this node's store; see GET /v1/images (vulcan image ls)`, { details: { field: 'image' } });
    }
    const selection = backends.select(isolation, spec);
    return { id: spec.id, live: manager.submit(spec, isolation, selection, mode, inputHash) };
  }

  app.post(
    '/v1/workloads',
    { schema: { summary: 'Run a workload and wait for its result', body: WorkloadRequest, response: { 200: Type.Ref('Workload'), ...errorResponses } } },
    async (req, reply) => {
      const { id, live } = await accept(req.body as WorkloadRequestBody, 'sync');
      // This request's log line names the workload; the manager then logs its end only at debug
      // level when it completed (one line per request, not two).
      req.workloadId = id;
      // A caller that hangs up no longer waits for the result: stop the work it asked for.
      const onClose = () => {
        if (!reply.raw.writableFinished) manager.kill(id);
      };
      reply.raw.on('close', onClose);
      const rec = await live.done;
      reply.raw.off('close', onClose);
      return rec;
    },
  );

  app.post(
    '/v1/workloads/async',
    { schema: { summary: 'Start a workload; poll it or stream its logs', body: WorkloadRequest, response: { 202: WorkloadAccepted, ...errorResponses } } },
    async (req, reply) => {
      const { id } = await accept(req.body as WorkloadRequestBody, 'async');
      // The 202 promises a record under this id: answer once its insert is committed.
      await store.committed();
      return reply.code(202).header('location', `/v1/workloads/${id}`).send({ id, status: 'pending' });
    },
  );

  app.get('/v1/workloads', { schema: { summary: 'List workloads, newest first', querystring: ListQuery, response: { 200: WorkloadList, 400: Type.Ref('Error') } } }, (req) => {
    const q = req.query as { limit?: number; cursor?: string; status?: WorkloadStatus };
    return store.list({ limit: q.limit ?? 50, ...(q.cursor ? { cursor: q.cursor } : {}), ...(q.status ? { status: q.status } : {}) });
  });

  app.get('/v1/workloads/:id', { schema: { summary: 'One workload', params: IdParams, response: { 200: Type.Ref('Workload'), 404: Type.Ref('Error') } } }, (req) => {
    const { id } = req.params as { id: string };
    const rec = store.get(id);
    if (!rec) throw notFound(id);
    return rec;
  });

  app.delete(
    '/v1/workloads/:id',
    { schema: { summary: 'Kill a running workload', params: IdParams, response: { 200: Type.Ref('Workload'), 404: Type.Ref('Error'), 409: Type.Ref('Error') } } },
    async (req) => {
      const { id } = req.params as { id: string };
      const live = manager.getLive(id);
      if (live && manager.kill(id)) return live.done;
      const rec = store.get(id);
      if (!rec) throw notFound(id);
      throw new VulcanError('conflict', `workload ${id} has already ended (${rec.status})`, { details: { id, status: rec.status } });
    },
  );

  app.get(
    '/v1/workloads/:id/logs',
    {
      schema: {
        summary: 'Stream stdout and stderr (Server-Sent Events: stdout, stderr, then end with the final record); replays from the start',
        params: IdParams,
        response: { 200: { description: 'text/event-stream', type: 'string' }, 404: Type.Ref('Error') },
      },
    },
    async (req, reply) => {
      const { id } = req.params as { id: string };
      const live = manager.getLive(id);
      const stored = live ? null : store.get(id);
      if (!live && !stored) throw notFound(id);
      const lastId = Number(req.headers['last-event-id'] ?? 0) || 0;
      streamLogs(reply, lastId, id, live, parts);
    },
  );
}

function streamLogs(reply: FastifyReply, lastId: number, id: string, live: ReturnType<AppParts['manager']['getLive']>, parts: AppParts): void {
  reply.hijack();
  const sse = new SseStream(reply.raw, lastId);
  const sendChunk = (c: OutputChunk) => sse.send(c.stream, c.data.toString('utf8'));
  if (live) {
    // Replay what came so far, then follow. Both happen in this one tick, so no chunk can
    // fall between them.
    for (const c of live.output.replay()) sendChunk(c);
    const unsubscribe = live.output.subscribe(sendChunk);
    sse.onClose(unsubscribe);
    void live.done.then((rec) => {
      unsubscribe();
      sse.send('end', rec);
      sse.close();
    });
    return;
  }
  const rec = parts.store.get(id);
  const logs = parts.store.logs(id);
  if (rec && logs) for (const c of replayStored(logs.stdout, logs.stderr, logs.index)) sendChunk(c);
  sse.send('end', rec);
  sse.close();
}
