/**
 * Finds and removes VMs that an earlier server process left behind: every directory under
 * `<dataDir>/microvm/vms` names one VM; its `vm.json` holds the QEMU pid and the VM's
 * name tag, which must appear in that pid's command line before it is killed (pids get
 * reused).
 */
import fs from 'node:fs';
import path from 'node:path';
import type { Logger } from '../../core/context.js';

function cmdlineHas(pid: number, tag: string): boolean {
  try {
    return fs.readFileSync(`/proc/${pid}/cmdline`, 'latin1').split('\0').some((a) => a === tag || a.startsWith(`${tag},`));
  } catch {
    return false;
  }
}

async function waitGone(pid: number, ms: number): Promise<void> {
  const end = Date.now() + ms;
  while (Date.now() < end && fs.existsSync(`/proc/${pid}`)) await new Promise((r) => setTimeout(r, 20));
}

/** Kills leftover VMs under `vmsDir` and removes their directories. Never throws. */
export async function reconcileVms(vmsDir: string, log: Logger): Promise<number> {
  let removed = 0;
  const entries = await fs.promises.readdir(vmsDir).catch(() => [] as string[]);
  for (const name of entries) {
    const dir = path.join(vmsDir, name);
    try {
      const meta = JSON.parse(await fs.promises.readFile(path.join(dir, 'vm.json'), 'utf8').catch(() => '{}')) as { pid?: unknown; tag?: unknown };
      if (typeof meta.pid === 'number' && Number.isInteger(meta.pid) && meta.pid > 1 && typeof meta.tag === 'string' && cmdlineHas(meta.pid, meta.tag)) {
        process.kill(meta.pid, 'SIGKILL');
        await waitGone(meta.pid, 2_000);
        log.warn({ vm: name, pid: meta.pid }, 'microvm: killed a VM left by an earlier server');
      }
      await fs.promises.rm(dir, { recursive: true, force: true });
      removed++;
    } catch (err) {
      log.error({ vm: name, err: String(err) }, 'microvm: could not remove a leftover VM');
    }
  }
  return removed;
}
