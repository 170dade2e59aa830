//! Disk-fill safety, on small tmpfs mounts the tests mount themselves (unmounted on drop):
//! the free-space floor is held while the fill is active (other writers eating the space
//! make the fill shrink, then go, each change audited), and a revert — also from a journal
//! left by a crashed process — deletes nothing but the fault's own `.faultline-fill-<id>`
//! in the journaled directory, whatever a tampered journal entry names.

// Test helpers outside `#[test]` functions fail loudly by design.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::fs;
use std::path::Path;
use std::time::Duration;

use faultline_tests::chaos::{Scratch, Tmpfs, is_root, require, wait_until};
use nix::sys::signal::Signal;

const T: Duration = Duration::from_secs(10);

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Available bytes on the filesystem of `p` (statvfs, independent of faultline).
fn avail(p: &Path) -> u64 {
    let st = nix::sys::statvfs::statvfs(p).unwrap();
    st.blocks_available() * st.fragment_size()
}

fn total(p: &Path) -> u64 {
    let st = nix::sys::statvfs::statvfs(p).unwrap();
    st.blocks() * st.fragment_size()
}

fn fill_files(fs: &Tmpfs) -> Vec<String> {
    fs.files()
        .into_iter()
        .filter(|f| f.starts_with(".faultline-fill-"))
        .collect()
}

fn fill_size(fs: &Tmpfs) -> Option<u64> {
    let f = fill_files(fs).pop()?;
    fs::metadata(fs.path().join(f)).ok().map(|m| m.len())
}

#[test]
fn the_free_space_floor_is_held_while_other_writers_fill_the_disk() {
    if !require(is_root(), "root (to mount a test tmpfs)") {
        return;
    }
    let fs = Tmpfs::mount("32m");
    let floor = total(fs.path()) / 4;
    let s = Scratch::new("chaos:\n  disk_free_floor: 25%\n");
    let (mut bg, _) = s.inject_disk_fill(fs.path(), ["--percent", "50"], "60s", T);
    let first = fill_size(&fs).unwrap();
    // Another writer takes 10 MiB: free space falls below the floor (8 MiB of 32).
    fs::write(fs.path().join("other-a"), vec![1u8; 10 << 20]).unwrap();
    assert!(avail(fs.path()) < floor);
    assert!(
        wait_until(T, || avail(fs.path()) >= floor),
        "the floor was not restored: {} available, floor {floor}\n{}",
        avail(fs.path()),
        bg.stderr()
    );
    let shrunk = fill_size(&fs).expect("the fill should shrink, not go");
    eprintln!(
        "fill {first} → {shrunk} bytes; {} available, floor {floor}",
        avail(fs.path())
    );
    assert!(shrunk < first);
    // Audited, naming what changed and why.
    assert!(
        wait_until(T, || bg.stderr().contains("Adjust")
            && bg.stderr().contains("shrank")),
        "{}",
        bg.stderr()
    );
    // More writers: the fill gives back what they take, until it is gone.
    fs::write(fs.path().join("other-b"), vec![2u8; 7 << 20]).unwrap();
    assert!(
        wait_until(T, || avail(fs.path()) >= floor),
        "{}",
        bg.stderr()
    );
    fs::write(fs.path().join("other-c"), vec![3u8; 7 << 20]).unwrap();
    assert!(
        wait_until(T, || fill_files(&fs).is_empty()
            && avail(fs.path()) >= floor),
        "the fill was not removed: {:?}, {} available\n{}",
        fs.files(),
        avail(fs.path()),
        bg.stderr()
    );
    assert!(bg.stderr().contains("removed"), "{}", bg.stderr());
    // The other writers' files are untouched.
    for (f, len) in [
        ("other-a", 10 << 20),
        ("other-b", 7 << 20),
        ("other-c", 7 << 20),
    ] {
        assert_eq!(fs::metadata(fs.path().join(f)).unwrap().len(), len, "{f}");
    }
    // The revert of a fill that is already gone is fine.
    bg.signal(Signal::SIGTERM);
    assert!(
        bg.wait_exit(T).is_some_and(|s| s.success()),
        "{}",
        bg.stderr()
    );
    assert!(s.journal_entries().is_empty());
}

#[test]
fn a_tampered_journal_entry_never_deletes_anything_but_the_faults_own_fill_file() {
    if !require(is_root(), "root (to mount a test tmpfs)") {
        return;
    }
    let fs = Tmpfs::mount("16m");
    let s = Scratch::new("chaos:\n  disk_free_floor: 10%\n");
    let path = fs.path().to_string_lossy().into_owned();
    let (mut bg, entry) = s.inject_disk_fill(fs.path(), ["--bytes", "2MiB"], "60s", T);
    // A crash: the journal entry and the fill file stay behind.
    bg.signal(Signal::SIGKILL);
    bg.wait_exit(T);
    let id = entry["id"].as_str().unwrap().to_owned();
    let genuine = fs.path().join(format!(".faultline-fill-{id}"));
    assert!(genuine.is_file());
    let journal_file = s.journal().join(format!("{id}.json"));
    assert!(journal_file.is_file());

    // Files a forged entry might name: a plain file, a fill-looking file in another
    // directory, a symlink under the right name in a second directory.
    let precious = fs.path().join("precious.txt");
    fs::write(&precious, "keep me").unwrap();
    let sub = fs.path().join("sub");
    fs::create_dir(&sub).unwrap();
    let elsewhere = sub.join(format!(".faultline-fill-{id}"));
    fs::write(&elsewhere, "keep me too").unwrap();
    let dotdot = sub.join("..").join("precious.txt");
    // For entries whose directory is forged too: a plain file in that directory, and a
    // symlink to `precious` under the fill file's own name directly inside another one.
    let in_sub = sub.join("keep.txt");
    fs::write(&in_sub, "keep me three").unwrap();
    let sub2 = fs.path().join("sub2");
    fs::create_dir(&sub2).unwrap();
    let link = sub2.join(format!(".faultline-fill-{id}"));
    std::os::unix::fs::symlink(&precious, &link).unwrap();
    let dir_of = |p: &std::path::Path| p.to_string_lossy().into_owned();
    let forged = [
        (precious.clone(), path.clone()),
        (elsewhere.clone(), path.clone()),
        (dotdot, path.clone()),
        // The directory forged too, consistently with the file: the name still has to be
        // the fault's fill file, and a file of that name still has to be a regular file.
        (in_sub.clone(), dir_of(&sub)),
        (link.clone(), dir_of(&sub2)),
    ];
    for (file, dir) in &forged {
        let mut e = entry.clone();
        e["record"]["state"]["file"] = file.to_string_lossy().into_owned().into();
        e["spec"]["path"] = dir.clone().into();
        fs::write(&journal_file, serde_json::to_vec_pretty(&e).unwrap()).unwrap();
        let out = s.run(&["fault", "revert", "--all"]);
        assert_eq!(
            out.status.code(),
            Some(1),
            "{file:?}: {}",
            text(&out.stdout)
        );
        let stdout = text(&out.stdout);
        assert!(
            stdout.contains("revert FAILED") && stdout.contains("owned-file"),
            "{file:?}: {stdout}"
        );
        assert!(stdout.contains("nothing deleted"), "{stdout}");
        assert_eq!(fs::read_to_string(&precious).unwrap(), "keep me");
        assert_eq!(fs::read_to_string(&elsewhere).unwrap(), "keep me too");
        assert_eq!(fs::read_to_string(&in_sub).unwrap(), "keep me three");
        assert!(
            fs::symlink_metadata(&link).is_ok_and(|m| m.file_type().is_symlink()),
            "{file:?}: the symlink was deleted"
        );
        assert!(journal_file.is_file(), "a refused revert keeps the entry");
    }
    // The untampered entry reverts: exactly the genuine fill file goes.
    fs::write(&journal_file, serde_json::to_vec_pretty(&entry).unwrap()).unwrap();
    let out = s.run(&["fault", "revert", "--all"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stdout));
    assert!(!genuine.exists());
    assert!(precious.is_file() && elsewhere.is_file());
    assert!(s.journal_entries().is_empty());
}
