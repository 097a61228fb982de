/*
 * vulcan-agent: PID 1 of a Vulcan microVM.
 *
 * It loads the virtio modules, mounts the image's read-only disk under a tmpfs overlay,
 * opens the virtio-serial port "vulcan.agent", says HELLO, and then waits for exactly one
 * RUN frame. It runs that workload as an unprivileged user in a chroot of the overlay,
 * inside a cgroup with memory and pids limits, streams its stdout and stderr, forwards the
 * runner's result channel (fd 3), and reports how it ended. The VM is never reused: after
 * EXIT the agent idles until the host kills the VM.
 *
 * Built static (gcc -static) so it needs nothing from the image; see guest/build.sh.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/reboot.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/types.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "protocol.h"

/* musl ships no kernel headers: the two kernel ABI numbers used here, from linux/random.h and unistd_64.h. */
#ifndef RNDADDENTROPY
#define RNDADDENTROPY _IOW('R', 0x03, int[2])
#endif
#ifndef SYS_close_range
#define SYS_close_range 436
#endif

#define ROOT "/root"
#define RW "/rw"
#define CG "/sys/fs/cgroup/w"
#define PORT_NAME "vulcan.agent"

static int chan = -1;
static int sigpipe_fds[2] = {-1, -1};

static void console(const char *fmt, ...) {
  char buf[512];
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  if (n > 0) {
    if (n > (int)sizeof buf - 1) n = sizeof buf - 1;
    ssize_t w = write(2, buf, (size_t)n);
    (void)w;
  }
}

static uint64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static int write_all(int fd, const void *buf, size_t n) {
  const char *p = buf;
  while (n > 0) {
    ssize_t w = write(fd, p, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN) {
        struct pollfd pf = {.fd = fd, .events = POLLOUT};
        poll(&pf, 1, 100);
        continue;
      }
      return -1;
    }
    p += w;
    n -= (size_t)w;
  }
  return 0;
}

static int read_full(int fd, void *buf, size_t n) {
  char *p = buf;
  while (n > 0) {
    ssize_t r = read(fd, p, n);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return -1;
    p += r;
    n -= (size_t)r;
  }
  return 0;
}

static void put_u32(unsigned char *p, uint32_t v) {
  p[0] = (unsigned char)(v >> 24);
  p[1] = (unsigned char)(v >> 16);
  p[2] = (unsigned char)(v >> 8);
  p[3] = (unsigned char)v;
}

static uint32_t get_u32(const unsigned char *p) {
  return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | (uint32_t)p[3];
}

/* Sends one frame, splitting payloads above the guest's frame bound. */
static void send_frame(uint8_t type, uint32_t id, const void *data, size_t len) {
  const char *p = data;
  do {
    size_t part = len;
    if (part > GUEST_MAX_FRAME - 5) part = GUEST_MAX_FRAME - 5;
    unsigned char hdr[FRAME_HEADER_BYTES];
    put_u32(hdr, (uint32_t)(part + 5));
    hdr[4] = type;
    put_u32(hdr + 5, id);
    if (chan < 0 || write_all(chan, hdr, sizeof hdr) < 0 || write_all(chan, p, part) < 0) return;
    p += part;
    len -= part;
  } while (len > 0);
}

static void idle_forever(void) {
  for (;;) {
    pause();
    while (waitpid(-1, NULL, WNOHANG) > 0) {
    }
  }
}

static void fault(uint32_t id, const char *fmt, ...) {
  char buf[1024];
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  if (n < 0) n = 0;
  if (n > (int)sizeof buf - 1) n = sizeof buf - 1;
  console("vulcan-agent: %s\n", buf);
  send_frame(T_FAULT, id, buf, (size_t)n);
  idle_forever();
}

static int write_file(const char *path, const char *text) {
  int fd = open(path, O_WRONLY | O_CLOEXEC);
  if (fd < 0) return -1;
  int rc = write_all(fd, text, strlen(text));
  close(fd);
  return rc;
}

static long read_counter(const char *path, const char *key) {
  char buf[4096];
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return -1;
  ssize_t n = read(fd, buf, sizeof buf - 1);
  close(fd);
  if (n <= 0) return -1;
  buf[n] = 0;
  size_t klen = strlen(key);
  for (char *line = buf; line && *line; line = strchr(line, '\n') ? strchr(line, '\n') + 1 : NULL) {
    if (strncmp(line, key, klen) == 0 && line[klen] == ' ') return strtol(line + klen + 1, NULL, 10);
  }
  return -1;
}

static void load_modules(void) {
  FILE *f = fopen("/etc/vulcan/modules", "re");
  if (!f) return;
  char name[256];
  while (fgets(name, sizeof name, f)) {
    name[strcspn(name, "\n")] = 0;
    if (!name[0]) continue;
    char path[320];
    snprintf(path, sizeof path, "/lib/modules/%s", name);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
      console("vulcan-agent: no module %s\n", path);
      continue;
    }
    if (syscall(SYS_finit_module, fd, "", 0) != 0 && errno != EEXIST) console("vulcan-agent: module %s: %s\n", name, strerror(errno));
    close(fd);
  }
  fclose(f);
}

/* Finds /dev/vportNpM whose name is PORT_NAME; waits for the driver up to timeout_ms. */
static int open_port(int timeout_ms) {
  uint64_t deadline = now_ms() + (uint64_t)timeout_ms;
  do {
    DIR *d = opendir("/sys/class/virtio-ports");
    if (d) {
      struct dirent *e;
      while ((e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        char path[300], name[64] = {0};
        snprintf(path, sizeof path, "/sys/class/virtio-ports/%s/name", e->d_name);
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0) continue;
        ssize_t n = read(fd, name, sizeof name - 1);
        close(fd);
        if (n > 0 && name[n - 1] == '\n') name[n - 1] = 0;
        if (strcmp(name, PORT_NAME) != 0) continue;
        snprintf(path, sizeof path, "/dev/%s", e->d_name);
        int port = open(path, O_RDWR | O_CLOEXEC);
        if (port >= 0) {
          closedir(d);
          return port;
        }
      }
      closedir(d);
    }
    usleep(2000);
  } while (now_ms() < deadline);
  return -1;
}

static int wait_path(const char *path, int timeout_ms) {
  uint64_t deadline = now_ms() + (uint64_t)timeout_ms;
  struct stat st;
  while (stat(path, &st) != 0) {
    if (now_ms() >= deadline) return -1;
    usleep(2000);
  }
  return 0;
}

static void mkdir_p(const char *path, mode_t mode) {
  char buf[512];
  snprintf(buf, sizeof buf, "%s", path);
  for (char *p = buf + 1; *p; p++) {
    if (*p == '/') {
      *p = 0;
      mkdir(buf, mode);
      *p = '/';
    }
  }
  mkdir(buf, mode);
}

static void make_dev(const char *name, unsigned maj, unsigned min) {
  char path[64];
  snprintf(path, sizeof path, ROOT "/dev/%s", name);
  mknod(path, S_IFCHR | 0666, makedev(maj, min));
  chmod(path, 0666);
}

/* Mounts the image disk read-only under a tmpfs overlay at ROOT and prepares /proc, /dev, /tmp, /work. */
static void prepare_root(unsigned disk_mb, const char *dev) {
  mkdir("/rom", 0755);
  mkdir(RW, 0755);
  mkdir(ROOT, 0755);
  if (wait_path(dev, 5000) != 0) fault(0, "no root disk %s", dev);
  static const char *fstypes[] = {"erofs", "squashfs", "ext4"};
  int mounted = 0;
  for (size_t i = 0; i < sizeof fstypes / sizeof *fstypes && !mounted; i++)
    mounted = mount(dev, "/rom", fstypes[i], MS_RDONLY | MS_NODEV, NULL) == 0;
  if (!mounted) fault(0, "cannot mount %s: %s", dev, strerror(errno));
  char opts[128];
  snprintf(opts, sizeof opts, "size=%um,mode=0755", disk_mb);
  if (mount("tmpfs", RW, "tmpfs", MS_NODEV | MS_NOSUID, opts) != 0) fault(0, "mount %s: %s", RW, strerror(errno));
  mkdir(RW "/u", 0755);
  mkdir(RW "/w", 0755);
  if (mount("overlay", ROOT, "overlay", MS_NODEV, "lowerdir=/rom,upperdir=" RW "/u,workdir=" RW "/w") != 0)
    fault(0, "mount overlay: %s", strerror(errno));
  static const char *dirs[] = {ROOT "/proc", ROOT "/dev", ROOT "/tmp", ROOT "/work", ROOT "/vulcan"};
  for (size_t i = 0; i < sizeof dirs / sizeof *dirs; i++) mkdir(dirs[i], 0755);
  chmod(ROOT "/tmp", 01777);
  chmod(ROOT "/vulcan", 0755);
  /* hidepid=invisible: the workload's user cannot see the agent (Linux >= 5.8). */
  if (mount("proc", ROOT "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, "hidepid=invisible") != 0)
    mount("proc", ROOT "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL);
  snprintf(opts, sizeof opts, "size=%um,mode=0755", disk_mb);
  mount("tmpfs", ROOT "/dev", "tmpfs", MS_NOSUID | MS_NOEXEC, opts);
  make_dev("null", 1, 3);
  make_dev("zero", 1, 5);
  make_dev("full", 1, 7);
  make_dev("random", 1, 8);
  make_dev("urandom", 1, 9);
  make_dev("tty", 5, 0);
  mkdir(ROOT "/dev/shm", 01777);
  chmod(ROOT "/dev/shm", 01777);
  symlink("/proc/self/fd", ROOT "/dev/fd");
  symlink("/proc/self/fd/0", ROOT "/dev/stdin");
  symlink("/proc/self/fd/1", ROOT "/dev/stdout");
  symlink("/proc/self/fd/2", ROOT "/dev/stderr");
}

static void prepare_cgroup(void) {
  mkdir("/sys/fs/cgroup", 0755);
  if (mount("cgroup2", "/sys/fs/cgroup", "cgroup2", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL) != 0) fault(0, "mount cgroup2: %s", strerror(errno));
  if (write_file("/sys/fs/cgroup/cgroup.subtree_control", "+memory +pids") != 0) fault(0, "enable memory,pids controllers: %s", strerror(errno));
  if (mkdir(CG, 0755) != 0 && errno != EEXIST) fault(0, "mkdir %s: %s", CG, strerror(errno));
}

/* ---- one run ---- */

struct run {
  uint32_t id;
  char **argv;
  size_t argc;
  char **envp;
  size_t envc;
  const char *cwd;
  const unsigned char *stdin_buf;
  size_t stdin_len;
  uint32_t mem_mb, pids_max, disk_mb, uid;
};

static void on_sigchld(int sig) {
  (void)sig;
  int saved = errno;
  ssize_t w = write(sigpipe_fds[1], "c", 1);
  (void)w;
  errno = saved;
}

static int push_str(char ***list, size_t *count, const unsigned char *p, uint32_t len) {
  char *s = malloc(len + 1);
  char **grown = realloc(*list, (*count + 2) * sizeof **list);
  if (!s || !grown) return -1;
  memcpy(s, p, len);
  s[len] = 0;
  grown[(*count)++] = s;
  grown[*count] = NULL;
  *list = grown;
  return 0;
}

static int safe_path(const char *path) {
  return path[0] == '/' && !strstr(path, "/../") && strcmp(path + strlen(path) - (strlen(path) >= 3 ? 3 : 0), "/..") != 0;
}

static void put_file(uint32_t id, const unsigned char *p, uint32_t len) {
  if (len < 6) fault(id, "short FILE field");
  uint32_t mode = get_u32(p) & 0777;
  uint32_t plen = ((uint32_t)p[4] << 8) | p[5];
  if (plen == 0 || plen > 255 || 6 + plen > len) fault(id, "bad FILE path");
  char rel[256], full[300];
  memcpy(rel, p + 6, plen);
  rel[plen] = 0;
  if (!safe_path(rel) || strlen(rel) != plen) fault(id, "unsafe FILE path %s", rel);
  snprintf(full, sizeof full, ROOT "%s", rel);
  char dir[300];
  snprintf(dir, sizeof dir, "%s", full);
  char *slash = strrchr(dir, '/');
  if (slash && slash != dir) {
    *slash = 0;
    mkdir_p(dir, 0755);
  }
  int fd = open(full, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, mode);
  if (fd < 0) fault(id, "create %s: %s", rel, strerror(errno));
  if (write_all(fd, p + 6 + plen, len - 6 - plen) != 0) fault(id, "write %s: %s", rel, strerror(errno));
  fchmod(fd, mode);
  close(fd);
}

static void parse_run(struct run *r, const unsigned char *p, size_t len) {
  size_t off = 0;
  while (off < len) {
    if (len - off < 5) fault(r->id, "truncated RUN field");
    uint8_t tag = p[off];
    uint32_t flen = get_u32(p + off + 1);
    off += 5;
    if (flen > len - off) fault(r->id, "RUN field overruns frame");
    const unsigned char *f = p + off;
    switch (tag) {
      case F_ARG:
        if (push_str(&r->argv, &r->argc, f, flen)) fault(r->id, "out of memory");
        break;
      case F_ENV:
        if (push_str(&r->envp, &r->envc, f, flen)) fault(r->id, "out of memory");
        break;
      case F_CWD: {
        char *s = NULL;
        size_t n = 0;
        char **tmp = NULL;
        if (push_str(&tmp, &n, f, flen)) fault(r->id, "out of memory");
        s = tmp[0];
        free(tmp);
        r->cwd = s;
        break;
      }
      case F_FILE:
        put_file(r->id, f, flen);
        break;
      case F_STDIN:
        r->stdin_buf = f;
        r->stdin_len = flen;
        break;
      case F_LIMITS:
        if (flen < 16) fault(r->id, "short LIMITS field");
        r->mem_mb = get_u32(f);
        r->pids_max = get_u32(f + 4);
        r->disk_mb = get_u32(f + 8);
        r->uid = get_u32(f + 12);
        break;
      case F_SEED: {
        struct {
          int entropy_count;
          int buf_size;
          unsigned char buf[256];
        } seed;
        uint32_t n = flen > sizeof seed.buf ? sizeof seed.buf : flen;
        memcpy(seed.buf, f, n);
        seed.entropy_count = (int)n * 8;
        seed.buf_size = (int)n;
        int fd = open("/dev/urandom", O_RDWR | O_CLOEXEC);
        if (fd >= 0) {
          /* Clones of one snapshot share the guest's CRNG state: reseed each one from the host. */
          if (ioctl(fd, RNDADDENTROPY, &seed) != 0) write_all(fd, f, n);
          close(fd);
        }
        break;
      }
      default:
        break; /* unknown fields are skipped, for forward compatibility */
    }
    off += flen;
  }
  if (r->argc == 0) fault(r->id, "RUN without argv");
}

static void set_nonblock(int fd) { fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK); }

static void child_exec(struct run *r, int in_fd, int out_fd, int err_fd, int res_fd) {
  if (write_file(CG "/cgroup.procs", "0") != 0) _exit(125);
  setsid();
  if (chroot(ROOT) != 0 || chdir(r->cwd ? r->cwd : "/") != 0) _exit(125);
  if (dup2(in_fd, 0) < 0 || dup2(out_fd, 1) < 0 || dup2(err_fd, 2) < 0 || dup2(res_fd, 3) < 0) _exit(125);
  syscall(SYS_close_range, 4, ~0U, 0);
  struct rlimit core = {0, 0};
  setrlimit(RLIMIT_CORE, &core);
  umask(022);
  if (setgroups(0, NULL) != 0 || setresgid(r->uid, r->uid, r->uid) != 0 || setresuid(r->uid, r->uid, r->uid) != 0) _exit(125);
  prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
  sigset_t none;
  sigemptyset(&none);
  sigprocmask(SIG_SETMASK, &none, NULL);
  signal(SIGPIPE, SIG_DFL);
  signal(SIGCHLD, SIG_DFL);
  /* execvpe searches the caller's PATH, not envp's: take the workload's. */
  clearenv();
  for (size_t i = 0; i < r->envc; i++)
    if (strncmp(r->envp[i], "PATH=", 5) == 0) setenv("PATH", r->envp[i] + 5, 1);
  execvpe(r->argv[0], r->argv, r->envp ? r->envp : (char *[]){NULL});
  dprintf(2, "vulcan-agent: cannot run %s: %s\n", r->argv[0], strerror(errno));
  _exit(127);
}

static void run_one(struct run *r) {
  char opts[64];
  if (r->disk_mb == 0) r->disk_mb = 64;
  snprintf(opts, sizeof opts, "size=%um", r->disk_mb);
  mount("tmpfs", RW, "tmpfs", MS_REMOUNT | MS_NODEV | MS_NOSUID, opts);
  if (chown(ROOT "/work", r->uid, r->uid) != 0) fault(r->id, "chown /work: %s", strerror(errno));
  char num[32];
  if (r->mem_mb) {
    snprintf(num, sizeof num, "%llu", (unsigned long long)r->mem_mb * 1024 * 1024);
    if (write_file(CG "/memory.max", num) != 0) fault(r->id, "memory.max: %s", strerror(errno));
    write_file(CG "/memory.swap.max", "0");
    write_file(CG "/memory.oom.group", "1");
  }
  if (r->pids_max) {
    snprintf(num, sizeof num, "%u", r->pids_max);
    if (write_file(CG "/pids.max", num) != 0) fault(r->id, "pids.max: %s", strerror(errno));
  }

  int in[2], out[2], err[2], res[2];
  if (pipe2(in, O_CLOEXEC) || pipe2(out, O_CLOEXEC) || pipe2(err, O_CLOEXEC) || pipe2(res, O_CLOEXEC)) fault(r->id, "pipe: %s", strerror(errno));
  uint64_t t0 = now_ms();
  pid_t pid = fork();
  if (pid < 0) fault(r->id, "fork: %s", strerror(errno));
  if (pid == 0) child_exec(r, in[0], out[1], err[1], res[1]);
  close(in[0]);
  close(out[1]);
  close(err[1]);
  close(res[1]);
  send_frame(T_STARTED, r->id, NULL, 0);
  set_nonblock(in[1]);
  set_nonblock(out[0]);
  set_nonblock(err[0]);
  set_nonblock(res[0]);

  int in_fd = in[1], out_fd = out[0], err_fd = err[0], res_fd = res[0];
  size_t in_off = 0, res_total = 0;
  if (r->stdin_len == 0) {
    close(in_fd);
    in_fd = -1;
  }
  int exited = 0, status = 0;
  uint64_t exec_ms = 0, drain_deadline = 0;
  uint32_t flags = 0;
  static unsigned char buf[32 * 1024];

  while (out_fd >= 0 || err_fd >= 0 || res_fd >= 0 || !exited) {
    struct pollfd pf[5];
    int n = 0;
    pf[n++] = (struct pollfd){.fd = sigpipe_fds[0], .events = POLLIN};
    pf[n++] = (struct pollfd){.fd = out_fd, .events = POLLIN};
    pf[n++] = (struct pollfd){.fd = err_fd, .events = POLLIN};
    pf[n++] = (struct pollfd){.fd = res_fd, .events = POLLIN};
    pf[n++] = (struct pollfd){.fd = in_fd, .events = POLLOUT};
    /* While it runs, look at pids.events every 100 ms: a fork bomb that catches EAGAIN would otherwise spin until the timeout. */
    int timeout = 100;
    if (!exited && read_counter(CG "/pids.events", "max") > 0) {
      flags |= X_PIDS;
      write_file(CG "/cgroup.kill", "1");
    }
    if (exited) {
      uint64_t t = now_ms();
      if (t >= drain_deadline) break;
      timeout = (int)(drain_deadline - t);
    }
    if (poll(pf, (nfds_t)n, timeout) < 0 && errno != EINTR) fault(r->id, "poll: %s", strerror(errno));
    if (pf[0].revents & POLLIN) {
      ssize_t ignored = read(sigpipe_fds[0], buf, sizeof buf);
      (void)ignored;
    }
    int st;
    pid_t p;
    while ((p = waitpid(-1, &st, WNOHANG)) > 0) {
      if (p == pid) {
        exited = 1;
        status = st;
        exec_ms = now_ms() - t0;
        /* Descendants may still hold the pipes open: end the whole cgroup, then drain. */
        write_file(CG "/cgroup.kill", "1");
        drain_deadline = now_ms() + 2000;
      }
    }
    int *fds[3] = {&out_fd, &err_fd, &res_fd};
    static const uint8_t types[3] = {T_STDOUT, T_STDERR, T_RESULT};
    for (int i = 0; i < 3; i++) {
      if (!(pf[1 + i].revents & (POLLIN | POLLHUP | POLLERR))) continue;
      ssize_t got = read(*fds[i], buf, sizeof buf);
      if (got < 0 && (errno == EAGAIN || errno == EINTR)) continue;
      if (got <= 0) {
        close(*fds[i]);
        *fds[i] = -1;
        continue;
      }
      if (types[i] == T_RESULT) {
        if (res_total + (size_t)got > RESULT_MAX_BYTES) {
          flags |= X_RESULT_TRUNCATED;
          continue;
        }
        res_total += (size_t)got;
      }
      send_frame(types[i], r->id, buf, (size_t)got);
    }
    if (in_fd >= 0 && (pf[4].revents & (POLLOUT | POLLERR | POLLHUP))) {
      ssize_t w = write(in_fd, r->stdin_buf + in_off, r->stdin_len - in_off);
      if (w > 0) in_off += (size_t)w;
      if ((w < 0 && errno != EAGAIN && errno != EINTR) || in_off >= r->stdin_len) {
        close(in_fd);
        in_fd = -1;
      }
    }
  }

  write_file(CG "/cgroup.kill", "1");
  if (read_counter(CG "/memory.events", "oom_kill") > 0) flags |= X_OOM;
  if (read_counter(CG "/pids.events", "max") > 0) flags |= X_PIDS;
  struct statvfs sv;
  if (statvfs(RW, &sv) == 0 && sv.f_bavail * sv.f_frsize < 64 * 1024) flags |= X_DISK_FULL;

  unsigned char exit_payload[16];
  put_u32(exit_payload, WIFEXITED(status) ? (uint32_t)WEXITSTATUS(status) : 0xffffffffu);
  put_u32(exit_payload + 4, WIFSIGNALED(status) ? (uint32_t)WTERMSIG(status) : 0);
  put_u32(exit_payload + 8, flags);
  put_u32(exit_payload + 12, (uint32_t)exec_ms);
  send_frame(T_EXIT, r->id, exit_payload, sizeof exit_payload);
}

#include "sandbox.c"

int main(void) {
  if (getpid() != 1) {
    console("vulcan-agent: must run as init\n");
    return 1;
  }
  mkdir("/proc", 0755);
  mkdir("/sys", 0755);
  mkdir("/dev", 0755);
  mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL);
  mount("devtmpfs", "/dev", "devtmpfs", MS_NOSUID, NULL);
  const char *bare = getenv("vulcan_bare");
  if (bare && bare[0] == '1') {
    /* The benchmark's floor: the same kernel and initramfs, booted to one printed line. */
    console("VULCAN-BARE-BOOT\n");
    sync();
    reboot(RB_POWER_OFF);
    idle_forever();
  }
  mount("sysfs", "/sys", "sysfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL);

  if (pipe2(sigpipe_fds, O_CLOEXEC | O_NONBLOCK) != 0) return 1;
  struct sigaction sa = {0};
  sa.sa_handler = on_sigchld;
  sa.sa_flags = SA_RESTART | SA_NOCLDSTOP;
  sigaction(SIGCHLD, &sa, NULL);
  signal(SIGPIPE, SIG_IGN);

  load_modules();
  chan = open_port(10000);
  if (chan < 0) {
    console("vulcan-agent: no virtio port %s\n", PORT_NAME);
    idle_forever();
  }
  const char *disk = getenv("vulcan_disk_mb");
  unsigned disk_mb = disk ? (unsigned)strtoul(disk, NULL, 10) : 64;
  prepare_cgroup();
  /* The workload's cgroup is the one memory authority: a big malloc is not refused by the
   * guest's overcommit heuristic, it is OOM-killed by memory.max (reported as memory_limit). */
  write_file("/proc/sys/vm/overcommit_memory", "1");
  const char *mode = getenv("vulcan_mode");
  if (mode && strcmp(mode, "sandbox") == 0) sandbox_main(disk_mb ? disk_mb : 64); /* never returns */
  prepare_root(disk_mb ? disk_mb : 64, "/dev/vda");

  struct utsname u;
  uname(&u);
  char hello[256];
  int hn = snprintf(hello, sizeof hello, "vulcan-agent %d %s", PROTOCOL_VERSION, u.release);
  send_frame(T_HELLO, 0, hello, (size_t)hn);

  for (;;) {
    unsigned char hdr[FRAME_HEADER_BYTES];
    if (read_full(chan, hdr, sizeof hdr) != 0) {
      /* The host went away (or is reconnecting after a snapshot restore): try again. */
      usleep(10000);
      continue;
    }
    uint32_t len = get_u32(hdr);
    uint32_t id = get_u32(hdr + 5);
    if (len < 5 || len > HOST_MAX_FRAME) fault(id, "bad frame length %u", len);
    unsigned char *payload = malloc(len - 5 + 1);
    if (!payload) fault(id, "out of memory");
    if (read_full(chan, payload, len - 5) != 0) fault(id, "short frame");
    if (hdr[4] != T_RUN) {
      free(payload);
      continue;
    }
    struct run r = {.id = id, .uid = 1000, .pids_max = 256, .disk_mb = disk_mb};
    parse_run(&r, payload, len - 5);
    run_one(&r);
    /* A VM is never reused: ignore anything else and wait to be killed. */
    idle_forever();
  }
}
