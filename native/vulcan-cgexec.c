/*
 * vulcan-cgexec: start a sandbox inside its cgroups, never as root, and make sure that
 * nothing of it outlives the server.
 *
 *   vulcan-cgexec [-u UID] [-g GID] [-j CGROUP_PROCS_FILE]... [-n NICE] [-s batch]
 *                 [-t TIMER_SLACK_US] [-P CALLER_PID] -- PROGRAM [ARG]...
 *
 * Node cannot place a child into a cgroup before the child runs (no clone3 with
 * CLONE_INTO_CGROUP, no pre-exec hook), and moving the sandbox after it started races
 * with its first fork. So this helper forks:
 *
 * - The child writes its own pid into each cgroup.procs file, gives up root
 *   (supplementary groups, gid, uid), asks for SIGKILL when its parent dies, and execs
 *   the sandbox (bwrap). Every process of the workload is born inside its cgroup and never
 *   as root.
 * - The parent stays as a tiny root "shim" outside the cgroup. Its exit mirrors the
 *   child's (the same code, or death by the same signal). When the server dies (the
 *   kernel sends the shim SIGTERM, PR_SET_PDEATHSIG), or on SIGTERM, SIGINT or SIGHUP, it
 *   kills every process in the cgroup (cgroup.kill on v2, a kill loop on v1) and exits.
 *
 * -P names the caller: when this process's parent is not that pid as it starts, the caller
 * died before this process could arm its parent-death signal (it was re-parented), and it
 * starts nothing (exit 125).
 *
 * Why not rely on `bwrap --die-with-parent` alone: bwrap's pid 1 sets its parent-death
 * signal only after the sandbox is set up, so a server that dies in that window leaves
 * the whole sandbox running with nobody to stop it.
 *
 * -n and -s set the sandbox's CPU priority before it starts (every thread it makes inherits
 * them): a nice value (0 to 19, lower priority only) and the SCHED_BATCH policy, under which a
 * woken sandbox never preempts the thread that woke it (the server's event loop).
 *
 * -t sets the sandbox's timer slack (PR_SET_TIMERSLACK, 1 to 100000 µs; every thread and child
 * inherits it): how late the kernel may wake a sleeping thread so that it can wake several at
 * once. The isolate host wants it: isolated-vm's timer thread wakes once per lapsed call
 * timeout, used or not, unless the kernel may fold those wake-ups together.
 *
 * File descriptors are left as they are for the child (the caller passes the sandbox's
 * pipes on them); the shim closes its copies so that the pipes end with the sandbox.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sched.h>
#include <sys/wait.h>
#include <unistd.h>

#define MAX_CGROUPS 16

static void die(const char *what, const char *arg) {
  fprintf(stderr, "vulcan-cgexec: %s %s: %s\n", what, arg ? arg : "", strerror(errno));
  _exit(125);
}

/* The decimal number arg, which must be within min..max; otherwise dies with `what`. */
static long number_in(const char *arg, long min, long max, const char *what) {
  char *end;
  long value = strtol(arg, &end, 10);
  if (*end != '\0' || value < min || value > max) { errno = EINVAL; die(what, arg); }
  return value;
}

/* The directory of a cgroup.procs path, into buf. */
static int cgroup_dir(const char *procs, char *buf, size_t len) {
  const char *slash = strrchr(procs, '/');
  if (!slash || (size_t)(slash - procs) >= len) return -1;
  memcpy(buf, procs, (size_t)(slash - procs));
  buf[slash - procs] = '\0';
  return 0;
}

/* 1 when /proc/PID is a zombie (already dead, waiting to be reaped). */
static int is_zombie(long pid) {
  char path[64], stat[512];
  snprintf(path, sizeof path, "/proc/%ld/stat", pid);
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return 1;
  ssize_t n = read(fd, stat, sizeof stat - 1);
  close(fd);
  if (n <= 0) return 1;
  stat[n] = '\0';
  const char *end = strrchr(stat, ')');
  return end && end[1] == ' ' && end[2] == 'Z';
}

/* SIGKILLs every live process listed in PROCS; returns how many it signalled. */
static int kill_listed(const char *procs) {
  FILE *f = fopen(procs, "re");
  if (!f) return 0;
  int signalled = 0;
  long pid;
  while (fscanf(f, "%ld", &pid) == 1) {
    if (pid <= 1 || pid == (long)getpid() || is_zombie(pid)) continue;
    if (kill((pid_t)pid, SIGKILL) == 0) signalled++;
  }
  fclose(f);
  return signalled;
}

/* Kills everything in the cgroup whose cgroup.procs file is PROCS. */
static void kill_cgroup(const char *procs) {
  char dir[4096], file[4200];
  if (cgroup_dir(procs, dir, sizeof dir) == 0) {
    snprintf(file, sizeof file, "%s/cgroup.kill", dir);
    int fd = open(file, O_WRONLY | O_CLOEXEC);
    if (fd >= 0) {
      ssize_t w = write(fd, "1", 1);
      close(fd);
      if (w == 1) return;
    }
  }
  /* cgroups v1: kill until nothing live is left (forks in flight show up next round). */
  for (int round = 0; round < 500 && kill_listed(procs) > 0; round++) usleep(2000);
}

/* Ends the shim the way the child ended. */
static void mirror(int status) {
  if (WIFEXITED(status)) _exit(WEXITSTATUS(status));
  if (WIFSIGNALED(status)) {
    int sig = WTERMSIG(status);
    struct rlimit none = {0, 0};
    setrlimit(RLIMIT_CORE, &none);
    signal(sig, SIG_DFL);
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, sig);
    sigprocmask(SIG_UNBLOCK, &set, NULL);
    raise(sig);
    _exit(128 + sig);
  }
  _exit(125);
}

int main(int argc, char **argv) {
  long uid = -1, gid = -1, niceness = 0, slack_us = 0, caller = 0;
  int batch = 0;
  const char *cgroups[MAX_CGROUPS];
  int ncgroups = 0;
  int i = 1;
  for (; i < argc; i++) {
    if (strcmp(argv[i], "--") == 0) { i++; break; }
    if (i + 1 >= argc) { errno = EINVAL; die("missing value for", argv[i]); }
    if (strcmp(argv[i], "-u") == 0) uid = strtol(argv[++i], NULL, 10);
    else if (strcmp(argv[i], "-g") == 0) gid = strtol(argv[++i], NULL, 10);
    else if (strcmp(argv[i], "-j") == 0) {
      if (ncgroups == MAX_CGROUPS) { errno = E2BIG; die("too many cgroups", argv[i + 1]); }
      cgroups[ncgroups++] = argv[++i];
    } else if (strcmp(argv[i], "-n") == 0) {
      niceness = number_in(argv[++i], 0, 19, "nice must be 0 to 19:");
    } else if (strcmp(argv[i], "-s") == 0) {
      if (strcmp(argv[++i], "batch") != 0) { errno = EINVAL; die("unknown scheduling policy", argv[i]); }
      batch = 1;
    } else if (strcmp(argv[i], "-t") == 0) {
      slack_us = number_in(argv[++i], 1, 100000, "timer slack must be 1 to 100000 µs:");
    } else if (strcmp(argv[i], "-P") == 0) {
      caller = number_in(argv[++i], 1, LONG_MAX, "caller pid must be a positive number:");
    } else { errno = EINVAL; die("unknown option", argv[i]); }
  }
  if (i >= argc) { errno = EINVAL; die("no program after --", NULL); }

  /* Held for sigwaitinfo below; blocked before the parent-death signal is armed. */
  sigset_t waitset, oldset;
  sigemptyset(&waitset);
  sigaddset(&waitset, SIGCHLD);
  sigaddset(&waitset, SIGTERM);
  sigaddset(&waitset, SIGINT);
  sigaddset(&waitset, SIGHUP);
  sigprocmask(SIG_BLOCK, &waitset, &oldset);
  pid_t server = getppid();
  if (caller > 0 && server != (pid_t)caller) _exit(125); /* the caller died before we ran: start nothing */
  if (prctl(PR_SET_PDEATHSIG, SIGTERM) != 0) die("prctl", NULL);
  if (getppid() != server) _exit(125); /* the server is already gone: start nothing */

  pid_t shim = getpid();
  pid_t child = fork();
  if (child < 0) die("fork", NULL);
  if (child == 0) {
    char pidbuf[32];
    int n = snprintf(pidbuf, sizeof pidbuf, "%d\n", (int)getpid());
    for (int c = 0; c < ncgroups; c++) {
      int fd = open(cgroups[c], O_WRONLY | O_CLOEXEC);
      if (fd < 0) die("open", cgroups[c]);
      if (write(fd, pidbuf, (size_t)n) != n) die("join", cgroups[c]);
      close(fd);
    }
    if (batch) {
      struct sched_param param = { .sched_priority = 0 };
      if (sched_setscheduler(0, SCHED_BATCH, &param) != 0) die("sched_setscheduler", "SCHED_BATCH");
    }
    if (niceness > 0 && setpriority(PRIO_PROCESS, 0, (int)niceness) != 0) die("setpriority", NULL);
    if (slack_us > 0 && prctl(PR_SET_TIMERSLACK, (unsigned long)slack_us * 1000UL, 0, 0, 0) != 0) die("prctl", "PR_SET_TIMERSLACK");
    if (gid >= 0) {
      if (setgroups(0, NULL) != 0) die("setgroups", NULL);
      if (setresgid((gid_t)gid, (gid_t)gid, (gid_t)gid) != 0) die("setgid", NULL);
    }
    if (uid >= 0 && setresuid((uid_t)uid, (uid_t)uid, (uid_t)uid) != 0) die("setuid", NULL);
    /* After the uid change, which clears it. */
    if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0) die("prctl", NULL);
    if (getppid() != shim) _exit(125);
    sigprocmask(SIG_SETMASK, &oldset, NULL);
    execv(argv[i], &argv[i]);
    die("exec", argv[i]);
  }

  /* The shim: keep only stderr (for its own errors); the pipes belong to the sandbox. */
  int devnull = open("/dev/null", O_RDWR | O_CLOEXEC);
  if (devnull >= 0) {
    dup2(devnull, 0);
    dup2(devnull, 1);
  }
  DIR *fds = opendir("/proc/self/fd");
  if (fds) {
    int keep = dirfd(fds);
    struct dirent *e;
    while ((e = readdir(fds)) != NULL) {
      int fd = atoi(e->d_name);
      if (fd > 2 && fd != keep) close(fd);
    }
    closedir(fds);
  }

  for (;;) {
    siginfo_t info;
    int sig = sigwaitinfo(&waitset, &info);
    if (sig < 0) continue;
    if (sig != SIGCHLD && ncgroups > 0) kill_cgroup(cgroups[0]);
    if (sig != SIGCHLD) kill(child, SIGKILL);
    int status;
    pid_t done = waitpid(child, &status, sig == SIGCHLD ? WNOHANG : 0);
    if (done == child) mirror(status);
  }
}
