/**
 * The static registry of isolation backends, keyed by name. Each backend's module (and its
 * heavy dependencies) is imported only when that backend is created.
 */
import type { Backend } from '../core/backend.js';
import type { BackendContext } from '../core/context.js';
import type { BackendName } from '../core/types.js';

/** A backend module's one export. */
export type BackendFactory = (ctx: BackendContext) => Backend;

const LOADERS: Record<BackendName, () => Promise<BackendFactory>> = {
  isolate: async () => (await import('./isolate/index.js')).createBackend,
  namespace: async () => (await import('./namespace/index.js')).createBackend,
  gvisor: async () => (await import('./gvisor/index.js')).createBackend,
  container: async () => (await import('./container/index.js')).createBackend,
  microvm: async () => (await import('./microvm/index.js')).createBackend,
};

/** Creates one backend by name. */
export async function createBackend(name: BackendName, ctx: BackendContext): Promise<Backend> {
  const factory = await LOADERS[name]();
  return factory(ctx);
}
