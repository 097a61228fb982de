/**
 * Cleaning up after an OCI runtime that the daemon could not drive. Seen here: dockerd
 * 20.10 with runsc in a host whose root network namespace is the container's own ("cannot
 * run with network enabled in root network namespace"): start fails, and the shim, the
 * runsc gofer and the runsc sandbox stay running, with runsc state left under the daemon's
 * runtime root. Removing the container does not stop them. Everything left carries the
 * container id, so it is found by that id and nothing else is touched.
 */
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import { findRunsc } from '../gvisor/runsc.js';

const execFileP = promisify(execFile);

/** Where dockerd keeps runtime state (runc and runsc use the same root) and containerd's task dirs. */
const RUNTIME_ROOTS = ['/var/run/docker/runtime-runc/moby', '/run/docker/runtime-runc/moby'];
const TASK_DIRS = ['/var/run/docker/containerd/daemon/io.containerd.runtime.v2.task/moby', '/run/containerd/io.containerd.runtime.v2.task/moby'];

/** Host processes whose command line contains `id`. */
export function processesOf(id: string): number[] {
  const out: number[] = [];
  for (const e of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(e) || Number(e) === process.pid) continue;
    try {
      if (fs.readFileSync(`/proc/${e}/cmdline`, 'utf8').includes(id)) out.push(Number(e));
    } catch {
      // gone
    }
  }
  return out;
}

/**
 * Kills every process that names container `id` (shim, gofer, sandbox), deletes runsc state
 * for it and removes its task dir. Only for full 64-hex container ids. Returns what it did.
 */
export async function cleanupLeakedRuntime(id: string): Promise<string[]> {
  if (!/^[a-f0-9]{64}$/.test(id)) return [];
  const did: string[] = [];
  for (const pid of processesOf(id)) {
    try {
      process.kill(pid, 'SIGKILL');
      did.push(`killed ${pid}`);
    } catch {
      // gone
    }
  }
  const runsc = findRunsc();
  for (const root of RUNTIME_ROOTS) {
    let files: string[];
    try {
      files = fs.readdirSync(root).filter((f) => f.includes(id));
    } catch {
      continue;
    }
    if (files.length === 0) continue;
    if (runsc && files.some((f) => f.includes('_sandbox:'))) {
      await execFileP(runsc, ['--root', root, 'delete', '-force', id], { timeout: 10_000 }).catch(() => undefined);
    }
    for (const f of fs.readdirSync(root).filter((n) => n.includes(id))) {
      fs.rmSync(path.join(root, f), { recursive: true, force: true });
      did.push(`removed ${path.join(root, f)}`);
    }
  }
  for (const dir of TASK_DIRS) {
    const d = path.join(dir, id);
    if (!fs.existsSync(d)) continue;
    const mounted = fs.readFileSync('/proc/self/mounts', 'utf8').includes(d);
    if (mounted) await execFileP('umount', ['-l', path.join(d, 'rootfs')]).catch(() => undefined);
    // Never recurse into a tree that is still mounted: it would delete the image's layers.
    if (fs.readFileSync('/proc/self/mounts', 'utf8').includes(d)) continue;
    fs.rmSync(d, { recursive: true, force: true });
    did.push(`removed ${d}`);
  }
  return did;
}
