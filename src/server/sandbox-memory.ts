/**
 * Reads the memory of Vulcan's cgroups (`<memory hierarchy>/vulcan/<name>`), cgroup v1 or v2,
 * and attributes each group to a backend: a group whose name holds a running workload's id
 * belongs to that workload's backend; isolate host groups (`isolate-host-…`) to isolate;
 * gVisor groups (`gv-…`) to gvisor. The source of `vulcan_sandbox_memory_bytes`.
 */
import fs from 'node:fs';
import path from 'node:path';

/** The `vulcan` group of each memory hierarchy mounted here, with the file that holds usage. */
function memoryParents(): { dir: string; file: string }[] {
  const out: { dir: string; file: string }[] = [];
  let text: string;
  try {
    text = fs.readFileSync('/proc/self/mountinfo', 'utf8');
  } catch {
    return out;
  }
  for (const line of text.split('\n')) {
    const [left, right] = line.split(' - ');
    const mountPoint = left?.split(' ')[4];
    const [fsType, , superOpts] = (right ?? '').split(' ');
    if (!mountPoint) continue;
    if (fsType === 'cgroup' && (superOpts ?? '').split(',').includes('memory')) out.push({ dir: path.join(mountPoint, 'vulcan'), file: 'memory.usage_in_bytes' });
    if (fsType === 'cgroup2') out.push({ dir: path.join(mountPoint, 'vulcan'), file: 'memory.current' });
  }
  return out;
}

let parents: { dir: string; file: string }[] | undefined;

/** Bytes per backend now. `running` lists the workloads running, with their backends. */
export function cgroupMemoryByBackend(running: readonly { id: string; backend: string }[]): Map<string, number> {
  parents ??= memoryParents();
  const totals = new Map<string, number>();
  for (const { dir, file } of parents) {
    let names: string[];
    try {
      names = fs.readdirSync(dir, { withFileTypes: true }).filter((e) => e.isDirectory()).map((e) => e.name);
    } catch {
      continue;
    }
    for (const name of names) {
      const backend = running.find((w) => name.includes(w.id))?.backend ?? (name.startsWith('isolate-host-') ? 'isolate' : name.startsWith('gv-') ? 'gvisor' : undefined);
      if (!backend) continue;
      let bytes: number;
      try {
        bytes = Number(fs.readFileSync(path.join(dir, name, file), 'utf8').trim());
      } catch {
        continue;
      }
      if (Number.isFinite(bytes) && bytes > 0) totals.set(backend, (totals.get(backend) ?? 0) + bytes);
    }
  }
  return totals;
}
