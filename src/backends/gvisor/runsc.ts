/**
 * Finding runsc and choosing its platform for this host.
 */
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';

const execFileP = promisify(execFile);

/** gVisor platforms, best first. */
export type RunscPlatform = 'kvm' | 'systrap' | 'ptrace';

/** Where runsc is: env `VULCAN_RUNSC`, else the first `runsc` on a standard PATH. */
export function findRunsc(env: NodeJS.ProcessEnv = process.env): string | null {
  if (env.VULCAN_RUNSC) return fs.existsSync(env.VULCAN_RUNSC) ? env.VULCAN_RUNSC : null;
  for (const d of ['/usr/local/sbin', '/usr/local/bin', '/usr/sbin', '/usr/bin', '/sbin', '/bin']) {
    const p = path.join(d, 'runsc');
    if (fs.existsSync(p)) return p;
  }
  return null;
}

/** True when /dev/kvm exists and this process can open it read-write. */
export function kvmUsable(): boolean {
  try {
    const fd = fs.openSync('/dev/kvm', 'r+');
    fs.closeSync(fd);
    return true;
  } catch {
    return false;
  }
}

/** The platforms this runsc names in its `-platform` flag help. */
export async function supportedPlatforms(runsc: string): Promise<RunscPlatform[]> {
  const { stdout, stderr } = await execFileP(runsc, ['flags'], { timeout: 10_000 }).catch((err: { stdout?: string; stderr?: string }) => ({ stdout: err.stdout ?? '', stderr: err.stderr ?? '' }));
  const text = `${stdout}\n${stderr}`;
  const m = /-platform string\s*\n\s*specifies which platform to use: ([^\n]*)/.exec(text);
  const line = m?.[1] ?? 'ptrace';
  return (['kvm', 'systrap', 'ptrace'] as const).filter((p) => line.includes(p));
}

/**
 * The platforms to try, best first: kvm where /dev/kvm opens and runsc has it, systrap where
 * this runsc has it, ptrace always. Env `VULCAN_GVISOR_PLATFORM` forces one. The backend's
 * probe keeps the first on which a test sandbox really runs.
 */
export async function platformCandidates(runsc: string, env: NodeJS.ProcessEnv = process.env): Promise<{ platform: RunscPlatform; why: string }[]> {
  const forced = env.VULCAN_GVISOR_PLATFORM;
  if (forced === 'kvm' || forced === 'systrap' || forced === 'ptrace') return [{ platform: forced, why: 'set by VULCAN_GVISOR_PLATFORM' }];
  const have = await supportedPlatforms(runsc);
  const out: { platform: RunscPlatform; why: string }[] = [];
  if (have.includes('kvm') && kvmUsable()) out.push({ platform: 'kvm', why: '/dev/kvm is usable' });
  if (have.includes('systrap')) out.push({ platform: 'systrap', why: kvmUsable() ? 'this runsc has systrap' : 'no usable /dev/kvm; this runsc has systrap' });
  out.push({ platform: 'ptrace', why: `ptrace: this runsc offers ${have.join(', ') || 'ptrace'}${kvmUsable() ? '' : ', and /dev/kvm is not usable'}` });
  return out;
}

/** `runsc --version`'s first line. */
export async function runscVersion(runsc: string): Promise<string> {
  const { stdout } = await execFileP(runsc, ['--version'], { timeout: 10_000 });
  return stdout.split('\n')[0]?.trim() ?? 'unknown';
}

/**
 * The argv that joins the cgroup whose `cgroup.procs` files are `procsFiles`, then execs
 * `argv`: runsc and everything it starts (gofer, sentry, the ptrace stubs) are born inside
 * the group, so its limits and its kill-everything hold the whole sandbox. The script is a
 * fixed string; the paths and argv travel as arguments, never through a shell's parser.
 */
export function joinCgroupArgv(procsFiles: readonly string[], argv: readonly string[]): string[] {
  const join = 'n=$1; shift; while [ "$n" -gt 0 ]; do echo $$ > "$1" || exit 125; shift; n=$((n-1)); done; exec "$@"';
  return ['/bin/sh', '-c', join, 'vulcan-join', String(procsFiles.length), ...procsFiles, ...argv];
}

/** What `runsc state` says about one container, or null when runsc does not know it. */
export interface RunscState {
  readonly status: string;
  /** The sandbox (sentry) process on the host; -1 once stopped. */
  readonly pid: number;
}

/** `runsc --root ROOT state ID`, or null when the container is unknown or the answer is not JSON. */
export async function runscState(runsc: string, root: string, id: string): Promise<RunscState | null> {
  try {
    const { stdout } = await execFileP(runsc, ['--root', root, 'state', id], { timeout: 10_000 });
    const j = JSON.parse(stdout) as { status?: unknown; pid?: unknown };
    return typeof j.status === 'string' && typeof j.pid === 'number' ? { status: j.status, pid: j.pid } : null;
  } catch {
    return null;
  }
}
