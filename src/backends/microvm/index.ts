import type { BackendFactory } from '../registry.js';
import { MicrovmBackend } from './backend.js';

/** Creates the microvm backend with its default options (see `MicrovmOptions`). */
export const createBackend: BackendFactory = (ctx) => new MicrovmBackend(ctx);
