/*
 * vulcan-sbx-launch: start a long-lived sandbox that outlives the server.
 *
 *   vulcan-sbx-launch [-u UID] [-g GID] [-j CGROUP_PROCS_FILE]... [-l SOCKET_PATH] -- PROGRAM [ARG]...
 *
 * Like vulcan-cgexec (join the cgroups first, then drop root, then exec), with two
 * differences that sandboxes need:
 * - no parent-death signal: a sandbox must survive a server restart, so it is re-attached;
 * - `-l PATH` creates the agent's listening unix socket as root at PATH (in a root-only
 *   directory that is never bound into the sandbox) and leaves it open on fd 3. The agent
 *   inside accepts on fd 3; the server connects to PATH. The sandbox cannot replace or
 *   redirect that path (a symlink there would point the root server at a host socket).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

static void die(const char *what, const char *arg) {
  fprintf(stderr, "vulcan-sbx-launch: %s %s: %s\n", what, arg ? arg : "", strerror(errno));
  _exit(125);
}

static void make_listener(const char *path) {
  struct sockaddr_un addr;
  if (strlen(path) >= sizeof addr.sun_path) { errno = ENAMETOOLONG; die("socket path", path); }
  int s = socket(AF_UNIX, SOCK_STREAM, 0);
  if (s < 0) die("socket", path);
  memset(&addr, 0, sizeof addr);
  addr.sun_family = AF_UNIX;
  strcpy(addr.sun_path, path);
  unlink(path);
  mode_t old = umask(0077);
  if (bind(s, (struct sockaddr *)&addr, sizeof addr) != 0) die("bind", path);
  umask(old);
  if (listen(s, 128) != 0) die("listen", path);
  if (s != 3) {
    if (dup2(s, 3) != 3) die("dup2", path);
    close(s);
  }
  /* fd 3 must survive the exec into bwrap and the agent. */
  int flags = fcntl(3, F_GETFD);
  if (flags < 0 || fcntl(3, F_SETFD, flags & ~FD_CLOEXEC) != 0) die("fcntl", path);
}

int main(int argc, char **argv) {
  long uid = -1, gid = -1;
  int i = 1;
  char pidbuf[32];
  int n = snprintf(pidbuf, sizeof pidbuf, "%d\n", (int)getpid());
  for (; i < argc; i++) {
    if (strcmp(argv[i], "--") == 0) { i++; break; }
    if (i + 1 >= argc) { errno = EINVAL; die("missing value for", argv[i]); }
    if (strcmp(argv[i], "-u") == 0) uid = strtol(argv[++i], NULL, 10);
    else if (strcmp(argv[i], "-g") == 0) gid = strtol(argv[++i], NULL, 10);
    else if (strcmp(argv[i], "-l") == 0) make_listener(argv[++i]);
    else if (strcmp(argv[i], "-j") == 0) {
      const char *file = argv[++i];
      int fd = open(file, O_WRONLY | O_CLOEXEC);
      if (fd < 0) die("open", file);
      if (write(fd, pidbuf, (size_t)n) != n) die("join", file);
      close(fd);
    } else { errno = EINVAL; die("unknown option", argv[i]); }
  }
  if (i >= argc) { errno = EINVAL; die("no program after --", NULL); }
  if (gid >= 0) {
    if (setgroups(0, NULL) != 0) die("setgroups", NULL);
    if (setresgid((gid_t)gid, (gid_t)gid, (gid_t)gid) != 0) die("setgid", NULL);
  }
  if (uid >= 0 && setresuid((uid_t)uid, (uid_t)uid, (uid_t)uid) != 0) die("setuid", NULL);
  execv(argv[i], &argv[i]);
  die("exec", argv[i]);
  return 125;
}
