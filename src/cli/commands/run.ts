import fs from 'node:fs';
import { InvalidArgumentError, type Command } from 'commander';
import type { WorkloadRequest } from '../../sdk/index.js';
import { client } from '../main.js';
import { exitCodeFor, formatOutput, printJson, summaryLine } from '../format.js';

interface RunOptions {
  runtime: string;
  code?: string;
  file?: string;
  archive?: string;
  entrypoint?: string;
  input?: string;
  isolation?: string;
  async?: boolean;
  cpus?: number;
  mem?: number;
  timeout?: number;
  env: string[];
  json?: boolean;
}

const num = (flag: string) => (v: string) => {
  const n = Number(v);
  if (!Number.isFinite(n)) throw new InvalidArgumentError(`${flag} takes a number`);
  return n;
};

export function registerRun(program: Command): void {
  program
    .command('run')
    .description('run code and print its output, the isolation used and the time taken')
    .requiredOption('--runtime <runtime>', 'node | python | sh | js | ts | wasm')
    .option('--code <source>', 'inline source')
    .option('--file <path>', 'read the source from a file')
    .option('--archive <path>', 'a .tar.gz of code; use with --entrypoint')
    .option('--entrypoint <path>', 'the file in --archive to run')
    .option('--input <json>', 'input as JSON (or @file.json)')
    .option('--isolation <name>', 'auto (default), namespace, isolate, gvisor, container, microvm')
    .option('--async', 'start it and print its id')
    .option('--cpus <n>', 'CPU quota in cores', num('--cpus'))
    .option('--mem <mb>', 'memory cap in MiB', num('--mem'))
    .option('--timeout <s>', 'timeout in seconds', num('--timeout'))
    .option('--env <KEY=VALUE>', 'environment variable (repeatable)', (v: string, acc: string[]) => [...acc, v], [] as string[])
    .option('--json', 'print the whole record as JSON')
    .action(async (opts: RunOptions) => {
      const sources = [opts.code, opts.file, opts.archive].filter((s) => s !== undefined);
      if (sources.length !== 1) throw new InvalidArgumentError('give exactly one of --code, --file or --archive');
      let input: unknown = null;
      if (opts.input !== undefined) {
        const text = opts.input.startsWith('@') ? fs.readFileSync(opts.input.slice(1), 'utf8') : opts.input;
        try {
          input = JSON.parse(text);
        } catch (err) {
          throw new InvalidArgumentError(`--input is not JSON: ${(err as Error).message}`);
        }
      }
      const env: Record<string, string> = {};
      for (const kv of opts.env) {
        const i = kv.indexOf('=');
        if (i <= 0) throw new InvalidArgumentError(`--env takes KEY=VALUE; got ${kv}`);
        env[kv.slice(0, i)] = kv.slice(i + 1);
      }
      const resources: NonNullable<WorkloadRequest['resources']> = {
        ...(opts.cpus !== undefined ? { cpus: opts.cpus } : {}),
        ...(opts.mem !== undefined ? { mem_mb: opts.mem } : {}),
        ...(opts.timeout !== undefined ? { timeout_s: opts.timeout } : {}),
      };
      const req = {
        runtime: opts.runtime,
        ...(opts.isolation ? { isolation: opts.isolation } : {}),
        ...(opts.code !== undefined ? { code: opts.code } : {}),
        ...(opts.file !== undefined ? { code: fs.readFileSync(opts.file, 'utf8') } : {}),
        ...(opts.archive !== undefined ? { code_archive: fs.readFileSync(opts.archive).toString('base64'), entrypoint: opts.entrypoint } : {}),
        input,
        ...(Object.keys(env).length ? { env } : {}),
        ...(Object.keys(resources).length ? { resources } : {}),
      } as WorkloadRequest;
      const vulcan = client();
      if (opts.async) {
        const acc = await vulcan.runAsync(req);
        if (opts.json) printJson(acc);
        else process.stdout.write(`${acc.id}\n`);
        return;
      }
      const rec = await vulcan.run(req);
      if (opts.json) {
        printJson(rec);
      } else {
        if (rec.stdout) process.stderr.write(rec.stdout.endsWith('\n') ? rec.stdout : `${rec.stdout}\n`);
        if (rec.stderr) process.stderr.write(rec.stderr.endsWith('\n') ? rec.stderr : `${rec.stderr}\n`);
        if (rec.status === 'completed') process.stdout.write(`${formatOutput(rec.output)}\n`);
        process.stderr.write(`${summaryLine(rec)}\n`);
      }
      process.exitCode = exitCodeFor(rec);
    });
}
