/**
 * The Vulcan sandbox agent: the one process a sandbox starts with. It runs INSIDE the
 * sandbox, as the sandbox's user, and does what the server asks of the sandbox: exec
 * (buffered, streamed, or on a PTY), every file operation, tar archives, and the preview
 * relay to a TCP port on the sandbox's own loopback.
 *
 * Because it runs inside, every path it opens is resolved in the sandbox's own mount
 * namespace: `..`, symlinks and symlink-swap races can only ever reach the sandbox's own
 * files. The host never opens a path a user named.
 *
 * It is a standalone ES module with no imports beyond Node's built-ins, because it is
 * copied alone into the sandbox (`/.vulcan-agent/agent.mjs`). It accepts connections on an
 * inherited listening unix socket (fd 3, made by native/vulcan-sbx-launch.c), one request
 * per connection. The wire format is described in src/sandboxes/protocol.ts; the frame
 * type numbers below must match it.
 *
 * Usage inside the sandbox: `node /.vulcan-agent/agent.mjs`. It listens on the inherited
 * socket on fd VULCAN_AGENT_FD (default 3) or, when VULCAN_AGENT_SOCKET names a path, on a
 * new unix socket at that path (for backends that cannot pass a descriptor in: runsc, the
 * Engine API). A host that connects to such a path must not follow a symlink the sandbox
 * put there. VULCAN_AGENT_SPAWN_HELPER names the spawn helper (default
 * /.vulcan-agent/spawnd; empty: none, every command is forked by Node).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { PassThrough, type Readable, type Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';

// Frame types; keep in step with src/sandboxes/protocol.ts.
const F_STDOUT = 1;
const F_STDERR = 2;
const F_EXIT = 3;
const F_STDIN = 1;
const F_STDIN_EOF = 2;
const F_RESIZE = 3;
const F_SIGNAL = 4;

/** A request line carries an exec's stdin (base64 of up to the API's 6 MiB body). */
const MAX_LINE_BYTES = 16 * 1024 * 1024;
const MAX_ENTRIES = 10_000;
const MAX_WALK = 200_000;
const PTY_HELPER = '/.vulcan-agent/pty';
/** native/vulcan-spawnd, static: forks the commands instead of the agent (see SpawnHelper). */
const SPAWN_HELPER = '/.vulcan-agent/spawnd';
const SIGNALS = new Set(['SIGINT', 'SIGTERM', 'SIGHUP', 'SIGQUIT', 'SIGKILL', 'SIGUSR1', 'SIGUSR2', 'SIGCONT', 'SIGSTOP', 'SIGWINCH']);

type Json = Record<string, unknown>;

class AgentError extends Error {
  constructor(
    readonly errno: string,
    message: string,
  ) {
    super(message);
  }
}

function frame(type: number, payload: Buffer | string): Buffer {
  const body = typeof payload === 'string' ? Buffer.from(payload) : payload;
  const head = Buffer.allocUnsafe(5);
  head.writeUInt8(type, 0);
  head.writeUInt32BE(body.length, 1);
  return Buffer.concat([head, body]);
}

/** Reads one `\n`-terminated JSON line, then puts back what followed it. */
function readRequest(sock: net.Socket): Promise<Json> {
  return new Promise((resolve, reject) => {
    let buf = Buffer.alloc(0);
    const onData = (chunk: Buffer) => {
      buf = Buffer.concat([buf, chunk]);
      const nl = buf.indexOf(10);
      if (nl < 0) {
        if (buf.length > MAX_LINE_BYTES) fail(new Error('request line too long'));
        return;
      }
      cleanup();
      sock.pause();
      const rest = buf.subarray(nl + 1);
      if (rest.length) sock.unshift(rest);
      try {
        resolve(JSON.parse(buf.subarray(0, nl).toString('utf8')) as Json);
      } catch (err) {
        reject(err instanceof Error ? err : new Error(String(err)));
      }
    };
    const fail = (err: Error) => {
      cleanup();
      reject(err);
    };
    const onEnd = () => fail(new Error('connection ended before a request'));
    const cleanup = () => {
      sock.off('data', onData);
      sock.off('end', onEnd);
      sock.off('error', fail);
    };
    sock.on('data', onData);
    sock.on('end', onEnd);
    sock.on('error', fail);
  });
}

function reply(sock: net.Socket, obj: Json, end = true): void {
  const line = `${JSON.stringify(obj)}\n`;
  if (end) sock.end(line);
  else sock.write(line);
}

function errorReply(sock: net.Socket, err: unknown): void {
  const e = err as NodeJS.ErrnoException;
  const errno = err instanceof AgentError ? err.errno : typeof e.code === 'string' ? e.code : 'EIO';
  if (!sock.destroyed) reply(sock, { ok: false, error: { errno, message: e.message ?? String(err) } });
}

/** A path the server already checked; checked again here, cheaply, as a second wall. */
function checkPath(p: unknown, field = 'path'): string {
  if (typeof p !== 'string' || !p.startsWith('/') || p.includes('\0')) throw new AgentError('EINVAL', `${field} must be an absolute path`);
  return path.posix.normalize(p);
}

function typeOf(st: fs.Stats): string {
  if (st.isFile()) return 'file';
  if (st.isDirectory()) return 'dir';
  if (st.isSymbolicLink()) return 'symlink';
  return 'other';
}

function entry(p: string, st: fs.Stats): Json {
  return { name: path.posix.basename(p) || '/', path: p, type: typeOf(st), size: st.size, mode: st.mode & 0o7777, mtime: new Date(st.mtimeMs).toISOString() };
}

async function opStat(p: string): Promise<Json> {
  const st = await fsp.lstat(p);
  const e = entry(p, st);
  if (st.isSymbolicLink()) e.target = await fsp.readlink(p);
  return e;
}

async function opList(root: string, depth: number): Promise<Json> {
  const st = await fsp.lstat(root);
  if (!st.isDirectory()) throw new AgentError('ENOTDIR', `${root} is not a directory`);
  const entries: Json[] = [];
  let truncated = false;
  const walk = async (dir: string, level: number): Promise<void> => {
    let names: string[];
    try {
      names = (await fsp.readdir(dir)).sort();
    } catch {
      return;
    }
    for (const name of names) {
      if (entries.length >= MAX_ENTRIES) {
        truncated = true;
        return;
      }
      const p = path.posix.join(dir, name);
      let s: fs.Stats;
      try {
        s = await fsp.lstat(p);
      } catch {
        continue;
      }
      entries.push(entry(p, s));
      if (s.isDirectory() && level < depth) await walk(p, level + 1);
    }
  };
  await walk(root, 1);
  return { entries, truncated };
}

/** A glob pattern (`*`, `?`, `**`, `[…]`) as a regular expression over whole paths. */
function globRegex(pattern: string): RegExp {
  let re = '^';
  for (let i = 0; i < pattern.length; i++) {
    const c = pattern[i] as string;
    if (c === '*') {
      if (pattern[i + 1] === '*') {
        i++;
        if (pattern[i + 1] === '/') {
          i++;
          re += '(?:.*/)?';
        } else re += '.*';
      } else re += '[^/]*';
    } else if (c === '?') re += '[^/]';
    else if (c === '[') {
      const close = pattern.indexOf(']', i + 1);
      if (close < 0) re += '\\[';
      else {
        let cls = pattern.slice(i + 1, close).replace(/\\/g, '\\\\');
        if (cls.startsWith('!')) cls = `^${cls.slice(1)}`;
        re += `[${cls}]`;
        i = close;
      }
    } else re += c.replace(/[.+^${}()|\\]/g, '\\$&');
  }
  return new RegExp(`${re}$`);
}

async function opGlob(pattern: string): Promise<Json> {
  const p = checkPath(pattern, 'pattern');
  const parts = p.split('/');
  const firstMagic = parts.findIndex((s) => /[*?[]/.test(s));
  if (firstMagic < 0) {
    try {
      await fsp.lstat(p);
      return { paths: [p], truncated: false };
    } catch {
      return { paths: [], truncated: false };
    }
  }
  const base = parts.slice(0, firstMagic).join('/') || '/';
  const re = globRegex(p);
  const recursive = p.includes('**');
  const maxDepth = recursive ? Infinity : parts.length - firstMagic;
  const out: string[] = [];
  let walked = 0;
  let truncated = false;
  const walk = async (dir: string, level: number): Promise<void> => {
    let dirents: fs.Dirent[];
    try {
      dirents = await fsp.readdir(dir, { withFileTypes: true });
    } catch {
      return;
    }
    for (const d of dirents.sort((a, b) => (a.name < b.name ? -1 : 1))) {
      if (out.length >= MAX_ENTRIES || ++walked > MAX_WALK) {
        truncated = true;
        return;
      }
      const child = dir === '/' ? `/${d.name}` : `${dir}/${d.name}`;
      if (re.test(child)) out.push(child);
      if (d.isDirectory() && level < maxDepth) await walk(child, level + 1);
    }
  };
  await walk(base, 1);
  return { paths: out, truncated };
}

async function opRead(sock: net.Socket, p: string): Promise<void> {
  const fh = await fsp.open(p, fs.constants.O_RDONLY);
  let handedOff = false;
  try {
    const st = await fh.stat();
    if (st.isDirectory()) throw new AgentError('EISDIR', `${p} is a directory; list it, or GET /archive for a tar`);
    if (!st.isFile()) throw new AgentError('EINVAL', `${p} is not a regular file`);
    reply(sock, { ok: true, size: st.size, mode: st.mode & 0o7777, mtime: new Date(st.mtimeMs).toISOString() }, false);
    if (st.size === 0) {
      sock.end();
      return;
    }
    handedOff = true;
    // Exactly `size` bytes: a file that grows meanwhile is cut at the size announced.
    await pipeline(fh.createReadStream({ start: 0, end: st.size - 1 }), sock);
  } finally {
    if (!handedOff) await fh.close();
  }
}

async function opWrite(sock: net.Socket, p: string, mode: number): Promise<void> {
  await fsp.mkdir(path.posix.dirname(p), { recursive: true });
  const st = await fsp.stat(p).catch(() => null);
  if (st?.isDirectory()) throw new AgentError('EISDIR', `${p} is a directory`);
  // Write beside, then rename: a failed upload (disk full, client gone) leaves no half file.
  const tmp = path.posix.join(path.posix.dirname(p), `.${path.posix.basename(p)}.vulcan-upload-${process.pid}-${Date.now()}`);
  const fh = await fsp.open(tmp, fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_EXCL | fs.constants.O_NOFOLLOW, mode);
  const out = fh.createWriteStream();
  try {
    await pipeline(sock, out);
    await fsp.chmod(tmp, mode);
    await fsp.rename(tmp, p);
  } catch (err) {
    await fsp.rm(tmp, { force: true }).catch(() => undefined);
    throw err;
  }
  reply(sock, { ok: true, size: out.bytesWritten });
}

async function opRemove(p: string, recursive: boolean): Promise<Json> {
  if (p === '/') throw new AgentError('EPERM', 'refusing to remove /');
  const st = await fsp.lstat(p);
  if (st.isDirectory()) {
    if (recursive) await fsp.rm(p, { recursive: true, force: true });
    else await fsp.rmdir(p);
  } else await fsp.unlink(p);
  return {};
}

/**
 * True when the image's tar is BusyBox's (the `minimal` image), which refuses GNU tar's long
 * options. Run as the unprivileged sandbox user it restores no owner anyway, and setuid
 * bits are stripped after extraction either way.
 */
function busyboxTar(): boolean {
  try {
    return path.basename(fs.realpathSync('/usr/bin/tar')) === 'busybox';
  } catch {
    return false;
  }
}

function runTar(args: string[]): ChildProcess {
  return spawn('/usr/bin/tar', args, { stdio: ['pipe', 'pipe', 'pipe'] });
}

async function opTarOut(sock: net.Socket, dir: string): Promise<void> {
  const st = await fsp.stat(dir);
  if (!st.isDirectory()) throw new AgentError('ENOTDIR', `${dir} is not a directory`);
  const child = runTar(['-C', dir, '-cf', '-', '.']);
  child.stdin?.end();
  child.stderr?.resume();
  reply(sock, { ok: true }, false);
  sock.on('close', () => child.kill('SIGKILL'));
  if (child.stdout) await pipeline(child.stdout, sock).catch(() => undefined);
}

async function stripSpecialBits(dir: string): Promise<void> {
  let walked = 0;
  const walk = async (d: string): Promise<void> => {
    let dirents: fs.Dirent[];
    try {
      dirents = await fsp.readdir(d, { withFileTypes: true });
    } catch {
      return;
    }
    for (const e of dirents) {
      if (++walked > MAX_WALK) return;
      const p = path.posix.join(d, e.name);
      if (e.isSymbolicLink()) continue;
      const st = await fsp.lstat(p).catch(() => null);
      if (st && st.mode & 0o7000) await fsp.chmod(p, st.mode & 0o777).catch(() => undefined);
      if (e.isDirectory()) await walk(p);
    }
  };
  await walk(dir);
}

async function opTarIn(sock: net.Socket, dir: string): Promise<void> {
  await fsp.mkdir(dir, { recursive: true });
  const child = runTar(busyboxTar() ? ['-C', dir, '-xf', '-'] : ['-C', dir, '-xf', '-', '--no-same-owner', '--no-same-permissions', '--no-overwrite-dir']);
  let stderr = '';
  child.stderr?.on('data', (c: Buffer) => {
    if (stderr.length < 4096) stderr += c.toString();
  });
  child.stdout?.resume();
  const exited = new Promise<number | null>((resolve) => child.on('close', (c) => resolve(c)));
  if (child.stdin) await pipeline(sock, child.stdin).catch(() => undefined);
  const code = await exited;
  if (code !== 0) throw new AgentError('EINVAL', `tar could not extract the archive: ${stderr.trim() || `exit ${code}`}`);
  // Archives may not bring setuid, setgid or sticky bits, as chmod may not set them.
  await stripSpecialBits(dir);
  reply(sock, { ok: true });
}

function opConnect(sock: net.Socket, port: number): void {
  const up = net.connect({ host: '127.0.0.1', port });
  up.once('error', (err: NodeJS.ErrnoException) => {
    if (!connected) errorReply(sock, err);
    else sock.destroy();
  });
  let connected = false;
  up.once('connect', () => {
    connected = true;
    reply(sock, { ok: true }, false);
    sock.pipe(up);
    up.pipe(sock);
    sock.on('error', () => up.destroy());
    sock.on('close', () => up.destroy());
    up.on('close', () => sock.destroy());
  });
}

/** What opExec needs of a started command, whichever way it was started. */
interface Launched {
  readonly stdin: Writable | null;
  readonly stdout: Readable;
  readonly stderr: Readable;
  /** The PTY helper's control pipe (its fd 3), when asked for. */
  readonly ctl: Writable | null;
  /** Signals the command's process group (the command leads a session of its own). */
  killGroup(sig: NodeJS.Signals): void;
  /** Signals the command alone. */
  kill(sig: NodeJS.Signals): void;
  /** Called once: the exit, after stdout and stderr ended; or why the command could not start. */
  onDone(fn: (end: LaunchEnd) => void): void;
  /**
   * The exit did not come after a SIGKILL: the one who reports it (the spawn helper) is stuck
   * (a command can stop it). Restarts the helper; Node's spawn has nothing to do.
   */
  unresponsive?(): void;
}

type LaunchEnd = { code: number | null; signal: NodeJS.Signals | null } | { error: NodeJS.ErrnoException };

interface LaunchOptions {
  readonly argv: readonly string[];
  readonly cwd: string;
  readonly env: Readonly<Record<string, string>>;
  /** A stdin to write to; /dev/null otherwise. */
  readonly stdin: boolean;
  /** An extra input on fd 3 (the PTY helper's resize channel). */
  readonly ctl: boolean;
}

function killGroupOf(pid: number | undefined, sig: NodeJS.Signals): void {
  if (pid === undefined) return;
  try {
    process.kill(-pid, sig);
  } catch {
    // already gone
  }
}

/** Starts a command with Node's own spawn: a fork of this ~45 MiB process (~1.5 ms here). */
function launchWithNode(o: LaunchOptions): Launched {
  const child = spawn(o.argv[0] as string, o.argv.slice(1), {
    cwd: o.cwd,
    env: o.env,
    detached: true,
    stdio: [o.stdin ? 'pipe' : 'ignore', 'pipe', 'pipe', ...(o.ctl ? (['pipe'] as const) : [])],
  });
  return {
    stdin: child.stdin,
    stdout: child.stdout as Readable,
    stderr: child.stderr as Readable,
    ctl: o.ctl ? (child.stdio[3] as Writable) : null,
    killGroup: (sig) => killGroupOf(child.pid, sig),
    kill: (sig) => void child.kill(sig),
    onDone: (fn) => {
      let done = false;
      child.on('error', (error: NodeJS.ErrnoException) => {
        if (!done) fn({ error });
        done = true;
      });
      child.on('close', (code, signal) => {
        if (!done) fn({ code, signal });
        done = true;
      });
    },
  };
}

const SPAWN_TOKEN_BYTES = 16;
/** A connection from an 'X' child introduces itself with the token, its slot and the child's pid (u32le). */
const SPAWN_HELLO_BYTES = SPAWN_TOKEN_BYTES + 1 + 4;
const SPAWN_REPLY_BYTES = 1 + SPAWN_TOKEN_BYTES + 4;
/** The helper's largest control frame (native/vulcan-spawnd.c MAX_FRAME); bigger requests go through Node's spawn. */
const SPAWN_MAX_FRAME = 1 << 20;
/** After the exit is known, how long connections that never came are waited for. */
const SPAWN_LATE_SLOT_MS = 2_000;
/** After a timeout's SIGKILL, how long the exit may take before the exec ends without it. */
const EXIT_AFTER_KILL_MS = 5_000;
/** How long the startup probe of the helper may take before the agent does without it. */
const SPAWN_PROBE_MS = 5_000;
/** A helper that died is restarted at most this often; in between, commands start with Node's spawn. */
const SPAWN_RESTART_MS = 1_000;
/** Number → name; the first of aliases (SIGABRT, not SIGIOT; SIGIO, not SIGPOLL), as Node's spawn reports them. */
const SIGNAL_NAMES = new Map<number, NodeJS.Signals>();
for (const [name, num] of Object.entries(os.constants.signals)) if (!SIGNAL_NAMES.has(num)) SIGNAL_NAMES.set(num, name as NodeJS.Signals);
const ERRNO_NAMES = new Map<number, string>(Object.entries(os.constants.errno).map(([name, num]) => [num, name]));

interface SpawnJob {
  readonly key: string;
  /** Per fd: 0 = /dev/null, 1 = a connection from the child. */
  readonly kinds: readonly number[];
  readonly sockets: (net.Socket | undefined)[];
  /** stdout (1) and stderr (2): the connections are piped into these. */
  readonly sinks: Map<number, PassThrough>;
  /** stdin (0) and the PTY control fd (3): these are piped into the connections. */
  readonly feeds: Map<number, PassThrough>;
  readonly expected: number;
  connected: number;
  pid?: number;
  /** Signals asked for before the pid was known: [group?, signal]. */
  readonly pending: [boolean, NodeJS.Signals][];
  exit?: { code: number | null; signal: NodeJS.Signals | null };
  lateTimer?: NodeJS.Timeout;
  settled: boolean;
  done?: (end: LaunchEnd) => void;
  ended: boolean;
}

/**
 * native/vulcan-spawnd inside the sandbox: it forks the commands instead of this process,
 * for the same reason the server has one (a fork copies the forker's page tables). The
 * agent listens on an abstract unix socket (the sandbox's own network namespace; unguessable
 * name, and every connection must bring a random 16-byte token); the helper's child connects
 * back once per stdio slot and execs. Used only once a probe command ran through it; when it
 * is missing, cannot start or dies, commands start with Node's spawn instead.
 */
class SpawnHelper {
  private readonly jobs = new Map<string, SpawnJob>();
  private helper: ChildProcess | undefined;
  private ready = false;
  private startedAt = 0;
  private replyBuf: Buffer = Buffer.alloc(0);

  private constructor(
    private readonly file: string,
    private readonly address: string,
  ) {}

  /** Starts the helper next to the agent, when there is one; resolves once it is known to work (or not). */
  static async start(file: string): Promise<SpawnHelper | undefined> {
    if (!fs.existsSync(file)) return undefined;
    const name = `vulcan-agent-spawn-${process.pid}-${randomBytes(8).toString('hex')}`;
    const helper = new SpawnHelper(file, `@${name}`);
    const server = net.createServer({ allowHalfOpen: true }, (c) => helper.accept(c));
    try {
      await new Promise<void>((resolve, reject) => {
        server.once('error', reject);
        server.listen({ path: `\0${name}` }, resolve);
      });
    } catch (err) {
      process.stderr.write(`vulcan-agent: exec helper unused, cannot listen: ${(err as Error).message}\n`);
      return undefined;
    }
    server.on('error', () => undefined);
    helper.startHelper();
    const probe = helper.launch({ argv: [file, '--probe'], cwd: '/', env: {}, stdin: false, ctl: false }, true);
    const end = await new Promise<LaunchEnd | undefined>((resolve) => {
      const timer = setTimeout(() => resolve(undefined), SPAWN_PROBE_MS);
      probe?.onDone((e) => {
        clearTimeout(timer);
        resolve(e);
      });
      probe?.stdout.resume();
      probe?.stderr.resume();
    });
    if (!end || 'error' in end || end.code !== 0) {
      process.stderr.write(`vulcan-agent: exec helper unused, its probe gave ${end ? JSON.stringify('error' in end ? end.error.code : end) : 'nothing'}\n`);
      helper.helper?.kill('SIGKILL');
      server.close();
      return undefined;
    }
    helper.ready = true;
    return helper;
  }

  private startHelper(): void {
    this.startedAt = Date.now();
    this.replyBuf = Buffer.alloc(0);
    const h = spawn(this.file, [this.address], { stdio: ['pipe', 'pipe', 'inherit'], cwd: '/', env: {} });
    this.helper = h;
    h.stdin?.on('error', () => undefined);
    h.stdout?.on('data', (c: Buffer) => this.onReplies(c));
    h.on('error', () => undefined);
    h.on('exit', (code, signal) => {
      if (this.helper !== h) return;
      this.helper = undefined;
      process.stderr.write(`vulcan-agent: exec helper exited (${signal ?? String(code)})\n`);
      for (const [key, job] of [...this.jobs]) {
        if (job.exit) continue;
        // Its exit status is lost with the helper; do not leave the command running unwatched.
        this.signal(job, true, 'SIGKILL');
        this.jobs.delete(key);
        this.end(job, { error: Object.assign(new Error('the exec helper died'), { code: 'ECHILD' }) });
      }
    });
  }

  /**
   * Starts a command through the helper, or returns undefined when the helper cannot take it
   * now (not ready, restarting, or a request too big): then the caller uses Node's spawn.
   */
  launch(o: LaunchOptions, probing = false): Launched | undefined {
    if (!this.ready && !probing) return undefined;
    if (!this.helper) {
      if (Date.now() - this.startedAt < SPAWN_RESTART_MS) return undefined;
      this.startHelper();
    }
    const strings = [o.cwd, ...o.argv, ...Object.entries(o.env).map(([k, v]) => `${k}=${v}`)];
    // Node's spawn refuses these too (ERR_INVALID_ARG_VALUE); the frame could not carry them.
    if (strings.some((x) => x.includes('\0'))) throw Object.assign(new Error('arguments, environment and cwd must not contain NUL bytes'), { code: 'EINVAL' });
    const body = Buffer.from(strings.map((x) => `${x}\0`).join(''));
    const kinds = [o.stdin ? 1 : 0, 1, 1, ...(o.ctl ? [1] : [])];
    const headLen = 4 + 1 + SPAWN_TOKEN_BYTES + 1 + kinds.length + 2;
    if (headLen - 4 + body.length > SPAWN_MAX_FRAME || o.argv.length > 0xffff) return undefined;
    const token = randomBytes(SPAWN_TOKEN_BYTES);
    const head = Buffer.alloc(headLen);
    head.writeUInt32LE(headLen - 4 + body.length, 0);
    head.write('X', 4, 'latin1');
    token.copy(head, 5);
    head.writeUInt8(kinds.length, 5 + SPAWN_TOKEN_BYTES);
    kinds.forEach((k, i) => head.writeUInt8(k, 6 + SPAWN_TOKEN_BYTES + i));
    head.writeUInt16LE(o.argv.length, headLen - 2);

    const sinks = new Map<number, PassThrough>([
      [1, new PassThrough()],
      [2, new PassThrough()],
    ]);
    const feeds = new Map<number, PassThrough>();
    if (o.stdin) feeds.set(0, new PassThrough());
    if (o.ctl) feeds.set(3, new PassThrough());
    const key = token.toString('hex');
    const job: SpawnJob = { key, kinds, sockets: [], sinks, feeds, expected: kinds.filter((k) => k === 1).length, connected: 0, pending: [], settled: false, ended: false };
    this.jobs.set(key, job);
    this.helper?.stdin?.write(Buffer.concat([head, body]));
    return {
      stdin: feeds.get(0) ?? null,
      stdout: sinks.get(1) as PassThrough,
      stderr: sinks.get(2) as PassThrough,
      ctl: feeds.get(3) ?? null,
      killGroup: (sig) => this.signal(job, true, sig),
      kill: (sig) => this.signal(job, false, sig),
      onDone: (fn) => (job.done = fn),
      unresponsive: () => {
        process.stderr.write('vulcan-agent: exec helper gave no exit 5 s after a SIGKILL; restarting it\n');
        this.helper?.kill('SIGKILL');
      },
    };
  }

  private signal(job: SpawnJob, group: boolean, sig: NodeJS.Signals): void {
    if (job.pid === undefined) {
      if (!job.ended) job.pending.push([group, sig]);
      return;
    }
    if (group) killGroupOf(job.pid, sig);
    else if (!job.exit) {
      try {
        process.kill(job.pid, sig);
      } catch {
        // already gone
      }
    }
  }

  private accept(c: net.Socket): void {
    c.on('error', () => undefined);
    let buf = Buffer.alloc(0);
    const onData = (chunk: Buffer) => {
      buf = Buffer.concat([buf, chunk]);
      if (buf.length < SPAWN_HELLO_BYTES) return;
      c.off('data', onData);
      c.pause();
      const job = this.jobs.get(buf.subarray(0, SPAWN_TOKEN_BYTES).toString('hex'));
      const slot = buf[SPAWN_TOKEN_BYTES] ?? 255;
      // A pid of 0 or 1 would aim the timeout's group kill at the agent's own group or init.
      if (!job || job.kinds[slot] !== 1 || job.sockets[slot] || (job.pid === undefined && buf.readUInt32LE(SPAWN_TOKEN_BYTES + 1) <= 1)) {
        c.destroy();
        return;
      }
      job.sockets[slot] = c;
      job.connected++;
      if (job.pid === undefined) {
        // It leads its own process group already (setsid before connecting).
        job.pid = buf.readUInt32LE(SPAWN_TOKEN_BYTES + 1);
        for (const [group, sig] of job.pending.splice(0)) this.signal(job, group, sig);
      }
      const sink = job.sinks.get(slot);
      if (sink) {
        const rest = buf.subarray(SPAWN_HELLO_BYTES);
        if (rest.length > 0) c.unshift(rest);
        c.end();
        c.pipe(sink);
      } else {
        c.resume();
        job.feeds.get(slot)?.pipe(c);
      }
      this.settle(job);
    };
    c.on('data', onData);
  }

  private onReplies(chunk: Buffer): void {
    this.replyBuf = this.replyBuf.length === 0 ? chunk : Buffer.concat([this.replyBuf, chunk]);
    while (this.replyBuf.length >= SPAWN_REPLY_BYTES) {
      const msg = this.replyBuf.subarray(0, SPAWN_REPLY_BYTES);
      this.replyBuf = this.replyBuf.subarray(SPAWN_REPLY_BYTES);
      const key = msg.subarray(1, 1 + SPAWN_TOKEN_BYTES).toString('hex');
      const value = msg.readInt32LE(1 + SPAWN_TOKEN_BYTES);
      const job = this.jobs.get(key);
      if (!job) continue;
      if (msg[0] === 0x45 /* E */) {
        const sig = value & 0x7f;
        job.exit = sig === 0 ? { code: (value >> 8) & 0xff, signal: null } : { code: null, signal: SIGNAL_NAMES.get(sig) ?? 'SIGKILL' };
        this.settle(job);
      } else {
        this.jobs.delete(key);
        for (const s of job.sockets) s?.destroy();
        const code = ERRNO_NAMES.get(value) ?? `errno ${value}`;
        this.end(job, { error: Object.assign(new Error(`cannot start: ${code}`), { code }) });
      }
    }
  }

  /** Once the exit is known and every connection came (or had its chance), the job ends when its outputs do. */
  private settle(job: SpawnJob): void {
    if (!job.exit || job.settled) return;
    if (job.connected < job.expected) {
      job.lateTimer ??= setTimeout(() => this.finish(job), SPAWN_LATE_SLOT_MS);
      return;
    }
    this.finish(job);
  }

  private finish(job: SpawnJob): void {
    if (job.settled || !job.exit) return;
    job.settled = true;
    clearTimeout(job.lateTimer);
    this.jobs.delete(job.key);
    // As Node does on a child's exit: its stdin is of no more use.
    for (const slot of job.feeds.keys()) job.sockets[slot]?.destroy();
    const exit = job.exit;
    const outputs = [...job.sinks].map(([slot, sink]) => {
      if (!job.sockets[slot]) sink.end();
      return sink.readableEnded ? Promise.resolve() : new Promise<void>((resolve) => sink.once('end', resolve).once('close', resolve));
    });
    void Promise.all(outputs).then(() => this.end(job, exit));
  }

  private end(job: SpawnJob, end: LaunchEnd): void {
    if (job.ended) return;
    job.ended = true;
    clearTimeout(job.lateTimer);
    if ('error' in end) for (const sink of job.sinks.values()) sink.end();
    job.done?.(end);
  }
}

/** The agent's helper, once its probe passed (see SpawnHelper.start in main). */
let spawnHelper: SpawnHelper | undefined;

/** Starts a command through the spawn helper when it can take it, else with Node's spawn. */
function launch(o: LaunchOptions): Launched {
  return spawnHelper?.launch(o) ?? launchWithNode(o);
}

function opExec(sock: net.Socket, req: Json): void {
  const cmd = req.cmd as string[];
  if (!Array.isArray(cmd) || cmd.length === 0 || !cmd.every((a) => typeof a === 'string')) throw new AgentError('EINVAL', 'cmd must be a non-empty argv');
  const env = (req.env ?? {}) as Record<string, string>;
  const cwd = typeof req.cwd === 'string' ? req.cwd : '/work';
  const timeoutMs = typeof req.timeout_ms === 'number' ? req.timeout_ms : 0;
  const pty = req.pty as { rows: number; cols: number } | undefined;
  const streamStdin = req.stdin_stream === true;
  const t0 = performance.now();
  const argv = pty ? [PTY_HELPER, String(pty.rows), String(pty.cols), '--', ...cmd] : cmd;
  let child: Launched;
  let finished = false;
  let timer: NodeJS.Timeout | undefined;
  const finish = (exit: Json) => {
    if (finished) return;
    finished = true;
    if (timer) clearTimeout(timer);
    sock.end(frame(F_EXIT, JSON.stringify({ ...exit, duration_ms: Math.round((performance.now() - t0) * 1000) / 1000 })));
  };
  const cannotRun = (e: NodeJS.ErrnoException) => {
    if (finished) return;
    sock.write(frame(F_STDERR, `vulcan: cannot run ${cmd[0] ?? ''}: ${e.code ?? e.message}\n`));
    finish({ exit_code: e.code === 'EACCES' ? 126 : 127, signal: null, timed_out: false });
  };
  try {
    // No stdin to give: /dev/null, one socket fewer on the hot path.
    child = launch({ argv, cwd, env, stdin: Boolean(pty) || streamStdin || typeof req.stdin === 'string', ctl: Boolean(pty) });
  } catch (err) {
    cannotRun(err as NodeJS.ErrnoException);
    return;
  }
  let timedOut = false;
  if (timeoutMs > 0) {
    timer = setTimeout(() => {
      timedOut = true;
      child.killGroup('SIGKILL');
      // A killed command's exit comes at once; when it does not, whoever reports it is stuck:
      // the exec still ends, timed out, and the helper is restarted.
      timer = setTimeout(() => {
        finish({ exit_code: null, signal: 'SIGKILL', timed_out: true });
        child.unresponsive?.();
      }, EXIT_AFTER_KILL_MS);
    }, timeoutMs);
  }
  child.onDone((end) => {
    // A PTY's program and the helper are in different groups; the helper's exit ends both.
    if ('error' in end) cannotRun(end.error);
    else finish({ exit_code: end.code, signal: end.signal, timed_out: timedOut });
  });
  // Back-pressure: when the server reads slowly, stop reading the command's output.
  const forward = (stream: Readable, type: number) => {
    stream.on('data', (c: Buffer) => {
      if (!sock.write(frame(type, c))) {
        stream.pause();
        sock.once('drain', () => stream.resume());
      }
    });
  };
  forward(child.stdout, F_STDOUT);
  forward(child.stderr, F_STDERR);
  child.stdin?.on('error', () => undefined);
  if (typeof req.stdin === 'string') child.stdin?.write(Buffer.from(req.stdin, 'base64'));
  if (!streamStdin && !pty) child.stdin?.end();
  const ctl = child.ctl;
  ctl?.on('error', () => undefined);

  // Frames from the server: stdin, end of stdin, resize, signal.
  let inBuf = Buffer.alloc(0);
  sock.on('data', (c: Buffer) => {
    inBuf = Buffer.concat([inBuf, c]);
    while (inBuf.length >= 5) {
      const len = inBuf.readUInt32BE(1);
      if (inBuf.length < 5 + len) break;
      const type = inBuf.readUInt8(0);
      const body = inBuf.subarray(5, 5 + len);
      inBuf = inBuf.subarray(5 + len);
      if (type === F_STDIN) child.stdin?.write(body);
      else if (type === F_STDIN_EOF) child.stdin?.end();
      else if (type === F_RESIZE && ctl) {
        const r = JSON.parse(body.toString()) as { rows?: unknown; cols?: unknown };
        if (Number.isInteger(r.rows) && Number.isInteger(r.cols)) ctl.write(`${String(r.rows)} ${String(r.cols)}\n`);
      } else if (type === F_SIGNAL) {
        const s = (JSON.parse(body.toString()) as { signal?: unknown }).signal;
        if (typeof s === 'string' && SIGNALS.has(s)) {
          // Through the PTY helper, which passes it to the program's process group.
          if (pty && s !== 'SIGKILL') child.kill(s as NodeJS.Signals);
          else child.killGroup(s as NodeJS.Signals);
        }
      }
    }
  });
  sock.resume();
  // The server hung up: nobody wants the result, so stop the command.
  sock.on('close', () => {
    if (!finished) {
      child.killGroup('SIGHUP');
      child.killGroup('SIGKILL');
    }
  });
  sock.on('error', () => undefined);
}

async function handle(sock: net.Socket): Promise<void> {
  sock.on('error', () => undefined);
  let req: Json;
  try {
    req = await readRequest(sock);
  } catch {
    sock.destroy();
    return;
  }
  try {
    switch (req.op) {
      case 'ping':
        return reply(sock, { ok: true, pid: process.pid, uptime_s: process.uptime() });
      case 'stat':
        return reply(sock, { ok: true, entry: await opStat(checkPath(req.path)) });
      case 'list':
        return reply(sock, { ok: true, ...(await opList(checkPath(req.path), typeof req.depth === 'number' ? req.depth : 1)) });
      case 'glob':
        return reply(sock, { ok: true, ...(await opGlob(String(req.pattern))) });
      case 'read':
        return await opRead(sock, checkPath(req.path));
      case 'write':
        return await opWrite(sock, checkPath(req.path), typeof req.mode === 'number' ? req.mode & 0o777 : 0o644);
      case 'remove':
        await opRemove(checkPath(req.path), req.recursive === true);
        return reply(sock, { ok: true });
      case 'move': {
        const from = checkPath(req.from, 'from');
        const to = checkPath(req.to, 'to');
        await fsp.lstat(from);
        await fsp.mkdir(path.posix.dirname(to), { recursive: true });
        await fsp.rename(from, to);
        return reply(sock, { ok: true });
      }
      case 'chmod':
        await fsp.chmod(checkPath(req.path), Number(req.mode) & 0o777);
        return reply(sock, { ok: true });
      case 'mkdir':
        await fsp.mkdir(checkPath(req.path), { recursive: true });
        return reply(sock, { ok: true });
      case 'tar-out':
        return await opTarOut(sock, checkPath(req.path));
      case 'tar-in':
        return await opTarIn(sock, checkPath(req.path));
      case 'connect': {
        const port = Number(req.port);
        if (!Number.isInteger(port) || port < 1 || port > 65535) throw new AgentError('EINVAL', 'port must be 1..65535');
        return opConnect(sock, port);
      }
      case 'exec':
        return opExec(sock, req);
      default:
        throw new AgentError('EINVAL', `unknown op ${String(req.op)}`);
    }
  } catch (err) {
    errorReply(sock, err);
  }
}

function main(): void {
  // Before the spawn helper starts: it and every command inherit it.
  process.umask(0o022);
  const socketPath = process.env.VULCAN_AGENT_SOCKET;
  const fd = Number(process.env.VULCAN_AGENT_FD ?? 3);
  const server = net.createServer({ allowHalfOpen: true }, (sock) => void handle(sock));
  server.on('error', (err) => {
    process.stderr.write(`vulcan-agent: ${err.message}\n`);
    process.exit(1);
  });
  const ready = () => process.stderr.write(`vulcan-agent: ready (pid ${process.pid})\n`);
  if (socketPath) {
    fs.rmSync(socketPath, { force: true });
    server.listen({ path: socketPath }, ready);
  } else {
    server.listen({ fd }, ready);
  }
  // The agent must outlive any one request's failure.
  process.on('uncaughtException', (err) => process.stderr.write(`vulcan-agent: ${err.stack ?? err.message}\n`));
  process.on('SIGPIPE', () => undefined);
  // Commands start with Node's spawn until (and unless) the helper's probe passed.
  const helper = process.env.VULCAN_AGENT_SPAWN_HELPER ?? SPAWN_HELPER;
  if (helper !== '') void SpawnHelper.start(helper).then((h) => (spawnHelper = h));
}

main();
