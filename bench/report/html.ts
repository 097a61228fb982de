/**
 * The benchmark's HTML report: one self-contained page (inline CSS and SVG, no scripts, no
 * network) with the latency distribution of each backend, bars of each figure beside its
 * floor (start times, throughput, CPU-bound throughput, memory, max concurrent), then the
 * machine and the full table.
 */
import type { Distribution } from '../measures/common.js';
import type { BenchmarkResult } from '../result.js';
import { summarize } from '../stats.js';
import type { BenchRow } from '../types.js';
import { formatValue } from './markdown.js';

const COLORS: Readonly<Record<string, string>> = { isolate: '#2f7ed8', namespace: '#0d9c6f', gvisor: '#d9822b', container: '#8e44ad', microvm: '#c0392b' };
const FLOOR_COLOR = '#9aa3ad';
const color = (backend: string) => COLORS[backend] ?? '#555';

function esc(s: string): string {
  return s.replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c] ?? c);
}

/** Ticks 1, 2, 5 × 10^k within [lo, hi]. */
function logTicks(lo: number, hi: number): number[] {
  const out: number[] = [];
  for (let e = Math.floor(Math.log10(lo)); e <= Math.ceil(Math.log10(hi)); e++) {
    for (const m of [1, 2, 5]) {
      const v = m * 10 ** e;
      if (v >= lo * 0.999 && v <= hi * 1.001) out.push(v);
    }
  }
  return out;
}

function linTicks(hi: number): number[] {
  const step0 = hi / 5;
  const mag = 10 ** Math.floor(Math.log10(step0 || 1));
  const step = [1, 2, 5, 10].map((m) => m * mag).find((s) => s >= step0) ?? mag * 10;
  const out: number[] = [];
  for (let v = 0; v <= hi * 1.0001; v += step) out.push(v);
  return out;
}

const tickLabel = (v: number) => (v >= 1000 ? `${v / 1000}k` : v >= 1 ? String(Math.round(v * 100) / 100) : v.toPrecision(1));

/** Distributions: one lane per backend, every sample a dot on a log axis, box p25–p75, p50 and p99 marks. */
export function distributionSvg(dists: readonly Distribution[], title: string): string {
  const lanes = dists.filter((d) => d.samples.length > 0);
  if (lanes.length === 0) return '';
  const all = lanes.flatMap((d) => d.samples).filter((x) => x > 0);
  const lo = 10 ** Math.floor(Math.log10(Math.min(...all)));
  const hi = 10 ** Math.ceil(Math.log10(Math.max(...all)));
  const W = 900;
  const left = 170;
  const right = 30;
  const laneH = 46;
  const top = 36;
  const H = top + lanes.length * laneH + 40;
  const x = (v: number) => left + ((Math.log10(Math.max(v, lo)) - Math.log10(lo)) / (Math.log10(hi) - Math.log10(lo))) * (W - left - right);
  const parts: string[] = [`<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 ${W} ${H}" width="${W}" height="${H}" role="img" aria-label="${esc(title)}">`];
  parts.push(`<text x="${left}" y="20" class="t">${esc(title)}</text>`);
  for (const t of logTicks(lo, hi)) {
    parts.push(`<line x1="${x(t)}" y1="${top - 6}" x2="${x(t)}" y2="${H - 34}" class="grid"/>`, `<text x="${x(t)}" y="${H - 18}" class="ax" text-anchor="middle">${tickLabel(t)}</text>`);
  }
  parts.push(`<text x="${(left + W - right) / 2}" y="${H - 2}" class="ax" text-anchor="middle">milliseconds (log scale)</text>`);
  lanes.forEach((d, i) => {
    const cy = top + i * laneH + laneH / 2;
    const sorted = [...d.samples].sort((a, b) => a - b);
    const q = (p: number) => sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(p * sorted.length) - 1))] ?? 0;
    const c = color(d.backend);
    parts.push(`<text x="${left - 10}" y="${cy + 4}" class="lbl" text-anchor="end">${esc(d.backend)} (n=${d.samples.length})</text>`);
    parts.push(`<rect x="${x(q(0.25))}" y="${cy - 12}" width="${Math.max(2, x(q(0.75)) - x(q(0.25)))}" height="24" fill="${c}" fill-opacity="0.18" stroke="${c}"/>`);
    d.samples.forEach((s, j) => {
      // Deterministic jitter, so the same result draws the same picture.
      const jy = ((j * 7919) % 17) - 8;
      parts.push(`<circle cx="${x(s).toFixed(1)}" cy="${(cy + jy).toFixed(1)}" r="2.2" fill="${c}" fill-opacity="0.55"/>`);
    });
    parts.push(`<line x1="${x(q(0.5))}" y1="${cy - 15}" x2="${x(q(0.5))}" y2="${cy + 15}" stroke="#111" stroke-width="2.5"/>`);
    parts.push(`<line x1="${x(q(0.99))}" y1="${cy - 10}" x2="${x(q(0.99))}" y2="${cy + 10}" stroke="#111" stroke-dasharray="3,2"/>`);
    // The label sits right of the p99 mark, or ends at the chart's edge where it would overflow.
    const labelX = x(q(0.99)) + 4;
    const fits = labelX + 190 < W;
    parts.push(`<text x="${fits ? labelX : W - 2}" y="${cy - 14}" class="ax"${fits ? '' : ' text-anchor="end"'}>p50 ${formatValue(q(0.5), 'ms')} · p99 ${formatValue(q(0.99), 'ms')} ms</text>`);
  });
  parts.push('</svg>');
  return parts.join('');
}

interface Bar {
  readonly label: string;
  readonly backend: string;
  readonly value: number;
  readonly floor?: number;
  readonly floorName?: string;
}

/** Horizontal bars, each backend's figure with its floor as a grey bar beneath it. */
export function barsSvg(bars: readonly Bar[], title: string, unit: string, log: boolean): string {
  const shown = bars.filter((b) => Number.isFinite(b.value) && b.value > 0);
  if (shown.length === 0) return '';
  const values = shown.flatMap((b) => (b.floor && b.floor > 0 ? [b.value, b.floor] : [b.value]));
  // Room for the longest label (≈ 6.6 px a character at 12 px), so none is cut at the left edge.
  const left = Math.max(230, Math.ceil(Math.max(...shown.map((b) => b.label.length)) * 6.6) + 16);
  const W = Math.max(900, left + 560);
  const right = 110;
  const top = 36;
  const rowH = shown.some((b) => b.floor) ? 40 : 26;
  const H = top + shown.length * rowH + 40;
  const lo = log ? 10 ** Math.floor(Math.log10(Math.min(...values))) : 0;
  const hi = log ? 10 ** Math.ceil(Math.log10(Math.max(...values))) : Math.max(...values) * 1.05;
  const x = (v: number) => (log ? left + ((Math.log10(Math.max(v, lo)) - Math.log10(lo)) / (Math.log10(hi) - Math.log10(lo))) * (W - left - right) : left + (v / hi) * (W - left - right));
  const parts: string[] = [`<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 ${W} ${H}" width="${W}" height="${H}" role="img" aria-label="${esc(title)}">`];
  parts.push(`<text x="${left}" y="20" class="t">${esc(title)}</text>`);
  for (const t of log ? logTicks(lo, hi) : linTicks(hi)) {
    parts.push(`<line x1="${x(t)}" y1="${top - 6}" x2="${x(t)}" y2="${H - 34}" class="grid"/>`, `<text x="${x(t)}" y="${H - 18}" class="ax" text-anchor="middle">${tickLabel(t)}</text>`);
  }
  parts.push(`<text x="${(left + W - right) / 2}" y="${H - 2}" class="ax" text-anchor="middle">${esc(unit)}${log ? ' (log scale)' : ''}</text>`);
  const x0 = log ? x(lo) : left;
  shown.forEach((b, i) => {
    const y = top + i * rowH;
    parts.push(`<text x="${left - 10}" y="${y + 14}" class="lbl" text-anchor="end">${esc(b.label)}</text>`);
    parts.push(`<rect x="${x0}" y="${y + 2}" width="${Math.max(1, x(b.value) - x0)}" height="16" fill="${color(b.backend)}"><title>${esc(`${b.label}: ${formatValue(b.value, unit)} ${unit}`)}</title></rect>`);
    parts.push(`<text x="${x(b.value) + 5}" y="${y + 14}" class="val">${formatValue(b.value, unit)}</text>`);
    if (b.floor && b.floor > 0) {
      parts.push(`<rect x="${x0}" y="${y + 20}" width="${Math.max(1, x(b.floor) - x0)}" height="10" fill="${FLOOR_COLOR}"><title>${esc(`floor: ${b.floorName ?? ''} ${formatValue(b.floor, unit)} ${unit}`)}</title></rect>`);
      parts.push(`<text x="${x(b.floor) + 5}" y="${y + 29}" class="ax">floor ${formatValue(b.floor, unit)}</text>`);
    }
  });
  parts.push('</svg>');
  return parts.join('');
}

function barsOf(rows: readonly BenchRow[], pick: (r: BenchRow) => boolean, withMeasure: boolean): Bar[] {
  return rows.filter(pick).map((r) => ({
    label: withMeasure ? `${r.backend} · ${r.measure}` : r.backend,
    backend: r.backend,
    value: r.value.p50,
    ...(r.floor ? { floor: r.floor.value.p50, floorName: r.floor.name } : {}),
  }));
}

const CSS = `body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:24px auto;max-width:1000px;color:#1d232a;padding:0 16px}
h1{font-size:24px;margin:0 0 4px}h2{font-size:18px;margin:28px 0 8px;border-bottom:1px solid #e3e7eb;padding-bottom:4px}
.sub{color:#5b6570}.chart{margin:8px 0 18px;overflow-x:auto}
svg .t{font-size:14px;font-weight:600;fill:#1d232a}svg .ax{font-size:11px;fill:#5b6570}svg .lbl{font-size:12px;fill:#1d232a}svg .val{font-size:12px;font-weight:600;fill:#1d232a}svg .grid{stroke:#e3e7eb}
table{border-collapse:collapse;width:100%;font-size:12.5px}th,td{border:1px solid #e3e7eb;padding:4px 6px;text-align:left;vertical-align:top}th{background:#f5f7f9}
td.n{text-align:right;white-space:nowrap}.no{color:#b03a2e;font-weight:600}.yes{color:#0d7a55}.note{color:#5b6570;font-size:11.5px}
.legend span{display:inline-block;margin-right:14px}.legend i{display:inline-block;width:12px;height:12px;margin-right:4px;vertical-align:-1px}`;

/** The whole page. */
export function htmlReport(result: BenchmarkResult): string {
  const m = result.machine;
  const rows = result.rows;
  const backends = [...new Set(rows.map((r) => r.backend))];
  const charts: string[] = [];
  const hello = result.distributions.filter((d) => d.measure === 'hello_roundtrip');
  charts.push(distributionSvg(hello, 'Hello-world round trip through the API, one at a time: every sample'));
  const loaded = result.distributions.filter((d) => d.measure === 'throughput_latency');
  charts.push(distributionSvg(loaded, 'Request latency under load (the throughput run)'));
  charts.push(barsSvg(barsOf(rows, (r) => r.unit === 'ms', true), 'Start and round-trip times, p50, each beside its raw floor (grey)', 'ms', true));
  charts.push(barsSvg(barsOf(rows, (r) => r.unit === 'req/s', false), 'Hello-world throughput through the API (grey: bare Node HTTP server)', 'req/s', true));
  charts.push(barsSvg(barsOf(rows, (r) => r.unit === 'tasks/s', false), 'CPU-bound throughput: ≈ 1 s task, N at a time (grey: the same task bare)', 'tasks/s', false));
  charts.push(barsSvg(barsOf(rows, (r) => r.unit === 'MiB', false), 'Memory per workload (grey: the same code bare on the host)', 'MiB', false));
  charts.push(barsSvg(barsOf(rows, (r) => r.unit === 'workloads', false), `Max concurrent within the bounds (memory budget ${result.mem_budget_mb} MiB)`, 'workloads', false));
  const table = rows
    .map(
      (r) =>
        `<tr><td>${esc(r.backend)}</td><td>${esc(r.measure)}</td><td class="n">${formatValue(r.value.p50, r.unit)} ${esc(r.unit)}</td><td class="n">${formatValue(r.value.p99, r.unit)} ${esc(r.unit)}</td><td class="n">${r.value.n}</td><td>${esc(r.floor?.name ?? '-')}</td><td class="n">${r.floor ? `${formatValue(r.floor.value.p50, r.unit)} ${esc(r.unit)}` : '-'}</td><td class="n">${r.ratio === undefined ? '-' : `${r.ratio.toFixed(2)}×`}</td><td>${esc(r.target ?? '-')}</td><td class="${r.met === false ? 'no' : 'yes'}">${r.met === undefined ? '-' : r.met ? 'yes' : 'NO'}</td></tr>${r.note ? `<tr><td></td><td colspan="9" class="note">${esc(r.note)}</td></tr>` : ''}`,
    )
    .join('\n');
  const hello50 = hello.map((d) => `${d.backend} ${formatValue(summarize(d.samples).p50, 'ms')} ms`).join(' · ');
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1"><link rel="icon" href="data:,">
<title>Vulcan benchmark ${esc(result.finished_at)}</title><style>${CSS}</style></head>
<body>
<h1>Vulcan benchmark</h1>
<p class="sub">${esc(result.mode)} run, ${result.samples} samples per latency measure, finished ${esc(result.finished_at)} in ${result.duration_s.toFixed(0)} s · ${esc(m.cpu_model)}, ${m.cores} cores, ${m.memory_gib} GiB, kernel ${esc(m.kernel)}, KVM ${m.kvm ? 'yes' : 'no'}</p>
<p class="legend">${backends.map((b) => `<span><i style="background:${color(b)}"></i>${esc(b)}</span>`).join('')}<span><i style="background:${FLOOR_COLOR}"></i>raw floor</span></p>
${hello50 ? `<p>Hello world p50: ${esc(hello50)}</p>` : ''}
<h2>Charts</h2>
${charts.filter(Boolean).map((c) => `<div class="chart">${c}</div>`).join('\n')}
<h2>All figures</h2>
<table><thead><tr><th>backend</th><th>measure</th><th>p50</th><th>p99</th><th>n</th><th>floor</th><th>floor p50</th><th>ratio</th><th>target</th><th>met</th></tr></thead><tbody>
${table}
</tbody></table>
${result.skipped.length ? `<h2>Skipped</h2><ul>${result.skipped.map((s) => `<li>${esc(s.backend)}: ${esc(s.reason)}</li>`).join('')}</ul>` : ''}
${result.errors.length ? `<h2>Failed measures</h2><ul>${result.errors.map((e) => `<li>${esc(e.backend)} ${esc(e.measure)}: ${esc(e.message)}</li>`).join('')}</ul>` : ''}
<h2>Machine</h2>
<table><tbody>
<tr><th>CPU</th><td>${esc(m.cpu_model)}</td></tr><tr><th>cores</th><td>${m.cores}</td></tr><tr><th>memory</th><td>${m.memory_gib} GiB</td></tr>
<tr><th>OS / kernel</th><td>${esc(m.os)} / ${esc(m.kernel)}</td></tr><tr><th>KVM</th><td>${m.kvm ? 'yes' : 'no'}</td></tr><tr><th>cgroups</th><td>${esc(m.cgroup)}</td></tr><tr><th>load (1 min) at start</th><td>${m.load_avg_1m}</td></tr>
${Object.entries(m.versions).map(([k, v]) => `<tr><th>${esc(k)}</th><td>${esc(v)}</td></tr>`).join('\n')}
</tbody></table>
<p class="note">Reproduce: <code>vulcan benchmark${result.mode === 'full' ? '' : ` --${result.mode}`} --out DIR</code> (or <code>npm run bench --</code> with the same flags).</p>
</body></html>
`;
}
