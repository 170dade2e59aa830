//! The cgroup filesystem: which layout the host uses, where the containers are, and what
//! their control files say.
//!
//! - **Layout** ([`Hierarchy::detect`], once at start): *v2* when the root itself is a cgroup2
//!   mount (`cgroup.controllers` in it); *hybrid* when v1 controllers are mounted under the
//!   root and a cgroup2 mount is at `unified/`; *v1* when only v1 controllers are there. A v1
//!   controller directory may be shared (`cpu,cpuacct`); it is found through its name or a
//!   comma-joined name.
//! - **Walking** ([`Hierarchy::walk`], in the cycles after a cgroup directory appeared or went
//!   away, see [`walk_watch`]): one directory walk of the hierarchy that
//!   holds the containers (v2: the root; v1/hybrid: the `memory` controller, else
//!   `cpuacct`, `pids`, `name=systemd`). A directory whose path [`super::paths::recognise`]s
//!   as a container is reported and not descended into; directory types come from `readdir`,
//!   so the walk costs one `getdents` per non-container directory and no `stat`.
//! - **Reading** ([`Hierarchy::read`], `read.rs`): v2 files in the container's directory; v1
//!   files in each controller's directory for the same relative path; in hybrid mode the
//!   pressure files come from the `unified/` directory when the runtime created one there.
//!   Directories and files are opened relative to descriptors the container may keep between
//!   cycles ([`KeptFds`], `files.rs`).
//! - **Parsing** (`parse.rs`): pure `parse_*` functions over file text, tested with fixture
//!   files.
//!
//! This module holds the layout, the walk and the types a read fills in.
//!
//! A control file that does not exist (controller not enabled, older kernel) leaves its
//! figure out; a container that disappears while being read is reported as
//! [`ReadOutcome::Gone`] and skipped for the cycle.

use std::io;
use std::os::unix::fs::{DirEntryExt, MetadataExt};
use std::path::{Path, PathBuf};

use crate::collectors::CollectError;
use crate::collectors::host::pressure::Pressure;

use super::paths::{self, ContainerPath};

mod files;
mod parse;
mod read;
#[cfg(test)]
mod tests;
pub mod walk_watch;

pub use crate::collectors::file::ReadBuf;
pub use files::{KeepBudget, KeptFds, kept_file_bytes};
pub use parse::{
    adjust_cputime, parse_blkio, parse_blkio_into, parse_cfs_quota, parse_cpu_max,
    parse_cpu_stat_v1, parse_cpu_stat_v2, parse_cpuacct_stat, parse_first_pid, parse_io_stat,
    parse_io_stat_into, parse_limit, parse_memory_stat, parse_oom_kill, parse_u64,
};

/// Deepest directory level the walk descends to (kubepods/qos/pod/container is 4).
const MAX_DEPTH: usize = 12;

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
    /// `memory.stat` was not read ([`Reads::memory_stat`] said its figures stand): the
    /// memory figures' `inactive_file` and `rss` are to be filled in from the last read.
    pub memory_stat_skipped: bool,
    /// No CPU time was used since [`Reads::unless_cpu_total`]: `pids.current` was not read,
    /// nor on v1 `cpuacct.stat` and the blkio file; the task count, and on v1 the user and
    /// system times and `io`, are to be filled in from the last read.
    pub idle_skipped: bool,
    /// The pressure files read ([`Reads::pressure`], but not `cpu.pressure` where
    /// `idle_skipped`: no task of the container ran, so none waited for a CPU); the others'
    /// figures are to be filled in from the last read.
    pub pressure_read: [bool; 3],
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
    /// The PSI files (`cpu.pressure`, `memory.pressure`, `io.pressure`), each.
    pub pressure: [bool; 3],
    /// The limit files (CPU quota, memory and task limits), which the collector refreshes
    /// only every few cycles.
    pub limits: bool,
    /// `cgroup.procs`, for the process whose network namespace is read; the collector
    /// keeps the pid between refreshes (see `ContainerCollector`).
    pub pid: bool,
    /// The OOM-kill count: v2 `memory.events`, v1 `memory.oom_control`, which the collector
    /// reads only when it may have changed (see `oom_watch`, `memo`).
    pub oom_events: bool,
    /// v1 `cpu.stat` (CFS throttling), which the collector reads only while a CPU quota is
    /// set, and as a backstop (v2's `cpu.stat` holds the usage too and is always read).
    pub throttling: bool,
    /// Whether `memory.stat` is read.
    pub memory_stat: MemoryStatDue,
    /// Skip `pids.current`, and on v1 `cpuacct.stat` (the user/system split) and the blkio
    /// file, when the total CPU time (`cpu.stat`, `cpuacct.usage`, read first) is this one,
    /// the one they were last read at: no task of the container has run since (see the
    /// container collector's `memo` for why none of them moved). `None`: read them.
    pub unless_cpu_total: Option<u64>,
}

/// Whether a read takes `memory.stat`, the costliest control file (the kernel formats some 40
/// lines per read, twice as many on v1, from hierarchical sums).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemoryStatDue {
    /// Read it.
    Always,
    /// Read it unless the container's memory usage and total CPU time are these: the figures
    /// of its last read. A container that used no CPU time and whose usage did not move has
    /// neither faulted, allocated, freed nor touched a page of its own since.
    UnlessUnchanged {
        /// `memory.current` / `memory.usage_in_bytes` at the last read.
        usage: u64,
        /// Total CPU time at the last read, nanoseconds.
        cpu_total_ns: u64,
    },
}

impl MemoryStatDue {
    /// Whether `memory.stat` is read, now that usage and CPU time are known.
    pub fn wants(self, usage: u64, cpu_total_ns: Option<u64>) -> bool {
        match self {
            Self::Always => true,
            Self::UnlessUnchanged {
                usage: u,
                cpu_total_ns: c,
            } => usage != u || cpu_total_ns != Some(c),
        }
    }
}

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
        self.walk_watched(out, None).map(|_| ())
    }

    /// [`Hierarchy::walk`], adding a watch in `inotify` on every directory listed (see
    /// [`walk_watch`]); true when every one holds a watch.
    pub fn walk_watched(
        &self,
        out: &mut Vec<Found>,
        inotify: Option<&nix::sys::inotify::Inotify>,
    ) -> Result<bool, CollectError> {
        out.clear();
        let Some(root) = self.walk_root() else {
            return Ok(inotify.is_some());
        };
        let mut rel = String::new();
        let mut watching = Watching {
            inotify,
            complete: inotify.is_some(),
        };
        walk_dir(root, &mut rel, 0, out, &mut watching).map_err(|source| CollectError::Read {
            path: root.to_path_buf(),
            source,
        })?;
        Ok(watching.complete)
    }
}

/// The watches a walk sets, and whether each directory got one.
struct Watching<'a> {
    inotify: Option<&'a nix::sys::inotify::Inotify>,
    complete: bool,
}

fn walk_dir(
    dir: &Path,
    rel: &mut String,
    depth: usize,
    out: &mut Vec<Found>,
    w: &mut Watching<'_>,
) -> io::Result<()> {
    if depth > MAX_DEPTH {
        return Ok(());
    }
    if let Some(inotify) = w.inotify
        && walk_watch::watch(inotify, dir).is_err()
    {
        // One directory without a watch: the set is incomplete, walk every cycle.
        w.inotify = None;
        w.complete = false;
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
            walk_dir(&entry.path(), rel, depth + 1, out, w)?;
        }
        rel.truncate(len);
    }
    Ok(())
}

/// Modification time of a directory in Unix nanoseconds: for a cgroup directory, the time it
/// was created (the kernel sets it at creation; containers do not create child cgroups).
pub fn dir_time_unix_nanos(path: &Path) -> io::Result<u64> {
    let m = std::fs::metadata(path)?;
    let secs = u64::try_from(m.mtime()).unwrap_or(0);
    let nanos = u64::try_from(m.mtime_nsec()).unwrap_or(0);
    Ok(secs.saturating_mul(1_000_000_000).saturating_add(nanos))
}
