import type { BackendFactory } from '../registry.js';
import { GvisorBackend } from './gvisor-backend.js';

/** The gvisor backend: runsc on OCI bundles that Vulcan writes. */
export const createBackend: BackendFactory = (ctx) => new GvisorBackend(ctx);
