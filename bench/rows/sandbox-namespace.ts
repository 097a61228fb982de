/**
 * Sandbox rows of the namespace backend (bench/rows/sandboxes.ts): the create floor is a
 * bare `bwrap --unshare-all … node -e 0` (the agent is a node process); the exec round
 * trip of `true` has the target, p50 ≤ 5 ms.
 */
import type { BenchContext, BenchRow } from '../types.js';
import { bareBwrapArgv } from './namespace.js';
import { benchSandboxes, run } from './sandboxes.js';

/** The target for the exec round trip of `true` on namespace. */
export const EXEC_ROUNDTRIP_TARGET_MS = 5;

export function benchSandboxNamespace(ctx: BenchContext): Promise<BenchRow[]> {
  const argv = bareBwrapArgv(['/usr/bin/node', '-e', '0']);
  return benchSandboxes(ctx, {
    backend: 'namespace',
    floor: { name: 'bare bwrap --unshare-all node -e 0', time: () => run('/usr/bin/bwrap', argv) },
    execTargetMs: EXEC_ROUNDTRIP_TARGET_MS,
  });
}
