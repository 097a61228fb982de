/**
 * Starting a process inside a bubblewrap sandbox: the namespace backend's wall, and the
 * second wall around the isolate host.
 *
 * The sandbox gets new user, pid, net, ipc, uts, mount and cgroup namespaces (no network
 * at all), a new session (against TIOCSTI), dies with its parent, keeps no capabilities and
 * runs with no_new_privs (bwrap sets it). It sees the host's /usr (and the /bin, /lib*
 * links into it) read-only, a generated /etc with passwd, group and hosts, a private /proc
 * and /dev, and size-capped tmpfs at /tmp and /work. On the host the sandbox runs as
 * uid/gid 65534 (nobody), joined to its cgroup before bwrap starts (native/vulcan-cgexec.c).
 */
import { spawn, type ChildProcess, type StdioOptions } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { Cgroup } from './cgroups.js';
import { spawnProcess, type SandboxProcess } from './process.js';
import { spawndPathNextTo } from './spawner.js';
import { sha256 } from '../core/hash.js';

/** The host uid/gid a sandbox runs as. */
export const SANDBOX_HOST_ID = 65534;
/** The uid/gid the code sees inside. */
export const SANDBOX_INNER_ID = 1000;
/** The fd (inside and out) of the result channel, when asked for. */
export const RESULT_FD = 3;

export const BWRAP_PATH = '/usr/bin/bwrap';

export interface BwrapFile {
  /** Absolute path inside the sandbox. */
  readonly dest: string;
  readonly data: Buffer | string;
  /** Writable copy (in a tmpfs) rather than a read-only bind. Default false. */
  readonly writable?: boolean;
  /** Octal mode, e.g. 0o755. Default 0o644 (0o755 for writable executables is up to you). */
  readonly mode?: number;
}

export interface BwrapOptions {
  /** The argv run inside the sandbox; argv[0] is resolved inside. */
  readonly argv: readonly string[];
  /** The code's environment. PATH, HOME and LANG are added unless given. Nothing else of the server's leaks in. */
  readonly env: Readonly<Record<string, string>>;
  /** Working directory inside. Default /work. */
  readonly cwd?: string;
  /** Size cap of /tmp and of /work, in MiB. */
  readonly diskMB: number;
  /**
   * A root filesystem (an image's unpacked tree, readable by uid 65534) to run in, read-only,
   * instead of the host's /usr. It must have /proc, /dev, /tmp, /work and /vulcan to mount on.
   */
  readonly rootfs?: string;
  /** Read-only binds of host paths (must be readable by uid 65534). */
  readonly roBinds?: readonly { readonly src: string; readonly dest: string }[];
  /** Files created inside from bytes. */
  readonly files?: readonly BwrapFile[];
  /** The cgroup every process of the sandbox is born in. */
  readonly cgroup?: Cgroup;
  /** Open a result channel on fd 3 (readable by the caller as `stdio[3]`). Default false. */
  readonly resultFd?: boolean;
  /** Host path of native/vulcan-cgexec (built into build/). */
  readonly cgexecPath: string;
  /**
   * CPU priority of the sandbox: a nice value above 0 lowers it and adds SCHED_BATCH (a woken
   * sandbox does not preempt the thread that woke it). Default 0: the server's own.
   */
  readonly nice?: number;
  /**
   * Timer slack of the sandbox in µs (1–100 000; default the kernel's 50): how late a sleeping
   * thread of it may be woken, so that the kernel can wake several at once.
   */
  readonly timerSlackUs?: number;
  /** stdio of the sandbox's fds 0–2. Default all 'pipe'. */
  readonly stdio?: readonly ['pipe' | 'ignore', 'pipe' | 'ignore', 'pipe' | 'ignore'];
}

/** The sandbox's /etc/passwd, /etc/group and /etc/hosts (uid 1000 is `sandbox`). */
export const ETC_PASSWD = `root:x:0:0:root:/root:/bin/sh\nsandbox:x:${SANDBOX_INNER_ID}:${SANDBOX_INNER_ID}:sandbox:/work:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n`;
export const ETC_GROUP = `root:x:0:\nsandbox:x:${SANDBOX_INNER_ID}:\nnogroup:x:65534:\n`;
export const ETC_HOSTS = '127.0.0.1 localhost\n::1 localhost\n';

const published = new Map<string, string>();

/**
 * Writes `files` once into a world-readable, content-addressed directory (under /run/vulcan,
 * or the temp dir) and returns its path, for read-only binds into sandboxes: a bind costs
 * bwrap less than copying the bytes in through a file descriptor on every start.
 */
export function publishStatic(name: string, files: Readonly<Record<string, string>>): string {
  const hash = sha256(JSON.stringify(Object.entries(files).sort())).slice(0, 16);
  const key = `${name}-${hash}`;
  const cached = published.get(key);
  if (cached && fs.existsSync(cached)) return cached;
  const base = fs.existsSync('/run') ? '/run/vulcan/static' : path.join(os.tmpdir(), 'vulcan-static');
  const dir = path.join(base, key);
  if (!fs.existsSync(dir)) {
    fs.mkdirSync(base, { recursive: true, mode: 0o755 });
    const tmp = fs.mkdtempSync(path.join(base, `.${key}-`));
    for (const [file, text] of Object.entries(files)) fs.writeFileSync(path.join(tmp, file), text, { mode: 0o644 });
    fs.chmodSync(tmp, 0o755);
    try {
      fs.renameSync(tmp, dir);
    } catch {
      // Another process published the same content first.
      fs.rmSync(tmp, { recursive: true, force: true });
    }
  }
  published.set(key, dir);
  return dir;
}

let rootLinks: { name: string; target: string | null }[] | undefined;

/** The host's top-level /bin, /lib… entries: links into /usr on merged-/usr systems, directories otherwise. */
function hostRootEntries(): { name: string; target: string | null }[] {
  if (rootLinks) return rootLinks;
  rootLinks = [];
  for (const name of ['bin', 'sbin', 'lib', 'lib32', 'lib64', 'libx32']) {
    try {
      const st = fs.lstatSync(`/${name}`);
      if (st.isSymbolicLink()) rootLinks.push({ name, target: fs.readlinkSync(`/${name}`) });
      else if (st.isDirectory()) rootLinks.push({ name, target: null });
    } catch {
      // absent on this host
    }
  }
  return rootLinks;
}

/** bwrap arguments that give a sandbox the host's /bin, /lib… as the same links (or read-only dirs). */
export function hostRootArgs(): string[] {
  return hostRootEntries().flatMap((e) => (e.target === null ? ['--ro-bind', `/${e.name}`, `/${e.name}`] : ['--symlink', e.target, `/${e.name}`]));
}

/** The bwrap arguments and the data to feed its fds, for `opts`. Exposed for tests and the benchmark floor. */
export function buildBwrapArgs(opts: BwrapOptions, firstDataFd: number): { args: string[]; data: (Buffer | string)[] } {
  const diskBytes = String(opts.diskMB * 1024 * 1024);
  const args = [
    '--unshare-all',
    '--unshare-user',
    '--die-with-parent',
    '--new-session',
    '--cap-drop',
    'ALL',
    '--uid',
    String(SANDBOX_INNER_ID),
    '--gid',
    String(SANDBOX_INNER_ID),
    '--hostname',
    'vulcan',
  ];
  const etc = publishStatic('etc', { passwd: ETC_PASSWD, group: ETC_GROUP, hosts: ETC_HOSTS });
  if (opts.rootfs === undefined) {
    // The host's /usr, read-only, and its /bin, /lib… links (or dirs); a generated /etc.
    args.push('--ro-bind', '/usr', '/usr', ...hostRootArgs());
    args.push('--proc', '/proc', '--dev', '/dev', '--ro-bind', etc, '/etc');
  } else {
    // An image's root, read-only, keeping its /etc (its libraries need ld.so.cache and the
    // like) but with our passwd and group, so uid 1000 is `sandbox`.
    args.push('--ro-bind', opts.rootfs, '/', '--proc', '/proc', '--dev', '/dev');
    for (const f of ['passwd', 'group']) {
      if (fs.existsSync(path.join(opts.rootfs, 'etc', f))) args.push('--ro-bind', path.join(etc, f), `/etc/${f}`);
    }
    args.push('--perms', '0755', '--tmpfs', '/vulcan');
  }
  args.push('--perms', '1777', '--size', diskBytes, '--tmpfs', '/tmp');
  args.push('--perms', '0755', '--size', diskBytes, '--tmpfs', '/work');
  for (const b of opts.roBinds ?? []) args.push('--ro-bind', b.src, b.dest);
  const data: (Buffer | string)[] = [];
  let fd = firstDataFd;
  for (const f of opts.files ?? []) {
    args.push('--perms', (f.mode ?? 0o644).toString(8).padStart(4, '0'), f.writable ? '--file' : '--ro-bind-data', String(fd++), f.dest);
    data.push(f.data);
  }
  const env: Record<string, string> = { PATH: '/usr/local/bin:/usr/bin:/bin', HOME: '/work', LANG: 'C.UTF-8', ...opts.env };
  args.push('--clearenv');
  for (const [k, v] of Object.entries(env)) args.push('--setenv', k, v);
  args.push('--chdir', opts.cwd ?? '/work', '--', ...opts.argv);
  return { args, data };
}

/**
 * Starts `opts.argv` in a fresh sandbox. The caller owns the child: it must wait for it to
 * exit and destroy the cgroup. `stdio[3]` is the result channel when `resultFd` is set.
 */
export function spawnBwrap(opts: BwrapOptions): ChildProcess {
  const firstDataFd = opts.resultFd ? RESULT_FD + 1 : RESULT_FD;
  const { args, data } = buildBwrapArgs(opts, firstDataFd);
  const cg: string[] = [];
  for (const f of opts.cgroup?.procsFiles ?? []) cg.push('-j', f);
  if (opts.nice !== undefined && opts.nice > 0) cg.push('-n', String(opts.nice), '-s', 'batch');
  if (opts.timerSlackUs !== undefined) cg.push('-t', String(opts.timerSlackUs));
  const stdio: StdioOptions = [...(opts.stdio ?? ['pipe', 'pipe', 'pipe'])];
  if (opts.resultFd) stdio.push('pipe');
  for (let i = 0; i < data.length; i++) stdio.push('pipe');
  // -P: a server killed before the shim arms its parent-death signal leaves no sandbox behind.
  const child = spawn(opts.cgexecPath, ['-u', String(SANDBOX_HOST_ID), '-g', String(SANDBOX_HOST_ID), '-P', String(process.pid), ...cg, '--', BWRAP_PATH, ...args], {
    stdio,
    cwd: '/',
    env: {},
    detached: false,
  });
  // Feed each data fd; bwrap reads them all before it runs the command.
  data.forEach((d, i) => {
    const s = child.stdio[firstDataFd + i];
    if (s && 'end' in s) {
      s.on('error', () => undefined);
      s.end(d);
    }
  });
  return child;
}

/**
 * Starts `opts.argv` in a fresh sandbox and returns its pipes and its end (`SandboxProcess`).
 * stdin gets `stdin`; the result channel is `result` when `resultFd` is set.
 */
export function startBwrap(opts: BwrapOptions & { readonly stdin?: Buffer | string }): SandboxProcess {
  const firstDataFd = opts.resultFd ? RESULT_FD + 1 : RESULT_FD;
  const { args, data } = buildBwrapArgs(opts, firstDataFd);
  const cg: string[] = [];
  for (const f of opts.cgroup?.procsFiles ?? []) cg.push('-j', f);
  const spawnd = spawndPathNextTo(opts.cgexecPath);
  return spawnProcess({
    file: opts.cgexecPath,
    args: ['-u', String(SANDBOX_HOST_ID), '-g', String(SANDBOX_HOST_ID), ...cg, '--', BWRAP_PATH, ...args],
    ...(opts.stdin === undefined ? {} : { stdin: opts.stdin }),
    data,
    resultFd: opts.resultFd ?? false,
    ...(spawnd === undefined ? {} : { spawnd }),
  });
}

/** The path of a built native helper, e.g. `cgexecPathFor(installDir)`. */
export function cgexecPathFor(installDir: string): string {
  return path.join(installDir, 'build', 'vulcan-cgexec');
}
