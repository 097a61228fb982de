/**
 * Restart reconciliation with a real `vulcan serve` that is killed outright (SIGKILL):
 * live sandboxes (running and paused) are re-attached and keep their files and processes;
 * one whose processes died meanwhile is marked lost with the reason; orphans (a cgroup with
 * a process, a directory, with no record) are destroyed.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { describe, it } from 'node:test';
import { sandboxCgroupPrefix } from '../../src/backends/namespace/sandbox-driver.js';
import { cgexecPathFor } from '../../src/host/bwrap.js';
import { createCgroup, reapStaleCgroups } from '../../src/host/cgroups.js';
import { Sandbox } from '../../src/sdk/index.js';
import { cgroupsLeft, tempDir, testConfig } from '../helpers/context.js';
import { spawnServer, type ChildServer } from '../helpers/server.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('sandboxes: restart reconciliation', () => {
  it('re-attaches live sandboxes, marks dead ones lost, destroys orphans', { timeout: 120_000 }, async () => {
    const dataDir = tempDir('vulcan-sbx-reconcile-');
    const prefix = sandboxCgroupPrefix(dataDir);
    let srv: ChildServer | undefined = await spawnServer(dataDir);
    const ids: string[] = [];
    try {
      const url1 = srv.url;
      const [live, doomed, frozen] = await Promise.all([0, 1, 2].map(() => Sandbox.create({ url: url1, isolation: 'namespace' })));
      if (!live || !doomed || !frozen) throw new Error('create failed');
      ids.push(live.id, doomed.id, frozen.id);
      await live.files.write('/work/state.txt', 'before the crash');
      await live.exec(['sh', '-c', 'nohup sleep 600 >/dev/null 2>&1 & echo $! > /tmp/sleeper.pid']);
      await frozen.pause();

      await srv.stop('SIGKILL');
      srv = undefined;
      // While the server is down: one sandbox dies, and orphans appear.
      await reapStaleCgroups(`${prefix}${doomed.id}`);
      const orphanId = '01ORPHANORPHANORPHANORPHAN';
      const cg = await createCgroup(`${prefix}${orphanId}`, { memBytes: 64 * 1024 * 1024, pidsMax: 16, cpus: 1 });
      const orphanProc = spawn(cgexecPathFor(testConfig().installDir), [...cg.procsFiles.flatMap((f) => ['-j', f]), '--', '/bin/sleep', '600'], { detached: true, stdio: 'ignore' });
      orphanProc.unref();
      fs.mkdirSync(path.join(dataDir, 'sandboxes', 'LEFTOVER'), { recursive: true });
      await sleep(100);
      assert.equal(cgroupsLeft(`${prefix}${orphanId}`).length, 1);

      srv = await spawnServer(dataDir);
      const url2 = srv.url;
      const again = await Sandbox.connect(live.id, { url: url2 });
      assert.equal(again.info.state, 'running');
      assert.equal((await again.files.read('/work/state.txt')).toString(), 'before the crash');
      assert.equal((await again.exec(['sh', '-c', 'kill -0 "$(cat /tmp/sleeper.pid)" && echo alive'])).stdout, 'alive\n');

      const lost = await Sandbox.connect(doomed.id, { url: url2 });
      assert.equal(lost.info.state, 'lost');
      assert.match(lost.info.end_reason ?? '', /gone/);
      const r = await fetch(`${url2}/v1/sandboxes/${doomed.id}/exec`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"cmd":["true"]}' });
      assert.equal(r.status, 410);

      const thawed = await Sandbox.connect(frozen.id, { url: url2 });
      assert.equal(thawed.info.state, 'paused');
      await thawed.resume();
      assert.equal((await thawed.exec(['echo', 'thawed'])).stdout, 'thawed\n');

      assert.deepEqual(cgroupsLeft(`${prefix}${orphanId}`), [], 'the orphan cgroup was reaped');
      assert.equal(orphanProc.exitCode !== null || orphanProc.signalCode !== null || !fs.existsSync(`/proc/${String(orphanProc.pid)}`) || fs.readFileSync(`/proc/${String(orphanProc.pid)}/stat`, 'utf8').split(') ')[1]?.[0] === 'Z', true, 'the orphan process was killed');
      assert.equal(fs.existsSync(path.join(dataDir, 'sandboxes', 'LEFTOVER')), false, 'the orphan directory was removed');

      await again.destroy();
      await thawed.destroy();
    } finally {
      if (srv) {
        for (const id of ids) await fetch(`${srv.url}/v1/sandboxes/${id}`, { method: 'DELETE' }).catch(() => undefined);
        await srv.stop();
      }
      await reapStaleCgroups(prefix);
      assert.deepEqual(cgroupsLeft(prefix), []);
      fs.rmSync(dataDir, { recursive: true, force: true });
    }
  });
});
