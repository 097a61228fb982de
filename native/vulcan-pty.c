/*
 * vulcan-pty: run a program on a new pseudo-terminal, inside a sandbox.
 *
 *   vulcan-pty ROWS COLS -- PROGRAM [ARG]...
 *
 * Node has no PTY without a native addon, so the sandbox agent runs interactive shells
 * through this helper: it opens a PTY pair on the sandbox's own devpts, starts PROGRAM as a
 * session leader with the slave as its controlling terminal, and relays bytes between its
 * own stdin/stdout and the master. Fd 3, when open, carries resize requests as text lines
 * "ROWS COLS\n". Signals it receives (INT, TERM, HUP, QUIT, USR1, USR2, WINCH) go to the
 * program's process group. It exits with the program's exit code (128+N for signal N).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

static volatile pid_t child = -1;
static volatile sig_atomic_t child_done = 0;

static void on_chld(int sig) {
  (void)sig;
  child_done = 1;
}

static void forward(int sig) {
  if (child > 0) kill(-child, sig);
}

static int write_all(int fd, const char *buf, ssize_t len) {
  while (len > 0) {
    ssize_t w = write(fd, buf, (size_t)len);
    if (w < 0) {
      if (errno == EINTR) continue;
      return -1;
    }
    buf += w;
    len -= w;
  }
  return 0;
}

int main(int argc, char **argv) {
  if (argc < 5 || strcmp(argv[3], "--") != 0) {
    fprintf(stderr, "usage: vulcan-pty ROWS COLS -- PROGRAM [ARG]...\n");
    return 125;
  }
  struct winsize ws = {0};
  ws.ws_row = (unsigned short)atoi(argv[1]);
  ws.ws_col = (unsigned short)atoi(argv[2]);
  int master = posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC);
  if (master < 0 || grantpt(master) != 0 || unlockpt(master) != 0) {
    perror("vulcan-pty: openpt");
    return 125;
  }
  char *name = ptsname(master);
  if (!name) {
    perror("vulcan-pty: ptsname");
    return 125;
  }
  ioctl(master, TIOCSWINSZ, &ws);
  pid_t pid = fork();
  if (pid < 0) {
    perror("vulcan-pty: fork");
    return 125;
  }
  if (pid == 0) {
    setsid();
    int slave = open(name, O_RDWR);
    if (slave < 0) _exit(125);
    ioctl(slave, TIOCSCTTY, 0);
    dup2(slave, 0);
    dup2(slave, 1);
    dup2(slave, 2);
    if (slave > 2) close(slave);
    close(3);
    execvp(argv[4], &argv[4]);
    fprintf(stderr, "vulcan-pty: exec %s: %s\n", argv[4], strerror(errno));
    _exit(127);
  }
  child = pid;
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = forward;
  int sigs[] = {SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2};
  for (size_t k = 0; k < sizeof sigs / sizeof sigs[0]; k++) sigaction(sigs[k], &sa, NULL);
  signal(SIGPIPE, SIG_IGN);
  /* gVisor (runsc 2022-12) never reports EIO or POLLHUP on the master once every slave fd is
   * closed, so the program's exit is also watched: SIGCHLD stays blocked except inside
   * ppoll (no lost wake-up), and once the program is gone the loop ends when the master has
   * been quiet for 100 ms (its last output drained first). */
  sigset_t chld, unblocked;
  sigemptyset(&chld);
  sigaddset(&chld, SIGCHLD);
  sigprocmask(SIG_BLOCK, &chld, &unblocked);
  sigdelset(&unblocked, SIGCHLD);
  struct sigaction sc;
  memset(&sc, 0, sizeof sc);
  sc.sa_handler = on_chld;
  sigaction(SIGCHLD, &sc, NULL);
  const struct timespec quiet = {0, 100 * 1000 * 1000};

  int ctl = fcntl(3, F_GETFD) >= 0 ? 3 : -1;
  int in_open = 1;
  char buf[65536];
  char line[64];
  size_t line_len = 0;
  for (;;) {
    struct pollfd fds[3];
    int nfds = 0;
    fds[nfds].fd = master; fds[nfds].events = POLLIN; nfds++;
    fds[nfds].fd = in_open ? 0 : -1; fds[nfds].events = POLLIN; nfds++;
    fds[nfds].fd = ctl; fds[nfds].events = POLLIN; nfds++;
    int r = ppoll(fds, (nfds_t)nfds, child_done ? &quiet : NULL, &unblocked);
    if (r < 0) {
      if (errno == EINTR) continue;
      break;
    }
    if (r == 0) break; /* the program exited and its terminal is quiet */
    if (fds[0].revents & (POLLIN | POLLHUP | POLLERR)) {
      ssize_t got = read(master, buf, sizeof buf);
      if (got <= 0) break; /* EIO: every slave fd closed, the program is gone */
      if (write_all(1, buf, got) != 0) break;
    }
    if (in_open && (fds[1].revents & (POLLIN | POLLHUP | POLLERR))) {
      ssize_t got = read(0, buf, sizeof buf);
      if (got <= 0) {
        in_open = 0;
        /* End of input: send the terminal's EOF character, as a person typing ^D would. */
        char eof = 4;
        write_all(master, &eof, 1);
      } else if (write_all(master, buf, got) != 0) {
        break;
      }
    }
    if (ctl >= 0 && (fds[2].revents & (POLLIN | POLLHUP | POLLERR))) {
      char c;
      ssize_t got = read(ctl, &c, 1);
      if (got <= 0) {
        ctl = -1;
      } else if (c == '\n') {
        line[line_len] = 0;
        unsigned rows = 0, cols = 0;
        if (sscanf(line, "%u %u", &rows, &cols) == 2 && rows > 0 && cols > 0 && rows < 10000 && cols < 10000) {
          ws.ws_row = (unsigned short)rows;
          ws.ws_col = (unsigned short)cols;
          ioctl(master, TIOCSWINSZ, &ws);
        }
        line_len = 0;
      } else if (line_len < sizeof line - 1) {
        line[line_len++] = c;
      }
    }
  }
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return 1;
}
