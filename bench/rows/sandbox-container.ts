/**
 * Sandbox rows of the container backend (bench/rows/sandboxes.ts), on the `minimal` image:
 * the create floor is `docker run --rm --network none <minimal> true` through the CLI.
 */
import { daemonImageRef } from '../../src/backends/container/container-backend.js';
import { loadConfig } from '../../src/core/config.js';
import { createImageStore } from '../../src/images/index.js';
import type { BenchContext, BenchRow } from '../types.js';
import { timeCommand } from './api.js';
import { benchSandboxes } from './sandboxes.js';

export async function benchSandboxContainer(ctx: BenchContext): Promise<BenchRow[]> {
  const image = await createImageStore(loadConfig().imagesDataDir).resolve('minimal');
  if (!image) throw new Error('no minimal image in the store (scripts/setup.sh builds it)');
  const args = ['run', '--rm', '--network', 'none', daemonImageRef(image).ref, 'true'];
  return benchSandboxes(ctx, {
    backend: 'container',
    image: 'minimal',
    floor: { name: 'docker run --rm --network none minimal true', time: () => timeCommand('docker', args) },
    maxCreates: 10,
  });
}
