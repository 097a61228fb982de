import { checkImageName, type ImageInfo } from '../../../images/index.js';
import { imageJson, mib, openStore, printer, progressPrinter, type ImageCommandOptions } from './shared.js';

export interface ImageBuildArgs {
  readonly name: string;
  /** `--packages python3,nodejs`: Debian packages on top of minbase. */
  readonly packages?: readonly string[];
  /** `--busybox`: build a busybox image (like `minimal`) instead of Debian. */
  readonly busybox?: boolean;
  /** `--suite`: Debian suite (default bookworm). */
  readonly suite?: string;
  /** `--mirror`: Debian mirror. */
  readonly mirror?: string;
}

/** `vulcan image build NAME [--packages a,b] [--busybox] [--suite S]`: builds and stores an image, with progress. */
export async function imageBuild(args: ImageBuildArgs, opts: ImageCommandOptions): Promise<ImageInfo> {
  checkImageName(args.name);
  const out = printer(opts);
  const progress = progressPrinter(opts);
  const t0 = Date.now();
  const info = await openStore(opts).build({
    name: args.name,
    kind: args.busybox ? 'busybox' : 'debian',
    packages: args.packages ?? [],
    ...(args.suite ? { suite: args.suite } : {}),
    ...(args.mirror ? { mirror: args.mirror } : {}),
    onProgress: progress,
    ...(opts.signal ? { signal: opts.signal } : {}),
  });
  out(opts.json ? JSON.stringify(imageJson(info)) : `built ${info.name} ${info.digest.slice(0, 19)} ${mib(info.sizeBytes)} in ${((Date.now() - t0) / 1000).toFixed(1)}s`);
  return info;
}
