//! Hands the pages of the agent's own binary that only start-up used back to the kernel.
//!
//! A process's resident set counts every page of its executable that it has ever touched, and
//! the kernel's fault-around maps up to 16 neighbours with each one: the start-up code (the
//! CLI parser, the YAML configuration and its validation, TLS and exporter set-up) stays
//! mapped for the life of the agent although it never runs again. Measured on the release
//! build (docs/PERFORMANCE.md), 8.7 MiB of the binary's code was resident after start while
//! the cycles afterwards touched 1.3 MiB of it.
//!
//! Once the agent runs steadily, [`release_startup_pages`] asks the kernel to reclaim the
//! binary's read-only, file-backed mappings (`MADV_PAGEOUT`, Linux 5.4+). Reclaiming keeps
//! the content by definition: a clean page of a file mapping is read from the file again on
//! its next access, so the code the cycles use comes back when they next run and the
//! resident set settles at the working set. The same mappings are first marked
//! `MADV_RANDOM`, so that a page coming back does not bring its neighbours with it (fault
//! read-around would otherwise map 64–128 KiB around every page the cycles touch, and the
//! resident code grew back from 1.3 MiB touched to 5.5 MiB mapped). Pages shared with another process are left
//! alone by the kernel. Only mappings without private (copy-on-write) pages are named, so
//! the relocated read-only data (RELRO) stays in place and nothing can reach swap.
//!
//! Not for: the heap or stacks (anonymous memory), nor shared libraries. Where the kernel
//! lacks `MADV_PAGEOUT` the call reports it and the agent goes on as before.
//!
//! This is the agent's one module with `unsafe` code: `madvise` has no safe wrapper, because
//! most of its advice values can change memory contents. The one call below passes only
//! `MADV_PAGEOUT` over ranges the kernel listed as this process's own mappings.
#![allow(unsafe_code)]

use std::os::unix::fs::MetadataExt as _;
use std::ptr::NonNull;

use nix::sys::mman::{MmapAdvise, madvise};

/// One mapping of the process, as `/proc/self/smaps` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mapping {
    /// First address.
    pub start: usize,
    /// One past the last address.
    pub end: usize,
    /// Inode of the mapped file (0 for anonymous memory).
    pub inode: u64,
    /// Resident pages of this mapping, KiB.
    pub rss_kib: u64,
}

/// The mappings of the file with inode `inode` that may be reclaimed: not writable, private
/// or shared, and without anonymous (copy-on-write) pages. Pure: `smaps` is the text of
/// `/proc/self/smaps`.
pub fn releasable(smaps: &str, inode: u64) -> Vec<Mapping> {
    let mut out = Vec::new();
    let mut current: Option<(Mapping, bool)> = None;
    let mut anonymous = 0u64;
    let finish = |m: Option<(Mapping, bool)>, anonymous: u64, out: &mut Vec<Mapping>| {
        if let Some((m, true)) = m
            && anonymous == 0
        {
            out.push(m);
        }
    };
    for line in smaps.lines() {
        let mut fields = line.split_ascii_whitespace();
        let Some(first) = fields.next() else { continue };
        if let Some((start, end)) = first.split_once('-')
            && let (Ok(start), Ok(end)) = (
                usize::from_str_radix(start, 16),
                usize::from_str_radix(end, 16),
            )
        {
            finish(current.take(), anonymous, &mut out);
            anonymous = 0;
            let perms = fields.next().unwrap_or("");
            let _offset = fields.next();
            let _device = fields.next();
            let ino = fields.next().and_then(|i| i.parse().ok()).unwrap_or(0);
            let wanted = ino == inode && inode != 0 && perms.as_bytes().get(1) == Some(&b'-');
            current = Some((
                Mapping {
                    start,
                    end,
                    inode: ino,
                    rss_kib: 0,
                },
                wanted,
            ));
            continue;
        }
        let value = fields
            .next()
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
        match first {
            "Rss:" => {
                if let Some((m, _)) = &mut current {
                    m.rss_kib = value;
                }
            }
            "Anonymous:" => anonymous = value,
            _ => {}
        }
    }
    finish(current.take(), anonymous, &mut out);
    out
}

/// What [`release_startup_pages`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Released {
    /// Mappings advised.
    pub mappings: usize,
    /// Their resident size before, KiB.
    pub resident_kib: u64,
}

/// Errors of [`release_startup_pages`].
#[derive(Debug, thiserror::Error)]
pub enum ReleaseError {
    /// `/proc/self/exe` or `/proc/self/smaps` could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: &'static str,
        /// The OS error.
        source: std::io::Error,
    },
    /// The kernel refused the advice (before Linux 5.4: `EINVAL`).
    #[error("madvise(MADV_PAGEOUT) failed: {0}")]
    Advise(nix::Error),
}

/// Asks the kernel to reclaim the binary's read-only mappings (see the module docs).
pub fn release_startup_pages() -> Result<Released, ReleaseError> {
    let inode = std::fs::metadata("/proc/self/exe")
        .map_err(|source| ReleaseError::Read {
            path: "/proc/self/exe",
            source,
        })?
        .ino();
    let smaps =
        std::fs::read_to_string("/proc/self/smaps").map_err(|source| ReleaseError::Read {
            path: "/proc/self/smaps",
            source,
        })?;
    let mut done = Released {
        mappings: 0,
        resident_kib: 0,
    };
    for m in releasable(&smaps, inode) {
        let Some(addr) = NonNull::new(m.start as *mut std::ffi::c_void) else {
            continue;
        };
        for advice in [MmapAdvise::MADV_RANDOM, MmapAdvise::MADV_PAGEOUT] {
            // SAFETY: neither advice changes what the memory holds. MADV_RANDOM only turns off
            // read-ahead for faults in the range. MADV_PAGEOUT reclaims a page only where the
            // kernel can bring the same content back (clean pages of a file mapping are re-read
            // from the file on the next access). The range is one whole mapping of this process
            // as the kernel listed it a moment ago (page-aligned by construction), it is not
            // writable and holds no private copy-on-write pages (`releasable`), and nothing
            // unmaps the executable's own mappings while the process runs.
            unsafe { madvise(addr, m.end - m.start, advice) }.map_err(ReleaseError::Advise)?;
        }
        done.mappings += 1;
        done.resident_kib += m.rss_kib;
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMAPS: &str = "\
55d0c0000000-55d0c0200000 r--p 00000000 fe:01 4242 /usr/bin/faultline
Size:               2048 kB
Rss:                 300 kB
Anonymous:             0 kB
55d0c0200000-55d0c0a00000 r-xp 00200000 fe:01 4242 /usr/bin/faultline
Size:               8192 kB
Rss:                8000 kB
Anonymous:             0 kB
55d0c0a00000-55d0c0b00000 r--p 00a00000 fe:01 4242 /usr/bin/faultline
Size:               1024 kB
Rss:                 900 kB
Anonymous:           900 kB
55d0c0b00000-55d0c0b10000 rw-p 00b00000 fe:01 4242 /usr/bin/faultline
Size:                 64 kB
Rss:                  64 kB
Anonymous:            64 kB
7f0000000000-7f0000200000 r-xp 00000000 fe:01 77 /usr/lib/x86_64-linux-gnu/libc.so.6
Size:               2048 kB
Rss:                1000 kB
Anonymous:             0 kB
7f0000300000-7f0000400000 rw-p 00000000 00:00 0
Rss:                 500 kB
Anonymous:           500 kB
";

    #[test]
    fn only_the_binarys_clean_read_only_mappings_are_releasable() {
        let got = releasable(SMAPS, 4242);
        assert_eq!(
            got,
            vec![
                Mapping {
                    start: 0x55d0c0000000,
                    end: 0x55d0c0200000,
                    inode: 4242,
                    rss_kib: 300
                },
                Mapping {
                    start: 0x55d0c0200000,
                    end: 0x55d0c0a00000,
                    inode: 4242,
                    rss_kib: 8000
                },
            ],
            "the RELRO mapping (anonymous pages), the writable data, libc and the heap stay"
        );
        assert!(
            releasable(SMAPS, 0).is_empty(),
            "inode 0 is anonymous memory"
        );
        assert!(releasable("garbage\n\n-\nRss: x\n", 4242).is_empty());
    }

    #[test]
    fn releasing_keeps_the_code_working_and_lowers_its_resident_pages() {
        // The pages of a file mapped by another process stay resident (MADV_PAGEOUT reclaims
        // only this process's own), and other tests of this binary run beside this one: the
        // check runs in a copy of the binary that nothing else maps.
        let dir = tempfile::tempdir().unwrap();
        let copy = dir.path().join("residency-test");
        std::fs::copy(std::env::current_exe().unwrap(), &copy).unwrap();
        let out = std::process::Command::new(&copy)
            .args([
                "--exact",
                "runtime::residency::tests::release_in_a_binary_nothing_else_maps",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout) + String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{text}");
        assert!(text.contains("1 passed"), "the check did not run: {text}");
    }

    #[test]
    #[ignore = "run by releasing_keeps_the_code_working_and_lowers_its_resident_pages in a copy of the binary"]
    fn release_in_a_binary_nothing_else_maps() {
        // Touch this test binary's code, release it, and run again: the process goes on.
        let before = match release_startup_pages() {
            Ok(r) => r,
            // A kernel older than 5.4 refuses the advice; nothing else may fail.
            Err(ReleaseError::Advise(nix::Error::EINVAL)) => return,
            Err(e) => panic!("{e}"),
        };
        assert!(
            before.mappings > 0,
            "the test binary's own code is mapped: {before:?}"
        );
        let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
        let inode = std::fs::metadata("/proc/self/exe").unwrap().ino();
        let after: u64 = releasable(&smaps, inode).iter().map(|m| m.rss_kib).sum();
        assert!(
            after < before.resident_kib,
            "resident code after the release ({after} KiB) must be below before ({} KiB)",
            before.resident_kib
        );
        release_startup_pages().unwrap();
    }
}
