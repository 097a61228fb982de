import type { Command } from 'commander';
import { Sandbox } from '../../../sdk/index.js';
import { printJson } from '../../format.js';
import { keyValue, num, serverUrl } from './shared.js';

interface CreateOptions {
  isolation?: string;
  cpus?: number;
  mem?: number;
  disk?: number;
  ttl?: number;
  idleTimeout?: number;
  env: Record<string, string>;
  meta: Record<string, string>;
  json?: boolean;
}

export function registerSandboxCreate(sandbox: Command): void {
  sandbox
    .command('create')
    .description('create a sandbox and print its id')
    .option('--isolation <name>', 'auto (default) or namespace')
    .option('--cpus <n>', 'CPU quota in cores', num('--cpus'))
    .option('--mem <mb>', 'memory cap in MiB (namespace: files in /work and /tmp count too)', num('--mem'))
    .option('--disk <mb>', 'size cap of /work and of /tmp in MiB', num('--disk'))
    .option('--ttl <s>', 'seconds until it is destroyed (default 3600)', num('--ttl'))
    .option('--idle-timeout <s>', 'seconds without activity before it is stopped; 0 never (default 900)', num('--idle-timeout'))
    .option('--env <KEY=VALUE>', 'environment of every exec (repeatable)', keyValue('--env'), {})
    .option('--meta <KEY=VALUE>', 'metadata to filter by (repeatable)', keyValue('--meta'), {})
    .option('--json', 'print the whole record as JSON')
    .action(async (o: CreateOptions) => {
      const s = await Sandbox.create({
        url: serverUrl(),
        ...(o.isolation ? { isolation: o.isolation } : {}),
        ...(o.cpus !== undefined ? { cpus: o.cpus } : {}),
        ...(o.mem !== undefined ? { memoryMB: o.mem } : {}),
        ...(o.disk !== undefined ? { diskMB: o.disk } : {}),
        ...(o.ttl !== undefined ? { ttlS: o.ttl } : {}),
        ...(o.idleTimeout !== undefined ? { idleTimeoutS: o.idleTimeout } : {}),
        ...(Object.keys(o.env).length ? { env: o.env } : {}),
        ...(Object.keys(o.meta).length ? { metadata: o.meta } : {}),
      });
      if (o.json) printJson(s.info);
      else process.stdout.write(`${s.id}\n`);
    });
}
