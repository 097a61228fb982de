/**
 * The spawner (src/host/spawner.ts + native/vulcan-spawnd.c): processes started without
 * forking the server get their stdin, extra data fds and result channel, report exits and
 * signals as child_process would, can be killed, and nothing outlives the server.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { describe, it } from 'node:test';
import { Spawner } from '../../src/host/spawner.js';
import type { SandboxProcess } from '../../src/host/process.js';
import { eventually, processesWith, testConfig } from '../helpers/context.js';

const build = path.join(testConfig().installDir, 'build');
const spawnd = path.join(build, 'vulcan-spawnd');

async function collect(p: SandboxProcess): Promise<{ out: string; err: string; result: string; exit: Awaited<SandboxProcess['closed']> }> {
  let out = '';
  let err = '';
  let result = '';
  p.stdout.on('data', (c: Buffer) => (out += c.toString()));
  p.stderr.on('data', (c: Buffer) => (err += c.toString()));
  p.result?.on('data', (c: Buffer) => (result += c.toString()));
  const exit = await p.closed;
  return { out, err, result, exit };
}

describe('spawner (vulcan-spawnd)', () => {
  it('wires stdin, stdout, stderr, the result channel and data fds, and reports the exit code', async () => {
    const p = Spawner.for(spawnd).spawn({
      file: '/bin/sh',
      args: ['-c', 'cat; echo err >&2; echo res >&3; cat <&4; cat <&5; exit 7'],
      stdin: 'from stdin\n',
      resultFd: true,
      data: ['data4\n', Buffer.from('data5\n')],
    });
    assert.deepEqual(await collect(p), { out: 'from stdin\ndata4\ndata5\n', err: 'err\n', result: 'res\n', exit: { code: 7, signal: null } });
  });

  it('reports death by a signal, and kill() delivers one', async () => {
    const self = await collect(Spawner.for(spawnd).spawn({ file: '/bin/sh', args: ['-c', 'kill -TERM $$'] }));
    assert.deepEqual(self.exit, { code: null, signal: 'SIGTERM' });
    // An aliased signal gets the name child_process gives it (SIGABRT, not SIGIOT).
    const aborted = await collect(Spawner.for(spawnd).spawn({ file: '/bin/sh', args: ['-c', 'kill -ABRT $$'] }));
    assert.deepEqual(aborted.exit, { code: null, signal: 'SIGABRT' });
    const sleeper = Spawner.for(spawnd).spawn({ file: '/bin/sleep', args: ['100'] });
    setTimeout(() => sleeper.kill('SIGKILL'), 100);
    assert.deepEqual((await collect(sleeper)).exit, { code: null, signal: 'SIGKILL' });
    // A kill in the same tick as the spawn (a workload cancelled while it starts) still lands.
    const early = Spawner.for(spawnd).spawn({ file: '/bin/sleep', args: ['100'] });
    early.kill('SIGKILL');
    assert.deepEqual((await collect(early)).exit, { code: null, signal: 'SIGKILL' });
  });

  it('runs 60 at once, each with its own output', async () => {
    const runs = await Promise.all(
      Array.from({ length: 60 }, (_, i) => collect(Spawner.for(spawnd).spawn({ file: '/bin/sh', args: ['-c', `cat; head -c 65536 /dev/zero | tr '\\0' ${String.fromCharCode(97 + (i % 26))}`], stdin: `n${i}:` }))),
    );
    runs.forEach((r, i) => {
      assert.equal(r.exit.code, 0);
      assert.equal(r.out, `n${i}:` + String.fromCharCode(97 + (i % 26)).repeat(65536));
    });
  });

  it('its socket is root-only and a connection with a wrong token is dropped without harm', async () => {
    const dirs = fs.readdirSync('/run/vulcan').filter((d) => d.startsWith(`spawn-${process.pid}-`));
    assert.equal(dirs.length, 1);
    const dir = path.join('/run/vulcan', dirs[0] ?? '');
    assert.equal(fs.statSync(dir).mode & 0o777, 0o700);
    const closed = await new Promise<boolean>((resolve) => {
      const c = net.connect(path.join(dir, 's'), () => c.write(Buffer.alloc(17, 7)));
      c.on('close', () => resolve(true));
      c.on('error', () => undefined);
      setTimeout(() => resolve(false), 3000);
    });
    assert.equal(closed, true);
    const ok = await collect(Spawner.for(spawnd).spawn({ file: '/bin/echo', args: ['still fine'] }));
    assert.equal(ok.out, 'still fine\n');
  });

  it('dies with the server, and what it started through vulcan-cgexec dies too', async () => {
    const marker = `600.${process.pid}`;
    const sleepers = () => processesWith('/bin/sleep', marker).filter((l) => /^process \d+ \/bin\/sleep /.test(l));
    const script = `import { Spawner } from ${JSON.stringify(path.join(testConfig().installDir, 'dist', 'src', 'host', 'spawner.js'))};
      const p = Spawner.for(${JSON.stringify(spawnd)}).spawn({ file: ${JSON.stringify(path.join(build, 'vulcan-cgexec'))}, args: ['--', '/bin/sleep', ${JSON.stringify(marker)}] });
      p.stdout.resume(); p.stderr.resume(); setTimeout(() => process.stdout.write('up\\n'), 300); setInterval(() => {}, 1000);`;
    const server = spawn(process.execPath, ['--input-type=module', '-e', script], { stdio: ['ignore', 'pipe', 'inherit'] });
    await new Promise((resolve) => server.stdout.once('data', resolve));
    assert.equal(sleepers().length, 1, 'the sleeper started');
    assert.equal(processesWith('vulcan-spawnd', `spawn-${server.pid}-`).length, 1, 'the helper runs');
    server.kill('SIGKILL');
    assert.deepEqual(await eventually(() => [...sleepers(), ...processesWith('vulcan-spawnd', `spawn-${server.pid}-`)], 3000), []);
  });
});
