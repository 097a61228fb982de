import type { Command } from 'commander';
import { client } from '../main.js';
import { ms, printJson, table } from '../format.js';

export function registerLs(program: Command): void {
  program
    .command('ls')
    .description('list recent workloads, newest first')
    .option('--limit <n>', 'how many', (v) => Number(v), 20)
    .option('--status <status>', 'only this status')
    .option('--cursor <id>', 'continue after this id')
    .option('--json', 'print JSON')
    .action(async (opts: { limit: number; status?: string; cursor?: string; json?: boolean }) => {
      const page = await client().list({ limit: opts.limit, ...(opts.status ? { status: opts.status } : {}), ...(opts.cursor ? { cursor: opts.cursor } : {}) });
      if (opts.json) return printJson(page);
      const rows = page.items.map((r) => [r.id, r.status, r.runtime, r.isolation_used ?? '-', ms(r.duration_ms), r.created_at]);
      process.stdout.write(`${table(rows, ['ID', 'STATUS', 'RUNTIME', 'ISOLATION', 'DURATION', 'CREATED'])}\n`);
      if (page.next_cursor) process.stdout.write(`more: vulcan ls --cursor ${page.next_cursor}\n`);
    });
}
