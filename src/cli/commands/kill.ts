import type { Command } from 'commander';
import { client } from '../main.js';
import { printJson, summaryLine } from '../format.js';

export function registerKill(program: Command): void {
  program
    .command('kill')
    .argument('<id>', 'workload id')
    .description('kill a running workload')
    .option('--json', 'print the final record as JSON')
    .action(async (id: string, opts: { json?: boolean }) => {
      const rec = await client().kill(id);
      if (opts.json) printJson(rec);
      else process.stdout.write(`${summaryLine(rec)}\n`);
    });
}
