import type { Command } from 'commander';
import { loadConfig } from '../../core/config.js';
import { startServer } from '../../server/serve.js';

export function registerServe(program: Command): void {
  program
    .command('serve')
    .description('start a Vulcan node (API, store, backends)')
    .option('--host <host>', 'address to listen on (env VULCAN_HOST)', undefined)
    .option('--port <port>', 'port to listen on (env VULCAN_PORT)', (v) => Number(v))
    .option('--data-dir <dir>', 'state directory (env VULCAN_DATA_DIR)', undefined)
    .action(async (opts: { host?: string; port?: number; dataDir?: string }) => {
      const config = loadConfig({
        ...(opts.host ? { host: opts.host } : {}),
        ...(opts.port !== undefined ? { port: opts.port } : {}),
        ...(opts.dataDir ? { dataDir: opts.dataDir } : {}),
      });
      const server = await startServer(config);
      server.app.log.info({ url: server.url, dataDir: config.dataDir }, 'vulcan is serving');
      const stop = (sig: string) => {
        server.app.log.info({ signal: sig }, 'stopping');
        server.close().then(
          () => process.exit(0),
          () => process.exit(1),
        );
      };
      process.once('SIGINT', () => stop('SIGINT'));
      process.once('SIGTERM', () => stop('SIGTERM'));
    });
}
