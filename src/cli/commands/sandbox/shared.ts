/**
 * Shared bits of the `vulcan sandbox` commands: the server URL and option parsing.
 */
import { InvalidArgumentError } from 'commander';
import { DEFAULT_URL } from '../../../sdk/index.js';

/** The server every sandbox command talks to (`VULCAN_URL`). */
export function serverUrl(): string {
  return process.env.VULCAN_URL || DEFAULT_URL;
}

/** Collects repeatable `KEY=VALUE` flags into an object. */
export function keyValue(flag: string) {
  return (v: string, acc: Record<string, string>): Record<string, string> => {
    const i = v.indexOf('=');
    if (i <= 0) throw new InvalidArgumentError(`${flag} takes KEY=VALUE; got ${v}`);
    return { ...acc, [v.slice(0, i)]: v.slice(i + 1) };
  };
}

/** Parses a number flag. */
export const num = (flag: string) => (v: string) => {
  const n = Number(v);
  if (!Number.isFinite(n)) throw new InvalidArgumentError(`${flag} takes a number`);
  return n;
};
