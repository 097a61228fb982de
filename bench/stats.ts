/**
 * Sample statistics for the benchmark: medians and tail latencies from raw samples.
 */

/** A measured distribution: p50, p99, mean and the sample count. */
export interface Stats {
  readonly p50: number;
  readonly p99: number;
  readonly mean: number;
  readonly n: number;
}

/** The q-quantile (0..1) of sorted samples, nearest-rank. */
function quantile(sorted: readonly number[], q: number): number {
  if (sorted.length === 0) return Number.NaN;
  const idx = Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1));
  return sorted[idx] ?? Number.NaN;
}

/** Summarises samples. */
export function summarize(samples: readonly number[]): Stats {
  const sorted = [...samples].sort((a, b) => a - b);
  const mean = sorted.reduce((s, x) => s + x, 0) / (sorted.length || 1);
  return { p50: quantile(sorted, 0.5), p99: quantile(sorted, 0.99), mean, n: sorted.length };
}

/** Runs `fn` `n` times one after another and returns the milliseconds each took. */
export async function timeSerial(n: number, fn: (i: number) => Promise<unknown>): Promise<number[]> {
  const out: number[] = [];
  for (let i = 0; i < n; i++) {
    const t0 = performance.now();
    await fn(i);
    out.push(performance.now() - t0);
  }
  return out;
}
