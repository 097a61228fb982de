/**
 * What a workload brings into an image-based sandbox (gvisor, container): a host directory
 * mounted read-only at /vulcan (runner, input, code) and a small host tmpfs mounted
 * writable at /vulcan/out, where the runner's result channel (fd 3) lands as a file.
 *
 * Why a file on a host tmpfs: neither runsc nor the Docker API can hand a sandbox an extra
 * fd, and the result must travel on a channel the code cannot forge by printing. The tmpfs
 * is capped, so the code cannot fill the host's disk through it.
 *
 * The runners are the namespace backend's (src/backends/namespace/runners/), copied in.
 */
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import type { RunSpec } from '../../core/backend.js';
import type { ImageRef } from '../../core/images.js';
import type { Runtime } from '../../core/types.js';
import { parseRunnerMessage, type RunnerMessage } from '../namespace/result-channel.js';

const execFileP = promisify(execFile);

/** Runtimes that run user code through a runner; `oci` runs `cmd` as it is. */
export const CODE_RUNTIMES = ['python', 'node', 'sh'] as const satisfies readonly Runtime[];
export type CodeRuntime = (typeof CODE_RUNTIMES)[number];

/** Size of the /vulcan/out tmpfs: the largest result plus room for the ready line. */
export const RESULT_MAX_BYTES = 4 * 1024 * 1024;
const OUT_TMPFS_BYTES = RESULT_MAX_BYTES + 64 * 1024;
/** The result file inside, and the shell line that points fd 3 at it. */
export const RESULT_FILE = 'result';

const RUNNER_FILES = { python: 'runner.py', node: 'runner.mjs', sh: 'run-sh.sh' } as const;
const ENTRY_NAMES = { python: 'main.py', node: 'main.js', sh: 'main.sh' } as const;

export function isCodeRuntime(r: Runtime): r is CodeRuntime {
  return (CODE_RUNTIMES as readonly Runtime[]).includes(r);
}

/** The runners directory of an install. */
export function runnersDir(installDir: string): string {
  return path.join(installDir, 'src', 'backends', 'namespace', 'runners');
}

/** The argv (inside) that runs the runner for `runtime` on `entry`. */
function runnerArgv(runtime: CodeRuntime, entry: string): string[] {
  switch (runtime) {
    case 'python':
      return ['/usr/bin/python3', '-I', '-X', 'utf8', '/vulcan/runner.py', entry];
    case 'node':
      return ['/usr/bin/node', '--experimental-detect-module', '--disable-warning=ExperimentalWarning', '/vulcan/runner.mjs', entry];
    case 'sh':
      return ['/bin/sh', '/vulcan/run-sh.sh', entry];
  }
}

/** A prepared workload directory on the host. */
export interface Payload {
  /** Host dir mounted read-only at /vulcan. */
  readonly inDir: string;
  /** Host tmpfs mounted writable at /vulcan/out. */
  readonly outDir: string;
  /** The argv to run inside. */
  readonly argv: readonly string[];
  /** Environment inside, `NAME=value`. */
  readonly env: readonly string[];
  /** Working directory inside. */
  readonly cwd: string;
  /** Bytes for the process's stdin (sh gets the input), or undefined. */
  readonly stdin?: string;
  /** True when a runner reports on the result file. */
  readonly hasRunner: boolean;
  /** Reads what the runner wrote. */
  readResult(): string;
  /** Unmounts and removes everything. Idempotent. */
  dispose(): Promise<void>;
}

function envList(image: ImageRef, spec: RunSpec): string[] {
  const env = new Map<string, string>();
  for (const kv of image.config.env ?? []) {
    const eq = kv.indexOf('=');
    if (eq > 0) env.set(kv.slice(0, eq), kv.slice(eq + 1));
  }
  if (!env.has('PATH')) env.set('PATH', '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin');
  if (spec.runtime !== 'oci') {
    env.set('HOME', '/work');
    env.set('LANG', 'C.UTF-8');
  }
  for (const [k, v] of Object.entries(spec.env)) env.set(k, v);
  return [...env].map(([k, v]) => `${k}=${v}`);
}

async function mountTmpfs(dir: string, bytes: number): Promise<void> {
  await execFileP('mount', ['-t', 'tmpfs', '-o', `size=${bytes},mode=0777,nosuid,nodev,noexec`, 'vulcan-out', dir]);
}

/** True when `dir` is a mount point (its device differs from its parent's). */
function isMountPoint(dir: string): boolean {
  try {
    return fs.statSync(dir).dev !== fs.statSync(path.dirname(dir)).dev;
  } catch {
    return false;
  }
}

/** Unmounts `dir` if mounted (lazily, so a busy mount never blocks cleanup). */
export async function unmountIfMounted(dir: string): Promise<void> {
  if (!isMountPoint(dir)) return;
  await execFileP('umount', ['-l', dir]).catch(() => undefined);
}

/** A workload directory on the host: `vulcan/` (read-only inside) and its `out/` tmpfs. */
export interface Slot {
  readonly workDir: string;
  readonly inDir: string;
  readonly outDir: string;
  /** Unmounts and removes everything. Idempotent. */
  dispose(): Promise<void>;
}

/** Makes `workDir` (which must not exist) with the result tmpfs mounted. */
export async function createSlot(workDir: string): Promise<Slot> {
  const inDir = path.join(workDir, 'vulcan');
  const outDir = path.join(inDir, 'out');
  fs.mkdirSync(outDir, { recursive: true, mode: 0o755 });
  fs.chmodSync(workDir, 0o711);
  let mounted = false;
  const dispose = async () => {
    if (mounted) {
      mounted = false;
      await unmountIfMounted(outDir);
    }
    fs.rmSync(workDir, { recursive: true, force: true });
  };
  try {
    await mountTmpfs(outDir, OUT_TMPFS_BYTES);
    mounted = true;
  } catch (err) {
    await dispose();
    throw err;
  }
  return { workDir, inDir, outDir, dispose };
}

/** Writes `spec`'s input, runner and code into `slot` and says how to run it. */
export function fillSlot(slot: Slot, spec: RunSpec, image: ImageRef, installDir: string): Payload {
  const { inDir, outDir } = slot;
  fs.writeFileSync(path.join(inDir, 'input.json'), spec.inputJson, { mode: 0o644 });
  let argv: string[];
  let cwd = '/work';
  let stdin: string | undefined;
  let hasRunner = false;
  if (spec.runtime === 'oci') {
    argv = [...(spec.cmd ?? image.config.cmd ?? [])];
    if (argv.length === 0) throw new Error(`image ${image.name} has no default command; give cmd`);
    cwd = image.config.workdir ?? '/';
  } else {
    if (!isCodeRuntime(spec.runtime)) throw new Error(`cannot run ${spec.runtime} in an image`);
    const runtime = spec.runtime;
    const code = spec.code;
    if (code === undefined) throw new Error(`${runtime} needs code`);
    fs.copyFileSync(path.join(runnersDir(installDir), RUNNER_FILES[runtime]), path.join(inDir, RUNNER_FILES[runtime]));
    let inner: string[];
    if (code.kind === 'inline') {
      fs.mkdirSync(path.join(inDir, 'code'));
      fs.writeFileSync(path.join(inDir, 'code', ENTRY_NAMES[runtime]), code.source, { mode: 0o644 });
      inner = runnerArgv(runtime, `/vulcan/code/${ENTRY_NAMES[runtime]}`);
    } else {
      fs.writeFileSync(path.join(inDir, 'code.tar.gz'), code.tarGz, { mode: 0o644 });
      fs.copyFileSync(path.join(runnersDir(installDir), 'unpack.sh'), path.join(inDir, 'unpack.sh'));
      inner = ['/bin/sh', '/vulcan/unpack.sh', ...runnerArgv(runtime, path.posix.join('/work', code.entrypoint))];
    }
    // fd 3 (the runners' result channel) becomes the file on the capped tmpfs.
    argv = ['/bin/sh', '-c', `exec 3>/vulcan/out/${RESULT_FILE}; exec "$@"`, 'vulcan', ...inner];
    if (runtime === 'sh') stdin = spec.inputJson;
    hasRunner = true;
  }
  return {
    inDir,
    outDir,
    argv,
    env: envList(image, spec),
    cwd,
    ...(stdin !== undefined ? { stdin } : {}),
    hasRunner,
    readResult: () => {
      try {
        return fs.readFileSync(path.join(outDir, RESULT_FILE), 'utf8');
      } catch {
        return '';
      }
    },
    dispose: () => slot.dispose(),
  };
}

/**
 * Lays out `workDir` (which must not exist) for `spec` on `image`: input, runner, code,
 * and the result tmpfs. The caller must `dispose()` it.
 */
export async function preparePayload(workDir: string, spec: RunSpec, image: ImageRef, installDir: string): Promise<Payload> {
  const slot = await createSlot(workDir);
  try {
    return fillSlot(slot, spec, image, installDir);
  } catch (err) {
    await slot.dispose();
    throw err;
  }
}

/** Calls `onReady` once, when the runner's "ready" line lands in the result file. Returns a stop function. */
export function watchReady(payload: Payload, onReady: () => void): () => void {
  if (!payload.hasRunner) return () => undefined;
  let fired = false;
  let watcher: fs.FSWatcher | undefined;
  try {
    watcher = fs.watch(payload.outDir, () => {
      if (!fired && payload.readResult().startsWith('{"t":"ready"}')) {
        fired = true;
        onReady();
      }
    });
    watcher.on('error', () => undefined);
  } catch {
    watcher = undefined;
  }
  return () => watcher?.close();
}

/** What the runner reported, read from the result file after the sandbox ended. */
export interface RunnerReport {
  readonly ready: boolean;
  readonly result?: RunnerMessage;
  /** Set when the file held something that is not a runner message. */
  readonly invalid?: string;
}

export function readRunnerReport(payload: Payload): RunnerReport {
  if (!payload.hasRunner) return { ready: false };
  let ready = false;
  let result: RunnerMessage | undefined;
  for (const line of payload.readResult().split('\n')) {
    if (line.trim() === '') continue;
    try {
      const msg = parseRunnerMessage(line);
      if (msg.t === 'ready') ready = true;
      else result ??= msg;
    } catch (err) {
      return { ready, ...(result ? { result } : {}), invalid: `the runner sent a bad result: ${(err as Error).message}` };
    }
  }
  return { ready, ...(result ? { result } : {}) };
}
