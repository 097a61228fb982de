/*
 * Sandbox mode of the guest agent (kernel argument vulcan_mode=sandbox), included by
 * agent.c. The VM is a long-lived sandbox instead of one workload:
 *
 * - the image disk and the agent bundle disk (virtio serial "vulcan-agent") are told apart
 *   by their serial numbers; the bundle is mounted read-only at /.vulcan-agent in the root;
 * - the Node sandbox agent (src/sandboxes/agent/agent.ts) runs from the bundle as uid 1000
 *   in a chroot of the overlay, inside the cgroup with the sandbox's memory and pids limits,
 *   listening on /.vulcan-run/agent.sock;
 * - this process (PID 1, root, outside the chroot) multiplexes channels over the
 *   virtio-serial port: each host OPEN becomes one connection to that socket (protocol.h,
 *   T_MUX_* and friends). The workload never sees the port.
 *
 * The host may go away and come back (a server restart): when the port reports the host
 * gone, every channel is dropped and nothing is sent until the next MUX_HELLO.
 */
#include <net/if.h>
#include <sys/socket.h>
#include <sys/un.h>

#define BUNDLE_SERIAL "vulcan-agent"
#define BUNDLE_MOUNT ROOT "/.vulcan-agent"
#define RUN_DIR ROOT "/.vulcan-run"
#define AGENT_SOCK RUN_DIR "/agent.sock"
#define SANDBOX_UID 1000
#define MUX_MAX_DATA (MUX_MAX_FRAME - FRAME_HEADER_BYTES)

struct mux_chan {
  int used;
  uint32_t id;
  int fd;
  unsigned char *buf; /* host -> agent bytes not yet written */
  size_t len, off;
  uint32_t credit; /* bytes we may still send the host */
  int host_eof, sock_eof, shut_wr;
};

static struct mux_chan chans[MUX_MAX_CHANNELS];
static int synced;      /* a MUX_HELLO was answered since the host (re)connected */
static int port_down;   /* the host end of the port is closed */
static pid_t agent_pid = -1;
static int agent_status = -1; /* wait status once the agent exited */

/*
 * Writes to the port. While the host is away, a non-blocking write says EAGAIN and poll
 * says POLLHUP at once: give up (the frame is stale for the next host) instead of spinning.
 */
static void mux_write(const unsigned char *p, size_t n) {
  while (n > 0) {
    ssize_t w = write(chan, p, n);
    if (w > 0) {
      p += w;
      n -= (size_t)w;
      continue;
    }
    if (w < 0 && errno == EINTR) continue;
    if (w < 0 && errno == EAGAIN) {
      struct pollfd pf = {.fd = chan, .events = POLLOUT};
      if (poll(&pf, 1, 1000) >= 0 && !(pf.revents & (POLLHUP | POLLERR))) continue;
    }
    port_down = 1;
    return;
  }
}

/* One frame in one write: the port splits writes above 32 KiB, and a frame must not be torn. */
static void mux_send(uint8_t type, uint32_t id, const void *data, size_t len) {
  static unsigned char out[MUX_MAX_FRAME];
  if (port_down || len > MUX_MAX_DATA) return;
  put_u32(out, (uint32_t)(len + 5));
  out[4] = type;
  put_u32(out + 5, id);
  if (len) memcpy(out + FRAME_HEADER_BYTES, data, len);
  mux_write(out, len + FRAME_HEADER_BYTES);
}

static void mux_send_u32(uint8_t type, uint32_t id, uint32_t v) {
  unsigned char b[4];
  put_u32(b, v);
  mux_send(type, id, b, 4);
}

static struct mux_chan *chan_find(uint32_t id) {
  for (int i = 0; i < MUX_MAX_CHANNELS; i++)
    if (chans[i].used && chans[i].id == id) return &chans[i];
  return NULL;
}

static void chan_drop(struct mux_chan *c, int tell, const char *why) {
  if (tell && synced) mux_send(T_G_CLOSE, c->id, why, strlen(why));
  if (c->fd >= 0) close(c->fd);
  free(c->buf);
  memset(c, 0, sizeof *c);
  c->fd = -1;
}

static void drop_all(void) {
  for (int i = 0; i < MUX_MAX_CHANNELS; i++)
    if (chans[i].used) chan_drop(&chans[i], 0, "");
}

static void chan_open(uint32_t id) {
  if (id == 0 || chan_find(id)) {
    mux_send(T_G_CLOSE, id, "channel id in use", 17);
    return;
  }
  struct mux_chan *c = NULL;
  for (int i = 0; i < MUX_MAX_CHANNELS && !c; i++)
    if (!chans[i].used) c = &chans[i];
  if (!c) {
    mux_send(T_G_CLOSE, id, "too many channels", 17);
    return;
  }
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  struct sockaddr_un sa = {.sun_family = AF_UNIX};
  snprintf(sa.sun_path, sizeof sa.sun_path, "%s", AGENT_SOCK);
  if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
    char why[128];
    int n = snprintf(why, sizeof why, "connect to the agent: %s", strerror(errno));
    if (fd >= 0) close(fd);
    mux_send(T_G_CLOSE, id, why, (size_t)n);
    return;
  }
  unsigned char *buf = malloc(MUX_WINDOW);
  if (!buf) {
    close(fd);
    mux_send(T_G_CLOSE, id, "out of memory", 13);
    return;
  }
  *c = (struct mux_chan){.used = 1, .id = id, .fd = fd, .buf = buf, .credit = MUX_WINDOW};
  mux_send(T_G_OPENED, id, NULL, 0);
}

/* Writes what the host sent; acknowledges what the socket took. */
static void chan_flush(struct mux_chan *c) {
  while (c->off < c->len) {
    ssize_t w = write(c->fd, c->buf + c->off, c->len - c->off);
    if (w < 0) {
      if (errno == EAGAIN || errno == EINTR) return;
      chan_drop(c, 1, "write to the agent failed");
      return;
    }
    c->off += (size_t)w;
    mux_send_u32(T_G_WINDOW, c->id, (uint32_t)w);
  }
  c->off = c->len = 0;
  if (c->host_eof && !c->shut_wr) {
    shutdown(c->fd, SHUT_WR);
    c->shut_wr = 1;
  }
  if (c->shut_wr && c->sock_eof) chan_drop(c, 1, "");
}

static void mux_frame(uint8_t type, uint32_t id, const unsigned char *p, uint32_t len) {
  if (type == T_MUX_HELLO) {
    drop_all();
    synced = 1;
    if (len == 8) mux_send(T_MUX_READY, 0, p, 8);
    if (agent_status >= 0) mux_send_u32(T_G_AGENT_EXIT, 0, (uint32_t)agent_status);
    return;
  }
  if (!synced) return;
  if (type == T_OPEN) {
    chan_open(id);
    return;
  }
  struct mux_chan *c = chan_find(id);
  if (!c) return; /* closed meanwhile: its frames are stale */
  switch (type) {
    case T_DATA:
      if (c->host_eof || len > MUX_WINDOW - c->len) {
        chan_drop(c, 1, "the host overran the channel window");
        return;
      }
      memcpy(c->buf + c->len, p, len);
      c->len += len;
      chan_flush(c);
      break;
    case T_EOF:
      c->host_eof = 1;
      chan_flush(c);
      break;
    case T_CLOSE:
      chan_drop(c, 0, "");
      break;
    case T_WINDOW:
      if (len == 4) {
        uint32_t more = get_u32(p);
        c->credit = more > 2u * MUX_WINDOW - c->credit ? 2u * MUX_WINDOW : c->credit + more;
      }
      break;
    default:
      break;
  }
}

/* Reads what the agent sent, within the host's window. */
static void chan_read(struct mux_chan *c) {
  static unsigned char buf[MUX_MAX_DATA];
  size_t want = c->credit < sizeof buf ? c->credit : sizeof buf;
  ssize_t r = read(c->fd, buf, want);
  if (r < 0) {
    if (errno != EAGAIN && errno != EINTR) chan_drop(c, 1, "read from the agent failed");
    return;
  }
  if (r == 0) {
    c->sock_eof = 1;
    mux_send(T_G_EOF, c->id, NULL, 0);
    if (c->shut_wr) chan_drop(c, 1, "");
    return;
  }
  c->credit -= (uint32_t)r;
  mux_send(T_G_DATA, c->id, buf, (size_t)r);
}

/* Finds /dev/vdX by its virtio serial (want=1) or the first one without it (want=0). */
static int find_disk(char *out, size_t n, int want_bundle) {
  DIR *d = opendir("/sys/block");
  if (!d) return -1;
  struct dirent *e;
  int found = -1;
  while ((e = readdir(d)) && found < 0) {
    if (strncmp(e->d_name, "vd", 2) != 0) continue;
    char path[300], serial[64] = {0};
    snprintf(path, sizeof path, "/sys/block/%s/serial", e->d_name);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd >= 0) {
      ssize_t r = read(fd, serial, sizeof serial - 1);
      close(fd);
      if (r > 0 && serial[r - 1] == '\n') serial[r - 1] = 0;
    }
    int is_bundle = strcmp(serial, BUNDLE_SERIAL) == 0;
    if (is_bundle == want_bundle) {
      snprintf(out, n, "/dev/%s", e->d_name);
      found = 0;
    }
  }
  closedir(d);
  return found;
}

/* Reads the bundle's NUL-separated argv (written by the host as .vulcan-argv). */
static char **bundle_argv(void) {
  static char data[4096];
  static char *argv[32];
  int fd = open(BUNDLE_MOUNT "/.vulcan-argv", O_RDONLY | O_CLOEXEC);
  if (fd < 0) return NULL;
  ssize_t n = read(fd, data, sizeof data - 1);
  close(fd);
  if (n <= 0) return NULL;
  data[n] = 0;
  int argc = 0;
  for (char *p = data; p < data + n && argc < 31; p += strlen(p) + 1) argv[argc++] = p;
  argv[argc] = NULL;
  return argc ? argv : NULL;
}

static void start_agent(unsigned mem_mb, unsigned pids_max) {
  char num[32];
  if (mem_mb) {
    snprintf(num, sizeof num, "%llu", (unsigned long long)mem_mb * 1024 * 1024);
    write_file(CG "/memory.max", num);
    write_file(CG "/memory.swap.max", "0");
  }
  if (pids_max) {
    snprintf(num, sizeof num, "%u", pids_max);
    write_file(CG "/pids.max", num);
  }
  char **argv = bundle_argv();
  if (!argv) fault(0, "the agent bundle has no .vulcan-argv");
  agent_pid = fork();
  if (agent_pid < 0) fault(0, "fork: %s", strerror(errno));
  if (agent_pid > 0) return;
  if (write_file(CG "/cgroup.procs", "0") != 0) _exit(125);
  setsid();
  if (chroot(ROOT) != 0 || chdir("/work") != 0) _exit(125);
  int null = open("/dev/null", O_RDONLY | O_CLOEXEC);
  if (null >= 0) dup2(null, 0);
  syscall(SYS_close_range, 3, ~0U, 0);
  umask(022);
  if (setgroups(0, NULL) != 0 || setresgid(SANDBOX_UID, SANDBOX_UID, SANDBOX_UID) != 0 || setresuid(SANDBOX_UID, SANDBOX_UID, SANDBOX_UID) != 0) _exit(125);
  prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
  sigset_t none;
  sigemptyset(&none);
  sigprocmask(SIG_SETMASK, &none, NULL);
  signal(SIGPIPE, SIG_DFL);
  signal(SIGCHLD, SIG_DFL);
  char *envp[] = {"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/work", "LANG=C.UTF-8",
                  "VULCAN_AGENT_SOCKET=/.vulcan-run/agent.sock", NULL};
  execve(argv[0], argv, envp);
  dprintf(2, "vulcan-agent: cannot start the sandbox agent %s: %s\n", argv[0], strerror(errno));
  _exit(127);
}

static void reap(void) {
  int st;
  pid_t p;
  while ((p = waitpid(-1, &st, WNOHANG)) > 0) {
    if (p != agent_pid) continue; /* an orphaned process of the sandbox */
    agent_pid = -1;
    agent_status = st;
    console("vulcan-agent: the sandbox agent exited (status %d)\n", st);
    if (synced) mux_send_u32(T_G_AGENT_EXIT, 0, (uint32_t)st);
  }
}

/* The loopback interface up (127.0.0.1): the preview relay reaches ports there. There is no other interface. */
static void loopback_up(void) {
  int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (s < 0) return;
  struct ifreq ifr;
  memset(&ifr, 0, sizeof ifr);
  snprintf(ifr.ifr_name, sizeof ifr.ifr_name, "lo");
  if (ioctl(s, SIOCGIFFLAGS, &ifr) == 0) {
    ifr.ifr_flags |= IFF_UP | IFF_RUNNING;
    if (ioctl(s, SIOCSIFFLAGS, &ifr) != 0) console("vulcan-agent: lo up: %s\n", strerror(errno));
  }
  close(s);
}

static void sandbox_main(unsigned disk_mb) {
  const char *v = getenv("vulcan_mem_mb");
  unsigned mem_mb = v ? (unsigned)strtoul(v, NULL, 10) : 0;
  v = getenv("vulcan_pids_max");
  unsigned pids_max = v ? (unsigned)strtoul(v, NULL, 10) : 1024;

  char root_dev[300], bundle_dev[300];
  uint64_t deadline = now_ms() + 5000;
  while (find_disk(bundle_dev, sizeof bundle_dev, 1) != 0 || find_disk(root_dev, sizeof root_dev, 0) != 0) {
    if (now_ms() > deadline) fault(0, "the root and agent disks did not appear");
    usleep(2000);
  }
  prepare_root(disk_mb, root_dev);
  if (wait_path(bundle_dev, 5000) != 0) fault(0, "no agent disk %s", bundle_dev);
  mkdir(BUNDLE_MOUNT, 0755);
  if (mount(bundle_dev, BUNDLE_MOUNT, "erofs", MS_RDONLY | MS_NODEV | MS_NOSUID, NULL) != 0) fault(0, "mount the agent bundle: %s", strerror(errno));
  /* A PTY for the shell: the sandbox's own devpts. */
  mkdir(ROOT "/dev/pts", 0755);
  if (mount("devpts", ROOT "/dev/pts", "devpts", MS_NOSUID | MS_NOEXEC, "newinstance,ptmxmode=0666,mode=0620") == 0) symlink("pts/ptmx", ROOT "/dev/ptmx");
  if (chown(ROOT "/work", SANDBOX_UID, SANDBOX_UID) != 0) fault(0, "chown /work: %s", strerror(errno));
  mkdir(RUN_DIR, 0700);
  if (chown(RUN_DIR, SANDBOX_UID, SANDBOX_UID) != 0) fault(0, "chown %s: %s", RUN_DIR, strerror(errno));
  loopback_up();
  for (int i = 0; i < MUX_MAX_CHANNELS; i++) chans[i].fd = -1;
  start_agent(mem_mb, pids_max);
  set_nonblock(chan);

  static unsigned char in[2 * MUX_MAX_FRAME];
  size_t inlen = 0;
  for (;;) {
    if (port_down && synced) {
      drop_all();
      synced = 0;
      inlen = 0;
    }
    struct pollfd pf[2 + MUX_MAX_CHANNELS];
    int idx[MUX_MAX_CHANNELS];
    int n = 0;
    pf[n++] = (struct pollfd){.fd = sigpipe_fds[0], .events = POLLIN};
    pf[n++] = (struct pollfd){.fd = port_down ? -1 : chan, .events = POLLIN};
    for (int i = 0; i < MUX_MAX_CHANNELS; i++) {
      struct mux_chan *c = &chans[i];
      if (!c->used) continue;
      short ev = (short)((c->credit > 0 && !c->sock_eof ? POLLIN : 0) | (c->off < c->len ? POLLOUT : 0));
      idx[n - 2] = i;
      pf[n++] = (struct pollfd){.fd = ev ? c->fd : -1, .events = ev};
    }
    if (poll(pf, (nfds_t)n, port_down ? 50 : 1000) < 0 && errno != EINTR) continue;
    if (pf[0].revents & POLLIN) {
      char drain[64];
      while (read(sigpipe_fds[0], drain, sizeof drain) > 0) {
      }
    }
    reap();
    if (port_down || (pf[1].revents & (POLLIN | POLLHUP | POLLERR))) {
      ssize_t r = read(chan, in + inlen, sizeof in - inlen);
      if (r == 0 || (r < 0 && errno != EAGAIN && errno != EINTR)) {
        /* The host is gone (a server restart): forget everything until its next HELLO. */
        if (!port_down) drop_all();
        port_down = 1;
        synced = 0;
        inlen = 0;
      } else if (r > 0) {
        port_down = 0;
        inlen += (size_t)r;
        size_t off = 0;
        while (inlen - off >= FRAME_HEADER_BYTES) {
          uint32_t len = get_u32(in + off);
          if (len < 5 || len + 4 > MUX_MAX_FRAME) {
            console("vulcan-agent: bad host frame length %u; waiting for a new HELLO\n", len);
            drop_all();
            synced = 0;
            off = inlen;
            break;
          }
          if (inlen - off < len + 4) break;
          mux_frame(in[off + 4], get_u32(in + off + 5), in + off + FRAME_HEADER_BYTES, len - 5);
          off += len + 4;
        }
        memmove(in, in + off, inlen - off);
        inlen -= off;
      } else if (port_down) {
        port_down = 0; /* EAGAIN: connected again, nothing to read yet */
      }
    }
    for (int k = 2; k < n; k++) {
      struct mux_chan *c = &chans[idx[k - 2]];
      if (!c->used || pf[k].fd < 0 || pf[k].fd != c->fd || !pf[k].revents) continue;
      if (pf[k].revents & POLLOUT) chan_flush(c);
      if (c->used && (pf[k].revents & (POLLIN | POLLHUP | POLLERR)) && c->credit > 0 && !c->sock_eof) chan_read(c);
      else if (c->used && (pf[k].revents & POLLERR)) chan_drop(c, 1, "socket error");
    }
  }
}
