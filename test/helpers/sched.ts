/**
 * What the kernel says about a thread's CPU priority (/proc/PID/task/TID/stat): its nice value
 * and its scheduling policy.
 */
import fs from 'node:fs';

/** Linux's policy numbers (sched.h). */
const POLICIES: Record<number, string> = { 0: 'normal', 1: 'fifo', 2: 'rr', 3: 'batch', 5: 'idle', 6: 'deadline' };

export interface Sched {
  readonly nice: number;
  readonly policy: string;
}

/** Parses a stat line: the fields after the command name's closing parenthesis start at field 3. */
export function parseStat(stat: string): Sched {
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  const policy = Number(fields[41 - 3]);
  return { nice: Number(fields[19 - 3]), policy: POLICIES[policy] ?? `policy ${policy}` };
}

/** Every thread of a process. */
export function threadsOf(pid: number | 'self'): (Sched & { readonly tid: number })[] {
  return fs.readdirSync(`/proc/${pid}/task`).map((tid) => ({ tid: Number(tid), ...parseStat(fs.readFileSync(`/proc/${pid}/task/${tid}/stat`, 'utf8')) }));
}
