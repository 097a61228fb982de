/**
 * The sandbox agent bundle (src/sandboxes/agent-bundle.ts): its node runs in a sandbox whose
 * root holds nothing but the bundle, with no libc or /usr of the host or of an image.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import { describe, it } from 'node:test';
import { AGENT_MOUNT, agentArgv, ensureAgentBundle } from '../../src/sandboxes/agent-bundle.js';
import { BWRAP_PATH } from '../../src/host/bwrap.js';
import { tempDir, testConfig } from '../helpers/context.js';

describe('sandbox agent bundle', () => {
  it('is built once, cached by content, and its node runs where there is no /usr at all', () => {
    const dataDir = tempDir();
    try {
      const a = ensureAgentBundle(dataDir, testConfig().installDir);
      const b = ensureAgentBundle(dataDir, testConfig().installDir);
      assert.equal(a.dir, b.dir);
      assert.deepEqual(fs.readdirSync(`${dataDir}/agent-bundle`), [a.digest]);
      for (const f of ['node', 'agent.mjs', 'pty', 'spawnd', 'lib/ld-linux-x86-64.so.2', 'lib/libc.so.6']) assert.ok(fs.existsSync(`${a.dir}/${f}`), f);
      const [loader, flag, lib, node] = agentArgv();
      const out = execFileSync(BWRAP_PATH, [
        '--unshare-all', '--die-with-parent', '--tmpfs', '/', '--ro-bind', a.dir, AGENT_MOUNT, '--proc', '/proc', '--',
        loader!, flag!, lib!, node!, '-e', "console.log(JSON.stringify({ v: process.version, usr: require('fs').existsSync('/usr'), root: require('fs').readdirSync('/').sort() }))",
      ], { encoding: 'utf8' });
      assert.deepEqual(JSON.parse(out), { v: process.version, usr: false, root: ['.vulcan-agent', 'proc'] });
    } finally {
      fs.rmSync(dataDir, { recursive: true, force: true });
    }
  });
});
