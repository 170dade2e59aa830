//! The cgroup freezer as the container-pause tests read it themselves, independently of
//! faultline's own freezer code: a container's freezer cgroup from `/proc/<pid>/cgroup`,
//! whether it is frozen (v1 `freezer.state`, v2 `cgroup.events`), the `/proc` state letters
//! of its processes, and a guard that thaws what a failed test left frozen — a frozen task
//! cannot even die, so without it the runtime's clean-up would hang.
//!
//! [`Watched`] is the pause flow every runtime's test runs through the real binary: held by
//! `faultline fault inject container-pause` in the background, thawed on SIGTERM; left frozen
//! when the injector is SIGKILLed, thawed by `faultline fault revert --all`.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::signal::Signal;

use crate::chaos::{Bg, Scratch, wait_until};

/// The freezer cgroup of Docker container `id`'s main process (`docker inspect` gives the pid).
///
/// # Panics
/// When the container has no running main process or its cgroup cannot be read.
pub fn cgroup_of_container(id: &str) -> String {
    let out = std::process::Command::new("docker")
        .args(["inspect", "-f", "{{.State.Pid}}", id])
        .output()
        .unwrap_or_else(|e| panic!("docker inspect {id}: {e}"));
    let text = String::from_utf8_lossy(&out.stdout);
    let pid: i32 = text
        .trim()
        .parse()
        .unwrap_or_else(|e| panic!("docker inspect {id}: pid {text:?}: {e}"));
    cgroup_of(pid).unwrap_or_else(|| panic!("no freezer cgroup for pid {pid} of {id}"))
}

/// The v1 freezer hierarchy's mount point on the test machines (and most hosts).
const V1_ROOT: &str = "/sys/fs/cgroup/freezer";
/// The unified hierarchy's mount point on a v2-only host.
const V2_ROOT: &str = "/sys/fs/cgroup";

/// The freezer cgroup path of `pid` as `/proc/<pid>/cgroup` shows it (the v1 `freezer`
/// line, else the v2 `0::` line).
pub fn cgroup_of(pid: i32) -> Option<String> {
    let text = fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    let mut v2 = None;
    for line in text.lines() {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        if controllers.split(',').any(|c| c == "freezer") {
            return Some(path.to_owned());
        }
        if controllers.is_empty() {
            v2 = Some(path.to_owned());
        }
    }
    v2
}

/// The directory of freezer cgroup `path` (v1 when the host has the v1 hierarchy).
pub fn dir(path: &str) -> PathBuf {
    let rel = path.trim_start_matches('/');
    if Path::new(V1_ROOT).is_dir() {
        Path::new(V1_ROOT).join(rel)
    } else {
        Path::new(V2_ROOT).join(rel)
    }
}

/// Whether cgroup `path` is frozen: v1 `freezer.state` reads `FROZEN`, v2 `cgroup.events`
/// has `frozen 1`. `None` when the files cannot be read (the cgroup is gone).
pub fn frozen(path: &str) -> Option<bool> {
    let d = dir(path);
    match fs::read_to_string(d.join("freezer.state")) {
        Ok(state) => Some(state.trim() == "FROZEN"),
        Err(_) => fs::read_to_string(d.join("cgroup.events"))
            .ok()
            .map(|events| events.lines().any(|l| l.trim() == "frozen 1")),
    }
}

/// The state letter of each of `pids` (`?` for one that is gone).
pub fn states(pids: &[i32]) -> Vec<char> {
    pids.iter()
        .map(|pid| crate::chaos::state(*pid).unwrap_or('?'))
        .collect()
}

/// Whether every one of `pids` waits in the freezer: `D` under cgroup v1 (the kernel's
/// refrigerator is an uninterruptible sleep), `T`-like under v2 (`S` with the frozen flag is
/// also what some kernels show, hence the caller's own reading of the freezer state too).
pub fn all_frozen_in_proc(pids: &[i32]) -> bool {
    !pids.is_empty() && states(pids).iter().all(|s| matches!(s, 'D' | 'T'))
}

/// Whether every one of `pids` is runnable again: `S` or `R`.
pub fn all_runnable(pids: &[i32]) -> bool {
    !pids.is_empty() && states(pids).iter().all(|s| matches!(s, 'S' | 'R'))
}

/// A container's freezer cgroup and processes, watched by the test itself.
#[derive(Debug, Clone)]
pub struct Watched {
    /// The freezer cgroup path (as `/proc/<pid>/cgroup` shows it).
    pub cgroup: String,
    /// The container's processes.
    pub pids: Vec<i32>,
}

impl Watched {
    /// Whether the cgroup says frozen and every process waits in the freezer.
    pub fn frozen(&self) -> bool {
        frozen(&self.cgroup) == Some(true) && all_frozen_in_proc(&self.pids)
    }

    /// Whether the cgroup says thawed and every process is runnable.
    pub fn thawed(&self) -> bool {
        frozen(&self.cgroup) == Some(false) && all_runnable(&self.pids)
    }

    /// Starts `faultline <args…>` (a `container-pause`) in the background as `name`, waits
    /// until its journal entry is applied and checks the container is frozen.
    ///
    /// # Panics
    /// When it is not applied within 20 s or not frozen then.
    pub fn inject(&self, s: &Scratch, name: &str, args: &[&str]) -> Bg {
        let bg = s.spawn(name, args);
        let applied = s.wait_applied("container-pause", Duration::from_secs(20));
        assert!(applied.is_some(), "{name}: not applied: {}", bg.stderr());
        assert!(
            self.frozen(),
            "{name}: not frozen: {:?}",
            states(&self.pids)
        );
        bg
    }

    /// SIGTERM to the injector: it exits 0 and the container is thawed.
    ///
    /// # Panics
    /// When the injector does not exit 0 within 20 s or the container is not thawed 5 s later.
    pub fn sigterm_thaws(&self, mut bg: Bg) {
        bg.signal(Signal::SIGTERM);
        let status = bg.wait_exit(Duration::from_secs(20));
        assert!(
            status.is_some_and(|s| s.success()),
            "{status:?}: {}",
            bg.stderr()
        );
        let thawed = wait_until(Duration::from_secs(5), || self.thawed());
        assert!(thawed, "not thawed: {:?}", states(&self.pids));
    }

    /// SIGKILL to the injector: the container stays frozen (only the journal can undo it).
    ///
    /// # Panics
    /// When the injector does not die or the container was thawed without a revert.
    pub fn sigkill_keeps_it_frozen(&self, mut bg: Bg) {
        bg.signal(Signal::SIGKILL);
        let died = bg.wait_exit(Duration::from_secs(5));
        assert!(died.is_some(), "the injector survives SIGKILL");
        assert!(
            self.frozen(),
            "thawed without a revert: {:?}",
            states(&self.pids)
        );
    }

    /// `faultline fault revert --all` reverts the journal entry and the container is thawed.
    ///
    /// # Panics
    /// When the command fails, reports no revert, or the container is still frozen.
    pub fn revert_all_thaws(&self, s: &Scratch) {
        let out = s.run(&["fault", "revert", "--all"]);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && stdout.contains(": reverted"),
            "{stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            self.thawed(),
            "not thawed by revert --all: {:?}",
            states(&self.pids)
        );
    }
}

/// Thaws the cgroups it holds when dropped, also when the test panics.
#[derive(Debug, Default)]
pub struct ThawOnDrop {
    paths: Vec<String>,
}

impl ThawOnDrop {
    /// A guard for freezer cgroup `path`.
    pub fn add(&mut self, path: &str) {
        self.paths.push(path.to_owned());
    }
}

impl Drop for ThawOnDrop {
    fn drop(&mut self) {
        for path in &self.paths {
            let d = dir(path);
            let _ = fs::write(d.join("freezer.state"), "THAWED");
            let _ = fs::write(d.join("cgroup.freeze"), "0");
        }
    }
}
