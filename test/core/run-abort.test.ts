/**
 * RunAbort (src/core/backend.ts), the cancellation a backend's run gets: listeners fire once,
 * in order, and a removed one not at all, a throwing one stops nothing; the AbortSignal made on
 * demand follows the run, before or after it is aborted; `after` times out.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { RunAbort, WorkloadAbort } from '../../src/core/backend.js';

describe('RunAbort', () => {
  it('calls its listeners once, in order, then the signal’s; a removed one is not called', () => {
    const abort = new RunAbort();
    const calls: string[] = [];
    const signal = abort.signal;
    signal.addEventListener('abort', () => calls.push(`signal:${(signal.reason as WorkloadAbort).kind}`));
    abort.onAbort(() => calls.push('a'));
    const removeB = abort.onAbort(() => calls.push('b'));
    abort.onAbort(() => calls.push('c'));
    removeB();
    assert.equal(abort.aborted, false);
    assert.equal(abort.reason, undefined);
    const why = new WorkloadAbort('timeout');
    abort.abort(why);
    abort.abort(new WorkloadAbort('killed'));
    assert.deepEqual(calls, ['a', 'c', 'signal:timeout']);
    assert.equal(abort.aborted, true);
    assert.equal(abort.reason, why, 'the first reason stays');
  });

  it('a listener added after the abort runs at once; a signal made after it is already aborted', () => {
    const abort = new RunAbort();
    abort.abort(new WorkloadAbort('killed'));
    let called = 0;
    abort.onAbort(() => called++);
    assert.equal(called, 1);
    assert.equal(abort.signal.aborted, true);
    assert.equal((abort.signal.reason as WorkloadAbort).kind, 'killed');
  });

  it('a listener that throws stops neither the others nor the signal; abort() throws its error after', () => {
    const abort = new RunAbort();
    const signal = abort.signal;
    let later = false;
    abort.onAbort(() => {
      throw new Error('listener broke');
    });
    abort.onAbort(() => (later = true));
    assert.throws(() => abort.abort(new WorkloadAbort('killed')), /listener broke/);
    assert.equal(later, true);
    assert.equal(signal.aborted, true);
  });

  it('after(ms) aborts with a timeout', async () => {
    const abort = RunAbort.after(20);
    assert.equal(abort.aborted, false);
    await sleep(60);
    assert.equal(abort.reason?.kind, 'timeout');
  });
});
