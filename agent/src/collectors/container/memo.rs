//! The figures of a container's costlier control files that a cycle may take from the last
//! read instead of reading the file again, and what decides that the file is due ([`Memo`]).
//! Every metric is still recorded every cycle; a skipped file's figures are its last read's,
//! and a file is skipped only where nothing that moves its figures has happened since. Each
//! is also read as a backstop in case a move went unseen: `memory.stat` with the limits
//! (every [`super::LIMITS_EVERY`] cycles), the others, whose skips rest on the kernel's own
//! accounting, every [`super::BACKSTOP_EVERY`].
//!
//! - **`memory.stat`** (inactive file cache and RSS, for the working set, RSS and available
//!   memory): read unless the container's memory usage and its total CPU time are both what
//!   they were at its last read. Allocating, faulting, freeing or touching a page takes CPU
//!   time of the container's own tasks, and charging or uncharging a page moves the usage, so
//!   a container that did neither has the same `anon` pages and the same file pages. What can
//!   still move without either is the split of its file cache between the active and inactive
//!   lists by the kernel's own aging (reclaim driven from outside the container moving pages
//!   to the inactive list): that is caught by reading the file with the limits. On a node
//!   most containers of which idle
//!   (a Kubernetes pod's pause container never runs), this reads the file for the busy ones.
//!   It is the costliest control file: the kernel formats some 40 lines per read (v1 twice as
//!   many, with `total_*` hierarchical sums).
//! - **v1 `memory.oom_control`** (OOM kills): read only after the host's count of OOM kills
//!   (`oom_kill` in `/proc/vmstat`, read once per cycle) moved since the file's last read.
//!   The kernel counts every OOM kill there and in the victim's
//!   memory cgroup in the same function (`__oom_kill_process`), so a host count that did not
//!   move means no container's did. Where `/proc/vmstat` has no `oom_kill` (or cannot be read)
//!   the file is read every cycle. (cgroup v2 has change notification instead: `oom_watch`.)
//! - **v1 `cpu.stat`** (CFS throttling): read every cycle while the container has a CPU quota
//!   (its cached CPU limit), else not: without a quota the kernel runs no bandwidth timer for
//!   the cgroup and its throttling figures stand still. A quota set between two limit reads
//!   is seen, like the CPU limit itself, at the next one.
//! - **`pids.current`, and v1 `cpuacct.stat` and the blkio file** (tasks, the user/system
//!   split, block I/O bytes): read unless the total CPU time (`cpu.stat`, `cpuacct.usage`,
//!   read first) shows none used since they were read. The split is
//!   sampled at the scheduler tick from the container's running tasks; v1 counts a
//!   container's block I/O when its own tasks submit it (v1 has no writeback attribution:
//!   buffered writeback is the root's); a task is counted when a task of the container forks
//!   it and uncounted when it is reaped after running its exit: none of these moves while
//!   none of its tasks runs. (v2's `io.stat` does count writeback done for the container by
//!   kernel threads, so it is read every cycle.) Two moves of the task count can come without
//!   the container's CPU time: a task reaped by a parent outside the container (the runtime's
//!   shim reaps its main process and `exec`'d ones) after the cycle that saw its exit, and a
//!   task moved in from outside (`exec`) before it first runs; both leave the count one off
//!   until the container next runs or the backstop, and both are windows of a few
//!   milliseconds around a cycle's read.
//! - **Pressure files** (`cpu`, `memory`, `io`, each on its own): read unless the host's
//!   `some` stall total for that resource (`/proc/pressure/<resource>`, read once per cycle)
//!   is what it was when the container's file was last read. The kernel
//!   accounts every stalled task in its cgroup and each ancestor up to the system-wide group,
//!   so no stall anywhere means none in any container (`full` implies `some`). Only the
//!   host's microsecond rounding can hide a container's sub-microsecond-per-CPU share of a
//!   stall until the next move. On a busy node the `cpu` and `io` totals move every cycle;
//!   `memory` moves only under memory pressure, so most cycles skip every container's
//!   `memory.pressure`. `cpu.pressure` is also skipped while the container's total CPU time
//!   stands where it was at the last read of its task count (as `pids.current` is): a
//!   container's CPU stall is time its runnable tasks wait for a CPU, and a runnable task is
//!   run within the interval unless it is throttled (a quota, which the container's CPU time
//!   spent in that period) or starved for the whole interval by real-time tasks. A task that
//!   became runnable just before the read and ran just after shows its wait one cycle late:
//!   the total is cumulative, so nothing is lost. On a node whose CPU stall total moves every
//!   cycle, this leaves the idle containers' `cpu.pressure` to the backstop.
//!
//! The host's counters are read at the start of a cycle ([`HostCounters`]), before any
//! container's file: a move after a container's read shows as a move in the next cycle.

use std::path::Path;

use super::cgroup::{IoDevice, MemoryStatDue, Reads, Sample, Throttling};
use crate::collectors::file::KeptFile;
use crate::collectors::host::paging::parse_vmstat;
use crate::collectors::host::pressure::{Pressure, parse_pressure};

/// What the host's counters said at the start of a cycle (`None` where not known).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct HostCounts {
    /// OOM kills since boot (`oom_kill` in `/proc/vmstat`).
    pub(super) ooms: Option<u64>,
    /// The `some` stall totals of `cpu`, `memory` and `io`, microseconds.
    pub(super) stalls: [Option<u64>; 3],
}

/// The host's counters that tell whether a container's costlier file may have moved:
/// `/proc/vmstat` (v1 and hybrid) and `/proc/pressure/*` (with pressure, v2 and hybrid),
/// each kept open ([`KeptFile`]). A file that cannot be read leaves its count unknown, and
/// the files it would gate are read every cycle.
#[derive(Debug, Default)]
pub(super) struct HostCounters {
    vmstat: Option<KeptFile>,
    pressure: Option<[KeptFile; 3]>,
    /// This cycle's figures.
    pub(super) now: HostCounts,
}

impl HostCounters {
    /// For a hierarchy whose OOM counts come from v1 files (`v1`), with container pressure
    /// read (`pressure`).
    pub(super) fn new(v1: bool, pressure: bool) -> Self {
        Self {
            vmstat: v1.then(KeptFile::default),
            pressure: pressure.then(Default::default),
            now: HostCounts::default(),
        }
    }

    /// Reads the counters under `proc` for this cycle.
    pub(super) fn refresh(&mut self, proc: &Path) {
        self.now.ooms = self.vmstat.as_mut().and_then(|f| {
            f.read(&proc.join("vmstat"))
                .ok()
                .and_then(|t| parse_vmstat(t).ok())
                .and_then(|v| v.oom_kill)
        });
        if let Some(files) = &mut self.pressure {
            for ((now, f), r) in self.now.stalls.iter_mut().zip(files).zip(RESOURCES) {
                *now = f
                    .read(&proc.join("pressure").join(r))
                    .ok()
                    .and_then(|t| parse_pressure(t).ok())
                    .and_then(|p| p.some)
                    .map(|l| l.total_us);
            }
        }
    }
}

/// The pressure resources, in the order of [`Sample::pressure`].
const RESOURCES: [&str; 3] = ["cpu", "memory", "io"];

/// The figures of one container's skippable files as last read (see the module docs).
#[derive(Debug, Default)]
pub(super) struct Memo {
    /// `memory.stat`: what it was read at and what it said.
    memory_stat: Option<MemoryStatAt>,
    /// v1 `memory.oom_control`: the host's OOM-kill count before it was read, and its count.
    oom_v1: Option<(u64, Option<u64>)>,
    /// v1 `cpu.stat`: its throttling figures.
    throttling: Option<Option<Throttling>>,
    /// `pids.current` (and v1 `cpuacct.stat` and blkio): what they said, and the CPU total
    /// they were read at.
    idle: Option<IdleAt>,
    /// Each pressure file: the host's `some` total before it was read, and what it said.
    pressure: [Option<(u64, Option<Pressure>)>; 3],
}

/// The figures read only after CPU time was used, as last read: the task count, and on v1
/// the user/system split and block I/O.
#[derive(Debug, Clone, Default)]
struct IdleAt {
    cpu_total_ns: u64,
    pids_current: Option<u64>,
    user_ns: Option<u64>,
    system_ns: Option<u64>,
    io: Vec<IoDevice>,
}

/// `memory.stat` as last read, with the usage and CPU time that decide whether it is due.
#[derive(Debug, Clone, Copy)]
struct MemoryStatAt {
    usage: u64,
    cpu_total_ns: u64,
    inactive_file: u64,
    rss: u64,
}

impl Memo {
    /// Whether `memory.stat` is read this cycle; `backstop`: read it whatever else holds.
    pub(super) fn memory_stat_due(&self, backstop: bool) -> MemoryStatDue {
        match self.memory_stat {
            Some(at) if !backstop => MemoryStatDue::UnlessUnchanged {
                usage: at.usage,
                cpu_total_ns: at.cpu_total_ns,
            },
            _ => MemoryStatDue::Always,
        }
    }

    /// Whether v1's `memory.oom_control` is read this cycle, the host's OOM-kill count being
    /// `host_ooms` now; `backstop`: read it whatever else holds.
    pub(super) fn oom_v1_due(&self, host_ooms: Option<u64>, backstop: bool) -> bool {
        match (self.oom_v1, host_ooms) {
            (Some((at, _)), Some(now)) => backstop || now != at,
            _ => true,
        }
    }

    /// Whether v1's `cpu.stat` is read this cycle: while a quota is set (`quota`), and as a
    /// backstop.
    pub(super) fn throttling_due(&self, quota: bool, backstop: bool) -> bool {
        quota || backstop || self.throttling.is_none()
    }

    /// v1: the CPU total below which `cpuacct.stat` and blkio are skipped this cycle
    /// ([`Reads::unless_cpu_total`]); `backstop`: read them whatever else holds.
    pub(super) fn idle_unless(&self, backstop: bool) -> Option<u64> {
        self.idle
            .as_ref()
            .filter(|_| !backstop)
            .map(|i| i.cpu_total_ns)
    }

    /// Which pressure files are read this cycle, the host's stall totals being `host` now;
    /// `backstop`: all of them.
    pub(super) fn pressure_due(&self, host: &HostCounts, backstop: bool) -> [bool; 3] {
        let mut due = [true; 3];
        for ((due, kept), now) in due.iter_mut().zip(&self.pressure).zip(host.stalls) {
            *due = backstop || !matches!((kept, now), (Some((at, _)), Some(now)) if *at == now);
        }
        due
    }

    /// After a read as `reads` said: keeps the figures read, and puts the kept ones into `s`
    /// where the file was skipped. `v1`: the sample is of a v1 (or hybrid) hierarchy, whose
    /// OOM, throttling, split and blkio files this memo follows; `host`: the host's counters
    /// read before this cycle's reads.
    pub(super) fn after_read(&mut self, s: &mut Sample, reads: Reads, v1: bool, host: &HostCounts) {
        for (((kept, read), now), figure) in self
            .pressure
            .iter_mut()
            .zip(s.pressure_read)
            .zip(host.stalls)
            .zip(&mut s.pressure)
        {
            if read {
                *kept = now.map(|n| (n, *figure));
            } else if let Some((_, p)) = kept {
                *figure = *p;
            }
        }
        if let Some(m) = &mut s.memory {
            if s.memory_stat_skipped {
                if let Some(at) = self.memory_stat {
                    (m.inactive_file, m.rss) = (at.inactive_file, at.rss);
                }
            } else {
                self.memory_stat = s.cpu_total_ns.map(|cpu_total_ns| MemoryStatAt {
                    usage: m.usage,
                    cpu_total_ns,
                    inactive_file: m.inactive_file,
                    rss: m.rss,
                });
            }
        } else {
            // No memory controller (now): its figures start over when it is back.
            self.memory_stat = None;
            self.oom_v1 = None;
        }
        if s.cpu_total_ns.is_none() {
            self.idle = None;
        } else if s.idle_skipped {
            if let Some(i) = &self.idle {
                s.pids_current = i.pids_current;
                if v1 {
                    (s.cpu_user_ns, s.cpu_system_ns) = (i.user_ns, i.system_ns);
                    s.io.clone_from(&i.io);
                }
            }
        } else if let Some(total) = s.cpu_total_ns {
            let i = self.idle.get_or_insert_with(IdleAt::default);
            i.cpu_total_ns = total;
            i.pids_current = s.pids_current;
            if v1 {
                (i.user_ns, i.system_ns) = (s.cpu_user_ns, s.cpu_system_ns);
                i.io.clone_from(&s.io);
            }
        }
        if !v1 {
            return;
        }
        if s.memory.is_some() {
            if reads.oom_events {
                self.oom_v1 = host.ooms.map(|h| (h, s.oom_kills));
            } else if let Some((_, kills)) = self.oom_v1 {
                s.oom_kills = kills;
            }
        }
        if reads.throttling {
            self.throttling = Some(s.throttling);
        } else if let Some(t) = self.throttling {
            s.throttling = t;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::cgroup::Memory;
    use super::*;

    fn reads(oom_events: bool, throttling: bool, memory_stat: MemoryStatDue) -> Reads {
        Reads {
            pressure: [false; 3],
            limits: false,
            pid: false,
            oom_events,
            throttling,
            memory_stat,
            unless_cpu_total: None,
        }
    }

    fn ooms(n: Option<u64>) -> HostCounts {
        HostCounts {
            ooms: n,
            ..HostCounts::default()
        }
    }

    fn sample(usage: u64, cpu: u64, stat: Option<(u64, u64)>) -> Sample {
        Sample {
            cpu_total_ns: Some(cpu),
            memory: Some(Memory {
                usage,
                inactive_file: stat.map_or(0, |s| s.0),
                rss: stat.map_or(0, |s| s.1),
                limit: None,
            }),
            memory_stat_skipped: stat.is_none(),
            ..Sample::default()
        }
    }

    #[test]
    fn memory_stat_is_due_until_read_then_only_when_usage_or_cpu_moved_or_as_a_backstop() {
        let mut m = Memo::default();
        assert_eq!(
            m.memory_stat_due(false),
            MemoryStatDue::Always,
            "never read"
        );
        let mut s = sample(100, 7, Some((20, 60)));
        m.after_read(
            &mut s,
            reads(true, true, MemoryStatDue::Always),
            false,
            &ooms(None),
        );
        let due = m.memory_stat_due(false);
        assert!(!due.wants(100, Some(7)), "nothing moved");
        assert!(due.wants(101, Some(7)), "usage moved");
        assert!(due.wants(100, Some(8)), "CPU time moved");
        assert!(due.wants(100, None), "no CPU time to tell");
        assert_eq!(m.memory_stat_due(true), MemoryStatDue::Always, "backstop");
        // Skipped: the last read's figures, so working set and RSS are recorded as before.
        let mut s = sample(100, 7, None);
        m.after_read(&mut s, reads(true, true, due), false, &ooms(None));
        let mem = s.memory.unwrap();
        assert_eq!((mem.inactive_file, mem.rss, mem.usage), (20, 60, 100));
        assert_eq!(mem.working_set(), 80);
        // Read again after a move: the new figures are kept and the move is the new base.
        let mut s = sample(150, 9, Some((25, 100)));
        m.after_read(
            &mut s,
            reads(true, true, MemoryStatDue::Always),
            false,
            &ooms(None),
        );
        assert!(!m.memory_stat_due(false).wants(150, Some(9)));
        let mut s = sample(150, 9, None);
        m.after_read(&mut s, reads(true, true, due), false, &ooms(None));
        assert_eq!(s.memory.unwrap().rss, 100);
        // The memory controller gone: no figures kept.
        let mut s = Sample::default();
        m.after_read(&mut s, reads(true, true, due), false, &ooms(None));
        assert_eq!(m.memory_stat_due(false), MemoryStatDue::Always);
    }

    #[test]
    fn v1_oom_count_is_read_only_after_the_hosts_moved_and_kept_in_between() {
        let mut m = Memo::default();
        assert!(m.oom_v1_due(Some(3), false), "never read");
        let mut s = Sample {
            oom_kills: Some(1),
            ..sample(100, 7, Some((0, 0)))
        };
        m.after_read(
            &mut s,
            reads(true, true, MemoryStatDue::Always),
            true,
            &ooms(Some(3)),
        );
        assert!(
            !m.oom_v1_due(Some(3), false),
            "no OOM kill on the host since"
        );
        assert!(m.oom_v1_due(Some(4), false), "one somewhere: read");
        assert!(m.oom_v1_due(Some(3), true), "backstop");
        assert!(m.oom_v1_due(None, false), "no host count: every cycle");
        let mut s = sample(100, 7, Some((0, 0)));
        m.after_read(
            &mut s,
            reads(false, true, MemoryStatDue::Always),
            true,
            &ooms(Some(3)),
        );
        assert_eq!(s.oom_kills, Some(1), "the count as last read");
        // Read with the host count unknown: due every cycle from then on.
        let mut s = Sample {
            oom_kills: Some(2),
            ..sample(100, 7, Some((0, 0)))
        };
        m.after_read(
            &mut s,
            reads(true, true, MemoryStatDue::Always),
            true,
            &ooms(None),
        );
        assert!(m.oom_v1_due(Some(3), false));
        // v2 leaves it to `oom_watch`: nothing kept here.
        let mut m = Memo::default();
        let mut s = Sample {
            oom_kills: Some(1),
            ..sample(100, 7, Some((0, 0)))
        };
        m.after_read(
            &mut s,
            reads(true, true, MemoryStatDue::Always),
            false,
            &ooms(Some(3)),
        );
        assert!(m.oom_v1_due(Some(3), false));
    }

    #[test]
    fn v1_throttling_is_read_while_a_quota_is_set_and_kept_without_one() {
        let mut m = Memo::default();
        assert!(m.throttling_due(false, false), "never read");
        let t = Throttling {
            periods: 10,
            throttled_periods: 2,
            throttled_ns: 5,
        };
        let mut s = Sample {
            throttling: Some(t),
            ..sample(100, 7, Some((0, 0)))
        };
        m.after_read(
            &mut s,
            reads(true, true, MemoryStatDue::Always),
            true,
            &ooms(None),
        );
        assert!(!m.throttling_due(false, false), "no quota: figures stand");
        assert!(m.throttling_due(true, false), "a quota: every cycle");
        assert!(m.throttling_due(false, true), "with the limits");
        let mut s = sample(100, 7, Some((0, 0)));
        m.after_read(
            &mut s,
            reads(true, false, MemoryStatDue::Always),
            true,
            &ooms(None),
        );
        assert_eq!(s.throttling, Some(t), "the figures as last read");
    }

    #[test]
    fn tasks_and_v1_split_and_block_io_are_read_only_after_cpu_time_was_used() {
        let mut m = Memo::default();
        assert_eq!(m.idle_unless(false), None, "never read");
        let dev = IoDevice {
            major: 254,
            minor: 0,
            read_bytes: 4096,
            write_bytes: 8192,
        };
        let mut s = Sample {
            cpu_user_ns: Some(60),
            cpu_system_ns: Some(40),
            io: vec![dev],
            pids_current: Some(3),
            ..sample(1, 100, Some((0, 0)))
        };
        m.after_read(
            &mut s,
            reads(true, true, MemoryStatDue::Always),
            true,
            &ooms(None),
        );
        assert_eq!(
            m.idle_unless(false),
            Some(100),
            "skipped while the total is 100"
        );
        assert_eq!(m.idle_unless(true), None, "backstop");
        // Skipped: the split and the block I/O as last read.
        let mut s = Sample {
            idle_skipped: true,
            ..sample(1, 100, Some((0, 0)))
        };
        m.after_read(
            &mut s,
            reads(true, true, MemoryStatDue::Always),
            true,
            &ooms(None),
        );
        assert_eq!((s.cpu_user_ns, s.cpu_system_ns), (Some(60), Some(40)));
        assert_eq!(s.io, vec![dev]);
        assert_eq!(s.pids_current, Some(3));
        // On v2 only the task count is skipped (cpu.stat and io.stat are always read).
        let mut v2 = Memo::default();
        let mut s = Sample {
            pids_current: Some(5),
            io: vec![dev],
            ..sample(1, 100, Some((0, 0)))
        };
        v2.after_read(
            &mut s,
            reads(true, true, MemoryStatDue::Always),
            false,
            &ooms(None),
        );
        assert_eq!(v2.idle_unless(false), Some(100));
        let mut s = Sample {
            idle_skipped: true,
            cpu_user_ns: Some(1),
            ..sample(1, 100, Some((0, 0)))
        };
        v2.after_read(
            &mut s,
            reads(true, true, MemoryStatDue::Always),
            false,
            &ooms(None),
        );
        assert_eq!(
            (s.pids_current, s.cpu_user_ns, s.io.len()),
            (Some(5), Some(1), 0)
        );
        // Read after CPU time was used: the new figures and total are kept.
        let mut s = Sample {
            cpu_user_ns: Some(90),
            cpu_system_ns: Some(60),
            ..sample(1, 150, Some((0, 0)))
        };
        m.after_read(
            &mut s,
            reads(true, true, MemoryStatDue::Always),
            true,
            &ooms(None),
        );
        assert_eq!(m.idle_unless(false), Some(150));
        let mut s = Sample {
            idle_skipped: true,
            ..sample(1, 150, Some((0, 0)))
        };
        m.after_read(
            &mut s,
            reads(true, true, MemoryStatDue::Always),
            true,
            &ooms(None),
        );
        assert_eq!(
            (s.cpu_user_ns, s.io.len()),
            (Some(90), 0),
            "no device any more"
        );
    }

    #[test]
    fn a_pressure_file_is_read_only_after_the_hosts_stall_total_for_it_moved() {
        use crate::collectors::host::pressure::PsiLine;
        let psi = |total_us| Pressure {
            some: Some(PsiLine {
                total_us,
                ..PsiLine::default()
            }),
            full: None,
        };
        let host = |cpu, memory, io| HostCounts {
            ooms: None,
            stalls: [cpu, memory, io],
        };
        let mut m = Memo::default();
        let now = host(Some(10), Some(20), None);
        assert_eq!(m.pressure_due(&now, false), [true; 3], "never read");
        let mut r = reads(true, true, MemoryStatDue::Always);
        r.pressure = [true; 3];
        let mut s = Sample {
            pressure: [Some(psi(1)), Some(psi(2)), Some(psi(3))],
            pressure_read: r.pressure,
            ..sample(1, 1, Some((0, 0)))
        };
        m.after_read(&mut s, r, false, &now);
        assert_eq!(
            m.pressure_due(&now, false),
            [false, false, true],
            "no stall on the host since; io's total unknown"
        );
        assert_eq!(
            m.pressure_due(&host(Some(11), Some(20), None), false),
            [true, false, true],
            "a CPU stall somewhere"
        );
        assert_eq!(m.pressure_due(&now, true), [true; 3], "backstop");
        // Skipped: the figures as last read.
        r.pressure = [false, false, true];
        let mut s = Sample {
            pressure: [None, None, Some(psi(4))],
            pressure_read: r.pressure,
            ..sample(1, 1, Some((0, 0)))
        };
        m.after_read(&mut s, r, false, &now);
        assert_eq!(s.pressure, [Some(psi(1)), Some(psi(2)), Some(psi(4))]);
    }
}
