import { ensureBuiltinImages, type ImageInfo } from '../../../images/index.js';
import { mib, openStore, printer, progressPrinter, type ImageCommandOptions } from './shared.js';

/** Builds the built-in images (minimal, python, node) that are missing; a second call finds them cached. Used by setup. */
export async function imageSetup(opts: ImageCommandOptions & { readonly only?: readonly string[] }): Promise<ImageInfo[]> {
  const out = printer(opts);
  const list = await ensureBuiltinImages(openStore(opts), { onProgress: progressPrinter(opts), ...(opts.only ? { only: opts.only } : {}), ...(opts.signal ? { signal: opts.signal } : {}) });
  for (const i of list) out(`image ${i.name}: ${i.digest.slice(0, 19)} ${mib(i.sizeBytes)}`);
  return list;
}
