//! Block devices from `/proc/diskstats`, and their sizes from `/sys/class/block/<dev>/size`.
//!
//! Sectors are always 512 bytes in these files, whatever the device's real sector size.
//! Times are milliseconds and reported in seconds. Whole disks and partitions are both
//! reported (as node_exporter and the OpenTelemetry collector do), so a sum over
//! `system.device` double counts; the device filter (default: excludes `loop*` and `ram*`)
//! selects what is reported.

use std::collections::HashMap;
use std::path::PathBuf;

use faultline_exporters::model::{Attributes, Batch, MetricDesc};

use super::device_starts::DeviceStarts;
use super::{NameFilter, parse_u64_field};
use crate::collectors::file::KeptFile;
use crate::collectors::{CollectError, Collector, Context, parse_error};

/// How many disks keep their `size` file open between cycles: each kept sysfs file holds a
/// descriptor and a page of kernel memory, and a node with hundreds of device-mapper or
/// multipath devices should not hold hundreds; the disks beyond open theirs every cycle.
const MAX_KEPT_SIZES: usize = 64;

/// `system.disk.io`.
pub const DISK_IO: MetricDesc = MetricDesc::counter(
    "system.disk.io",
    "By",
    "Bytes read from and written to each block device.",
);
/// `system.disk.operations`.
pub const DISK_OPERATIONS: MetricDesc = MetricDesc::counter(
    "system.disk.operations",
    "{operation}",
    "Completed read and write operations per block device.",
);
/// `system.disk.io_time`.
pub const DISK_IO_TIME: MetricDesc = MetricDesc::counter(
    "system.disk.io_time",
    "s",
    "Time each block device had at least one I/O in flight (busy time).",
);
/// `system.disk.operation_time`.
pub const DISK_OPERATION_TIME: MetricDesc = MetricDesc::counter(
    "system.disk.operation_time",
    "s",
    "Sum of the time read and write operations took per block device (overlapping operations add up).",
);
/// `system.disk.merged`.
pub const DISK_MERGED: MetricDesc = MetricDesc::counter(
    "system.disk.merged",
    "{operation}",
    "Adjacent read and write requests merged into one per block device.",
);
/// `system.disk.limit`.
pub const DISK_LIMIT: MetricDesc =
    MetricDesc::updown("system.disk.limit", "By", "Size of each block device.");

/// Every metric this collector emits.
pub const DESCS: &[&MetricDesc] = &[
    &DISK_IO,
    &DISK_OPERATIONS,
    &DISK_IO_TIME,
    &DISK_OPERATION_TIME,
    &DISK_MERGED,
    &DISK_LIMIT,
];

/// Bytes per `/proc/diskstats` sector.
const SECTOR: u64 = 512;

/// One line of `/proc/diskstats`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DiskStat<'a> {
    /// Device name (`sda`, `nvme0n1p1`, `dm-0`).
    pub name: &'a str,
    /// Reads completed.
    pub reads: u64,
    /// Reads merged.
    pub reads_merged: u64,
    /// Sectors read.
    pub sectors_read: u64,
    /// Milliseconds spent reading.
    pub read_ms: u64,
    /// Writes completed.
    pub writes: u64,
    /// Writes merged.
    pub writes_merged: u64,
    /// Sectors written.
    pub sectors_written: u64,
    /// Milliseconds spent writing.
    pub write_ms: u64,
    /// Milliseconds with I/O in flight.
    pub io_ms: u64,
}

/// Parses one `/proc/diskstats` line: `major minor name` then at least 11 counters.
pub fn parse_diskstats_line(line: &str) -> Result<DiskStat<'_>, String> {
    let mut f = line.split_ascii_whitespace();
    let (Some(_major), Some(_minor), Some(name)) = (f.next(), f.next(), f.next()) else {
        return Err(format!("short line {line:?}"));
    };
    let mut v = [0u64; 10];
    for (i, slot) in v.iter_mut().enumerate() {
        let field = f
            .next()
            .ok_or_else(|| format!("{name}: {} counters, expected at least 11", i))?;
        *slot = parse_u64_field(field, name)?;
    }
    Ok(DiskStat {
        name,
        reads: v[0],
        reads_merged: v[1],
        sectors_read: v[2],
        read_ms: v[3],
        writes: v[4],
        writes_merged: v[5],
        sectors_written: v[6],
        write_ms: v[7],
        // v[8] is I/Os currently in flight.
        io_ms: v[9],
    })
}

/// Parses all of `/proc/diskstats`.
pub fn parse_diskstats(text: &str) -> Result<Vec<DiskStat<'_>>, String> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(parse_diskstats_line)
        .collect()
}

/// Collector of `system.disk.*`.
#[derive(Debug)]
pub struct DiskCollector {
    filter: NameFilter,
    diskstats: KeptFile,
    /// Each reported device's sysfs `size` file, kept open while the device is listed (up to
    /// [`MAX_KEPT_SIZES`]).
    sizes: HashMap<String, Size>,
    starts: DeviceStarts,
}

/// A disk's sysfs `size` file.
#[derive(Debug)]
struct Size {
    path: PathBuf,
    file: KeptFile,
    /// Whether the device was listed this cycle (the others are closed after it).
    listed: bool,
}

impl Size {
    fn new(ctx: &Context, device: &str) -> Self {
        // sysfs spells '/' in device names (cciss/c0d0) as '!'.
        let dir = device.replace('/', "!");
        Self {
            path: ctx.roots.sys("class/block").join(dir).join("size"),
            file: KeptFile::default(),
            listed: false,
        }
    }
}

impl DiskCollector {
    /// A collector reporting the devices `filter` allows.
    pub(crate) fn new(filter: NameFilter) -> Self {
        Self {
            filter,
            diskstats: KeptFile::default(),
            sizes: HashMap::new(),
            starts: DeviceStarts::default(),
        }
    }
}

impl Collector for DiskCollector {
    fn name(&self) -> &'static str {
        "host.disk"
    }

    fn collect(&mut self, ctx: &Context, batch: &mut Batch) -> Result<(), CollectError> {
        let path = ctx.roots.proc("diskstats");
        let text = self.diskstats.read(&path)?;
        let now = batch.time_unix_nanos;
        let host = batch.host();
        let mut starts = self.starts.cycle(ctx.boot_time_unix_nanos, now);
        for line in text.lines() {
            if line.trim().is_empty() {
                continue;
            }
            let d = parse_diskstats_line(line).map_err(|e| parse_error(&path, e))?;
            let sum = || {
                [
                    d.sectors_read,
                    d.sectors_written,
                    d.reads,
                    d.writes,
                    d.io_ms,
                ]
                .into_iter()
                .fold(0u64, u64::wrapping_add)
            };
            let Some(device) = starts.reported(d.name, |n| self.filter.allows(n), sum) else {
                continue;
            };
            let (name, start) = (device.name, device.start);
            let dev = || Attributes::of([("system.device", name.clone())]);
            let rw = |dir: &'static str| {
                Attributes::of([
                    ("system.device", name.clone()),
                    ("disk.io.direction", dir.into()),
                ])
            };
            let bytes = |sectors: u64| sectors.saturating_mul(SECTOR);
            let secs = |ms: u64| ms as f64 / 1000.0;
            host.record_since(&DISK_IO, rw("read"), bytes(d.sectors_read), start);
            host.record_since(&DISK_IO, rw("write"), bytes(d.sectors_written), start);
            host.record_since(&DISK_OPERATIONS, rw("read"), d.reads, start);
            host.record_since(&DISK_OPERATIONS, rw("write"), d.writes, start);
            host.record_since(&DISK_IO_TIME, dev(), secs(d.io_ms), start);
            host.record_since(&DISK_OPERATION_TIME, rw("read"), secs(d.read_ms), start);
            host.record_since(&DISK_OPERATION_TIME, rw("write"), secs(d.write_ms), start);
            host.record_since(&DISK_MERGED, rw("read"), d.reads_merged, start);
            host.record_since(&DISK_MERGED, rw("write"), d.writes_merged, start);
            // A device without a size file (it just went away) has no limit point.
            if !self.sizes.contains_key(d.name) && self.sizes.len() < MAX_KEPT_SIZES {
                self.sizes.insert(d.name.to_owned(), Size::new(ctx, d.name));
            }
            // Beyond the cap, a file read once and closed.
            let mut once = None;
            let size = match self.sizes.get_mut(d.name) {
                Some(size) => {
                    size.listed = true;
                    size
                }
                None => once.insert(Size::new(ctx, d.name)),
            };
            if let Ok(text) = size.file.read(&size.path)
                && let Ok(sectors) = text.trim().parse::<u64>()
            {
                host.record(&DISK_LIMIT, dev(), sectors.saturating_mul(SECTOR));
            }
        }
        self.sizes
            .retain(|_, size| std::mem::take(&mut size.listed));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collectors::host::test_support::{read, run, value};
    use crate::collectors::host::{DeviceFilter, Field, HostConfig};

    #[test]
    fn real_diskstats_parse() {
        let text = read("real", "proc/diskstats");
        let all = parse_diskstats(&text).unwrap();
        let vda = all.iter().find(|d| d.name == "vda").unwrap();
        assert!(vda.reads > 0 && vda.sectors_written > 0);
        assert!(parse_diskstats_line("8 0 sda 1 2 3").is_err());
        assert!(parse_diskstats_line("8 0 sda 1 2 3 4 5 6 7 8 9 x 11").is_err());
        // Kernels before 4.18 have exactly 11 counters.
        let old = parse_diskstats_line("   8       0 sda 1 2 3 4 5 6 7 8 9 10 11").unwrap();
        assert_eq!((old.reads, old.write_ms, old.io_ms), (1, 8, 10));
    }

    #[test]
    fn collector_reports_bytes_seconds_and_limit_and_skips_loop_devices() {
        let mut c = DiskCollector::new(
            NameFilter::for_devices(&HostConfig::default().disk, Field::Disk).unwrap(),
        );
        let (b, r) = run(&mut c, "real");
        r.unwrap();
        let text = read("real", "proc/diskstats");
        let vda = parse_diskstats(&text)
            .unwrap()
            .into_iter()
            .find(|d| d.name == "vda")
            .unwrap();
        let io = value(
            &b,
            "system.disk.io",
            &[("system.device", "vda"), ("disk.io.direction", "read")],
        );
        assert_eq!(io, (vda.sectors_read * 512) as f64);
        let t = value(&b, "system.disk.io_time", &[("system.device", "vda")]);
        assert_eq!(t, vda.io_ms as f64 / 1000.0);
        assert_eq!(
            value(&b, "system.disk.limit", &[("system.device", "vda")]),
            536_870_912.0 * 512.0
        );
        let devices = devices(&b, "system.disk.io");
        assert!(
            !devices.iter().any(|d| d.starts_with("loop")),
            "{devices:?}"
        );
        assert!(devices.iter().any(|d| d == "zram0"));
    }

    /// The `system.device` of every point of metric `name`.
    fn devices(b: &Batch, name: &str) -> Vec<String> {
        b.host_metric(name)
            .unwrap()
            .points
            .iter()
            .map(|p| {
                let dev = p.attributes.get("system.device").unwrap().to_text();
                dev.into_owned()
            })
            .collect()
    }

    /// The devices a batch has `system.disk.limit` for, with the value.
    fn limits(b: &Batch) -> Vec<(String, f64)> {
        b.host_metric("system.disk.limit")
            .map_or_else(Vec::new, |m| {
                m.points
                    .iter()
                    .map(|p| {
                        let dev = p.attributes.get("system.device").unwrap().to_text();
                        (dev.into_owned(), p.value.as_f64())
                    })
                    .collect()
            })
    }

    #[test]
    fn the_real_disks_keep_their_size_files_and_report_what_a_fresh_read_says() {
        let mut c = DiskCollector::new(
            NameFilter::for_devices(&HostConfig::default().disk, Field::Disk).unwrap(),
        );
        let ctx = crate::collectors::host::test_support::ctx(crate::collectors::Roots::default());
        for cycle in 0..3 {
            let mut b = crate::collectors::host::test_support::batch();
            c.collect(&ctx, &mut b).unwrap();
            let limits = limits(&b);
            if limits.is_empty() {
                // A sandbox without block devices (some container set-ups).
                assert!(!crate::test_support::in_ci(), "this machine lists no disk");
                eprintln!("SKIPPED: no disk in /proc/diskstats with a size in /sys/class/block");
                return;
            }
            for (dev, v) in &limits {
                let sysfs_name = dev.replace('/', "!");
                let fresh = std::fs::read_to_string(format!("/sys/class/block/{sysfs_name}/size"))
                    .unwrap()
                    .trim()
                    .parse::<f64>()
                    .unwrap();
                assert_eq!(*v, fresh * 512.0, "{dev} in cycle {cycle}");
            }
            assert_eq!(c.sizes.len(), limits.len(), "one size file per listed disk");
            assert!(
                c.sizes.values().all(|s| s.file.is_kept()),
                "sysfs files are kept"
            );
        }
    }

    #[test]
    fn a_disk_no_longer_listed_drops_its_kept_size_file() {
        let mut c = DiskCollector::new(
            NameFilter::for_devices(&HostConfig::default().disk, Field::Disk).unwrap(),
        );
        run(&mut c, "real").1.unwrap();
        assert!(c.sizes.contains_key("vda"));
        let (b, r) = run(&mut c, "spaces");
        r.unwrap();
        let mut listed = devices(&b, "system.disk.io_time");
        let mut kept: Vec<String> = c.sizes.keys().cloned().collect();
        listed.sort();
        kept.sort();
        assert!(!kept.contains(&"vda".to_owned()), "{kept:?}");
        assert_eq!(
            kept, listed,
            "only the disks of the last cycle keep a size file"
        );
    }

    #[test]
    fn include_filter_limits_devices_and_partitions_are_reported() {
        let f = NameFilter::for_devices(
            &DeviceFilter {
                include: vec!["nvme*".into(), "dm-*".into()],
                exclude: vec![],
            },
            Field::Disk,
        )
        .unwrap();
        let (b, r) = run(&mut DiskCollector::new(f), "spaces");
        r.unwrap();
        let m = b.host_metric("system.disk.operations").unwrap();
        assert_eq!(m.points.len(), 6, "nvme0n1, nvme0n1p1, dm-0 x read/write");
        // No sysfs size for dm-0 in the fixture: no limit point, no error.
        assert!(b.host_metric("system.disk.limit").unwrap().points.len() == 2);
    }
}
