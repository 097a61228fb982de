import type { Command } from 'commander';
import { Sandbox } from '../../../sdk/index.js';
import { num, serverUrl } from './shared.js';

export function registerSandboxLifecycle(sandbox: Command): void {
  sandbox
    .command('rm')
    .description('destroy sandboxes')
    .argument('<ids...>')
    .action(async (ids: string[]) => {
      for (const id of ids) {
        await (await Sandbox.connect(id, { url: serverUrl() })).destroy();
        process.stdout.write(`${id}\n`);
      }
    });
  sandbox
    .command('pause')
    .description('freeze a sandbox (memory and processes kept; its TTL clock stops)')
    .argument('<id>')
    .action(async (id: string) => {
      const r = await (await Sandbox.connect(id, { url: serverUrl() })).pause();
      process.stdout.write(`${r.id} ${r.state}\n`);
    });
  sandbox
    .command('resume')
    .description('thaw a paused sandbox')
    .argument('<id>')
    .action(async (id: string) => {
      const r = await (await Sandbox.connect(id, { url: serverUrl() })).resume();
      process.stdout.write(`${r.id} ${r.state}\n`);
    });
  sandbox
    .command('timeout')
    .description('set the TTL to SECONDS from now')
    .argument('<id>')
    .argument('<seconds>', 'seconds', num('seconds'))
    .action(async (id: string, s: number) => {
      const r = await (await Sandbox.connect(id, { url: serverUrl() })).setTimeout(s);
      process.stdout.write(`${r.id} expires ${r.expires_at ?? `${String(r.ttl_remaining_s)}s after resume`}\n`);
    });
}
