/**
 * The PTY shell check shared by the sandbox tests of every backend: over the exec
 * WebSocket, `/bin/sh` gets a terminal of the asked size, sees a resize, and its exit code
 * comes back.
 */
import assert from 'node:assert/strict';
import WebSocket from 'ws';
import type { Sandbox } from '../../src/sdk/index.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * Runs the check on `sbx`. `polls` × 50 ms bounds each wait for output; `resizeSettleMs`
 * is the pause after a resize (slower walls, e.g. gVisor, get more of both).
 */
export async function checkPtyShell(sbx: Sandbox, opts: { polls?: number; resizeSettleMs?: number } = {}): Promise<void> {
  const polls = opts.polls ?? 100;
  const ws = new WebSocket(sbx.shellUrl({ cmd: ['/bin/sh'], rows: 30, cols: 100 }));
  let out = '';
  const exit = new Promise<{ exit_code: number }>((resolve, reject) => {
    ws.on('message', (data, isBinary) => {
      if (isBinary) out += (data as Buffer).toString();
      else {
        const m = JSON.parse((data as Buffer).toString()) as { type: string; exit_code: number };
        if (m.type === 'exit') resolve(m);
      }
    });
    ws.on('error', reject);
  });
  await new Promise((r, j) => {
    ws.once('open', r);
    ws.once('error', j);
  });
  const waitOut = async (re: RegExp) => {
    for (let i = 0; i < polls && !re.test(out); i++) await sleep(50);
    assert.match(out, re);
  };
  ws.send(Buffer.from('tty; stty size; echo $((6*7))\n'), { binary: true });
  await waitOut(/42/);
  assert.match(out, /\/dev\/pts\/\d+/);
  assert.match(out, /30 100/);
  ws.send(JSON.stringify({ type: 'resize', rows: 50, cols: 132 }));
  await sleep(opts.resizeSettleMs ?? 100);
  ws.send(JSON.stringify({ type: 'stdin', data: 'stty size\n' }));
  await waitOut(/50 132/);
  ws.send(Buffer.from('exit 3\n'), { binary: true });
  assert.equal((await exit).exit_code, 3);
}
