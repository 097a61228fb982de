/**
 * The sandbox agent as one self-contained, read-only directory, for the backends whose
 * sandboxes run on an image instead of the host's /usr (gvisor, container, microvm). An
 * image may have no Node at all (`minimal` is busybox), so the bundle brings its own: the
 * server's node binary, the shared libraries it links and their loader, the agent script,
 * the static PTY helper and the static spawn helper (which forks the commands instead of
 * the agent).
 *
 *   <dataDir>/agent-bundle/<digest>/
 *     node  lib/ld-linux-x86-64.so.2  lib/libc.so.6 ...  agent.mjs  pty  spawnd
 *
 * A backend mounts it read-only at AGENT_MOUNT and starts `agentArgv()`. Nothing of the
 * host beyond these files is visible. The loader is called directly (`ld.so --library-path
 * …`), so the image's own libc is neither needed nor touched, and the user's commands that
 * the agent starts see no trace of it (no LD_LIBRARY_PATH).
 */
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

/** Where backends mount the bundle inside a sandbox. */
export const AGENT_MOUNT = '/.vulcan-agent';
/** The agent's V8 heap cap: it is charged to the sandbox's memory. */
export const AGENT_HEAP_MB = 48;

export interface AgentBundle {
  /** The bundle's directory on the host (mount it read-only at AGENT_MOUNT). */
  readonly dir: string;
  readonly digest: string;
}

/** The argv that starts the agent inside a sandbox that has the bundle at AGENT_MOUNT. */
export function agentArgv(mount = AGENT_MOUNT): string[] {
  return [`${mount}/lib/${LOADER}`, '--library-path', `${mount}/lib`, `${mount}/node`, `--max-old-space-size=${AGENT_HEAP_MB}`, `${mount}/agent.mjs`];
}

const LOADER = 'ld-linux-x86-64.so.2';

/** The agent script (built by tsc) and the PTY and spawn helpers (static, built by scripts/build-native.sh). */
function sources(installDir: string): { agent: string; pty: string; spawnd: string; node: string } {
  return {
    agent: fileURLToPath(new URL('./agent/agent.js', import.meta.url)),
    pty: path.join(installDir, 'build', 'vulcan-pty'),
    spawnd: path.join(installDir, 'build', 'vulcan-spawnd'),
    node: fs.realpathSync(process.execPath),
  };
}

/** The node binary's shared libraries and loader, as host paths (from the loader's --list). */
function sharedLibraries(node: string): string[] {
  const out = execFileSync('/lib64/' + LOADER, ['--list', node], { encoding: 'utf8' });
  const libs: string[] = [];
  for (const line of out.split('\n')) {
    const m = /=>\s+(\/\S+)/.exec(line) ?? /^\s*(\/\S+)\s+\(/.exec(line);
    if (m?.[1]) libs.push(m[1]);
  }
  if (!libs.some((l) => path.basename(l) === LOADER)) libs.push('/lib64/' + LOADER);
  return libs;
}

/**
 * Makes (once, cached by content) and returns the bundle for this server. Safe to call
 * concurrently: the bundle is built in a temporary directory and renamed into place.
 */
export function ensureAgentBundle(dataDir: string, installDir: string): AgentBundle {
  const src = sources(installDir);
  for (const f of [src.agent, src.pty, src.spawnd]) if (!fs.existsSync(f)) throw new Error(`${f} is missing: run npm run build (setup does)`);
  const nodeStat = fs.statSync(src.node);
  const digest = createHash('sha256')
    .update(`${src.node}\0${nodeStat.size}\0${nodeStat.mtimeMs}\0`)
    .update(fs.readFileSync(src.agent))
    .update(fs.readFileSync(src.pty))
    .update(fs.readFileSync(src.spawnd))
    .digest('hex')
    .slice(0, 16);
  const root = path.join(dataDir, 'agent-bundle');
  const dir = path.join(root, digest);
  if (fs.existsSync(path.join(dir, 'agent.mjs'))) return { dir, digest };
  fs.mkdirSync(root, { recursive: true, mode: 0o755 });
  fs.chmodSync(root, 0o755);
  const tmp = fs.mkdtempSync(path.join(root, '.tmp-'));
  try {
    fs.chmodSync(tmp, 0o755);
    fs.mkdirSync(path.join(tmp, 'lib'), { mode: 0o755 });
    for (const lib of sharedLibraries(src.node)) {
      const dest = path.join(tmp, 'lib', path.basename(lib));
      fs.copyFileSync(lib, dest);
      fs.chmodSync(dest, 0o755);
    }
    fs.copyFileSync(src.node, path.join(tmp, 'node'));
    fs.chmodSync(path.join(tmp, 'node'), 0o755);
    fs.copyFileSync(src.agent, path.join(tmp, 'agent.mjs'));
    fs.chmodSync(path.join(tmp, 'agent.mjs'), 0o644);
    for (const [from, name] of [
      [src.pty, 'pty'],
      [src.spawnd, 'spawnd'],
    ] as const) {
      fs.copyFileSync(from, path.join(tmp, name));
      fs.chmodSync(path.join(tmp, name), 0o755);
    }
    try {
      fs.renameSync(tmp, dir);
    } catch (err) {
      // Another caller won the race: its bundle is the same content.
      if (!fs.existsSync(path.join(dir, 'agent.mjs'))) throw err;
      fs.rmSync(tmp, { recursive: true, force: true });
    }
  } catch (err) {
    fs.rmSync(tmp, { recursive: true, force: true });
    throw err;
  }
  return { dir, digest };
}
