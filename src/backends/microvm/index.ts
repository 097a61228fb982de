import type { BackendFactory } from '../registry.js';
import { MicrovmBackend } from './backend.js';

/** Creates the microvm backend with the node's settings (`Config.microvm`). */
export const createBackend: BackendFactory = (ctx) => new MicrovmBackend(ctx, ctx.config.microvm);
