//! The container collector's metric descriptors: the metrics the semantic-conventions
//! registry names ([`DESCS`]) and the extras beyond it ([`EXTRA_DESCS`]), both listed in
//! docs/METRICS.md ("Containers"), which a test checks against these lists.

use faultline_exporters::model::MetricDesc;

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
