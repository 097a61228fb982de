import { openStore, printer, type ImageCommandOptions } from './shared.js';

/** `vulcan image rm NAME`: removes the name (and its tree when no other name shares it). Throws `not_found`. */
export async function imageRm(args: { readonly name: string }, opts: ImageCommandOptions): Promise<void> {
  await openStore(opts).remove(args.name);
  printer(opts)(opts.json ? JSON.stringify({ removed: args.name }) : `removed ${args.name}`);
}
