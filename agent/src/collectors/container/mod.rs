//! Container metrics: every container's CPU, memory, disk, network and limits, read from the
//! cgroup tree, each container reported as its own resource next to the host's.
//!
//! How a cycle goes ([`ContainerCollector::collect`]):
//! 1. walk the cgroup hierarchy detected at start ([`cgroup::Hierarchy`]) and recognise
//!    container directories by their path shape ([`paths::recognise`]);
//! 2. for each container, read its control files (about a dozen small reads, each a `pread`
//!    on a descriptor kept open while the container lives, [`cgroup::KeptFds`], within a
//!    budget of descriptors; no `/proc` listing) and, for network bytes,
//!    `/proc/<pid>/net/dev` of one of its processes ([`network`]);
//! 3. record into its own resource: `batch.add_resource(resource, container_start)`. The
//!    `Arc<Resource>` is cached per container and rebuilt only when its metadata changed.
//!
//! Containers are keyed by cgroup path and directory inode: a new container appears in the
//! cycle after it starts; one whose cgroup is gone is dropped at once (no stale series); a
//! restarted one (same path, recreated directory) gets a new start time, the directory's
//! creation time.
//!
//! Metadata (names, images, labels, Kubernetes names) comes from background tasks
//! ([`metadata`], [`docker`], [`kubelet`]) through a shared cache; the collector never waits
//! on a socket except once, bounded, before its first cycle. A container first seen while a
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

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use faultline_exporters::model::{
    AttrValue, Attributes, Batch, MetricDesc, Resource, ResourceMetrics,
};
use serde::{Deserialize, Serialize};

use super::{CollectError, Collector, Context, Roots};
use cgroup::{Found, Hierarchy, ReadOutcome, Sample};
use metadata::{ContainerMeta, MetadataCache, MetadataWorker, PodMeta};
use network::{IfaceBytes, NetNs, NetReader};
use paths::{ContainerPath, Runtime};

pub mod cgroup;
pub mod docker;
pub mod kubelet;
pub mod metadata;
pub mod network;
pub mod oom_watch;
pub mod paths;

// ---------------------------------------------------------------------------------------
// Metrics.

/// `container.cpu.time`.
pub const CPU_TIME: MetricDesc = MetricDesc::counter(
    "container.cpu.time",
    "s",
    "Total CPU time consumed, by mode (user, system).",
);
/// `container.cpu.usage`.
pub const CPU_USAGE: MetricDesc = MetricDesc::gauge(
    "container.cpu.usage",
    "{cpu}",
    "CPUs in use by the container since the previous cycle, by mode.",
);
/// `container.memory.usage`.
pub const MEMORY_USAGE: MetricDesc = MetricDesc::updown(
    "container.memory.usage",
    "By",
    "Memory usage of the container (memory.current / memory.usage_in_bytes).",
);
/// `container.memory.working_set`.
pub const MEMORY_WORKING_SET: MetricDesc = MetricDesc::updown(
    "container.memory.working_set",
    "By",
    "Memory usage minus inactive file cache (the kubelet's working set).",
);
/// `container.memory.rss`.
pub const MEMORY_RSS: MetricDesc = MetricDesc::updown(
    "container.memory.rss",
    "By",
    "Anonymous memory of the container (anon / total_rss).",
);
/// `container.memory.available`.
pub const MEMORY_AVAILABLE: MetricDesc = MetricDesc::updown(
    "container.memory.available",
    "By",
    "Memory limit minus working set; only for containers with a memory limit.",
);
/// `container.disk.io`.
pub const DISK_IO: MetricDesc = MetricDesc::counter(
    "container.disk.io",
    "By",
    "Disk bytes read and written by the container, per device.",
);
/// `container.network.io`.
pub const NETWORK_IO: MetricDesc = MetricDesc::counter(
    "container.network.io",
    "By",
    "Network bytes per interface of the container's network namespace.",
);
/// `container.uptime`.
pub const UPTIME: MetricDesc = MetricDesc::gauge(
    "container.uptime",
    "s",
    "Time since the container's cgroup was created.",
);

/// Memory limit (extra).
pub const MEMORY_LIMIT: MetricDesc = MetricDesc::updown(
    "container.memory.limit",
    "By",
    "Memory limit of the container (memory.max / memory.limit_in_bytes); absent when unlimited.",
);
/// CPU limit (extra).
pub const CPU_LIMIT: MetricDesc = MetricDesc::updown(
    "container.cpu.limit",
    "{cpu}",
    "CPU limit of the container in CPUs (CFS quota / period); absent when unlimited.",
);
/// CFS periods (extra).
pub const CPU_THROTTLING_PERIODS: MetricDesc = MetricDesc::counter(
    "container.cpu.throttling_data.periods",
    "{period}",
    "CFS enforcement periods elapsed with the container runnable.",
);
/// Throttled CFS periods (extra).
pub const CPU_THROTTLED_PERIODS: MetricDesc = MetricDesc::counter(
    "container.cpu.throttling_data.throttled_periods",
    "{period}",
    "CFS enforcement periods in which the container was throttled by its CPU limit.",
);
/// Throttled time (extra).
pub const CPU_THROTTLED_TIME: MetricDesc = MetricDesc::counter(
    "container.cpu.throttling_data.throttled_time",
    "s",
    "Total time the container was throttled by its CPU limit.",
);
/// OOM kills (extra).
pub const OOM_KILLS: MetricDesc = MetricDesc::counter(
    "container.memory.oom_kills",
    "{kill}",
    "Processes of the container killed by the OOM killer (memory.events / memory.oom_control oom_kill).",
);
/// Task count (extra).
pub const PIDS_COUNT: MetricDesc = MetricDesc::updown(
    "container.pids.count",
    "{task}",
    "Tasks (processes and threads) in the container (pids.current).",
);
/// Task limit (extra).
pub const PIDS_LIMIT: MetricDesc = MetricDesc::updown(
    "container.pids.limit",
    "{task}",
    "Task limit of the container (pids.max); absent when unlimited.",
);
/// PSI stall time (extra).
pub const PSI_STALL_TIME: MetricDesc = MetricDesc::counter(
    "container.linux.pressure.stall_time",
    "s",
    "Time the container's tasks were stalled waiting for a resource (cgroup PSI), by resource and kind (some, full).",
);
/// Metrics named as in the semantic-conventions registry.
pub const DESCS: &[&MetricDesc] = &[
    &CPU_TIME,
    &CPU_USAGE,
    &MEMORY_USAGE,
    &MEMORY_WORKING_SET,
    &MEMORY_RSS,
    &MEMORY_AVAILABLE,
    &DISK_IO,
    &NETWORK_IO,
    &UPTIME,
];

/// Metrics beyond the registry (documented in docs/METRICS.md, "Containers").
pub const EXTRA_DESCS: &[&MetricDesc] = &[
    &MEMORY_LIMIT,
    &CPU_LIMIT,
    &CPU_THROTTLING_PERIODS,
    &CPU_THROTTLED_PERIODS,
    &CPU_THROTTLED_TIME,
    &OOM_KILLS,
    &PIDS_COUNT,
    &PIDS_LIMIT,
    &PSI_STALL_TIME,
];

/// Limits (CPU quota, memory limit, task limit) are read on a container's first cycle and
/// then every this many cycles (a minute at the default 10 s): they change only when someone
/// updates the container, and skipping their files saves a fifth of a cycle's reads.
pub const LIMITS_EVERY: u64 = 6;

// ---------------------------------------------------------------------------------------
// Configuration.

/// `containers` in the configuration file.
///
/// `enabled` defaults to `true`: on a host without a cgroup hierarchy under `cgroup_root` the
/// collector logs that once at info level and is left out; with no container running it
/// records nothing. So the default costs nothing where there are no containers, and needs no
/// setting where there are.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ContainerConfig {
    /// Collect container metrics.
    pub enabled: bool,
    /// Where cgroups are mounted; unset: `{sys_root}/fs/cgroup`.
    pub cgroup_root: Option<PathBuf>,
    /// Docker Engine metadata.
    pub docker: DockerConfig,
    /// Kubelet metadata (containerd, CRI-O).
    pub kubelet: kubelet::KubeletConfig,
    /// Container (and, from the kubelet, pod) label keys that become `container.label.<key>`
    /// resource attributes. Only these: labels are unbounded, attributes must not be.
    pub labels: Vec<String>,
    /// Read per-container network bytes from each container's network namespace.
    pub network: bool,
    /// Read per-container pressure stall information (cgroup v2 and hybrid).
    pub pressure: bool,
    /// Keep the control files read every cycle open between cycles and re-read them with
    /// one `pread` (up to 10 descriptors per container instead of 1): about 40 % less CPU
    /// per cycle, but each kept cgroup file holds a page of kernel memory (measured 4.4 KiB,
    /// charged to the agent's memory cgroup; ~39 MiB at 1000 containers). Off by default.
    pub keep_files_open: bool,
}

impl Default for ContainerConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            cgroup_root: None,
            docker: DockerConfig::default(),
            kubelet: kubelet::KubeletConfig::default(),
            labels: Vec::new(),
            network: true,
            pressure: true,
            keep_files_open: false,
        }
    }
}

/// `containers.docker`.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct DockerConfig {
    /// Ask Docker for names, images and labels.
    pub enabled: bool,
    /// The Engine API socket.
    pub socket: PathBuf,
}

impl Default for DockerConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            socket: PathBuf::from("/var/run/docker.sock"),
        }
    }
}

impl ContainerConfig {
    /// The cgroup root for these host roots.
    pub fn cgroup_root(&self, roots: &Roots) -> PathBuf {
        self.cgroup_root
            .clone()
            .unwrap_or_else(|| roots.sys("fs/cgroup"))
    }

    /// Checks what can be checked without starting anything (for config validation).
    pub fn validate(&self) -> Result<(), String> {
        if let Some(root) = &self.cgroup_root
            && !root.is_dir()
        {
            return Err(format!(
                "cgroup_root {} is not a readable directory",
                root.display()
            ));
        }
        for l in &self.labels {
            if l.is_empty() || l.chars().any(char::is_whitespace) {
                return Err(format!("labels: {l:?} is not a label key"));
            }
        }
        if self.kubelet.enabled && self.kubelet.refresh.0 < kubelet::MIN_INTERVAL {
            return Err(format!(
                "kubelet.refresh must be at least {}",
                humantime::format_duration(kubelet::MIN_INTERVAL)
            ));
        }
        Ok(())
    }
}

/// Why the container collector could not start.
#[derive(Debug, thiserror::Error)]
pub enum ContainerStartError {
    /// The metadata sources could not start.
    #[error(transparent)]
    Metadata(#[from] metadata::StartError),
}

// ---------------------------------------------------------------------------------------
// The collector.

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

/// Per-container state kept between cycles.
#[derive(Debug)]
struct Tracked {
    ino: u64,
    path: ContainerPath,
    start_unix_nanos: u64,
    resource: Arc<Resource>,
    built_from: Option<Sources>,
    prev_cpu: Option<(u64, u64, u64)>,
    /// The last (user, system) split, for [`cgroup::adjust_cputime`].
    cpu_split: (u64, u64),
    /// Cached limits (cycle read, CPU, memory, tasks); see [`LIMITS_EVERY`].
    limits: Option<CachedLimits>,
    /// (pid, its network namespace), checked once per process. The pid stands between
    /// `cgroup.procs` reads (every [`LIMITS_EVERY`] cycles, and whenever its process is gone).
    netns: Option<(u32, NetNs)>,
    /// Its `memory.events` as [`oom_watch`] follows it (cgroup v2).
    oom: oom_watch::Followed,
    /// The container's cgroup directory and control files, kept open between cycles within
    /// the budget.
    fds: cgroup::KeptFds,
    /// Descriptors charged to the budget for it (what it may keep at most).
    fds_charged: usize,
    /// How many metrics the container had last cycle: its next batch entry reserves exactly
    /// that many instead of growing 4 → 8 → 16 → 32.
    metric_count: usize,
    seen_cycle: u64,
    first_cycle: u64,
}

/// Limits as last read: (cycle, CPU limit, memory limit, task limit).
type CachedLimits = (u64, Option<f64>, Option<u64>, Option<u64>);

/// The metadata a resource was built from, compared by pointer.
#[derive(Clone, Debug)]
struct Sources {
    docker: Option<Arc<ContainerMeta>>,
    kubelet: Option<Arc<ContainerMeta>>,
    pod: Option<Arc<PodMeta>>,
}

fn same<T>(a: &Option<Arc<T>>, b: &Option<Arc<T>>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => Arc::ptr_eq(a, b),
        (None, None) => true,
        _ => false,
    }
}

impl Sources {
    fn same_as(&self, o: &Sources) -> bool {
        same(&self.docker, &o.docker) && same(&self.kubelet, &o.kubelet) && same(&self.pod, &o.pod)
    }
    fn is_empty(&self) -> bool {
        self.docker.is_none() && self.kubelet.is_none()
    }
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
    sample: Sample,
    buf: cgroup::ReadBuf,
    net: NetReader,
    /// The interfaces read this cycle, every namespace's in a row, and where each namespace's
    /// are (by its inode): the containers of a pod share one namespace, read once.
    net_read: Vec<IfaceBytes>,
    net_by_ns: HashMap<u64, (usize, usize)>,
    /// Change notification for `memory.events`, on cgroup v2 only.
    oom_watch: Option<oom_watch::OomWatch>,
    devices: HashMap<(u32, u32), String>,
    cycle: u64,
    logged_missing: bool,
    /// How many descriptors containers may keep open ([`fd_budget`]), and how many the
    /// tracked containers are charged for now: each new container keeps everything
    /// ([`cgroup::Keep::All`]) while that fits, else its unified directory alone, else nothing.
    fd_budget: usize,
    fds_charged: usize,
    /// `containers.keep_files_open`: whether a container may keep its control files open
    /// ([`cgroup::Keep::All`]) or at most its unified directory.
    keep_files: bool,
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
        let worker = MetadataWorker::start(cfg, cache.clone())?;
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
        let oom_watch = (hierarchy.layout == cgroup::Layout::V2).then(oom_watch::OomWatch::new);
        Self {
            hierarchy,
            host,
            cache,
            worker,
            network: cfg.network,
            pressure: cfg.pressure,
            tracked: HashMap::new(),
            found: Vec::new(),
            sample: Sample::default(),
            buf: cgroup::ReadBuf::default(),
            net: NetReader::default(),
            net_read: Vec::new(),
            net_by_ns: HashMap::new(),
            oom_watch,
            devices: HashMap::new(),
            cycle: 0,
            logged_missing: false,
            fd_budget: fd_budget(),
            fds_charged: 0,
            keep_files: cfg.keep_files_open,
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

    /// What a container first seen now may keep open, and the descriptors that charges to
    /// the budget: everything (with `keep_files_open`) while the budget has room for it,
    /// else (v2, hybrid) its unified directory, else nothing.
    fn keep_for_new(&self) -> (cgroup::Keep, usize) {
        let all = self.hierarchy.kept_fds_per_container(self.pressure);
        let left = self.fd_budget.saturating_sub(self.fds_charged);
        if self.keep_files && all <= left {
            (cgroup::Keep::All, all)
        } else if left >= 1 && self.hierarchy.unified.is_some() {
            (cgroup::Keep::Dir, 1)
        } else {
            (cgroup::Keep::Nothing, 0)
        }
    }
}

/// The device name of `major:minor` from `{sys}/dev/block`, cached in `devices`.
fn device_name<'a>(
    devices: &'a mut HashMap<(u32, u32), String>,
    roots: &Roots,
    major: u32,
    minor: u32,
) -> &'a str {
    devices.entry((major, minor)).or_insert_with(|| {
        std::fs::read_link(roots.sys(&format!("dev/block/{major}:{minor}")))
            .ok()
            .and_then(|p| p.file_name().and_then(|n| n.to_str()).map(str::to_owned))
            .unwrap_or_else(|| format!("{major}:{minor}"))
    })
}

/// Builds a container's resource: the host's attributes, then the container's.
pub fn build_resource(
    host: &Resource,
    id: &str,
    path: &ContainerPath,
    docker: Option<&ContainerMeta>,
    kube: Option<&ContainerMeta>,
    pod: Option<&PodMeta>,
) -> Resource {
    let mut a = host.attributes.clone();
    a.push("container.id", id.to_owned());
    let meta = docker.or(kube);
    if let Some(rt) = meta.and_then(|m| m.runtime).or(path.runtime) {
        a.push("container.runtime.name", rt.as_str());
    }
    if let Some(m) = meta {
        if let Some(n) = &m.name {
            a.push("container.name", n.clone());
        }
        if let Some(n) = &m.image_name {
            a.push("container.image.name", n.clone());
        }
        if !m.image_tags.is_empty() {
            a.push(
                "container.image.tags",
                AttrValue::StrArray(m.image_tags.clone()),
            );
        }
    }
    let k8s = meta.map(|m| &m.k8s);
    let pod_uid = k8s
        .and_then(|k| k.pod_uid.clone())
        .or_else(|| path.pod_uid.clone());
    let pod_name = k8s
        .and_then(|k| k.pod_name.clone())
        .or_else(|| pod.map(|p| p.name.clone()));
    let namespace = k8s
        .and_then(|k| k.namespace.clone())
        .or_else(|| pod.map(|p| p.namespace.clone()));
    for (key, v) in [
        ("k8s.pod.name", pod_name),
        ("k8s.pod.uid", pod_uid),
        ("k8s.namespace.name", namespace),
        (
            "k8s.container.name",
            k8s.and_then(|k| k.container_name.clone()),
        ),
    ] {
        if let Some(v) = v {
            a.push(key, v);
        }
    }
    if let Some(m) = meta {
        for (k, v) in &m.labels {
            a.push(format!("container.label.{k}"), v.clone());
        }
    }
    Resource { attributes: a }
}

fn mode_attrs(mode: &'static str) -> Attributes {
    attrs([("cpu.mode", mode.into())])
}

/// Point attributes in a vector of exactly their size: at 1000 containers a batch holds
/// tens of thousands of them, and a growing vector would reserve four slots for one or two.
fn attrs<const N: usize>(pairs: [(&'static str, AttrValue); N]) -> Attributes {
    Attributes(
        pairs
            .into_iter()
            .map(|(k, v)| (std::borrow::Cow::Borrowed(k), v))
            .collect(),
    )
}

fn record_sample(
    rm: &mut ResourceMetrics,
    s: &Sample,
    prev: Option<(u64, u64, u64)>,
    now: u64,
    start: u64,
    pressure: bool,
) {
    if let (Some(u), Some(sy)) = (s.cpu_user_ns, s.cpu_system_ns) {
        rm.record(&CPU_TIME, mode_attrs("user"), u as f64 / 1e9);
        rm.record(&CPU_TIME, mode_attrs("system"), sy as f64 / 1e9);
        if let Some((t0, u0, s0)) = prev {
            let dt = now.saturating_sub(t0) as f64;
            if dt > 0.0 {
                rm.record(
                    &CPU_USAGE,
                    mode_attrs("user"),
                    u.saturating_sub(u0) as f64 / dt,
                );
                rm.record(
                    &CPU_USAGE,
                    mode_attrs("system"),
                    sy.saturating_sub(s0) as f64 / dt,
                );
            }
        }
    } else if let Some(t) = s.cpu_total_ns {
        rm.record(&CPU_TIME, Attributes::new(), t as f64 / 1e9);
    }
    if let Some(l) = s.cpu_limit {
        rm.record(&CPU_LIMIT, Attributes::new(), l);
    }
    if let Some(t) = s.throttling {
        rm.record(&CPU_THROTTLING_PERIODS, Attributes::new(), t.periods);
        rm.record(
            &CPU_THROTTLED_PERIODS,
            Attributes::new(),
            t.throttled_periods,
        );
        rm.record(
            &CPU_THROTTLED_TIME,
            Attributes::new(),
            t.throttled_ns as f64 / 1e9,
        );
    }
    if let Some(m) = s.memory {
        rm.record(&MEMORY_USAGE, Attributes::new(), m.usage);
        rm.record(&MEMORY_WORKING_SET, Attributes::new(), m.working_set());
        rm.record(&MEMORY_RSS, Attributes::new(), m.rss);
        if let Some(av) = m.available() {
            rm.record(&MEMORY_AVAILABLE, Attributes::new(), av);
        }
        if let Some(l) = m.limit {
            rm.record(&MEMORY_LIMIT, Attributes::new(), l);
        }
    }
    if let Some(k) = s.oom_kills {
        rm.record(&OOM_KILLS, Attributes::new(), k);
    }
    if let Some(p) = s.pids_current {
        rm.record(&PIDS_COUNT, Attributes::new(), p);
    }
    if let Some(p) = s.pids_limit {
        rm.record(&PIDS_LIMIT, Attributes::new(), p);
    }
    if pressure {
        for (resource, p) in ["cpu", "memory", "io"].into_iter().zip(&s.pressure) {
            let Some(p) = p else { continue };
            for (kind, line) in [("some", p.some), ("full", p.full)] {
                let Some(l) = line else { continue };
                let a = attrs([
                    ("system.linux.pressure.resource", resource.into()),
                    ("system.linux.pressure.kind", kind.into()),
                ]);
                rm.record(&PSI_STALL_TIME, a, l.total_us as f64 / 1e6);
            }
        }
    }
    rm.record(
        &UPTIME,
        Attributes::new(),
        now.saturating_sub(start) as f64 / 1e9,
    );
}

impl Collector for ContainerCollector {
    fn name(&self) -> &'static str {
        "containers"
    }

    fn collect(&mut self, ctx: &Context, batch: &mut Batch) -> Result<(), CollectError> {
        if self.cycle == 0
            && let Some(w) = &self.worker
        {
            w.wait_initial(metadata::INITIAL_SYNC_WAIT);
        }
        self.cycle += 1;
        let cycle = self.cycle;
        let now = batch.time_unix_nanos;
        self.hierarchy.walk(&mut self.found)?;
        if let Some(w) = &mut self.oom_watch {
            w.apply_events(&mut self.tracked, |t| &mut t.oom);
        }
        if self.network {
            self.net.begin_cycle(&ctx.roots.proc);
            self.net_read.clear();
            self.net_by_ns.clear();
        }
        let docker_live = self.cache.docker_connected();
        let kubelet_live = self.cache.kubelet_answered();
        let mut first_error: Option<CollectError> = None;
        let mut missing = 0usize;
        let mut missing_example = None;
        let mut ask_kubelet = false;

        let found = std::mem::take(&mut self.found);
        {
            let docker = self.cache.docker();
            let kube = self.cache.kubelet();
            for f in &found {
                let id = f.path.id.as_str();
                let sources = Sources {
                    docker: docker.get(id).cloned(),
                    kubelet: kube.containers.get(id).cloned(),
                    pod: f
                        .path
                        .pod_uid
                        .as_deref()
                        .and_then(|u| kube.pods.get(u))
                        .cloned(),
                };
                let fresh = !matches!(self.tracked.get(&f.rel), Some(t) if t.ino == f.ino);
                if fresh {
                    // A container restarted under the same path: its predecessor's state goes
                    // first (its watch too: a new watch on the same file would get the same
                    // descriptor, which removing the old one afterwards would end).
                    if let Some(mut old) = self.tracked.remove(&f.rel) {
                        self.fds_charged -= old.fds_charged;
                        if let Some(w) = &mut self.oom_watch {
                            w.forget(&mut old.oom);
                        }
                    }
                    let (keep, charge) = self.keep_for_new();
                    let start = self
                        .hierarchy
                        .walk_root()
                        .and_then(|r| cgroup::dir_time_unix_nanos(&r.join(&f.rel)).ok())
                        .unwrap_or(now);
                    let t = Tracked {
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
                    };
                    self.fds_charged += charge;
                    self.tracked.insert(f.rel.clone(), t);
                }
                let Some(t) = self.tracked.get_mut(&f.rel) else {
                    continue;
                };
                t.seen_cycle = cycle;
                if sources.is_empty() {
                    // Held back one cycle while a connected source may still name it.
                    let docker_may_know =
                        docker_live && matches!(t.path.runtime, None | Some(Runtime::Docker));
                    let kubelet_may_know = kubelet_live && t.path.pod_uid.is_some();
                    if t.first_cycle == cycle && cycle > 1 && (docker_may_know || kubelet_may_know)
                    {
                        if let Some(tx) = self
                            .worker
                            .as_ref()
                            .and_then(|w| w.docker_requests.as_ref())
                        {
                            let _ = tx.try_send(t.path.id.clone());
                        }
                        ask_kubelet |= kubelet_may_know;
                        continue;
                    }
                    missing += 1;
                    missing_example.get_or_insert_with(|| t.path.id.clone());
                }
                if !t.built_from.as_ref().is_some_and(|b| b.same_as(&sources)) {
                    t.resource = Arc::new(build_resource(
                        &self.host,
                        &t.path.id,
                        &t.path,
                        sources.docker.as_deref(),
                        sources.kubelet.as_deref(),
                        sources.pod.as_deref(),
                    ));
                    t.built_from = Some(sources);
                }
                let read_limits = t
                    .limits
                    .is_none_or(|(at, ..)| cycle.saturating_sub(at) >= LIMITS_EVERY);
                // The pid whose network namespace is read comes from `cgroup.procs` with the
                // limits, or when none is known (new container, or its process went away):
                // one file less per container and cycle.
                let known_pid = t.netns.map(|(pid, _)| pid);
                let read_pid = self.network && (read_limits || known_pid.is_none());
                // `memory.events` (cgroup v2) only when it may have changed, with the limits
                // as a backstop; v1's `memory.oom_control` every cycle.
                let oom_due = match (&mut self.oom_watch, self.hierarchy.walk_root()) {
                    (Some(w), Some(root)) => w.before_read(
                        &mut t.oom,
                        || root.join(&f.rel).join("memory.events"),
                        &f.rel,
                        read_limits,
                    ),
                    _ => true,
                };
                let reads = cgroup::Reads {
                    pressure: self.pressure,
                    limits: read_limits,
                    pid: read_pid,
                    oom_events: oom_due,
                };
                match self.hierarchy.read(
                    &f.rel,
                    &mut t.fds,
                    &mut self.buf,
                    &mut self.sample,
                    reads,
                ) {
                    Ok(ReadOutcome::Read) => {}
                    Ok(ReadOutcome::Gone) => {
                        t.seen_cycle = 0;
                        continue;
                    }
                    Err(e) => {
                        first_error.get_or_insert(e);
                        continue;
                    }
                }
                if !read_pid {
                    self.sample.pid = known_pid;
                }
                if let Some(w) = &mut self.oom_watch {
                    let memory = self.sample.memory.is_some();
                    self.sample.oom_kills =
                        w.after_read(&mut t.oom, memory, oom_due, self.sample.oom_kills);
                }
                if read_limits {
                    let mem = self.sample.memory.and_then(|m| m.limit);
                    t.limits = Some((cycle, self.sample.cpu_limit, mem, self.sample.pids_limit));
                } else if let Some((_, cpu, mem, pids)) = t.limits {
                    self.sample.cpu_limit = cpu;
                    self.sample.pids_limit = pids;
                    if let Some(m) = &mut self.sample.memory {
                        m.limit = mem;
                    }
                }
                if let (Some(total), Some(u), Some(sy)) = (
                    self.sample.cpu_total_ns,
                    self.sample.cpu_user_ns,
                    self.sample.cpu_system_ns,
                ) {
                    let (u, sy) = cgroup::adjust_cputime(total, u, sy, &mut t.cpu_split);
                    (self.sample.cpu_user_ns, self.sample.cpu_system_ns) = (Some(u), Some(sy));
                }
                let s = &self.sample;
                let start = t.start_unix_nanos;
                let rm = batch.add_resource(t.resource.clone(), start);
                rm.metrics.reserve_exact(t.metric_count);
                record_sample(rm, s, t.prev_cpu, now, start, self.pressure);
                if let (Some(u), Some(sy)) = (s.cpu_user_ns, s.cpu_system_ns) {
                    t.prev_cpu = Some((now, u, sy));
                }
                for d in &s.io {
                    let dev = device_name(&mut self.devices, &ctx.roots, d.major, d.minor);
                    for (dir, v) in [("read", d.read_bytes), ("write", d.write_bytes)] {
                        let a = attrs([
                            ("disk.io.direction", dir.into()),
                            ("system.device", dev.to_owned().into()),
                        ]);
                        rm.record(&DISK_IO, a, v);
                    }
                }
                let netns = match (self.network, s.pid, t.netns) {
                    (true, Some(pid), Some((p, ns))) if p == pid => ns,
                    (true, Some(pid), _) => {
                        let ns = self.net.netns(&ctx.roots.proc, pid);
                        t.netns = Some((pid, ns));
                        ns
                    }
                    _ => NetNs::Host,
                };
                if let (NetNs::Own(mut ns_id), Some(mut pid)) = (netns, s.pid) {
                    // A namespace another container of this cycle (a pod's) has read already
                    // is not read again, once this container's own process is seen in it. At
                    // most one retry: the kept process is gone, `cgroup.procs` names one that
                    // lives.
                    let mut retried = false;
                    // Bounded: a process that keeps changing namespaces under us ends it.
                    let mut turns = 0;
                    let read = loop {
                        turns += 1;
                        if turns > 4 {
                            break Ok(None);
                        }
                        if let Some(range) = ns_id.and_then(|id| self.net_by_ns.get(&id).copied()) {
                            // Only if this container's process is alive and still in it (a
                            // dead pid's namespace may be gone and its inode reused): one
                            // `readlink`, cheaper than reading `net/dev`.
                            let now = self.net.netns(&ctx.roots.proc, pid);
                            if now == NetNs::Own(ns_id) {
                                break Ok(Some(range));
                            }
                            t.netns = Some((pid, now));
                            match now {
                                NetNs::Host => break Ok(None),
                                // Another namespace: look it up (or read it) instead.
                                NetNs::Own(Some(id)) => {
                                    ns_id = Some(id);
                                    continue;
                                }
                                // Gone: the read below finds no process and asks
                                // `cgroup.procs` for one.
                                NetNs::Own(None) => ns_id = None,
                            }
                        }
                        let start = self.net_read.len();
                        match self.net.read(&ctx.roots.proc, pid, &mut self.net_read) {
                            Ok(true) => {
                                let range = (start, self.net_read.len());
                                if let Some(id) = ns_id {
                                    self.net_by_ns.insert(id, range);
                                }
                                break Ok(Some(range));
                            }
                            Ok(false) if !retried && !read_pid => {
                                retried = true;
                                match self.hierarchy.first_pid(&f.rel, &mut self.buf) {
                                    Ok(Some(p)) if p != pid => {
                                        pid = p;
                                        let ns = self.net.netns(&ctx.roots.proc, pid);
                                        t.netns = Some((pid, ns));
                                        match ns {
                                            NetNs::Host => break Ok(None),
                                            NetNs::Own(id) => ns_id = id,
                                        }
                                    }
                                    Ok(_) => break Ok(None),
                                    Err(e) => break Err(e),
                                }
                            }
                            Ok(false) => break Ok(None),
                            Err(e) => break Err(e),
                        }
                    };
                    match read {
                        Ok(Some((from, to))) => {
                            for i in &self.net_read[from..to] {
                                for (dir, v) in [("receive", i.receive), ("transmit", i.transmit)] {
                                    let a = attrs([
                                        ("network.interface.name", i.name.clone().into()),
                                        ("network.io.direction", dir.into()),
                                    ]);
                                    rm.record(&NETWORK_IO, a, v);
                                }
                            }
                        }
                        // No process to read (or it has just joined the host's namespace):
                        // the next cycle reads `cgroup.procs` again unless it is the host's.
                        Ok(None) => {
                            if t.netns.is_some_and(|(_, ns)| ns != NetNs::Host) {
                                t.netns = None;
                            }
                        }
                        Err(e) => {
                            first_error.get_or_insert(e);
                        }
                    }
                }
                t.metric_count = rm.metrics.len();
            }
        }
        self.found = found;
        let charged = &mut self.fds_charged;
        let oom_watch = &mut self.oom_watch;
        self.tracked.retain(|_, t| {
            let stays = t.seen_cycle == cycle;
            if !stays {
                // Dropping its state closes its descriptors.
                *charged -= t.fds_charged;
                if let Some(w) = oom_watch.as_mut() {
                    w.forget(&mut t.oom);
                }
            }
            stays
        });
        if ask_kubelet
            && let Some(tx) = self
                .worker
                .as_ref()
                .and_then(|w| w.kubelet_requests.as_ref())
        {
            let _ = tx.try_send(());
        }
        if missing > 0 && !self.logged_missing {
            self.logged_missing = true;
            tracing::info!(
                containers = missing,
                example = missing_example.as_deref().unwrap_or(""),
                "containers without metadata (no reachable runtime source knows them) are reported by ID only (logged once)"
            );
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    //! The same assertions on cgroup v1, v2 and hybrid fixture trees
    //! (`agent/tests/fixtures/cgroup-*`): values equal to the files, attributes from the
    //! metadata cache, container churn (new, stopped, restarted). The runtimes' path shapes
    //! beyond Docker's and containerd's are on a tree too: CRI-O and Podman (systemd) on v2,
    //! Podman (cgroupfs) on v1, each next to its conmon monitor's cgroup where one exists.

    use std::path::{Path, PathBuf};
    use std::time::{Duration, SystemTime};

    use faultline_exporters::model::Metric;

    use super::*;
    use crate::collectors::host::test_support::fixture_dir;

    const A: &str = "4a57c14d26338e3942ed0c74fa408ccc2b867eb66855835dbda05e806e749147";
    const B: &str = "9f8e7d6c5b4a39281706f5e4d3c2b1a09f8e7d6c5b4a39281706f5e4d3c2b1a0";
    const C: &str = "c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00";
    const UID: &str = "0f1e2d3c-4b5a-6978-8a9b-acbdcedf0011";
    /// The CRI-O container of the v2 tree (`crio-<id>.scope`) and its pod's UID.
    const CRIO: &str = "c2105eedc2105eedc2105eedc2105eedc2105eedc2105eedc2105eedc2105eed";
    const CRIO_POD_UID: &str = "7c6b5a49-3827-4160-9f8e-7d6c5b4a3928";
    /// The Podman container: `machine.slice/libpod-<id>.scope` on v2,
    /// `libpod_parent/libpod-<id>` on v1, with the same figures in both trees.
    const PODMAN: &str = "ba5eba11ba5eba11ba5eba11ba5eba11ba5eba11ba5eba11ba5eba11ba5eba11";
    const T0: u64 = 1_800_000_000_000_000_000;

    /// Copies a fixture tree, keeping symlinks, so a test can change it.
    fn copy_tree(src: &Path, dst: &Path) {
        std::fs::create_dir_all(dst).unwrap();
        for e in std::fs::read_dir(src).unwrap() {
            let e = e.unwrap();
            let (from, to) = (e.path(), dst.join(e.file_name()));
            let ft = e.file_type().unwrap();
            if ft.is_symlink() {
                std::os::unix::fs::symlink(std::fs::read_link(&from).unwrap(), &to).unwrap();
            } else if ft.is_dir() {
                copy_tree(&from, &to);
            } else {
                std::fs::copy(&from, &to).unwrap();
            }
        }
    }

    struct Fixture {
        _dir: tempfile::TempDir,
        root: PathBuf,
        collector: ContainerCollector,
        cache: Arc<MetadataCache>,
    }

    impl Fixture {
        fn new(name: &str) -> Self {
            let dir = tempfile::tempdir().unwrap();
            let root = dir.path().join(name);
            copy_tree(&fixture_dir(name), &root);
            let hierarchy = Hierarchy::detect(&root.join("sys/fs/cgroup")).unwrap();
            let host = Arc::new(Resource {
                attributes: Attributes::new()
                    .with("service.name", "faultline")
                    .with("host.name", "node-1"),
            });
            let cache = Arc::new(MetadataCache::default());
            let collector = ContainerCollector::with_cache(
                hierarchy,
                host,
                cache.clone(),
                &ContainerConfig::default(),
            );
            Self {
                _dir: dir,
                root,
                collector,
                cache,
            }
        }

        fn cycle(&mut self, at: u64) -> (Batch, Result<(), CollectError>) {
            let roots = Roots {
                proc: self.root.join("proc"),
                sys: self.root.join("sys"),
                rootfs: self.root.join("rootfs"),
            };
            let ctx = Context {
                roots,
                boot_time_unix_nanos: 1,
            };
            let mut b = Batch::new(at, Arc::new(Resource::default()), 1);
            let r = self.collector.collect(&ctx, &mut b);
            (b, r)
        }

        /// The container's control file `name`, in whichever of its directories has it.
        fn file_of(&self, id: &str, name: &str) -> PathBuf {
            self.dirs_of(id)
                .into_iter()
                .map(|d| d.join(name))
                .find(|p| p.exists())
                .unwrap_or_else(|| panic!("{id} has no {name}"))
        }

        /// Every directory of container `id` in every hierarchy.
        fn dirs_of(&self, id: &str) -> Vec<PathBuf> {
            let mut out = Vec::new();
            find_dirs(&self.root.join("sys/fs/cgroup"), id, &mut out);
            out
        }
    }

    fn find_dirs(dir: &Path, name: &str, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let e = e.unwrap();
            if !e.file_type().unwrap().is_dir() {
                continue;
            }
            let n = e.file_name().to_string_lossy().into_owned();
            if n.contains(name) {
                out.push(e.path());
            } else {
                find_dirs(&e.path(), name, out);
            }
        }
    }

    fn resource<'a>(b: &'a Batch, id: &str) -> Option<&'a ResourceMetrics> {
        b.resources.iter().find(|r| {
            r.resource
                .attributes
                .get("container.id")
                .map(AttrValue::to_text)
                .as_deref()
                == Some(id)
        })
    }

    fn attr(r: &ResourceMetrics, key: &str) -> Option<String> {
        r.resource
            .attributes
            .get(key)
            .map(|v| v.to_text().into_owned())
    }

    fn metric<'a>(r: &'a ResourceMetrics, name: &str) -> Option<&'a Metric> {
        r.metrics.iter().find(|m| m.name == name)
    }

    /// Bytes received on `eth0` as container `id` reports them.
    fn eth0_rx(b: &Batch, id: &str) -> f64 {
        value(
            resource(b, id).unwrap(),
            "container.network.io",
            &[
                ("network.interface.name", "eth0"),
                ("network.io.direction", "receive"),
            ],
        )
    }

    fn value(r: &ResourceMetrics, name: &str, attrs: &[(&str, &str)]) -> f64 {
        let m = metric(r, name).unwrap_or_else(|| panic!("{name} missing"));
        let hits: Vec<_> = m
            .points
            .iter()
            .filter(|p| {
                attrs.iter().all(|(k, v)| {
                    p.attributes.get(k).map(AttrValue::to_text).as_deref() == Some(*v)
                })
            })
            .collect();
        assert_eq!(hits.len(), 1, "{name} {attrs:?}: {:?}", m.points);
        hits[0].value.as_f64()
    }

    fn docker_meta() -> ContainerMeta {
        ContainerMeta {
            name: Some("web-1".into()),
            image_name: Some("faultline-workload".into()),
            image_tags: vec!["test".into()],
            runtime: Some(Runtime::Docker),
            labels: vec![("team".into(), "sre".into())],
            k8s: metadata::K8sMeta::default(),
        }
    }

    /// The `container.id` of every resource in `b` that has one, sorted (a container reported
    /// twice appears twice).
    fn container_ids(b: &Batch) -> Vec<String> {
        let mut ids: Vec<String> = b
            .resources
            .iter()
            .filter_map(|r| attr(r, "container.id"))
            .collect();
        ids.sort();
        ids
    }

    /// The assertions every layout must pass; `k8s_id` is the layout's Kubernetes container,
    /// `containers` the number of containers in the tree.
    fn check_layout(
        name: &str,
        layout: cgroup::Layout,
        k8s_id: &str,
        psi: bool,
        containers: usize,
    ) {
        let mut f = Fixture::new(name);
        assert_eq!(f.collector.hierarchy().layout, layout);
        f.cache.docker_upsert(A.into(), docker_meta());
        f.cache.kubelet_replace(
            vec![],
            vec![(
                UID.into(),
                PodMeta {
                    name: "web-7d9".into(),
                    namespace: "prod".into(),
                },
            )],
        );
        let (b, r) = f.cycle(T0);
        r.unwrap();
        assert_eq!(
            b.resources.len(),
            1 + containers,
            "host + {containers} containers; services, pod directories and monitors are not containers"
        );

        let a = resource(&b, A).unwrap();
        assert_eq!(
            attr(a, "service.name").as_deref(),
            Some("faultline"),
            "host attributes are repeated"
        );
        assert_eq!(attr(a, "host.name").as_deref(), Some("node-1"));
        assert_eq!(attr(a, "container.name").as_deref(), Some("web-1"));
        assert_eq!(
            attr(a, "container.image.name").as_deref(),
            Some("faultline-workload")
        );
        assert_eq!(
            a.resource.attributes.get("container.image.tags"),
            Some(&AttrValue::StrArray(vec!["test".into()]))
        );
        assert_eq!(attr(a, "container.runtime.name").as_deref(), Some("docker"));
        assert_eq!(attr(a, "container.label.team").as_deref(), Some("sre"));
        assert_eq!(attr(a, "k8s.pod.uid"), None);
        // CPU: the modes sum to the total usage file (5 s).
        assert_eq!(value(a, "container.cpu.time", &[("cpu.mode", "user")]), 4.0);
        assert_eq!(
            value(a, "container.cpu.time", &[("cpu.mode", "system")]),
            1.0
        );
        assert!(
            metric(a, "container.cpu.usage").is_none(),
            "a rate needs two cycles"
        );
        assert_eq!(value(a, "container.cpu.limit", &[]), 0.5);
        assert_eq!(
            value(a, "container.cpu.throttling_data.periods", &[]),
            100.0
        );
        assert_eq!(
            value(a, "container.cpu.throttling_data.throttled_periods", &[]),
            7.0
        );
        assert_eq!(
            value(a, "container.cpu.throttling_data.throttled_time", &[]),
            0.25
        );
        // Memory.
        assert_eq!(value(a, "container.memory.usage", &[]), 70_000_000.0);
        assert_eq!(value(a, "container.memory.working_set", &[]), 68_000_000.0);
        assert_eq!(value(a, "container.memory.rss", &[]), 67_108_864.0);
        assert_eq!(value(a, "container.memory.limit", &[]), 134_217_728.0);
        assert_eq!(
            value(a, "container.memory.available", &[]),
            134_217_728.0 - 68_000_000.0
        );
        assert_eq!(value(a, "container.memory.oom_kills", &[]), 1.0);
        // Disk: 10 MiB written to 254:0, named from /sys/dev/block.
        assert_eq!(
            value(
                a,
                "container.disk.io",
                &[("system.device", "vda"), ("disk.io.direction", "write")]
            ),
            10_485_760.0
        );
        assert_eq!(
            value(
                a,
                "container.disk.io",
                &[("system.device", "vda"), ("disk.io.direction", "read")]
            ),
            4096.0
        );
        assert_eq!(value(a, "container.pids.count", &[]), 3.0);
        assert!(
            metric(a, "container.pids.limit").is_none(),
            "pids.max is max"
        );
        // Network from the container's own namespace.
        assert_eq!(
            value(
                a,
                "container.network.io",
                &[
                    ("network.interface.name", "lo"),
                    ("network.io.direction", "receive")
                ]
            ),
            1_048_576.0
        );
        assert_eq!(
            value(
                a,
                "container.network.io",
                &[
                    ("network.interface.name", "eth0"),
                    ("network.io.direction", "transmit")
                ]
            ),
            500.0
        );
        // Pressure only where cgroup2 has the container.
        assert_eq!(
            metric(a, "container.linux.pressure.stall_time").is_some(),
            psi,
            "{name}"
        );
        if psi {
            let v = value(
                a,
                "container.linux.pressure.stall_time",
                &[
                    ("system.linux.pressure.resource", "cpu"),
                    ("system.linux.pressure.kind", "some"),
                ],
            );
            assert!((v - 0.332412).abs() < 1e-9);
        }
        // Start time: the cgroup directory's creation (modification) time; uptime from it.
        let start = cgroup::dir_time_unix_nanos(
            &f.collector
                .hierarchy()
                .walk_root()
                .unwrap()
                .join(f.collector.tracked.keys().find(|k| k.contains(A)).unwrap()),
        )
        .unwrap();
        let cpu = metric(a, "container.cpu.time").unwrap();
        assert!(cpu.points.iter().all(|p| p.start_unix_nanos == start));
        assert!((value(a, "container.uptime", &[]) - (T0 - start) as f64 / 1e9).abs() < 1e-6);

        // The Kubernetes container: pod UID from the path, names from the kubelet's pod list.
        let k = resource(&b, k8s_id).unwrap();
        assert_eq!(attr(k, "k8s.pod.uid").as_deref(), Some(UID));
        assert_eq!(attr(k, "k8s.pod.name").as_deref(), Some("web-7d9"));
        assert_eq!(attr(k, "k8s.namespace.name").as_deref(), Some("prod"));
        assert_eq!(attr(k, "container.name"), None, "no source names it");
        let total = value(k, "container.cpu.time", &[("cpu.mode", "user")])
            + value(k, "container.cpu.time", &[("cpu.mode", "system")]);
        assert!((total - 2.5).abs() < 1e-9, "{total}");
        assert!(
            metric(k, "container.memory.available").is_none()
                && metric(k, "container.memory.limit").is_none(),
            "no memory limit"
        );
        assert!(metric(k, "container.cpu.limit").is_none(), "no CPU limit");
        assert_eq!(value(k, "container.pids.limit", &[]), 1024.0);
        assert!(
            metric(k, "container.network.io").is_none(),
            "host network namespace: no container network metrics"
        );

        // Second cycle 10 s later with 1 s more user time: a rate, and the same resource Arc.
        let a_res = a.resource.clone();
        add_user_cpu(&f, A, 1);
        let (b2, r) = f.cycle(T0 + 10_000_000_000);
        r.unwrap();
        let a2 = resource(&b2, A).unwrap();
        assert!(
            Arc::ptr_eq(&a_res, &a2.resource),
            "unchanged metadata: the resource is reused, not rebuilt"
        );
        assert!((value(a2, "container.cpu.usage", &[("cpu.mode", "user")]) - 0.1).abs() < 1e-9);
        assert_eq!(
            value(a2, "container.cpu.usage", &[("cpu.mode", "system")]),
            0.0
        );

        // Renamed: the resource is rebuilt with the new name.
        f.cache.docker_upsert(
            A.into(),
            ContainerMeta {
                name: Some("web-2".into()),
                ..docker_meta()
            },
        );
        let (b3, _) = f.cycle(T0 + 20_000_000_000);
        assert_eq!(
            attr(resource(&b3, A).unwrap(), "container.name").as_deref(),
            Some("web-2")
        );

        // Stopped: its series end at once.
        let saved = tempfile::tempdir().unwrap();
        let dirs = f.dirs_of(A);
        assert!(!dirs.is_empty());
        for (i, d) in dirs.iter().enumerate() {
            copy_tree(d, &saved.path().join(i.to_string()));
            std::fs::remove_dir_all(d).unwrap();
        }
        let (b4, r) = f.cycle(T0 + 30_000_000_000);
        r.unwrap();
        assert!(
            resource(&b4, A).is_none(),
            "a stopped container is not reported"
        );
        assert!(resource(&b4, k8s_id).is_some());
        assert_eq!(
            f.collector.tracked_count(),
            containers - 1,
            "no state is kept for it either"
        );

        // Restarted: same path, new directory, new start time.
        for (i, d) in dirs.iter().enumerate() {
            copy_tree(&saved.path().join(i.to_string()), d);
            let later =
                SystemTime::UNIX_EPOCH + Duration::from_nanos(start) + Duration::from_secs(3600);
            std::fs::File::open(d).unwrap().set_modified(later).unwrap();
        }
        let (b5, r) = f.cycle(T0 + 40_000_000_000);
        r.unwrap();
        let a5 = resource(&b5, A).unwrap();
        let new_start = metric(a5, "container.cpu.time").unwrap().points[0].start_unix_nanos;
        assert_eq!(
            new_start,
            start + 3_600_000_000_000,
            "a restarted container has a new start time"
        );
        assert!(
            metric(a5, "container.cpu.usage").is_none(),
            "no rate across a restart"
        );
    }

    /// Adds `secs` of user CPU time to container `id` in whichever file the layout has.
    fn add_user_cpu(f: &Fixture, id: &str, secs: u64) {
        for d in f.dirs_of(id) {
            let v2 = d.join("cpu.stat");
            if let Ok(text) = std::fs::read_to_string(&v2)
                && text.contains("user_usec")
            {
                let text = text
                    .lines()
                    .map(|l| match l.split_once(' ') {
                        Some((k @ ("user_usec" | "usage_usec"), v)) => {
                            format!("{k} {}", v.parse::<u64>().unwrap() + secs * 1_000_000)
                        }
                        _ => l.to_owned(),
                    })
                    .collect::<Vec<_>>()
                    .join("\n");
                std::fs::write(&v2, text + "\n").unwrap();
            }
            let stat = d.join("cpuacct.stat");
            if let Ok(text) = std::fs::read_to_string(&stat) {
                let text = text
                    .lines()
                    .map(|l| match l.split_once(' ') {
                        Some(("user", v)) => {
                            format!("user {}", v.parse::<u64>().unwrap() + secs * 100)
                        }
                        _ => l.to_owned(),
                    })
                    .collect::<Vec<_>>()
                    .join("\n");
                std::fs::write(&stat, text + "\n").unwrap();
            }
            for file in ["cpuacct.usage_user", "cpuacct.usage"] {
                let p = d.join(file);
                if let Ok(text) = std::fs::read_to_string(&p) {
                    let v: u64 = text.trim().parse().unwrap();
                    std::fs::write(&p, format!("{}\n", v + secs * 1_000_000_000)).unwrap();
                }
            }
        }
    }

    #[test]
    fn cgroup_v2_fixture() {
        check_layout("cgroup-v2", cgroup::Layout::V2, B, true, 4);
        // The runtime comes from the path where metadata is missing.
        let mut f = Fixture::new("cgroup-v2");
        let (b, _) = f.cycle(T0);
        assert_eq!(
            attr(resource(&b, B).unwrap(), "container.runtime.name").as_deref(),
            Some("containerd")
        );
        assert_eq!(
            attr(resource(&b, A).unwrap(), "container.name"),
            None,
            "reported by ID without metadata"
        );
    }

    #[test]
    fn cgroup_v1_fixture() {
        check_layout("cgroup-v1", cgroup::Layout::V1, C, false, 3);
    }

    #[test]
    fn cgroup_hybrid_fixture() {
        check_layout("cgroup-hybrid", cgroup::Layout::Hybrid, C, true, 2);
    }

    /// The Podman container's figures, the same in the v1 and v2 trees; `psi`: whether the
    /// layout has pressure files.
    fn check_podman(b: &Batch, psi: bool) {
        let p = resource(b, PODMAN).unwrap();
        assert_eq!(attr(p, "container.runtime.name").as_deref(), Some("podman"));
        assert_eq!(attr(p, "k8s.pod.uid"), None, "not under kubepods");
        assert_eq!(
            attr(p, "container.name"),
            None,
            "no metadata source names Podman containers"
        );
        assert_eq!(value(p, "container.cpu.time", &[("cpu.mode", "user")]), 1.0);
        assert_eq!(
            value(p, "container.cpu.time", &[("cpu.mode", "system")]),
            0.5
        );
        assert_eq!(value(p, "container.cpu.limit", &[]), 2.0);
        assert_eq!(value(p, "container.cpu.throttling_data.periods", &[]), 40.0);
        assert_eq!(
            value(p, "container.cpu.throttling_data.throttled_periods", &[]),
            2.0
        );
        assert_eq!(
            value(p, "container.cpu.throttling_data.throttled_time", &[]),
            0.03
        );
        assert_eq!(value(p, "container.memory.usage", &[]), 40_000_000.0);
        assert_eq!(value(p, "container.memory.working_set", &[]), 34_000_000.0);
        assert_eq!(value(p, "container.memory.rss", &[]), 32_000_000.0);
        assert_eq!(value(p, "container.memory.limit", &[]), 268_435_456.0);
        assert_eq!(
            value(p, "container.memory.available", &[]),
            268_435_456.0 - 34_000_000.0
        );
        assert_eq!(value(p, "container.memory.oom_kills", &[]), 0.0);
        assert_eq!(
            value(
                p,
                "container.disk.io",
                &[("system.device", "vda"), ("disk.io.direction", "read")]
            ),
            65_536.0
        );
        assert_eq!(
            value(
                p,
                "container.disk.io",
                &[("system.device", "vda"), ("disk.io.direction", "write")]
            ),
            131_072.0
        );
        assert_eq!(value(p, "container.pids.count", &[]), 4.0);
        assert_eq!(value(p, "container.pids.limit", &[]), 2048.0);
        // pid 4545's own namespace.
        assert_eq!(
            value(
                p,
                "container.network.io",
                &[
                    ("network.interface.name", "eth0"),
                    ("network.io.direction", "receive")
                ]
            ),
            5000.0
        );
        assert_eq!(
            value(
                p,
                "container.network.io",
                &[
                    ("network.interface.name", "eth0"),
                    ("network.io.direction", "transmit")
                ]
            ),
            2500.0
        );
        assert_eq!(
            metric(p, "container.linux.pressure.stall_time").is_some(),
            psi
        );
        if psi {
            assert_eq!(
                value(
                    p,
                    "container.linux.pressure.stall_time",
                    &[
                        ("system.linux.pressure.resource", "cpu"),
                        ("system.linux.pressure.kind", "some"),
                    ],
                ),
                0.064
            );
        }
    }

    #[test]
    fn cri_o_and_podman_systemd_containers_are_found_on_the_v2_tree_with_the_files_figures() {
        let mut f = Fixture::new("cgroup-v2");
        let (b, r) = f.cycle(T0);
        r.unwrap();
        let mut want = vec![A, B, CRIO, PODMAN];
        want.sort_unstable();
        assert_eq!(
            container_ids(&b),
            want,
            "each container once; crio-conmon-<id>.scope and libpod-conmon-<id>.scope are \
             monitors, not containers"
        );

        // CRI-O under a besteffort pod: runtime and pod UID from the path alone.
        let c = resource(&b, CRIO).unwrap();
        assert_eq!(attr(c, "container.runtime.name").as_deref(), Some("cri-o"));
        assert_eq!(attr(c, "k8s.pod.uid").as_deref(), Some(CRIO_POD_UID));
        assert_eq!(
            attr(c, "k8s.pod.name"),
            None,
            "no kubelet answer in this test"
        );
        assert_eq!(value(c, "container.cpu.time", &[("cpu.mode", "user")]), 3.0);
        assert_eq!(
            value(c, "container.cpu.time", &[("cpu.mode", "system")]),
            0.75
        );
        assert!(metric(c, "container.cpu.limit").is_none(), "cpu.max is max");
        assert!(
            metric(c, "container.cpu.throttling_data.periods").is_none(),
            "no CFS quota, no nr_periods in cpu.stat"
        );
        assert_eq!(value(c, "container.memory.usage", &[]), 30_000_000.0);
        assert_eq!(value(c, "container.memory.working_set", &[]), 25_000_000.0);
        assert_eq!(value(c, "container.memory.rss", &[]), 24_000_000.0);
        assert!(
            metric(c, "container.memory.limit").is_none()
                && metric(c, "container.memory.available").is_none(),
            "memory.max is max"
        );
        assert_eq!(value(c, "container.memory.oom_kills", &[]), 0.0);
        assert_eq!(
            value(
                c,
                "container.disk.io",
                &[("system.device", "sdb"), ("disk.io.direction", "read")]
            ),
            8192.0
        );
        assert_eq!(
            value(
                c,
                "container.disk.io",
                &[("system.device", "sdb"), ("disk.io.direction", "write")]
            ),
            4096.0
        );
        assert_eq!(value(c, "container.pids.count", &[]), 2.0);
        assert!(
            metric(c, "container.pids.limit").is_none(),
            "pids.max is max"
        );
        // pid 4444's own namespace.
        assert_eq!(
            value(
                c,
                "container.network.io",
                &[
                    ("network.interface.name", "eth0"),
                    ("network.io.direction", "receive")
                ]
            ),
            3000.0
        );
        assert_eq!(
            value(
                c,
                "container.network.io",
                &[
                    ("network.interface.name", "lo"),
                    ("network.io.direction", "transmit")
                ]
            ),
            2048.0
        );
        assert_eq!(
            value(
                c,
                "container.linux.pressure.stall_time",
                &[
                    ("system.linux.pressure.resource", "cpu"),
                    ("system.linux.pressure.kind", "some"),
                ],
            ),
            0.125
        );

        check_podman(&b, true);
    }

    #[test]
    fn podman_cgroupfs_container_is_found_on_the_v1_tree_with_the_files_figures() {
        let mut f = Fixture::new("cgroup-v1");
        let (b, r) = f.cycle(T0);
        r.unwrap();
        let mut want = vec![A, C, PODMAN];
        want.sort_unstable();
        assert_eq!(
            container_ids(&b),
            want,
            "libpod_parent itself is not a container"
        );
        check_podman(&b, false);
    }

    #[test]
    fn a_new_container_appears_in_the_next_cycle() {
        let mut f = Fixture::new("cgroup-v2");
        let dirs = f.dirs_of(A);
        let saved = tempfile::tempdir().unwrap();
        copy_tree(&dirs[0], saved.path());
        std::fs::remove_dir_all(&dirs[0]).unwrap();
        let (b, _) = f.cycle(T0);
        assert!(resource(&b, A).is_none());
        copy_tree(saved.path(), &dirs[0]);
        let (b, _) = f.cycle(T0 + 1);
        assert!(resource(&b, A).is_some());
    }

    #[test]
    fn network_bytes_follow_the_container_to_its_next_process_in_the_same_cycle() {
        let mut f = Fixture::new("cgroup-v2");
        let rx = |b: &Batch| eth0_rx(b, A);
        let (b, r) = f.cycle(T0);
        r.unwrap();
        assert_eq!(rx(&b), 1000.0, "pid 4242's namespace");
        // Between limit refreshes the collector keeps the pid instead of reading
        // cgroup.procs. The process exits and another takes its place in the container.
        let proc = f.root.join("proc");
        copy_tree(&proc.join("4242"), &proc.join("5151"));
        let dev = proc.join("5151/net/dev");
        let text = std::fs::read_to_string(&dev).unwrap();
        std::fs::write(&dev, text.replace("eth0:     1000", "eth0:     7777")).unwrap();
        std::fs::remove_dir_all(proc.join("4242")).unwrap();
        let procs = f.file_of(A, "cgroup.procs");
        std::fs::write(&procs, "5151\n").unwrap();
        let (b, r) = f.cycle(T0 + 10_000_000_000);
        r.unwrap();
        assert_eq!(rx(&b), 7777.0, "the new process's namespace, without a gap");
        let (b, r) = f.cycle(T0 + 20_000_000_000);
        r.unwrap();
        assert_eq!(rx(&b), 7777.0, "and kept");
    }

    #[test]
    fn memory_events_is_read_again_only_after_it_changed_or_as_a_backstop_with_the_limits() {
        // kernfs reports a changed file but not a removed one, unlike the fixture's
        // filesystem: every removal below keeps a hard link to the watched file, so that no
        // watch ends on its own and only the collector's own handling is tested.
        let mut f = Fixture::new("cgroup-v2");
        let keep = tempfile::tempdir_in(&f.root).unwrap();
        let events = f.file_of(A, "memory.events");
        let dir_a = events.parent().unwrap().to_path_buf();
        let text =
            |n: u64| format!("low 0\nhigh 0\nmax 4\noom 2\noom_kill {n}\noom_group_kill 0\n");
        let ooms = |b: &Batch| {
            metric(resource(b, A).unwrap(), "container.memory.oom_kills")
                .map(|_| value(resource(b, A).unwrap(), "container.memory.oom_kills", &[]))
        };
        let watched = |f: &Fixture| {
            let t = f
                .collector
                .tracked
                .values()
                .find(|t| t.path.id == A)
                .unwrap();
            (t.oom.is_watched(), t.oom.is_stale())
        };
        let mut at = T0;
        let mut cycle = |f: &mut Fixture| {
            let (b, r) = f.cycle(at);
            r.unwrap();
            at += 10_000_000_000;
            b
        };
        // Cycle 1: watched before its first read.
        let first = ooms(&cycle(&mut f)).unwrap() as u64;
        assert_eq!(watched(&f), (true, false));
        // Cycle 2: a write raises an event: the new count is read.
        std::fs::write(&events, text(first + 3)).unwrap();
        assert_eq!(ooms(&cycle(&mut f)), Some((first + 3) as f64));
        // A new file put in place without an event on the watched one: not read until the
        // limits are due again (cycle 1 + LIMITS_EVERY), then read as a backstop.
        std::fs::hard_link(&events, keep.path().join("a-old")).unwrap();
        std::fs::write(dir_a.join("events.new"), text(first + 50)).unwrap();
        std::fs::rename(dir_a.join("events.new"), &events).unwrap();
        for c in 3..=LIMITS_EVERY {
            assert_eq!(
                ooms(&cycle(&mut f)),
                Some((first + 3) as f64),
                "cycle {c}: not due"
            );
            assert_eq!(watched(&f), (true, false), "cycle {c}");
        }
        let b = cycle(&mut f);
        assert_eq!(ooms(&b), Some((first + 50) as f64), "read with the limits");
        // The memory controller disabled: no count, and the watch (on a file kernfs would
        // not report gone) is dropped; enabled again: the new file is read and watched.
        let current = std::fs::read_to_string(dir_a.join("memory.current")).unwrap();
        std::fs::hard_link(&events, keep.path().join("a-off")).unwrap();
        std::fs::remove_file(&events).unwrap();
        std::fs::remove_file(dir_a.join("memory.current")).unwrap();
        assert_eq!(ooms(&cycle(&mut f)), None, "no memory controller, no count");
        assert!(!watched(&f).0, "the watch is dropped");
        std::fs::write(dir_a.join("memory.current"), current).unwrap();
        std::fs::write(&events, text(first + 7)).unwrap();
        assert_eq!(
            ooms(&cycle(&mut f)),
            Some((first + 7) as f64),
            "the new file is read"
        );
        assert_eq!(watched(&f), (true, false), "and watched again");
        std::fs::write(&events, text(first + 8)).unwrap();
        assert_eq!(
            ooms(&cycle(&mut f)),
            Some((first + 8) as f64),
            "through the new watch"
        );
        // A container gone: the collector ends its watch (kernfs would not).
        let held = |f: &Fixture| f.collector.oom_watch.as_ref().unwrap().len();
        let before = held(&f);
        let dir_b = f
            .file_of(B, "memory.events")
            .parent()
            .unwrap()
            .to_path_buf();
        std::fs::hard_link(dir_b.join("memory.events"), keep.path().join("b")).unwrap();
        std::fs::remove_dir_all(&dir_b).unwrap();
        let b = cycle(&mut f);
        assert!(resource(&b, B).is_none());
        assert_eq!(held(&f), before - 1);
    }

    #[test]
    fn containers_sharing_a_network_namespace_read_it_once_and_report_the_same_counters() {
        // Once with A's process dying at the end, once with the CRI-O container's: whatever
        // order the walk takes, one of the two runs has the dead one after the live reader.
        for dies in [A, CRIO] {
            shared_namespace_case(dies);
        }
    }

    fn shared_namespace_case(dies: &str) {
        let mut f = Fixture::new("cgroup-v2");
        let rx = eth0_rx;
        let (b, r) = f.cycle(T0);
        r.unwrap();
        let (a, crio, podman) = (rx(&b, A), rx(&b, CRIO), rx(&b, PODMAN));
        assert!(a != crio && a != podman, "three namespaces, three figures");
        // The CRI-O container's process joins A's namespace (as a pod's containers share
        // one), but its own net/dev file says otherwise: the kernel would never show that,
        // so whichever container is read second reporting the first one's figure proves
        // the namespace was read once. A new process, so its namespace is looked up again.
        let proc = f.root.join("proc");
        copy_tree(&proc.join("4444"), &proc.join("4646"));
        std::fs::remove_dir_all(proc.join("4444")).unwrap();
        let link = proc.join("4646/ns/net");
        std::fs::remove_file(&link).unwrap();
        std::os::unix::fs::symlink("net:[4026536242]", &link).unwrap();
        let procs = f.file_of(CRIO, "cgroup.procs");
        std::fs::write(&procs, "4646\n").unwrap();
        let (b, r) = f.cycle(T0 + 10_000_000_000);
        r.unwrap();
        let (a2, crio2) = (rx(&b, A), rx(&b, CRIO));
        assert_eq!(a2, crio2, "one namespace, one read, one figure");
        assert!(
            a2 == a || a2 == crio,
            "{a2} is one of the two files' figures"
        );
        assert_eq!(
            rx(&b, PODMAN),
            podman,
            "another namespace is read on its own"
        );
        assert_eq!(
            f.collector.net_by_ns.len(),
            2,
            "A's (and CRI-O's), Podman's"
        );
        // One of the two dies, its cgroup stays a while: it must not go on reporting the
        // namespace it was last seen in; the other now reads the namespace itself.
        let (gone, lives, own) = if dies == A {
            ("4242", CRIO, crio)
        } else {
            ("4646", A, a)
        };
        std::fs::remove_dir_all(proc.join(gone)).unwrap();
        let (b, r) = f.cycle(T0 + 20_000_000_000);
        r.unwrap();
        assert_eq!(rx(&b, lives), own, "{lives} reads its own file");
        assert!(
            metric(resource(&b, dies).unwrap(), "container.network.io").is_none(),
            "{dies} without a live process reports no network counters"
        );
    }

    #[test]
    fn kept_descriptors_stay_within_the_budget_read_fresh_figures_and_close_with_their_container() {
        let open = |c: &ContainerCollector| -> usize {
            c.tracked.values().map(|t| t.fds.open_count()).sum()
        };
        let charged =
            |c: &ContainerCollector| -> usize { c.tracked.values().map(|t| t.fds_charged).sum() };
        for (name, keep_files, budget) in ["cgroup-v2", "cgroup-v1", "cgroup-hybrid"]
            .into_iter()
            .flat_map(|n| [false, true].map(|k| (n, k)))
            .flat_map(|(n, k)| [0, 1, usize::MAX].map(|b| (n, k, b)))
        {
            let what = format!("{name}, keep_files_open {keep_files}, budget {budget}");
            let mut f = Fixture::new(name);
            f.collector.fd_budget = budget;
            f.collector.keep_files = keep_files;
            let (b, r) = f.cycle(T0);
            r.unwrap();
            let cpu0 = value(
                resource(&b, A).unwrap(),
                "container.cpu.time",
                &[("cpu.mode", "user")],
            );
            let c = &f.collector;
            assert_eq!(c.fds_charged, charged(c), "{what}");
            assert!(c.fds_charged <= budget, "{what}: {} charged", c.fds_charged);
            assert!(open(c) <= c.fds_charged, "{what}: {} open", open(c));
            let per = c.hierarchy.kept_fds_per_container(true);
            for t in c.tracked.values() {
                assert!(t.fds.open_count() <= per, "{what}");
                match t.fds.keep() {
                    cgroup::Keep::All => assert!(t.fds.open_count() > 1, "{what}"),
                    cgroup::Keep::Dir => assert!(t.fds.open_count() <= 1, "{what}"),
                    cgroup::Keep::Nothing => assert_eq!(t.fds.open_count(), 0, "{what}"),
                }
            }
            if budget == usize::MAX {
                assert!(
                    c.tracked
                        .values()
                        .all(|t| (t.fds.keep() == cgroup::Keep::All) == keep_files),
                    "{what}"
                );
            }
            // A kept descriptor reads the file as it is now.
            add_user_cpu(&f, A, 5);
            let (b, r) = f.cycle(T0 + 10_000_000_000);
            r.unwrap();
            let cpu1 = value(
                resource(&b, A).unwrap(),
                "container.cpu.time",
                &[("cpu.mode", "user")],
            );
            assert!(cpu1 > cpu0 + 4.0, "{what}: {cpu0} then {cpu1}");
            // Removed while its descriptors are held open: no stale series, nothing kept.
            for d in f.dirs_of(A) {
                std::fs::remove_dir_all(d).unwrap();
            }
            let (b, _) = f.cycle(T0 + 20_000_000_000);
            assert!(resource(&b, A).is_none(), "{what}");
            let (b, _) = f.cycle(T0 + 30_000_000_000);
            assert!(resource(&b, A).is_none(), "{what}");
            let c = &f.collector;
            assert!(!c.tracked.keys().any(|k| k.contains(A)), "{what}");
            assert_eq!(c.fds_charged, charged(c), "{what}");
            assert!(open(c) <= c.fds_charged, "{what}");
        }
    }

    #[test]
    fn unreadable_files_are_errors_but_the_other_containers_are_reported() {
        let mut f = Fixture::new("cgroup-v2");
        let dir = f.dirs_of(A).remove(0);
        std::fs::write(dir.join("memory.current"), "lots\n").unwrap();
        let (b, r) = f.cycle(T0);
        let e = r.unwrap_err().to_string();
        assert!(e.contains("memory.current"), "{e}");
        assert!(resource(&b, B).is_some());
    }

    #[test]
    fn config_defaults_and_validation() {
        let c = ContainerConfig::default();
        assert!(c.enabled && c.docker.enabled && !c.kubelet.enabled && c.labels.is_empty());
        let roots = Roots {
            proc: "/p".into(),
            sys: "/host/sys".into(),
            rootfs: "/".into(),
        };
        assert_eq!(c.cgroup_root(&roots), PathBuf::from("/host/sys/fs/cgroup"));
        let bad = ContainerConfig {
            cgroup_root: Some("/nonexistent/cgroup".into()),
            ..ContainerConfig::default()
        };
        assert!(bad.validate().unwrap_err().contains("/nonexistent/cgroup"));
        let bad = ContainerConfig {
            labels: vec!["a b".into()],
            ..ContainerConfig::default()
        };
        assert!(bad.validate().is_err());
        let y: Result<ContainerConfig, _> = serde_yaml_ng::from_str("enabled: true\nlabelz: []\n");
        assert!(y.unwrap_err().to_string().contains("labelz"));
    }

    #[test]
    fn every_container_metric_is_in_the_metrics_reference() {
        crate::test_support::assert_in_metrics_reference(DESCS.iter().chain(EXTRA_DESCS).copied());
    }

    #[test]
    fn no_cgroup_hierarchy_means_no_collector() {
        let dir = tempfile::tempdir().unwrap();
        let roots = Roots {
            proc: dir.path().into(),
            sys: dir.path().into(),
            rootfs: dir.path().into(),
        };
        let c = ContainerCollector::start(
            &ContainerConfig::default(),
            &roots,
            Arc::new(Resource::default()),
        )
        .unwrap();
        assert!(c.is_none());
    }
}
