//! Host collectors: the machine as the kernel sees it, read from `/proc` and `/sys` under the
//! configured [`Roots`] (plus `statvfs` on mountpoints and a `NETLINK_SOCK_DIAG` dump).
//!
//! One file per area, each with pure `parse_*` functions over the file's text, a collector
//! struct implementing [`Collector`], and a `pub const` [`MetricDesc`] for every metric it
//! emits. Names, units, instruments and attributes follow the OpenTelemetry semantic
//! conventions registry; the few metrics outside it (load average, PSI) say so in their
//! module docs.
//!
//! Not here: containers and cgroups (their own collectors), and anything that needs a
//! process-wide view of the agent itself.
//!
//! Design choices that are not obvious:
//! - **Filesystems**: by default pseudo and read-only-image filesystems are excluded (see
//!   [`DEFAULT_EXCLUDED_FS_TYPES`]), including `overlay` (container root filesystems, which
//!   would repeat the backing disk once per container) and `devtmpfs`; `tmpfs` is kept, since a
//!   full `/run` or `/dev/shm` is a real outage cause. Mountpoints under container runtimes'
//!   state directories are excluded too ([`DEFAULT_EXCLUDED_MOUNTPOINTS`]).
//! - **Disks**: whole disks and partitions are both reported, as node_exporter and the
//!   OpenTelemetry collector do; summing over `system.device` double counts. `loop*` and
//!   `ram*` are excluded by default.
//! - **PSI**: a kernel without `/proc/pressure` is detected on the first cycle, logged once at
//!   info level, and from then on the pressure collector records nothing and returns `Ok`.

use faultline_chaos::units::HumanDuration;
use globset::{GlobBuilder, GlobSet, GlobSetBuilder};
use serde::{Deserialize, Serialize};

use super::{CollectError, Collector, Roots, Throttled, parse_error, read_into};
use faultline_exporters::model::MetricDesc;

pub mod connections;
pub mod cpu;
pub mod device_starts;
pub mod disk;
pub mod filesystem;
pub mod load;
pub mod memory;
pub mod network;
pub mod paging;
pub mod pressure;
pub mod processes;
pub mod uptime;

/// Filesystem types excluded by default: kernel pseudo filesystems, container overlays and
/// read-only images. `tmpfs` is deliberately not in the list.
pub const DEFAULT_EXCLUDED_FS_TYPES: &[&str] = &[
    "autofs",
    "binfmt_misc",
    "bpf",
    "cgroup",
    "cgroup2",
    "configfs",
    "debugfs",
    "devpts",
    "devtmpfs",
    "efivarfs",
    "erofs",
    "fusectl",
    "hugetlbfs",
    "iso9660",
    "mqueue",
    "nsfs",
    "overlay",
    "proc",
    "pstore",
    "ramfs",
    "rpc_pipefs",
    "securityfs",
    "selinuxfs",
    "squashfs",
    "sysfs",
    "tracefs",
];

/// Mountpoints excluded by default: per-container and per-pod mounts that container runtimes
/// and the kubelet create in the host's mount namespace.
pub const DEFAULT_EXCLUDED_MOUNTPOINTS: &[&str] = &[
    "/var/lib/docker/**",
    "/var/lib/containers/storage/**",
    "/var/lib/kubelet/pods/**",
    "/run/containerd/**",
    "/run/credentials/**",
];

/// Settings of the host collectors (`collectors.host` in the configuration file).
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct HostConfig {
    /// Collect host metrics at all.
    pub enabled: bool,
    /// Report `system.cpu.time` and `system.cpu.utilization` per logical CPU (with
    /// `cpu.logical_number`) instead of one machine-wide series per mode.
    pub per_cpu: bool,
    /// Which mounts `system.filesystem.*` reports.
    pub filesystem: FilesystemConfig,
    /// Which block devices `system.disk.*` reports.
    pub disk: DeviceFilter,
    /// Which interfaces `system.network.*` reports.
    pub network: DeviceFilter,
    /// Scan `/proc/<pid>/stat` for `system.process.count` (and read `system.process.created`).
    pub processes: bool,
    /// Count TCP connections per state through `NETLINK_SOCK_DIAG`.
    pub connections: bool,
    /// Read pressure stall information from `/proc/pressure`.
    pub pressure: bool,
    /// How often the two scans whose cost does not follow what they export run: the
    /// process-state scan (`processes`) and the connection-state dump (`connections`).
    /// Between scans their last values are repeated. `0s` scans every cycle.
    pub scan_interval: HumanDuration,
}

impl Default for HostConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            per_cpu: true,
            filesystem: FilesystemConfig::default(),
            disk: DeviceFilter {
                include: Vec::new(),
                exclude: vec!["loop*".to_owned(), "ram*".to_owned()],
            },
            network: DeviceFilter::default(),
            processes: true,
            connections: true,
            pressure: true,
            scan_interval: HumanDuration(std::time::Duration::from_secs(60)),
        }
    }
}

/// Mount selection for `system.filesystem.*`. Patterns are globs (`*` does not cross `/` in
/// mountpoints; use `**`). An empty include list means "all"; exclusion wins over inclusion.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct FilesystemConfig {
    /// Mountpoints to report (globs); empty: all.
    pub include_mountpoints: Vec<String>,
    /// Mountpoints never reported (globs).
    pub exclude_mountpoints: Vec<String>,
    /// Filesystem types to report (globs); empty: all.
    pub include_types: Vec<String>,
    /// Filesystem types never reported (globs); default: [`DEFAULT_EXCLUDED_FS_TYPES`].
    pub exclude_types: Vec<String>,
}

impl Default for FilesystemConfig {
    fn default() -> Self {
        Self {
            include_mountpoints: Vec::new(),
            exclude_mountpoints: DEFAULT_EXCLUDED_MOUNTPOINTS
                .iter()
                .map(|s| (*s).to_owned())
                .collect(),
            include_types: Vec::new(),
            exclude_types: DEFAULT_EXCLUDED_FS_TYPES
                .iter()
                .map(|s| (*s).to_owned())
                .collect(),
        }
    }
}

/// Device or interface selection by name (globs). An empty include list means "all";
/// exclusion wins over inclusion.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeviceFilter {
    /// Names to report; empty: all.
    pub include: Vec<String>,
    /// Names never reported.
    pub exclude: Vec<String>,
}

/// The host configuration cannot be turned into collectors.
#[derive(Debug, thiserror::Error)]
pub enum HostConfigError {
    /// A pattern in one of the include/exclude lists is not a valid glob.
    #[error("collectors.host.{field}: invalid glob {pattern:?}: {source}")]
    BadGlob {
        /// The setting, for example `disk.exclude`.
        field: &'static str,
        /// The pattern as written.
        pattern: String,
        /// What globset said.
        source: globset::Error,
    },
}

/// A compiled include/exclude pair.
#[derive(Clone, Debug)]
pub(crate) struct NameFilter {
    include: Option<GlobSet>,
    exclude: GlobSet,
}

impl NameFilter {
    /// Compiles `include`/`exclude`; `field` prefixes the setting names in errors.
    /// `literal_separator` makes `*` stop at `/` (for paths).
    pub(crate) fn new(
        include: &[String],
        exclude: &[String],
        include_field: &'static str,
        exclude_field: &'static str,
        literal_separator: bool,
    ) -> Result<Self, HostConfigError> {
        let include = if include.is_empty() {
            None
        } else {
            Some(build_globset(include, include_field, literal_separator)?)
        };
        let exclude = build_globset(exclude, exclude_field, literal_separator)?;
        Ok(Self { include, exclude })
    }

    /// A filter for a [`DeviceFilter`] setting named `field` (`disk` or `network`).
    fn for_devices(f: &DeviceFilter, field: Field) -> Result<Self, HostConfigError> {
        let (inc, exc) = match field {
            Field::Disk => ("disk.include", "disk.exclude"),
            Field::Network => ("network.include", "network.exclude"),
        };
        Self::new(&f.include, &f.exclude, inc, exc, false)
    }

    /// Whether `name` is to be reported.
    pub(crate) fn allows(&self, name: &str) -> bool {
        if self.exclude.is_match(name) {
            return false;
        }
        self.include.as_ref().is_none_or(|inc| inc.is_match(name))
    }
}

#[derive(Clone, Copy)]
enum Field {
    Disk,
    Network,
}

fn build_globset(
    patterns: &[String],
    field: &'static str,
    literal_separator: bool,
) -> Result<GlobSet, HostConfigError> {
    let bad = |pattern: &str, source| HostConfigError::BadGlob {
        field,
        pattern: pattern.to_owned(),
        source,
    };
    let mut b = GlobSetBuilder::new();
    for p in patterns {
        let glob = GlobBuilder::new(p)
            .literal_separator(literal_separator)
            .build()
            .map_err(|e| bad(p, e))?;
        b.add(glob);
    }
    // Building a set from valid globs only fails on regex size limits; report the first one.
    b.build()
        .map_err(|e| bad(patterns.first().map_or("", String::as_str), e))
}

/// Builds the enabled host collectors from `cfg`. Fails on the first invalid glob, naming
/// the setting and the pattern.
pub fn collectors(cfg: &HostConfig) -> Result<Vec<Box<dyn Collector>>, HostConfigError> {
    if !cfg.enabled {
        return Ok(Vec::new());
    }
    let mut out: Vec<Box<dyn Collector>> = vec![
        Box::new(cpu::CpuCollector::new(cpu::CpuOptions {
            per_cpu: cfg.per_cpu,
        })),
        Box::new(memory::MemoryCollector::default()),
        Box::new(paging::PagingCollector::default()),
        Box::new(disk::DiskCollector::new(NameFilter::for_devices(
            &cfg.disk,
            Field::Disk,
        )?)),
        Box::new(filesystem::FilesystemCollector::new(&cfg.filesystem)?),
        Box::new(network::NetworkCollector::new(NameFilter::for_devices(
            &cfg.network,
            Field::Network,
        )?)),
        Box::new(load::LoadCollector::default()),
        Box::new(uptime::UptimeCollector::default()),
    ];
    let every = cfg.scan_interval.0;
    if cfg.connections {
        out.push(Box::new(Throttled::new(
            Box::new(connections::ConnectionsCollector::default()),
            every,
        )));
    }
    if cfg.processes {
        out.push(Box::new(Throttled::new(
            Box::new(processes::ProcessesCollector::default()),
            every,
        )));
    }
    if cfg.pressure {
        out.push(Box::new(pressure::PressureCollector::default()));
    }
    Ok(out)
}

/// Host boot time in Unix nanoseconds, from the `btime` line of `{proc}/stat`: the start time
/// of every kernel counter.
pub fn boot_time_unix_nanos(roots: &Roots) -> Result<u64, CollectError> {
    let path = roots.proc("stat");
    let mut buf = String::new();
    read_into(&path, &mut buf)?;
    let secs = cpu::parse_btime(&buf).map_err(|e| parse_error(&path, e))?;
    Ok(secs.saturating_mul(1_000_000_000))
}

/// Every metric the host collectors can emit, for the metrics reference.
pub fn all_metric_descs() -> Vec<&'static MetricDesc> {
    [
        cpu::DESCS,
        memory::DESCS,
        paging::DESCS,
        disk::DESCS,
        filesystem::DESCS,
        network::DESCS,
        connections::DESCS,
        processes::DESCS,
        uptime::DESCS,
        load::DESCS,
        pressure::DESCS,
    ]
    .concat()
}

/// Parses a decimal unsigned integer field, naming it in the error.
pub(crate) fn parse_u64_field(s: &str, what: &str) -> Result<u64, String> {
    s.parse::<u64>()
        .map_err(|_| format!("{what}: expected an unsigned integer, found {s:?}"))
}

/// The lines of a kernel table, each split at its first `sep` byte (not `\n`) into the text
/// before it and the text after it; lines without `sep` are skipped.
///
/// `str::lines` with `split_once` costs two searches per line through core's portable
/// `memchr`, about 200 instructions each on these short lines: 77 000 instructions per cycle
/// for `/proc/vmstat` alone (callgrind, 2026-12-04).
pub(crate) fn keyed_lines(text: &str, sep: u8) -> KeyedLines<'_> {
    KeyedLines { rest: text, sep }
}

/// Iterator of [`keyed_lines`].
#[derive(Debug, Clone)]
pub(crate) struct KeyedLines<'a> {
    rest: &'a str,
    sep: u8,
}

impl<'a> Iterator for KeyedLines<'a> {
    type Item = (&'a str, &'a str);

    fn next(&mut self) -> Option<Self::Item> {
        while !self.rest.is_empty() {
            // The key ends at the separator or at the line's end, whichever comes first. Both
            // loops are plain byte loops: keys and values are a few bytes long, shorter than
            // it takes a `memchr` (even the SIMD one of the memchr crate) to pay off.
            let bytes = self.rest.as_bytes();
            let key_end = bytes
                .iter()
                .position(|&b| b == self.sep || b == b'\n')
                .unwrap_or(bytes.len());
            // Every position split at holds an ASCII byte, so it is a character boundary.
            let (key, after) = self.rest.split_at_checked(key_end)?;
            if after.as_bytes().first() == Some(&self.sep) {
                let value_and_rest = after.get(1..).unwrap_or("");
                let end = value_and_rest
                    .bytes()
                    .position(|b| b == b'\n')
                    .unwrap_or(value_and_rest.len());
                let (value, rest) = value_and_rest.split_at_checked(end)?;
                self.rest = rest.get(1..).unwrap_or("");
                return Some((key, value));
            }
            // A line without the separator: skip it.
            self.rest = after.get(1..).unwrap_or("");
        }
        None
    }
}

/// Undoes the kernel's octal escaping of whitespace and backslashes in paths (`\040` for a
/// space), as used in `mountinfo` and `/proc/swaps`. Borrows when there is nothing to undo.
pub(crate) fn unescape_octal(s: &str) -> std::borrow::Cow<'_, str> {
    if !s.contains('\\') {
        return std::borrow::Cow::Borrowed(s);
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        // Three octal digits of at most `\377` (the kernel escapes bytes); anything larger
        // stays as it is (it cannot come from the kernel, and `\725` would overflow a byte).
        if b[i] == b'\\'
            && i + 3 < b.len()
            && (b'0'..=b'3').contains(&b[i + 1])
            && b[i + 2..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    std::borrow::Cow::Owned(String::from_utf8_lossy(&out).into_owned())
}

#[cfg(test)]
pub(crate) mod test_support;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyed_lines_split_each_line_at_its_first_separator_and_skip_lines_without_one() {
        let text = "a b c\nnosep\n\nkey \n x\nlast 1";
        let got: Vec<_> = keyed_lines(text, b' ').collect();
        assert_eq!(got, [("a", "b c"), ("key", ""), ("", "x"), ("last", "1")]);
        assert_eq!(keyed_lines("", b':').count(), 0);
        assert_eq!(
            keyed_lines("MemTotal:  1 kB\nCached:\t2 kB\n", b':').collect::<Vec<_>>(),
            [("MemTotal", "  1 kB"), ("Cached", "\t2 kB")]
        );
    }

    proptest::proptest! {
        /// The byte loop agrees with `str::lines` + `split_once` on any text (for text
        /// without `\r`, which `lines` also strips and the kernel never writes).
        #[test]
        fn keyed_lines_agree_with_lines_and_split_once(
            text in "[a-c :\n\u{e9}]{0,60}",
            sep in proptest::sample::select(vec![b' ', b':']),
        ) {
            let want: Vec<_> = text
                .lines()
                .filter_map(|l| l.split_once(char::from(sep)))
                .collect();
            let got: Vec<_> = keyed_lines(&text, sep).collect();
            proptest::prop_assert_eq!(got, want);
        }
    }

    #[test]
    fn unescape_octal_restores_spaces_tabs_and_backslashes() {
        assert_eq!(unescape_octal("/mnt/my\\040disk"), "/mnt/my disk");
        assert_eq!(unescape_octal("a\\011b\\134c"), "a\tb\\c");
        assert_eq!(unescape_octal("/plain"), "/plain");
        assert_eq!(unescape_octal("trailing\\04"), "trailing\\04");
        // Found by the host_proc fuzz target (CI, 2026-12-04): a byte overflow, a panic.
        assert_eq!(unescape_octal("/swap\\725fil"), "/swap\\725fil");
        assert_eq!(unescape_octal("\\377\\400"), "\u{FFFD}\\400");
    }

    #[test]
    fn default_config_round_trips_and_rejects_unknown_fields() {
        let cfg = HostConfig::default();
        let json = serde_json::to_string(&cfg).unwrap();
        let back: HostConfig = serde_json::from_str(&json).unwrap();
        assert_eq!(back, cfg);
        let partial: HostConfig = serde_json::from_str(r#"{"per_cpu": false}"#).unwrap();
        assert!(!partial.per_cpu);
        assert_eq!(partial.disk.exclude, vec!["loop*", "ram*"]);
        assert!(serde_json::from_str::<HostConfig>(r#"{"per_cpus": false}"#).is_err());
        assert!(serde_json::from_str::<HostConfig>(r#"{"disk": {"exclud": []}}"#).is_err());
    }

    #[test]
    fn bad_glob_error_names_the_setting_and_pattern() {
        let mut cfg = HostConfig::default();
        cfg.network.exclude = vec!["eth[".to_owned()];
        let err = collectors(&cfg).err().unwrap().to_string();
        assert!(err.contains("network.exclude"), "{err}");
        assert!(err.contains("eth["), "{err}");
    }

    #[test]
    fn disabled_config_builds_no_collectors_and_optional_ones_can_be_switched_off() {
        let cfg = HostConfig {
            enabled: false,
            ..HostConfig::default()
        };
        assert!(collectors(&cfg).unwrap().is_empty());
        let all = collectors(&HostConfig::default()).unwrap();
        let cfg = HostConfig {
            processes: false,
            connections: false,
            pressure: false,
            ..HostConfig::default()
        };
        assert_eq!(collectors(&cfg).unwrap().len(), all.len() - 3);
    }

    #[test]
    fn name_filter_exclusion_wins_and_empty_include_means_all() {
        let f = NameFilter::for_devices(
            &DeviceFilter {
                include: vec!["sd*".into(), "vd*".into()],
                exclude: vec!["sdb".into()],
            },
            Field::Disk,
        )
        .unwrap();
        assert!(f.allows("sda"));
        assert!(!f.allows("sdb"));
        assert!(!f.allows("nvme0n1"));
        let d = NameFilter::for_devices(&HostConfig::default().disk, Field::Disk).unwrap();
        assert!(d.allows("nvme0n1p1"));
        assert!(!d.allows("loop3"));
    }

    #[test]
    fn boot_time_comes_from_btime() {
        let roots = test_support::roots("real");
        let ns = boot_time_unix_nanos(&roots).unwrap();
        assert_eq!(ns % 1_000_000_000, 0);
        assert!(ns > 1_600_000_000 * 1_000_000_000);
    }

    #[test]
    fn all_metric_descs_have_unique_names() {
        let descs = all_metric_descs();
        let mut names: Vec<_> = descs.iter().map(|d| d.name).collect();
        names.sort_unstable();
        let n = names.len();
        names.dedup();
        assert_eq!(names.len(), n);
    }
}

#[cfg(test)]
mod fixture_tree_tests {
    use super::*;
    use crate::collectors::Context;
    use faultline_exporters::model::Batch;
    use test_support::{batch, fixture_dir, read};

    /// The attribute keys each metric may carry, as the semantic conventions registry lists
    /// them (or as documented for the metrics outside it).
    const ALLOWED_ATTRIBUTES: &[(&str, &[&str])] = &[
        ("system.cpu.time", &["cpu.mode", "cpu.logical_number"]),
        (
            "system.cpu.utilization",
            &["cpu.mode", "cpu.logical_number"],
        ),
        ("system.cpu.logical.count", &[]),
        ("system.cpu.physical.count", &[]),
        ("system.cpu.frequency", &["cpu.logical_number"]),
        ("system.memory.usage", &["system.memory.state"]),
        ("system.memory.limit", &[]),
        ("system.memory.utilization", &["system.memory.state"]),
        ("system.memory.linux.available", &[]),
        ("system.memory.linux.shared", &[]),
        (
            "system.memory.linux.slab.usage",
            &["system.memory.linux.slab.state"],
        ),
        (
            "system.paging.usage",
            &["system.device", "system.paging.state"],
        ),
        (
            "system.paging.utilization",
            &["system.device", "system.paging.state"],
        ),
        ("system.paging.faults", &["system.paging.fault.type"]),
        (
            "system.paging.operations",
            &["system.paging.direction", "system.paging.fault.type"],
        ),
        ("system.disk.io", &["system.device", "disk.io.direction"]),
        (
            "system.disk.operations",
            &["system.device", "disk.io.direction"],
        ),
        ("system.disk.io_time", &["system.device"]),
        (
            "system.disk.operation_time",
            &["system.device", "disk.io.direction"],
        ),
        (
            "system.disk.merged",
            &["system.device", "disk.io.direction"],
        ),
        ("system.disk.limit", &["system.device"]),
        (
            "system.filesystem.usage",
            &[
                "system.device",
                "system.filesystem.mountpoint",
                "system.filesystem.type",
                "system.filesystem.mode",
                "system.filesystem.state",
            ],
        ),
        (
            "system.filesystem.utilization",
            &[
                "system.device",
                "system.filesystem.mountpoint",
                "system.filesystem.type",
                "system.filesystem.mode",
                "system.filesystem.state",
            ],
        ),
        (
            "system.filesystem.limit",
            &[
                "system.device",
                "system.filesystem.mountpoint",
                "system.filesystem.type",
                "system.filesystem.mode",
            ],
        ),
        (
            "system.network.io",
            &["network.interface.name", "network.io.direction"],
        ),
        (
            "system.network.errors",
            &["network.interface.name", "network.io.direction"],
        ),
        (
            "system.network.packet.dropped",
            &["network.interface.name", "network.io.direction"],
        ),
        (
            "system.network.packet.count",
            &["system.device", "network.io.direction"],
        ),
        (
            "system.network.connection.count",
            &["network.transport", "network.connection.state"],
        ),
        ("system.process.count", &["process.state"]),
        ("system.process.created", &[]),
        ("system.uptime", &[]),
        ("system.cpu.load_average.1m", &[]),
        ("system.cpu.load_average.5m", &[]),
        ("system.cpu.load_average.15m", &[]),
        (
            "system.linux.pressure.stall_time",
            &[
                "system.linux.pressure.resource",
                "system.linux.pressure.kind",
            ],
        ),
        (
            "system.linux.pressure.avg10",
            &[
                "system.linux.pressure.resource",
                "system.linux.pressure.kind",
            ],
        ),
        (
            "system.linux.pressure.avg60",
            &[
                "system.linux.pressure.resource",
                "system.linux.pressure.kind",
            ],
        ),
        (
            "system.linux.pressure.avg300",
            &[
                "system.linux.pressure.resource",
                "system.linux.pressure.kind",
            ],
        ),
    ];

    /// Runs every host collector once over fixture `name`, with a temporary rootfs holding
    /// the fixture's mountpoints, and returns the batch.
    fn run_all(name: &str, cfg: &HostConfig) -> Batch {
        let rootfs = tempfile::tempdir().unwrap();
        let mounts = read(name, "proc/1/mountinfo");
        for m in filesystem::parse_mountinfo(&mounts).unwrap() {
            std::fs::create_dir_all(rootfs.path().join(m.mountpoint.trim_start_matches('/')))
                .unwrap();
        }
        let dir = fixture_dir(name);
        let ctx = Context {
            roots: Roots {
                proc: dir.join("proc"),
                sys: dir.join("sys"),
                rootfs: rootfs.path().to_path_buf(),
            },
            boot_time_unix_nanos: 1_000,
        };
        let mut b = batch();
        for mut c in collectors(cfg).unwrap() {
            if let Err(e) = c.collect(&ctx, &mut b) {
                // sock_diag may be missing in a sandbox; everything else must succeed.
                assert!(c.name() == "host.connections", "{name}: {}: {e}", c.name());
            }
        }
        b
    }

    fn sum(b: &Batch, metric: &str) -> f64 {
        b.host_metric(metric)
            .unwrap()
            .points
            .iter()
            .map(|p| p.value.as_f64())
            .sum()
    }

    #[test]
    fn every_collector_runs_on_every_fixture_tree_with_registry_names_and_attributes() {
        let descs = all_metric_descs();
        for name in ["real", "many-cpus", "no-pressure", "no-swap", "spaces"] {
            let b = run_all(name, &HostConfig::default());
            for m in &b.resources[0].metrics {
                let desc = descs
                    .iter()
                    .find(|d| d.name == m.name)
                    .unwrap_or_else(|| panic!("{} not in all_metric_descs", m.name));
                assert_eq!(
                    (desc.unit, desc.instrument),
                    (m.unit.as_ref(), m.instrument)
                );
                let allowed = ALLOWED_ATTRIBUTES
                    .iter()
                    .find(|(n, _)| *n == m.name)
                    .unwrap()
                    .1;
                for p in &m.points {
                    for (k, _) in p.attributes.iter() {
                        assert!(
                            allowed.contains(&k),
                            "{name}: {}: unexpected attribute {k}",
                            m.name
                        );
                    }
                    let v = p.value.as_f64();
                    assert!(v.is_finite() && v >= 0.0, "{name}: {} = {v}", m.name);
                    if m.instrument != faultline_exporters::model::Instrument::Gauge {
                        assert_eq!(p.start_unix_nanos, 1_000);
                    }
                }
            }
            // Memory states sum to the limit; utilizations to 1.
            assert_eq!(
                sum(&b, "system.memory.usage"),
                sum(&b, "system.memory.limit"),
                "{name}"
            );
            assert!((sum(&b, "system.memory.utilization") - 1.0).abs() < 1e-9);
            // Per-CPU utilization sums to 1 per CPU.
            let cpus = sum(&b, "system.cpu.logical.count");
            assert!(
                (sum(&b, "system.cpu.utilization") - cpus).abs() < 1e-6,
                "{name}"
            );
            assert!(b.host_metric("system.filesystem.usage").is_some(), "{name}");
            assert!(b.host_metric("system.disk.io").is_some(), "{name}");
            assert!(b.host_metric("system.network.io").is_some(), "{name}");
            assert!(b.host_metric("system.process.count").is_some(), "{name}");
            assert!(b.host_metric("system.uptime").is_some(), "{name}");
            assert!(
                b.host_metric("system.cpu.load_average.1m").is_some(),
                "{name}"
            );
            assert_eq!(
                b.host_metric("system.linux.pressure.avg10").is_some(),
                name != "no-pressure",
                "{name}"
            );
            assert_eq!(
                b.host_metric("system.paging.usage").is_some(),
                name == "spaces",
                "{name}"
            );
        }
    }

    #[test]
    fn all_metric_descs_cover_the_allowed_attribute_table() {
        let names: Vec<_> = all_metric_descs().iter().map(|d| d.name).collect();
        let table: Vec<_> = ALLOWED_ATTRIBUTES.iter().map(|(n, _)| *n).collect();
        assert_eq!(names.len(), table.len());
        for n in names {
            assert!(table.contains(&n), "{n}");
        }
    }

    /// Rough cost of one full host cycle on the live host (run with `--ignored --nocapture`,
    /// ideally in release mode). Not a pass/fail timing: it prints the figure.
    #[test]
    #[ignore = "measurement, prints the per-cycle CPU cost"]
    fn measure_live_cycle_cost() {
        let cfg = HostConfig::default();
        let mut cs = collectors(&cfg).unwrap();
        let ctx = Context {
            roots: Roots::default(),
            boot_time_unix_nanos: 0,
        };
        let cycles = 200u32;
        let mut per: Vec<(&'static str, std::time::Duration)> = cs
            .iter()
            .map(|c| (c.name(), std::time::Duration::ZERO))
            .collect();
        let start = std::time::Instant::now();
        for _ in 0..cycles {
            let mut b = batch();
            for (c, slot) in cs.iter_mut().zip(per.iter_mut()) {
                let t = std::time::Instant::now();
                let _ = c.collect(&ctx, &mut b);
                slot.1 += t.elapsed();
            }
        }
        let total = start.elapsed() / cycles;
        for (n, d) in per {
            eprintln!("{n:>18}: {:?}", d / cycles);
        }
        eprintln!("full host cycle: {total:?} (wall, single-threaded)");
    }
}
