// The /proc floor: the CPU a cycle costs that reads nothing but the files faultline's host
// collectors read each cycle (opened once and kept, each read with pread to its end, as the
// agent does) and statfs of its filesystems, and does nothing else: no parsing, no encoding,
// no export. What the agent costs above this is its own work.
//
//   cc -O2 -o /tmp/proc_floor benches/proc_floor.c
//   /tmp/proc_floor CYCLES SLEEP_MS FILE... -- MOUNTPOINT...
//   /tmp/proc_floor CYCLES SLEEP_MS --idle      (the sleep and wake-up alone)
//
// The files of a running agent: ls -l /proc/$(pgrep -x faultline)/fd (those under /proc and
// /sys); its filesystems: the mountpoints of system.filesystem.limit. docs/PERFORMANCE.md
// gives the command line for this host. Prints CPU per cycle (the process CPU clock) after
// three warm-up cycles.
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/statfs.h>
#include <time.h>
#include <unistd.h>

static double cpu_seconds(void) {
  struct timespec t;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
  return t.tv_sec + t.tv_nsec / 1e9;
}

int main(int argc, char **argv) {
  if (argc < 4) {
    fprintf(stderr, "usage: %s CYCLES SLEEP_MS FILE... -- MOUNTPOINT... | --idle\n", argv[0]);
    return 2;
  }
  int cycles = atoi(argv[1]), sleep_ms = atoi(argv[2]);
  int idle = strcmp(argv[3], "--idle") == 0;
  int fds[256], nfiles = 0;
  const char *mounts[64];
  int nmounts = 0, in_mounts = 0;
  for (int i = 3; i < argc && !idle; i++) {
    if (strcmp(argv[i], "--") == 0) {
      in_mounts = 1;
    } else if (in_mounts) {
      if (nmounts < 64) mounts[nmounts++] = argv[i];
    } else if (nfiles < 256) {
      int fd = open(argv[i], O_RDONLY);
      if (fd < 0) {
        perror(argv[i]);
        return 1;
      }
      fds[nfiles++] = fd;
    }
  }
  static char buf[8192];
  struct statfs st;
  double start = 0;
  for (int c = 0; c < cycles + 3; c++) {
    if (c == 3) start = cpu_seconds();
    for (int i = 0; i < nfiles; i++) {
      off_t off = 0;
      ssize_t n;
      while ((n = pread(fds[i], buf, sizeof buf, off)) > 0) off += n;
    }
    for (int m = 0; m < nmounts; m++) statfs(mounts[m], &st);
    if (sleep_ms) usleep(sleep_ms * 1000);
  }
  printf("%d cycles %d ms apart, %d files, %d statfs: %.1f us CPU per cycle\n", cycles, sleep_ms,
         nfiles, nmounts, (cpu_seconds() - start) / cycles * 1e6);
  return 0;
}
