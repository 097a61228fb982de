import type { Command } from 'commander';
import { client } from '../main.js';
import { paint, printJson, table } from '../format.js';

export function registerBackends(program: Command): void {
  program
    .command('backends')
    .description('list the backends of the node: available or why not, runtimes')
    .option('--json', 'print JSON')
    .action(async (opts: { json?: boolean }) => {
      const list = await client().backends();
      if (opts.json) return printJson(list);
      const rows = list.map((b) => [b.name, b.available ? paint('green', 'yes') : paint('red', 'no'), b.runtimes.join(',') || '-', b.available ? Object.entries(b.info ?? {}).map(([k, v]) => `${k}=${v}`).join(' ') : (b.reason ?? '')]);
      process.stdout.write(`${table(rows, ['BACKEND', 'AVAILABLE', 'RUNTIMES', 'NOTES'])}\n`);
    });
}
