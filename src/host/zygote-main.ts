/**
 * The zygote: a small, long-lived child of the server that starts sandbox processes for it.
 *
 * Starting a process from Node forks the whole process first (libuv uses fork on Linux), and
 * fork copies the page tables: measured here, `spawn()` takes 2 ms from a 45 MiB process
 * and 24 ms from a 350 MiB one. The API server grows; this process stays small, so every
 * sandbox start costs the same. It spawns what it is asked to, feeds stdin and the data fds,
 * and hands the output pipes back to the server over the IPC channel (the server reads them
 * directly; no byte passes through here).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import type { Socket } from 'node:net';
import type { ZygoteReply, ZygoteRequest } from './zygote.js';

const children = new Map<number, ChildProcess>();

function send(msg: ZygoteReply, handle?: Socket): void {
  if (handle) process.send?.(msg, handle);
  else process.send?.(msg);
}

process.on('message', (m: ZygoteRequest) => {
  if (m.t === 'kill') {
    children.get(m.id)?.kill(m.signal);
    return;
  }
  const extra = (m.resultFd ? 1 : 0) + m.data.length;
  let child: ChildProcess;
  try {
    child = spawn(m.file, m.args, { stdio: ['pipe', 'pipe', 'pipe', ...Array<'pipe'>(extra).fill('pipe')], cwd: '/', env: {} });
  } catch (err) {
    send({ t: 'error', id: m.id, message: (err as Error).message });
    return;
  }
  children.set(m.id, child);
  child.on('error', (err) => send({ t: 'error', id: m.id, message: err.message }));
  child.stdin?.on('error', () => undefined);
  child.stdin?.end(m.stdin);
  const first = m.resultFd ? 4 : 3;
  m.data.forEach((d, i) => {
    const s = child.stdio[first + i] as Socket | null;
    s?.on('error', () => undefined);
    s?.end(d);
  });
  send({ t: 'stdout', id: m.id, pid: child.pid ?? -1 }, child.stdout as Socket);
  send({ t: 'stderr', id: m.id }, child.stderr as Socket);
  if (m.resultFd) send({ t: 'result', id: m.id }, child.stdio[3] as Socket);
  child.on('exit', (code, signal) => {
    children.delete(m.id);
    send({ t: 'exit', id: m.id, code, signal });
  });
});

// The server's death ends the zygote: it holds nothing that should outlive it.
process.on('disconnect', () => process.exit(0));
