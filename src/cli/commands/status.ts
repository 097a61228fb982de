import type { Command } from 'commander';
import { client } from '../main.js';
import { formatOutput, printJson, summaryLine } from '../format.js';

export function registerStatus(program: Command): void {
  program
    .command('status')
    .argument('<id>', 'workload id')
    .description("show a workload's status and result")
    .option('--json', 'print the record as JSON')
    .action(async (id: string, opts: { json?: boolean }) => {
      const rec = await client().get(id);
      if (opts.json) return printJson(rec);
      process.stdout.write(`${summaryLine(rec)}\n`);
      if (rec.status === 'completed') process.stdout.write(`output: ${formatOutput(rec.output)}\n`);
    });
}
