import type { ImageInfo } from '../../../images/index.js';
import { imageJson, openStore, printer, type ImageCommandOptions } from './shared.js';

/** `vulcan image inspect NAME`: everything known of one image (JSON). Throws `not_found`. */
export async function imageInspect(args: { readonly name: string }, opts: ImageCommandOptions): Promise<ImageInfo> {
  const info = await openStore(opts).inspect(args.name);
  printer(opts)(JSON.stringify({ ...imageJson(info), rootfs_dir: info.rootfsDir }, null, opts.json ? undefined : 2));
  return info;
}
