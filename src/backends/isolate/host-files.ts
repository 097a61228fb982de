/**
 * The files an isolate host needs (its compiled script, isolated-vm's native addon and SES),
 * staged where the sandbox can bind them. The sandbox runs as uid 65534 on the host, so every
 * directory above the staged copy must be traversable by others; the install directory
 * (often under /root) and the data directory need not be, hence the copy.
 */
import fs from 'node:fs';
import { createRequire } from 'node:module';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

/** Where the staged directory appears inside the host's sandbox. */
export const HOST_DIR_IN_SANDBOX = '/opt/vulcan-isolate-host';

/** A file to stage: where it comes from, and its path inside the staged directory. */
interface StagedFile {
  readonly src: string;
  readonly rel: string;
}

/** The compiled backend directory (dist/src/backends/isolate), where host/main.js lives. */
function compiledDir(installDir: string): string {
  const here = path.dirname(fileURLToPath(import.meta.url));
  if (fs.existsSync(path.join(here, 'host', 'main.js'))) return here;
  return path.join(installDir, 'dist', 'src', 'backends', 'isolate');
}

function filesToStage(installDir: string): StagedFile[] {
  const dir = compiledDir(installDir);
  const ivmMain = createRequire(import.meta.url).resolve('isolated-vm');
  const ivmDir = path.dirname(ivmMain);
  // SES's one-file build (the host evaluates it inside isolates, never in Node).
  const sesDist = path.dirname(createRequire(import.meta.url).resolve('ses'));
  return [
    { src: path.join(dir, 'host', 'main.js'), rel: 'host/main.js' },
    { src: path.join(dir, 'host', 'bootstrap.js'), rel: 'host/bootstrap.js' },
    { src: path.join(dir, 'protocol.js'), rel: 'protocol.js' },
    { src: path.join(ivmDir, 'package.json'), rel: 'node_modules/isolated-vm/package.json' },
    { src: ivmMain, rel: 'node_modules/isolated-vm/isolated-vm.js' },
    { src: path.join(ivmDir, 'out', 'isolated_vm.node'), rel: 'node_modules/isolated-vm/out/isolated_vm.node' },
    { src: path.join(sesDist, 'ses.umd.min.js'), rel: 'node_modules/ses/dist/ses.umd.min.js' },
  ];
}

/** The first directory above `dir` (or `dir` itself) that others cannot traverse, or null. */
function untraversable(dir: string): string | null {
  let d = path.resolve(dir);
  for (;;) {
    try {
      const st = fs.statSync(d);
      if ((st.mode & 0o001) === 0) return d;
    } catch {
      // not created yet: its parent decides
    }
    const up = path.dirname(d);
    if (up === d) return null;
    d = up;
  }
}

/** Makes `dir` (mode 0755) and checks nobody else can have planted or changed it. */
function ensureOwnedDir(dir: string): void {
  fs.mkdirSync(dir, { recursive: true, mode: 0o755 });
  const st = fs.lstatSync(dir);
  const uid = process.getuid?.() ?? 0;
  if (!st.isDirectory() || st.uid !== uid || (st.mode & 0o022) !== 0) {
    throw new Error(`${dir} is not a directory owned by uid ${uid} and writable only by it; remove it`);
  }
  fs.chmodSync(dir, 0o755);
}

function manifestOf(files: readonly StagedFile[]): string {
  return JSON.stringify(
    files.map((f) => {
      const st = fs.statSync(f.src);
      return [f.rel, st.size, st.mtimeMs];
    }),
  );
}

/**
 * Copies the host's files into a directory uid 65534 can read and returns it:
 * `<dataDir>/isolate-host` when every directory above it is traversable by others, otherwise a
 * root-owned `vulcan-isolate-host-<uid>` in the system temp directory. Idempotent and cheap when
 * nothing changed. Throws with what to fix when the files are missing (run the build).
 */
export function stageHostFiles(installDir: string, dataDir: string): string {
  const files = filesToStage(installDir);
  for (const f of files) {
    if (!fs.existsSync(f.src)) throw new Error(`${f.src} is missing: run the build (npm run build) and npm install`);
  }
  const preferred = path.join(dataDir, 'isolate-host');
  const dir = untraversable(preferred) === null ? preferred : path.join(os.tmpdir(), `vulcan-isolate-host-${process.getuid?.() ?? 0}`);
  const blocked = untraversable(dir);
  if (blocked !== null) throw new Error(`${blocked} is not traversable by others (uid 65534 runs the isolate host): chmod o+x ${blocked}`);
  ensureOwnedDir(dir);
  const manifest = manifestOf(files);
  const manifestPath = path.join(dir, 'manifest.json');
  let current = '';
  try {
    current = fs.readFileSync(manifestPath, 'utf8');
  } catch {
    // first staging
  }
  if (current === manifest) return dir;
  for (const f of files) {
    const dest = path.join(dir, f.rel);
    fs.mkdirSync(path.dirname(dest), { recursive: true, mode: 0o755 });
    // Copy then rename, so a host starting meanwhile never loads half a file.
    const tmp = `${dest}.${process.pid}.tmp`;
    fs.copyFileSync(f.src, tmp);
    fs.chmodSync(tmp, 0o644);
    fs.renameSync(tmp, dest);
  }
  // host/*.js and protocol.js are ES modules.
  fs.writeFileSync(path.join(dir, 'package.json'), '{ "type": "module", "private": true }\n', { mode: 0o644 });
  fs.writeFileSync(manifestPath, manifest, { mode: 0o644 });
  return dir;
}
