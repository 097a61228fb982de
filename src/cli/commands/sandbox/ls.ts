import type { Command } from 'commander';
import { Sandbox } from '../../../sdk/index.js';
import { printJson, table } from '../../format.js';
import { keyValue, serverUrl } from './shared.js';

export function registerSandboxLs(sandbox: Command): void {
  sandbox
    .command('ls')
    .description('list sandboxes, newest first')
    .option('--state <state>', 'starting | running | paused | destroyed | lost')
    .option('--all', 'include destroyed and lost ones')
    .option('--meta <KEY=VALUE>', 'only those with this metadata (repeatable)', keyValue('--meta'), {})
    .option('--json', 'print JSON')
    .action(async (o: { state?: string; all?: boolean; meta: Record<string, string>; json?: boolean }) => {
      let items = await Sandbox.list({ url: serverUrl(), ...(o.state ? { state: o.state } : {}), metadata: o.meta });
      if (!o.all && !o.state) items = items.filter((s) => s.state !== 'destroyed' && s.state !== 'lost');
      if (o.json) return printJson(items);
      const rows = items.map((s) => [s.id, s.state, s.isolation_used, s.created_at, s.expires_at ?? (s.ttl_remaining_s !== null ? `paused, ${s.ttl_remaining_s}s left` : '-'), Object.entries(s.metadata).map(([k, v]) => `${k}=${v}`).join(',')]);
      process.stdout.write(`${table(rows, ['ID', 'STATE', 'ISOLATION', 'CREATED', 'EXPIRES', 'METADATA'])}\n`);
    });
}
