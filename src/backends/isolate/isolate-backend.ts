/**
 * The isolate backend: JavaScript, TypeScript and WebAssembly functions in V8 isolates
 * (isolated-vm), run by supervised isolate-host processes that are themselves inside
 * bubblewrap and a memory-capped cgroup. See docs/backends/isolate.md.
 */
import { listCgroups, reapStaleCgroups } from '../../host/cgroups.js';
import fs from 'node:fs';
import os from 'node:os';
import type { Acceptance, Availability, Backend, BackendCapabilities, RunAbort, RunIO, RunOutcome, RunSpec } from '../../core/backend.js';
import type { BackendContext } from '../../core/context.js';
import type { WorkloadError } from '../../core/errors.js';
import type { JsonValue, Runtime } from '../../core/types.js';
import { BWRAP_PATH, cgexecPathFor } from '../../host/bwrap.js';
import { cgroupSupport } from '../../host/cgroups.js';
import type { BackendFactory } from '../registry.js';
import { stageHostFiles } from './host-files.js';
import { abortCode, HostPool, type HostPoolOptions } from './host-pool.js';
import type { HostJob } from './protocol.js';
import { CodePreparer, isNodeBuiltin } from './source.js';
import { sha256 } from '../../core/hash.js';

const RUNTIMES: readonly Runtime[] = ['js', 'ts', 'wasm', 'node'];
const FILENAMES: Partial<Record<Runtime, string>> = { js: 'workload.js', ts: 'workload.ts', node: 'workload.js', wasm: 'workload.wasm' };

/** Knobs of the backend, derived from the host unless a test overrides them. */
export interface IsolateBackendOptions {
  /** Host processes side by side. Default: min(2, cores). */
  readonly hosts?: number;
  /** Memory cap of each host process (its cgroup), in MiB. Default: a quarter of RAM, 512–4096. */
  readonly hostMemMB?: number;
}

/**
 * The tag on the command line of every host process a backend with this data directory
 * starts (`--vulcan-isolate-host=<tag>`), so operators and tests can find them.
 */
export function hostTag(dataDir: string): string {
  return `${process.pid}-${sha256(dataDir).slice(0, 12)}`;
}

/** Runs workloads in V8 isolates inside supervised, sandboxed host processes. */
export class IsolateBackend implements Backend {
  readonly name = 'isolate' as const;
  readonly isolation = 'V8 isolate (isolated-vm) in a host process inside bubblewrap and a memory-capped cgroup';
  readonly runtimes = RUNTIMES;
  readonly capabilities: BackendCapabilities = { sandboxes: false, pause: false, images: false, warmStart: true, network: false };

  private readonly preparer = new CodePreparer();
  private readonly hosts: number;
  private readonly hostMemMB: number;
  private pool: HostPool | null = null;
  private poolStarting: Promise<HostPool> | null = null;
  private closed = false;

  constructor(
    private readonly ctx: BackendContext,
    options: IsolateBackendOptions = {},
  ) {
    this.hosts = options.hosts ?? Math.max(1, Math.min(2, os.availableParallelism()));
    this.hostMemMB = options.hostMemMB ?? Math.min(4096, Math.max(512, Math.floor(os.totalmem() / (4 * 1024 * 1024))));
  }

  /** The largest `mem_mb` this backend takes: half a host, so one workload cannot fill it. */
  get maxMemMB(): number {
    return Math.floor(this.hostMemMB / 2);
  }

  async probe(): Promise<Availability> {
    if (!fs.existsSync(BWRAP_PATH)) return { available: false, reason: `bubblewrap is not installed (${BWRAP_PATH} missing): apt-get install bubblewrap` };
    const cgexec = cgexecPathFor(this.ctx.config.installDir);
    if (!fs.existsSync(cgexec)) return { available: false, reason: `${cgexec} is missing: run scripts/build-native.sh (setup does)` };
    const cg = cgroupSupport();
    if (!cg.ok) return { available: false, reason: cg.reason };
    try {
      await this.ensurePool();
    } catch (error) {
      return { available: false, reason: `the isolate host did not start: ${error instanceof Error ? error.message : String(error)}` };
    }
    return { available: true, info: { hosts: String(this.hosts), host_mem_mb: String(this.hostMemMB), cgroup: cg.version } };
  }

  accepts(spec: RunSpec): Acceptance {
    if (!RUNTIMES.includes(spec.runtime)) {
      return { ok: false, reason: `runtime "${spec.runtime}" needs a process; isolates run js, ts, wasm, and node code that imports no Node built-ins` };
    }
    if (spec.code?.kind !== 'inline') return { ok: false, reason: 'isolates run inline code only; a code_archive needs a process backend' };
    if (spec.limits.memMB > this.maxMemMB) {
      return { ok: false, reason: `mem_mb ${spec.limits.memMB} is over the ${this.maxMemMB} MiB an isolate may use here; a process backend takes it` };
    }
    if (spec.runtime !== 'node') return { ok: true, reason: `${spec.runtime} runs in a V8 isolate` };
    const analysis = this.preparer.analyze(spec.code.source);
    if ('error' in analysis) return { ok: false, reason: `node code does not parse (${analysis.error}); a process backend reports it` };
    const builtins = analysis.imports.filter(isNodeBuiltin);
    if (builtins.length > 0) return { ok: false, reason: `node code imports Node built-ins (${builtins.join(', ')}): needs a process backend` };
    if (analysis.imports.length > 0) return { ok: false, reason: `node code imports modules (${analysis.imports.join(', ')}), which isolates do not have` };
    if (analysis.computedLoads) return { ok: false, reason: 'node code loads modules by computed names: needs a process backend' };
    if (analysis.nodeGlobals.length > 0) return { ok: false, reason: `node code uses Node globals (${analysis.nodeGlobals.join(', ')}): needs a process backend` };
    return { ok: true, reason: 'node code imports no Node built-ins (parsed): runs in a V8 isolate' };
  }

  async run(spec: RunSpec, io: RunIO, abort: RunAbort): Promise<RunOutcome> {
    const t0 = performance.now();
    const fail = (error: WorkloadError, stack?: string): RunOutcome => {
      if (stack !== undefined) io.stderr(Buffer.from(stack.endsWith('\n') ? stack : `${stack}\n`));
      return { exitCode: null, error, startMs: performance.now() - t0, execMs: 0 };
    };
    if (spec.code?.kind !== 'inline') return fail({ code: 'backend_error', message: 'isolates run inline code only; send code, not code_archive, or use isolation "namespace"' });
    if (!RUNTIMES.includes(spec.runtime)) return fail({ code: 'backend_error', message: `isolates do not run runtime "${spec.runtime}"` });
    const prepared = this.preparer.prepare(spec.runtime, spec.code.source);
    if (!prepared.ok) return fail({ code: 'exception', message: prepared.message }, prepared.message);
    if (abort.aborted) return fail({ code: abortCode(abort), message: `workload ${abortCode(abort)} before it started` });

    const job: HostJob = {
      format: prepared.format,
      ...(prepared.source === undefined ? {} : { source: prepared.source }),
      ...(prepared.wasm === undefined ? {} : { wasm: prepared.wasm }),
      codeHash: prepared.codeHash,
      inputJson: spec.inputJson,
      memMB: Math.min(spec.limits.memMB, this.maxMemMB),
      timeoutMs: spec.limits.timeoutMs,
      outputBytes: spec.limits.outputBytes,
      filename: FILENAMES[spec.runtime] ?? 'workload.js',
    };
    const pool = await this.ensurePool();
    const result = await pool.run(job, io, abort);
    const elapsed = performance.now() - t0;
    const startMs = Math.max(0, elapsed - result.execMs);
    const notes = {
      isolate: result.hardened === true ? (result.reused ? 'hardened context, reset after an earlier run' : 'hardened context, first run') : result.reused ? 'reused (same code, fresh context)' : 'fresh',
      call: result.ok && result.sync === true ? 'synchronous, on the host thread' : 'through isolated-vm\'s thread pool',
    };
    if (abort.aborted) {
      const code = abortCode(abort);
      return { exitCode: null, error: { code, message: code === 'timeout' ? `timed out after ${spec.limits.timeoutMs} ms` : 'killed' }, startMs, execMs: result.execMs, notes };
    }
    if (!result.ok) {
      if (result.stack !== undefined) io.stderr(Buffer.from(result.stack.endsWith('\n') ? result.stack : `${result.stack}\n`));
      return { exitCode: null, error: { code: result.code, message: result.message }, startMs, execMs: result.execMs, notes };
    }
    let output: JsonValue | undefined;
    if (result.outputJson !== undefined) {
      try {
        output = JSON.parse(result.outputJson) as JsonValue;
      } catch {
        return { exitCode: null, error: { code: 'output_invalid', message: 'the return value is not valid JSON' }, startMs, execMs: result.execMs, notes };
      }
    }
    return { exitCode: null, ...(output === undefined ? {} : { output }), error: null, startMs, execMs: result.execMs, notes };
  }

  /**
   * Removes the cgroups of isolate hosts whose server is gone (`isolate-host-<server pid>-…`):
   * a server killed outright leaves its hosts' groups behind. Live servers' groups stay.
   */
  async reconcile(): Promise<void> {
    const dead = listCgroups().filter((name) => {
      const pid = Number(/^isolate-host-(\d+)-/.exec(name)?.[1]);
      if (!pid || pid === process.pid) return false;
      try {
        process.kill(pid, 0);
        return false;
      } catch (err) {
        return (err as NodeJS.ErrnoException).code === 'ESRCH';
      }
    });
    for (const name of dead) await reapStaleCgroups(name);
    if (dead.length > 0) this.ctx.log.warn({ cgroups: dead }, 'removed isolate host cgroups left by an earlier server');
  }

  async close(): Promise<void> {
    this.closed = true;
    const pool = this.pool ?? (await this.poolStarting?.catch(() => null)) ?? null;
    this.pool = null;
    await pool?.close();
  }

  private ensurePool(): Promise<HostPool> {
    if (this.closed) return Promise.reject(new Error('the isolate backend is closed'));
    if (this.pool !== null) return Promise.resolve(this.pool);
    this.poolStarting ??= (async () => {
      const { config } = this.ctx;
      const hostDir = stageHostFiles(config.installDir, config.dataDir);
      const options: HostPoolOptions = {
        hosts: this.hosts,
        installDir: config.installDir,
        hostDir,
        tag: hostTag(config.dataDir),
        memMB: this.hostMemMB,
        cpus: os.availableParallelism(),
        pidsMax: 512,
        nice: config.isolate.hostNice,
      };
      const pool = new HostPool(options, this.ctx.log);
      try {
        await pool.start();
      } catch (error) {
        await pool.close();
        throw error;
      }
      this.pool = pool;
      return pool;
    })().finally(() => {
      this.poolStarting = null;
    });
    return this.poolStarting;
  }
}

/** The registry's entry point. */
export const createBackend: BackendFactory = (ctx) => new IsolateBackend(ctx);
