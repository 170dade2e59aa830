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

use crate::collectors::file::{ReadBuf, read_at_start};
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

/// Kernel memory an open cgroup control file holds once it has been read: the `seq_file`
/// buffer (a page) and the open file's own structures (`file`, `kernfs_open_file`,
/// `seq_file`): 4 436 B per descriptor measured on 4 KiB pages (2 000 descriptors of
/// `memory.stat` read once each raised the memory cgroup's `memory.kmem.usage_in_bytes` by
/// 8.9 MB, and it fell back on close). On a kernel with larger pages the buffer is larger.
pub fn kept_file_bytes() -> u64 {
    let page = nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
        .ok()
        .flatten()
        .and_then(|p| u64::try_from(p).ok())
        .unwrap_or(4096);
    page + 340
}

/// Skipped by this many reads in a row, a kept file is closed and its room given to files
/// read more often: fewer than the period of the files read with the limits
/// ([`LIMITS_EVERY`](crate::collectors::container::LIMITS_EVERY)), so that a file read only
/// with them, or only now and then, does not hold room.
pub(super) const RELEASE_AFTER_SKIPS: u8 = 3;

/// What the collector lets its containers keep open between cycles, shared by all of them:
/// descriptors (directories and files, from the open-file limit) and, for files, kernel
/// memory (an open cgroup file that has been read holds [`kept_file_bytes`]).
///
/// A container keeps its directories when it is first seen and the descriptors allow
/// ([`KeepBudget::dirs_for_new`]). Files are kept as they prove hot: a file opened in a read
/// is kept if it was read in the container's previous read too (every cycle's files are,
/// from their second read; files read only now and then, with the limits or only while they
/// may have moved, are not) and both budgets have room, and a kept file is closed again after
/// [`RELEASE_AFTER_SKIPS`] reads that skipped it, giving its room back. With
/// `containers.keep_files_open: true` the files' budget is unbounded (the descriptors' is
/// not).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeepBudget {
    /// Descriptors containers may keep.
    pub fds: usize,
    /// Descriptors kept now (directories and files).
    pub fds_used: usize,
    /// Files containers may keep (their kernel memory over [`kept_file_bytes`]).
    pub files: usize,
    /// Files kept now.
    pub files_used: usize,
}

impl KeepBudget {
    /// Nothing may be kept (a container's read of the moment, tests).
    pub fn none() -> Self {
        Self {
            fds: 0,
            fds_used: 0,
            files: 0,
            files_used: 0,
        }
    }

    /// Whether a container first seen now keeps its directories, and the descriptors that
    /// charges: all of them ([`Hierarchy::kept_dirs_per_container`]) while they fit, else
    /// none.
    pub fn dirs_for_new(&mut self, hierarchy: &Hierarchy) -> (bool, usize) {
        let dirs = hierarchy.kept_dirs_per_container();
        if dirs >= 1 && self.fds_used + dirs <= self.fds {
            self.fds_used += dirs;
            (true, dirs)
        } else {
            (false, 0)
        }
    }

    /// Takes room for one more kept file, read in the previous read too (`hot`).
    pub(in crate::collectors::container) fn take_file(&mut self, hot: bool) -> bool {
        let ok = hot && self.fds_used < self.fds && self.files_used < self.files;
        if ok {
            self.fds_used += 1;
            self.files_used += 1;
        }
        ok
    }

    /// Gives back the room of `n` kept files.
    pub(in crate::collectors::container) fn give_files(&mut self, n: usize) {
        self.fds_used = self.fds_used.saturating_sub(n);
        self.files_used = self.files_used.saturating_sub(n);
    }

    /// Takes room for one more kept descriptor that holds no buffer (an `O_PATH` directory).
    pub(in crate::collectors::container) fn take_fd(&mut self) -> bool {
        let ok = self.fds_used < self.fds;
        if ok {
            self.fds_used += 1;
        }
        ok
    }

    /// Gives back the room of `n` descriptors taken with [`Self::take_fd`].
    pub(in crate::collectors::container) fn give_fds(&mut self, n: usize) {
        self.fds_used = self.fds_used.saturating_sub(n);
    }
}

/// A container's descriptors kept between cycles: its directory in each hierarchy (`O_PATH`:
/// the unified one on v2, each controller's on v1, both on hybrid), so that a file is opened
/// with a one-component lookup instead of a walk down the container's deep path, and the
/// control files it reads in cycle after cycle, so that a cycle reads each with one `pread`
/// from offset 0 instead of `openat` + `read` + `close` (see [`KeepBudget`] for which).
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
/// state is dropped, which gives its room back ([`KeptFds::release`]).
///
/// Cost, per container ([`Hierarchy::kept_dirs_per_container`],
/// [`Hierarchy::kept_fds_per_container`]): the directories, 1 on v2, up to 5 on v1 (4 with
/// `cpu,cpuacct` co-mounted), up to 6 on hybrid, and at most the files read every cycle, v2 9
/// (6 without pressure), v1 8, hybrid 11 (8 without pressure). An `O_PATH` descriptor holds
/// no buffer in the kernel, but an open and read cgroup file keeps its `seq_file` page
/// ([`kept_file_bytes`]), charged to the agent's memory cgroup: hence the files' own budget.
#[derive(Debug, Default)]
pub struct KeptFds {
    keep_dirs: bool,
    dirs: [Option<Dir>; dir::COUNT],
    files: [Option<std::fs::File>; slot::COUNT],
    /// The slots read in this read, and in the previous one (bits).
    read_now: u16,
    read_before: u16,
    /// Reads in a row that skipped each kept file.
    skipped: [u8; slot::COUNT],
}

impl KeptFds {
    /// Descriptors that [`Hierarchy::read`] keeps open between cycles: the directories if
    /// `keep_dirs`, and files as the budget allows.
    pub fn new(keep_dirs: bool) -> Self {
        Self {
            keep_dirs,
            ..Self::default()
        }
    }

    /// Whether this container keeps its directories.
    pub fn keeps_dirs(&self) -> bool {
        self.keep_dirs
    }

    /// How many descriptors are held open now.
    pub fn open_count(&self) -> usize {
        self.dirs.iter().flatten().count() + self.kept_files()
    }

    /// Whether the file of `slot` is held open now.
    #[cfg(test)]
    pub(super) fn keeps(&self, slot: usize) -> bool {
        self.files[slot].is_some()
    }

    /// How many files are held open now.
    pub fn kept_files(&self) -> usize {
        self.files.iter().flatten().count()
    }

    /// Closes every kept file and gives its room back to `budget` (the directories' charge
    /// is the caller's, who made it).
    pub fn release(&mut self, budget: &mut KeepBudget) {
        budget.give_files(self.kept_files());
        self.files = Default::default();
    }

    /// Before a read: this read's files start a new record of which were read.
    pub(super) fn begin_read(&mut self) {
        self.read_before = self.read_now;
        self.read_now = 0;
    }

    /// The files of the container's directory in hierarchy (or v1 controller) `root`, kept in
    /// directory slot `dir` ([`dir`]); the directory is opened only if a file has no kept
    /// descriptor, and kept for the next cycle if this container keeps its directories (see
    /// [`KeptFds::end_read`]). Files may be kept within `budget`.
    pub(super) fn files<'a>(
        &'a mut self,
        budget: &'a mut KeepBudget,
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
            read_now: &mut self.read_now,
            read_before: self.read_before,
            budget,
        }
    }

    /// At the end of a read: closes the directories opened for it if this container does not
    /// keep them, and the kept files this read and the ones before it skipped
    /// ([`RELEASE_AFTER_SKIPS`]), giving their room back to `budget`.
    pub(super) fn end_read(&mut self, budget: &mut KeepBudget) {
        if !self.keep_dirs {
            self.dirs = Default::default();
        }
        for (i, (file, skipped)) in self.files.iter_mut().zip(&mut self.skipped).enumerate() {
            if file.is_none() || self.read_now & (1 << i) != 0 {
                *skipped = 0;
                continue;
            }
            *skipped += 1;
            if *skipped >= RELEASE_AFTER_SKIPS {
                *file = None;
                *skipped = 0;
                budget.give_files(1);
            }
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
    read_now: &'a mut u16,
    read_before: u16,
    budget: &'a mut KeepBudget,
}

impl Files<'_> {
    /// The directory, opened now if it was not; `None` when it does not exist.
    fn dir(&mut self) -> Result<Option<&Dir>, CollectError> {
        if self.dir.is_none() && !self.tried {
            self.tried = true;
            *self.dir = match self.root {
                Some(r) => Dir::open(&r.join(self.rel))?,
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
    /// if there is one; `Ok(false)` when it does not exist. A file opened now is kept if the
    /// budget lets it ([`KeepBudget`]); files without a slot are opened and closed.
    fn read(
        &mut self,
        slot: Option<usize>,
        name: &str,
        buf: &mut ReadBuf,
    ) -> Result<bool, CollectError> {
        if let Some(s) = slot {
            *self.read_now |= 1 << s;
            if let Some(f) = &self.kept[s] {
                match read_at_start(f, buf) {
                    Ok(true) => return Ok(true),
                    // Removed since the last cycle (`ENODEV`): look the name up again.
                    Ok(false) => {
                        self.kept[s] = None;
                        self.budget.give_files(1);
                    }
                    Err(source) => {
                        return Err(CollectError::Read {
                            path: self.path(name),
                            source,
                        });
                    }
                }
            }
        }
        let Some(dir) = self.dir()? else {
            return Ok(false);
        };
        let file = match dir.open_file(name) {
            Ok(Some(file)) => file,
            Ok(None) => return Ok(false),
            Err(source) => {
                return Err(CollectError::Read {
                    path: self.path(name),
                    source,
                });
            }
        };
        let found = read_at_start(&file, buf).map_err(|source| CollectError::Read {
            path: self.path(name),
            source,
        })?;
        if let (true, Some(s)) = (found, slot)
            && self.budget.take_file(self.read_before & (1 << s) != 0)
        {
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
/// one-component lookup instead of a walk down the whole (deep, under `kubepods`) path. It
/// holds the descriptor alone: at 1000 containers of six hierarchy directories each, a path
/// per directory would be 0.8 MiB of heap; errors name the path from the root and the
/// container's relative path instead ([`Files::path`]).
#[derive(Debug)]
pub(super) struct Dir {
    fd: OwnedFd,
}

/// `ENOENT`, or `ENODEV` from a cgroup being removed: the file or cgroup is not there.
fn is_absent(e: Errno) -> bool {
    matches!(e, Errno::ENOENT | Errno::ENODEV | Errno::ENOTDIR)
}

impl Dir {
    /// Opens `path`; `Ok(None)` when it does not exist.
    fn open(path: &Path) -> Result<Option<Self>, CollectError> {
        match openat(
            AT_FDCWD,
            path,
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        ) {
            Ok(fd) => Ok(Some(Self { fd })),
            Err(e) if is_absent(e) => Ok(None),
            Err(e) => Err(CollectError::Read {
                path: path.to_path_buf(),
                source: io::Error::from(e),
            }),
        }
    }

    /// Opens file `name` for reading; `Ok(None)` when it does not exist.
    fn open_file(&self, name: &str) -> io::Result<Option<std::fs::File>> {
        match openat(
            &self.fd,
            name,
            OFlag::O_RDONLY | OFlag::O_CLOEXEC,
            Mode::empty(),
        ) {
            Ok(fd) => Ok(Some(std::fs::File::from(fd))),
            Err(e) if is_absent(e) => Ok(None),
            Err(e) => Err(io::Error::from(e)),
        }
    }
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

    /// Directories one container keeps open, at most: v2 1, v1 one per mounted controller it
    /// reads (5; 4 with `cpu,cpuacct` co-mounted), hybrid those and the unified one. See
    /// [`KeptFds`].
    pub fn kept_dirs_per_container(&self) -> usize {
        self.dir_slots().count()
    }

    /// Descriptors one container keeps open at most (fewer where a file is absent or not read
    /// every cycle): its directories and the files that may be read every cycle, v2 6 (9 with
    /// pressure), v1 8, hybrid 8 (11 with pressure). See [`KeptFds`].
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
