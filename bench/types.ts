/**
 * The shape of one benchmark row: a backend's figure beside its raw floor, measured in the
 * same run. Every backend's rows file (bench/rows/<backend>.ts) returns these.
 */
import type { Stats } from './stats.js';

export interface BenchRow {
  /** Backend measured (`namespace`, `isolate`, …). */
  readonly backend: string;
  /** What was measured: `cold_start`, `warm_start`, `throughput`, `exec_roundtrip`, … */
  readonly measure: string;
  /** Unit of `value` and `floor.value`. */
  readonly unit: 'ms' | 'req/s' | 'MiB' | 'tasks/s' | 'workloads';
  readonly value: Stats;
  /** The raw floor this figure is compared with (bare bwrap, bare runsc, …). */
  readonly floor?: { readonly name: string; readonly value: Stats };
  /** value.p50 / floor.p50. */
  readonly ratio?: number;
  /** The target from the issue, for people, e.g. `p50 ≤ 1.5× floor`. */
  readonly target?: string;
  /** Whether the target was met in this run (absent when there is no target). */
  readonly met?: boolean;
  /** Notes: what exactly ran. */
  readonly note?: string;
}

/** What every rows file gets: where the server is and how hard to try. */
export interface BenchContext {
  /** Base URL of a running Vulcan server, e.g. http://127.0.0.1:7423. */
  readonly url: string;
  /** Samples per measure; smaller with --quick. */
  readonly samples: number;
  /** True for a short smoke run (CI). */
  readonly quick: boolean;
  /** Progress for people (stderr). */
  progress(msg: string): void;
}
