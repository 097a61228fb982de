/**
 * `vulcan benchmark`: the comparison table of every available backend beside its raw floor,
 * on this machine. The same code as `npm run bench` (bench/main.ts).
 */
import type { Command } from 'commander';

export function registerBenchmark(program: Command): void {
  program
    .command('benchmark')
    .description('measure every available backend (start times, memory, concurrency, throughput) beside its raw floor; starts its own server unless --url')
    .option('--backends <list>', 'comma-separated backends to measure (default: all available)')
    .option('--quick', 'a short run (under 5 minutes on 2 cores)')
    .option('--tiny', 'a smoke run for CI (seconds per backend; numbers mean little)')
    .option('--samples <n>', 'samples per latency measure (default 40, 8 with --quick, 2 with --tiny)')
    .option('--mem-budget-mb <MiB>', 'memory budget for max concurrent and throughput clients (default a quarter of RAM, at most 4096)')
    .option('--json', 'print the result as JSON')
    .option('--out <dir>', 'also write results.json, results.md and report.html (with charts) here')
    .option('--url <url>', 'measure this running server instead of starting one (memory per workload needs a server the benchmark starts)')
    .action(async (opts: { backends?: string; quick?: boolean; tiny?: boolean; samples?: string; memBudgetMb?: string; json?: boolean; out?: string; url?: string }) => {
      // Loaded here, so the other commands do not pay for the benchmark's modules.
      const { benchmarkCommand, positive } = await import('../../../bench/main.js');
      try {
        const samples = positive('--samples', opts.samples);
        const memBudgetMB = positive('--mem-budget-mb', opts.memBudgetMb);
        process.exitCode = await benchmarkCommand({
          ...(opts.backends ? { backends: opts.backends.split(',').map((s) => s.trim()).filter(Boolean) } : {}),
          quick: opts.quick ?? false,
          tiny: opts.tiny ?? false,
          json: opts.json ?? false,
          ...(opts.out ? { out: opts.out } : {}),
          ...(opts.url ? { url: opts.url } : {}),
          ...(samples ? { samples: Math.round(samples) } : {}),
          ...(memBudgetMB ? { memBudgetMB } : {}),
        });
      } catch (err) {
        process.stderr.write(`error: ${(err as Error).message}\n`);
        process.exitCode = 2;
      }
    });
}
