/**
 * The server's log destination (src/server/log-destination.ts) batches lines into one write:
 * a child process logs through it with pino, and everything it logged arrives on its stdout,
 * whole and in order — also the lines still queued when it exits right after logging them.
 * In-process, over a synchronous sonic-boom on a file: info lines wait for their batch, a warning
 * takes everything queued with it at the end of the turn.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { BatchedLogDestination } from '../../src/server/log-destination.js';
import { tempDir, testConfig } from '../helpers/context.js';

const MODULE = path.join(testConfig().installDir, 'dist', 'src', 'server', 'log-destination.js');

/** Runs `body` in a child with `log` (pino over `dest`, a BatchedLogDestination on fd 1); returns its stdout lines. */
function runChild(body: string): { lines: { n?: number; msg: string }[]; status: number | null } {
  const dir = tempDir('vulcan-logdest-');
  const script = path.join(dir, 'child.mjs');
  fs.writeFileSync(
    script,
    `import { pino } from ${JSON.stringify(path.join(testConfig().installDir, 'node_modules', 'pino', 'pino.js'))};
import { BatchedLogDestination } from ${JSON.stringify(MODULE)};
const dest = new BatchedLogDestination();
const log = pino({ level: 'info' }, dest);
${body}
`,
  );
  const res = spawnSync(process.execPath, [script], { encoding: 'utf8', maxBuffer: 64 * 1024 * 1024 });
  fs.rmSync(dir, { recursive: true, force: true });
  assert.equal(res.stderr, '', 'the child wrote nothing to stderr');
  const lines = res.stdout
    .split('\n')
    .filter((l) => l !== '')
    .map((l) => JSON.parse(l) as { n?: number; msg: string });
  return { lines, status: res.status };
}

describe('batched log destination', () => {
  it('writes every line of many turns, in order', () => {
    const { lines, status } = runChild(`
let n = 0;
for (let turn = 0; turn < 200; turn++) {
  for (let i = 0; i < 50; i++) log.info({ n: n++ }, 'line');
  await new Promise((resolve) => setImmediate(resolve));
}
`);
    assert.equal(status, 0);
    assert.equal(lines.length, 10_000);
    lines.forEach((l, i) => assert.equal(l.n, i));
  });

  it('writes the last turn’s lines when the process exits right after logging them', () => {
    const { lines, status } = runChild(`
for (let n = 0; n < 5000; n++) log.info({ n }, 'line');
process.exit(3);
`);
    assert.equal(status, 3);
    assert.equal(lines.length, 5000, 'no line queued for the next turn is lost at exit');
    assert.equal(lines.at(-1)?.n, 4999);
  });

  it('flushSync writes what is queued before returning', () => {
    const { lines } = runChild(`
log.info({ n: 0 }, 'before');
dest.flushSync();
(await import('node:fs')).writeSync(1, JSON.stringify({ msg: 'raw' }) + '\\n');
process.exit(0);
`);
    assert.deepEqual(
      lines.map((l) => l.msg),
      ['before', 'raw'],
    );
  });

  it('holds info lines for their batch, and lets a warning take them at the end of the turn', async () => {
    const dir = tempDir('vulcan-logdest-');
    const file = path.join(dir, 'log');
    const fd = fs.openSync(file, 'w');
    // A synchronous sink: what the destination hands over is in the file at once.
    const dest = new BatchedLogDestination(fd, true);
    const written = () => fs.readFileSync(file, 'utf8');
    try {
      dest.write('{"level":30,"msg":"a"}\n');
      await new Promise((resolve) => setImmediate(resolve));
      assert.equal(written(), '', 'an info line waits for others to share its write');
      await sleep(60);
      assert.equal(written(), '{"level":30,"msg":"a"}\n', 'and leaves within its batch time');
      dest.write('{"level":30,"msg":"b"}\n');
      dest.write('{"level":40,"msg":"c"}\n');
      await new Promise((resolve) => setImmediate(resolve));
      assert.equal(written(), '{"level":30,"msg":"a"}\n{"level":30,"msg":"b"}\n{"level":40,"msg":"c"}\n');
    } finally {
      dest.flushSync(); // nothing may be written to the fd after it is closed (and reused)
      fs.closeSync(fd);
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
