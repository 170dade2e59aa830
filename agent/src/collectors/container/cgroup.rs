//! The cgroup filesystem: which layout the host uses, where the containers are, and what
//! their control files say.
//!
//! - **Layout** ([`Hierarchy::detect`], once at start): *v2* when the root itself is a cgroup2
//!   mount (`cgroup.controllers` in it); *hybrid* when v1 controllers are mounted under the
//!   root and a cgroup2 mount is at `unified/`; *v1* when only v1 controllers are there. A v1
//!   controller directory may be shared (`cpu,cpuacct`); it is found through its name or a
//!   comma-joined name.
//! - **Walking** ([`Hierarchy::walk`], every cycle): one directory walk of the hierarchy that
//!   holds the containers (v2: the root; v1/hybrid: the `memory` controller, else
//!   `cpuacct`, `pids`, `name=systemd`). A directory whose path [`super::paths::recognise`]s
//!   as a container is reported and not descended into; directory types come from `readdir`,
//!   so the walk costs one `getdents` per non-container directory and no `stat`.
//! - **Reading** ([`Hierarchy::read`]): v2 files in the container's directory; v1 files in
//!   each controller's directory for the same relative path; in hybrid mode the pressure files
//!   come from the `unified/` directory when the runtime created one there.
//! - **Parsing**: pure `parse_*` functions over file text, tested with fixture files.
//!
//! A control file that does not exist (controller not enabled, older kernel) leaves its
//! figure out; a container that disappears while being read is reported as
//! [`ReadOutcome::Gone`] and skipped for the cycle.

use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::fs::{DirEntryExt, MetadataExt};

use nix::errno::Errno;
use nix::fcntl::{AT_FDCWD, OFlag, openat};
use nix::sys::stat::Mode;
use std::path::{Path, PathBuf};

pub use crate::collectors::file::ReadBuf;
use crate::collectors::file::{read_at_start, read_to_end};
use crate::collectors::host::pressure::{Pressure, parse_pressure};
use crate::collectors::{CollectError, parse_error};

use super::paths::{self, ContainerPath};

/// Deepest directory level the walk descends to (kubepods/qos/pod/container is 4).
const MAX_DEPTH: usize = 12;

/// Limits at or above this are "no limit" (cgroup v1 prints `PAGE_COUNTER_MAX` pages as bytes:
/// 9223372036854771712 on 4 KiB pages).
const V1_UNLIMITED: u64 = 1 << 62;

/// The cgroup layout found at start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    /// cgroup v1 controllers only.
    V1,
    /// cgroup v2 (unified) only.
    V2,
    /// v1 controllers plus a cgroup2 mount at `unified/` (systemd's "hybrid").
    Hybrid,
}

impl Layout {
    /// As written in logs and docs.
    pub fn as_str(self) -> &'static str {
        match self {
            Layout::V1 => "v1",
            Layout::V2 => "v2",
            Layout::Hybrid => "hybrid",
        }
    }
}

/// Why no cgroup hierarchy could be used.
#[derive(Debug, thiserror::Error)]
pub enum DetectError {
    /// The root is missing or unreadable.
    #[error("cannot read the cgroup root {path}: {source}")]
    Root {
        /// The configured root.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// The root has neither cgroup2 files nor v1 controllers.
    #[error(
        "{path} holds no cgroup hierarchy (no cgroup.controllers, no memory/cpuacct/pids controller); set containers.cgroup_root to where cgroups are mounted"
    )]
    Empty {
        /// The configured root.
        path: PathBuf,
    },
}

/// v1 controller directories (absolute), each optional.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct V1Dirs {
    /// `cpu` (CFS quota, throttling).
    pub cpu: Option<PathBuf>,
    /// `cpuacct` (usage).
    pub cpuacct: Option<PathBuf>,
    /// `memory`.
    pub memory: Option<PathBuf>,
    /// `blkio`.
    pub blkio: Option<PathBuf>,
    /// `pids`.
    pub pids: Option<PathBuf>,
    /// `name=systemd` (only for walking when no resource controller is mounted).
    pub systemd: Option<PathBuf>,
}

/// A detected cgroup hierarchy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hierarchy {
    /// The layout.
    pub layout: Layout,
    /// The configured root.
    pub root: PathBuf,
    /// v1 controllers (v1 and hybrid).
    pub v1: V1Dirs,
    /// The cgroup2 directory: the root (v2) or `root/unified` (hybrid).
    pub unified: Option<PathBuf>,
}

/// A container found by the walk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Found {
    /// Path relative to the walked hierarchy's root.
    pub rel: String,
    /// Inode number of its directory (a recreated cgroup, i.e. a restart, gets a new one).
    pub ino: u64,
    /// What the path says.
    pub path: ContainerPath,
}

/// The figures read for one container in one cycle; `None` where the file was absent.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Sample {
    /// Total CPU time, nanoseconds.
    pub cpu_total_ns: Option<u64>,
    /// User-mode CPU time, nanoseconds.
    pub cpu_user_ns: Option<u64>,
    /// Kernel-mode CPU time, nanoseconds.
    pub cpu_system_ns: Option<u64>,
    /// CFS bandwidth throttling.
    pub throttling: Option<Throttling>,
    /// CPU limit in CPUs (quota / period); `None` when unlimited.
    pub cpu_limit: Option<f64>,
    /// Memory figures.
    pub memory: Option<Memory>,
    /// OOM kills in the cgroup since it was created.
    pub oom_kills: Option<u64>,
    /// Block I/O per device.
    pub io: Vec<IoDevice>,
    /// Tasks (processes and threads) in the cgroup.
    pub pids_current: Option<u64>,
    /// Task limit; `None` when unlimited.
    pub pids_limit: Option<u64>,
    /// Pressure stall information for cpu, memory, io (cgroup v2 and hybrid only).
    pub pressure: [Option<Pressure>; 3],
    /// One process in the cgroup (for its network namespace).
    pub pid: Option<u32>,
}

/// CFS bandwidth figures.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Throttling {
    /// Enforcement periods elapsed.
    pub periods: u64,
    /// Periods in which the cgroup was throttled.
    pub throttled_periods: u64,
    /// Total time throttled, nanoseconds.
    pub throttled_ns: u64,
}

/// Memory figures in bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Memory {
    /// `memory.current` / `memory.usage_in_bytes`.
    pub usage: u64,
    /// Inactive file cache (`inactive_file` / `total_inactive_file`).
    pub inactive_file: u64,
    /// Anonymous memory (`anon` on v2; `total_rss` on v1).
    pub rss: u64,
    /// The limit; `None` when unlimited.
    pub limit: Option<u64>,
}

impl Memory {
    /// Usage minus inactive file cache, never negative: the kubelet's working set.
    pub fn working_set(&self) -> u64 {
        self.usage.saturating_sub(self.inactive_file)
    }
    /// Limit minus working set, when there is a limit.
    pub fn available(&self) -> Option<u64> {
        self.limit.map(|l| l.saturating_sub(self.working_set()))
    }
}

/// Bytes read and written on one block device.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IoDevice {
    /// Device major number.
    pub major: u32,
    /// Device minor number.
    pub minor: u32,
    /// Bytes read.
    pub read_bytes: u64,
    /// Bytes written.
    pub write_bytes: u64,
}

/// What reading a container's files came to.
#[derive(Debug)]
pub enum ReadOutcome {
    /// Read (some files may have been absent).
    Read,
    /// The container's cgroup vanished while it was read.
    Gone,
}

/// Which of a container's optional files [`Hierarchy::read`] reads this cycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reads {
    /// The PSI files (`cpu.pressure`, `memory.pressure`, `io.pressure`).
    pub pressure: bool,
    /// The limit files (CPU quota, memory and task limits), which the collector refreshes
    /// only every few cycles.
    pub limits: bool,
    /// `cgroup.procs`, for the process whose network namespace is read; the collector
    /// keeps the pid between refreshes (see `ContainerCollector`).
    pub pid: bool,
    /// `memory.events` (v2), which the collector reads only when it may have changed (see
    /// `oom_watch`); v1's `memory.oom_control` is read whatever this says.
    pub oom_events: bool,
}

/// Slots of [`KeptFds`]: the control files read every cycle, each of which may keep its
/// descriptor between cycles. Files read every few cycles (limits, `cgroup.procs`) have no
/// slot and are opened when read.
mod slot {
    // cgroup v2, in the container's directory.
    pub const CPU_STAT: usize = 0;
    pub const MEMORY_CURRENT: usize = 1;
    pub const MEMORY_STAT: usize = 2;
    pub const MEMORY_EVENTS: usize = 3;
    pub const IO_STAT: usize = 4;
    pub const PIDS_CURRENT: usize = 5;
    // cgroup v1, in each controller's directory (the same slots: a hierarchy has one layout).
    pub const CPUACCT_USAGE: usize = 0;
    pub const CPUACCT_STAT: usize = 1;
    pub const V1_CPU_STAT: usize = 2;
    pub const MEMORY_USAGE: usize = 3;
    pub const V1_MEMORY_STAT: usize = 4;
    pub const OOM_CONTROL: usize = 5;
    pub const BLKIO_RECURSIVE: usize = 6;
    pub const BLKIO: usize = 7;
    pub const V1_PIDS_CURRENT: usize = 8;
    // Pressure, in the unified directory (v2 and hybrid).
    pub const PRESSURE: [usize; 3] = [9, 10, 11];
    pub const COUNT: usize = 12;
}

/// What a container keeps open between cycles (see [`KeptFds`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Keep {
    /// Nothing: every file is opened and closed each cycle.
    Nothing,
    /// The unified directory only (`O_PATH`): files are opened with a one-component lookup.
    Dir,
    /// The unified directory and every control file read every cycle.
    All,
}

/// A container's descriptors kept between cycles: its unified-hierarchy directory (`O_PATH`,
/// v2 and hybrid), so that a file is opened with a one-component lookup instead of a walk
/// down the container's deep path, and the control files read every cycle, so that a cycle
/// reads each with one `pread` from offset 0 instead of `openat` + `read` + `close`.
///
/// cgroupfs generates a control file's content on each read from offset 0 of the same open
/// file (it is a `seq_file`: a read at offset 0 starts over), on v1 and v2 alike, so a kept
/// descriptor reports as fresh a figure as a new one. A file or cgroup removed while its
/// descriptor is kept reads as `ENODEV`: the descriptor is dropped and the name looked up
/// again in the same read (so a re-created file, for example a controller enabled again, is
/// found), and a gone cgroup is [`ReadOutcome::Gone`] as before. A directory removed and
/// created again under the same name is a new container to the walk (another inode), with a
/// `KeptFds` of its own. Everything is closed when the container's state is dropped.
///
/// Cost, per container that keeps everything ([`Hierarchy::kept_fds_per_container`]): v2
/// 10 descriptors (directory + 9 files; 7 without pressure), v1 8, hybrid 12 (8 without
/// pressure). An
/// `O_PATH` descriptor holds no buffer in the kernel, but an open and read cgroup file keeps
/// its `seq_file` page: about 4.4 KiB of kernel memory per kept file, charged to the agent's
/// memory cgroup (measured on this project's VM: 4 436 B per descriptor of `memory.stat`).
///
/// Kept only as far as the collector's descriptor budget allows (see `ContainerCollector`);
/// a container beyond it keeps its directory only, or nothing.
#[derive(Debug)]
pub struct KeptFds {
    keep: Keep,
    dir: Option<Dir>,
    files: [Option<std::fs::File>; slot::COUNT],
}

impl Default for KeptFds {
    fn default() -> Self {
        Self::new(Keep::Nothing)
    }
}

impl KeptFds {
    /// Descriptors that [`Hierarchy::read`] keeps open between cycles as `keep` says.
    pub fn new(keep: Keep) -> Self {
        Self {
            keep,
            dir: None,
            files: Default::default(),
        }
    }

    /// What this container keeps.
    pub fn keep(&self) -> Keep {
        self.keep
    }

    /// How many descriptors are held open now.
    pub fn open_count(&self) -> usize {
        usize::from(self.dir.is_some()) + self.files.iter().flatten().count()
    }

    /// The files of a v1 controller directory (`root` + `rel`), which is opened only if a
    /// file has no kept descriptor.
    fn files<'a>(&'a mut self, root: Option<&'a Path>, rel: &'a str) -> Files<'a> {
        Files {
            root,
            rel,
            dir: None,
            kept: &mut self.files,
            keep_files: self.keep == Keep::All,
        }
    }

    /// The files of the container's unified directory, with the directory kept from the last
    /// cycle if there is one; hand it back with [`KeptFds::put_back`].
    fn unified<'a>(&'a mut self, root: &'a Path, rel: &'a str) -> Files<'a> {
        Files {
            root: Some(root),
            rel,
            dir: self.dir.take().map(Some),
            kept: &mut self.files,
            keep_files: self.keep == Keep::All,
        }
    }

    /// Keeps the unified directory for the next cycle if this container keeps it.
    fn put_back(&mut self, dir: Option<Dir>) {
        if self.keep != Keep::Nothing {
            self.dir = dir;
        }
    }
}

/// One cgroup directory of a container as one read sees it: the descriptors kept from the
/// last cycle first; the directory itself is opened only when a file has to be opened.
struct Files<'a> {
    /// The hierarchy (or v1 controller) root; `None` when it is not mounted.
    root: Option<&'a Path>,
    rel: &'a str,
    /// `None`: not opened yet; `Some(None)`: absent.
    dir: Option<Option<Dir>>,
    kept: &'a mut [Option<std::fs::File>; slot::COUNT],
    keep_files: bool,
}

impl Files<'_> {
    /// The directory, opened now if it was not; `None` when it does not exist.
    fn dir(&mut self) -> Result<Option<&Dir>, CollectError> {
        if self.dir.is_none() {
            self.dir = Some(match self.root {
                Some(r) => Dir::open(r.join(self.rel))?,
                None => None,
            });
        }
        Ok(self.dir.as_ref().and_then(Option::as_ref))
    }

    /// The directory, if it was opened, for [`KeptFds::put_back`].
    fn into_dir(self) -> Option<Dir> {
        self.dir.flatten()
    }

    fn path(&self, name: &str) -> PathBuf {
        self.root
            .map(|r| r.join(self.rel).join(name))
            .unwrap_or_else(|| PathBuf::from(name))
    }

    /// Reads file `name` into `buf` (cleared first), through its kept descriptor in `slot`
    /// if there is one; `Ok(false)` when it does not exist. Files without a slot are opened
    /// and closed.
    fn read(
        &mut self,
        slot: Option<usize>,
        name: &str,
        buf: &mut ReadBuf,
    ) -> Result<bool, CollectError> {
        if let Some(s) = slot
            && let Some(f) = &self.kept[s]
        {
            match read_at_start(f, buf) {
                Ok(true) => return Ok(true),
                // Removed since the last cycle (`ENODEV`): look the name up again.
                Ok(false) => self.kept[s] = None,
                Err(source) => {
                    return Err(CollectError::Read {
                        path: self.path(name),
                        source,
                    });
                }
            }
        }
        let Some(dir) = self.dir()? else {
            return Ok(false);
        };
        let Some(file) = dir.open_file(name)? else {
            return Ok(false);
        };
        let found = read_at_start(&file, buf).map_err(|source| CollectError::Read {
            path: self.path(name),
            source,
        })?;
        if let (true, true, Some(s)) = (found, self.keep_files, slot) {
            self.kept[s] = Some(file);
        }
        Ok(found)
    }

    /// Reads and parses an optional file; `Ok(None)` when absent.
    fn parse<T>(
        &mut self,
        slot: Option<usize>,
        name: &str,
        buf: &mut ReadBuf,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> Result<Option<T>, CollectError> {
        if !self.read(slot, name, buf)? {
            return Ok(None);
        }
        parse_buf(|| self.path(name), buf, parse)
    }
}

/// Parses the text in `buf`, read from `path()` (named in the error message only).
fn parse_buf<T>(
    path: impl Fn() -> PathBuf,
    buf: &ReadBuf,
    parse: impl FnOnce(&str) -> Result<T, String>,
) -> Result<Option<T>, CollectError> {
    let text =
        std::str::from_utf8(buf.as_bytes()).map_err(|_| parse_error(&path(), "not UTF-8 text"))?;
    parse(text).map(Some).map_err(|e| parse_error(&path(), e))
}

// ---------------------------------------------------------------------------------------
// Pure parsers.

fn num(s: &str, what: &str) -> Result<u64, String> {
    s.parse::<u64>()
        .map_err(|_| format!("{what}: expected an unsigned integer, found {s:?}"))
}

/// Calls `f(key, value)` for each `key value` line (`cpu.stat`, `memory.stat`, …).
fn for_each_kv(
    text: &str,
    mut f: impl FnMut(&str, &str) -> Result<(), String>,
) -> Result<(), String> {
    for line in text.lines() {
        let mut it = line.split_ascii_whitespace();
        let (Some(k), Some(v)) = (it.next(), it.next()) else {
            if line.trim().is_empty() {
                continue;
            }
            return Err(format!("expected \"key value\", found {line:?}"));
        };
        f(k, v)?;
    }
    Ok(())
}

/// A file holding one unsigned integer (`cpuacct.usage`, `memory.current`, `pids.current`).
pub fn parse_u64(text: &str) -> Result<u64, String> {
    num(text.trim(), "value")
}

/// A limit file: an integer, or `max` for none (`memory.max`, `pids.max`). v1 memory limits
/// at [`V1_UNLIMITED`] or above also mean none.
pub fn parse_limit(text: &str) -> Result<Option<u64>, String> {
    match text.trim() {
        "max" => Ok(None),
        s => num(s, "limit").map(|v| (v < V1_UNLIMITED).then_some(v)),
    }
}

/// cgroup v2 `cpu.stat`: (usage, user, system) in nanoseconds and throttling.
pub fn parse_cpu_stat_v2(text: &str) -> Result<(u64, u64, u64, Option<Throttling>), String> {
    let (mut usage, mut user, mut system) = (None, None, None);
    let mut t = Throttling::default();
    let mut has_t = false;
    for_each_kv(text, |k, v| {
        match k {
            "usage_usec" => usage = Some(num(v, k)?.saturating_mul(1000)),
            "user_usec" => user = Some(num(v, k)?.saturating_mul(1000)),
            "system_usec" => system = Some(num(v, k)?.saturating_mul(1000)),
            "nr_periods" => (t.periods, has_t) = (num(v, k)?, true),
            "nr_throttled" => t.throttled_periods = num(v, k)?,
            "throttled_usec" => t.throttled_ns = num(v, k)?.saturating_mul(1000),
            _ => {}
        }
        Ok(())
    })?;
    match (usage, user, system) {
        (Some(a), Some(b), Some(c)) => Ok((a, b, c, has_t.then_some(t))),
        _ => Err("missing usage_usec, user_usec or system_usec".to_owned()),
    }
}

/// cgroup v1 `cpu.stat` (CFS throttling; `throttled_time` is in nanoseconds).
pub fn parse_cpu_stat_v1(text: &str) -> Result<Throttling, String> {
    let mut t = Throttling::default();
    let mut seen = 0u8;
    for_each_kv(text, |k, v| {
        match k {
            "nr_periods" => (t.periods, seen) = (num(v, k)?, seen | 1),
            "nr_throttled" => (t.throttled_periods, seen) = (num(v, k)?, seen | 2),
            "throttled_time" => (t.throttled_ns, seen) = (num(v, k)?, seen | 4),
            _ => {}
        }
        Ok(())
    })?;
    if seen != 0b111 {
        return Err("missing nr_periods, nr_throttled or throttled_time".to_owned());
    }
    Ok(t)
}

/// cgroup v1 `cpuacct.stat`: (user, system) in `USER_HZ` ticks.
pub fn parse_cpuacct_stat(text: &str) -> Result<(u64, u64), String> {
    let (mut user, mut system) = (None, None);
    for_each_kv(text, |k, v| {
        match k {
            "user" => user = Some(num(v, k)?),
            "system" => system = Some(num(v, k)?),
            _ => {}
        }
        Ok(())
    })?;
    user.zip(system)
        .ok_or_else(|| "missing user or system".to_owned())
}

/// `memory.stat`: (inactive file, rss). v2 reads `inactive_file` and `anon`; v1 the
/// hierarchical `total_inactive_file` and `total_rss`.
pub fn parse_memory_stat(text: &str, v2: bool) -> Result<(u64, u64), String> {
    let (inactive_key, rss_key) = if v2 {
        ("inactive_file", "anon")
    } else {
        ("total_inactive_file", "total_rss")
    };
    let (mut inactive, mut rss) = (None, None);
    for_each_kv(text, |k, v| {
        if k == inactive_key {
            inactive = Some(num(v, k)?);
        } else if k == rss_key {
            rss = Some(num(v, k)?);
        }
        Ok(())
    })?;
    inactive
        .zip(rss)
        .ok_or_else(|| format!("missing {inactive_key} or {rss_key}"))
}

/// The `oom_kill` counter of v2 `memory.events` or v1 `memory.oom_control` (Linux 4.13+);
/// `None` when the kernel does not print it.
pub fn parse_oom_kill(text: &str) -> Result<Option<u64>, String> {
    let mut out = None;
    for_each_kv(text, |k, v| {
        if k == "oom_kill" {
            out = Some(num(v, k)?);
        }
        Ok(())
    })?;
    Ok(out)
}

/// cgroup v2 `cpu.max`: `max 100000` (none) or `<quota> <period>` in microseconds → CPUs.
pub fn parse_cpu_max(text: &str) -> Result<Option<f64>, String> {
    let mut it = text.split_ascii_whitespace();
    let (Some(quota), Some(period)) = (it.next(), it.next()) else {
        return Err(format!("expected \"<quota|max> <period>\", found {text:?}"));
    };
    if quota == "max" {
        return Ok(None);
    }
    quota_period(num(quota, "quota")? as i64, num(period, "period")?)
}

/// v1 `cpu.cfs_quota_us` (−1 for none) and `cpu.cfs_period_us` → CPUs.
pub fn parse_cfs_quota(quota: &str, period: &str) -> Result<Option<f64>, String> {
    let q: i64 = quota
        .trim()
        .parse()
        .map_err(|_| format!("cfs_quota_us: expected an integer, found {quota:?}"))?;
    quota_period(q, num(period.trim(), "cfs_period_us")?)
}

fn quota_period(quota: i64, period: u64) -> Result<Option<f64>, String> {
    if quota < 0 {
        return Ok(None);
    }
    if period == 0 {
        return Err("period is 0".to_owned());
    }
    Ok(Some(quota as f64 / period as f64))
}

fn major_minor(s: &str) -> Result<(u32, u32), String> {
    let (a, b) = s
        .split_once(':')
        .ok_or_else(|| format!("expected major:minor, found {s:?}"))?;
    let p = |x: &str| {
        x.parse::<u32>()
            .map_err(|_| format!("expected major:minor, found {s:?}"))
    };
    Ok((p(a)?, p(b)?))
}

/// cgroup v2 `io.stat`: `MAJ:MIN rbytes=… wbytes=… rios=… …` per device.
pub fn parse_io_stat(text: &str) -> Result<Vec<IoDevice>, String> {
    let mut out = Vec::new();
    parse_io_stat_into(text, &mut out)?;
    Ok(out)
}

/// [`parse_io_stat`] into a reused vector (cleared first).
pub fn parse_io_stat_into(text: &str, out: &mut Vec<IoDevice>) -> Result<(), String> {
    out.clear();
    for line in text.lines() {
        let mut it = line.split_ascii_whitespace();
        let Some(dev) = it.next() else { continue };
        let (major, minor) = major_minor(dev)?;
        let mut d = IoDevice {
            major,
            minor,
            ..IoDevice::default()
        };
        for kv in it {
            let Some((k, v)) = kv.split_once('=') else {
                return Err(format!("{dev}: expected key=value, found {kv:?}"));
            };
            match k {
                "rbytes" => d.read_bytes = num(v, k)?,
                "wbytes" => d.write_bytes = num(v, k)?,
                _ => {}
            }
        }
        out.push(d);
    }
    Ok(())
}

/// cgroup v1 `blkio.throttle.io_service_bytes[_recursive]`: `MAJ:MIN Read|Write|… N` lines
/// and a final `Total N`.
pub fn parse_blkio(text: &str) -> Result<Vec<IoDevice>, String> {
    let mut out = Vec::new();
    parse_blkio_into(text, &mut out)?;
    Ok(out)
}

/// [`parse_blkio`] into a reused vector (cleared first).
pub fn parse_blkio_into(text: &str, out: &mut Vec<IoDevice>) -> Result<(), String> {
    out.clear();
    for line in text.lines() {
        let mut it = line.split_ascii_whitespace();
        let (Some(dev), Some(op)) = (it.next(), it.next()) else {
            continue;
        };
        if dev == "Total" {
            continue;
        }
        let value = it.next().ok_or_else(|| format!("{dev} {op}: no value"))?;
        let (major, minor) = major_minor(dev)?;
        let idx = match out
            .iter()
            .position(|d| d.major == major && d.minor == minor)
        {
            Some(i) => i,
            None => {
                out.push(IoDevice {
                    major,
                    minor,
                    ..IoDevice::default()
                });
                out.len() - 1
            }
        };
        match op {
            "Read" => out[idx].read_bytes = num(value, op)?,
            "Write" => out[idx].write_bytes = num(value, op)?,
            _ => {}
        }
    }
    Ok(())
}

/// Splits the precise total CPU time `total` into (user, system) in the proportion of the
/// tick-sampled `user` and `system`, keeping both monotonic across calls through `prev` —
/// the kernel's own `cputime_adjust`, which cgroup v2 `cpu.stat` and `/proc/<pid>/stat`
/// already apply. cgroup v1 `cpuacct.usage_user`/`usage_sys` are not adjusted (their sum
/// drifts from `cpuacct.usage` by about 1 %), so the collector applies it: the modes then sum
/// to exactly the total that `cpuacct.usage` and Docker's stats report. On input that already
/// sums to `total` (v2) it changes nothing.
pub fn adjust_cputime(total: u64, user: u64, system: u64, prev: &mut (u64, u64)) -> (u64, u64) {
    let (pu, ps) = *prev;
    if pu.saturating_add(ps) >= total {
        return *prev;
    }
    let sum = u128::from(user) + u128::from(system);
    let mut s = (u128::from(system) * u128::from(total))
        .checked_div(sum)
        .map_or(0, |v| u64::try_from(v).unwrap_or(total));
    let mut u = total - s.min(total);
    s = s.min(total);
    if s < ps {
        s = ps;
        u = total - s;
    } else if u < pu {
        u = pu;
        s = total - u;
    }
    *prev = (u, s);
    (u, s)
}

/// The first PID in a `cgroup.procs` / `tasks` file.
pub fn parse_first_pid(text: &str) -> Result<Option<u32>, String> {
    match text.split_ascii_whitespace().next() {
        None => Ok(None),
        Some(s) => s
            .parse::<u32>()
            .map(Some)
            .map_err(|_| format!("expected a PID, found {s:?}")),
    }
}

// ---------------------------------------------------------------------------------------
// Detection, walking, reading.

/// Finds a v1 controller directory: `root/<name>`, or a directory whose name lists it among
/// comma-separated controllers (`cpu,cpuacct`).
fn find_controller(root: &Path, entries: &[String], name: &str) -> Option<PathBuf> {
    if root.join(name).is_dir() && root.join(name).join("cgroup.procs").exists() {
        return Some(root.join(name));
    }
    entries
        .iter()
        .find(|e| e.split(',').any(|c| c == name))
        .map(|e| root.join(e))
        .filter(|p| p.join("cgroup.procs").exists())
}

impl Hierarchy {
    /// Detects the layout under `root`.
    pub fn detect(root: &Path) -> Result<Self, DetectError> {
        let rd = std::fs::read_dir(root).map_err(|source| DetectError::Root {
            path: root.to_path_buf(),
            source,
        })?;
        let entries: Vec<String> = rd
            .filter_map(Result::ok)
            .filter_map(|e| e.file_name().into_string().ok())
            .collect();
        if root.join("cgroup.controllers").is_file() {
            return Ok(Self {
                layout: Layout::V2,
                root: root.to_path_buf(),
                v1: V1Dirs::default(),
                unified: Some(root.to_path_buf()),
            });
        }
        let v1 = V1Dirs {
            cpu: find_controller(root, &entries, "cpu"),
            cpuacct: find_controller(root, &entries, "cpuacct"),
            memory: find_controller(root, &entries, "memory"),
            blkio: find_controller(root, &entries, "blkio"),
            pids: find_controller(root, &entries, "pids"),
            systemd: find_controller(root, &entries, "systemd"),
        };
        let unified = Some(root.join("unified")).filter(|u| u.join("cgroup.controllers").is_file());
        if v1.memory.is_none() && v1.cpuacct.is_none() && v1.pids.is_none() {
            return Err(DetectError::Empty {
                path: root.to_path_buf(),
            });
        }
        let layout = if unified.is_some() {
            Layout::Hybrid
        } else {
            Layout::V1
        };
        Ok(Self {
            layout,
            root: root.to_path_buf(),
            v1,
            unified,
        })
    }

    /// The hierarchy the walk lists.
    pub fn walk_root(&self) -> Option<&Path> {
        match self.layout {
            Layout::V2 => self.unified.as_deref(),
            Layout::V1 | Layout::Hybrid => self
                .v1
                .memory
                .as_deref()
                .or(self.v1.cpuacct.as_deref())
                .or(self.v1.pids.as_deref())
                .or(self.v1.systemd.as_deref()),
        }
    }

    /// Lists every container cgroup into `out` (cleared first).
    pub fn walk(&self, out: &mut Vec<Found>) -> Result<(), CollectError> {
        out.clear();
        let Some(root) = self.walk_root() else {
            return Ok(());
        };
        let mut rel = String::new();
        walk_dir(root, &mut rel, 0, out).map_err(|source| CollectError::Read {
            path: root.to_path_buf(),
            source,
        })
    }

    /// Reads one container's files into `out` (reset first, keeping its allocations); `buf`
    /// is scratch; `what` says which of the optional files to read; `kept` holds the
    /// container's descriptors kept between cycles ([`KeptFds`]).
    pub fn read(
        &self,
        rel: &str,
        kept: &mut KeptFds,
        buf: &mut ReadBuf,
        out: &mut Sample,
        what: Reads,
    ) -> Result<ReadOutcome, CollectError> {
        let Reads {
            pressure,
            limits,
            pid,
            ..
        } = what;
        let io = std::mem::take(&mut out.io);
        *out = Sample::default();
        out.io = io;
        out.io.clear();
        match self.layout {
            Layout::V2 => {
                let Some(u) = &self.unified else {
                    return Ok(ReadOutcome::Gone);
                };
                let mut files = kept.unified(u, rel);
                let outcome = read_v2(&mut files, buf, out, what)?;
                let dir = files.into_dir();
                if matches!(outcome, ReadOutcome::Read) {
                    kept.put_back(dir);
                }
                Ok(outcome)
            }
            Layout::V1 | Layout::Hybrid => {
                let outcome = read_v1(&self.v1, rel, kept, buf, out, limits, pid)?;
                if let (ReadOutcome::Read, Some(u), true) = (&outcome, &self.unified, pressure) {
                    // Hybrid: the unified hierarchy has no controllers but keeps per-cgroup
                    // pressure files where the runtime created the cgroup there too.
                    let mut files = kept.unified(u, rel);
                    read_pressure(&mut files, buf, out)?;
                    let dir = files.into_dir();
                    kept.put_back(dir);
                }
                Ok(outcome)
            }
        }
    }

    /// Descriptors one container keeps open with [`Keep::All`], at most (fewer where a file
    /// is absent): v2 its directory and 9 files (6 without pressure), v1 8 files, hybrid
    /// both (12; 8 without pressure). See [`KeptFds`].
    pub fn kept_fds_per_container(&self, pressure: bool) -> usize {
        let psi = if pressure { slot::PRESSURE.len() } else { 0 };
        match self.layout {
            Layout::V2 => 1 + 6 + psi,
            // cpuacct.usage and .stat, cpu.stat, memory.usage_in_bytes, .stat and
            // .oom_control, one of the two blkio files, pids.current.
            Layout::V1 => 8,
            Layout::Hybrid if pressure => 8 + 1 + psi,
            Layout::Hybrid => 8,
        }
    }

    /// The first process of a container (`cgroup.procs`), read on its own when the one the
    /// collector kept has gone; `buf` is scratch.
    pub fn first_pid(&self, rel: &str, buf: &mut ReadBuf) -> Result<Option<u32>, CollectError> {
        let dirs = match self.layout {
            Layout::V2 => [self.unified.as_ref(), None],
            Layout::V1 | Layout::Hybrid => [self.v1.memory.as_ref(), self.v1.pids.as_ref()],
        };
        for root in dirs.into_iter().flatten() {
            if let Some(d) = Dir::open(root.join(rel))?
                && let Some(pid) = d.parse("cgroup.procs", buf, parse_first_pid)?.flatten()
            {
                return Ok(Some(pid));
            }
        }
        Ok(None)
    }
}

fn walk_dir(dir: &Path, rel: &mut String, depth: usize, out: &mut Vec<Found>) -> io::Result<()> {
    if depth > MAX_DEPTH {
        return Ok(());
    }
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        // A cgroup removed between listing its parent and opening it.
        Err(e) if depth > 0 && e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    for entry in rd {
        let Ok(entry) = entry else { continue };
        let Ok(ft) = entry.file_type() else { continue };
        if !ft.is_dir() {
            continue;
        }
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let len = rel.len();
        if !rel.is_empty() {
            rel.push('/');
        }
        rel.push_str(name);
        if let Some(path) = paths::recognise(rel) {
            out.push(Found {
                rel: rel.clone(),
                ino: entry.ino(),
                path,
            });
        } else {
            walk_dir(&entry.path(), rel, depth + 1, out)?;
        }
        rel.truncate(len);
    }
    Ok(())
}

/// A cgroup directory opened once (`O_PATH`), so each control file is opened with a
/// one-component lookup instead of a walk down the whole (deep, under `kubepods`) path.
#[derive(Debug)]
struct Dir {
    fd: OwnedFd,
    path: PathBuf,
}

/// `ENOENT`, or `ENODEV` from a cgroup being removed: the file or cgroup is not there.
fn is_absent(e: Errno) -> bool {
    matches!(e, Errno::ENOENT | Errno::ENODEV | Errno::ENOTDIR)
}

impl Dir {
    /// Opens `path`; `Ok(None)` when it does not exist.
    fn open(path: PathBuf) -> Result<Option<Self>, CollectError> {
        match openat(
            AT_FDCWD,
            &path,
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        ) {
            Ok(fd) => Ok(Some(Self { fd, path })),
            Err(e) if is_absent(e) => Ok(None),
            Err(e) => Err(CollectError::Read {
                path,
                source: io::Error::from(e),
            }),
        }
    }

    /// Opens file `name` for reading; `Ok(None)` when it does not exist.
    fn open_file(&self, name: &str) -> Result<Option<std::fs::File>, CollectError> {
        match openat(
            &self.fd,
            name,
            OFlag::O_RDONLY | OFlag::O_CLOEXEC,
            Mode::empty(),
        ) {
            Ok(fd) => Ok(Some(std::fs::File::from(fd))),
            Err(e) if is_absent(e) => Ok(None),
            Err(e) => Err(CollectError::Read {
                path: self.path.join(name),
                source: io::Error::from(e),
            }),
        }
    }

    /// Reads file `name` into `buf` (cleared first); `Ok(false)` when it does not exist.
    /// A read loop into the reused buffer: no `statx` for a size hint, no allocation once the
    /// buffer has grown to the largest file.
    fn read(&self, name: &str, buf: &mut ReadBuf) -> Result<bool, CollectError> {
        let Some(f) = self.open_file(name)? else {
            return Ok(false);
        };
        read_at_start(&f, buf).map_err(|source| CollectError::Read {
            path: self.path.join(name),
            source,
        })
    }

    /// Reads and parses an optional file; `Ok(None)` when absent.
    fn parse<T>(
        &self,
        name: &str,
        buf: &mut ReadBuf,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> Result<Option<T>, CollectError> {
        if !self.read(name, buf)? {
            return Ok(None);
        }
        parse_buf(|| self.path.join(name), buf, parse)
    }
}

/// Reads the whole file at `path` into `buf` (cleared first), to the end of file: for
/// iterating `seq_file`s such as `/proc/<pid>/net/dev`, which return at most a page per read;
/// `Ok(false)` when it (or its process, `ESRCH`) does not exist.
pub(crate) fn read_path(path: &Path, buf: &mut ReadBuf) -> Result<bool, CollectError> {
    let fd = match openat(
        AT_FDCWD,
        path,
        OFlag::O_RDONLY | OFlag::O_CLOEXEC,
        Mode::empty(),
    ) {
        Ok(fd) => fd,
        Err(e) if is_absent(e) || e == Errno::ESRCH => return Ok(false),
        Err(e) => {
            return Err(CollectError::Read {
                path: path.to_path_buf(),
                source: io::Error::from(e),
            });
        }
    };
    read_to_end(&std::fs::File::from(fd), buf).map_err(|source| CollectError::Read {
        path: path.to_path_buf(),
        source,
    })
}

fn read_pressure(
    files: &mut Files<'_>,
    buf: &mut ReadBuf,
    out: &mut Sample,
) -> Result<(), CollectError> {
    for ((out, file), slot) in out
        .pressure
        .iter_mut()
        .zip(["cpu.pressure", "memory.pressure", "io.pressure"])
        .zip(slot::PRESSURE)
    {
        *out = files.parse(Some(slot), file, buf, parse_pressure)?;
    }
    Ok(())
}

fn read_v2(
    d: &mut Files<'_>,
    buf: &mut ReadBuf,
    out: &mut Sample,
    what: Reads,
) -> Result<ReadOutcome, CollectError> {
    let Reads {
        pressure,
        limits,
        pid,
        oom_events,
    } = what;
    // cpu.stat exists in every v2 cgroup whatever the enabled controllers: its absence means
    // the cgroup is gone.
    let Some((total, user, system, throttling)) =
        d.parse(Some(slot::CPU_STAT), "cpu.stat", buf, parse_cpu_stat_v2)?
    else {
        return Ok(ReadOutcome::Gone);
    };
    out.cpu_total_ns = Some(total);
    out.cpu_user_ns = Some(user);
    out.cpu_system_ns = Some(system);
    out.throttling = throttling;
    if limits {
        out.cpu_limit = d.parse(None, "cpu.max", buf, parse_cpu_max)?.flatten();
    }
    if let Some(usage) = d.parse(Some(slot::MEMORY_CURRENT), "memory.current", buf, parse_u64)? {
        let (inactive_file, rss) = d
            .parse(Some(slot::MEMORY_STAT), "memory.stat", buf, |t| {
                parse_memory_stat(t, true)
            })?
            .unwrap_or((0, 0));
        let limit = if limits {
            d.parse(None, "memory.max", buf, parse_limit)?.flatten()
        } else {
            None
        };
        out.memory = Some(Memory {
            usage,
            inactive_file,
            rss,
            limit,
        });
        if oom_events {
            out.oom_kills = d
                .parse(
                    Some(slot::MEMORY_EVENTS),
                    "memory.events",
                    buf,
                    parse_oom_kill,
                )?
                .flatten();
        }
    }
    let mut io = std::mem::take(&mut out.io);
    if d.parse(Some(slot::IO_STAT), "io.stat", buf, |t| {
        parse_io_stat_into(t, &mut io)
    })?
    .is_none()
    {
        io.clear();
    }
    out.io = io;
    out.pids_current = d.parse(Some(slot::PIDS_CURRENT), "pids.current", buf, parse_u64)?;
    if limits {
        out.pids_limit = d.parse(None, "pids.max", buf, parse_limit)?.flatten();
    }
    if pressure {
        read_pressure(d, buf, out)?;
    }
    if pid {
        out.pid = d
            .parse(None, "cgroup.procs", buf, parse_first_pid)?
            .flatten();
    }
    Ok(ReadOutcome::Read)
}

fn read_v1(
    v1: &V1Dirs,
    rel: &str,
    kept: &mut KeptFds,
    buf: &mut ReadBuf,
    out: &mut Sample,
    limits: bool,
    pid: bool,
) -> Result<ReadOutcome, CollectError> {
    let mut any = false;
    // With `cpu,cpuacct` co-mounted both names lead to the same directory: one `Files`.
    let co_mounted = v1.cpu == v1.cpuacct;
    {
        let mut acct = kept.files(v1.cpuacct.as_deref(), rel);
        if let Some(total) =
            acct.parse(Some(slot::CPUACCT_USAGE), "cpuacct.usage", buf, parse_u64)?
        {
            any = true;
            out.cpu_total_ns = Some(total);
            // The user/system proportion only: the collector scales it to the precise total
            // (`adjust_cputime`), so the tick-based cpuacct.stat is as good as the newer
            // cpuacct.usage_user/usage_sys (tick-based too) and is one file instead of two.
            if let Some((u, s)) = acct.parse(
                Some(slot::CPUACCT_STAT),
                "cpuacct.stat",
                buf,
                parse_cpuacct_stat,
            )? {
                let tick_ns = 1_000_000_000 / user_hz();
                (out.cpu_user_ns, out.cpu_system_ns) = (
                    Some(u.saturating_mul(tick_ns)),
                    Some(s.saturating_mul(tick_ns)),
                );
            }
        }
        if co_mounted {
            read_v1_cpu(&mut acct, buf, out, limits)?;
        }
    }
    if !co_mounted {
        read_v1_cpu(&mut kept.files(v1.cpu.as_deref(), rel), buf, out, limits)?;
    }
    {
        let mut d = kept.files(v1.memory.as_deref(), rel);
        if let Some(usage) = d.parse(
            Some(slot::MEMORY_USAGE),
            "memory.usage_in_bytes",
            buf,
            parse_u64,
        )? {
            any = true;
            let (inactive_file, rss) = d
                .parse(Some(slot::V1_MEMORY_STAT), "memory.stat", buf, |t| {
                    parse_memory_stat(t, false)
                })?
                .unwrap_or((0, 0));
            let limit = if limits {
                d.parse(None, "memory.limit_in_bytes", buf, parse_limit)?
                    .flatten()
            } else {
                None
            };
            out.memory = Some(Memory {
                usage,
                inactive_file,
                rss,
                limit,
            });
            out.oom_kills = d
                .parse(
                    Some(slot::OOM_CONTROL),
                    "memory.oom_control",
                    buf,
                    parse_oom_kill,
                )?
                .flatten();
        }
        if pid {
            out.pid = d
                .parse(None, "cgroup.procs", buf, parse_first_pid)?
                .flatten();
        }
    }
    {
        let mut d = kept.files(v1.blkio.as_deref(), rel);
        let mut v = std::mem::take(&mut out.io);
        v.clear();
        let found = d
            .parse(
                Some(slot::BLKIO_RECURSIVE),
                "blkio.throttle.io_service_bytes_recursive",
                buf,
                |t| parse_blkio_into(t, &mut v),
            )?
            .is_some()
            || d.parse(
                Some(slot::BLKIO),
                "blkio.throttle.io_service_bytes",
                buf,
                |t| parse_blkio_into(t, &mut v),
            )?
            .is_some();
        if !found {
            v.clear();
        }
        out.io = v;
    }
    {
        let mut d = kept.files(v1.pids.as_deref(), rel);
        out.pids_current = d.parse(Some(slot::V1_PIDS_CURRENT), "pids.current", buf, parse_u64)?;
        any |= out.pids_current.is_some();
        if limits {
            out.pids_limit = d.parse(None, "pids.max", buf, parse_limit)?.flatten();
        }
        if pid && out.pid.is_none() {
            out.pid = d
                .parse(None, "cgroup.procs", buf, parse_first_pid)?
                .flatten();
        }
    }
    Ok(if any {
        ReadOutcome::Read
    } else {
        ReadOutcome::Gone
    })
}

/// v1 `cpu` controller files: throttling, and the CFS quota with the limits.
fn read_v1_cpu(
    d: &mut Files<'_>,
    buf: &mut ReadBuf,
    out: &mut Sample,
    limits: bool,
) -> Result<(), CollectError> {
    out.throttling = d.parse(Some(slot::V1_CPU_STAT), "cpu.stat", buf, parse_cpu_stat_v1)?;
    if limits
        && let Some(quota) = d.parse(None, "cpu.cfs_quota_us", buf, |t| {
            Ok(t.trim().parse::<i64>())
        })?
    {
        let quota =
            quota.map_err(|_| parse_error(&d.path("cpu.cfs_quota_us"), "expected an integer"))?;
        out.cpu_limit = d
            .parse(None, "cpu.cfs_period_us", buf, |p| {
                parse_cfs_quota(&quota.to_string(), p)
            })?
            .flatten();
    }
    Ok(())
}

/// `USER_HZ`, the unit of `cpuacct.stat` (100 on every Linux architecture in use).
fn user_hz() -> u64 {
    nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .and_then(|v| u64::try_from(v).ok())
        .filter(|v| *v > 0)
        .unwrap_or(100)
}

/// Modification time of a directory in Unix nanoseconds: for a cgroup directory, the time it
/// was created (the kernel sets it at creation; containers do not create child cgroups).
pub fn dir_time_unix_nanos(path: &Path) -> io::Result<u64> {
    let m = std::fs::metadata(path)?;
    let secs = u64::try_from(m.mtime()).unwrap_or(0);
    let nanos = u64::try_from(m.mtime_nsec()).unwrap_or(0);
    Ok(secs.saturating_mul(1_000_000_000).saturating_add(nanos))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_files_parse() {
        let v2 = "usage_usec 1113009\nuser_usec 1081254\nsystem_usec 31754\nnice_usec 0\nnr_periods 5\nnr_throttled 2\nthrottled_usec 300\n";
        let (u, us, sy, t) = parse_cpu_stat_v2(v2).unwrap();
        assert_eq!((u, us, sy), (1_113_009_000, 1_081_254_000, 31_754_000));
        assert_eq!(
            t,
            Some(Throttling {
                periods: 5,
                throttled_periods: 2,
                throttled_ns: 300_000
            })
        );
        assert_eq!(
            parse_cpu_stat_v2("usage_usec 1\nuser_usec 1\nsystem_usec 0\n")
                .unwrap()
                .3,
            None
        );
        assert!(parse_cpu_stat_v2("usage_usec 1\n").is_err());
        assert!(parse_cpu_stat_v2("usage_usec x\nuser_usec 1\nsystem_usec 0\n").is_err());
        let t =
            parse_cpu_stat_v1("nr_periods 50\nnr_throttled 3\nthrottled_time 12345\nnr_bursts 0\n")
                .unwrap();
        assert_eq!(
            t,
            Throttling {
                periods: 50,
                throttled_periods: 3,
                throttled_ns: 12345
            }
        );
        assert!(parse_cpu_stat_v1("nr_periods 50\n").is_err());
        assert_eq!(
            parse_cpuacct_stat("user 108\nsystem 3\n").unwrap(),
            (108, 3)
        );
        assert!(parse_cpuacct_stat("user 108\n").is_err());
        assert_eq!(parse_cpu_max("max 100000\n").unwrap(), None);
        assert_eq!(parse_cpu_max("50000 100000\n").unwrap(), Some(0.5));
        assert!(parse_cpu_max("50000\n").is_err());
        assert!(parse_cpu_max("5 0\n").is_err());
        assert_eq!(parse_cfs_quota("-1\n", "100000\n").unwrap(), None);
        assert_eq!(parse_cfs_quota("150000\n", "100000\n").unwrap(), Some(1.5));
        assert!(parse_cfs_quota("lots", "100000").is_err());
    }

    #[test]
    fn memory_files_parse() {
        assert_eq!(
            parse_memory_stat("anon 100\nfile 50\ninactive_file 20\n", true).unwrap(),
            (20, 100)
        );
        assert_eq!(
            parse_memory_stat(
                "rss 1\ninactive_file 2\ntotal_rss 100\ntotal_inactive_file 20\n",
                false
            )
            .unwrap(),
            (20, 100)
        );
        assert!(parse_memory_stat("anon 1\n", true).is_err());
        assert_eq!(parse_limit("max\n").unwrap(), None);
        assert_eq!(parse_limit("134217728\n").unwrap(), Some(134_217_728));
        assert_eq!(parse_limit("9223372036854771712\n").unwrap(), None);
        assert!(parse_limit("-1").is_err());
        assert_eq!(
            parse_oom_kill("oom_kill_disable 0\nunder_oom 0\noom_kill 4\n").unwrap(),
            Some(4)
        );
        assert_eq!(
            parse_oom_kill("low 0\nhigh 0\nmax 0\noom 1\noom_kill 1\n").unwrap(),
            Some(1)
        );
        assert_eq!(
            parse_oom_kill("oom_kill_disable 0\nunder_oom 0\n").unwrap(),
            None
        );
        let m = Memory {
            usage: 100,
            inactive_file: 30,
            rss: 50,
            limit: Some(200),
        };
        assert_eq!((m.working_set(), m.available()), (70, Some(130)));
        let m = Memory {
            usage: 10,
            inactive_file: 30,
            rss: 5,
            limit: None,
        };
        assert_eq!((m.working_set(), m.available()), (0, None));
    }

    #[test]
    fn io_files_parse() {
        let v2 = parse_io_stat("254:0 rbytes=4096 wbytes=10485760 rios=1 wios=10 dbytes=0 dios=0\n8:0 rbytes=1 wbytes=2\n").unwrap();
        assert_eq!(
            v2[0],
            IoDevice {
                major: 254,
                minor: 0,
                read_bytes: 4096,
                write_bytes: 10_485_760
            }
        );
        assert_eq!(v2.len(), 2);
        assert!(parse_io_stat("254 rbytes=1\n").is_err());
        assert!(parse_io_stat("254:0 rbytes\n").is_err());
        let v1 = parse_blkio("254:0 Read 10\n254:0 Write 4198400\n254:0 Sync 1\n254:0 Async 0\n254:0 Discard 0\n254:0 Total 4198410\n8:16 Read 5\nTotal 4198415\n").unwrap();
        assert_eq!(
            v1,
            vec![
                IoDevice {
                    major: 254,
                    minor: 0,
                    read_bytes: 10,
                    write_bytes: 4_198_400
                },
                IoDevice {
                    major: 8,
                    minor: 16,
                    read_bytes: 5,
                    write_bytes: 0
                },
            ]
        );
        assert_eq!(parse_blkio("Total 0\n").unwrap(), vec![]);
        assert!(parse_blkio("254:0 Read\n").is_err());
        assert!(parse_blkio("x:0 Read 1\n").is_err());
    }

    #[test]
    fn cputime_is_split_to_the_total_and_stays_monotonic() {
        let mut prev = (0, 0);
        // v1: tick-based modes sum above the precise total; the split sums to the total.
        assert_eq!(
            adjust_cputime(1_121_625_539, 1_095_976_160, 31_952_060, &mut prev),
            (1_089_852_022, 31_773_517)
        );
        // Already consistent (v2): unchanged.
        let mut p2 = (0, 0);
        assert_eq!(adjust_cputime(1000, 700, 300, &mut p2), (700, 300));
        // A shift in proportion never makes a mode go backwards.
        let mut p3 = (0, 0);
        let (u1, s1) = adjust_cputime(1000, 500, 500, &mut p3);
        let (u2, s2) = adjust_cputime(1100, 1000, 100, &mut p3);
        assert!(
            u2 >= u1 && s2 >= s1 && u2 + s2 == 1100,
            "{u1} {s1} {u2} {s2}"
        );
        // No progress in the total: the previous split.
        assert_eq!(adjust_cputime(1100, 5, 5, &mut p3), (u2, s2));
        let mut p4 = (0, 0);
        assert_eq!(adjust_cputime(10, 0, 0, &mut p4), (10, 0));
    }

    #[test]
    fn single_values_parse() {
        assert_eq!(parse_u64("42\n").unwrap(), 42);
        assert!(parse_u64("").is_err());
        assert_eq!(parse_first_pid("123\n456\n").unwrap(), Some(123));
        assert_eq!(parse_first_pid("").unwrap(), None);
        assert!(parse_first_pid("abc").is_err());
    }

    #[test]
    fn detection_refuses_a_directory_without_cgroups() {
        let dir = tempfile::tempdir().unwrap();
        let e = Hierarchy::detect(dir.path()).unwrap_err().to_string();
        assert!(
            e.contains("no cgroup hierarchy") && e.contains("cgroup_root"),
            "{e}"
        );
        let e = Hierarchy::detect(&dir.path().join("missing"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("cannot read the cgroup root"), "{e}");
    }
}
