/*
 * vulcan-spawnd: starts sandbox processes for the server, so that the server never forks.
 *
 *   vulcan-spawnd SOCKET_PATH      (control requests on stdin, replies on stdout)
 *
 * Forking copies the parent's page tables, so its cost grows with the parent's memory: for
 * the ~110 MiB API server it is ~8 ms per sandbox start (measured: 2 ms at 50 MiB, 11 ms at
 * 150 MiB, 21 ms at 350 MiB), a third of a whole bubblewrap start. This helper is a few
 * hundred KiB: its fork costs ~0.1 ms.
 *
 * The server listens on SOCKET_PATH (a unix socket in a root-only directory). For each
 * request, the forked child connects to it once per stdio slot, introduces each connection
 * with the request's 16-byte token and the slot number, puts the connections on fds 0..n-1
 * and execs the program. So the server gets ordinary stream sockets for the child's stdin,
 * stdout, stderr and extra fds, as child_process.spawn would give it (libuv's stdio pipes
 * are socketpairs too).
 *
 * Control frames, server to helper: u32 little-endian length, then
 *   'S' token[16] nfds:u8 file\0 arg1\0 arg2\0 ...   spawn (file is also argv[0])
 *   'K' token[16] signal:u8                                 signal the child
 * Helper to server, fixed 21 bytes:
 *   'E' token[16] status:i32le     the child ended (a wait status)
 *   'F' token[16] errno:i32le      the child could not be started
 *
 * The helper dies with the server (parent-death signal). The children it started are
 * vulcan-cgexec shims, which kill their sandboxes' cgroups when it dies.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#define TOKEN 16
#define MAX_FRAME (1 << 20)
#define MAX_FDS 16
#define MAX_ARGS 4096
#define MAX_CHILDREN 4096

struct child {
  pid_t pid;
  unsigned char token[TOKEN];
};

static struct child children[MAX_CHILDREN];
static int nchildren;
static struct sockaddr_un addr;

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
      die("write to the server");
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

/* In the forked child: connect the stdio slots, then exec. Never returns. */
static void start(const unsigned char *token, int nfds, char **argv, const sigset_t *oldmask, pid_t spawnd) {
  int socks[MAX_FDS];
  /* Die with the helper until the program (vulcan-cgexec) arms its own parent-death signal. */
  if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || getppid() != spawnd) _exit(127);
  for (int i = 0; i < nfds; i++) {
    int s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (s < 0) _exit(127);
    if (connect(s, (struct sockaddr *)&addr, sizeof addr) != 0) _exit(127);
    unsigned char hello[TOKEN + 1];
    memcpy(hello, token, TOKEN);
    hello[TOKEN] = (unsigned char)i;
    if (write(s, hello, sizeof hello) != (ssize_t)sizeof hello) _exit(127);
    /* Out of the way of the low fds that the dup2s below fill. */
    socks[i] = fcntl(s, F_DUPFD_CLOEXEC, 64);
    if (socks[i] < 0) _exit(127);
    close(s);
  }
  for (int i = 0; i < nfds; i++)
    if (dup2(socks[i], i) < 0) _exit(127);
  for (int fd = nfds; fd < 1024; fd++) close(fd);
  signal(SIGPIPE, SIG_DFL);
  sigprocmask(SIG_SETMASK, oldmask, NULL);
  execv(argv[0], argv);
  _exit(127);
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
  int argc = 0;
  for (size_t off = 0; off < slen && argc < MAX_ARGS; off += strlen(strings + off) + 1) argv[argc++] = strings + off;
  argv[argc] = NULL;
  if (argc < 1) {
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
  children[nchildren].pid = pid;
  memcpy(children[nchildren].token, token, TOKEN);
  nchildren++;
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
  if (argc != 2 || strlen(argv[1]) >= sizeof addr.sun_path) {
    fprintf(stderr, "usage: vulcan-spawnd SOCKET_PATH\n");
    return 2;
  }
  addr.sun_family = AF_UNIX;
  strcpy(addr.sun_path, argv[1]);
  pid_t server = getppid();
  if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0) die("prctl");
  if (getppid() != server) return 1;
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
      if (r == 0) return 0; /* the server closed: exit, and the shims kill their sandboxes */
      if (r < 0 || len == 0 || len > MAX_FRAME) die("bad control frame");
      if (read_full(0, frame, len) != 1) die("short control frame");
      if (frame[0] == 'S') spawn_request(frame, len, &oldmask);
      else if (frame[0] == 'K') kill_request(frame, len);
      reap();
    }
  }
}
