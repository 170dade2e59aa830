//! What the container collector keeps per container between cycles ([`Tracked`]): its
//! identity (cgroup directory inode, start time), its resource and the metadata it was built
//! from, the figures a cycle needs from the last one (CPU time for the rate, the user/system
//! split, cached limits, the process whose network namespace is read), its `memory.events`
//! watch and its kept descriptors. Dropping a container's state closes its descriptors;
//! [`Tracked::release`] gives back the rest.

use std::sync::Arc;

use faultline_exporters::model::Resource;

use super::cgroup::{self, Found, Sample};
use super::fd_budget::FdBudget;
use super::network::NetNs;
use super::oom_watch::{self, OomWatch};
use super::paths::ContainerPath;
use super::resource::Sources;

/// Limits (CPU quota, memory limit, task limit) are read on a container's first cycle and
/// then every this many cycles (a minute at the default 10 s): they change only when someone
/// updates the container, and skipping their files saves a fifth of a cycle's reads.
pub const LIMITS_EVERY: u64 = 6;

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
    /// The container's cgroup directory and control files, kept open between cycles within
    /// the budget.
    pub(super) fds: cgroup::KeptFds,
    /// Descriptors charged to the budget for it (what it may keep at most).
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
    /// A container first seen in `cycle`, created at `start`, keeping `keep` open for the
    /// `charge` it is charged to the budget.
    pub(super) fn new(
        f: &Found,
        start: u64,
        keep: cgroup::Keep,
        charge: usize,
        cycle: u64,
    ) -> Self {
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
            fds: cgroup::KeptFds::new(keep),
            fds_charged: charge,
            metric_count: 0,
            limits: None,
            seen_cycle: cycle,
            first_cycle: cycle,
        }
    }

    /// Gives back what the container holds beyond its own descriptors (which dropping it
    /// closes): its charge to the budget and its `memory.events` watch.
    pub(super) fn release(&mut self, fds: &mut FdBudget, oom_watch: Option<&mut OomWatch>) {
        fds.charged -= self.fds_charged;
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

    /// Whether the limit files are read in `cycle` (see [`LIMITS_EVERY`]).
    pub(super) fn limits_due(&self, cycle: u64) -> bool {
        self.limits
            .is_none_or(|(at, ..)| cycle.saturating_sub(at) >= LIMITS_EVERY)
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
