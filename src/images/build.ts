/**
 * Building root filesystems: from Debian packages (mmdebstrap minbase, or debootstrap where
 * mmdebstrap is missing) or, for `minimal`, from the host's static busybox.
 */
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { parseTar, TreeWriter, type ExtractOptions } from './extract.js';

/** What to build. */
export type BuildRecipe =
  /** A static busybox and its applets: a few MiB, built without the network. */
  | { readonly kind: 'busybox' }
  /** Debian minbase plus `packages`, from `suite` on `mirror`. */
  | { readonly kind: 'debian'; readonly packages: readonly string[]; readonly suite: string; readonly mirror: string };

/** Where busybox-static puts its binary. */
export const BUSYBOX_PATH = '/bin/busybox';
/** Debian's mirror; env `VULCAN_DEBIAN_MIRROR`. */
export const DEFAULT_MIRROR = 'http://deb.debian.org/debian';

/** Docs, manuals and translations are left out of built images: smaller, faster to build. */
const DPKG_EXCLUDES = ['/usr/share/doc/*', '/usr/share/man/*', '/usr/share/info/*', '/usr/share/locale/*', '/usr/share/lintian/*'];
const PACKAGE_RE = /^[a-z0-9][a-z0-9+.-]{0,99}$/;
const SUITE_RE = /^[a-z][a-z0-9-]{1,31}$/;

/** Checks a package list; throws naming the bad one. */
export function checkPackages(packages: readonly string[]): void {
  for (const p of packages) if (!PACKAGE_RE.test(p)) throw new Error(`"${p}" is not a Debian package name (packages)`);
}

export function checkSuite(suite: string): void {
  if (!SUITE_RE.test(suite)) throw new Error(`"${suite}" is not a Debian suite name (suite)`);
}

/** True when `file` is an ELF executable with no program interpreter (statically linked). */
export function isStaticElf(file: string): boolean {
  const buf = fs.readFileSync(file);
  if (buf.length < 64 || buf.readUInt32BE(0) !== 0x7f454c46 || buf[4] !== 2) return false;
  const phoff = Number(buf.readBigUInt64LE(0x20));
  const phentsize = buf.readUInt16LE(0x36);
  const phnum = buf.readUInt16LE(0x38);
  for (let i = 0; i < phnum; i++) {
    const off = phoff + i * phentsize;
    if (off + 4 > buf.length) return false;
    if (buf.readUInt32LE(off) === 3 /* PT_INTERP */) return false;
  }
  return true;
}

const ETC_PASSWD = 'root:x:0:0:root:/root:/bin/sh\nsandbox:x:1000:1000:sandbox:/work:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n';
const ETC_GROUP = 'root:x:0:\nsandbox:x:1000:\nnogroup:x:65534:\n';

/** Builds the busybox image into `root` (an empty directory). */
export async function buildBusybox(root: string): Promise<void> {
  if (!fs.existsSync(BUSYBOX_PATH)) throw new Error(`${BUSYBOX_PATH} is missing: apt-get install busybox-static`);
  if (!isStaticElf(BUSYBOX_PATH)) throw new Error(`${BUSYBOX_PATH} is not statically linked: apt-get install busybox-static`);
  const list = await new Promise<string>((resolve, reject) => {
    const child = spawn(BUSYBOX_PATH, ['--list'], { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    child.stdout.on('data', (c: Buffer) => (out += c.toString()));
    child.on('error', reject);
    child.on('close', (code) => (code === 0 ? resolve(out) : reject(new Error(`busybox --list exited ${code}`))));
  });
  // A merged /usr: every applet in /usr/bin, the other bin dirs link there.
  for (const d of ['usr/bin', 'etc', 'root', 'proc', 'sys', 'dev']) fs.mkdirSync(path.join(root, d), { recursive: true, mode: 0o755 });
  fs.copyFileSync(BUSYBOX_PATH, path.join(root, 'usr/bin/busybox'));
  fs.chmodSync(path.join(root, 'usr/bin/busybox'), 0o755);
  fs.symlinkSync('usr/bin', path.join(root, 'bin'));
  fs.symlinkSync('usr/bin', path.join(root, 'sbin'));
  fs.symlinkSync('bin', path.join(root, 'usr/sbin'));
  for (const applet of list.split('\n').map((s) => s.trim())) {
    if (applet === '' || applet === 'busybox' || applet.includes('/')) continue;
    fs.symlinkSync('busybox', path.join(root, 'usr/bin', applet));
  }
  fs.writeFileSync(path.join(root, 'etc/passwd'), ETC_PASSWD);
  fs.writeFileSync(path.join(root, 'etc/group'), ETC_GROUP);
  fs.writeFileSync(path.join(root, 'etc/hosts'), '127.0.0.1 localhost\n::1 localhost\n');
  fs.chmodSync(path.join(root, 'root'), 0o700);
}

function hasBinary(name: string): boolean {
  return (process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin').split(':').some((d) => d !== '' && fs.existsSync(path.join(d, name)));
}

/** Kills a detached child's whole process group. */
function killGroup(pid: number | undefined): void {
  if (pid === undefined) return;
  try {
    process.kill(-pid, 'SIGKILL');
  } catch {
    // already gone
  }
}

/**
 * Builds a Debian minbase tree into `root` through `tree` (mmdebstrap writes a tarball to
 * its stdout, which goes through the same hostile-tarball rules as an import, skipping
 * /dev nodes). Falls back to debootstrap straight into `root` where mmdebstrap is missing.
 */
export async function buildDebian(recipe: Extract<BuildRecipe, { kind: 'debian' }>, root: string, limits: Omit<ExtractOptions, 'devices' | 'whiteouts'>, onProgress: (msg: string) => void): Promise<TreeWriter> {
  checkPackages(recipe.packages);
  checkSuite(recipe.suite);
  if (!/^https?:\/\/[^\s]+$/.test(recipe.mirror)) throw new Error(`"${recipe.mirror}" is not an http(s) mirror URL (VULCAN_DEBIAN_MIRROR)`);
  if (process.getuid?.() !== 0) throw new Error('building a Debian image needs root (mmdebstrap/debootstrap)');
  const tree = new TreeWriter(root, { ...limits, devices: 'skip', whiteouts: false });
  const include = recipe.packages.length > 0 ? [`--include=${recipe.packages.join(',')}`] : [];
  const useMm = hasBinary('mmdebstrap');
  if (!useMm && !hasBinary('debootstrap')) throw new Error('neither mmdebstrap nor debootstrap is installed: apt-get install mmdebstrap');
  const args = useMm
    ? ['--variant=minbase', '--mode=root', '--format=tar', ...DPKG_EXCLUDES.map((p) => `--dpkgopt=path-exclude=${p}`), ...include, recipe.suite, '-', recipe.mirror]
    : ['--variant=minbase', ...include, recipe.suite, root, recipe.mirror];
  const cmd = useMm ? 'mmdebstrap' : 'debootstrap';
  onProgress(`${cmd} ${recipe.suite} minbase${recipe.packages.length > 0 ? ` + ${recipe.packages.join(', ')}` : ''}`);
  const child = spawn(cmd, args, { stdio: ['ignore', useMm ? 'pipe' : 'ignore', 'pipe'], detached: true, env: { PATH: '/usr/sbin:/usr/bin:/sbin:/bin', LANG: 'C.UTF-8', TMPDIR: path.dirname(root) } });
  let stderrTail = '';
  let lineBuf = '';
  child.stderr?.on('data', (c: Buffer) => {
    const s = c.toString();
    stderrTail = (stderrTail + s).slice(-4000);
    lineBuf += s;
    let nl: number;
    while ((nl = lineBuf.indexOf('\n')) >= 0) {
      const line = lineBuf.slice(0, nl).trim();
      lineBuf = lineBuf.slice(nl + 1);
      if (/^I: /.test(line)) onProgress(line.slice(3));
    }
  });
  const onAbort = () => killGroup(child.pid);
  limits.signal?.addEventListener('abort', onAbort, { once: true });
  const exited = new Promise<number | null>((resolve, reject) => {
    child.on('error', reject);
    child.on('close', (code) => resolve(code));
  });
  try {
    if (useMm && child.stdout) {
      const parsing = parseTar(child.stdout, (e) => tree.writeEntry(e), limits.signal).catch((err: unknown) => {
        killGroup(child.pid);
        throw err;
      });
      const [, code] = await Promise.all([parsing, exited]);
      if (code !== 0) throw new Error(`mmdebstrap exited with ${code}: ${stderrTail.trim().split('\n').slice(-5).join(' | ')}`);
    } else {
      const code = await exited;
      if (code !== 0) throw new Error(`debootstrap exited with ${code}: ${stderrTail.trim().split('\n').slice(-5).join(' | ')}`);
      sanitizeTree(root, tree);
    }
  } finally {
    limits.signal?.removeEventListener('abort', onAbort);
    killGroup(child.pid);
  }
  return tree;
}

/** For trees not made through TreeWriter (debootstrap): drop device nodes and FIFOs, clear setuid/setgid. */
function sanitizeTree(root: string, tree: TreeWriter): void {
  const walk = (dir: string) => {
    for (const name of fs.readdirSync(dir)) {
      const abs = path.join(dir, name);
      const st = fs.lstatSync(abs);
      if (st.isDirectory()) walk(abs);
      else if (st.isCharacterDevice() || st.isBlockDevice() || st.isFIFO() || st.isSocket()) {
        fs.unlinkSync(abs);
        tree.stats.neutralised++;
      } else if (st.isFile() && st.mode & 0o6000) {
        fs.chmodSync(abs, st.mode & 0o1777);
        tree.stats.neutralised++;
      }
    }
  };
  walk(root);
}
