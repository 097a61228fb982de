/**
 * Memory per workload: K idle workloads run at once through the API while the host's
 * proportional set size (PSS, /proc/<pid>/smaps_rollup) of everything the server owns is
 * read; the growth over the idle baseline, divided by K, is one workload's memory. That
 * counts what each backend really costs: bwrap and the interpreter (namespace), the runsc
 * sandbox and gofer (gvisor), the container's processes and its shim (container), the QEMU
 * process with the guest's RAM (microvm), and the isolate host's heap growth (isolate).
 * The floor is the same idle code run bare on the host: the code's own memory.
 */
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import { summarize, type Stats } from '../stats.js';
import { bareIdleArgv, describeFailure, getRecord, idleBody, runAsync, type MeasureRuntime } from './workloads.js';

interface ProcInfo {
  readonly ppid: number;
  readonly comm: string;
}

function readProcs(): Map<number, ProcInfo> {
  const out = new Map<number, ProcInfo>();
  for (const name of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const stat = fs.readFileSync(`/proc/${name}/stat`, 'utf8');
      // comm may hold spaces and parentheses: the fields after it start past the last ')'.
      const close = stat.lastIndexOf(')');
      const comm = stat.slice(stat.indexOf('(') + 1, close);
      const ppid = Number(stat.slice(close + 2).split(' ')[1]);
      out.set(Number(name), { ppid, comm });
    } catch {
      // gone already
    }
  }
  return out;
}

/** PSS of one process in bytes (0 when it is gone or unreadable). */
export function pssBytes(pid: number): number {
  try {
    const m = /^Pss:\s+(\d+) kB/m.exec(fs.readFileSync(`/proc/${pid}/smaps_rollup`, 'utf8'));
    return m?.[1] ? Number(m[1]) * 1024 : 0;
  } catch {
    return 0;
  }
}

function inDockerCgroup(pid: number): boolean {
  try {
    return /docker|containerd/.test(fs.readFileSync(`/proc/${pid}/cgroup`, 'utf8'));
  } catch {
    return false;
  }
}

/**
 * The processes a Vulcan server owns: its descendants, plus (for the container backend)
 * processes that appeared after `baseline` in Docker's cgroups, and new containerd shims.
 */
export function serverProcesses(serverPid: number, baseline?: ReadonlySet<number>): number[] {
  const procs = readProcs();
  const children = new Map<number, number[]>();
  for (const [pid, p] of procs) {
    const list = children.get(p.ppid) ?? [];
    list.push(pid);
    children.set(p.ppid, list);
  }
  const subtree = (root: number) => {
    const out = new Set<number>();
    const stack = [root];
    while (stack.length) {
      const pid = stack.pop();
      if (pid === undefined || out.has(pid)) continue;
      out.add(pid);
      stack.push(...(children.get(pid) ?? []));
    }
    return out;
  };
  const seen = subtree(serverPid);
  seen.delete(serverPid);
  // When the server itself started this benchmark (POST /v1/stats/benchmark), the benchmark
  // and its floors are the server's descendants too: they are not sandboxes. (When the
  // benchmark started the server, the server is the benchmark's descendant instead.)
  if (seen.has(process.pid)) for (const pid of subtree(process.pid)) seen.delete(pid);
  if (baseline) {
    for (const [pid, p] of procs) {
      if (seen.has(pid) || baseline.has(pid)) continue;
      if (p.comm.startsWith('containerd-shim') || inDockerCgroup(pid)) seen.add(pid);
    }
  }
  return [...seen];
}

/** Total PSS of the server's sandboxes and helpers now. */
function ownedPss(serverPid: number, baseline: ReadonlySet<number>): number {
  return serverProcesses(serverPid, baseline).reduce((s, pid) => s + pssBytes(pid), 0);
}

/** The overhead beyond the bare code, in words (an isolate can be lighter than a bare process). */
function overheadText(mib: number): string {
  return mib >= 0 ? `overhead beyond the bare code ≈ ${mib.toFixed(1)} MiB` : `${(-mib).toFixed(1)} MiB lighter than the bare code in its own process`;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const MiB = 1024 * 1024;

export interface MemoryResult {
  /** MiB per workload, one value per round. */
  readonly perWorkload: Stats;
  /** The idle code run bare: MiB per process. */
  readonly bare: Stats;
  readonly note: string;
}

/** Reads the PSS of `k` copies of the idle code run bare on the host (the floor), in MiB per process. */
async function bareIdle(runtime: MeasureRuntime, k: number, seconds: number): Promise<number> {
  const argv = bareIdleArgv(runtime, seconds);
  const [cmd, ...args] = argv;
  if (!cmd) throw new Error('empty argv');
  const children = Array.from({ length: k }, () => spawn(cmd, args, { stdio: 'ignore' }));
  try {
    await sleep(Math.min(seconds * 500, 1500));
    let peak = 0;
    for (let i = 0; i < 4; i++) {
      peak = Math.max(peak, children.reduce((s, c) => s + (c.pid ? pssBytes(c.pid) : 0), 0));
      await sleep(100);
    }
    return peak / k / MiB;
  } finally {
    for (const c of children) c.kill('SIGKILL');
  }
}

/**
 * Measures memory per workload on `isolation` with `runtime`: `rounds` rounds of `k` idle
 * workloads that each live `seconds`.
 */
export async function measureMemory(opts: {
  readonly url: string;
  readonly serverPid: number;
  readonly isolation: string;
  readonly runtime: MeasureRuntime;
  readonly k: number;
  readonly rounds: number;
  readonly seconds: number;
  readonly memMB: number;
  readonly progress: (msg: string) => void;
}): Promise<MemoryResult> {
  const values: number[] = [];
  const bare: number[] = [];
  for (let round = 0; round < opts.rounds; round++) {
    const baseline = new Set(readProcs().keys());
    // The baseline is the idle server (pools, isolate hosts) over a few readings.
    let base = 0;
    for (let i = 0; i < 3; i++) {
      base += ownedPss(opts.serverPid, baseline);
      await sleep(50);
    }
    base /= 3;
    const ids = await Promise.all(Array.from({ length: opts.k }, () => runAsync(opts.url, idleBody(opts.isolation, opts.runtime, opts.seconds, opts.memMB))));
    // Read until the first workload ends; the peak is when all K are alive at once.
    let peak = 0;
    const until = performance.now() + (opts.seconds + 120) * 1000;
    for (;;) {
      peak = Math.max(peak, ownedPss(opts.serverPid, baseline) - base);
      const recs = await Promise.all(ids.map((id) => getRecord(opts.url, id)));
      const ended = recs.filter((r) => r.status !== 'pending' && r.status !== 'running');
      const bad = ended.find((r) => r.status !== 'completed');
      if (bad) throw new Error(`idle workload did not complete: ${describeFailure(bad)}`);
      if (ended.length > 0 || performance.now() > until) break;
      await sleep(150);
    }
    // Let the rest finish before the next round.
    for (const id of ids) {
      for (;;) {
        const r = await getRecord(opts.url, id);
        if (r.status !== 'pending' && r.status !== 'running') break;
        await sleep(200);
      }
    }
    values.push(peak / opts.k / MiB);
    bare.push(await bareIdle(opts.runtime, opts.k, Math.min(opts.seconds, 3)));
    opts.progress(`${opts.isolation} memory round ${round + 1}/${opts.rounds}: ${(peak / opts.k / MiB).toFixed(1)} MiB per workload`);
  }
  const perWorkload = summarize(values);
  const bareStats = summarize(bare);
  return {
    perWorkload,
    bare: bareStats,
    note: `${opts.k} idle ${opts.runtime} workloads at once (mem_mb ${opts.memMB}), peak growth of the PSS of the server's processes (its sandboxes, helpers${opts.isolation === 'container' ? ', new Docker shims and container processes' : ''}) ÷ ${opts.k}; ${overheadText(perWorkload.p50 - bareStats.p50)}`,
  };
}
