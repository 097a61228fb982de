/**
 * The lean counters, gauges and histograms (src/server/lean-metrics.ts) as prom-client's
 * Registry exposes them: the exact text a scrape gets for known updates. promtool checks the
 * whole scrape of a running server in prometheus.test.ts.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import client from 'prom-client';
import { LeanCounter, LeanGauge, LeanHistogram } from '../../src/server/lean-metrics.js';

function registryWith(...metrics: object[]): client.Registry {
  const registry = new client.Registry();
  for (const m of metrics) registry.registerMetric(m as client.Metric);
  return registry;
}

describe('lean metrics', () => {
  it('a histogram exposes cumulative buckets, +Inf, sum and count per label set', async () => {
    const h = new LeanHistogram('t_seconds', 'Test.', ['route'], [0.5, 0.1, 1]);
    for (const v of [0.05, 0.1, 0.3, 0.7, 5]) h.with('/a').observe(v);
    h.with('/b"x').observe(0.2);
    const text = await registryWith(h).metrics();
    assert.equal(
      text,
      [
        '# HELP t_seconds Test.',
        '# TYPE t_seconds histogram',
        't_seconds_bucket{route="/a",le="0.1"} 2',
        't_seconds_bucket{route="/a",le="0.5"} 3',
        't_seconds_bucket{route="/a",le="1"} 4',
        't_seconds_bucket{route="/a",le="+Inf"} 5',
        't_seconds_sum{route="/a"} 6.15',
        't_seconds_count{route="/a"} 5',
        't_seconds_bucket{route="/b\\"x",le="0.1"} 0',
        't_seconds_bucket{route="/b\\"x",le="0.5"} 1',
        't_seconds_bucket{route="/b\\"x",le="1"} 1',
        't_seconds_bucket{route="/b\\"x",le="+Inf"} 1',
        't_seconds_sum{route="/b\\"x"} 0.2',
        't_seconds_count{route="/b\\"x"} 1',
        '',
      ].join('\n'),
    );
  });

  it('counters and gauges keep one child per label values', async () => {
    const c = new LeanCounter('t_total', 'Count.', ['a', 'b']);
    const g = new LeanGauge('t_running', 'Now.', ['a']);
    c.with('x', 'y').inc();
    c.with('x', 'y').inc(2);
    c.with('x', 'z').inc();
    g.with('x').inc();
    g.with('x').inc();
    g.with('x').dec();
    assert.equal(c.with('x', 'y'), c.with('x', 'y'));
    const text = await registryWith(c, g).metrics();
    assert.match(text, /^t_total\{a="x",b="y"\} 3$/m);
    assert.match(text, /^t_total\{a="x",b="z"\} 1$/m);
    assert.match(text, /^# TYPE t_running gauge$/m);
    assert.match(text, /^t_running\{a="x"\} 1$/m);
    c.reset();
    assert.doesNotMatch(await registryWith(c).metrics(), /^t_total\{/m);
  });
});
