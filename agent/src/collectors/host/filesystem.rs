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
mod tests {
    use super::*;
    use crate::collectors::Roots;
    use crate::collectors::host::test_support::{batch, ctx, metric, read, roots, value};

    #[test]
    fn real_mountinfo_parses() {
        let text = read("real", "proc/1/mountinfo");
        let mounts = parse_mountinfo(&text).unwrap();
        let root = mounts.iter().find(|m| m.mountpoint == "/").unwrap();
        assert_eq!(root.fstype, "ext4");
        assert!(!root.read_only);
        assert!(mounts.iter().any(|m| m.read_only));
        assert!(parse_mountinfo_line("1 2 0:1 / /x rw").is_err());
    }

    #[test]
    fn escaped_mountpoints_are_unescaped() {
        let m = parse_mountinfo_line(
            "50 27 8:17 / /mnt/my\\040disk rw,relatime shared:5 master:1 - ext4 /dev/sdb1 rw",
        )
        .unwrap();
        assert_eq!(m.mountpoint, "/mnt/my disk");
        assert_eq!(m.source, "/dev/sdb1");
        assert_eq!(m.dev_id, "8:17");
        let ro = parse_mountinfo_line("51 27 8:18 / /ro rw - ext4 /dev/sdb2 ro").unwrap();
        assert!(ro.read_only);
    }

    #[test]
    fn space_states_sum_to_total() {
        let s = space(4096, 1000, 300, 250);
        assert_eq!(s.used + s.free + s.reserved, s.total);
        assert_eq!(s.reserved, 50 * 4096);
        // Inconsistent counts (seen on some FUSE filesystems) do not underflow.
        let s = space(512, 10, 20, 30);
        assert_eq!((s.used, s.reserved, s.free), (0, 0, 5120));
    }

    /// Builds a rootfs with the fixture's non-pseudo mountpoints as directories, except
    /// `missing`, and runs the collector.
    fn run_with_rootfs(
        fixture: &str,
        missing: &str,
    ) -> (faultline_exporters::model::Batch, Result<(), CollectError>) {
        let dir = tempfile::tempdir().unwrap();
        let text = read(fixture, "proc/1/mountinfo");
        for m in parse_mountinfo(&text).unwrap() {
            if m.mountpoint != missing {
                std::fs::create_dir_all(dir.path().join(m.mountpoint.trim_start_matches('/')))
                    .unwrap();
            }
        }
        let r = roots(fixture);
        let roots = Roots {
            rootfs: dir.path().to_path_buf(),
            ..r
        };
        let mut c = FilesystemCollector::new(&FilesystemConfig::default()).unwrap();
        let mut b = batch();
        let res = c.collect(&ctx(roots), &mut b);
        (b, res)
    }

    #[test]
    fn collector_reports_each_device_once_with_attributes_and_skips_pseudo_filesystems() {
        let (b, r) = run_with_rootfs("spaces", "");
        r.unwrap();
        let limit = b.host_metric("system.filesystem.limit").unwrap();
        let mps: Vec<String> = limit
            .points
            .iter()
            .map(|p| {
                p.attributes
                    .get("system.filesystem.mountpoint")
                    .unwrap()
                    .to_text()
                    .into_owned()
            })
            .collect();
        // /dev/shm (tmpfs), / and /mnt/my disk in table order; /var/lib/docker is a bind of /
        // and /mnt/again a second mount of sdb1 (same device), proc/sysfs/cgroup2/overlay
        // are excluded types and the kubelet's pod tmpfs an excluded mountpoint.
        assert_eq!(mps, vec!["/dev/shm", "/", "/mnt/my disk"], "{mps:?}");
        let used = value(
            &b,
            "system.filesystem.usage",
            &[
                ("system.filesystem.mountpoint", "/mnt/my disk"),
                ("system.filesystem.state", "used"),
            ],
        );
        let free = value(
            &b,
            "system.filesystem.usage",
            &[
                ("system.filesystem.mountpoint", "/mnt/my disk"),
                ("system.filesystem.state", "free"),
            ],
        );
        let reserved = value(
            &b,
            "system.filesystem.usage",
            &[
                ("system.filesystem.mountpoint", "/mnt/my disk"),
                ("system.filesystem.state", "reserved"),
            ],
        );
        let total = value(
            &b,
            "system.filesystem.limit",
            &[("system.filesystem.mountpoint", "/mnt/my disk")],
        );
        assert_eq!(used + free + reserved, total);
        let p = &limit.points[2];
        assert_eq!(
            p.attributes.get("system.device").unwrap().to_text(),
            "/dev/sdb1"
        );
        assert_eq!(
            p.attributes
                .get("system.filesystem.type")
                .unwrap()
                .to_text(),
            "xfs"
        );
        assert_eq!(
            p.attributes
                .get("system.filesystem.mode")
                .unwrap()
                .to_text(),
            "ro"
        );
    }

    #[test]
    fn a_missing_mountpoint_is_skipped_and_reported_after_the_others_are_recorded() {
        let (b, r) = run_with_rootfs("spaces", "/mnt/my disk");
        let err = r.unwrap_err();
        // The "log once" key names the mount point, so another mount failing later is
        // logged too instead of being folded into the first one's key.
        assert_eq!(err.cause_key(), "sys:statvfs:/mnt/my disk");
        let (_, other) = run_with_rootfs("spaces", "/dev/shm");
        assert_eq!(other.unwrap_err().cause_key(), "sys:statvfs:/dev/shm");
        let err = err.to_string();
        assert!(
            err.contains("1 mount(s) skipped") && err.contains("my disk"),
            "{err}"
        );
        assert_eq!(
            b.host_metric("system.filesystem.limit")
                .unwrap()
                .points
                .len(),
            2
        );
    }

    /// A fixture's table (a regular file) is read every cycle: a changed file is seen.
    #[test]
    fn a_table_off_procfs_is_read_every_cycle() {
        let dir = tempfile::tempdir().unwrap();
        let proc = dir.path().join("proc");
        std::fs::create_dir_all(proc.join("1")).unwrap();
        let table = proc.join("1/mountinfo");
        let line = |n: u32| format!("{n} 1 8:{n} / /m{n} rw - ext4 /dev/sd{n} rw\n");
        std::fs::write(&table, line(1)).unwrap();
        let roots = Roots {
            proc,
            sys: dir.path().join("sys"),
            rootfs: dir.path().to_path_buf(),
        };
        std::fs::create_dir_all(dir.path().join("m1")).unwrap();
        std::fs::create_dir_all(dir.path().join("m2")).unwrap();
        let mut c = FilesystemCollector::new(&FilesystemConfig::default()).unwrap();
        let ctx = ctx(roots);
        c.collect(&ctx, &mut batch()).unwrap();
        assert!(c.watch.is_none(), "a regular file is not polled");
        std::fs::write(&table, line(1) + &line(2)).unwrap();
        let mut b = batch();
        c.collect(&ctx, &mut b).unwrap();
        assert_eq!(metric(&b, "system.filesystem.limit").points.len(), 2);
    }

    /// On procfs the table is parsed once and again only after a mount change, which the
    /// kernel signals with `POLLPRI`; the mode follows `statvfs` even when no new table was
    /// read. The mounts happen in a mount namespace of this test's own thread (made private
    /// first, so nothing propagates to the host), on a tmpfs of a few pages in a temporary
    /// directory; the collector reads that thread's table through a proc root whose `1` is
    /// `/proc/thread-self`.
    #[test]
    fn a_procfs_table_is_parsed_again_only_after_a_mount_change() {
        use nix::mount::{MntFlags, MsFlags, mount, umount2};
        use nix::sched::{CloneFlags, unshare};
        std::thread::spawn(|| {
            if let Err(e) = unshare(CloneFlags::CLONE_NEWNS) {
                assert!(
                    std::env::var_os("CI").is_none(),
                    "unshare(CLONE_NEWNS) failed under CI: {e}"
                );
                eprintln!("skipped: no mount namespace ({e}; needs CAP_SYS_ADMIN)");
                return;
            }
            mount(
                None::<&str>,
                "/",
                None::<&str>,
                MsFlags::MS_REC | MsFlags::MS_PRIVATE,
                None::<&str>,
            )
            .unwrap();
            let fake = tempfile::tempdir().unwrap();
            std::os::unix::fs::symlink("/proc/thread-self", fake.path().join("1")).unwrap();
            let path = fake.path().join("1/mountinfo");
            let dir = tempfile::tempdir().unwrap();
            let mountpoint = dir.path().to_string_lossy().into_owned();
            let cfg = FilesystemConfig {
                include_mountpoints: vec![mountpoint.clone()],
                exclude_mountpoints: Vec::new(),
                include_types: vec!["tmpfs".into()],
                exclude_types: Vec::new(),
            };
            let mut c = FilesystemCollector::new(&cfg).unwrap();
            let ctx = ctx(Roots {
                proc: fake.path().to_path_buf(),
                sys: "/sys".into(),
                rootfs: "/".into(),
            });
            let mode = |b: &Batch| {
                let m = metric(b, "system.filesystem.limit");
                assert_eq!(m.points.len(), 1, "only the test's tmpfs: {m:?}");
                m.points[0]
                    .attributes
                    .get("system.filesystem.mode")
                    .map(|v| v.to_text().into_owned())
            };
            assert!(c.table_changed(&path), "nothing parsed yet");
            c.reload(&ctx, &path).unwrap();
            assert!(c.watch.is_some(), "procfs table kept open for polling");
            assert!(!c.table_changed(&path), "no mount change yet");
            struct Unmount<'a>(&'a Path);
            impl Drop for Unmount<'_> {
                fn drop(&mut self) {
                    let _ = umount2(self.0, MntFlags::MNT_DETACH);
                }
            }
            mount(
                Some("faultline-test"),
                dir.path(),
                Some("tmpfs"),
                MsFlags::empty(),
                Some("size=64k"),
            )
            .unwrap();
            let _guard = Unmount(dir.path());
            assert!(c.table_changed(&path), "a new mount is signalled");
            assert!(!c.table_changed(&path), "once per change");
            // The change was consumed above without a reload: collect sees none, so the
            // tmpfs is missing until the next change; reload by hand, as collect would have.
            c.reload(&ctx, &path).unwrap();
            let mut b = batch();
            c.collect(&ctx, &mut b).unwrap();
            assert_eq!(mode(&b).as_deref(), Some("rw"));
            // Read-only now: the table changes too, but its event is consumed here, so the
            // next cycle does not re-parse and the mode must come from `statvfs`.
            mount(
                None::<&str>,
                dir.path(),
                None::<&str>,
                MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
                None::<&str>,
            )
            .unwrap();
            assert!(c.table_changed(&path), "a remount is signalled");
            let mut b = batch();
            c.collect(&ctx, &mut b).unwrap();
            assert_eq!(
                mode(&b).as_deref(),
                Some("ro"),
                "from statvfs, not the table"
            );
        })
        .join()
        .unwrap();
    }
}
