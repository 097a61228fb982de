/**
 * Helpers for the container sandbox tests: the images setup built, and what a server on a
 * data dir left in the Docker daemon and on the host.
 */
import fs from 'node:fs';
import { dataDirTag } from '../../src/core/config.js';
import { LABEL_NODE } from '../../src/backends/container/container-backend.js';
import { DockerClient, dockerSocketPath } from '../../src/backends/container/docker-client.js';

/** The data dir whose images/ the tests use (setup builds minimal, python and node there). */
export const TEST_IMAGES_DIR = process.env.VULCAN_TEST_IMAGES_DIR ?? '/var/lib/vulcan';

/** Containers labelled with `dataDir`'s tag (any state) and mounts under `dataDir`. */
export async function containerLeftovers(dataDir: string): Promise<string[]> {
  const left: string[] = [];
  if (fs.existsSync(dockerSocketPath())) {
    const client = new DockerClient(dockerSocketPath());
    try {
      for (const c of await client.listContainers([`${LABEL_NODE}=${dataDirTag(dataDir)}`])) left.push(`container ${c.Id.slice(0, 12)} ${c.Names.join(',')} (${c.State})`);
    } finally {
      await client.close();
    }
  }
  for (const line of fs.readFileSync('/proc/self/mounts', 'utf8').split('\n')) {
    const where = line.split(' ')[1];
    if (where?.startsWith(`${dataDir}/`)) left.push(`mount ${where}`);
  }
  return left;
}
