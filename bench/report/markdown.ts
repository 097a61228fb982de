/**
 * The benchmark's markdown report: the machine, then one table row per figure beside its
 * floor, then what was skipped and what failed.
 */
import type { BenchmarkResult } from '../result.js';
import type { BenchRow } from '../types.js';

/** A number in a unit, with the precision people read it at. */
export function formatValue(n: number, unit: string): string {
  if (!Number.isFinite(n)) return '-';
  if (unit === 'workloads') return n.toFixed(0);
  if (unit === 'req/s' || unit === 'tasks/s') return n >= 100 ? n.toFixed(0) : n.toFixed(2);
  return n >= 100 ? n.toFixed(0) : n.toFixed(1);
}

/** The table of rows: p50, p99 and n beside the floor's, the ratio and the target. */
export function markdownTable(rows: readonly BenchRow[]): string {
  const lines = ['| backend | measure | p50 | p99 | n | floor | floor p50 | floor p99 | ratio | target | met |', '|---|---|---|---|---|---|---|---|---|---|---|'];
  const f = (n: number, unit: string) => `${formatValue(n, unit)} ${unit}`;
  for (const r of rows) {
    lines.push(
      `| ${r.backend} | ${r.measure} | ${f(r.value.p50, r.unit)} | ${f(r.value.p99, r.unit)} | ${r.value.n} | ${r.floor?.name ?? '-'} | ${r.floor ? f(r.floor.value.p50, r.unit) : '-'} | ${r.floor ? f(r.floor.value.p99, r.unit) : '-'} | ${r.ratio === undefined ? '-' : `${r.ratio.toFixed(2)}×`} | ${r.target ?? '-'} | ${r.met === undefined ? '-' : r.met ? 'yes' : 'NO'} |`,
    );
  }
  return lines.join('\n');
}

/** The whole report: machine, table, skips, failures. */
export function markdownReport(result: BenchmarkResult): string {
  const m = result.machine;
  const out: string[] = [];
  out.push(`Vulcan benchmark (${result.mode}, ${result.samples} samples per latency measure), ${result.finished_at}, ${result.duration_s.toFixed(0)} s`);
  out.push('');
  out.push(`Machine: ${m.cpu_model}, ${m.cores} cores, ${m.memory_gib} GiB, ${m.os}, kernel ${m.kernel}, KVM ${m.kvm ? 'yes' : 'no'}, cgroup ${m.cgroup}, load ${m.load_avg_1m} at start`);
  out.push(`Versions: ${Object.entries(m.versions).map(([k, v]) => `${k}: ${v}`).join('; ')}`);
  out.push('');
  out.push(markdownTable(result.rows));
  if (result.skipped.length) {
    out.push('');
    for (const s of result.skipped) out.push(`- skipped ${s.backend}: ${s.reason}`);
  }
  if (result.errors.length) {
    out.push('');
    for (const e of result.errors) out.push(`- failed ${e.backend} ${e.measure}: ${e.message}`);
  }
  return `${out.join('\n')}\n`;
}
