/**
 * Bad input: each case gets a stable code and the right 4xx, and nothing is recorded or
 * started.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { rawTarGz } from '../helpers/tarball.js';
import { startTestServer, type TestServer } from '../helpers/server.js';

describe('API: bad input', () => {
  let server: TestServer;
  before(async () => {
    server = await startTestServer();
  });
  after(async () => {
    await server.close();
  });

  async function post(body: string, contentType = 'application/json', path = '/v1/workloads'): Promise<{ status: number; body: { error?: { code: string; message: string } } }> {
    const res = await fetch(`${server.url}${path}`, { method: 'POST', headers: { 'content-type': contentType }, body });
    return { status: res.status, body: (await res.json()) as { error?: { code: string; message: string } } };
  }
  const good = { runtime: 'python', code: 'def main(i):\n    return 1\n' };
  const archive = (entries: Parameters<typeof rawTarGz>[0]) => rawTarGz(entries).toString('base64');

  const cases: [string, () => Promise<{ status: number; body: { error?: { code: string; message: string } } }>, number, string, RegExp?][] = [
    ['malformed JSON', () => post('{"runtime": "python",'), 400, 'invalid_request', /JSON/],
    ['an empty body', () => post(''), 400, 'invalid_request'],
    ['a wrong content type', () => post(JSON.stringify(good), 'text/plain'), 415, 'unsupported_media_type', /application\/json/],
    ['a body over 6 MiB', () => post(JSON.stringify({ ...good, input: 'x'.repeat(7 * 1024 * 1024) })), 413, 'payload_too_large'],
    ['code over 1 MiB', () => post(JSON.stringify({ ...good, code: '#'.repeat(1024 * 1024 + 1) })), 413, 'payload_too_large', /code/],
    ['an unknown runtime', () => post(JSON.stringify({ ...good, runtime: 'cobol' })), 422, 'unknown_runtime', /runtime/],
    ['an unknown isolation', () => post(JSON.stringify({ ...good, isolation: 'chroot' })), 422, 'unknown_isolation', /isolation/],
    ['a runtime the backend does not serve', () => post(JSON.stringify({ ...good, runtime: 'js', isolation: 'namespace' })), 422, 'unknown_runtime', /namespace/],
    ['a backend not on this node', () => post(JSON.stringify({ ...good, isolation: 'gvisor' })), 503, 'backend_unavailable', /gvisor/],
    ['negative cpus', () => post(JSON.stringify({ ...good, resources: { cpus: -1 } })), 422, 'limit_out_of_range', /cpus/],
    ['zero cpus', () => post(JSON.stringify({ ...good, resources: { cpus: 0 } })), 422, 'limit_out_of_range', /cpus/],
    ['cpus as a string', () => post(JSON.stringify({ ...good, resources: { cpus: '1' } })), 422, 'limit_out_of_range', /cpus/],
    ['huge cpus', () => post(JSON.stringify({ ...good, resources: { cpus: 1e9 } })), 422, 'limit_out_of_range', /cpus/],
    ['mem_mb as NaN text', () => post(JSON.stringify({ ...good, resources: { mem_mb: 'NaN' } })), 422, 'limit_out_of_range', /mem_mb/],
    ['fractional mem_mb', () => post(JSON.stringify({ ...good, resources: { mem_mb: 100.5 } })), 422, 'limit_out_of_range', /mem_mb/],
    ['too little memory', () => post(JSON.stringify({ ...good, resources: { mem_mb: 8 } })), 422, 'limit_out_of_range', /mem_mb/],
    ['huge memory', () => post(JSON.stringify({ ...good, resources: { mem_mb: 1e12 } })), 422, 'limit_out_of_range', /mem_mb/],
    ['zero timeout', () => post(JSON.stringify({ ...good, resources: { timeout_s: 0 } })), 422, 'limit_out_of_range', /timeout_s/],
    ['timeout over 900 s', () => post(JSON.stringify({ ...good, resources: { timeout_s: 901 } })), 422, 'limit_out_of_range', /timeout_s/],
    ['an unknown resource', () => post(JSON.stringify({ ...good, resources: { gpus: 1 } })), 422, 'limit_out_of_range', /gpus/],
    ['an unknown field', () => post(JSON.stringify({ ...good, timeout: 5 })), 400, 'invalid_request', /timeout/],
    ['no code', () => post(JSON.stringify({ runtime: 'python' })), 400, 'invalid_request', /code/],
    ['both code and code_archive', () => post(JSON.stringify({ ...good, code_archive: archive([{ name: 'a.py', body: 'x' }]), entrypoint: 'a.py' })), 400, 'invalid_request', /not both/],
    ['an archive without entrypoint', () => post(JSON.stringify({ runtime: 'python', code_archive: archive([{ name: 'a.py', body: 'x' }]) })), 400, 'invalid_request', /entrypoint/],
    ['an archive with ../ entries', () => post(JSON.stringify({ runtime: 'python', code_archive: archive([{ name: '../evil.py', body: 'x' }, { name: 'a.py', body: 'x' }]), entrypoint: 'a.py' })), 400, 'invalid_request', /outside/],
    ['an archive with an absolute symlink', () => post(JSON.stringify({ runtime: 'python', code_archive: archive([{ name: 'link', type: '2', linkname: '/etc/passwd' }, { name: 'a.py', body: 'x' }]), entrypoint: 'a.py' })), 400, 'invalid_request', /symlink/],
    ['an archive with an escaping symlink', () => post(JSON.stringify({ runtime: 'python', code_archive: archive([{ name: 'd/link', type: '2', linkname: '../../x' }, { name: 'a.py', body: 'x' }]), entrypoint: 'a.py' })), 400, 'invalid_request', /symlink/],
    ['an archive with a device node', () => post(JSON.stringify({ runtime: 'python', code_archive: archive([{ name: 'tty', type: '3' }, { name: 'a.py', body: 'x' }]), entrypoint: 'a.py' })), 400, 'invalid_request', /CharacterDevice|only files/],
    ['an archive with a setuid file', () => post(JSON.stringify({ runtime: 'python', code_archive: archive([{ name: 'a.py', body: 'x', mode: 0o4755 }]), entrypoint: 'a.py' })), 400, 'invalid_request', /setuid/],
    ['an entrypoint not in the archive', () => post(JSON.stringify({ runtime: 'python', code_archive: archive([{ name: 'a.py', body: 'x' }]), entrypoint: 'b.py' })), 400, 'invalid_request', /not a file/],
    ['an archive that is not gzip', () => post(JSON.stringify({ runtime: 'python', code_archive: Buffer.from('hello').toString('base64'), entrypoint: 'a.py' })), 400, 'invalid_request', /code_archive/],
    ['an env name with a dash', () => post(JSON.stringify({ ...good, env: { 'A-B': '1' } })), 400, 'invalid_request', /env/],
    ['an env name starting with a digit', () => post(JSON.stringify({ ...good, env: { '1X': '1' } })), 400, 'invalid_request', /env/],
    ['an env value that is not a string', () => post(JSON.stringify({ ...good, env: { A: 1 } })), 400, 'invalid_request', /env/],
    ['an async request with bad input', () => post(JSON.stringify({ ...good, runtime: 'cobol' }), 'application/json', '/v1/workloads/async'), 422, 'unknown_runtime'],
  ];

  for (const [name, send, status, code, message] of cases) {
    it(`${name} → ${status} ${code}`, async () => {
      const res = await send();
      assert.equal(res.status, status, JSON.stringify(res.body));
      assert.equal(res.body.error?.code, code, JSON.stringify(res.body));
      if (message) assert.match(res.body.error?.message ?? '', message);
    });
  }

  it('records and starts nothing for any of them', async () => {
    const page = await server.client.list({ limit: 10 });
    assert.deepEqual(page.items, []);
  });

  it('an unknown workload id is 404 not_found on every route', async () => {
    for (const [method, path] of [
      ['GET', '/v1/workloads/01NOPE'],
      ['DELETE', '/v1/workloads/01NOPE'],
      ['GET', '/v1/workloads/01NOPE/logs'],
    ] as const) {
      const res = await fetch(`${server.url}${path}`, { method });
      assert.equal(res.status, 404, `${method} ${path}`);
      assert.equal(((await res.json()) as { error: { code: string } }).error.code, 'not_found');
    }
  });

  it('bad query parameters are 400 invalid_request', async () => {
    const res = await fetch(`${server.url}/v1/workloads?limit=-3`);
    assert.equal(res.status, 400);
    assert.equal(((await res.json()) as { error: { code: string } }).error.code, 'invalid_request');
  });

  it('an unknown route is 404 not_found', async () => {
    const res = await fetch(`${server.url}/v1/nothing`);
    assert.equal(res.status, 404);
    assert.equal(((await res.json()) as { error: { code: string } }).error.code, 'not_found');
  });
});
