/** What a microvm sandbox may leave on the host, for the leftovers checks of the microvm sandbox tests. */
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { eventually, processesWith } from '../helpers/context.js';

/** QEMUs, VM directories, sockets, overlay files and pause snapshots a microvm sandbox of `dataDir` left. */
export async function microvmSandboxLeftovers(dataDir: string): Promise<string[]> {
  const tag = `vulcan-sbx-${createHash('sha256').update(dataDir).digest('hex').slice(0, 8)}-`;
  return eventually(() => {
    const left = processesWith('qemu-system', tag);
    const dir = path.join(dataDir, 'microvm', 'sbx');
    if (fs.existsSync(dir)) for (const d of fs.readdirSync(dir)) left.push(`directory ${path.join(dir, d)}`);
    return left;
  }, 5_000);
}

