//! What containers may keep open between cycles ([`cgroup::KeepBudget`]): descriptors, from
//! the process's open-file limit, which [`raise_open_file_limit`] raises at start, and the
//! kernel memory of kept control files, from `containers.kept_files_memory`.

use super::ContainerConfig;
use super::cgroup::{self, KeepBudget};

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
/// and cAdvisor: a node with 1000 containers needs descriptors for the kept container
/// directories, and the usual soft limit is 1024. Failing leaves the limit, and the budget
/// follows it.
pub fn raise_open_file_limit() {
    use nix::sys::resource::{Resource as Limit, getrlimit, setrlimit};
    if let Ok((soft, hard)) = getrlimit(Limit::RLIMIT_NOFILE)
        && soft < hard
        && let Err(e) = setrlimit(Limit::RLIMIT_NOFILE, hard, hard)
    {
        tracing::debug!(soft, hard, error = %e, "open-file limit stays");
    }
}

/// The budget for `cfg` under the open-file limit of now: descriptors as [`fd_budget`]
/// allows; files as `kept_files_memory` allows at [`cgroup::kept_file_bytes`] each, or
/// without a memory bound with `keep_files_open`.
pub(super) fn budget(cfg: &ContainerConfig) -> KeepBudget {
    let files = if cfg.keep_files_open {
        usize::MAX
    } else {
        usize::try_from(cfg.kept_files_memory.0 / cgroup::kept_file_bytes()).unwrap_or(usize::MAX)
    };
    KeepBudget {
        fds: fd_budget(),
        fds_used: 0,
        files,
        files_used: 0,
    }
}
