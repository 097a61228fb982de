/**
 * The workloads repository against a real SQLite file: the writes of one turn of the event loop
 * share one transaction, a second connection sees them once it commits, and the terminal record
 * the store builds is the one it would read back.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import Database from 'better-sqlite3';
import { openDatabase, type Db } from '../../src/store/db.js';
import { WorkloadStore, type FinishedWorkload, type NewWorkload } from '../../src/store/workloads.js';
import { threadsOf } from '../helpers/sched.js';

const turn = () => new Promise((r) => setImmediate(r));

function newWorkload(id: string): NewWorkload {
  return { id, mode: 'sync', isolation: 'isolate', runtime: 'js', nodeId: 'test', inputHash: 'h'.repeat(64), cpus: 1, memMB: 128, timeoutS: 30, createdAt: Date.now() };
}

const finished: FinishedWorkload = {
  status: 'completed',
  output: { hello: 'store', n: [1, 2.5, null] },
  stdout: Buffer.from('out\n'),
  stderr: Buffer.from(''),
  stdoutTruncated: false,
  stderrTruncated: true,
  logIndex: [['stdout', 4]],
  exitCode: null,
  error: null,
  durationMs: 1.23456,
  startMs: 0.5,
  execMs: 0.25,
  finishedAt: Date.now(),
};

describe('workload store', () => {
  let dir = '';
  let db: Db;
  let store: WorkloadStore;
  let reader: Database.Database;

  before(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vulcan-store-test-'));
    db = openDatabase(dir);
    store = new WorkloadStore(db);
    reader = new Database(path.join(dir, 'vulcan.db'), { readonly: true });
  });

  after(() => {
    reader.close();
    store.flush();
    db.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  const seenByOthers = (id: string) => reader.prepare('SELECT status FROM workloads WHERE id = ?').get(id) as { status: string } | undefined;

  it('groups the writes of one turn into one commit; committed() resolves after it', async () => {
    store.insert(newWorkload('w1'));
    store.markRunning('w1', 'isolate', 'because', Date.now());
    store.insert(newWorkload('w2'));
    assert.equal(store.get('w1')?.status, 'running', 'this connection reads its own writes at once');
    assert.equal(seenByOthers('w1'), undefined, 'not committed before the turn ends');
    await store.committed();
    assert.equal(seenByOthers('w1')?.status, 'running');
    assert.equal(seenByOthers('w2')?.status, 'pending');
    assert.equal(db.inTransaction, false);
  });

  it('finishAndGet returns the record get() reads back, and only once', async () => {
    store.markRunning('w2', 'isolate', 'because', Date.now());
    const rec = store.finishAndGet('w2', finished, { name: 'isolate', reason: 'because' });
    await store.committed();
    assert.deepEqual(rec, store.get('w2'));
    assert.equal(rec?.status, 'completed');
    assert.equal(store.finishAndGet('w2', { ...finished, status: 'failed' }), null, 'a second terminal write changes nothing');
    assert.equal(store.get('w2')?.status, 'completed');
    await turn();
    assert.equal(seenByOthers('w2')?.status, 'completed');
  });

  it('builds the record of a workload it did not insert by reading it', async () => {
    const other = new WorkloadStore(db);
    other.insert(newWorkload('w3'));
    await other.committed();
    const rec = store.finishAndGet('w3', finished, { name: 'isolate', reason: 'r' });
    assert.deepEqual(rec, store.get('w3'));
    assert.equal(rec?.isolation_used, 'isolate');
  });

  it('flush() commits at once (before the database closes)', () => {
    store.insert(newWorkload('w4'));
    assert.equal(seenByOthers('w4'), undefined);
    store.flush();
    assert.equal(seenByOthers('w4')?.status, 'pending');
  });
});

describe('workload store with its write thread', () => {
  let dir = '';
  let db: Db;
  let store: WorkloadStore;
  let reader: Database.Database;
  const errors: unknown[] = [];

  before(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vulcan-store-thread-test-'));
    db = openDatabase(dir);
    store = new WorkloadStore(db, { writeThread: true, onCommitError: (e) => errors.push(e) });
    reader = new Database(path.join(dir, 'vulcan.db'), { readonly: true });
  });

  after(async () => {
    reader.close();
    await store.close();
    db.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  const onDisk = (id: string) => reader.prepare('SELECT status, stdout, isolation_used FROM workloads WHERE id = ?').get(id) as { status: string; stdout: Buffer | null; isolation_used: string | null } | undefined;

  it('writes land on disk once committed() resolves; reads in between come from memory', async () => {
    // Another workload in flight: t1's terminal write goes to the thread (a quiet store's does not; below).
    store.insert(newWorkload('t0'));
    store.insert(newWorkload('t1'));
    store.markRunning('t1', 'isolate', 'because', Date.now());
    assert.equal(store.get('t1')?.status, 'running');
    assert.equal(onDisk('t1'), undefined, 'nothing is written on this thread');
    await store.committed();
    assert.equal(onDisk('t1')?.status, 'running');
    const rec = store.finishAndGet('t1', finished, { name: 'isolate', reason: 'because' });
    assert.equal(rec?.status, 'completed');
    assert.deepEqual(store.get('t1'), rec, 'the ended row is answered from memory until committed');
    assert.equal(store.logs('t1')?.stdout.toString(), 'out\n');
    assert.equal(store.finishAndGet('t1', { ...finished, status: 'failed' }), null, 'a second terminal write changes nothing');
    await store.committed();
    const disk = onDisk('t1');
    assert.equal(disk?.status, 'completed');
    assert.equal(disk?.stdout?.toString(), 'out\n', 'blobs cross the thread as bytes');
    assert.deepEqual(store.get('t1'), rec);
    assert.equal(store.finishAndGet('t1', { ...finished, status: 'failed' }), null);
    store.finishAndGet('t0', finished);
    await store.committed();
    assert.deepEqual(errors, []);
  });

  it('a quiet store (one workload in flight, nothing on its way to the thread) commits its terminal write on the spot', async () => {
    store.insert(newWorkload('q1'));
    await store.committed();
    store.finishAndGet('q1', finished, { name: 'isolate', reason: 'r' });
    assert.equal(onDisk('q1')?.status, 'completed', 'on disk before any turn passes');
    store.insert(newWorkload('q2'));
    store.insert(newWorkload('q3'));
    await store.committed();
    store.finishAndGet('q2', finished, { name: 'isolate', reason: 'r' });
    assert.equal(onDisk('q2')?.status, 'pending', 'with another in flight it goes to the thread');
    await store.committed();
    assert.equal(onDisk('q2')?.status, 'completed');
    store.finishAndGet('q3', finished, { name: 'isolate', reason: 'r' });
    assert.equal(onDisk('q3')?.status, 'completed', 'the last one in flight, the thread idle: on the spot again');
    assert.deepEqual(errors, []);
  });

  it('many writes of many turns all land', async () => {
    for (let i = 0; i < 200; i++) {
      store.insert({ ...newWorkload(`m${i}`), running: { backend: 'isolate', reason: 'r', startedAt: Date.now() } });
      if (i % 7 === 0) await turn();
    }
    for (let i = 0; i < 200; i++) store.finishAndGet(`m${i}`, finished, { name: 'isolate', reason: 'r' });
    await store.committed();
    const n = reader.prepare(`SELECT COUNT(*) AS n FROM workloads WHERE id LIKE 'm%' AND status = 'completed'`).get() as { n: number };
    assert.equal(n.n, 200);
  });

  it('runs behind the event loop: nice 10 and SCHED_BATCH, while the event loop keeps its priority', async () => {
    store.insert(newWorkload('sched'));
    await store.committed(); // the thread is up: it committed a write
    const threads = threadsOf('self');
    const main = threads.find((t) => t.tid === process.pid);
    assert.deepEqual({ nice: main?.nice, policy: main?.policy }, { nice: 0, policy: 'normal' });
    const lowered = threads.filter((t) => t.nice === 10 && t.policy === 'batch');
    assert.equal(lowered.length, 1, `one thread (the write thread) is lowered: ${JSON.stringify(threads)}`);
  });

  it('when the thread dies, what it had not committed and every later write run on the main connection', async () => {
    store.insert(newWorkload('d1'));
    // Kill the thread before its batch leaves (the batch leaves at the end of this turn).
    const writer = (store as unknown as { writer: { worker: { terminate(): Promise<number> } } }).writer;
    await writer.worker.terminate();
    store.insert(newWorkload('d2'));
    store.finishAndGet('d1', finished, { name: 'isolate', reason: 'r' });
    await store.committed();
    assert.equal(onDisk('d1')?.status, 'completed');
    assert.equal(onDisk('d2')?.status, 'pending');
    assert.equal(errors.length, 1, 'the death is reported once');
    assert.match(String(errors[0]), /write thread exited/);
  });
});

describe('workload store whose write thread fails a transaction', () => {
  it('stops the thread and runs what it had not committed on the main connection, in order', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vulcan-store-fail-test-'));
    const db = openDatabase(dir);
    const errors: unknown[] = [];
    const store = new WorkloadStore(db, { writeThread: true, onCommitError: (e) => errors.push(e) });
    const reader = new Database(path.join(dir, 'vulcan.db'), { readonly: true });
    try {
      // A row the thread cannot insert again: its transaction (with e2's insert) fails.
      const other = new WorkloadStore(db);
      other.insert(newWorkload('e1'));
      await other.committed();
      store.insert(newWorkload('e1'));
      store.insert(newWorkload('e2'));
      await store.committed();
      store.finishAndGet('e2', finished, { name: 'isolate', reason: 'r' });
      store.insert(newWorkload('e3'));
      await store.committed();
      const status = (id: string) => (reader.prepare('SELECT status FROM workloads WHERE id = ?').get(id) as { status: string } | undefined)?.status;
      assert.equal(status('e2'), 'completed', 'the failed batch was run again here, and what came after it');
      assert.equal(status('e3'), 'pending');
      assert.equal(errors.length, 1);
      assert.match(String(errors[0]), /could not commit: UNIQUE constraint failed/);
    } finally {
      reader.close();
      await store.close();
      db.close();
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
