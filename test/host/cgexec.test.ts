/**
 * native/vulcan-cgexec's CPU priority options: what the started program sees in its own
 * /proc/self/stat, and clear refusals of bad values (nothing started).
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { describe, it } from 'node:test';
import { cgexecPathFor } from '../../src/host/bwrap.js';
import { testConfig } from '../helpers/context.js';
import { parseStat } from '../helpers/sched.js';

const cgexec = cgexecPathFor(testConfig().installDir);

function run(...args: string[]): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(cgexec, args, { encoding: 'utf8', timeout: 10_000 });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

describe('vulcan-cgexec', () => {
  it('-n and -s batch set the program\'s nice value and policy before it starts', () => {
    const r = run('-n', '7', '-s', 'batch', '--', '/bin/cat', '/proc/self/stat');
    assert.equal(r.status, 0, r.stderr);
    assert.deepEqual(parseStat(r.stdout), { nice: 7, policy: 'batch' });
  });

  it('without them the program runs as its caller does', () => {
    const r = run('--', '/bin/cat', '/proc/self/stat');
    assert.equal(r.status, 0, r.stderr);
    assert.deepEqual(parseStat(r.stdout), { nice: 0, policy: 'normal' });
  });

  it('-t sets the program\'s timer slack before it starts; without it the kernel\'s default stays', () => {
    const slack = run('-t', '1500', '--', '/bin/cat', '/proc/self/timerslack_ns');
    assert.equal(slack.status, 0, slack.stderr);
    assert.equal(slack.stdout.trim(), '1500000');
    const plain = run('--', '/bin/cat', '/proc/self/timerslack_ns');
    assert.equal(plain.status, 0, plain.stderr);
    assert.notEqual(plain.stdout.trim(), '1500000');
  });

  it('-P starts the program only when its parent is that pid (a caller that died first gets nothing started)', () => {
    const mine = run('-P', String(process.pid), '--', '/bin/echo', 'started');
    assert.equal(mine.status, 0, mine.stderr);
    assert.equal(mine.stdout, 'started\n');
    const other = run('-P', String(process.pid + 100000), '--', '/bin/echo', 'started');
    assert.equal(other.status, 125);
    assert.equal(other.stdout, '', 'nothing ran');
  });

  it('refuses a nice value outside 0–19, an unknown policy, a timer slack outside 1–100000 µs and a bad caller pid, and starts nothing', () => {
    for (const [args, message] of [
      [['-n', '20'], /nice must be 0 to 19: 20/],
      [['-n', '-5'], /nice must be 0 to 19: -5/],
      [['-n', '5x'], /nice must be 0 to 19: 5x/],
      [['-s', 'fifo'], /unknown scheduling policy fifo/],
      [['-t', '0'], /timer slack must be 1 to 100000 µs: 0/],
      [['-t', '100001'], /timer slack must be 1 to 100000 µs: 100001/],
      [['-t', '1ms'], /timer slack must be 1 to 100000 µs: 1ms/],
      [['-P', '0'], /caller pid must be a positive number: 0/],
    ] as const) {
      const r = run(...args, '--', '/bin/echo', 'started');
      assert.equal(r.status, 125, `${args.join(' ')}: ${r.stderr}`);
      assert.match(r.stderr, message);
      assert.equal(r.stdout, '', 'nothing ran');
    }
  });
});
