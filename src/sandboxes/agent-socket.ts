/**
 * Connecting the (root) server to a unix socket that a sandbox created in a host directory
 * it can write, without ever following what the sandbox planted there.
 *
 * Under gVisor the agent listens on `/.vulcan-run/agent.sock`; with `runsc --host-uds=create`
 * the gofer binds a real host socket at `<sandbox dir>/run/agent.sock`. The sandbox can
 * write that directory, so it can replace the socket with a symlink to any host socket
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

/**
 * Connects to the unix socket at `socketPath` when, and only when, its last component is a
 * socket (not a symlink, FIFO, file or directory). Rejects otherwise, and when `signal`
 * fires before the connection is made.
 */
export function connectNoFollow(socketPath: string, signal?: AbortSignal): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) {
      reject(new Error(`the sandbox agent did not answer at ${socketPath}`));
      return;
    }
    let fd: number;
    try {
      fd = fs.openSync(socketPath, O_PATH | fs.constants.O_NOFOLLOW);
    } catch (err) {
      reject(err instanceof Error ? err : new Error(String(err)));
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
    try {
      const st = fs.fstatSync(fd);
      if (!st.isSocket()) {
        closeFd();
        reject(new Error(`${socketPath} is not a socket (${st.isSymbolicLink() ? 'a symlink' : 'another kind of file'}): refusing to follow it`));
        return;
      }
    } catch (err) {
      closeFd();
      reject(err instanceof Error ? err : new Error(String(err)));
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
