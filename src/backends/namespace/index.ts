import type { BackendFactory } from '../registry.js';
import { NamespaceBackend } from './namespace-backend.js';

export const createBackend: BackendFactory = (ctx) => new NamespaceBackend(ctx);
