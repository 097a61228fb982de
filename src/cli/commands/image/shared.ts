/**
 * Shared bits of the `vulcan image` commands: opening the local store and printing.
 * These commands act on the node's own image store (they run where the data dir is).
 */
import { styleText } from 'node:util';
import { createImageStore, type LocalImageStore } from '../../../images/index.js';

/** Options every image command takes. */
export interface ImageCommandOptions {
  /** The data dir whose `images/` holds the store (`--data-dir`, `VULCAN_DATA_DIR`). */
  readonly dataDir: string;
  /** Print JSON for scripts instead of text for people. */
  readonly json?: boolean;
  /** Where output goes. Default process.stdout. */
  readonly out?: (line: string) => void;
  /** Where progress goes. Default process.stderr. */
  readonly progress?: (line: string) => void;
  readonly signal?: AbortSignal;
}

export function openStore(opts: ImageCommandOptions): LocalImageStore {
  return createImageStore(opts.dataDir);
}

export function printer(opts: ImageCommandOptions): (line: string) => void {
  return opts.out ?? ((line: string) => process.stdout.write(`${line}\n`));
}

export function progressPrinter(opts: ImageCommandOptions): (line: string) => void {
  return opts.progress ?? ((line: string) => process.stderr.write(`${styleText('dim', line)}\n`));
}

/** `123 MiB`. */
export function mib(bytes: number): string {
  return `${(bytes / 2 ** 20).toFixed(bytes < 10 * 2 ** 20 ? 1 : 0)} MiB`;
}
