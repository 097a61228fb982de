import type { ImageInfo } from '../../../images/index.js';
import { imageJson, mib, openStore, printer, progressPrinter, type ImageCommandOptions } from './shared.js';

/** `vulcan image import FILE.tar [--name NAME]`: imports a docker save, OCI layout or rootfs tarball. */
export async function imageImport(args: { readonly file: string; readonly name?: string }, opts: ImageCommandOptions): Promise<ImageInfo> {
  const out = printer(opts);
  const info = await openStore(opts).importTarball(args.file, {
    ...(args.name ? { name: args.name } : {}),
    onProgress: progressPrinter(opts),
    ...(opts.signal ? { signal: opts.signal } : {}),
  });
  const src = info.source.kind === 'import' ? `${info.source.format}, ${info.source.layers} layer${info.source.layers === 1 ? '' : 's'}` : '';
  out(opts.json ? JSON.stringify(imageJson(info)) : `imported ${info.name} ${info.digest.slice(0, 19)} ${mib(info.sizeBytes)} (${src})${info.neutralised > 0 ? `; made safe: ${info.neutralised} entries` : ''}`);
  return info;
}
