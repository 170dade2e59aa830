//! The cgroup freezer: how `container-pause` stops a container on any runtime (Docker,
//! containerd, CRI-O, podman) without asking the runtime — the CRI has no pause call, and
//! the Engine API's pause is Docker's own bookkeeping around the same freezer.
//!
//! - cgroup v1: `freezer.state` in the container's directory of the `freezer` hierarchy;
//!   write `FROZEN`, read back `FREEZING` then `FROZEN`; `THAWED` undoes it. Frozen tasks
//!   show state `D` in `/proc/<pid>/stat` (they wait in the kernel's refrigerator).
//! - cgroup v2: `cgroup.freeze` (`1`/`0`) in the container's directory of the unified
//!   hierarchy; `cgroup.events` says `frozen 1` once every task stopped.
//!
//! The container's cgroup is found from one of its processes: the freezer (v1) or unified
//! (v2) line of `/proc/<pid>/cgroup`, placed under the mount of that hierarchy listed in
//! mountinfo ([`locate`], pure, so fixtures test it). The directory found is recorded in the
//! fault's revert record: a revert after a crash thaws the same directory, and does nothing
//! when the directory is gone (the container was removed, its cgroup with it).
//!
//! A freezer on a hybrid host (v1 controllers plus a unified hierarchy with no
//! controllers, like this project's test machines) is taken from v1: the unified tree there
//! may not follow the container's layout.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::error::FaultError;

/// Which cgroup interface a freezer directory uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CgroupVersion {
    /// `freezer.state` in the v1 `freezer` hierarchy.
    V1,
    /// `cgroup.freeze` in the unified hierarchy.
    V2,
}

/// A container's freezer cgroup: journaled, so a revert after a crash finds it again.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FreezerCgroup {
    /// The cgroup's directory as this process sees it
    /// (`/sys/fs/cgroup/freezer/kubepods/besteffort/pod…/<id>`).
    pub dir: PathBuf,
    /// Its interface.
    pub version: CgroupVersion,
    /// The path `/proc/<pid>/cgroup` shows (`/kubepods/besteffort/pod…/<id>`).
    pub path: String,
}

/// What a freezer directory says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FreezeState {
    /// Running.
    Thawed,
    /// Asked to freeze; some task has not stopped yet.
    Freezing,
    /// Every task stopped.
    Frozen,
}

impl std::fmt::Display for FreezeState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            FreezeState::Thawed => "THAWED",
            FreezeState::Freezing => "FREEZING",
            FreezeState::Frozen => "FROZEN",
        })
    }
}

/// How long a freeze waits for every task to stop, and a thaw for the directory to say so.
/// A task in an uninterruptible wait can hold `FREEZING` longer; the fault's check then
/// reports it.
const SETTLE: Duration = Duration::from_secs(2);

/// mountinfo escapes space, tab, newline and backslash in paths as octal.
fn unescape(field: &str) -> String {
    field
        .replace("\\040", " ")
        .replace("\\011", "\t")
        .replace("\\012", "\n")
        .replace("\\134", "\\")
}

/// One cgroup mount from mountinfo: (root within the hierarchy, mount point, writable,
/// filesystem type, super options).
fn cgroup_mounts(mountinfo: &str) -> Vec<(String, PathBuf, bool, &str, &str)> {
    mountinfo
        .lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let mut right = right.split_whitespace();
            let fstype = right.next()?;
            if fstype != "cgroup" && fstype != "cgroup2" {
                return None;
            }
            let super_opts = right.nth(1).unwrap_or("");
            let f: Vec<&str> = left.split_whitespace().collect();
            let writable = f.get(5)?.split(',').any(|o| o == "rw");
            Some((
                unescape(f.get(3)?),
                PathBuf::from(unescape(f.get(4)?)),
                writable,
                fstype,
                super_opts,
            ))
        })
        .collect()
}

/// A freezer cgroup found in mountinfo, and whether its mount is writable here.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Located {
    /// The cgroup.
    pub cgroup: FreezerCgroup,
    /// Whether the mount it was found under is mounted read-write.
    pub writable: bool,
}

/// The freezer cgroup of a process from its `/proc/<pid>/cgroup` text and mountinfo text:
/// the v1 `freezer` line when there is one, else the v2 `0::` line, placed under a mount of
/// that hierarchy whose root holds it (a writable mount first). `None` for the root cgroup
/// (never frozen) and when no mount of the hierarchy is visible.
pub fn locate(proc_cgroup: &str, mountinfo: &str) -> Option<Located> {
    let mut v1 = None;
    let mut v2 = None;
    for line in proc_cgroup.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(id), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        if id == "0" && controllers.is_empty() {
            v2 = Some(path);
        } else if controllers.split(',').any(|c| c == "freezer") {
            v1 = Some(path);
        }
    }
    let (version, path) = match (v1, v2) {
        (Some(p), _) => (CgroupVersion::V1, p),
        (None, Some(p)) => (CgroupVersion::V2, p),
        (None, None) => return None,
    };
    let path = path.trim_end_matches('/');
    if path.is_empty() {
        return None;
    }
    let mut mounts: Vec<_> = cgroup_mounts(mountinfo)
        .into_iter()
        .filter(|(_, _, _, fstype, opts)| match version {
            CgroupVersion::V1 => *fstype == "cgroup" && opts.split(',').any(|o| o == "freezer"),
            CgroupVersion::V2 => *fstype == "cgroup2",
        })
        .collect();
    // Writable mounts first; the order of mountinfo otherwise.
    mounts.sort_by_key(|m| !m.2);
    mounts
        .into_iter()
        .find_map(|(root, point, writable, _, _)| {
            let root = root.trim_end_matches('/');
            let rest = if root.is_empty() {
                path
            } else {
                path.strip_prefix(root)
                    .filter(|r| r.is_empty() || r.starts_with('/'))?
            };
            let rel = rest.trim_start_matches('/');
            Some(Located {
                cgroup: FreezerCgroup {
                    dir: if rel.is_empty() {
                        point
                    } else {
                        point.join(rel)
                    },
                    version,
                    path: path.to_owned(),
                },
                writable,
            })
        })
}

/// The freezer cgroup of live process `pid` under `proc_root`, with mountinfo read from
/// `proc_root/self/mountinfo` (the mounts this process sees). `None` when either cannot be
/// read or [`locate`] finds nothing.
pub fn of_process(proc_root: &Path, pid: i32) -> Option<Located> {
    let cgroup = fs::read_to_string(proc_root.join(pid.to_string()).join("cgroup")).ok()?;
    let mountinfo = fs::read_to_string(proc_root.join("self/mountinfo")).ok()?;
    locate(&cgroup, &mountinfo).filter(|l| l.cgroup.dir.is_dir())
}

impl FreezerCgroup {
    fn control(&self) -> PathBuf {
        self.dir.join(match self.version {
            CgroupVersion::V1 => "freezer.state",
            CgroupVersion::V2 => "cgroup.freeze",
        })
    }

    /// Whether the directory still exists (a removed container takes its cgroup along).
    pub fn exists(&self) -> bool {
        self.dir.is_dir()
    }

    /// The freezer's state now.
    pub fn state(&self) -> Result<FreezeState, FaultError> {
        let read = |name: &str| {
            let path = self.dir.join(name);
            fs::read_to_string(&path).map_err(|source| FaultError::Io {
                action: "cannot read the freezer state in",
                path,
                source,
            })
        };
        Ok(match self.version {
            CgroupVersion::V1 => match read("freezer.state")?.trim() {
                "FROZEN" => FreezeState::Frozen,
                "FREEZING" => FreezeState::Freezing,
                _ => FreezeState::Thawed,
            },
            CgroupVersion::V2 => {
                let frozen = read("cgroup.events")?
                    .lines()
                    .any(|l| l.trim() == "frozen 1");
                if frozen {
                    FreezeState::Frozen
                } else if read("cgroup.freeze")?.trim() == "1" {
                    FreezeState::Freezing
                } else {
                    FreezeState::Thawed
                }
            }
        })
    }

    fn write(&self, value: &str) -> Result<(), FaultError> {
        let path = self.control();
        fs::write(&path, value).map_err(|source| FaultError::Io {
            action: "cannot write the freezer state to",
            path,
            source,
        })
    }

    /// Waits (at most [`SETTLE`]) until the state is `want`; the last state seen.
    fn settle(&self, want: FreezeState) -> Result<FreezeState, FaultError> {
        let until = Instant::now() + SETTLE;
        loop {
            let now = self.state()?;
            if now == want || Instant::now() >= until {
                return Ok(now);
            }
            // Fault methods run off the async workers (the engine's blocking pool, the
            // CLI's own thread), and the wait is bounded by SETTLE.
            #[allow(clippy::disallowed_methods)]
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Freezes the cgroup and waits for it to settle; the state it reached (`Freezing` when
    /// a task did not stop within the wait).
    pub fn freeze(&self) -> Result<FreezeState, FaultError> {
        self.write(match self.version {
            CgroupVersion::V1 => "FROZEN",
            CgroupVersion::V2 => "1",
        })?;
        self.settle(FreezeState::Frozen)
    }

    /// Thaws the cgroup; `Ok(false)` when its directory is gone (nothing to thaw).
    pub fn thaw(&self) -> Result<bool, FaultError> {
        if !self.exists() {
            return Ok(false);
        }
        self.write(match self.version {
            CgroupVersion::V1 => "THAWED",
            CgroupVersion::V2 => "0",
        })?;
        match self.settle(FreezeState::Thawed)? {
            FreezeState::Thawed => Ok(true),
            other => Err(FaultError::Other(format!(
                "cgroup {} is still {other} after thawing",
                self.dir.display()
            ))),
        }
    }

    /// The processes in the cgroup and the cgroups below it (all of them freeze with it).
    pub fn procs(&self) -> Vec<i32> {
        fn walk(dir: &Path, out: &mut Vec<i32>) {
            if let Ok(text) = fs::read_to_string(dir.join("cgroup.procs")) {
                out.extend(text.lines().filter_map(|l| l.trim().parse::<i32>().ok()));
            }
            for entry in fs::read_dir(dir).into_iter().flatten().flatten() {
                if entry.file_type().is_ok_and(|t| t.is_dir()) {
                    walk(&entry.path(), out);
                }
            }
        }
        let mut out = Vec::new();
        walk(&self.dir, &mut out);
        out.sort_unstable();
        out.dedup();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
25 30 0:23 / /sys rw,nosuid - sysfs sysfs rw
36 25 0:31 / /sys/fs/cgroup ro,nosuid - tmpfs tmpfs ro,mode=755
37 36 0:32 / /sys/fs/cgroup/unified rw,nosuid shared:10 - cgroup2 cgroup2 rw
41 36 0:36 / /sys/fs/cgroup/freezer rw,nosuid shared:15 - cgroup cgroup rw,freezer
42 36 0:37 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct
90 80 0:36 / /host/sys/fs/cgroup/freezer ro,relatime - cgroup cgroup rw,freezer
";

    const POD_PROCESS: &str = "\
6:freezer:/kubepods/besteffort/pod1/abc
4:cpu,cpuacct:/kubepods/besteffort/pod1/abc
0::/kubepods/besteffort/pod1/abc
";

    #[test]
    fn v1_freezer_wins_on_a_hybrid_host_and_writable_mounts_first() {
        let l = locate(POD_PROCESS, HYBRID).unwrap();
        assert!(l.writable);
        let c = l.cgroup;
        assert_eq!(c.version, CgroupVersion::V1);
        assert_eq!(
            c.dir,
            Path::new("/sys/fs/cgroup/freezer/kubepods/besteffort/pod1/abc")
        );
        assert_eq!(c.path, "/kubepods/besteffort/pod1/abc");
        // Only the read-only mount in the pod: taken all the same (the write will say so).
        let ro_only: String = HYBRID
            .lines()
            .filter(|l| !l.starts_with("41 "))
            .map(|l| format!("{l}\n"))
            .collect();
        let l = locate(POD_PROCESS, &ro_only).unwrap();
        assert!(!l.writable);
        assert_eq!(
            l.cgroup.dir,
            Path::new("/host/sys/fs/cgroup/freezer/kubepods/besteffort/pod1/abc")
        );
    }

    #[test]
    fn v2_only_hosts_use_the_unified_line_under_the_mount_root() {
        let mi = "\
30 25 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate
31 25 0:26 /kubepods /host/cg rw,nosuid - cgroup2 cgroup2 rw
";
        let cg = "0::/kubepods/burstable/pod2/def\n";
        let c = locate(cg, mi).unwrap().cgroup;
        assert_eq!(c.version, CgroupVersion::V2);
        assert_eq!(
            c.dir,
            Path::new("/sys/fs/cgroup/kubepods/burstable/pod2/def")
        );
        // A mount whose root holds the path places it below its own mount point.
        let only_sub: String = mi.lines().skip(1).map(|l| format!("{l}\n")).collect();
        assert_eq!(
            locate(cg, &only_sub).unwrap().cgroup.dir,
            Path::new("/host/cg/burstable/pod2/def")
        );
        // A path outside the mount's root cannot be placed.
        assert_eq!(locate("0::/system.slice/x\n", &only_sub), None);
    }

    #[test]
    fn the_root_cgroup_and_unmounted_hierarchies_are_not_found() {
        assert_eq!(locate("6:freezer:/\n0::/\n", HYBRID), None);
        assert_eq!(
            locate(
                "6:freezer:/docker/x\n",
                "1 0 8:1 / / rw - ext4 /dev/vda rw\n"
            ),
            None
        );
        assert_eq!(locate("", HYBRID), None);
        let escaped = "41 36 0:36 / /sys/fs/my\\040cgroups rw - cgroup cgroup rw,freezer\n";
        assert_eq!(
            locate("6:freezer:/docker/x\n", escaped).unwrap().cgroup.dir,
            Path::new("/sys/fs/my cgroups/docker/x")
        );
    }

    #[test]
    fn state_files_read_both_interfaces() {
        let dir = tempfile::tempdir().unwrap();
        let v1 = FreezerCgroup {
            dir: dir.path().to_owned(),
            version: CgroupVersion::V1,
            path: "/x".into(),
        };
        fs::write(dir.path().join("freezer.state"), "FREEZING\n").unwrap();
        assert_eq!(v1.state().unwrap(), FreezeState::Freezing);
        fs::write(dir.path().join("cgroup.events"), "populated 1\nfrozen 1\n").unwrap();
        fs::write(dir.path().join("cgroup.freeze"), "1\n").unwrap();
        let v2 = FreezerCgroup {
            version: CgroupVersion::V2,
            ..v1.clone()
        };
        assert_eq!(v2.state().unwrap(), FreezeState::Frozen);
        fs::write(dir.path().join("cgroup.events"), "populated 1\nfrozen 0\n").unwrap();
        assert_eq!(v2.state().unwrap(), FreezeState::Freezing);
        fs::write(dir.path().join("cgroup.procs"), "12\n7\n").unwrap();
        fs::create_dir(dir.path().join("sub")).unwrap();
        fs::write(dir.path().join("sub/cgroup.procs"), "9\n12\n").unwrap();
        assert_eq!(v1.procs(), vec![7, 9, 12]);
        let gone = FreezerCgroup {
            dir: dir.path().join("removed"),
            ..v1
        };
        assert!(
            !gone.thaw().unwrap(),
            "a removed cgroup has nothing to thaw"
        );
    }
}
