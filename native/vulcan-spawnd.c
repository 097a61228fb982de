/*
 * vulcan-spawnd: forks on behalf of a big Node process, so that the Node process never does.
 *
 *   vulcan-spawnd SOCKET_PATH      (control requests on stdin, replies on stdout)
 *   vulcan-spawnd --probe          (exits 0 at once: a program every sandbox image has)
 *
 * Forking copies the parent's page tables, so its cost grows with the parent's memory: for
 * the ~110 MiB API server it is ~8 ms per sandbox start (measured: 2 ms at 50 MiB, 11 ms at
 * 150 MiB, 21 ms at 350 MiB), a third of a whole bubblewrap start; for the ~45 MiB sandbox
 * agent it is ~1.5 ms of every exec. This helper is static and a few hundred KiB: its fork
 * costs ~0.1 ms. Two users:
 * - the server (src/host/spawner.ts) starts sandbox processes with 'S' requests;
 * - the sandbox agent (src/sandboxes/agent/agent.ts) runs a sandbox's exec commands with
 *   'X' requests (argv with a PATH search, env, cwd, its own session and process group).
 *
 * The caller listens on SOCKET_PATH (a unix socket; a leading '@' names an abstract one, as
 * the agent uses inside a sandbox's own network namespace). For each request, the forked
 * child connects to it once per stdio slot, introduces each connection with the request's
 * 16-byte token and the slot number, puts the connections on fds 0..n-1 and execs the
 * program ('X' children add their pid, u32le, to the introduction). So the caller gets
 * ordinary stream sockets for the child's stdin, stdout, stderr
 * and extra fds, as child_process.spawn would give it (libuv's stdio pipes are socketpairs
 * too). Nothing else of the helper reaches the program: every other fd is closed.
 *
 * Control frames, caller to helper: u32 little-endian length, then
 *   'S' token[16] nfds:u8 file\0 arg1\0 arg2\0 ...   spawn (file is also argv[0])
 *   'X' token[16] nfds:u8 kind[nfds] argc:u16le cwd\0 arg0\0 ... arg(argc-1)\0 env0\0 ...
 *       exec: kind 0 = /dev/null on that fd, 1 = a connection (at least one); arg0 is searched in the
 *       env's PATH like execvp (without its /bin/sh retry); the program leads a new session
 *   'K' token[16] signal:u8                                 signal the child
 * Helper to caller, fixed 21 bytes:
 *   'E' token[16] status:i32le     the child ended (a wait status)
 *   'F' token[16] errno:i32le      the child could not be started (no 'E' follows)
 *
 * The helper dies with its caller (parent-death signal). 'S' children die with the helper
 * until they exec (the server's are vulcan-cgexec shims, which kill their sandboxes' cgroups
 * when it dies); 'X' programs do not: a daemon a command started outlives the exec.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#define TOKEN 16
#define MAX_FRAME (1 << 20)
#define MAX_FDS 16
#define MAX_ARGS 32768
#define MAX_CHILDREN 4096
#define KIND_NULL 0
#define KIND_SOCKET 1

struct child {
  pid_t pid;
  unsigned char token[TOKEN];
};

static struct child children[MAX_CHILDREN];
static int nchildren;
static struct sockaddr_un addr;
/* For an abstract address, also its exact length (0 otherwise): see connect_slot. */
static socklen_t abstract_len;
/* The process that started the helper: the only one its children may connect to. */
static pid_t caller_pid;

static void die(const char *what) {
  fprintf(stderr, "vulcan-spawnd: %s: %s\n", what, strerror(errno));
  _exit(1);
}

static int read_full(int fd, void *buf, size_t n) {
  size_t got = 0;
  while (got < n) {
    ssize_t r = read(fd, (char *)buf + got, n - got);
    if (r == 0) return 0;
    if (r < 0) {
      if (errno == EINTR) continue;
      return -1;
    }
    got += (size_t)r;
  }
  return 1;
}

static void write_full(int fd, const void *buf, size_t n) {
  size_t put = 0;
  while (put < n) {
    ssize_t w = write(fd, (const char *)buf + put, n - put);
    if (w < 0) {
      if (errno == EINTR) continue;
      die("write to the caller");
    }
    put += (size_t)w;
  }
}

static void reply(char type, const unsigned char *token, int32_t value) {
  unsigned char msg[1 + TOKEN + 4];
  msg[0] = (unsigned char)type;
  memcpy(msg + 1, token, TOKEN);
  memcpy(msg + 1 + TOKEN, &value, 4); /* x86-64 and arm64 are little-endian */
  write_full(1, msg, sizeof msg);
}

/*
 * In a forked child: a connection to the caller for slot `slot`, on a fd >= 64 (out of the
 * way of the dup2s), introduced by the token, the slot and, when `pid` is not 0, the pid.
 */
/* A connection to `addr` with length `len`, kept only when the listener is the caller. */
static int connect_caller(socklen_t len) {
  int s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (s < 0) return -1;
  struct ucred cred;
  socklen_t clen = sizeof cred;
  if (connect(s, (struct sockaddr *)&addr, len) == 0) {
    if (getsockopt(s, SOL_SOCKET, SO_PEERCRED, &cred, &clen) == 0 && cred.pid == caller_pid) return s;
    errno = EPERM;
  }
  int err = errno;
  close(s);
  errno = err;
  return -1;
}

static int connect_slot(const unsigned char *token, int slot, pid_t pid) {
  /* An abstract name is its bytes up to the address length, NULs included: Node 20's libuv
     binds the whole sun_path (zero-padded), newer ones the name's exact length. Any process of
     the sandbox can bind the other form of the name, so the listener must be the caller (a
     squatter would get the command's stdio). */
  int s = connect_caller(sizeof addr);
  if (s < 0 && abstract_len != 0) s = connect_caller(abstract_len);
  if (s < 0) return -1;
  unsigned char hello[TOKEN + 1 + 4];
  size_t n = TOKEN + 1;
  memcpy(hello, token, TOKEN);
  hello[TOKEN] = (unsigned char)slot;
  if (pid != 0) {
    uint32_t v = (uint32_t)pid; /* little-endian, like the replies */
    memcpy(hello + n, &v, 4);
    n += 4;
  }
  if (write(s, hello, n) != (ssize_t)n) return -1;
  int high = fcntl(s, F_DUPFD_CLOEXEC, 64);
  close(s);
  return high;
}

/*
 * Closes every fd from `from` up: close_range(2) where the kernel has it (Linux 5.9; this
 * gVisor refuses ~0U as the upper bound, so INT_MAX), else the fds /proc/self/fd lists, else
 * up to 1024. Under gVisor's ptrace platform each syscall costs ~30–200 µs: a blind loop of
 * 1024 closes took 30–230 ms there.
 */
static void close_from(int from) {
  if (syscall(SYS_close_range, (unsigned)from, (unsigned)INT_MAX, 0) == 0) return;
  int dir = open("/proc/self/fd", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dir >= 0) {
    int open_fds[1024];
    int n = 0;
    char buf[4096];
    long got;
    while ((got = syscall(SYS_getdents64, dir, buf, sizeof buf)) > 0) {
      for (long off = 0; off < got;) {
        struct dirent64 *d = (struct dirent64 *)(buf + off);
        int fd = atoi(d->d_name);
        if (d->d_name[0] != '.' && fd >= from && fd != dir && n < 1024) open_fds[n++] = fd;
        off += d->d_reclen;
      }
    }
    close(dir);
    if (got == 0 && n < 1024) {
      for (int i = 0; i < n; i++) close(open_fds[i]);
      return;
    }
  }
  for (int fd = from; fd < 1024; fd++) close(fd);
}

/* In a forked 'S' child: connect the stdio slots, then exec. Never returns. */
static void start(const unsigned char *token, int nfds, char **argv, const sigset_t *oldmask, pid_t spawnd) {
  int socks[MAX_FDS];
  /* Die with the helper until the program (vulcan-cgexec) arms its own parent-death signal. */
  if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || getppid() != spawnd) _exit(127);
  for (int i = 0; i < nfds; i++)
    if ((socks[i] = connect_slot(token, i, 0)) < 0) _exit(127);
  for (int i = 0; i < nfds; i++)
    if (dup2(socks[i], i) < 0) _exit(127);
  close_from(nfds);
  signal(SIGPIPE, SIG_DFL);
  sigprocmask(SIG_SETMASK, oldmask, NULL);
  execv(argv[0], argv);
  _exit(127);
}

/* execvp's search in `env`'s PATH (libuv's rules: EACCES wins over ENOENT; no /bin/sh retry on ENOEXEC). */
static void exec_search(char **argv, char **env) {
  const char *file = argv[0];
  if (strchr(file, '/')) {
    execve(file, argv, env);
    return;
  }
  const char *path = "/usr/bin:/bin";
  for (char **e = env; *e; e++)
    if (strncmp(*e, "PATH=", 5) == 0) path = *e + 5;
  size_t flen = strlen(file);
  int seen_eacces = 0;
  char buf[4096];
  for (const char *p = path;; p++) {
    const char *end = strchrnul(p, ':');
    size_t dlen = (size_t)(end - p);
    if ((dlen == 0 ? 1 : dlen) + 1 + flen + 1 <= sizeof buf) {
      memcpy(buf, p, dlen);
      if (dlen == 0) buf[dlen++] = '.';
      buf[dlen] = '/';
      memcpy(buf + dlen + 1, file, flen + 1);
      execve(buf, argv, env);
      if (errno == EACCES) seen_eacces = 1;
      else if (errno != ENOENT && errno != ENOTDIR) return;
    }
    if (*end == '\0') break;
    p = end;
  }
  errno = seen_eacces ? EACCES : ENOENT;
}

/* In a forked 'X' child: fds, session, cwd, exec; on failure the errno goes to `errfd`. Never returns. */
static void start_exec(const unsigned char *token, int nfds, const unsigned char *kinds, const char *cwd, char **argv, char **env, const sigset_t *oldmask, int errfd) {
  int fds[MAX_FDS];
  int err;
  errfd = fcntl(errfd, F_DUPFD_CLOEXEC, 64);
  if (errfd < 0) _exit(127);
  /* Before the caller learns the pid (in the introductions): a signal to the group must land. */
  if (setsid() < 0) goto fail;
  for (int i = 0; i < nfds; i++) {
    fds[i] = kinds[i] == KIND_SOCKET ? connect_slot(token, i, getpid()) : open("/dev/null", O_RDWR | O_CLOEXEC);
    if (fds[i] < 0) goto fail;
    if (kinds[i] != KIND_SOCKET && fds[i] < 64) {
      int high = fcntl(fds[i], F_DUPFD_CLOEXEC, 64);
      close(fds[i]);
      if ((fds[i] = high) < 0) goto fail;
    }
  }
  for (int i = 0; i < nfds; i++)
    if (dup2(fds[i], i) < 0) goto fail;
  if (dup3(errfd, nfds, O_CLOEXEC) < 0) goto fail;
  errfd = nfds;
  close_from(nfds + 1);
  if (chdir(cwd) != 0) goto fail;
  signal(SIGPIPE, SIG_DFL);
  sigprocmask(SIG_SETMASK, oldmask, NULL);
  exec_search(argv, env);
fail:
  err = errno;
  if (write(errfd, &err, sizeof err) < 0) _exit(127);
  _exit(127);
}

static void track(pid_t pid, const unsigned char *token) {
  children[nchildren].pid = pid;
  memcpy(children[nchildren].token, token, TOKEN);
  nchildren++;
}

/* Splits NUL-terminated strings into `out` (NULL-terminated); the count, or -1 when they do not fit. */
static int split(char *strings, size_t slen, char **out, int max) {
  int n = 0;
  for (size_t off = 0; off < slen; off += strlen(strings + off) + 1) {
    if (n == max) return -1;
    out[n++] = strings + off;
  }
  out[n] = NULL;
  return n;
}

static void spawn_request(unsigned char *frame, size_t len, const sigset_t *oldmask) {
  if (len < 1 + TOKEN + 1 + 1) return;
  const unsigned char *token = frame + 1;
  int nfds = frame[1 + TOKEN];
  char *strings = (char *)frame + 1 + TOKEN + 1;
  size_t slen = len - (1 + TOKEN + 1);
  if (nfds < 3 || nfds > MAX_FDS || strings[slen - 1] != '\0' || nchildren == MAX_CHILDREN) {
    reply('F', token, EINVAL);
    return;
  }
  static char *argv[MAX_ARGS + 1];
  if (split(strings, slen, argv, MAX_ARGS) < 1) {
    reply('F', token, EINVAL);
    return;
  }
  pid_t self = getpid();
  pid_t pid = fork();
  if (pid < 0) {
    reply('F', token, errno);
    return;
  }
  if (pid == 0) start(token, nfds, argv, oldmask, self);
  track(pid, token);
}

static void exec_request(unsigned char *frame, size_t len, const sigset_t *oldmask) {
  if (len < 1 + TOKEN + 1) return;
  const unsigned char *token = frame + 1;
  size_t nfds = frame[1 + TOKEN];
  size_t head = 1 + TOKEN + 1 + nfds + 2;
  if (nfds < 1 || nfds > MAX_FDS || len < head + 1 || frame[len - 1] != '\0' || nchildren == MAX_CHILDREN) {
    reply('F', token, EINVAL);
    return;
  }
  const unsigned char *kinds = frame + 1 + TOKEN + 1;
  /* The caller learns the pid from the connections: at least one is needed. */
  if (memchr(kinds, KIND_SOCKET, nfds) == NULL) {
    reply('F', token, EINVAL);
    return;
  }
  int argc = frame[head - 2] | frame[head - 1] << 8;
  static char *strs[MAX_ARGS + 2];
  int n = split((char *)frame + head, len - head, strs, MAX_ARGS + 1);
  /* cwd, then argc ≥ 1 arguments, then the environment. */
  if (argc < 1 || n < 1 + argc) {
    reply('F', token, n < 0 ? E2BIG : EINVAL);
    return;
  }
  static char *argv[MAX_ARGS + 1];
  memcpy(argv, strs + 1, (size_t)argc * sizeof *argv);
  argv[argc] = NULL;
  char *cwd = strs[0];
  char **env = strs + 1 + argc;
  int pipefd[2];
  if (pipe2(pipefd, O_CLOEXEC) != 0) {
    reply('F', token, errno);
    return;
  }
  pid_t pid = fork();
  if (pid == 0) {
    close(pipefd[0]);
    start_exec(token, (int)nfds, kinds, cwd, argv, env, oldmask, pipefd[1]);
  }
  int err = 0;
  close(pipefd[1]);
  if (pid < 0) err = errno;
  else if (read_full(pipefd[0], &err, sizeof err) != 1) err = 0; /* EOF: the exec succeeded */
  close(pipefd[0]);
  if (pid < 0) {
    reply('F', token, err);
    return;
  }
  if (err != 0) {
    /* Its exit is reaped without a reply. */
    reply('F', token, err);
    waitpid(pid, NULL, 0);
    return;
  }
  track(pid, token);
}

static void kill_request(const unsigned char *frame, size_t len) {
  if (len != 1 + TOKEN + 1) return;
  for (int i = 0; i < nchildren; i++)
    if (memcmp(children[i].token, frame + 1, TOKEN) == 0) kill(children[i].pid, frame[1 + TOKEN]);
}

static void reap(void) {
  int status;
  pid_t pid;
  while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
    for (int i = 0; i < nchildren; i++) {
      if (children[i].pid != pid) continue;
      reply('E', children[i].token, status);
      children[i] = children[--nchildren];
      break;
    }
  }
}

int main(int argc, char **argv) {
  if (argc == 2 && strcmp(argv[1], "--probe") == 0) return 0;
  size_t plen = argc == 2 ? strlen(argv[1]) : 0;
  if (argc != 2 || plen == 0 || plen >= sizeof addr.sun_path) {
    fprintf(stderr, "usage: vulcan-spawnd SOCKET_PATH | @ABSTRACT_NAME | --probe\n");
    return 2;
  }
  addr.sun_family = AF_UNIX;
  memcpy(addr.sun_path, argv[1], plen);
  if (argv[1][0] == '@') {
    addr.sun_path[0] = '\0';
    abstract_len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + plen);
  }
  pid_t caller = getppid();
  caller_pid = caller;
  if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0) die("prctl");
  if (getppid() != caller) return 1;
  signal(SIGPIPE, SIG_IGN);

  sigset_t chld, oldmask;
  sigemptyset(&chld);
  sigaddset(&chld, SIGCHLD);
  sigprocmask(SIG_BLOCK, &chld, &oldmask);
  int sfd = signalfd(-1, &chld, SFD_CLOEXEC | SFD_NONBLOCK);
  if (sfd < 0) die("signalfd");

  static unsigned char frame[MAX_FRAME];
  struct pollfd fds[2] = {{.fd = 0, .events = POLLIN}, {.fd = sfd, .events = POLLIN}};
  for (;;) {
    if (poll(fds, 2, -1) < 0) {
      if (errno == EINTR) continue;
      die("poll");
    }
    if (fds[1].revents) {
      struct signalfd_siginfo si;
      while (read(sfd, &si, sizeof si) > 0) {
      }
      reap();
    }
    if (fds[0].revents) {
      uint32_t len;
      int r = read_full(0, &len, 4);
      if (r == 0) return 0; /* the caller closed: exit (the server's shims then kill their sandboxes) */
      if (r < 0 || len == 0 || len > MAX_FRAME) die("bad control frame");
      if (read_full(0, frame, len) != 1) die("short control frame");
      if (frame[0] == 'S') spawn_request(frame, len, &oldmask);
      else if (frame[0] == 'X') exec_request(frame, len, &oldmask);
      else if (frame[0] == 'K') kill_request(frame, len);
      reap();
    }
  }
}
