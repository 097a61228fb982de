import type { Command } from 'commander';
import { Sandbox } from '../../../sdk/index.js';
import { printJson } from '../../format.js';
import { keyValue, num, serverUrl } from './shared.js';

export function registerSandboxExec(sandbox: Command): void {
  sandbox
    .command('exec')
    .description('run an argv in a sandbox, streaming its output; exits with its exit code')
    .argument('<id>', 'sandbox id')
    .argument('<cmd...>', 'the argv (put -- before it when it has options)')
    .option('--env <KEY=VALUE>', 'environment variable (repeatable)', keyValue('--env'), {})
    .option('--cwd <dir>', 'working directory inside (default /work)')
    .option('--timeout <s>', 'seconds before it is killed (default 300)', num('--timeout'))
    .option('--json', 'wait, then print the result as JSON')
    .action(async (id: string, cmd: string[], o: { env: Record<string, string>; cwd?: string; timeout?: number; json?: boolean }) => {
      const sbx = await Sandbox.connect(id, { url: serverUrl() });
      const opts = { ...(Object.keys(o.env).length ? { env: o.env } : {}), ...(o.cwd ? { cwd: o.cwd } : {}), ...(o.timeout !== undefined ? { timeoutS: o.timeout } : {}) };
      if (o.json) {
        const r = await sbx.exec(cmd, opts);
        printJson(r);
        process.exitCode = r.exit_code ?? 1;
        return;
      }
      for await (const ev of sbx.execStream(cmd, opts)) {
        if (ev.type === 'stdout') process.stdout.write(ev.data);
        else if (ev.type === 'stderr') process.stderr.write(ev.data);
        else if (ev.type === 'exit') {
          if (ev.timed_out) process.stderr.write('vulcan: the command timed out\n');
          process.exitCode = ev.exit_code ?? (ev.timed_out ? 124 : 1);
        }
      }
    });
}
