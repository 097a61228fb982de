import type { Command } from 'commander';
import { client } from '../main.js';
import { exitCodeFor, printJson } from '../format.js';

export function registerLogs(program: Command): void {
  program
    .command('logs')
    .argument('<id>', 'workload id')
    .description("print a workload's stdout and stderr; -f follows a running one to its end")
    .option('-f, --follow', 'follow until the workload ends')
    .option('--json', 'print each event as a JSON line')
    .action(async (id: string, opts: { follow?: boolean; json?: boolean }) => {
      const vulcan = client();
      if (!opts.follow) {
        const rec = await vulcan.get(id);
        if (rec.status !== 'pending' && rec.status !== 'running') {
          if (opts.json) return printJson({ stdout: rec.stdout, stderr: rec.stderr });
          process.stdout.write(rec.stdout);
          process.stderr.write(rec.stderr);
          return;
        }
      }
      for await (const ev of vulcan.logs(id)) {
        if (opts.json) process.stdout.write(`${JSON.stringify(ev)}\n`);
        else if (ev.type === 'stdout') process.stdout.write(ev.data);
        else if (ev.type === 'stderr') process.stderr.write(ev.data);
        else if (ev.type === 'end') process.exitCode = exitCodeFor(ev.record);
      }
    });
}
