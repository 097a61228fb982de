/**
 * `vulcan certify BACKEND --format markdown --output FILE`: the signoff report of one
 * backend on this host (../shared/spec/runtime-conformance.md): host metadata, dependency
 * checks with versions, each sandbox conformance result (run against a real `vulcan serve`
 * started for the purpose, restarted once), known caveats, and a signoff section.
 * Needs what `vulcan serve` needs (root, cgroups). Exits 1 when a check fails.
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { InvalidArgumentError, type Command } from 'commander';
import { runSandboxConformance, type CheckResult } from '../../backends/conformance/sandbox-suite.js';
import { spawnVulcanServe } from '../../server/spawn-serve.js';
import { findInstallDir, loadConfig } from '../../core/config.js';
import { BACKEND_NAMES, type BackendName } from '../../core/types.js';
import { cgroupSupport } from '../../host/cgroups.js';
import { readVersion } from '../../server/serve.js';

interface Dependency {
  readonly name: string;
  readonly ok: boolean;
  readonly version: string;
}

function firstLine(file: string, args: string[]): { ok: boolean; version: string } {
  try {
    const out = execFileSync(file, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], timeout: 10_000 });
    return { ok: true, version: out.trim().split('\n')[0] ?? '' };
  } catch (err) {
    const e = err as NodeJS.ErrnoException & { stderr?: string };
    return { ok: false, version: e.code === 'ENOENT' ? 'not installed' : (e.stderr ?? e.message).trim().split('\n')[0] ?? 'failed' };
  }
}

function exists(name: string, file: string): Dependency {
  return { name, ok: fs.existsSync(file), version: fs.existsSync(file) ? file : `${file} missing` };
}

/** What each backend needs on the host, with versions. */
function dependencies(backend: BackendName, installDir: string): Dependency[] {
  const cg = cgroupSupport();
  const common: Dependency[] = [
    { name: 'node', ok: true, version: process.version },
    { name: 'cgroups', ok: cg.ok, version: cg.ok ? cg.version : cg.reason },
    { name: 'tar', ...firstLine('/usr/bin/tar', ['--version']) },
  ];
  switch (backend) {
    case 'namespace':
      return [
        ...common,
        { name: 'bubblewrap', ...firstLine('/usr/bin/bwrap', ['--version']) },
        exists('vulcan-cgexec', path.join(installDir, 'build', 'vulcan-cgexec')),
        exists('vulcan-sbx-launch', path.join(installDir, 'build', 'vulcan-sbx-launch')),
        exists('vulcan-pty', path.join(installDir, 'build', 'vulcan-pty')),
        exists('sandbox agent', path.join(installDir, 'dist', 'src', 'sandboxes', 'agent', 'agent.js')),
        { name: 'python3 (preview check)', ...firstLine('/usr/bin/python3', ['--version']) },
      ];
    case 'gvisor':
      return [...common, { name: 'runsc', ...firstLine('runsc', ['--version']) }];
    case 'container':
      return [...common, { name: 'docker', ...firstLine('docker', ['version', '--format', '{{.Server.Version}}']) }];
    case 'microvm':
      return [...common, { name: 'qemu', ...firstLine('qemu-system-x86_64', ['--version']) }, { name: '/dev/kvm', ok: fs.existsSync('/dev/kvm'), version: fs.existsSync('/dev/kvm') ? 'present' : 'absent (TCG only)' }];
    case 'isolate':
      return common;
  }
}

const CAVEATS: Record<BackendName, string[]> = {
  namespace: [
    '/work and /tmp are tmpfs of disk_mb each, charged to the sandbox memory cgroup: mem_mb must leave room for the files kept there.',
    "The sandbox runs on the host's read-only /usr: the tools inside are the host's.",
    'No network namespace egress: the sandbox has only its own loopback; preview goes through the in-sandbox agent.',
    'The in-sandbox agent (node) uses ~40-60 MiB of the sandbox memory.',
    'Pause uses the cgroup freezer; a paused sandbox cannot serve exec, files or preview until resumed.',
  ],
  gvisor: ['No sandbox driver yet: sandboxes are not supported on this backend.'],
  container: ['No sandbox driver yet: sandboxes are not supported on this backend.'],
  microvm: ['No sandbox driver yet: sandboxes are not supported on this backend.'],
  isolate: ['V8 isolates are not a process backend: sandboxes are not supported.'],
};

function osName(): string {
  try {
    return /^PRETTY_NAME="?([^"\n]*)"?$/m.exec(fs.readFileSync('/etc/os-release', 'utf8'))?.[1] ?? os.type();
  } catch {
    return os.type();
  }
}

export interface CertifyReport {
  backend: BackendName;
  status: 'pass' | 'fail' | 'unsupported';
  generated_at: string;
  host: Record<string, string | number | boolean>;
  dependencies: Dependency[];
  results: CheckResult[];
  caveats: string[];
}

export function toMarkdown(r: CertifyReport): string {
  const lines = [
    `# Vulcan runtime certification: ${r.backend}`,
    '',
    `Overall status: **${r.status.toUpperCase()}** (generated ${r.generated_at})`,
    '',
    '## Host',
    '',
    '| | |',
    '|---|---|',
    ...Object.entries(r.host).map(([k, v]) => `| ${k} | ${String(v)} |`),
    '',
    '## Dependencies',
    '',
    '| dependency | ok | version |',
    '|---|---|---|',
    ...r.dependencies.map((d) => `| ${d.name} | ${d.ok ? 'yes' : 'NO'} | ${d.version.replace(/\|/g, '\\|')} |`),
    '',
    '## Sandbox conformance',
    '',
    '| check | result | ms | detail |',
    '|---|---|---|---|',
    ...r.results.map((c) => `| ${c.check} | ${c.status === 'pass' ? 'pass' : c.status === 'skip' ? 'skip' : 'FAIL'} | ${c.ms} | ${(c.detail ?? '').replace(/\|/g, '\\|').replace(/\n/g, ' ')} |`),
    '',
    '## Known caveats',
    '',
    ...r.caveats.map((c) => `- ${c}`),
    '',
    '## Signoff',
    '',
    `- Runtime: ${r.backend}`,
    `- Host OS/kernel: ${String(r.host.os)} / ${String(r.host.kernel)}`,
    `- Vulcan version: ${String(r.host.vulcan)}`,
    `- Lifecycle conformance: ${r.results.find((c) => c.check === 'spawn-exec')?.status ?? '-'} / destroy ${r.results.find((c) => c.check === 'destroy')?.status ?? '-'}`,
    `- Exec conformance: ${r.results.find((c) => c.check === 'spawn-exec')?.status ?? '-'}`,
    `- File conformance: ${r.results.find((c) => c.check === 'files')?.status ?? '-'}`,
    `- Streaming conformance: ${r.results.find((c) => c.check === 'streaming-exec')?.status ?? '-'}`,
    `- Live preview: ${r.results.find((c) => c.check === 'live-preview')?.status ?? '-'}`,
    `- Restart reconciliation: ${r.results.find((c) => c.check === 'restart-reconciliation')?.status ?? '-'}`,
    '- Owner/signoff: ____________________',
    '- Date: ____________________',
    '',
  ];
  return lines.join('\n');
}

export function registerCertify(program: Command): void {
  program
    .command('certify')
    .description('run the sandbox conformance suite against one backend on this host and write a signoff report')
    .argument('<backend>', BACKEND_NAMES.join(' | '))
    .option('--format <format>', 'markdown | json', 'markdown')
    .option('--output <file>', 'write the report here (default: stdout)')
    .option('--image <name>', 'the image the sandboxes run on (the preview check needs python3)', 'python')
    .action(async (backend: string, o: { format: string; output?: string; image: string }) => {
      if (!(BACKEND_NAMES as readonly string[]).includes(backend)) throw new InvalidArgumentError(`backend must be one of ${BACKEND_NAMES.join(', ')}`);
      if (o.format !== 'markdown' && o.format !== 'json') throw new InvalidArgumentError('--format is markdown or json');
      const name = backend as BackendName;
      const installDir = findInstallDir();
      // The suite's servers use a fresh data dir each, with this host's image store.
      const imagesDataDir = loadConfig().imagesDataDir;
      const results = await runSandboxConformance({
        backend: name,
        // namespace runs on the host's /usr by default, which has python3 here.
        ...(name === 'namespace' ? {} : { image: o.image }),
        start: async (dataDir) => {
          const { url, stop } = await spawnVulcanServe({ dataDir, env: { VULCAN_IMAGES_DATA_DIR: imagesDataDir } });
          return { url, stop: () => stop() };
        },
        progress: (m) => process.stderr.write(`[certify] ${m}\n`),
      });
      const failed = results.some((c) => c.status === 'fail');
      const passed = results.some((c) => c.status === 'pass' && c.check !== 'health');
      const report: CertifyReport = {
        backend: name,
        status: failed ? 'fail' : passed ? 'pass' : 'unsupported',
        generated_at: new Date().toISOString(),
        host: {
          hostname: os.hostname(),
          os: osName(),
          kernel: os.release(),
          arch: os.arch(),
          cpu: os.cpus()[0]?.model ?? 'unknown',
          cores: os.availableParallelism(),
          memory_gib: Math.round(os.totalmem() / 2 ** 30),
          kvm: fs.existsSync('/dev/kvm'),
          node: process.version,
          vulcan: readVersion(installDir),
        },
        dependencies: dependencies(name, installDir),
        results,
        caveats: CAVEATS[name],
      };
      const text = o.format === 'json' ? `${JSON.stringify(report, null, 2)}\n` : toMarkdown(report);
      if (o.output) {
        fs.writeFileSync(o.output, text);
        process.stderr.write(`[certify] ${report.status.toUpperCase()}: wrote ${o.output}\n`);
      } else process.stdout.write(text);
      process.exitCode = failed ? 1 : 0;
    });
}
