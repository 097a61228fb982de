/**
 * The sandbox agent's exec through its spawn helper (native/vulcan-spawnd.c 'X' requests,
 * SpawnHelper in src/sandboxes/agent/agent.ts): the real agent runs on the host on a socket
 * path (as under gVisor), and the tests speak its protocol. Each behaviour is checked with
 * the helper and with Node's own spawn (the fallback), which must agree: exit codes, signals,
 * env, PATH search, cwd, stdin, a timeout that kills the whole process group, a session of
 * its own, and no fd of the agent or the helper reaching the command.
 */
import assert from 'node:assert/strict';
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { AGENT_FRAME, encodeFrame, FrameDecoder, sendRequest, SERVER_FRAME, type ExecExit } from '../../src/sandboxes/protocol.js';
import { testConfig } from '../helpers/context.js';

const AGENT = fileURLToPath(new URL('../../src/sandboxes/agent/agent.js', import.meta.url));
const SPAWND = path.join(testConfig().installDir, 'build', 'vulcan-spawnd');

/** Waits until `cond` holds; throws what was awaited when it does not within `withinMs`. */
async function until(what: string, cond: () => boolean | Promise<boolean>, withinMs: number): Promise<void> {
  const end = Date.now() + withinMs;
  while (!(await cond())) {
    if (Date.now() > end) throw new Error(`${what} did not happen within ${withinMs} ms`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

interface Agent {
  readonly socket: string;
  readonly child: ChildProcess;
  readonly log: () => string;
  stop(): Promise<void>;
}

async function startAgent(spawnHelper: string): Promise<Agent> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vulcan-agent-spawn-'));
  const socket = path.join(dir, 'agent.sock');
  const child = spawn(process.execPath, [AGENT], { env: { VULCAN_AGENT_SOCKET: socket, VULCAN_AGENT_SPAWN_HELPER: spawnHelper }, stdio: ['ignore', 'ignore', 'pipe'], cwd: dir });
  let log = '';
  child.stderr?.on('data', (c: Buffer) => (log += c.toString()));
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  await until('the agent ready', () => log.includes('ready'), 10_000);
  return {
    socket,
    child,
    log: () => log,
    stop: async () => {
      child.kill('SIGKILL');
      await exited;
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}

interface ExecResult extends ExecExit {
  stdout: string;
  stderr: string;
}

/** One exec over the agent protocol; `frames` are sent after the request (stdin, signals). */
function exec(agent: Agent, req: Record<string, unknown>, frames: Buffer[] = []): Promise<ExecResult> {
  return new Promise((resolve, reject) => {
    const sock = net.connect({ path: agent.socket, allowHalfOpen: true });
    const decoder = new FrameDecoder();
    let stdout = '';
    let stderr = '';
    let exit: ExecExit | undefined;
    sock.on('connect', () => {
      sendRequest(sock, { op: 'exec', env: { PATH: '/usr/bin:/bin' }, cwd: '/', timeout_ms: 20_000, ...req });
      for (const f of frames) sock.write(f);
    });
    sock.on('data', (c: Buffer) => {
      for (const f of decoder.push(c)) {
        if (f.type === AGENT_FRAME.stdout) stdout += f.body.toString();
        else if (f.type === AGENT_FRAME.stderr) stderr += f.body.toString();
        else if (f.type === AGENT_FRAME.exit) exit = JSON.parse(f.body.toString()) as ExecExit;
      }
    });
    sock.on('end', () => sock.destroy());
    sock.on('error', reject);
    sock.on('close', () => (exit ? resolve({ ...exit, stdout, stderr }) : reject(new Error(`no exit frame; agent log: ${agent.log()}`))));
  });
}

/** The name of the process that forked the command. */
async function parentName(agent: Agent): Promise<string> {
  return (await exec(agent, { cmd: ['sh', '-c', 'cat /proc/$PPID/comm'] })).stdout.trim();
}

const alive = (pid: number) => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};

for (const mode of ['spawn helper', 'node spawn'] as const) {
  describe(`sandbox agent exec (${mode})`, () => {
    let agent: Agent;
    before(async () => {
      agent = await startAgent(mode === 'spawn helper' ? SPAWND : '');
      // The helper is used once its probe has passed, moments after the agent is ready.
      if (mode === 'spawn helper') await until('the helper in use', async () => (await parentName(agent)) === 'vulcan-spawnd', 10_000);
    });
    after(() => agent.stop());

    it(mode === 'spawn helper' ? 'forks commands in the helper, not in the agent' : 'forks commands in the agent', async () => {
      assert.equal(await parentName(agent), mode === 'spawn helper' ? 'vulcan-spawnd' : 'node');
    });

    it('reports exit codes, stdout and stderr, and death by a signal', async () => {
      const r = await exec(agent, { cmd: ['sh', '-c', 'echo out; echo err >&2; exit 7'] });
      assert.deepEqual([r.exit_code, r.signal, r.stdout, r.stderr, r.timed_out], [7, null, 'out\n', 'err\n', false]);
      const killed = await exec(agent, { cmd: ['sh', '-c', 'kill -TERM $$'] });
      assert.deepEqual([killed.exit_code, killed.signal], [null, 'SIGTERM']);
      // Signals with aliases get the name Node's spawn gives them (SIGABRT, not SIGIOT).
      const aborted = await exec(agent, { cmd: ['sh', '-c', 'kill -ABRT $$'] });
      assert.deepEqual([aborted.exit_code, aborted.signal], [null, 'SIGABRT']);
      const io = await exec(agent, { cmd: ['sh', '-c', 'kill -IO $$'] });
      assert.deepEqual([io.exit_code, io.signal], [null, 'SIGIO']);
    });

    it('gives exactly the env asked for, searches its PATH, and runs in cwd', async () => {
      const env = await exec(agent, { cmd: ['/usr/bin/env'], env: { FOO: 'bar baz', EMPTY: '' }, cwd: '/tmp' });
      assert.deepEqual(env.stdout.split('\n').filter(Boolean).sort(), ['EMPTY=', 'FOO=bar baz']);
      const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vulcan-agent-path-'));
      try {
        fs.writeFileSync(path.join(dir, 'mytool'), '#!/bin/sh\necho "tool in $(pwd)"\n', { mode: 0o755 });
        fs.writeFileSync(path.join(dir, 'noexec'), '#!/bin/sh\necho no\n', { mode: 0o644 });
        const found = await exec(agent, { cmd: ['mytool'], env: { PATH: `/nonexistent:${dir}:/usr/bin:/bin` }, cwd: '/tmp' });
        assert.deepEqual([found.exit_code, found.stdout], [0, 'tool in /tmp\n']);
        const notOnPath = await exec(agent, { cmd: ['true'], env: { PATH: dir } });
        assert.equal(notOnPath.exit_code, 127);
        assert.match(notOnPath.stderr, /cannot run true: ENOENT/);
        const denied = await exec(agent, { cmd: [path.join(dir, 'noexec')] });
        assert.equal(denied.exit_code, 126);
        assert.match(denied.stderr, /EACCES/);
      } finally {
        fs.rmSync(dir, { recursive: true, force: true });
      }
      const noCwd = await exec(agent, { cmd: ['true'], cwd: '/no/such/dir' });
      assert.equal(noCwd.exit_code, 127);
      assert.match(noCwd.stderr, /cannot run true: ENOENT/);
      const missing = await exec(agent, { cmd: ['/no/such/binary'] });
      assert.equal(missing.exit_code, 127);
    });

    it('feeds stdin whole or streamed, and gives /dev/null when there is none', async () => {
      assert.equal((await exec(agent, { cmd: ['cat'], stdin: Buffer.from('piped in').toString('base64') })).stdout, 'piped in');
      const streamed = await exec(agent, { cmd: ['cat'], stdin_stream: true }, [encodeFrame(SERVER_FRAME.stdin, 'one '), encodeFrame(SERVER_FRAME.stdin, 'two'), encodeFrame(SERVER_FRAME.stdinEof, '')]);
      assert.equal(streamed.stdout, 'one two');
      assert.equal((await exec(agent, { cmd: ['sh', '-c', 'readlink /proc/self/fd/0; cat'] })).stdout, '/dev/null\n');
    });

    it('leads a session and process group of its own; a timeout kills the whole group', async () => {
      const ids = await exec(agent, { cmd: ['sh', '-c', 'cut -d" " -f1,5,6 /proc/$$/stat'] });
      const [pid, pgrp, sid] = ids.stdout.trim().split(' ');
      assert.ok(pid !== undefined && pid === pgrp && pid === sid, `pid, process group, session: ${ids.stdout}`);
      const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vulcan-agent-group-'));
      try {
        const t0 = Date.now();
        const slow = await exec(agent, { cmd: ['sh', '-c', `sleep 30 & echo $! > ${dir}/bg; sleep 30`], timeout_ms: 300 });
        assert.equal(slow.timed_out, true);
        assert.equal(slow.signal, 'SIGKILL');
        assert.ok(Date.now() - t0 < 5_000);
        const bg = Number(fs.readFileSync(path.join(dir, 'bg'), 'utf8'));
        await until('the background sleep killed', () => !alive(bg), 5_000);
      } finally {
        fs.rmSync(dir, { recursive: true, force: true });
      }
    });

    it('passes a signal frame to the process group', async () => {
      const r = await exec(agent, { cmd: ['sleep', '30'] }, [encodeFrame(SERVER_FRAME.signal, JSON.stringify({ signal: 'SIGINT' }))]);
      assert.equal(r.signal, 'SIGINT');
    });

    const fdSkip = mode === 'node spawn' && "Node's spawn passes on every fd the agent inherited without close-on-exec (here the test runner's); the helper closes them all";
    it('lets no fd of the agent or the helper into the command', { skip: fdSkip }, async () => {
      const fds = await exec(agent, { cmd: ['sh', '-c', 'ls /proc/$$/fd'] });
      assert.deepEqual(fds.stdout.split('\n').filter(Boolean).sort(), ['0', '1', '2']);
    });

    it('runs many commands at once', async () => {
      const rs = await Promise.all(Array.from({ length: 20 }, (_, i) => exec(agent, { cmd: ['sh', '-c', `echo ${i}; exit ${i}`] })));
      rs.forEach((r, i) => assert.deepEqual([r.exit_code, r.stdout], [i, `${i}\n`]));
    });
  });
}

describe('sandbox agent exec when the spawn helper dies', () => {
  it('keeps running commands: the helper is restarted, or Node forks meanwhile', async () => {
    const agent = await startAgent(SPAWND);
    try {
      await until('the helper in use', async () => (await parentName(agent)) === 'vulcan-spawnd', 10_000);
      const helperPid = Number((await exec(agent, { cmd: ['sh', '-c', 'echo $PPID'] })).stdout);
      process.kill(helperPid, 'SIGKILL');
      await until('the agent noticing', () => agent.log().includes('exec helper exited'), 5_000);
      const r = await exec(agent, { cmd: ['sh', '-c', 'echo still'] });
      assert.deepEqual([r.exit_code, r.stdout], [0, 'still\n']);
      // Restarted after a pause, then in use again.
      await until('a new helper in use', async () => (await parentName(agent)) === 'vulcan-spawnd' && Number((await exec(agent, { cmd: ['sh', '-c', 'echo $PPID'] })).stdout) !== helperPid, 10_000);
    } finally {
      await agent.stop();
    }
  });

  it('a command that stops the helper still ends at its timeout, and the helper is restarted', { timeout: 30_000 }, async () => {
    const agent = await startAgent(SPAWND);
    try {
      await until('the helper in use', async () => (await parentName(agent)) === 'vulcan-spawnd', 10_000);
      const t0 = performance.now();
      const r = await exec(agent, { cmd: ['sh', '-c', 'kill -STOP $PPID; sleep 60'], timeout_ms: 500 });
      const ms = performance.now() - t0;
      assert.equal(r.timed_out, true);
      assert.equal(r.signal, 'SIGKILL');
      assert.ok(ms < 10_000, `the exec ended after ${Math.round(ms)} ms`);
      assert.match(agent.log(), /restarting it/);
      await until('a working helper again', async () => (await parentName(agent)) === 'vulcan-spawnd', 10_000);
      assert.equal((await exec(agent, { cmd: ['echo', 'ok'] })).stdout, 'ok\n');
    } finally {
      await agent.stop();
    }
  });

  it('is not used when its probe fails, and commands still run', async () => {
    const agent = await startAgent('/bin/false');
    try {
      await until('the agent giving up on it', () => agent.log().includes('exec helper unused'), 10_000);
      assert.equal(await parentName(agent), 'node');
    } finally {
      await agent.stop();
    }
  });
});

/**
 * A squatter on the helper's socket name (native/vulcan-spawnd.c `connect_slot`): an abstract
 * name exists in two forms (zero-padded, as Node 20 binds it, and exact-length, as Node 22+
 * does), and any process of the sandbox could bind the form the agent left free. Here the
 * caller (a Python stand-in for a Node 22 agent) binds the exact form, a second process the
 * padded one; the helper's child must talk only to the process that started the helper.
 */
const SQUAT_PY = String.raw`import os, socket, struct, subprocess, sys, time, select
spawnd = sys.argv[1]
name = b'\0vulcan-test-squat-%d' % os.getpid()
# The caller (this process) listens on the exact-length name, as libuv >= 1.48 (Node 22+) binds it.
real = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
real.bind(name)
real.listen(8)
# A squatter, another process of the same user, binds the zero-padded form of the name.
r, w = os.pipe()
pid = os.fork()
if pid == 0:
    os.close(r)
    sq = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sq.bind(name + b'\0' * (108 - len(name)))
    sq.listen(8)
    os.write(w, b'r')
    sq.settimeout(5)
    try:
        c, _ = sq.accept()
        c.settimeout(2)
        if c.recv(16): os.write(w, b'S')  # the squatter was told a token
    except OSError:
        pass
    except socket.timeout:
        pass
    os._exit(0)
os.close(w)
assert os.read(r, 1) == b'r'
helper = subprocess.Popen([spawnd, '@' + name[1:].decode()], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
token = os.urandom(16)
strings = b'/\0' + b'echo\0' + b'hi\0' + b'PATH=/usr/bin:/bin\0'
body = b'X' + token + bytes([2, 0, 1]) + struct.pack('<H', 2) + strings
helper.stdin.write(struct.pack('<I', len(body)) + body)
helper.stdin.flush()
real.settimeout(5)
got_real = False
try:
    c, _ = real.accept()
    hello = c.recv(21)
    got_real = hello[:16] == token
    out = b''
    while True:
        d = c.recv(100)
        if not d: break
        out += d
except socket.timeout:
    out = b''
os.waitpid(pid, 0)
rl, _, _ = select.select([r], [], [], 0)
squatted = bool(rl) and os.read(r, 1) == b'S'
helper.kill()
print('real=%s squatted=%s out=%r' % (got_real, squatted, out))
`;

describe('sandbox agent exec: the spawn helper talks only to its caller', () => {
  it('a process that binds the other form of the socket name gets no token and no output', () => {
    const out = execFileSync('python3', ['-c', SQUAT_PY, SPAWND], { encoding: 'utf8', timeout: 30_000 }).trim();
    assert.equal(out, "real=True squatted=False out=b'hi\\n'");
  });
});
