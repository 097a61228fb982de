/**
 * The result of one benchmark run, as `--json` prints it, `--out` stores it
 * (results.json), `GET /v1/stats/benchmark` returns it and the reports render it.
 */
import type { Distribution, MeasureError } from './measures/common.js';
import type { MachineInfo } from './measures/machine.js';
import type { BenchRow } from './types.js';

/** Version of this JSON shape; bumped when a field changes meaning. */
export const RESULT_VERSION = 1;

export interface BenchmarkResult {
  readonly version: typeof RESULT_VERSION;
  readonly mode: 'tiny' | 'quick' | 'full';
  readonly quick: boolean;
  readonly samples: number;
  readonly mem_budget_mb: number;
  readonly machine: MachineInfo;
  /** Backends measured, in order. */
  readonly backends: readonly string[];
  readonly rows: readonly BenchRow[];
  /** Raw latency samples per backend, for the distribution charts. */
  readonly distributions: readonly Distribution[];
  /** Backends not measured, and why. */
  readonly skipped: readonly { readonly backend: string; readonly reason: string }[];
  /** Measures that failed on a backend that was measured. */
  readonly errors: readonly MeasureError[];
  readonly started_at: string;
  readonly finished_at: string;
  readonly duration_s: number;
}

/** The columns every row has in JSON (floor, ratio, target and met may be absent). */
export const ROW_COLUMNS = ['backend', 'measure', 'unit', 'value', 'floor', 'ratio', 'target', 'met', 'note'] as const;
