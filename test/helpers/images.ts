/**
 * A hand-made image for the backend tests that run "any image": busybox and a script, packed
 * as a `docker save` tarball (no docker needed) and imported through the store.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import * as tar from 'tar';
import type { LocalImageStore } from '../../src/images/index.js';

/**
 * Imports a `docker save` tarball made here (busybox and a script, no docker needed) as
 * `name`: the "any image" path, through the same import a user runs.
 */
export async function importTestImage(images: LocalImageStore, name: string): Promise<void> {
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'vulcan-ociimg-'));
  try {
    const root = path.join(work, 'root');
    fs.mkdirSync(path.join(root, 'bin'), { recursive: true });
    fs.mkdirSync(path.join(root, 'app'));
    fs.copyFileSync('/bin/busybox', path.join(root, 'bin/busybox'));
    fs.chmodSync(path.join(root, 'bin/busybox'), 0o755);
    for (const a of ['sh', 'cat', 'echo', 'id', 'uname', 'ls']) fs.symlinkSync('busybox', path.join(root, 'bin', a));
    fs.writeFileSync(path.join(root, 'app/hello.sh'), 'echo "hello from an imported image: $1 $GREETING"\ncat /app/data.txt\nid -u\n', { mode: 0o755 });
    fs.writeFileSync(path.join(root, 'app/data.txt'), 'data inside the image\n');
    const out = path.join(work, 'out');
    fs.mkdirSync(path.join(out, 'layer0'), { recursive: true });
    await tar.create({ file: path.join(out, 'layer0/layer.tar'), cwd: root, portable: true }, ['.']);
    fs.writeFileSync(path.join(out, 'config.json'), JSON.stringify({ config: { Cmd: ['/bin/sh', '/app/hello.sh', 'default'], Env: ['PATH=/bin', 'GREETING=from-config'], WorkingDir: '/app' } }));
    fs.writeFileSync(path.join(out, 'manifest.json'), JSON.stringify([{ Config: 'config.json', RepoTags: [`test/${name}:latest`], Layers: ['layer0/layer.tar'] }]));
    const file = path.join(work, 'image.tar');
    await tar.create({ file, cwd: out, portable: true }, ['manifest.json', 'config.json', 'layer0']);
    await images.importTarball(file, { name });
  } finally {
    fs.rmSync(work, { recursive: true, force: true });
  }
}
