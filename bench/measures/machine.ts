/**
 * The machine a benchmark ran on: CPU, cores, memory, kernel, KVM, and the version of every
 * backend tool, so that a result can be compared with another machine's.
 */
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

/** The machine description stored with each result. */
export interface MachineInfo {
  readonly cpu_model: string;
  readonly cores: number;
  readonly memory_gib: number;
  readonly kernel: string;
  readonly os: string;
  readonly kvm: boolean;
  readonly cgroup: 'v1' | 'v2' | 'hybrid' | 'unknown';
  readonly load_avg_1m: number;
  /** Tool → its version line, or `not installed`. */
  readonly versions: Readonly<Record<string, string>>;
}

const TOOLS: readonly { readonly name: string; readonly argv: readonly string[] }[] = [
  { name: 'bwrap', argv: ['bwrap', '--version'] },
  { name: 'runsc', argv: ['runsc', '--version'] },
  { name: 'dockerd', argv: ['dockerd', '--version'] },
  { name: 'runc', argv: ['runc', '--version'] },
  { name: 'qemu', argv: ['qemu-system-x86_64', '--version'] },
  { name: 'python3', argv: ['/usr/bin/python3', '--version'] },
];

function firstLine(argv: readonly string[]): Promise<string> {
  const [cmd, ...args] = argv;
  return new Promise((resolve) => {
    if (!cmd) return resolve('not installed');
    execFile(cmd, args, { timeout: 10_000 }, (err, stdout, stderr) => {
      const line = `${stdout}${stderr}`.split('\n').find((l) => l.trim() !== '')?.trim();
      if (err && !line) return resolve('not installed');
      resolve(line ?? 'unknown');
    });
  });
}

function packageVersion(name: string): string {
  const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
  try {
    return (JSON.parse(fs.readFileSync(path.join(root, 'node_modules', name, 'package.json'), 'utf8')) as { version: string }).version;
  } catch {
    return 'not installed';
  }
}

function osName(): string {
  try {
    const m = /^PRETTY_NAME="?([^"\n]*)"?$/m.exec(fs.readFileSync('/etc/os-release', 'utf8'));
    return m?.[1] ?? os.type();
  } catch {
    return os.type();
  }
}

function cgroupVersion(): MachineInfo['cgroup'] {
  try {
    const mounts = fs.readFileSync('/proc/self/mounts', 'utf8');
    const v2 = / cgroup2 /.test(mounts);
    const v1 = / cgroup /.test(mounts);
    if (v1 && v2) return 'hybrid';
    if (v2) return 'v2';
    if (v1) return 'v1';
  } catch {
    // not Linux
  }
  return 'unknown';
}

/** Describes this machine; runs each tool's `--version` once. */
export async function describeMachine(): Promise<MachineInfo> {
  const versions: Record<string, string> = { node: process.version, 'isolated-vm': packageVersion('isolated-vm') };
  const lines = await Promise.all(TOOLS.map((t) => firstLine(t.argv)));
  TOOLS.forEach((t, i) => (versions[t.name] = lines[i] ?? 'unknown'));
  return {
    cpu_model: os.cpus()[0]?.model.trim() ?? 'unknown',
    cores: os.availableParallelism(),
    memory_gib: Math.round((os.totalmem() / 2 ** 30) * 10) / 10,
    kernel: os.release(),
    os: osName(),
    kvm: fs.existsSync('/dev/kvm'),
    cgroup: cgroupVersion(),
    load_avg_1m: Math.round((os.loadavg()[0] ?? 0) * 100) / 100,
    versions,
  };
}
