/**
 * Connecting the (root) server to a unix socket that a sandbox created in a host directory
 * it can write, without ever following what the sandbox planted there. Used by the gvisor
 * and container sandbox drivers, whose agents listen on a path the host can see.
 *
 * E.g. under gVisor the agent listens on `/.vulcan-run/agent.sock`; with `runsc
 * --host-uds=create` the gofer binds a real host socket at `<sandbox dir>/run/agent.sock`.
 * The sandbox can write that directory, so it can replace the socket with a symlink to any host socket
 * (`/var/run/docker.sock`, another sandbox's agent…). `connect(2)` on a path follows
 * symlinks, and there is no `connectat` with `AT_SYMLINK_NOFOLLOW`; an lstat-then-connect
 * check would be a race (swap between the two calls).
 *
 * So: `open(path, O_PATH | O_NOFOLLOW)` pins the inode the last component names *without*
 * following it (a symlink yields an fd to the link itself), `fstat` on that fd must say
 * "socket", and the connect goes to `/proc/self/fd/N`, which the kernel resolves to exactly
 * that inode. Whatever the sandbox renames or swaps after the open cannot change which
 * socket is reached. The directories above the last component are root's (0700) and never
 * visible to the sandbox, and the socket directory is a tmpfs of its own, so no hard link
 * to a host socket can appear in it either.
 */
import fs from 'node:fs';
import net from 'node:net';

/** O_PATH from <fcntl.h> (Linux, same value on x86-64 and arm64); Node does not export it. libuv adds O_CLOEXEC itself. */
const O_PATH = 0o10000000;

export interface NoFollowExpect {
  /** The socket must be owned by this uid (the sandbox's agent user). */
  readonly uid?: number;
  /** The socket must be on this filesystem (the sandbox's own socket tmpfs). */
  readonly dev?: number;
  /** Gives up (rejects) when it fires before the connection is made. */
  readonly signal?: AbortSignal;
}

/**
 * Connects to the unix socket at `socketPath` when, and only when, its last component is a
 * socket (not a symlink, FIFO, file or directory) that meets `expect`. Rejects with a
 * message for people otherwise, and when the signal fires first. The open and fstat are
 * synchronous on purpose: the directory is a tmpfs (never waits on a disk), and a
 * thread-pool round trip would double the cost of every connection.
 */
export function connectNoFollow(socketPath: string, expect: NoFollowExpect = {}): Promise<net.Socket> {
  const { signal } = expect;
  return new Promise((resolve, reject) => {
    if (signal?.aborted) {
      reject(new Error(`the sandbox agent did not answer at ${socketPath}`));
      return;
    }
    let fd: number;
    try {
      fd = fs.openSync(socketPath, O_PATH | fs.constants.O_NOFOLLOW);
    } catch (err) {
      reject(new Error(`the sandbox agent's socket cannot be opened: ${(err as Error).message}`, { cause: err }));
      return;
    }
    let closed = false;
    const closeFd = () => {
      if (closed) return;
      closed = true;
      try {
        fs.closeSync(fd);
      } catch {
        // already closed
      }
    };
    let wrong: string | null;
    try {
      const st = fs.fstatSync(fd);
      wrong = !st.isSocket()
        ? `not a socket (${st.isSymbolicLink() ? 'a symlink' : `mode ${st.mode.toString(8)}`})`
        : expect.uid !== undefined && st.uid !== expect.uid
          ? `owned by uid ${st.uid}`
          : expect.dev !== undefined && st.dev !== expect.dev
            ? 'on another filesystem'
            : null;
    } catch (err) {
      closeFd();
      reject(err instanceof Error ? err : new Error(String(err)));
      return;
    }
    if (wrong !== null) {
      closeFd();
      reject(new Error(`refusing the sandbox agent's socket ${socketPath}: it is ${wrong}`));
      return;
    }
    const sock = net.connect({ path: `/proc/self/fd/${fd}`, allowHalfOpen: true });
    const onAbort = () => {
      closeFd();
      sock.destroy();
      reject(new Error(`the sandbox agent did not answer at ${socketPath}`));
    };
    signal?.addEventListener('abort', onAbort, { once: true });
    sock.once('connect', () => {
      signal?.removeEventListener('abort', onAbort);
      closeFd();
      resolve(sock);
    });
    sock.once('error', (err) => {
      signal?.removeEventListener('abort', onAbort);
      closeFd();
      reject(err instanceof Error ? err : new Error(String(err)));
    });
  });
}
