/**
 * Sandboxes on the container backend: one long-lived Docker (or Podman) container per
 * sandbox, made like a workload container (no network, no capabilities, no-new-privileges,
 * uid 1000, read-only root, tmpfs /work and /tmp of `disk_mb`, memory/CPU/pids limits)
 * and running the Vulcan sandbox agent from the agent bundle (src/sandboxes/agent-bundle.ts),
 * so any image works, even busybox with no node.
 *
 * The server reaches the agent through a unix socket the agent creates in a per-sandbox
 * host directory, bind-mounted into the container at /.vulcan-sock:
 *
 *   <dataDir>/container/sandboxes/<id>/          root 0700, never seen by the sandbox
 *   <dataDir>/container/sandboxes/<id>/sock/     a 64 KiB tmpfs (uid 1000), bound at /.vulcan-sock
 *   <dataDir>/container/sandboxes/<id>/sock/agent.sock   made by the agent (VULCAN_AGENT_SOCKET)
 *
 * The sandbox owns that directory, so it can put anything at `agent.sock`: a symlink to
 * /var/run/docker.sock, a FIFO, a directory. The server therefore never connects by path.
 * It opens the name with O_PATH|O_NOFOLLOW (a symlink is opened as itself and never
 * followed; a FIFO is not opened for reading, so it cannot block), checks with fstat that
 * the inode is a socket owned by the sandbox user on that tmpfs, and connects through
 * /proc/self/fd/N, which names exactly the inode it checked: swapping the name afterwards
 * changes nothing (race-free). The tmpfs bounds what the sandbox can store there (64 KiB,
 * 32 inodes) instead of the data dir's disk.
 *
 * Why not the Engine API's exec/attach: attach gives one stream (PID 1's stdio) where the
 * agent protocol needs a connection per request, and an exec per request costs two daemon
 * round trips plus a process (`docker exec C true` takes 70–100 ms here, and a helper to
 * bridge stdin/stdout to the agent on images without one), against well under a
 * millisecond for a unix socket connect. The
 * socket also keeps working across a server restart with no daemon state.
 */
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import type net from 'node:net';
import path from 'node:path';
import type { Duplex } from 'node:stream';
import { promisify } from 'node:util';
import { dataDirTag } from '../../core/config.js';
import type { BackendContext } from '../../core/context.js';
import { VulcanError } from '../../core/errors.js';
import type { ImageRef } from '../../core/images.js';
import { connectNoFollow } from '../../sandboxes/agent-socket.js';
import type { AttachResult, SandboxCapabilities, SandboxDriver, SandboxHandle, SandboxLimits, SandboxSpec } from '../../core/sandbox.js';
import { AGENT_MOUNT, agentArgv, ensureAgentBundle } from '../../sandboxes/agent-bundle.js';
import { readReply, sendRequest } from '../../sandboxes/protocol.js';
import { SANDBOX_UID } from '../gvisor/bundle.js';
import { unmountIfMounted } from '../gvisor/payload.js';
import { DockerError, type ContainerCreateBody, type DockerClient } from './docker-client.js';
import { LABEL_MANAGED, LABEL_NODE, LABEL_SANDBOX } from './labels.js';
import { cleanupLeakedRuntime } from './leaks.js';

const execFileP = promisify(execFile);

/** Where the socket directory is mounted inside the container. */
export const SOCKET_MOUNT = '/.vulcan-sock';
/** The agent's socket, by name, in the socket directory. */
export const SOCKET_NAME = 'agent.sock';
/** How long a new sandbox's agent has to answer (a cold container start is ≈ 0.5–1 s here; busy hosts are slower). */
const AGENT_START_TIMEOUT_MS = 30_000;
/** The socket tmpfs: room for one socket and whatever little a sandbox may drop beside it. */
const SOCKET_TMPFS_OPTS = `size=64k,nr_inodes=32,mode=0700,uid=${SANDBOX_UID},gid=${SANDBOX_UID},nosuid,nodev,noexec`;
/** Roughly what the agent (node) needs to start; said when a sandbox is OOM-killed while starting. */
const AGENT_MIN_MB = 64;

/** What the container backend lends its sandbox driver (one client, one image loader, one container shape). */
export interface ContainerSandboxHost {
  readonly ociRuntime: string;
  getClient(): DockerClient;
  ensureImage(image: ImageRef): Promise<void>;
  createBody(o: { image: ImageRef; argv: readonly string[]; env: readonly string[]; cwd: string; binds: readonly string[]; limits: SandboxLimits; runtime: string; stdin: boolean; labels: Record<string, string>; init?: boolean; log?: boolean }): ContainerCreateBody;
}

/** What the driver stores to re-attach. */
interface Persisted {
  readonly containerId: string;
  readonly dir: string;
  readonly runtime: string;
}

function isPersisted(v: Readonly<Record<string, unknown>>): v is Persisted & Record<string, unknown> {
  return typeof v.containerId === 'string' && /^[a-f0-9]{64}$/.test(v.containerId) && typeof v.dir === 'string' && typeof v.runtime === 'string';
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * Connects to the agent socket `name` in `dir`, a directory the sandbox controls, without
 * ever following what the sandbox put there (src/sandboxes/agent-socket.ts): a socket,
 * owned by `uid`, on `dev`. Exported for the tests.
 */
export function connectConfined(dir: string, name: string, expect: { uid: number; dev?: number }, signal?: AbortSignal): Promise<net.Socket> {
  return connectNoFollow(path.join(dir, name), { ...expect, ...(signal ? { signal } : {}) });
}

class ContainerSandbox implements SandboxHandle {
  readonly died: Promise<string>;
  private resolveDied: (reason: string) => void = () => undefined;
  private destroying: Promise<void> | undefined;
  private readonly waitAbort = new AbortController();
  readonly socketDir: string;
  private socketDev: number | undefined;

  constructor(
    readonly id: string,
    private readonly p: Persisted,
    private readonly client: DockerClient,
  ) {
    this.socketDir = path.join(p.dir, 'sock');
    try {
      this.socketDev = fs.statSync(this.socketDir).dev;
    } catch {
      // checked again by connect
    }
    this.died = new Promise((resolve) => (this.resolveDied = resolve));
  }

  /** Watches the container until it stops (the daemon's wait), then says why it died. */
  watch(): void {
    const signal = this.waitAbort.signal;
    void this.client
      .waitContainer(this.p.containerId, 'not-running', signal)
      .then(async (w) => {
        if (this.destroying || signal.aborted) return;
        const state = await this.client
          .inspectContainer(this.p.containerId)
          .then((c) => c.State)
          .catch(() => undefined);
        this.resolveDied(state?.OOMKilled ? 'the sandbox exceeded its memory limit (resources.mem_mb) and was killed' : `the sandbox's container exited (code ${w.StatusCode})`);
      })
      .catch(async (err: unknown) => {
        if (this.destroying || signal.aborted) return;
        if (err instanceof DockerError && err.status === 404) {
          this.resolveDied('the sandbox container was removed outside Vulcan');
          return;
        }
        // The daemon went away (restarted): its containers stop with it unless live-restore is on; look again later.
        await sleep(2_000);
        if (!this.destroying && !signal.aborted) this.watch();
      });
  }

  get persisted(): Readonly<Record<string, unknown>> {
    return { ...this.p };
  }

  connect(signal?: AbortSignal): Promise<Duplex> {
    this.socketDev ??= fs.statSync(this.socketDir).dev;
    return connectConfined(this.socketDir, SOCKET_NAME, { uid: SANDBOX_UID, dev: this.socketDev }, signal);
  }

  async pause(): Promise<void> {
    await this.client.pauseContainer(this.p.containerId);
  }

  async resume(): Promise<void> {
    await this.client.unpauseContainer(this.p.containerId);
  }

  /** Stops watching without killing (the server is closing; the sandbox lives on). */
  detach(): void {
    this.waitAbort.abort();
  }

  destroy(): Promise<void> {
    this.destroying ??= (async () => {
      this.waitAbort.abort();
      // Thaw first so the kill lands at once (dockerd 20.10 kills a frozen container, but not every engine says it will).
      await this.client.unpauseContainer(this.p.containerId).catch(() => undefined);
      await this.client.removeContainer(this.p.containerId);
      if (this.p.runtime !== 'runc') await cleanupLeakedRuntime(this.p.containerId);
      await removeSandboxDir(this.p.dir);
    })();
    return this.destroying;
  }
}

/** Unmounts the socket tmpfs and removes a sandbox's host directory. Never follows a link inside it (fs.rm unlinks links). */
async function removeSandboxDir(dir: string): Promise<void> {
  await unmountIfMounted(path.join(dir, 'sock'));
  await fsp.rm(dir, { recursive: true, force: true });
}

/** Connects and waits for the agent's `ping` answer. */
async function ping(sb: ContainerSandbox, timeoutMs: number): Promise<void> {
  const sock = await sb.connect(AbortSignal.timeout(timeoutMs));
  try {
    sendRequest(sock, { op: 'ping' });
    const r = await readReply(sock, AbortSignal.timeout(timeoutMs));
    if (!r.ok) throw new Error(r.error.message);
  } finally {
    sock.destroy();
  }
}

export class ContainerSandboxDriver implements SandboxDriver {
  readonly capabilities: SandboxCapabilities = { pause: true, reattach: true, pty: true, preview: true };
  readonly defaultImage = 'minimal';
  private readonly root: string;
  private readonly tag: string;
  private readonly live = new Set<ContainerSandbox>();

  constructor(
    private readonly ctx: BackendContext,
    private readonly host: ContainerSandboxHost,
  ) {
    this.root = path.join(ctx.config.dataDir, 'container', 'sandboxes');
    this.tag = dataDirTag(ctx.config.dataDir);
  }

  async create(spec: SandboxSpec, signal: AbortSignal): Promise<SandboxHandle> {
    if (!/^[A-Za-z0-9_-]{1,80}$/.test(spec.id)) throw new Error(`bad sandbox id ${spec.id}`);
    const image = await this.ctx.images.resolve(spec.image);
    if (!image) throw new VulcanError('unknown_image', `no image named ${JSON.stringify(spec.image)} in this node's image store; set image to one of \`vulcan image ls\` (the default is minimal)`, { details: { field: 'image', image: spec.image } });
    const bundle = ensureAgentBundle(this.ctx.config.dataDir, this.ctx.config.installDir);
    await this.host.ensureImage(image);
    signal.throwIfAborted();
    const client = this.host.getClient();
    const runtime = this.host.ociRuntime;
    const dir = path.join(this.root, spec.id);
    const sockDir = path.join(dir, 'sock');
    await fsp.mkdir(this.root, { recursive: true, mode: 0o700 });
    await fsp.mkdir(dir, { mode: 0o700 });
    let containerId: string | undefined;
    let sb: ContainerSandbox | undefined;
    let onStarted: () => void = () => undefined;
    try {
      await fsp.mkdir(sockDir, { mode: 0o700 });
      await execFileP('mount', ['-t', 'tmpfs', '-o', SOCKET_TMPFS_OPTS, 'vulcan-sbx-sock', sockDir]);
      const env = ['PATH=/usr/local/bin:/usr/bin:/bin', 'HOME=/work', 'LANG=C.UTF-8', `VULCAN_AGENT_SOCKET=${SOCKET_MOUNT}/${SOCKET_NAME}`];
      containerId = await client.createContainer(
        `vulcan-sbx-${spec.id}`,
        this.host.createBody({
          image,
          argv: agentArgv(),
          env,
          cwd: '/work',
          // The only binds: the agent bundle (read-only) and the socket tmpfs. Never anything from the request.
          binds: [`${bundle.dir}:${AGENT_MOUNT}:ro`, `${sockDir}:${SOCKET_MOUNT}:rw`],
          limits: spec.limits,
          runtime,
          stdin: false,
          labels: { [LABEL_SANDBOX]: spec.id },
          init: true,
          log: true,
        }),
      );
      sb = new ContainerSandbox(spec.id, { containerId, dir, runtime }, client);
      const id = containerId;
      // Ends this wait once the agent answers (sb.watch() takes over), so no request is left open.
      const starting = new AbortController();
      const stopWaiting = () => starting.abort();
      signal.addEventListener('abort', stopWaiting, { once: true });
      onStarted = () => {
        signal.removeEventListener('abort', stopWaiting);
        starting.abort();
      };
      const exited = client.waitContainer(id, 'next-exit', starting.signal).then(async (w) => {
        const oom = await client
          .inspectContainer(id)
          .then((c) => c.State.OOMKilled)
          .catch(() => false);
        if (oom) throw new Error(`the sandbox exited while starting: it ran out of memory; resources.mem_mb (${spec.limits.memMB}) must leave room for the sandbox agent (about ${AGENT_MIN_MB} MiB)`);
        const tail = await client.logs(id, 20).catch(() => '');
        throw new Error(`the sandbox exited while starting (code ${w.StatusCode}): ${tail.trim().slice(-500) || 'no message'}`);
      });
      exited.catch(() => undefined);
      await client.startContainer(id);
      const deadline = AbortSignal.any([signal, AbortSignal.timeout(AGENT_START_TIMEOUT_MS)]);
      for (;;) {
        try {
          await Promise.race([exited, ping(sb, 1_000)]);
          break;
        } catch (err) {
          if ((err as Error).message.startsWith('the sandbox exited')) throw err;
          if (deadline.aborted) throw new Error(`the sandbox agent did not answer within ${AGENT_START_TIMEOUT_MS} ms: ${(err as Error).message}`, { cause: err });
          await sleep(25);
        }
      }
      onStarted();
      sb.watch();
      this.track(sb);
      return sb;
    } catch (err) {
      onStarted();
      sb?.detach();
      if (containerId !== undefined) {
        await client.removeContainer(containerId).catch((e: unknown) => this.ctx.log.error({ err: e, sandbox: spec.id }, 'cannot remove a sandbox container that failed to start'));
        if (runtime !== 'runc') await cleanupLeakedRuntime(containerId);
      }
      await removeSandboxDir(dir);
      if (err instanceof DockerError) throw new Error(`the Docker daemon refused the sandbox container: ${err.message}`, { cause: err });
      throw err;
    }
  }

  private track(sb: ContainerSandbox): void {
    this.live.add(sb);
    void sb.died.then(() => this.live.delete(sb));
  }

  async attach(id: string, persisted: Readonly<Record<string, unknown>>, _limits: SandboxLimits, paused: boolean): Promise<AttachResult> {
    if (!isPersisted(persisted)) return { ok: false, reason: 'its record has no container information' };
    const p = persisted;
    // Only ever our own directory for this id: a record is data, not a path to trust.
    if (p.dir !== path.join(this.root, id)) return { ok: false, reason: 'its record names a directory that is not its own' };
    const client = this.host.getClient();
    const sb = new ContainerSandbox(id, p, client);
    const lose = async (reason: string): Promise<AttachResult> => {
      await sb.destroy().catch((err: unknown) => this.ctx.log.warn({ err, sandbox: id }, 'cannot clean up a lost sandbox'));
      return { ok: false, reason };
    };
    let info: Awaited<ReturnType<DockerClient['inspectContainer']>>;
    try {
      info = await client.inspectContainer(p.containerId);
    } catch (err) {
      if (err instanceof DockerError && err.status === 404) return lose('its container was gone when the server restarted');
      return lose(`the Docker daemon could not say what became of its container: ${(err as Error).message}`);
    }
    const labels = info.Config?.Labels ?? {};
    if (labels[LABEL_SANDBOX] !== id || labels[LABEL_NODE] !== this.tag) return { ok: false, reason: 'its container id now names a container that is not this sandbox' };
    if (!info.State.Running) return lose(info.State.OOMKilled ? 'its container was killed for exceeding its memory limit while the server was down' : `its container had stopped when the server restarted (${info.State.Status}, code ${info.State.ExitCode})`);
    if (!fs.existsSync(path.join(p.dir, 'sock'))) return lose('its socket directory was gone when the server restarted');
    try {
      // Bring the container to the state the record says.
      if (paused && !info.State.Paused) await client.pauseContainer(p.containerId);
      if (!paused && info.State.Paused) await client.unpauseContainer(p.containerId);
      if (!paused) await ping(sb, 3_000);
    } catch (err) {
      return lose(`its agent did not answer after the restart: ${(err as Error).message}`);
    }
    sb.watch();
    this.track(sb);
    return { ok: true, handle: sb };
  }

  async reapOrphans(keep: ReadonlySet<string>): Promise<string[]> {
    const client = this.host.getClient();
    const removed: string[] = [];
    const containers = await client.listContainers([`${LABEL_MANAGED}=true`, `${LABEL_NODE}=${this.tag}`, LABEL_SANDBOX]);
    for (const c of containers) {
      const id = c.Labels[LABEL_SANDBOX] ?? '';
      if (keep.has(id)) continue;
      await client.unpauseContainer(c.Id).catch(() => undefined);
      await client.removeContainer(c.Id);
      await cleanupLeakedRuntime(c.Id);
      removed.push(`container ${c.Id.slice(0, 12)} (sandbox ${id})`);
    }
    let dirs: string[] = [];
    try {
      dirs = await fsp.readdir(this.root);
    } catch {
      // none yet
    }
    for (const d of dirs) {
      if (keep.has(d)) continue;
      await removeSandboxDir(path.join(this.root, d));
      removed.push(`directory ${d}`);
    }
    return removed;
  }

  /** Stops watching sandboxes; they keep running for the next server process. Idempotent. */
  close(): void {
    for (const sb of this.live) sb.detach();
    this.live.clear();
  }
}
