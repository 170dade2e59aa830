"""What the bench scripts read of a process they started: its CPU time and resident memory.

Shared by benches/compare.py and benches/gameday_scale.py (run from anywhere: Python puts the
script's own folder first on the import path)."""

from __future__ import annotations

import os
import time

CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_clock(pid: int) -> float:
    """The process's CPU time in seconds (CPUCLOCK_SCHED of the whole thread group, exited
    threads included)."""
    return time.clock_gettime((~pid << 3) | 2)


def stat_cpu(pid: int) -> float:
    """utime + stime from /proc/<pid>/stat, in seconds (tick resolution)."""
    with open(f"/proc/{pid}/stat") as f:
        rest = f.read().rsplit(")", 1)[1].split()
    # Fields 14 and 15 of the line; `rest` starts at field 3.
    return (int(rest[11]) + int(rest[12])) / CLK_TCK


def status_kib(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM from /proc/<pid>/status, in KiB."""
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(value.split()[0])
    return out
