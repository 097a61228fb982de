import type { BackendFactory } from '../registry.js';
import { ContainerBackend } from './container-backend.js';

/** The container backend: the Docker (or Podman) Engine API over a unix socket. */
export const createBackend: BackendFactory = (ctx) => new ContainerBackend(ctx);
