/**
 * The image store over HTTP: list, inspect, build (async, progress over SSE), import a
 * tarball (streamed), remove.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { pipeline } from 'node:stream/promises';
import type { Readable } from 'node:stream';
import type { FastifyInstance } from 'fastify';
import { Type } from 'typebox';
import { monotonicFactory } from 'ulid';
import { VulcanError } from '../../core/errors.js';
import { checkImageName, imageJson, type ImageInfo, type LocalImageStore } from '../../images/index.js';
import type { AppParts } from '../app.js';
import { SseStream } from '../sse.js';

const ulid = monotonicFactory();

/** Most bytes of an imported tarball. */
const MAX_IMPORT_BYTES = 8 * 1024 ** 3;

/** One build or import: its progress so far, and how it ended. */
interface Job {
  readonly id: string;
  readonly name: string;
  readonly lines: string[];
  state: 'running' | 'done' | 'failed';
  image?: Record<string, unknown>;
  error?: { code: string; message: string };
  readonly listeners: Set<(event: string, data: unknown) => void>;
}

const BuildBody = Type.Object(
  {
    name: Type.String({ description: 'The image name: 1-64 of a-z, 0-9, ".", "_", "-"' }),
    packages: Type.Optional(Type.Array(Type.String({ pattern: '^[a-z0-9][a-z0-9+.-]*$' }), { description: 'Debian packages on top of minbase' })),
    busybox: Type.Optional(Type.Boolean({ description: 'A busybox image (like `minimal`) instead of Debian' })),
    suite: Type.Optional(Type.String({ pattern: '^[a-z]+$' })),
  },
  { additionalProperties: false },
);

export function registerImageRoutes(app: FastifyInstance, parts: AppParts): void {
  const store: LocalImageStore = parts.images;
  const jobs = new Map<string, Job>();

  function startJob(name: string, work: (onProgress: (line: string) => void) => Promise<ImageInfo>): Job {
    const job: Job = { id: ulid(), name, lines: [], state: 'running', listeners: new Set() };
    jobs.set(job.id, job);
    const emit = (event: string, data: unknown) => {
      for (const l of job.listeners) l(event, data);
    };
    work((line) => {
      job.lines.push(line);
      if (job.lines.length > 2000) job.lines.splice(0, job.lines.length - 2000);
      emit('progress', line);
    }).then(
      (info) => {
        job.state = 'done';
        job.image = imageJson(info);
        emit('end', { state: job.state, image: job.image });
      },
      (err: unknown) => {
        job.state = 'failed';
        job.error = err instanceof VulcanError ? { code: err.code, message: err.message } : { code: 'image_build_failed', message: (err as Error).message };
        parts.log.warn({ err, image: name }, 'image job failed');
        emit('end', { state: job.state, error: job.error });
      },
    );
    return job;
  }

  const accepted = (job: Job) => ({ job_id: job.id, name: job.name, state: job.state, events: `/v1/images/jobs/${job.id}` });

  app.get('/v1/images', { schema: { summary: 'Images in the store' } }, async () => ({ images: (await store.list()).map(imageJson) }));

  app.get('/v1/images/:name', { schema: { summary: 'One image', params: Type.Object({ name: Type.String({ maxLength: 64 }) }) } }, async (req) => {
    const { name } = req.params as { name: string };
    return imageJson(await store.inspect(name));
  });

  app.post(
    '/v1/images',
    { schema: { summary: 'Build an image from Debian packages (or busybox); runs async, follow GET /v1/images/jobs/:id (SSE)', body: BuildBody } },
    async (req, reply) => {
      const body = req.body as { name: string; packages?: string[]; busybox?: boolean; suite?: string };
      checkImageName(body.name);
      const job = startJob(body.name, (onProgress) =>
        store.build({ name: body.name, kind: body.busybox ? 'busybox' : 'debian', packages: body.packages ?? [], ...(body.suite ? { suite: body.suite } : {}), onProgress }),
      );
      return reply.code(202).header('location', `/v1/images/jobs/${job.id}`).send(accepted(job));
    },
  );

  // Tarballs arrive as a raw stream, never buffered whole.
  app.addContentTypeParser(['application/x-tar', 'application/octet-stream', 'application/gzip'], (_req, payload, done) => done(null, payload));
  app.post(
    '/v1/images/import',
    {
      bodyLimit: MAX_IMPORT_BYTES,
      schema: { summary: 'Import a `docker save` or OCI layout tarball (raw body, content-type application/x-tar); runs async', querystring: Type.Object({ name: Type.Optional(Type.String({ maxLength: 64 })) }) },
    },
    async (req, reply) => {
      const { name } = req.query as { name?: string };
      if (name !== undefined) checkImageName(name);
      const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'vulcan-import-'));
      const file = path.join(tmp, 'image.tar');
      try {
        await pipeline(req.body as Readable, fs.createWriteStream(file, { mode: 0o600 }));
      } catch (err) {
        fs.rmSync(tmp, { recursive: true, force: true });
        throw new VulcanError('invalid_request', `the upload did not complete: ${(err as Error).message}`);
      }
      const job = startJob(name ?? '(from the archive)', (onProgress) =>
        store.importTarball(file, { ...(name ? { name } : {}), onProgress }).finally(() => fs.rmSync(tmp, { recursive: true, force: true })),
      );
      return reply.code(202).header('location', `/v1/images/jobs/${job.id}`).send(accepted(job));
    },
  );

  app.get(
    '/v1/images/jobs/:id',
    { schema: { summary: 'Server-Sent Events of a build or import: `progress` lines (replayed from the start), then `end` with the image or the error', params: Type.Object({ id: Type.String({ maxLength: 64 }) }) } },
    (req, reply) => {
      const { id } = req.params as { id: string };
      const job = jobs.get(id);
      if (!job) throw new VulcanError('not_found', `no image job ${id}`);
      reply.hijack();
      const sse = new SseStream(reply.raw);
      for (const line of job.lines) sse.send('progress', line);
      if (job.state !== 'running') {
        sse.send('end', { state: job.state, image: job.image, error: job.error });
        sse.close();
        return;
      }
      const listener = (event: string, data: unknown) => {
        sse.send(event, data);
        if (event === 'end') sse.close();
      };
      job.listeners.add(listener);
      sse.onClose(() => job.listeners.delete(listener));
    },
  );

  app.delete('/v1/images/:name', { schema: { summary: 'Remove an image', params: Type.Object({ name: Type.String({ maxLength: 64 }) }) } }, async (req, reply) => {
    const { name } = req.params as { name: string };
    await store.remove(name);
    return reply.code(204).send();
  });
}
