import fs from 'node:fs';
import { pipeline } from 'node:stream/promises';
import { InvalidArgumentError, type Command } from 'commander';
import { Sandbox } from '../../../sdk/index.js';
import { serverUrl } from './shared.js';

/** `ID:/path` → { id, path }; anything else is a local path (`-` is stdin or stdout). */
function parse(arg: string): { id: string; path: string } | null {
  const m = /^([0-9A-Za-z]{10,64}):(\/.*)$/.exec(arg);
  return m?.[1] && m[2] ? { id: m[1], path: m[2] } : null;
}

export function registerSandboxCp(sandbox: Command): void {
  sandbox
    .command('cp')
    .description('copy a file into or out of a sandbox (streamed): vulcan sandbox cp ./a ID:/work/a, or ID:/work/a ./a')
    .argument('<src>')
    .argument('<dst>')
    .option('--mode <octal>', 'mode of an uploaded file, e.g. 755')
    .action(async (src: string, dst: string, o: { mode?: string }) => {
      const from = parse(src);
      const to = parse(dst);
      if ((from === null) === (to === null)) throw new InvalidArgumentError('exactly one of SRC and DST must be ID:/absolute/path');
      if (to) {
        const sbx = await Sandbox.connect(to.id, { url: serverUrl() });
        const input = src === '-' ? process.stdin : fs.createReadStream(src);
        const mode = o.mode !== undefined ? parseInt(o.mode, 8) : src === '-' ? undefined : fs.statSync(src).mode & 0o777;
        const r = await sbx.files.write(to.path, input, mode === undefined ? {} : { mode });
        process.stderr.write(`${r.size} bytes → ${to.id}:${r.path}\n`);
      } else if (from) {
        const sbx = await Sandbox.connect(from.id, { url: serverUrl() });
        const body = await sbx.files.readStream(from.path);
        await pipeline(body, dst === '-' ? process.stdout : fs.createWriteStream(dst));
      }
    });
}
