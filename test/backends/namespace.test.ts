/**
 * The namespace backend against real bubblewrap and real cgroups: the shared conformance
 * suite, plus what is particular to it.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { describe, it } from 'node:test';
import * as tar from 'tar';
import { createBackend } from '../../src/backends/namespace/index.js';
import { createHarness } from '../../src/backends/conformance/harness.js';
import { createImageStore } from '../../src/images/index.js';
import { dataDirTag } from '../../src/core/config.js';
import { cgexecPathFor } from '../../src/host/bwrap.js';
import { createCgroup } from '../../src/host/cgroups.js';
import { describeWorkloadConformance } from '../../src/backends/conformance/workload-suite.js';
import { cgroupsLeft, eventually, processesWith, tempDir, testConfig, testContext } from '../helpers/context.js';

const conformanceContext = testContext();
describeWorkloadConformance('namespace', {
  create: () => Promise.resolve(createBackend(conformanceContext)),
  leftovers: () => eventually(() => [...cgroupsLeft(`ns-${dataDirTag(conformanceContext.config.dataDir)}-`), ...processesWith('bwrap', '/vulcan/lib/')]),
});

describe('namespace: particulars', () => {
  it('runs on an image from the store when the workload names one: the image, not the host, is what it sees', async (t) => {
    const imagesDir = process.env.VULCAN_TEST_IMAGES_DIR ?? '/var/lib/vulcan';
    const store = createImageStore(imagesDir);
    const node = await store.resolve('node');
    if (!node) return t.skip(`no built-in images in ${imagesDir}/images (scripts/setup.sh builds them; or set VULCAN_TEST_IMAGES_DIR)`);
    const h = createHarness(createBackend(testContext(store)));
    try {
      const rec = await h.run({ runtime: 'node', image: 'node', code: "import fs from 'node:fs';\nexport default () => ({ debian: fs.readFileSync('/etc/debian_version', 'utf8').trim(), node: process.version })" });
      assert.equal(rec.status, 'completed', JSON.stringify(rec));
      const out = rec.output as { debian: string; node: string };
      assert.equal(out.debian, fs.readFileSync(path.join(node.rootfsDir, 'etc', 'debian_version'), 'utf8').trim());
      assert.notEqual(out.debian, fs.readFileSync('/etc/debian_version', 'utf8').trim(), 'sees the host /etc');
      const sh = await h.run({ runtime: 'sh', image: 'minimal', code: 'ls /usr/bin/python3 /usr/bin/node 2>&1; id -u\n' });
      assert.equal(sh.status, 'completed', JSON.stringify(sh));
      assert.match(sh.stdout, /No such file/);
      assert.match(sh.stdout, /^1000$/m);
    } finally {
      await h.close();
    }
  });

  it('runs a code_archive entrypoint that imports a sibling module', async () => {
    const src = tempDir();
    fs.mkdirSync(path.join(src, 'pkg'));
    fs.writeFileSync(path.join(src, 'pkg', 'helper.py'), 'def double(x):\n    return 2 * x\n');
    fs.writeFileSync(path.join(src, 'pkg', 'main.py'), 'from helper import double\ndef main(i):\n    return double(i)\n');
    const tgz = path.join(src, 'code.tgz');
    await tar.create({ gzip: true, file: tgz, cwd: src }, ['pkg']);
    const h = createHarness(createBackend(testContext()));
    try {
      const rec = await h.run({ runtime: 'python', code_archive: fs.readFileSync(tgz).toString('base64'), entrypoint: 'pkg/main.py', input: 21 });
      assert.equal(rec.status, 'completed', JSON.stringify(rec));
      assert.equal(rec.output, 42);
    } finally {
      await h.close();
      fs.rmSync(src, { recursive: true, force: true });
    }
  });

  it('the sandbox runs as an unprivileged user with no capabilities and no_new_privs', async () => {
    const h = createHarness(createBackend(testContext()));
    try {
      const rec = await h.run({ runtime: 'sh', code: 'id -u\ngrep -E "^(CapEff|NoNewPrivs)" /proc/self/status\nhostname\n' });
      assert.equal(rec.status, 'completed', JSON.stringify(rec));
      assert.match(rec.stdout, /^1000$/m);
      assert.match(rec.stdout, /^CapEff:\s+0+$/m);
      assert.match(rec.stdout, /^NoNewPrivs:\s+1$/m);
      assert.match(rec.stdout, /^vulcan$/m);
    } finally {
      await h.close();
    }
  });

  it('reports itself unavailable, with the reason, when its native helper is missing', async () => {
    const dir = tempDir();
    const runners = path.join(dir, 'src', 'backends', 'namespace', 'runners');
    fs.mkdirSync(runners, { recursive: true });
    const real = path.join(testConfig().installDir, 'src', 'backends', 'namespace', 'runners');
    for (const f of fs.readdirSync(real)) fs.copyFileSync(path.join(real, f), path.join(runners, f));
    const backend = createBackend(testContext(undefined, testConfig(undefined, { installDir: dir })));
    const av = await backend.probe();
    assert.equal(av.available, false);
    assert.match(av.available ? '' : av.reason, /vulcan-cgexec is missing/);
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('kills the whole sandbox when the server dies at any moment of its start, setup included (vulcan-cgexec)', async () => {
    // bwrap --die-with-parent alone leaves a window during setup in which a dying parent
    // orphans the sandbox; the vulcan-cgexec shim closes it by killing the cgroup.
    const cgexec = cgexecPathFor(testConfig().installDir);
    const left: string[] = [];
    for (const delay of ['0', '0.001', '0.002', '0.003', '0.005', '0.008', '0.012', '0.02', '0.05', '0.2']) {
      const cg = await createCgroup(`ns-cgexec-race-${process.pid}`, { memBytes: 64 << 20, pidsMax: 16, cpus: 1 });
      try {
        const sandbox = [cgexec, '-u', '65534', '-g', '65534', ...cg.procsFiles.flatMap((f) => ['-j', f]), '--',
          '/usr/bin/bwrap', '--unshare-all', '--unshare-user', '--die-with-parent', '--new-session', '--uid', '1000', '--gid', '1000',
          '--ro-bind', '/usr', '/usr', '--symlink', 'usr/bin', '/bin', '--symlink', 'usr/lib', '/lib', '--symlink', 'usr/lib64', '/lib64',
          '--proc', '/proc', '--dev', '/dev', '--', '/bin/sleep', '4321'];
        // A stand-in for the server: starts the sandbox, then is SIGKILLed after `delay` s.
        try {
          // -P names it, as spawnBwrap names the server: killed before the shim ran, it starts nothing.
          execFileSync('/bin/sh', ['-c', 'c="$1"; shift; "$c" -P $$ "$@" & sleep "$DELAY"; kill -9 $$', 'server', ...sandbox], { env: { DELAY: delay }, stdio: 'ignore' });
        } catch {
          // killed, as intended
        }
        const procs = await eventually(() => cg.procsFiles.flatMap((f) => fs.readFileSync(f, 'utf8').split('\n').filter(Boolean)), 3000);
        if (procs.length > 0) left.push(`after ${delay} s: pids ${procs.join(' ')}`);
      } finally {
        await cg.destroy();
      }
    }
    assert.deepEqual(left, []);
  });

  it('makes cgroup migrations cheap host-wide (favordynmods) and says so in its probe', async () => {
    const backend = createBackend(testContext());
    try {
      const av = await backend.probe();
      assert.equal(av.available, true);
      const state = av.available ? (av.info?.cgroupFavorDynmods ?? '') : '';
      assert.match(state, /^on \(/);
      const mountinfo = fs.readFileSync('/proc/self/mountinfo', 'utf8');
      assert.ok(mountinfo.split('\n').some((l) => / - cgroup2? /.test(l) && /[ ,]favordynmods(,|$)/.test(l.split(' - ')[1] ?? '')), 'a cgroup mount has favordynmods');
    } finally {
      await backend.close();
    }
  });
});
