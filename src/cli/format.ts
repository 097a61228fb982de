/**
 * Output helpers for the CLI: people get short readable lines, scripts get `--json`.
 */
import { styleText } from 'node:util';
import type { WorkloadRecord } from '../sdk/index.js';

const color = process.stderr.isTTY && !process.env.NO_COLOR;
export const paint = (style: Parameters<typeof styleText>[0], s: string) => (color ? styleText(style, s) : s);

/** Prints a value as JSON for scripts. */
export function printJson(v: unknown): void {
  process.stdout.write(`${JSON.stringify(v, null, 2)}\n`);
}

/** A workload's output for people: strings raw, anything else as JSON. */
export function formatOutput(v: unknown): string {
  if (typeof v === 'string') return v;
  return JSON.stringify(v, null, 2);
}

export function ms(v: number | null | undefined): string {
  if (v === null || v === undefined) return '-';
  return v >= 1000 ? `${(v / 1000).toFixed(2)} s` : `${Math.round(v)} ms`;
}

/** One summary line: status, backend, time, id. */
export function summaryLine(rec: WorkloadRecord): string {
  const st = rec.status === 'completed' ? paint('green', rec.status) : paint('red', rec.status);
  const parts = [st, `isolation ${rec.isolation_used ?? '-'}`, `${ms(rec.duration_ms)} (start ${ms(rec.timings.start_ms)}, exec ${ms(rec.timings.exec_ms)})`, rec.id];
  let line = parts.join(' · ');
  if (rec.error) line += `\n${paint('red', `${rec.error.code}: ${rec.error.message}`)}`;
  if (rec.stdout_truncated || rec.stderr_truncated) line += `\n${paint('yellow', 'output was truncated at the cap')}`;
  return line;
}

/** The process exit code for a workload's status. */
export function exitCodeFor(rec: WorkloadRecord): number {
  switch (rec.status) {
    case 'completed':
      return 0;
    case 'timeout':
      return 124;
    default:
      return 1;
  }
}

/** A plain text table. */
export function table(rows: readonly (readonly string[])[], header: readonly string[]): string {
  const all = [header, ...rows];
  const widths = header.map((_, i) => Math.max(...all.map((r) => (r[i] ?? '').length)));
  return all.map((r) => r.map((c, i) => c.padEnd(widths[i] ?? 0)).join('  ').trimEnd()).join('\n');
}
