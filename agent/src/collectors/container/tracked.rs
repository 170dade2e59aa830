//! What the container collector keeps per container between cycles ([`Tracked`]): its
//! identity (cgroup directory inode, start time), its resource and the metadata it was built
//! from, the figures a cycle needs from the last one (CPU time for the rate, the user/system
//! split, cached limits, the process whose network namespace is read), its `memory.events`
//! watch and its kept descriptors. Dropping a container's state closes its descriptors;
//! [`Tracked::release`] gives back the rest.

use std::sync::Arc;

use faultline_exporters::model::Resource;

use super::cgroup::{self, Found, Sample};
use super::memo::Memo;
use super::network::NetNs;
use super::oom_watch::{self, OomWatch};
use super::paths::ContainerPath;
use super::resource::Sources;

/// Limits (CPU quota, memory limit, task limit) are read on a container's first cycle and
/// then every this many cycles (a minute at the default 10 s): they change only when someone
/// updates the container, and skipping their files saves a fifth of a cycle's reads. Each
/// container reads them in its own phase of the period (from its directory's inode number),
/// so that a thousand containers started together do not all read them in the same cycle:
/// the second read comes one to `LIMITS_EVERY` cycles after the first, the next ones every
/// `LIMITS_EVERY`. The files [`Memo`] skips are read with them as a backstop.
pub const LIMITS_EVERY: u64 = 6;

/// The files the collector reads only after something says their figures moved (`memo`:
/// the OOM count on v1, throttling, the user/system split, block I/O on v1, tasks, pressure)
/// are read anyway in one limits cycle of this many (five minutes at the default 10 s), in
/// each container's own phase, in case a move went unseen. `memory.stat`, whose skip rests
/// on a likelihood rather than the kernel's accounting, is read with every limits read.
pub const BACKSTOP_EVERY: u64 = 5 * LIMITS_EVERY;

/// Per-container state kept between cycles.
#[derive(Debug)]
pub(super) struct Tracked {
    pub(super) ino: u64,
    pub(super) path: ContainerPath,
    pub(super) start_unix_nanos: u64,
    pub(super) resource: Arc<Resource>,
    built_from: Option<Sources>,
    pub(super) prev_cpu: Option<(u64, u64, u64)>,
    /// The last (user, system) split, for [`cgroup::adjust_cputime`].
    cpu_split: (u64, u64),
    /// Cached limits (cycle read, CPU, memory, tasks); see [`LIMITS_EVERY`].
    limits: Option<CachedLimits>,
    /// (pid, its network namespace), checked once per process. The pid stands between
    /// `cgroup.procs` reads (every [`LIMITS_EVERY`] cycles, and whenever its process is gone).
    pub(super) netns: Option<(u32, NetNs)>,
    /// Its `memory.events` as [`oom_watch`] follows it (cgroup v2).
    pub(super) oom: oom_watch::Followed,
    /// The figures of its costlier files, for the cycles that skip them.
    pub(super) memo: Memo,
    /// The container's cgroup directories and control files, kept open between cycles within
    /// the budget.
    pub(super) fds: cgroup::KeptFds,
    /// Descriptors charged to the budget for its directories (its kept files are charged as
    /// they are kept).
    pub(super) fds_charged: usize,
    /// How many metrics the container had last cycle: its next batch entry reserves exactly
    /// that many instead of growing 4 → 8 → 16 → 32.
    pub(super) metric_count: usize,
    pub(super) seen_cycle: u64,
    pub(super) first_cycle: u64,
}

/// Limits as last read: (cycle, CPU limit, memory limit, task limit).
type CachedLimits = (u64, Option<f64>, Option<u64>, Option<u64>);

impl Tracked {
    /// A container first seen in `cycle`, created at `start`, keeping its directories open
    /// (`keep_dirs`) for the `charge` they cost the budget.
    pub(super) fn new(f: &Found, start: u64, keep_dirs: bool, charge: usize, cycle: u64) -> Self {
        Self {
            ino: f.ino,
            path: f.path.clone(),
            start_unix_nanos: start,
            resource: Arc::new(Resource::default()),
            built_from: None,
            prev_cpu: None,
            cpu_split: (0, 0),
            netns: None,
            oom: oom_watch::Followed::default(),
            memo: Memo::default(),
            fds: cgroup::KeptFds::new(keep_dirs),
            fds_charged: charge,
            metric_count: 0,
            limits: None,
            seen_cycle: cycle,
            first_cycle: cycle,
        }
    }

    /// Gives back what the container holds: its kept files and its directories' charge to
    /// the budget (dropping it closes the directories), and its `memory.events` watch.
    pub(super) fn release(
        &mut self,
        fds: &mut cgroup::KeepBudget,
        oom_watch: Option<&mut OomWatch>,
    ) {
        self.fds.release(fds);
        fds.fds_used = fds.fds_used.saturating_sub(self.fds_charged);
        self.fds_charged = 0;
        if let Some(w) = oom_watch {
            w.forget(&mut self.oom);
        }
    }

    /// Rebuilds the resource unless it was built from these very sources.
    pub(super) fn refresh_resource(&mut self, host: &Resource, sources: Sources) {
        if !self
            .built_from
            .as_ref()
            .is_some_and(|b| b.same_as(&sources))
        {
            self.resource = Arc::new(sources.build(host, &self.path));
            self.built_from = Some(sources);
        }
    }

    /// Whether the limit files are read in `cycle`: never read, or its phase of the period
    /// has come round (see [`LIMITS_EVERY`]).
    pub(super) fn limits_due(&self, cycle: u64) -> bool {
        self.limits.is_none_or(|(at, ..)| {
            cycle > at && cycle.wrapping_add(self.ino).is_multiple_of(LIMITS_EVERY)
        })
    }

    /// Whether the files `memo` skips are read whatever says they did not move, in `cycle`
    /// (see [`BACKSTOP_EVERY`]).
    pub(super) fn backstop_due(&self, cycle: u64) -> bool {
        self.limits_due(cycle) && cycle.wrapping_add(self.ino).is_multiple_of(BACKSTOP_EVERY)
    }

    /// Whether the container had a CPU quota at the last read of its limits.
    pub(super) fn has_cpu_quota(&self) -> bool {
        self.limits.is_some_and(|(_, cpu, ..)| cpu.is_some())
    }

    /// Keeps the limits `s` read in `cycle` (`read`), or puts the kept ones into `s`.
    pub(super) fn cache_limits(&mut self, s: &mut Sample, cycle: u64, read: bool) {
        if read {
            let mem = s.memory.and_then(|m| m.limit);
            self.limits = Some((cycle, s.cpu_limit, mem, s.pids_limit));
        } else if let Some((_, cpu, mem, pids)) = self.limits {
            s.cpu_limit = cpu;
            s.pids_limit = pids;
            if let Some(m) = &mut s.memory {
                m.limit = mem;
            }
        }
    }

    /// Splits the sample's total CPU time into its modes, monotonic across cycles
    /// ([`cgroup::adjust_cputime`]).
    pub(super) fn split_cpu(&mut self, s: &mut Sample) {
        if let (Some(total), Some(u), Some(sy)) = (s.cpu_total_ns, s.cpu_user_ns, s.cpu_system_ns) {
            let (u, sy) = cgroup::adjust_cputime(total, u, sy, &mut self.cpu_split);
            (s.cpu_user_ns, s.cpu_system_ns) = (Some(u), Some(sy));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::paths::ContainerPath;
    use super::*;

    fn tracked(ino: u64) -> Tracked {
        let f = Found {
            rel: "docker/x".into(),
            ino,
            path: ContainerPath {
                id: "x".into(),
                runtime: None,
                pod_uid: None,
            },
        };
        Tracked::new(&f, 0, false, 0, 1)
    }

    /// The cycles in 1..=`until` in which `t` reads its limits, as the collector would.
    fn limit_cycles(t: &mut Tracked, until: u64) -> Vec<u64> {
        let mut out = Vec::new();
        for cycle in 1..=until {
            if t.limits_due(cycle) {
                out.push(cycle);
                t.cache_limits(&mut Sample::default(), cycle, true);
            }
        }
        out
    }

    #[test]
    fn limits_are_read_first_then_every_period_in_each_containers_own_phase() {
        let mut phases = std::collections::HashSet::new();
        for ino in 1000..1000 + LIMITS_EVERY {
            let cycles = limit_cycles(&mut tracked(ino), 40);
            assert_eq!(cycles[0], 1, "read in the first cycle");
            assert!(
                (2..=1 + LIMITS_EVERY).contains(&cycles[1]),
                "then within a period: {cycles:?}"
            );
            assert!(
                cycles
                    .windows(2)
                    .skip(1)
                    .all(|w| w[1] - w[0] == LIMITS_EVERY),
                "then every period: {cycles:?}"
            );
            phases.insert(cycles[1] % LIMITS_EVERY);
        }
        assert_eq!(
            phases.len() as u64,
            LIMITS_EVERY,
            "containers started together spread their reads over the period"
        );
    }

    #[test]
    fn the_backstop_comes_every_period_in_a_limits_cycle_of_each_containers_own_phase() {
        let mut phases = std::collections::HashSet::new();
        for ino in 77..77 + BACKSTOP_EVERY {
            let mut t = tracked(ino);
            let mut backstops = Vec::new();
            for cycle in 1..=4 * BACKSTOP_EVERY {
                let limits = t.limits_due(cycle);
                if t.backstop_due(cycle) {
                    assert!(limits, "a backstop is a limits cycle");
                    backstops.push(cycle);
                }
                if limits {
                    t.cache_limits(&mut Sample::default(), cycle, true);
                }
            }
            assert!(
                backstops.windows(2).all(|w| w[1] - w[0] == BACKSTOP_EVERY),
                "{backstops:?}"
            );
            assert!(backstops.len() >= 3, "{backstops:?}");
            phases.insert(backstops[1] % BACKSTOP_EVERY);
        }
        assert_eq!(
            phases.len() as u64,
            BACKSTOP_EVERY,
            "spread over the period"
        );
    }

    #[test]
    fn a_cpu_quota_is_known_from_the_last_limits_read() {
        let mut t = tracked(7);
        assert!(!t.has_cpu_quota(), "not read yet");
        let mut s = Sample {
            cpu_limit: Some(0.5),
            ..Sample::default()
        };
        t.cache_limits(&mut s, 1, true);
        assert!(t.has_cpu_quota());
        t.cache_limits(&mut Sample::default(), 7, true);
        assert!(!t.has_cpu_quota(), "quota removed");
    }
}
