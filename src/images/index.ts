/**
 * The image store: content-addressed root filesystems under `<dataDir>/images`, built from
 * Debian packages or busybox, or imported from `docker save` / OCI layout tarballs.
 */
export { createImageStore, bufferSource, checkImageName, DEFAULT_IMAGE_LIMITS, IMAGE_NAME_RE } from './store.js';
export type { BuildOptions, ImageInfo, ImageLimits, ImageSource, ImportOptions, LocalImageStore } from './store.js';
export { BUILTIN_IMAGES, RUNTIME_IMAGES, ensureBuiltinImages } from './builtins.js';
export type { BuiltinImage } from './builtins.js';
export { HostileTarballError } from './extract.js';
export { imageJson } from './json.js';
export type { ImportFormat, ImageRuntimeConfig } from './import.js';
export type { BuildRecipe } from './build.js';
