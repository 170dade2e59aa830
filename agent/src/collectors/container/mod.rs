//! Container metrics: every container's CPU, memory, disk, network and limits, read from the
//! cgroup tree, each container reported as its own resource next to the host's.
//!
//! How a cycle goes ([`ContainerCollector::collect`]):
//! 1. walk the cgroup hierarchy detected at start ([`cgroup::Hierarchy`]) and recognise
//!    container directories by their path shape ([`paths::recognise`]);
//! 2. for each container, read its control files: those whose figures may have moved since
//!    their last read (`memo`: the costlier ones are skipped, their last figures recorded,
//!    while nothing says they moved), each opened in the container's directory kept open
//!    ([`cgroup::KeptFds`]) or read with one `pread` on a descriptor kept open while it is
//!    read cycle after cycle, within a budget of descriptors and kernel memory; no `/proc`
//!    listing; and, for network bytes, `/proc/<pid>/net/dev` of one of its processes
//!    ([`network`]);
//! 3. record into its own resource: `batch.add_resource(resource, container_start)`. The
//!    `Arc<Resource>` is cached per container and rebuilt only when its metadata changed.
//!
//! Containers are keyed by cgroup path and directory inode: a new container appears in the
//! cycle after it starts; one whose cgroup is gone is dropped at once (no stale series); a
//! restarted one (same path, recreated directory) gets a new start time, the directory's
//! creation time.
//!
//! Metadata (names, images, labels, Kubernetes names) comes from background tasks
//! ([`metadata`], [`docker`], [`cri`], [`kubelet`]) through a shared cache; the collector never
//! waits on a socket except once, bounded, before its first cycle. A container first seen while a
//! metadata source is connected but has not named it yet is held back for one cycle (its
//! source is asked about it), so its series do not start without their name.
//!
//! Metric names follow the semantic-conventions registry where it has them; the extras
//! (limits, throttling, OOM kills, pids, pressure) are listed in [`EXTRA_DESCS`] and in
//! docs/METRICS.md. Pressure is reported as the cumulative stall time only (`some` and
//! `full` per resource: 6 series per container), not the kernel's 10/60/300 s averages the
//! host collector also reports: the averages are the stall time's rate over a window, and at
//! 1000 containers the three of them would add 18 000 series for nothing a query cannot
//! derive.
//!
//! Where the parts are: `cycle.rs` the steps of a cycle; `tracked.rs` the state kept per
//! container; `memo.rs` the figures of the costlier files a cycle may skip, and when it may;
//! `resource.rs` its resource; `record.rs` its points, per metric family, of the
//! metrics in `descriptors.rs`; `fd_budget.rs` the descriptors containers may keep open;
//! `config.rs` the configuration. The submodules below read the cgroup tree, the network
//! namespaces, `memory.events` changes and the metadata sources.

use std::collections::HashMap;
use std::sync::Arc;

use faultline_exporters::model::Resource;

use super::Roots;
use cgroup::{Found, Hierarchy, Sample};
use metadata::{MetadataCache, MetadataWorker};
use network::NamespaceReads;
use tracked::Tracked;

pub mod cgroup;
pub mod cri;
pub mod docker;
pub mod kubelet;
pub mod metadata;
pub mod network;
pub mod oom_watch;
pub mod paths;

mod config;
mod cycle;
mod descriptors;
mod fd_budget;
mod memo;
mod record;
mod resource;
#[cfg(test)]
mod tests;
mod tracked;

pub use config::{ContainerConfig, CriConfig, DockerConfig};
pub use descriptors::{
    CPU_LIMIT, CPU_THROTTLED_PERIODS, CPU_THROTTLED_TIME, CPU_THROTTLING_PERIODS, CPU_TIME,
    CPU_USAGE, DESCS, DISK_IO, EXTRA_DESCS, MEMORY_AVAILABLE, MEMORY_LIMIT, MEMORY_RSS,
    MEMORY_USAGE, MEMORY_WORKING_SET, NETWORK_IO, OOM_KILLS, PIDS_COUNT, PIDS_LIMIT,
    PSI_STALL_TIME, UPTIME,
};
pub use fd_budget::raise_open_file_limit;
pub use resource::build_resource;
pub use tracked::{BACKSTOP_EVERY, LIMITS_EVERY};

/// Why the container collector could not start.
#[derive(Debug, thiserror::Error)]
pub enum ContainerStartError {
    /// The metadata sources could not start.
    #[error(transparent)]
    Metadata(#[from] metadata::StartError),
}

/// Collector of per-container metrics.
#[derive(Debug)]
pub struct ContainerCollector {
    hierarchy: Hierarchy,
    host: Arc<Resource>,
    cache: Arc<MetadataCache>,
    worker: Option<MetadataWorker>,
    network: bool,
    pressure: bool,
    tracked: HashMap<String, Tracked>,
    found: Vec<Found>,
    /// Change notification for the walk: `found` is kept while no cgroup directory changed.
    walk_watch: cgroup::walk_watch::WalkWatch,
    sample: Sample,
    buf: cgroup::ReadBuf,
    /// The network namespaces read this cycle, each once whatever number of containers
    /// share it.
    net: NamespaceReads,
    /// Change notification for `memory.events`, on cgroup v2 only.
    oom_watch: Option<oom_watch::OomWatch>,
    /// The host's counters that tell which costlier files may have moved (see `memo`).
    counters: memo::HostCounters,
    devices: HashMap<(u32, u32), String>,
    cycle: u64,
    logged_missing: bool,
    /// What containers may keep open between cycles, and what the tracked ones hold.
    fds: cgroup::KeepBudget,
}

impl ContainerCollector {
    /// Detects the cgroup layout and starts the metadata sources. `Ok(None)` when there is no
    /// cgroup hierarchy at the (default) root: logged at info level, nothing to collect.
    /// `host` is the host resource, whose attributes every container resource repeats.
    pub fn start(
        cfg: &ContainerConfig,
        roots: &Roots,
        host: Arc<Resource>,
    ) -> Result<Option<Self>, ContainerStartError> {
        let root = cfg.cgroup_root(roots);
        let hierarchy = match Hierarchy::detect(&root) {
            Ok(h) => h,
            Err(e) => {
                tracing::info!(error = %e, "container metrics disabled: no cgroup hierarchy");
                return Ok(None);
            }
        };
        tracing::info!(root = %root.display(), layout = hierarchy.layout.as_str(), "container metrics enabled");
        let cache = Arc::new(MetadataCache::default());
        let worker = MetadataWorker::start(cfg, &roots.rootfs, cache.clone())?;
        raise_open_file_limit();
        Ok(Some(Self::with_parts(hierarchy, host, cache, worker, cfg)))
    }

    /// A collector over `hierarchy` with the given metadata cache and no background sources
    /// (tests and benchmarks fill the cache themselves).
    pub fn with_cache(
        hierarchy: Hierarchy,
        host: Arc<Resource>,
        cache: Arc<MetadataCache>,
        cfg: &ContainerConfig,
    ) -> Self {
        Self::with_parts(hierarchy, host, cache, None, cfg)
    }

    fn with_parts(
        hierarchy: Hierarchy,
        host: Arc<Resource>,
        cache: Arc<MetadataCache>,
        worker: Option<MetadataWorker>,
        cfg: &ContainerConfig,
    ) -> Self {
        let v2 = hierarchy.layout == cgroup::Layout::V2;
        let oom_watch = v2.then(oom_watch::OomWatch::new);
        let host_counters =
            memo::HostCounters::new(!v2, cfg.pressure && hierarchy.unified.is_some());
        Self {
            hierarchy,
            host,
            cache,
            worker,
            network: cfg.network,
            pressure: cfg.pressure,
            tracked: HashMap::new(),
            found: Vec::new(),
            walk_watch: cgroup::walk_watch::WalkWatch::default(),
            sample: Sample::default(),
            buf: cgroup::ReadBuf::default(),
            net: NamespaceReads::default(),
            oom_watch,
            counters: host_counters,
            devices: HashMap::new(),
            cycle: 0,
            logged_missing: false,
            fds: fd_budget::budget(cfg),
        }
    }

    /// The detected hierarchy.
    pub fn hierarchy(&self) -> &Hierarchy {
        &self.hierarchy
    }

    /// Containers tracked after the last cycle.
    pub fn tracked_count(&self) -> usize {
        self.tracked.len()
    }
}
