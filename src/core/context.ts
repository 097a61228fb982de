/**
 * What the server hands every backend when it creates it.
 */
import type { Config } from './config.js';
import type { ImageStore } from './images.js';

/** The slice of a structured logger that backends use (pino's shape). */
export interface Logger {
  debug(obj: object, msg?: string): void;
  info(obj: object, msg?: string): void;
  warn(obj: object, msg?: string): void;
  error(obj: object, msg?: string): void;
}

export interface BackendContext {
  readonly config: Config;
  readonly log: Logger;
  /** The node's image store (root filesystems by name and digest). */
  readonly images: ImageStore;
}

/** A logger that drops everything; for tests and tools that have no log. */
export const SILENT_LOGGER: Logger = { debug() {}, info() {}, warn() {}, error() {} };
