/**
 * Server configuration: defaults ← environment ← flags, validated once into a readonly
 * `Config` that is passed down. Nothing else reads `process.env` for settings.
 */
import os from 'node:os';
import path from 'node:path';
import { DEFAULT_LIMITS, type Limits } from './limits.js';
import { sha256 } from './hash.js';

export interface Config {
  /** Address to listen on. Env `VULCAN_HOST`, flag `--host`. Default 127.0.0.1. */
  readonly host: string;
  /** Port to listen on. Env `VULCAN_PORT`, flag `--port`. Default 7423. */
  readonly port: number;
  /** Where the SQLite file, images and scratch space live. Env `VULCAN_DATA_DIR`, flag `--data-dir`. Default `/var/lib/vulcan`. */
  readonly dataDir: string;
  /**
   * The data dir whose `images/` holds this node's image store. Env `VULCAN_IMAGES_DATA_DIR`.
   * Default `dataDir`. Lets a test or benchmark server share the images setup built.
   */
  readonly imagesDataDir: string;
  /** This node's name in records. Env `VULCAN_NODE_NAME`. Default the hostname. */
  readonly nodeName: string;
  /** Defaults for limits a request leaves out. */
  readonly defaults: Limits;
  /** Most workloads running at once on this node; more wait as `pending`. Env `VULCAN_MAX_CONCURRENT`. Default 4 × cores. */
  readonly maxConcurrent: number;
  /**
   * microvm backend: ready VMs per shape (`VULCAN_MICROVM_POOL_SIZE`, default 1, 0 = off),
   * snapshot restore (`VULCAN_MICROVM_SNAPSHOT`, default 1), accelerator
   * (`VULCAN_MICROVM_ACCEL`: auto | kvm | tcg, default auto).
   */
  readonly microvm: { readonly poolSize: number; readonly snapshot: boolean; readonly accel: 'auto' | 'kvm' | 'tcg' };
  /**
   * isolate backend: the nice value of its host processes (`VULCAN_ISOLATE_HOST_NICE`, 0–19,
   * default 10). Above 0 they also run under SCHED_BATCH, so the tenant code they run never
   * preempts the server's event loop when it hands them a job; 0 runs them like the server.
   */
  readonly isolate: { readonly hostNice: number };
  /** Log level (pino). Env `VULCAN_LOG_LEVEL`. Default `info`. */
  readonly logLevel: string;
  /** Directory of the project's built files (runners, native helpers). Not user-set. */
  readonly installDir: string;
}

/** Options from flags; each overrides its environment variable. */
export interface ConfigOverrides {
  host?: string;
  port?: number;
  dataDir?: string;
  nodeName?: string;
  maxConcurrent?: number;
  logLevel?: string;
}

/**
 * A short tag of a data dir, for naming what a node leaves on the host (cgroups, container
 * labels): a node's start-up clean-up removes only what carries its own tag, never what
 * another node on the same host (a second server, a test, the benchmark) is running.
 */
export function dataDirTag(dataDir: string): string {
  return sha256(path.resolve(dataDir)).slice(0, 8);
}

/** The project's root: two levels above this file, in `src/core` or `dist/src/core`. */
export function findInstallDir(): string {
  const here = path.dirname(new URL(import.meta.url).pathname);
  // dist/src/core → project root; src/core → project root.
  const up = here.includes(`${path.sep}dist${path.sep}`) ? '../../..' : '../..';
  return path.resolve(here, up);
}

function intFromEnv(name: string, env: NodeJS.ProcessEnv): number | undefined {
  const raw = env[name];
  if (raw === undefined || raw === '') return undefined;
  const n = Number(raw);
  if (!Number.isInteger(n) || n <= 0) throw new Error(`${name} must be a positive integer; got ${JSON.stringify(raw)}`);
  return n;
}

function countFromEnv(name: string, env: NodeJS.ProcessEnv): number | undefined {
  return rangeFromEnv(name, env, 0, Infinity);
}

function rangeFromEnv(name: string, env: NodeJS.ProcessEnv, min: number, max: number): number | undefined {
  const raw = env[name];
  if (raw === undefined || raw === '') return undefined;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < min || n > max) {
    throw new Error(`${name} must be a whole number ${max === Infinity ? `(${min} or more)` : `from ${min} to ${max}`}; got ${JSON.stringify(raw)}`);
  }
  return n;
}

function oneOf<T extends string>(name: string, env: NodeJS.ProcessEnv, values: readonly T[]): T | undefined {
  const raw = env[name];
  if (raw === undefined || raw === '') return undefined;
  if (!(values as readonly string[]).includes(raw)) throw new Error(`${name} must be one of ${values.join(', ')}; got ${JSON.stringify(raw)}`);
  return raw as T;
}

/** Builds the validated config. Throws with the variable or flag to fix. */
export function loadConfig(overrides: ConfigOverrides = {}, env: NodeJS.ProcessEnv = process.env): Config {
  const port = overrides.port ?? intFromEnv('VULCAN_PORT', env) ?? 7423;
  if (!Number.isInteger(port) || port < 0 || port > 65535) throw new Error(`--port (VULCAN_PORT) must be 0..65535; got ${port}`);
  const maxConcurrent = overrides.maxConcurrent ?? intFromEnv('VULCAN_MAX_CONCURRENT', env) ?? 4 * os.availableParallelism();
  const dataDir = path.resolve(overrides.dataDir ?? env.VULCAN_DATA_DIR ?? '/var/lib/vulcan');
  return Object.freeze({
    host: overrides.host ?? env.VULCAN_HOST ?? '127.0.0.1',
    port,
    dataDir,
    imagesDataDir: path.resolve(env.VULCAN_IMAGES_DATA_DIR || dataDir),
    nodeName: overrides.nodeName ?? env.VULCAN_NODE_NAME ?? os.hostname(),
    defaults: DEFAULT_LIMITS,
    maxConcurrent,
    logLevel: overrides.logLevel ?? env.VULCAN_LOG_LEVEL ?? 'info',
    microvm: {
      poolSize: countFromEnv('VULCAN_MICROVM_POOL_SIZE', env) ?? 1,
      snapshot: env.VULCAN_MICROVM_SNAPSHOT !== '0',
      accel: oneOf('VULCAN_MICROVM_ACCEL', env, ['auto', 'kvm', 'tcg'] as const) ?? 'auto',
    },
    isolate: { hostNice: rangeFromEnv('VULCAN_ISOLATE_HOST_NICE', env, 0, 19) ?? 10 },
    installDir: findInstallDir(),
  });
}
