//! How many file descriptors containers may keep open between cycles (their cgroup
//! directories and control files, [`cgroup::KeptFds`]), and what each new container may keep
//! within that budget. The budget follows the process's open-file limit, which
//! [`raise_open_file_limit`] raises at start.

use super::cgroup::{self, Hierarchy};

/// Open-file descriptors left to the rest of the agent (sockets, the disk queue, backup
/// tools, API connections) when container descriptors are kept open.
const FDS_FOR_THE_REST: u64 = 512;

/// How many descriptors containers may keep open between cycles (their directories and
/// control files, [`cgroup::KeptFds`]): half of what the open-file limit leaves after
/// [`FDS_FOR_THE_REST`] (so other descriptors have room to grow too).
fn fd_budget() -> usize {
    use nix::sys::resource::{Resource as Limit, getrlimit};
    let soft = getrlimit(Limit::RLIMIT_NOFILE).map_or(1024, |(soft, _)| soft);
    usize::try_from(soft.saturating_sub(FDS_FOR_THE_REST) / 2).unwrap_or(usize::MAX)
}

/// Raises the soft open-file limit to the hard one, as the Go runtime does for node_exporter
/// and cAdvisor: a node with 1000 containers needs a descriptor per kept container directory,
/// and the usual soft limit is 1024. Failing leaves the limit, and the budget follows it.
pub fn raise_open_file_limit() {
    use nix::sys::resource::{Resource as Limit, getrlimit, setrlimit};
    if let Ok((soft, hard)) = getrlimit(Limit::RLIMIT_NOFILE)
        && soft < hard
        && let Err(e) = setrlimit(Limit::RLIMIT_NOFILE, hard, hard)
    {
        tracing::debug!(soft, hard, error = %e, "open-file limit stays");
    }
}

/// How many descriptors containers may keep open ([`fd_budget`]), and how many the tracked
/// containers are charged for now: each new container keeps everything
/// ([`cgroup::Keep::All`], with `keep_files_open`) while that fits, else its directories
/// ([`cgroup::Keep::Dirs`]), else nothing.
#[derive(Debug)]
pub(super) struct FdBudget {
    pub(super) budget: usize,
    pub(super) charged: usize,
    /// `containers.keep_files_open`: whether a container may keep its control files open
    /// ([`cgroup::Keep::All`]) or at most its directories.
    pub(super) keep_files: bool,
}

impl FdBudget {
    /// The budget the open-file limit allows now, nothing charged yet.
    pub(super) fn new(keep_files: bool) -> Self {
        Self {
            budget: fd_budget(),
            charged: 0,
            keep_files,
        }
    }

    /// What a container first seen now may keep open, and the descriptors that charges to
    /// the budget: everything (with `keep_files_open`) while the budget has room for it,
    /// else its directories (one per hierarchy), else nothing.
    pub(super) fn keep_for_new(
        &self,
        hierarchy: &Hierarchy,
        pressure: bool,
    ) -> (cgroup::Keep, usize) {
        let all = hierarchy.kept_fds_per_container(pressure);
        let dirs = hierarchy.kept_dirs_per_container();
        let left = self.budget.saturating_sub(self.charged);
        if self.keep_files && all <= left {
            (cgroup::Keep::All, all)
        } else if dirs >= 1 && dirs <= left {
            (cgroup::Keep::Dirs, dirs)
        } else {
            (cgroup::Keep::Nothing, 0)
        }
    }
}
