//! Filesystem space from the host's mount table and `statvfs`.
//!
//! The mount table is `{proc}/self/mountinfo` when the proc root is `/proc`, and
//! `{proc}/1/mountinfo` otherwise, so an agent in a container with the host's `/proc` mounted
//! elsewhere sees the host's mounts (PID 1's mount namespace). Mountpoints are octal-escaped
//! by the kernel (`\040` for a space) and unescaped here. `statvfs` runs on
//! `rootfs + mountpoint`.
//!
//! Each device (mountinfo's `major:minor`) is reported once, at its first mount in the table:
//! bind mounts and repeated mounts would otherwise repeat the same space. A mount that
//! vanished or whose `statvfs` fails is skipped; after recording the others the collector
//! returns one error naming how many failed and the first one.
//!
//! The table is parsed only when it changed: on procfs the collector keeps the `mountinfo`
//! file open and polls it (`POLLPRI`, which the kernel raises once per change of the mount
//! namespace's table, without reading it); each cycle then costs one `poll` and one `statvfs`
//! per reported device instead of formatting, reading and parsing the whole table (hundreds of
//! lines on a container host). Where the file is not on procfs (fixture trees), it is read
//! every cycle. `system.filesystem.mode` is `ro` when the table's options say so or when
//! `statvfs` reports `ST_RDONLY` this cycle (a filesystem the kernel remounted read-only after
//! errors, `errors=remount-ro`, changes no mount table).
//!
//! Known limitation: `statvfs` on a hung network filesystem (NFS, CIFS) blocks the calling
//! thread until the server answers; exclude such types or mountpoints if that matters.

use std::borrow::Cow;
use std::collections::HashSet;
use std::fs::File;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use faultline_exporters::model::{Attributes, Batch, MetricDesc};

use super::{FilesystemConfig, HostConfigError, NameFilter, unescape_octal};
use crate::collectors::{CollectError, Collector, Context, parse_error, read_into};

/// `system.filesystem.usage`.
pub const FS_USAGE: MetricDesc = MetricDesc::updown(
    "system.filesystem.usage",
    "By",
    "Filesystem space by state: used, free (available to unprivileged users) and reserved (for root).",
);
/// `system.filesystem.utilization`.
pub const FS_UTILIZATION: MetricDesc = MetricDesc::gauge(
    "system.filesystem.utilization",
    "1",
    "Share of the filesystem's size in each state (0 to 1).",
);
/// `system.filesystem.limit`.
pub const FS_LIMIT: MetricDesc = MetricDesc::updown(
    "system.filesystem.limit",
    "By",
    "Total size of the filesystem.",
);

/// Every metric this collector emits.
pub const DESCS: &[&MetricDesc] = &[&FS_USAGE, &FS_UTILIZATION, &FS_LIMIT];

/// One line of `mountinfo`, with escapes undone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mount<'a> {
    /// `major:minor` of the device.
    pub dev_id: &'a str,
    /// Where it is mounted, as the host sees it.
    pub mountpoint: Cow<'a, str>,
    /// Filesystem type (`ext4`, `xfs`, `tmpfs`).
    pub fstype: &'a str,
    /// Mount source (`/dev/sda1`, `tmpfs`, `server:/export`).
    pub source: Cow<'a, str>,
    /// Mounted read-only (per-mount or superblock option `ro`).
    pub read_only: bool,
}

/// Parses one `mountinfo` line:
/// `id parent major:minor root mountpoint options [optional…] - fstype source superoptions`.
pub fn parse_mountinfo_line(line: &str) -> Result<Mount<'_>, String> {
    let (left, right) = line
        .split_once(" - ")
        .ok_or_else(|| format!("no \" - \" separator in {line:?}"))?;
    let mut l = left.split(' ');
    let (Some(_id), Some(_parent), Some(dev_id), Some(_root), Some(mp), Some(opts)) =
        (l.next(), l.next(), l.next(), l.next(), l.next(), l.next())
    else {
        return Err(format!("short line {line:?}"));
    };
    let mut r = right.split(' ');
    let (Some(fstype), Some(source)) = (r.next(), r.next()) else {
        return Err(format!("no filesystem type and source in {line:?}"));
    };
    let super_opts = r.next().unwrap_or("");
    let ro = |o: &str| o.split(',').any(|x| x == "ro");
    Ok(Mount {
        dev_id,
        mountpoint: unescape_octal(mp),
        fstype,
        source: unescape_octal(source),
        read_only: ro(opts) || ro(super_opts),
    })
}

/// Parses a whole `mountinfo` file.
pub fn parse_mountinfo(text: &str) -> Result<Vec<Mount<'_>>, String> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(parse_mountinfo_line)
        .collect()
}

/// Space of one filesystem, in bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Space {
    /// Total size.
    pub total: u64,
    /// Used by files.
    pub used: u64,
    /// Free for unprivileged users.
    pub free: u64,
    /// Free but reserved for root.
    pub reserved: u64,
}

/// Splits statvfs block counts into states (pure, so tests can feed numbers).
pub fn space(fragment_size: u64, blocks: u64, blocks_free: u64, blocks_available: u64) -> Space {
    let bfree = blocks_free.min(blocks);
    let bavail = blocks_available.min(bfree);
    Space {
        total: blocks.saturating_mul(fragment_size),
        used: (blocks - bfree).saturating_mul(fragment_size),
        free: bavail.saturating_mul(fragment_size),
        reserved: (bfree - bavail).saturating_mul(fragment_size),
    }
}

/// The space of the filesystem at `path`, and whether it is read-only now (the mount's flag or
/// the superblock's: a filesystem the kernel remounted read-only after errors shows here, not
/// in a changed mount table).
fn statvfs_space(path: &Path) -> Result<(Space, bool), nix::Error> {
    let s = nix::sys::statvfs::statvfs(path)?;
    let read_only = s.flags().contains(nix::sys::statvfs::FsFlags::ST_RDONLY);
    // The field types differ between libc targets (u32/u64); widen all to u64.
    #[allow(clippy::useless_conversion)]
    Ok((
        space(
            u64::from(s.fragment_size()),
            u64::from(s.blocks()),
            u64::from(s.blocks_free()),
            u64::from(s.blocks_available()),
        ),
        read_only,
    ))
}

/// One mount to report, as parsed from the table.
#[derive(Debug)]
struct Reported {
    mountpoint: String,
    /// `rootfs + mountpoint`, what `statvfs` is asked about.
    target: PathBuf,
    /// device, mountpoint, type (the mode is added each cycle).
    base: Attributes,
    /// Read-only by the mount table's options.
    read_only: bool,
}

/// Collector of `system.filesystem.*`.
#[derive(Debug)]
pub struct FilesystemCollector {
    mountpoints: NameFilter,
    types: NameFilter,
    buf: String,
    seen: HashSet<String>,
    /// The mounts to report, from the last parse of the table.
    mounts: Vec<Reported>,
    /// The table kept open on procfs to poll for changes, with the path it was opened at;
    /// `None` re-reads the table at the next cycle.
    watch: Option<(PathBuf, File)>,
}

impl FilesystemCollector {
    /// A collector for `cfg`; fails on an invalid glob.
    pub fn new(cfg: &FilesystemConfig) -> Result<Self, HostConfigError> {
        Ok(Self {
            mountpoints: NameFilter::new(
                &cfg.include_mountpoints,
                &cfg.exclude_mountpoints,
                "filesystem.include_mountpoints",
                "filesystem.exclude_mountpoints",
                true,
            )?,
            types: NameFilter::new(
                &cfg.include_types,
                &cfg.exclude_types,
                "filesystem.include_types",
                "filesystem.exclude_types",
                false,
            )?,
            buf: String::new(),
            seen: HashSet::new(),
            mounts: Vec::new(),
            watch: None,
        })
    }

    /// Whether the table at `path` may have changed since it was last parsed.
    fn table_changed(&self, path: &Path) -> bool {
        use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
        let Some((watched, file)) = &self.watch else {
            return true;
        };
        if watched != path {
            return true;
        }
        let mut fds = [PollFd::new(file.as_fd(), PollFlags::POLLPRI)];
        match poll(&mut fds, PollTimeout::ZERO) {
            Ok(_) => fds[0]
                .revents()
                .is_none_or(|r| r.intersects(PollFlags::POLLPRI | PollFlags::POLLERR)),
            Err(_) => true,
        }
    }

    /// Reads and parses the table at `path` into `self.mounts`.
    fn reload(&mut self, ctx: &Context, path: &Path) -> Result<(), CollectError> {
        // Opened before the read: a change in between is seen at the next poll (one extra
        // read), never missed.
        self.watch = File::open(path)
            .ok()
            .filter(on_procfs)
            .map(|f| (path.to_path_buf(), f));
        let parsed = self.parse(ctx, path);
        if parsed.is_err() {
            self.watch = None;
            self.mounts.clear();
        }
        parsed
    }

    fn parse(&mut self, ctx: &Context, path: &Path) -> Result<(), CollectError> {
        read_into(path, &mut self.buf)?;
        self.seen.clear();
        self.mounts.clear();
        for line in self.buf.lines() {
            if line.trim().is_empty() {
                continue;
            }
            let m = parse_mountinfo_line(line).map_err(|e| parse_error(path, e))?;
            if !self.types.allows(m.fstype) || !self.mountpoints.allows(&m.mountpoint) {
                continue;
            }
            if self.seen.contains(m.dev_id) {
                continue;
            }
            self.seen.insert(m.dev_id.to_owned());
            let target = ctx.roots.host_path(&m.mountpoint);
            let mountpoint = m.mountpoint.into_owned();
            // A later mount at the same point hides the earlier one (the table lists mounts in
            // the order they were made): its figures are not readable by path, and statvfs
            // would report the top one's twice.
            self.mounts.retain(|r| r.mountpoint != mountpoint);
            let base = Attributes::of([
                ("system.device", m.source.into_owned().into()),
                ("system.filesystem.mountpoint", mountpoint.clone().into()),
                ("system.filesystem.type", m.fstype.to_owned().into()),
            ]);
            self.mounts.push(Reported {
                mountpoint,
                target,
                base,
                read_only: m.read_only,
            });
        }
        Ok(())
    }
}

/// Whether `f` is on procfs (whose mount tables can be polled for changes).
fn on_procfs(f: &File) -> bool {
    nix::sys::statfs::fstatfs(f)
        .is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::PROC_SUPER_MAGIC)
}

impl Collector for FilesystemCollector {
    fn name(&self) -> &'static str {
        "host.filesystem"
    }

    fn collect(&mut self, ctx: &Context, batch: &mut Batch) -> Result<(), CollectError> {
        let path = if ctx.roots.proc == Path::new("/proc") {
            ctx.roots.proc("self/mountinfo")
        } else {
            ctx.roots.proc("1/mountinfo")
        };
        if self.table_changed(&path) {
            self.reload(ctx, &path)?;
        }
        let mut failed = 0usize;
        let mut first_failure = None;
        let host = batch.host();
        for m in &self.mounts {
            let (s, read_only_now) = match statvfs_space(&m.target) {
                Ok(s) => s,
                Err(e) => {
                    failed += 1;
                    first_failure.get_or_insert_with(|| {
                        (m.mountpoint.clone(), format!("{}: {e}", m.target.display()))
                    });
                    continue;
                }
            };
            let mode = if m.read_only || read_only_now {
                "ro"
            } else {
                "rw"
            };
            let base = m.base.plus("system.filesystem.mode", mode);
            for (state, bytes) in [("used", s.used), ("free", s.free), ("reserved", s.reserved)] {
                let attrs = base.plus("system.filesystem.state", state);
                if s.total > 0 {
                    host.record(
                        &FS_UTILIZATION,
                        attrs.clone(),
                        bytes as f64 / s.total as f64,
                    );
                }
                host.record(&FS_USAGE, attrs, bytes);
            }
            host.record(&FS_LIMIT, base, s.total);
        }
        match first_failure {
            None => Ok(()),
            Some((mountpoint, first)) => Err(CollectError::Sys {
                what: "statvfs",
                subject: mountpoint,
                reason: format!("{failed} mount(s) skipped, first: {first}"),
            }),
        }
    }
}

#[cfg(test)]
mod tests;
