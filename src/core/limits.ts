/**
 * Resource limits: their defaults, their ranges, and the one function that turns a
 * request's `resources` into fully defaulted, checked `Limits`. Every backend enforces the
 * same `Limits`; none re-derives them.
 */
import os from 'node:os';
import { VulcanError } from './errors.js';

/** Fully defaulted limits for one workload. Units are in the names. */
export interface Limits {
  /** CPU share, in cores (0.1 up to the host's cores). Default 1. */
  readonly cpus: number;
  /** Memory cap in MiB, swap included. Default 256 (128 on isolate). */
  readonly memMB: number;
  /** Wall-clock timeout in milliseconds. Default 30 000. */
  readonly timeoutMs: number;
  /** Most processes (threads count too) the sandbox may hold. Default 256. */
  readonly pidsMax: number;
  /** Size cap of each writable scratch filesystem (/tmp, /work) in MiB. Default 64. */
  readonly diskMB: number;
  /** Cap of each captured output stream in bytes. Default 1 MiB. */
  readonly outputBytes: number;
}

export const DEFAULT_LIMITS: Limits = {
  cpus: 1,
  memMB: 256,
  timeoutMs: 30_000,
  pidsMax: 256,
  diskMB: 64,
  outputBytes: 1024 * 1024,
};

/** Hard bounds of each request field. */
export const LIMIT_RANGES = {
  cpus: { min: 0.1, max: () => os.availableParallelism() },
  mem_mb: { min: 16, max: () => Math.floor(os.totalmem() / (1024 * 1024)) },
  timeout_s: { min: 1, max: () => 900 },
} as const;

/** The `resources` object of a request, as it arrives (unchecked). */
export interface ResourcesInput {
  cpus?: unknown;
  mem_mb?: unknown;
  timeout_s?: unknown;
}

function checkNumber(field: keyof typeof LIMIT_RANGES, value: unknown, integer: boolean): number {
  const range = LIMIT_RANGES[field];
  const max = range.max();
  if (typeof value !== 'number' || !Number.isFinite(value) || value < range.min || value > max || (integer && !Number.isInteger(value))) {
    throw new VulcanError(
      'limit_out_of_range',
      `resources.${field} must be ${integer ? 'an integer' : 'a number'} from ${range.min} to ${max}; got ${JSON.stringify(value) ?? String(value)}`,
      { details: { field: `resources.${field}`, min: range.min, max } },
    );
  }
  return value;
}

/**
 * Turns a request's `resources` into `Limits`, applying defaults. Throws `limit_out_of_range`
 * (422) naming the field to change when a value is not a finite number inside its range.
 */
export function resolveLimits(resources: ResourcesInput | undefined, defaults: Limits = DEFAULT_LIMITS): Limits {
  const r = resources ?? {};
  return {
    ...defaults,
    cpus: r.cpus === undefined ? defaults.cpus : checkNumber('cpus', r.cpus, false),
    memMB: r.mem_mb === undefined ? defaults.memMB : checkNumber('mem_mb', r.mem_mb, true),
    timeoutMs: r.timeout_s === undefined ? defaults.timeoutMs : checkNumber('timeout_s', r.timeout_s, false) * 1000,
  };
}
