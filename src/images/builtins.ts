/**
 * The built-in images and the runtimes they serve. Setup builds them once; a second setup
 * finds them by recipe and returns at once.
 */
import type { Runtime } from '../core/types.js';
import type { BuildOptions, ImageInfo, LocalImageStore } from './store.js';

/** A built-in image's recipe. */
export interface BuiltinImage {
  readonly name: string;
  readonly kind: 'busybox' | 'debian';
  readonly packages: readonly string[];
  /** Debian suite; node comes from trixie, whose nodejs (20.x) runs Vulcan's node runner. */
  readonly suite?: string;
}

export const BUILTIN_IMAGES: readonly BuiltinImage[] = [
  { name: 'minimal', kind: 'busybox', packages: [] },
  { name: 'python', kind: 'debian', packages: ['python3'], suite: 'bookworm' },
  { name: 'node', kind: 'debian', packages: ['nodejs'], suite: 'trixie' },
];

/** The image each code runtime runs on when a workload names none. */
export const RUNTIME_IMAGES: Readonly<Partial<Record<Runtime, string>>> = { python: 'python', node: 'node', sh: 'minimal' };

function sameRecipe(info: ImageInfo, b: BuiltinImage): boolean {
  const s = info.source;
  if (s.kind !== 'build') return false;
  if (b.kind === 'busybox') return s.recipe.kind === 'busybox';
  return s.recipe.kind === 'debian' && s.recipe.suite === (b.suite ?? s.recipe.suite) && [...s.recipe.packages].sort().join(',') === [...b.packages].sort().join(',');
}

/**
 * Builds the built-in images that are missing or were built from another recipe.
 * `only` restricts it to some names. Returns the images, built or found.
 */
export async function ensureBuiltinImages(store: LocalImageStore, opts: { only?: readonly string[]; onProgress?: (msg: string) => void; signal?: AbortSignal } = {}): Promise<ImageInfo[]> {
  const out: ImageInfo[] = [];
  for (const b of BUILTIN_IMAGES) {
    if (opts.only && !opts.only.includes(b.name)) continue;
    const have = await store.resolve(b.name);
    if (have && sameRecipe(have, b)) {
      opts.onProgress?.(`${b.name}: cached (${have.digest.slice(0, 19)})`);
      out.push(have);
      continue;
    }
    const build: BuildOptions = {
      name: b.name,
      kind: b.kind,
      packages: b.packages,
      ...(b.suite ? { suite: b.suite } : {}),
      ...(opts.onProgress ? { onProgress: (m: string) => opts.onProgress?.(`${b.name}: ${m}`) } : {}),
      ...(opts.signal ? { signal: opts.signal } : {}),
    };
    out.push(await store.build(build));
  }
  return out;
}
