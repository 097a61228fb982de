/**
 * Per-workload cgroups on cgroup v2 (unified) or v1 (one hierarchy per controller).
 *
 * v2 is used when its root delegates the memory, pids and cpu controllers; otherwise v1,
 * when the memory, pids and cpu hierarchies are mounted (a hybrid host such as Debian with
 * `systemd.unified_cgroup_hierarchy=0` has v1 controllers and an empty v2 mount beside
 * them). Every group lives under `<root>/vulcan/`, so leftovers of a crashed server are
 * easy to find and remove (`reapStaleCgroups`).
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';

/** Limits a cgroup enforces. */
export interface CgroupLimits {
  /** Memory cap in bytes, swap included. */
  readonly memBytes: number;
  /** Most tasks (processes and threads). */
  readonly pidsMax: number;
  /** CPU quota in cores. */
  readonly cpus: number;
}

/** What a cgroup saw, read after (or during) a run. */
export interface CgroupStats {
  /** Processes the kernel's OOM killer killed in the group. */
  readonly oomKills: number;
  /** Times a fork failed because of the pids limit. */
  readonly pidsMaxHits: number;
  /** Peak memory in bytes, where the kernel reports it (0 when unknown). */
  readonly memPeakBytes: number;
}

/** One workload's cgroup. */
export interface Cgroup {
  readonly name: string;
  /** The `cgroup.procs` files a process writes its pid into to join (one per v1 hierarchy). */
  readonly procsFiles: readonly string[];
  stats(): CgroupStats;
  /** Kills every task in the group and waits until it is empty. */
  killAll(): Promise<void>;
  /** Stops every task (freezer), keeping memory; `thaw()` resumes. */
  freeze(): Promise<void>;
  thaw(): Promise<void>;
  /** Kills what is left and removes the group. Idempotent. */
  destroy(): Promise<void>;
}

type Layout =
  | { readonly version: 'v2'; readonly root: string }
  | { readonly version: 'v1'; readonly mounts: Readonly<Record<'memory' | 'pids' | 'cpu' | 'freezer', string>> };

const REQUIRED = ['memory', 'pids', 'cpu'] as const;
const GROUP_PARENT = 'vulcan';

let cachedLayout: Layout | { readonly error: string } | undefined;

function readMountinfo(): { mountPoint: string; fsType: string; superOpts: string[] }[] {
  const text = fs.readFileSync('/proc/self/mountinfo', 'utf8');
  const out: { mountPoint: string; fsType: string; superOpts: string[] }[] = [];
  for (const line of text.split('\n')) {
    const [left, right] = line.split(' - ');
    if (!left || !right) continue;
    const mountPoint = left.split(' ')[4];
    const [fsType, , superOpts] = right.split(' ');
    if (!mountPoint || !fsType) continue;
    out.push({ mountPoint: mountPoint.replace(/\\040/g, ' '), fsType, superOpts: (superOpts ?? '').split(',') });
  }
  return out;
}

function detectLayout(): Layout | { readonly error: string } {
  let mounts;
  try {
    mounts = readMountinfo();
  } catch (err) {
    return { error: `cannot read /proc/self/mountinfo: ${(err as Error).message}` };
  }
  const v2 = mounts.find((m) => m.fsType === 'cgroup2');
  if (v2) {
    try {
      const controllers = fs.readFileSync(path.join(v2.mountPoint, 'cgroup.controllers'), 'utf8').trim().split(/\s+/);
      if (REQUIRED.every((c) => controllers.includes(c))) return { version: 'v2', root: v2.mountPoint };
    } catch {
      // fall through to v1
    }
  }
  const v1: Partial<Record<'memory' | 'pids' | 'cpu' | 'freezer', string>> = {};
  for (const m of mounts) {
    if (m.fsType !== 'cgroup') continue;
    for (const c of ['memory', 'pids', 'cpu', 'freezer'] as const) {
      if (m.superOpts.includes(c) && v1[c] === undefined) v1[c] = m.mountPoint;
    }
  }
  const missing = REQUIRED.filter((c) => v1[c] === undefined);
  if (missing.length === 0 && v1.freezer !== undefined) {
    return { version: 'v1', mounts: v1 as Record<'memory' | 'pids' | 'cpu' | 'freezer', string> };
  }
  if (v2) return { error: `cgroup v2 at ${v2.mountPoint} does not offer the memory, pids and cpu controllers, and the v1 hierarchies lack ${missing.join(', ') || 'freezer'}` };
  return { error: `no cgroup v2 mount and no v1 hierarchies for ${[...missing, ...(v1.freezer ? [] : ['freezer'])].join(', ')}` };
}

function layout(): Layout | { readonly error: string } {
  cachedLayout ??= detectLayout();
  return cachedLayout;
}

/** Whether per-workload cgroups work here, and which version. */
export function cgroupSupport(): { readonly ok: true; readonly version: 'v1' | 'v2' } | { readonly ok: false; readonly reason: string } {
  const l = layout();
  if ('error' in l) return { ok: false, reason: l.error };
  try {
    for (const dir of parentDirs(l)) fs.mkdirSync(dir, { recursive: true });
    if (l.version === 'v2') enableV2Controllers(l.root);
  } catch (err) {
    return { ok: false, reason: `cannot create cgroups (run the server as root): ${(err as Error).message}` };
  }
  return { ok: true, version: l.version };
}

function parentDirs(l: Layout): string[] {
  if (l.version === 'v2') return [path.join(l.root, GROUP_PARENT)];
  return Object.values(l.mounts).map((m) => path.join(m, GROUP_PARENT));
}

type GroupDirs = Readonly<Record<'memory' | 'pids' | 'cpu' | 'freezer', string>>;

function groupDirs(l: Layout, name: string): GroupDirs {
  if (l.version === 'v2') {
    const d = path.join(l.root, GROUP_PARENT, name);
    return { memory: d, pids: d, cpu: d, freezer: d };
  }
  const at = (m: string) => path.join(m, GROUP_PARENT, name);
  return { memory: at(l.mounts.memory), pids: at(l.mounts.pids), cpu: at(l.mounts.cpu), freezer: at(l.mounts.freezer) };
}

function enableV2Controllers(root: string): void {
  // Controllers must be enabled on every level from the root down to our parent group.
  for (const dir of [root, path.join(root, GROUP_PARENT)]) {
    const want = REQUIRED.map((c) => `+${c}`).join(' ');
    const current = fs.readFileSync(path.join(dir, 'cgroup.subtree_control'), 'utf8');
    if (!REQUIRED.every((c) => current.includes(c))) fs.writeFileSync(path.join(dir, 'cgroup.subtree_control'), want);
  }
}

function writeIfExists(file: string, value: string): void {
  try {
    fs.writeFileSync(file, value);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
}

function readKeyed(file: string, key: string): number {
  try {
    const text = fs.readFileSync(file, 'utf8');
    const m = new RegExp(`^${key} (\\d+)$`, 'm').exec(text);
    return m?.[1] ? Number(m[1]) : 0;
  } catch {
    return 0;
  }
}

function readNumber(file: string): number {
  try {
    return Number(fs.readFileSync(file, 'utf8').trim()) || 0;
  } catch {
    return 0;
  }
}

function readPids(dir: string): number[] {
  try {
    return fs
      .readFileSync(path.join(dir, 'cgroup.procs'), 'utf8')
      .split('\n')
      .filter(Boolean)
      .map(Number);
  } catch {
    return [];
  }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function rmdirRetry(dir: string): Promise<void> {
  for (let i = 0; i < 100; i++) {
    try {
      await fsp.rmdir(dir);
      return;
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'ENOENT') return;
      if (code !== 'EBUSY') throw err;
      // A task that just exited is still uncharging its memory (v1 memcg): usually ~2 ms.
      await sleep(Math.min(10, 1 + (i >> 2)));
    }
  }
  throw new Error(`cgroup ${dir} stays busy`);
}

class CgroupImpl implements Cgroup {
  readonly procsFiles: readonly string[];
  private destroyed = false;

  constructor(
    readonly name: string,
    private readonly l: Layout,
    private readonly dirs: GroupDirs,
  ) {
    this.procsFiles = [...new Set(Object.values(dirs))].map((d) => path.join(d, 'cgroup.procs'));
  }

  stats(): CgroupStats {
    if (this.l.version === 'v2') {
      const d = this.dirs.memory;
      return {
        oomKills: readKeyed(path.join(d, 'memory.events'), 'oom_kill'),
        pidsMaxHits: readKeyed(path.join(d, 'pids.events'), 'max'),
        memPeakBytes: readNumber(path.join(d, 'memory.peak')),
      };
    }
    return {
      oomKills: readKeyed(path.join(this.dirs.memory, 'memory.oom_control'), 'oom_kill'),
      pidsMaxHits: readKeyed(path.join(this.dirs.pids, 'pids.events'), 'max'),
      memPeakBytes: readNumber(path.join(this.dirs.memory, 'memory.max_usage_in_bytes')),
    };
  }

  async freeze(): Promise<void> {
    if (this.l.version === 'v2') fs.writeFileSync(path.join(this.dirs.freezer, 'cgroup.freeze'), '1');
    else fs.writeFileSync(path.join(this.dirs.freezer, 'freezer.state'), 'FROZEN');
    await this.waitFrozen(true);
  }

  async thaw(): Promise<void> {
    if (this.l.version === 'v2') fs.writeFileSync(path.join(this.dirs.freezer, 'cgroup.freeze'), '0');
    else fs.writeFileSync(path.join(this.dirs.freezer, 'freezer.state'), 'THAWED');
    await this.waitFrozen(false);
  }

  private async waitFrozen(want: boolean): Promise<void> {
    for (let i = 0; i < 200; i++) {
      const frozen =
        this.l.version === 'v2'
          ? readKeyed(path.join(this.dirs.freezer, 'cgroup.events'), 'frozen') === 1
          : fs.readFileSync(path.join(this.dirs.freezer, 'freezer.state'), 'utf8').trim() === 'FROZEN';
      if (frozen === want) return;
      await sleep(5);
    }
    throw new Error(`cgroup ${this.name} did not ${want ? 'freeze' : 'thaw'}`);
  }

  /** One kill at a time per group: overlapping freeze/thaw cycles could leave it frozen. */
  private killing: Promise<void> | undefined;

  killAll(): Promise<void> {
    this.killing ??= this.killOnce().finally(() => {
      this.killing = undefined;
    });
    return this.killing;
  }

  private async killOnce(): Promise<void> {
    // The common case: the workload exited and took its processes with it.
    if (Object.values(this.dirs).every((d) => readPids(d).length === 0)) return;
    if (this.l.version === 'v2' && fs.existsSync(path.join(this.dirs.memory, 'cgroup.kill'))) {
      fs.writeFileSync(path.join(this.dirs.memory, 'cgroup.kill'), '1');
    } else {
      // Freeze first so a fork bomb cannot outrun the kill loop, then kill, and always thaw
      // so the SIGKILLs are delivered.
      try {
        await this.freeze().catch(() => undefined);
        for (const pid of readPids(this.dirs.pids)) tryKill(pid);
      } finally {
        await this.thaw().catch(() => undefined);
      }
    }
    for (let i = 0; i < 500; i++) {
      if (Object.values(this.dirs).every((d) => readPids(d).length === 0)) return;
      await sleep(5);
      if (i % 20 === 19) for (const pid of readPids(this.dirs.pids)) tryKill(pid);
    }
    throw new Error(`cgroup ${this.name} still has tasks after SIGKILL`);
  }

  async destroy(): Promise<void> {
    if (this.destroyed) return;
    this.destroyed = true;
    await this.killAll();
    for (const dir of new Set(Object.values(this.dirs))) await rmdirRetry(dir);
  }
}

function tryKill(pid: number): void {
  try {
    process.kill(pid, 'SIGKILL');
  } catch {
    // gone
  }
}

/** Where Vulcan mounts its controller-less cgroup v1 hierarchy with `favordynmods`. */
export const FAVOR_DYNMODS_MOUNT = '/run/vulcan/cgroup-favordynmods';
let favorResult: string | undefined;

/** `favorDynamicMods()` once per process (unless VULCAN_CGROUP_FAVORDYNMODS=0); its answer. */
export function ensureFavorDynamicMods(): string {
  favorResult ??= process.env.VULCAN_CGROUP_FAVORDYNMODS === '0' ? 'off: VULCAN_CGROUP_FAVORDYNMODS=0' : favorDynamicMods();
  return favorResult;
}

/**
 * Makes moving a process into a cgroup cheap, once per host. Every cgroup migration takes
 * the kernel's global cgroup_threadgroup_rwsem for writing, and by default that waits for
 * an RCU grace period: ~10 ms here for the first cgroup.procs write of each sandbox start,
 * a third of a whole bubblewrap start. The `favordynmods` cgroup mount option keeps that
 * lock in its slow-reader mode so migrations no longer wait (forks and exits pay a little
 * more instead, negligible on a box this size). The lock is global, so any one hierarchy
 * with the option is enough: Vulcan mounts a controller-less named v1 hierarchy with it at
 * FAVOR_DYNMODS_MOUNT, unless some cgroup mount already has it. Root only; best effort.
 * Returns what it found or did, for the log and `vulcan certify`.
 */
export function favorDynamicMods(): string {
  let mounts;
  try {
    mounts = readMountinfo();
  } catch (err) {
    return `cannot read mountinfo: ${(err as Error).message}`;
  }
  const has = mounts.find((m) => (m.fsType === 'cgroup' || m.fsType === 'cgroup2') && m.superOpts.includes('favordynmods'));
  if (has) return `on (${has.mountPoint})`;
  if (process.getuid?.() !== 0) return 'off: not root';
  try {
    fs.mkdirSync(FAVOR_DYNMODS_MOUNT, { recursive: true, mode: 0o755 });
    execFileSync('mount', ['-t', 'cgroup', '-o', 'none,name=vulcan-favordynmods,favordynmods', 'cgroup', FAVOR_DYNMODS_MOUNT], { stdio: 'pipe' });
    return `on (mounted ${FAVOR_DYNMODS_MOUNT})`;
  } catch (err) {
    return `off: ${String((err as { stderr?: Buffer }).stderr ?? (err as Error).message).trim()}`;
  }
}

/**
 * Creates `vulcan/<name>` with the given limits. Throws when cgroups are unavailable
 * (`cgroupSupport()` says why) or the limits cannot be written.
 */
export async function createCgroup(name: string, limits: CgroupLimits): Promise<Cgroup> {
  const l = layout();
  if ('error' in l) throw new Error(l.error);
  if (!/^[A-Za-z0-9_.-]+$/.test(name)) throw new Error(`bad cgroup name ${name}`);
  ensureFavorDynamicMods();
  const dirs = groupDirs(l, name);
  for (const d of new Set(Object.values(dirs))) await fsp.mkdir(d, { recursive: true });
  const cg = new CgroupImpl(name, l, dirs);
  try {
    const mem = String(Math.floor(limits.memBytes));
    const quota = Math.max(1000, Math.round(limits.cpus * 100_000));
    if (l.version === 'v2') {
      fs.writeFileSync(path.join(dirs.memory, 'memory.max'), mem);
      writeIfExists(path.join(dirs.memory, 'memory.swap.max'), '0');
      // Kill the whole group on OOM, not one task: a half-killed sandbox is useless.
      writeIfExists(path.join(dirs.memory, 'memory.oom.group'), '1');
      fs.writeFileSync(path.join(dirs.pids, 'pids.max'), String(limits.pidsMax));
      fs.writeFileSync(path.join(dirs.cpu, 'cpu.max'), `${quota} 100000`);
    } else {
      fs.writeFileSync(path.join(dirs.memory, 'memory.limit_in_bytes'), mem);
      // memsw exists only with swap accounting; when present it must be >= the limit.
      writeIfExists(path.join(dirs.memory, 'memory.memsw.limit_in_bytes'), mem);
      writeIfExists(path.join(dirs.memory, 'memory.swappiness'), '0');
      fs.writeFileSync(path.join(dirs.pids, 'pids.max'), String(limits.pidsMax));
      fs.writeFileSync(path.join(dirs.cpu, 'cpu.cfs_period_us'), '100000');
      fs.writeFileSync(path.join(dirs.cpu, 'cpu.cfs_quota_us'), String(quota));
    }
  } catch (err) {
    await cg.destroy().catch(() => undefined);
    throw err;
  }
  return cg;
}

/**
 * Removes every group under `vulcan/` whose name starts with `prefix` (all when empty),
 * killing its tasks first. For start-up reconciliation after a crash. Returns the names.
 */
export async function reapStaleCgroups(prefix = '', keep: ReadonlySet<string> = new Set()): Promise<string[]> {
  const l = layout();
  if ('error' in l) return [];
  const names = new Set<string>();
  for (const parent of parentDirs(l)) {
    let entries: fs.Dirent[];
    try {
      entries = fs.readdirSync(parent, { withFileTypes: true });
    } catch {
      continue;
    }
    for (const e of entries) if (e.isDirectory() && e.name.startsWith(prefix) && !keep.has(e.name)) names.add(e.name);
  }
  for (const name of names) {
    const dirs = groupDirs(l, name);
    for (const d of Object.values(dirs)) fs.mkdirSync(d, { recursive: true });
    await new CgroupImpl(name, l, dirs).destroy();
  }
  return [...names];
}

/** The names of live groups under `vulcan/` (for tests that check nothing is left). */
export function listCgroups(): string[] {
  const l = layout();
  if ('error' in l) return [];
  const names = new Set<string>();
  for (const parent of parentDirs(l)) {
    try {
      for (const e of fs.readdirSync(parent, { withFileTypes: true })) if (e.isDirectory()) names.add(e.name);
    } catch {
      // none
    }
  }
  return [...names];
}
