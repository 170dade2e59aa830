//! What the chaos crate reads from `/proc`: process identities (pid + start time, so a
//! reused PID is never mistaken for the original process), names, command lines, cgroups,
//! and MemAvailable.
//!
//! Parsers are pure functions over text ([`parse_stat`], [`parse_mem_available`],
//! [`parse_cgroup`]); the readers around them are thin and take the `/proc` root as an
//! argument (it is configuration, never hard-coded).

use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// A process, identified so that PID reuse cannot fool a later signal: the pid, its start
/// time in clock ticks since boot (`/proc/<pid>/stat` field 22) and the boot it belongs to.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProcessIdentity {
    /// Process id.
    pub pid: i32,
    /// Start time in clock ticks after boot.
    pub start_time: u64,
    /// `/proc/sys/kernel/random/boot_id` when the identity was taken (empty if unknown).
    #[serde(default)]
    pub boot_id: String,
    /// The short name (`comm`), for messages only.
    #[serde(default)]
    pub name: String,
}

impl std::fmt::Display for ProcessIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "pid {} ({})", self.pid, self.name)
    }
}

/// The fields of `/proc/<pid>/stat` the chaos crate uses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stat {
    /// Process id.
    pub pid: i32,
    /// `comm`, at most 15 bytes.
    pub comm: String,
    /// State letter: R, S, D, T, t, Z, X, I…
    pub state: char,
    /// Parent pid.
    pub ppid: i32,
    /// User-mode CPU time in clock ticks.
    pub utime: u64,
    /// Kernel-mode CPU time in clock ticks.
    pub stime: u64,
    /// Start time in clock ticks after boot.
    pub start_time: u64,
    /// Resident set in pages.
    pub rss_pages: u64,
}

/// Parses `/proc/<pid>/stat`. `comm` may hold spaces and parentheses, so it is taken
/// between the first `(` and the last `)`.
pub fn parse_stat(text: &str) -> Option<Stat> {
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    if close < open {
        return None;
    }
    let pid = text[..open].trim().parse().ok()?;
    let comm = text[open + 1..close].to_owned();
    let rest: Vec<&str> = text[close + 1..].split_whitespace().collect();
    // rest[0] is field 3 (state); field N is rest[N - 3].
    let field = |n: usize| rest.get(n - 3).and_then(|v| v.parse::<u64>().ok());
    Some(Stat {
        pid,
        comm,
        state: rest.first()?.chars().next()?,
        ppid: rest.get(1)?.parse().ok()?,
        utime: field(14)?,
        stime: field(15)?,
        start_time: field(22)?,
        rss_pages: field(24)?,
    })
}

/// Reads and parses `<proc>/<pid>/stat`; `None` when the process is gone or unreadable.
pub fn read_stat(proc_root: &Path, pid: i32) -> Option<Stat> {
    let text = fs::read_to_string(proc_root.join(pid.to_string()).join("stat")).ok()?;
    parse_stat(&text)
}

/// The boot id (`<proc>/sys/kernel/random/boot_id`), empty when unreadable.
pub fn boot_id(proc_root: &Path) -> String {
    fs::read_to_string(proc_root.join("sys/kernel/random/boot_id"))
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

/// The identity of a running process, or `None` when it is gone.
pub fn identity(proc_root: &Path, pid: i32, boot_id: &str) -> Option<ProcessIdentity> {
    let st = read_stat(proc_root, pid)?;
    Some(ProcessIdentity {
        pid,
        start_time: st.start_time,
        boot_id: boot_id.to_owned(),
        name: st.comm,
    })
}

/// Whether `id` still names the same live process: same boot, same pid, same start time,
/// and not a zombie.
pub fn is_alive(proc_root: &Path, id: &ProcessIdentity, boot_id: &str) -> bool {
    if !id.boot_id.is_empty() && !boot_id.is_empty() && id.boot_id != boot_id {
        return false;
    }
    matches!(read_stat(proc_root, id.pid), Some(st) if st.start_time == id.start_time && st.state != 'Z' && st.state != 'X')
}

/// Every numeric entry of `<proc>`.
pub fn pids(proc_root: &Path) -> std::io::Result<Vec<i32>> {
    let mut out = Vec::new();
    for entry in fs::read_dir(proc_root)? {
        let entry = entry?;
        if let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        {
            out.push(pid);
        }
    }
    out.sort_unstable();
    Ok(out)
}

/// The command line with NULs turned into spaces (empty for kernel threads).
pub fn cmdline(proc_root: &Path, pid: i32) -> String {
    fs::read(proc_root.join(pid.to_string()).join("cmdline"))
        .map(|b| {
            let s = String::from_utf8_lossy(&b);
            s.trim_end_matches('\0').replace('\0', " ")
        })
        .unwrap_or_default()
}

/// The executable's file name (from the `exe` link; empty when unreadable).
pub fn exe_name(proc_root: &Path, pid: i32) -> String {
    fs::read_link(proc_root.join(pid.to_string()).join("exe"))
        .ok()
        .and_then(|p| {
            p.file_name().map(|n| {
                n.to_string_lossy()
                    .trim_end_matches(" (deleted)")
                    .to_owned()
            })
        })
        .unwrap_or_default()
}

/// The names a process goes by: `comm`, the executable's file name and `argv[0]`'s file
/// name (deduplicated, empty ones dropped).
pub fn names(proc_root: &Path, pid: i32, comm: &str) -> Vec<String> {
    let argv0 = cmdline(proc_root, pid)
        .split(' ')
        .next()
        .map(|a| {
            Path::new(a)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()
        })
        .unwrap_or_default();
    let mut out = vec![comm.to_owned(), exe_name(proc_root, pid), argv0];
    out.retain(|n| !n.is_empty());
    out.dedup();
    out
}

/// Whether a process called `names` (see [`names`]) goes by `wanted`. `comm` is cut to 15
/// bytes by the kernel, so a wanted name longer than that also matches its first 15 bytes.
pub fn name_matches(names: &[String], wanted: &str) -> bool {
    let short = wanted.get(..15).unwrap_or(wanted);
    names
        .iter()
        .any(|n| n == wanted || (wanted.len() > 15 && n == short))
}

/// The cgroup paths of a process from `/proc/<pid>/cgroup` text (one per hierarchy; v2's
/// `0::/path` included).
pub fn parse_cgroup(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| l.splitn(3, ':').nth(2))
        .map(str::to_owned)
        .collect()
}

/// A cgroup given as a filesystem path (`/sys/fs/cgroup/pids/batch/job-1`) as the
/// hierarchy-relative path `/proc/<pid>/cgroup` shows (`/batch/job-1`), from mountinfo text:
/// the longest `cgroup`/`cgroup2` mount point that is a prefix of `path`, with the mount's
/// root prepended. `None` when `path` is under no cgroup mount (it is then taken as already
/// hierarchy-relative).
pub fn cgroup_from_fs_path(mountinfo: &str, path: &str) -> Option<String> {
    let path = Path::new(path);
    let mut best: Option<(usize, String)> = None;
    for line in mountinfo.lines() {
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        if !matches!(right.split_whitespace().next(), Some("cgroup" | "cgroup2")) {
            continue;
        }
        let f: Vec<&str> = left.split_whitespace().collect();
        let (Some(root), Some(mount)) = (f.get(3), f.get(4)) else {
            continue;
        };
        let Ok(rest) = path.strip_prefix(mount) else {
            continue;
        };
        let depth = Path::new(mount).components().count();
        if best.as_ref().is_some_and(|(d, _)| *d >= depth) {
            continue;
        }
        let rel = Path::new(root).join(rest);
        let rel = rel.to_string_lossy();
        let rel = rel.trim_end_matches('/');
        best = Some((
            depth,
            if rel.is_empty() {
                "/".into()
            } else {
                rel.to_owned()
            },
        ));
    }
    best.map(|(_, r)| r)
}

/// The cgroup paths of a live process (empty when unreadable).
pub fn cgroups(proc_root: &Path, pid: i32) -> Vec<String> {
    fs::read_to_string(proc_root.join(pid.to_string()).join("cgroup"))
        .map(|t| parse_cgroup(&t))
        .unwrap_or_default()
}

/// Whether one of `pid`'s cgroup paths names container `id` (lowercase hex, 12+ digits):
/// how Docker, containerd and CRI-O name a container's cgroup (`/docker/<id>`,
/// `/system.slice/docker-<id>.scope`, `…/cri-containerd-<id>.scope`).
pub fn in_container(proc_root: &Path, pid: i32, id: &str) -> bool {
    cgroups(proc_root, pid)
        .iter()
        .any(|p| p.to_ascii_lowercase().contains(id))
}

/// The live processes of each container in `ids` (lowercase hex ids, 12+ digits), in one
/// pass over `<proc>`: those whose cgroup paths name the id (see [`in_container`]). Every id
/// is a key, with no pids when none was found.
pub fn container_members(
    proc_root: &Path,
    ids: &[&str],
) -> std::io::Result<std::collections::HashMap<String, Vec<i32>>> {
    let mut out: std::collections::HashMap<String, Vec<i32>> = ids
        .iter()
        .map(|id| ((*id).to_owned(), Vec::new()))
        .collect();
    for pid in pids(proc_root)? {
        let paths = cgroups(proc_root, pid);
        if paths.is_empty() {
            continue;
        }
        for id in ids {
            if paths.iter().any(|p| p.to_ascii_lowercase().contains(id)) {
                out.entry((*id).to_owned()).or_default().push(pid);
            }
        }
    }
    Ok(out)
}

/// MemAvailable in bytes from `/proc/meminfo` text.
pub fn parse_mem_available(text: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}

/// MemAvailable in bytes, read from `<proc>/meminfo`.
pub fn mem_available(proc_root: &Path) -> std::io::Result<u64> {
    let path: PathBuf = proc_root.join("meminfo");
    let text = fs::read_to_string(&path)?;
    parse_mem_available(&text).ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("no MemAvailable in {}", path.display()),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cgroup_filesystem_paths_become_hierarchy_paths() {
        let mi = "\
36 25 0:31 / /sys/fs/cgroup ro,nosuid - tmpfs tmpfs ro,mode=755
37 36 0:32 / /sys/fs/cgroup/unified rw,nosuid shared:10 - cgroup2 cgroup2 rw
41 36 0:36 / /sys/fs/cgroup/pids rw,nosuid shared:15 - cgroup cgroup rw,pids
42 36 0:37 /kubepods /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory
50 25 0:40 / /host/sys/fs/cgroup rw - cgroup2 cgroup2 rw
";
        let rel = |p| cgroup_from_fs_path(mi, p);
        assert_eq!(
            rel("/sys/fs/cgroup/pids/batch/job-1").as_deref(),
            Some("/batch/job-1")
        );
        assert_eq!(rel("/sys/fs/cgroup/pids/").as_deref(), Some("/"));
        assert_eq!(
            rel("/sys/fs/cgroup/unified/a.slice").as_deref(),
            Some("/a.slice")
        );
        assert_eq!(
            rel("/sys/fs/cgroup/memory/pod1").as_deref(),
            Some("/kubepods/pod1")
        );
        assert_eq!(rel("/host/sys/fs/cgroup/x").as_deref(), Some("/x"));
        // Not under a cgroup mount: already a hierarchy path.
        assert_eq!(rel("/batch/job-1"), None);
        assert_eq!(rel("/sys/fs/cgroup/pidsx/a"), None);
    }

    #[test]
    fn stat_with_odd_comm() {
        let text = "4222 (my (odd) proc) S 1 4222 4222 0 -1 4194560 100 0 0 0 17 3 0 0 20 0 1 0 12345 1000 250 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 0 0 0 0 0 0";
        let st = parse_stat(text).unwrap();
        assert_eq!(st.pid, 4222);
        assert_eq!(st.comm, "my (odd) proc");
        assert_eq!(st.state, 'S');
        assert_eq!(st.ppid, 1);
        assert_eq!((st.utime, st.stime), (17, 3));
        assert_eq!(st.start_time, 12345);
        assert_eq!(st.rss_pages, 250);
        assert!(parse_stat("garbage").is_none());
        assert!(parse_stat("1 (x").is_none());
        assert!(parse_stat("1 (x) S").is_none());
    }

    #[test]
    fn meminfo_and_cgroup() {
        let m = "MemTotal:  100 kB\nMemFree: 10 kB\nMemAvailable:    2048 kB\n";
        assert_eq!(parse_mem_available(m), Some(2 << 20));
        assert_eq!(parse_mem_available("MemTotal: 1 kB\n"), None);
        let c = "12:memory:/docker/abc\n0::/system.slice/x.service\n";
        assert_eq!(
            parse_cgroup(c),
            vec!["/docker/abc", "/system.slice/x.service"]
        );
    }

    #[test]
    fn long_names_match_truncated_comm() {
        let names = vec!["containerd-shim".to_owned()];
        assert!(name_matches(&names, "containerd-shim"));
        assert!(name_matches(&names, "containerd-shim-runc-v2"));
        assert!(!name_matches(&names, "containerd"));
    }

    #[test]
    fn own_identity_is_alive() {
        let proc = Path::new("/proc");
        let boot = boot_id(proc);
        let me = identity(proc, std::process::id() as i32, &boot).unwrap();
        assert!(is_alive(proc, &me, &boot));
        let reused = ProcessIdentity {
            start_time: me.start_time + 1,
            ..me.clone()
        };
        assert!(!is_alive(proc, &reused, &boot));
        let other_boot = ProcessIdentity {
            boot_id: "other".into(),
            ..me
        };
        assert!(!is_alive(proc, &other_boot, &boot));
    }
}
