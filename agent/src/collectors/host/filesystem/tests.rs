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
            std::fs::create_dir_all(dir.path().join(m.mountpoint.trim_start_matches('/'))).unwrap();
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
                !crate::test_support::in_ci(),
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
