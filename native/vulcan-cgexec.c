/*
 * vulcan-cgexec: join cgroups, drop to an unprivileged user, then exec.
 *
 *   vulcan-cgexec [-u UID] [-g GID] [-j CGROUP_PROCS_FILE]... -- PROGRAM [ARG]...
 *
 * Node cannot place a child into a cgroup before the child runs (no clone3 with
 * CLONE_INTO_CGROUP, no pre-exec hook), and moving the sandbox after it started races
 * with its first fork. This helper runs as root, writes its own pid into each cgroup.procs
 * file, gives up root (supplementary groups, gid, uid), and only then execs the sandbox
 * (bwrap), so every process of the workload is born inside its cgroup and never as root.
 * File descriptors are left as they are: the caller passes the sandbox's pipes on them.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <unistd.h>

static void die(const char *what, const char *arg) {
  fprintf(stderr, "vulcan-cgexec: %s %s: %s\n", what, arg ? arg : "", strerror(errno));
  _exit(125);
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
  /* Die with the server even before bwrap installs its own parent-death signal. */
  prctl(PR_SET_PDEATHSIG, 9);
  execv(argv[i], &argv[i]);
  die("exec", argv[i]);
  return 125;
}
