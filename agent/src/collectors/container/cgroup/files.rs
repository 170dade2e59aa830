//! Opening and reading cgroup files: a container's directories opened once (`O_PATH`) and
//! its control files opened relative to them, and the descriptors a container keeps between
//! cycles ([`KeptFds`]) within the collector's budget. What is read, and in which layout, is
//! `read.rs`; what the text means is `parse.rs`.

use std::io;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{AT_FDCWD, OFlag, openat};
use nix::sys::stat::Mode;

use crate::collectors::file::{ReadBuf, read_at_start, read_to_end};
use crate::collectors::{CollectError, parse_error};

use super::{Hierarchy, Layout};
/// Slots of [`KeptFds`]: the control files read every cycle, each of which may keep its
/// descriptor between cycles. Files read every few cycles (limits, `cgroup.procs`) have no
/// slot and are opened when read.
pub(super) mod slot {
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

/// Slots of [`KeptFds`]'s directories: each hierarchy directory of a container, opened once
/// (`O_PATH`) and kept between cycles, so that a control file is opened with a one-component
/// lookup instead of a walk down the container's deep path. With `cpu,cpuacct` co-mounted the
/// two are one directory, kept in [`dir::CPUACCT`].
pub(super) mod dir {
    pub const UNIFIED: usize = 0;
    pub const CPU: usize = 1;
    pub const CPUACCT: usize = 2;
    pub const MEMORY: usize = 3;
    pub const BLKIO: usize = 4;
    pub const PIDS: usize = 5;
    pub const COUNT: usize = 6;
}

/// What a container keeps open between cycles (see [`KeptFds`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Keep {
    /// Nothing: every directory and file is opened and closed each cycle.
    Nothing,
    /// Its hierarchy directories (`O_PATH`): files are opened with a one-component lookup.
    Dirs,
    /// Its directories and every control file read every cycle.
    All,
}

/// A container's descriptors kept between cycles: its directory in each hierarchy (`O_PATH`:
/// the unified one on v2, each controller's on v1, both on hybrid), so that a file is opened
/// with a one-component lookup instead of a walk down the container's deep path, and the
/// control files read every cycle, so that a cycle reads each with one `pread` from offset 0
/// instead of `openat` + `read` + `close`.
///
/// cgroupfs generates a control file's content on each read from offset 0 of the same open
/// file (it is a `seq_file`: a read at offset 0 starts over), on v1 and v2 alike, so a kept
/// descriptor reports as fresh a figure as a new one. A file or cgroup removed while its
/// descriptor is kept reads as `ENODEV`: the descriptor is dropped and the name looked up
/// again in the same read (so a re-created file, for example a controller enabled again, is
/// found), and a gone cgroup is [`ReadOutcome::Gone`](super::ReadOutcome::Gone) as before
/// (a file opened in a kept directory of a removed cgroup is not found).
/// A directory removed and created again under the same name is a new container to the walk
/// (another inode), with a `KeptFds` of its own. Everything is closed when the container's
/// state is dropped.
///
/// Cost, per container ([`Hierarchy::kept_dirs_per_container`],
/// [`Hierarchy::kept_fds_per_container`]): the directories, 1 on v2, up to 5 on v1 (4 with
/// `cpu,cpuacct` co-mounted), up to 6 on hybrid; with [`Keep::All`] also the files, v2 9
/// (6 without pressure), v1 8, hybrid 11 (8 without pressure). An `O_PATH` descriptor holds
/// no buffer in the kernel, but an open and read cgroup file keeps its `seq_file` page: about
/// 4.4 KiB of kernel memory per kept file, charged to the agent's memory cgroup (measured on
/// this project's VM: 4 436 B per descriptor of `memory.stat`).
///
/// Kept only as far as the collector's descriptor budget allows (see `ContainerCollector`);
/// a container beyond it keeps its directories only, or nothing.
#[derive(Debug)]
pub struct KeptFds {
    keep: Keep,
    dirs: [Option<Dir>; dir::COUNT],
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
            dirs: Default::default(),
            files: Default::default(),
        }
    }

    /// What this container keeps.
    pub fn keep(&self) -> Keep {
        self.keep
    }

    /// How many descriptors are held open now.
    pub fn open_count(&self) -> usize {
        self.dirs.iter().flatten().count() + self.files.iter().flatten().count()
    }

    /// The files of the container's directory in hierarchy (or v1 controller) `root`, kept in
    /// directory slot `dir` ([`dir`]); the directory is opened only if a file has no kept
    /// descriptor, and kept for the next cycle unless this container keeps nothing (see
    /// [`KeptFds::end_read`]).
    pub(super) fn files<'a>(
        &'a mut self,
        dir: usize,
        root: Option<&'a Path>,
        rel: &'a str,
    ) -> Files<'a> {
        Files {
            root,
            rel,
            dir: &mut self.dirs[dir],
            tried: false,
            kept: &mut self.files,
            keep_files: self.keep == Keep::All,
        }
    }

    /// At the end of a read: closes the directories opened for it if this container keeps
    /// nothing.
    pub(super) fn end_read(&mut self) {
        if self.keep == Keep::Nothing {
            self.dirs = Default::default();
        }
    }
}

/// One cgroup directory of a container as one read sees it: the descriptors kept from the
/// last cycle first; the directory itself is opened only when a file has to be opened.
pub(super) struct Files<'a> {
    /// The hierarchy (or v1 controller) root; `None` when it is not mounted.
    root: Option<&'a Path>,
    rel: &'a str,
    /// The directory, kept from the last cycle or opened in this read.
    dir: &'a mut Option<Dir>,
    /// Whether this read has looked the directory up (so that an absent one is looked up
    /// once per read).
    tried: bool,
    kept: &'a mut [Option<std::fs::File>; slot::COUNT],
    keep_files: bool,
}

impl Files<'_> {
    /// The directory, opened now if it was not; `None` when it does not exist.
    fn dir(&mut self) -> Result<Option<&Dir>, CollectError> {
        if self.dir.is_none() && !self.tried {
            self.tried = true;
            *self.dir = match self.root {
                Some(r) => Dir::open(r.join(self.rel))?,
                None => None,
            };
        }
        Ok(self.dir.as_ref())
    }

    pub(super) fn path(&self, name: &str) -> PathBuf {
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
    pub(super) fn parse<T>(
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

/// A cgroup directory opened once (`O_PATH`), so each control file is opened with a
/// one-component lookup instead of a walk down the whole (deep, under `kubepods`) path.
#[derive(Debug)]
pub(super) struct Dir {
    fd: OwnedFd,
    path: PathBuf,
}

/// `ENOENT`, or `ENODEV` from a cgroup being removed: the file or cgroup is not there.
fn is_absent(e: Errno) -> bool {
    matches!(e, Errno::ENOENT | Errno::ENODEV | Errno::ENOTDIR)
}

impl Dir {
    /// Opens `path`; `Ok(None)` when it does not exist.
    pub(super) fn open(path: PathBuf) -> Result<Option<Self>, CollectError> {
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
    pub(super) fn parse<T>(
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

impl Hierarchy {
    /// The distinct directories a container has in this hierarchy (each a [`dir`] slot):
    /// v2 the unified one; v1 each mounted controller's (`cpu,cpuacct` co-mounted: one);
    /// hybrid both.
    pub(super) fn dir_slots(&self) -> impl Iterator<Item = usize> + '_ {
        let v1 = matches!(self.layout, Layout::V1 | Layout::Hybrid);
        let co_mounted = self.v1.cpu == self.v1.cpuacct;
        [
            (dir::UNIFIED, self.unified.is_some()),
            (dir::CPU, v1 && self.v1.cpu.is_some() && !co_mounted),
            (dir::CPUACCT, v1 && self.v1.cpuacct.is_some()),
            (dir::MEMORY, v1 && self.v1.memory.is_some()),
            (dir::BLKIO, v1 && self.v1.blkio.is_some()),
            (dir::PIDS, v1 && self.v1.pids.is_some()),
        ]
        .into_iter()
        .filter_map(|(slot, has)| has.then_some(slot))
    }

    /// Directories one container keeps open with [`Keep::Dirs`], at most: v2 1, v1 one per
    /// mounted controller it reads (5; 4 with `cpu,cpuacct` co-mounted), hybrid those and
    /// the unified one. See [`KeptFds`].
    pub fn kept_dirs_per_container(&self) -> usize {
        self.dir_slots().count()
    }

    /// Descriptors one container keeps open with [`Keep::All`], at most (fewer where a file
    /// is absent): its directories and the files read every cycle, v2 6 (9 with pressure),
    /// v1 8, hybrid 8 (11 with pressure). See [`KeptFds`].
    pub fn kept_fds_per_container(&self, pressure: bool) -> usize {
        let psi = if pressure { slot::PRESSURE.len() } else { 0 };
        let files = match self.layout {
            Layout::V2 => 6 + psi,
            // cpuacct.usage and .stat, cpu.stat, memory.usage_in_bytes, .stat and
            // .oom_control, one of the two blkio files, pids.current.
            Layout::V1 => 8,
            Layout::Hybrid => 8 + psi,
        };
        self.kept_dirs_per_container() + files
    }
}
