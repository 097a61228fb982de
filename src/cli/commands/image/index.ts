/**
 * `vulcan image build|import|ls|inspect|rm`: the node's image store, through the API.
 */
import fs from 'node:fs';
import { Readable } from 'node:stream';
import type { Command } from 'commander';
import type { ImageJobAccepted, ImageSummary, VulcanClient } from '../../../sdk/index.js';
import { client } from '../../main.js';
import { paint, printJson, table } from '../../format.js';

const mib = (bytes: number) => `${(bytes / 2 ** 20).toFixed(bytes < 10 * 2 ** 20 ? 1 : 0)} MiB`;

/** Follows a build or import to its end, printing progress; exits non-zero when it failed. */
async function follow(vulcan: VulcanClient, job: ImageJobAccepted, json: boolean | undefined): Promise<void> {
  for await (const ev of vulcan.imageJob(job.job_id)) {
    if (ev.type === 'progress') process.stderr.write(`${paint('dim', ev.line)}\n`);
    else if (ev.state === 'done' && ev.image) {
      if (json) printJson(ev.image);
      else process.stdout.write(`${ev.image.name} ${ev.image.digest.slice(0, 19)} ${mib(ev.image.size_bytes)}\n`);
    } else {
      process.stderr.write(`${paint('red', `error: ${ev.error?.code ?? 'failed'}`)}: ${ev.error?.message ?? ''}\n`);
      process.exitCode = 1;
    }
  }
}

export function registerImage(program: Command): void {
  const image = program.command('image').description("manage the node's images (root filesystems for gvisor, container, microvm)");

  image
    .command('build')
    .argument('<name>', 'image name')
    .description('build an image from Debian packages (minbase), with progress')
    .option('--packages <list>', 'comma-separated Debian packages, e.g. python3,nodejs')
    .option('--busybox', 'a busybox image (like minimal) instead of Debian')
    .option('--suite <suite>', 'Debian suite (default bookworm)')
    .option('--json', 'print the image as JSON')
    .action(async (name: string, opts: { packages?: string; busybox?: boolean; suite?: string; json?: boolean }) => {
      const vulcan = client();
      const job = await vulcan.buildImage({
        name,
        ...(opts.packages ? { packages: opts.packages.split(',').filter(Boolean) } : {}),
        ...(opts.busybox ? { busybox: true } : {}),
        ...(opts.suite ? { suite: opts.suite } : {}),
      });
      await follow(vulcan, job, opts.json);
    });

  image
    .command('import')
    .argument('<file>', 'a `docker save` or OCI layout tarball')
    .description('import an image tarball (layers applied in order, whiteouts honoured)')
    .option('--name <name>', 'store it under this name (default: the name in the archive)')
    .option('--json', 'print the image as JSON')
    .action(async (file: string, opts: { name?: string; json?: boolean }) => {
      const vulcan = client();
      const body = Readable.toWeb(fs.createReadStream(file)) as ReadableStream<Uint8Array>;
      const job = await vulcan.importImage(body, opts.name);
      await follow(vulcan, job, opts.json);
    });

  image
    .command('ls')
    .description('list images')
    .option('--json', 'print JSON')
    .action(async (opts: { json?: boolean }) => {
      const list: ImageSummary[] = await client().images();
      if (opts.json) return printJson(list);
      process.stdout.write(`${table(list.map((i) => [i.name, i.digest.slice(0, 19), mib(i.size_bytes), i.created_at]), ['NAME', 'DIGEST', 'SIZE', 'CREATED'])}\n`);
    });

  image
    .command('inspect')
    .argument('<name>', 'image name')
    .description('show one image as JSON')
    .action(async (name: string) => printJson(await client().image(name)));

  image
    .command('rm')
    .argument('<name>', 'image name')
    .description('remove an image')
    .action(async (name: string) => {
      await client().removeImage(name);
      process.stdout.write(`removed ${name}\n`);
    });
}
