/**
 * The `vulcan` command. Client commands talk to `VULCAN_URL` (default
 * http://127.0.0.1:7423) through the SDK; `serve` starts a node.
 */
import { Command } from 'commander';
import { VulcanApiError, VulcanClient } from '../sdk/index.js';
import { registerBackends } from './commands/backends.js';
import { registerImage } from './commands/image/index.js';
import { registerKill } from './commands/kill.js';
import { registerLogs } from './commands/logs.js';
import { registerLs } from './commands/ls.js';
import { registerRun } from './commands/run.js';
import { registerServe } from './commands/serve.js';
import { registerStatus } from './commands/status.js';
import { paint } from './format.js';

/** The client every command uses, from VULCAN_URL. */
export function client(): VulcanClient {
  return new VulcanClient({ url: process.env.VULCAN_URL || undefined });
}

const program = new Command('vulcan')
  .description('Run untrusted code on your own hardware, with the isolation you choose.')
  .showHelpAfterError()
  .configureHelp({ sortSubcommands: false });

registerServe(program);
registerRun(program);
registerStatus(program);
registerLogs(program);
registerLs(program);
registerKill(program);
registerBackends(program);
registerImage(program);
(await import('./commands/benchmark.js')).registerBenchmark(program);
(await import('./commands/sandbox/index.js')).registerSandbox(program);
(await import('./commands/certify.js')).registerCertify(program);

try {
  await program.parseAsync(process.argv);
} catch (err) {
  if (err instanceof VulcanApiError) {
    process.stderr.write(`${paint('red', `error: ${err.code}`)}: ${err.message}\n`);
    process.exit(err.status === 0 ? 69 : 2);
  }
  throw err;
}
