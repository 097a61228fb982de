/**
 * The image store's contract, as backends see it: content-addressed root filesystems,
 * found by name. The implementation lives in `src/images/`.
 */

/** One stored image. */
export interface ImageRef {
  /** The name users give (`python`, `minimal`, an imported name). */
  readonly name: string;
  /** `sha256:<hex>` of the image's content; names a rootfs exactly. */
  readonly digest: string;
  /** A read-only directory holding the unpacked root filesystem. Never write into it. */
  readonly rootfsDir: string;
  /** The image's default argv and environment, where it has them (from an OCI config). */
  readonly config: { readonly cmd?: readonly string[]; readonly env?: readonly string[]; readonly workdir?: string };
}

export interface ImageStore {
  /** Finds an image by name, or null when there is none. */
  resolve(name: string): Promise<ImageRef | null>;
}

/** An image store with nothing in it: for backends and tests that need none. */
export const EMPTY_IMAGE_STORE: ImageStore = { resolve: () => Promise.resolve(null) };
