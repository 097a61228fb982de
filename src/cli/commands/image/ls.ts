import type { ImageInfo } from '../../../images/index.js';
import { imageJson, mib, openStore, printer, type ImageCommandOptions } from './shared.js';

/** `vulcan image ls`: every image in the store. */
export async function imageLs(opts: ImageCommandOptions): Promise<ImageInfo[]> {
  const out = printer(opts);
  const list = await openStore(opts).list();
  if (opts.json) {
    out(JSON.stringify(list.map(imageJson)));
    return list;
  }
  const rows = [['NAME', 'DIGEST', 'SIZE', 'SOURCE', 'CREATED'], ...list.map((i) => [i.name, i.digest.slice(7, 19), mib(i.sizeBytes), i.source.kind === 'build' ? `build ${i.source.recipe.kind === 'debian' ? `${i.source.recipe.suite} ${i.source.recipe.packages.join(',')}` : 'busybox'}` : `import ${i.source.format}`, i.createdAt.slice(0, 19).replace('T', ' ')])];
  const widths = rows[0]?.map((_, c) => Math.max(...rows.map((r) => (r[c] ?? '').length))) ?? [];
  for (const r of rows) out(r.map((cell, c) => cell.padEnd(widths[c] ?? 0)).join('  ').trimEnd());
  return list;
}
