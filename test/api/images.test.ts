/**
 * The image store over HTTP and the CLI: build with progress over SSE, list, inspect,
 * import a tarball (and refuse a hostile one), remove, and a workload naming a missing image.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { promisify } from 'node:util';
import { createImageStore } from '../../src/images/index.js';
import { InvalidRequestError, NotFoundError } from '../../src/sdk/index.js';
import { tempDir } from '../helpers/context.js';
import { startTestServer, VULCAN_BIN, type TestServer } from '../helpers/server.js';
import { rawTarGz } from '../helpers/tarball.js';
import zlib from 'node:zlib';

describe('API and CLI: images', () => {
  let server: TestServer;
  let dataDir: string;
  before(async () => {
    dataDir = tempDir('vulcan-images-api-');
    server = await startTestServer({ dataDir, images: createImageStore(dataDir) });
  });
  after(async () => {
    await server.close();
    fs.rmSync(dataDir, { recursive: true, force: true });
  });

  it('builds a busybox image through POST /v1/images, streaming progress, then lists, inspects and removes it', { timeout: 120_000 }, async () => {
    const job = await server.client.buildImage({ name: 'tiny', busybox: true });
    assert.equal(job.name, 'tiny');
    const events = [];
    for await (const ev of server.client.imageJob(job.job_id)) events.push(ev);
    const end = events.at(-1);
    assert.equal(end?.type, 'end');
    assert.equal(end?.type === 'end' ? end.state : '', 'done', JSON.stringify(end));
    assert.ok(events.some((e) => e.type === 'progress'), 'no progress lines');
    const list = await server.client.images();
    assert.deepEqual(list.map((i) => i.name), ['tiny']);
    assert.match((await server.client.image('tiny')).digest, /^sha256:[0-9a-f]{64}$/);
    // A late follower gets the whole story again.
    const replay = [];
    for await (const ev of server.client.imageJob(job.job_id)) replay.push(ev);
    assert.equal(replay.length, events.length);
    await server.client.removeImage('tiny');
    await assert.rejects(server.client.image('tiny'), (e: unknown) => e instanceof NotFoundError);
  });

  it('imports a tarball over HTTP; a hostile one ends the job as invalid_request naming the entry', { timeout: 60_000 }, async () => {
    // A plain rootfs tarball with one file.
    const good = zlib.gunzipSync(rawTarGz([{ name: 'bin/hello', body: '#!/bin/sh\necho hi\n', mode: 0o755 }]));
    const ok = await server.client.importImage(new Blob([good]), 'plain');
    let last;
    for await (const ev of server.client.imageJob(ok.job_id)) last = ev;
    assert.equal(last?.type === 'end' ? last.state : '', 'done', JSON.stringify(last));
    const evil = zlib.gunzipSync(rawTarGz([{ name: '../../etc/evil', body: 'x' }]));
    const bad = await server.client.importImage(new Blob([evil]), 'evil');
    for await (const ev of server.client.imageJob(bad.job_id)) last = ev;
    assert.equal(last?.type === 'end' ? last.state : '', 'failed');
    assert.equal(last?.type === 'end' ? last.error?.code : '', 'invalid_request', JSON.stringify(last));
    assert.ok(!fs.existsSync(path.join(dataDir, '..', 'etc', 'evil')));
    await assert.rejects(server.client.image('evil'), (e: unknown) => e instanceof NotFoundError);
  });

  it('a workload naming a missing image is 422 unknown_image; a bad image name is 400', async () => {
    await assert.rejects(server.client.run({ runtime: 'sh', code: 'true', image: 'nope' }), (e: unknown) => e instanceof InvalidRequestError && e.code === 'unknown_image');
    await assert.rejects(server.client.buildImage({ name: 'Bad Name!' }), (e: unknown) => e instanceof InvalidRequestError && e.code === 'invalid_request');
  });

  it('vulcan image ls / inspect / rm work through the API', async () => {
    const run = promisify(execFile);
    const env = { ...process.env, VULCAN_URL: server.url };
    const ls = await run(process.execPath, [VULCAN_BIN, 'image', 'ls'], { env });
    assert.match(ls.stdout, /^plain\s+sha256:/m);
    const inspect = await run(process.execPath, [VULCAN_BIN, 'image', 'inspect', 'plain'], { env });
    assert.equal((JSON.parse(inspect.stdout) as { name: string }).name, 'plain');
    await run(process.execPath, [VULCAN_BIN, 'image', 'rm', 'plain'], { env });
    const after = await run(process.execPath, [VULCAN_BIN, 'image', 'ls', '--json'], { env });
    assert.deepEqual(JSON.parse(after.stdout), []);
  });
});
