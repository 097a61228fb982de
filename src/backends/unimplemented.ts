import type { Backend } from '../core/backend.js';
import type { BackendName } from '../core/types.js';

/** A backend that is not built yet: always unavailable, never runs code. */
export function createUnimplementedBackend(name: BackendName): Backend {
  return {
    name,
    isolation: 'not implemented yet',
    runtimes: [],
    capabilities: { sandboxes: false, pause: false, images: false, warmStart: false, network: false },
    probe: () => Promise.resolve({ available: false, reason: `the ${name} backend is not implemented yet` }),
    accepts: () => ({ ok: false, reason: `the ${name} backend is not implemented yet` }),
    run: () => Promise.reject(new Error(`the ${name} backend is not implemented yet`)),
    close: () => Promise.resolve(),
  };
}
