/**
 * Turns a `RunSpec` into the agent's RUN request (files, argv, env, limits), reusing the
 * namespace backend's in-sandbox runners, and turns the agent's report back into a
 * `RunOutcome`. The calling convention is issue 2's: python `main(input)`, node's default
 * export, sh with the input on stdin; the result travels on fd 3, which the code's prints
 * cannot reach.
 */
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import type { RunOutcome, RunSpec } from '../../core/backend.js';
import type { WorkloadError, WorkloadErrorCode } from '../../core/errors.js';
import type { JsonValue } from '../../core/types.js';
import { ExitFlag, type GuestFile, type RunRequest } from './protocol.js';
import type { AgentRunResult } from './session.js';

/** The user the workload runs as inside the guest (not root: it cannot touch the agent). */
export const GUEST_UID = 1000;

const RUNNER_FILES = ['runner.py', 'runner.mjs', 'run-sh.sh', 'unpack.sh'] as const;
type RunnerName = (typeof RUNNER_FILES)[number];

/** The runner scripts' text, read once from the namespace backend's folder. */
export type Runners = Readonly<Record<RunnerName, Buffer>>;

/** Reads the in-sandbox runners (src/backends/namespace/runners/ under the install dir). */
export async function loadRunners(installDir: string): Promise<Runners> {
  const dir = path.join(installDir, 'src', 'backends', 'namespace', 'runners');
  const entries = await Promise.all(RUNNER_FILES.map(async (f) => [f, await fs.promises.readFile(path.join(dir, f))] as const));
  return Object.fromEntries(entries) as Runners;
}

const GUEST_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';

/** ESM when the source uses `import`/`export` syntax; CommonJS otherwise. */
function nodeEntryName(source: string): string {
  return /^\s*(import\s|export\s)/m.test(source) ? 'main.mjs' : 'main.cjs';
}

/** Builds the RUN request for `spec`. */
export function buildRunRequest(spec: RunSpec, runners: Runners): RunRequest {
  const files: GuestFile[] = [{ path: '/vulcan/input.json', mode: 0o644, content: Buffer.from(spec.inputJson) }];
  let argv: string[];
  let stdin = Buffer.alloc(0);
  const code = spec.code;
  const entryFor = (inlineName: string): string => {
    if (!code) return '';
    if (code.kind === 'archive') return path.posix.join('/work', code.entrypoint);
    files.push({ path: `/work/${inlineName}`, mode: 0o644, content: Buffer.from(code.source) });
    return `/work/${inlineName}`;
  };
  switch (spec.runtime) {
    case 'python':
      files.push({ path: '/vulcan/runner.py', mode: 0o644, content: runners['runner.py'] });
      argv = ['python3', '/vulcan/runner.py', entryFor('main.py')];
      break;
    case 'node':
      files.push({ path: '/vulcan/runner.mjs', mode: 0o644, content: runners['runner.mjs'] });
      argv = ['node', '/vulcan/runner.mjs', entryFor(code?.kind === 'inline' ? nodeEntryName(code.source) : 'main.mjs')];
      break;
    case 'sh':
      files.push({ path: '/vulcan/run-sh.sh', mode: 0o644, content: runners['run-sh.sh'] });
      argv = ['/bin/sh', '/vulcan/run-sh.sh', entryFor('main.sh')];
      stdin = Buffer.from(spec.inputJson);
      break;
    case 'oci':
      if (!spec.cmd || spec.cmd.length === 0) throw new Error('an oci workload needs cmd');
      argv = [...spec.cmd];
      break;
    default:
      throw new Error(`the microvm backend does not run ${spec.runtime}`);
  }
  if (code?.kind === 'archive') {
    files.push({ path: '/vulcan/code.tar.gz', mode: 0o644, content: code.tarGz });
    files.push({ path: '/vulcan/unpack.sh', mode: 0o644, content: runners['unpack.sh'] });
    argv = ['/bin/sh', '/vulcan/unpack.sh', ...argv];
  }
  const env = [...Object.entries(spec.env).map(([k, v]) => `${k}=${v}`), `PATH=${GUEST_PATH}`, 'HOME=/work', 'LANG=C.UTF-8'];
  return {
    argv,
    env,
    cwd: '/work',
    files,
    stdin,
    memMB: spec.limits.memMB,
    pidsMax: spec.limits.pidsMax,
    diskMB: spec.limits.diskMB,
    uid: GUEST_UID,
    seed: crypto.randomBytes(64),
  };
}

const RUNNER_ERROR_CODES: ReadonlySet<string> = new Set<WorkloadErrorCode>(['exception', 'memory_limit', 'disk_limit', 'pids_limit', 'output_invalid']);

interface RunnerReport {
  output?: JsonValue;
  hasOutput: boolean;
  error: WorkloadError | null;
}

/** Reads the runner's JSON lines; anything malformed is ignored (the code may not reach fd 3, but be safe). */
function readRunnerReport(text: string): RunnerReport {
  const report: RunnerReport = { hasOutput: false, error: null };
  for (const line of text.split('\n')) {
    if (!line.trim()) continue;
    let msg: unknown;
    try {
      msg = JSON.parse(line);
    } catch {
      continue;
    }
    if (typeof msg !== 'object' || msg === null) continue;
    const m = msg as Record<string, unknown>;
    if (m.t === 'result') {
      report.output = (m.output ?? null) as JsonValue;
      report.hasOutput = true;
    } else if (m.t === 'error') {
      const code = typeof m.code === 'string' && RUNNER_ERROR_CODES.has(m.code) ? (m.code as WorkloadErrorCode) : 'exception';
      report.error = { code, message: typeof m.message === 'string' ? m.message.slice(0, 4096) : 'the code failed' };
    }
  }
  return report;
}

/** Maps the agent's report of a finished run to a `RunOutcome`. */
export function toOutcome(result: AgentRunResult, startMs: number, notes: Record<string, string>): RunOutcome {
  const { exit } = result;
  const report = readRunnerReport(result.resultText);
  const failedExit = exit.exitCode !== 0;
  const base = { exitCode: exit.exitCode, startMs, execMs: exit.execMs, notes };
  const err = (code: WorkloadErrorCode, message: string): RunOutcome => ({ ...base, error: { code, message } });
  if (exit.flags & ExitFlag.OOM) return err('memory_limit', 'the workload went over its memory limit (resources.mem_mb) and was killed');
  if (report.error && report.error.code !== 'exception') return { ...base, error: report.error };
  if (exit.flags & ExitFlag.PIDS && !report.hasOutput) return err('pids_limit', 'the workload hit its process limit');
  if (exit.flags & ExitFlag.DISK_FULL && failedExit) return err('disk_limit', 'the workload filled its writable disk');
  if (report.error) return { ...base, error: report.error };
  if (exit.flags & ExitFlag.RESULT_TRUNCATED) return err('output_invalid', 'the return value is larger than 2 MiB');
  if (exit.exitCode === null) return err('nonzero_exit', `the workload was killed by signal ${exit.signal}`);
  if (failedExit) return err('nonzero_exit', `the workload exited with code ${exit.exitCode}`);
  return { ...base, error: null, ...(report.hasOutput ? { output: report.output ?? null } : {}) };
}

