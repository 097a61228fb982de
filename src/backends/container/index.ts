// Placeholder until the container backend lands: it reports itself unavailable and runs nothing.
import { createUnimplementedBackend } from '../unimplemented.js';
import type { BackendFactory } from '../registry.js';

export const createBackend: BackendFactory = () => createUnimplementedBackend('container');
