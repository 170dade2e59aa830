//! A real podman for the container-fault tests, owned by the test: Debian's `podman` with its
//! own storage root, run root and tmp dir in one temporary directory, its Docker-compatible
//! API served by `podman system service` on a socket of its own, and the workload image
//! loaded from a `docker save` tarball (no image is ever pulled). It never touches the
//! machine's podman storage (`/var/lib/containers`) or Docker's engine.
//!
//! What this machine needed (measured): root here lacks `CAP_SYS_RESOURCE`, and podman asks
//! runc for the highest `RLIMIT_NOFILE` and `RLIMIT_NPROC` by default, so every `podman run`
//! failed with `error setting rlimit type 7: operation not permitted` (then type 6 with only
//! `--ulimit nofile` given). Giving both limits at or below the current hard limits
//! (`--ulimit nofile=1024:1024 --ulimit nproc=1024:1024`) lets containers run. Containers use
//! the host network (no CNI or netavark) and the cgroupfs manager (no systemd here), so a
//! container's cgroup is `/libpod_parent/libpod-<id>`.
//!
//! [`Podman::start`] returns `None` (printed as SKIPPED) when podman or Docker (to build the
//! image) is missing, or when podman cannot run a container here, with podman's own words;
//! under CI it fails instead. Dropping it removes every container, stops the API service,
//! unmounts what is left under its directory and removes the directory, also on panic.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tempfile::TempDir;

use crate::chaos::wait_until;
use crate::containerd::on_ci;

/// The limits every `podman run` here is given (see the module docs).
const ULIMITS: [&str; 4] = [
    "--ulimit",
    "nofile=1024:1024",
    "--ulimit",
    "nproc=1024:1024",
];

/// The parent cgroup of podman's containers and conmons under the cgroupfs manager.
const PARENT: &str = "libpod_parent";

/// The workload image as podman names it after the load.
pub const IMAGE: &str = "localhost/faultline-workload:test";

/// A podman of the test's own; see the module docs.
#[derive(Debug)]
pub struct Podman {
    service: Child,
    socket: PathBuf,
    /// Cgroup roots where podman's parent cgroup (`libpod_parent`) was there before.
    parent_existed: Vec<PathBuf>,
    // Last: removed after the clean-up in Drop.
    dir: TempDir,
}

impl Podman {
    /// Sets podman up and checks it can run a container here; `None` (printed as SKIPPED)
    /// when it cannot, outside CI.
    ///
    /// # Panics
    /// Under CI when podman or Docker is missing or podman cannot run a container; anywhere
    /// when the image cannot be loaded or the API service does not come up within 30 s.
    pub fn start(test: &str) -> Option<Self> {
        let missing: Vec<&str> = ["podman", "docker"]
            .into_iter()
            .filter(|tool| {
                Command::new(tool)
                    .arg("--version")
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status()
                    .map_or(true, |s| !s.success())
            })
            .collect();
        if !missing.is_empty() {
            assert!(
                !on_ci(),
                "{test}: required under CI but missing: {} (.ci/run installs podman)",
                missing.join(", ")
            );
            eprintln!("SKIPPED {test}: missing {}", missing.join(", "));
            return None;
        }
        let dir = tempfile::Builder::new()
            .prefix("faultline-podman-")
            .tempdir()
            .unwrap_or_else(|e| panic!("tempdir: {e}"));
        fs::create_dir_all(dir.path().join("tmp")).unwrap_or_else(|e| panic!("mkdir tmp: {e}"));
        let socket = dir.path().join("podman.sock");
        let image = crate::docker::workload_image();
        let tarball = dir.path().join("workload.tar");
        let saved = Command::new("docker")
            .args(["save", "-o"])
            .arg(&tarball)
            .arg(image)
            .output()
            .unwrap_or_else(|e| panic!("docker save: {e}"));
        assert!(
            saved.status.success(),
            "docker save: {}",
            text(&saved.stderr)
        );
        let parent_existed = crate::chaos::cgroup_roots()
            .into_iter()
            .filter(|root| root.join(PARENT).exists())
            .collect();
        let log = fs::File::create(dir.path().join("service.log"))
            .unwrap_or_else(|e| panic!("service.log: {e}"));
        let service = base(dir.path())
            .args(["system", "service", "--time=0"])
            .arg(format!("unix://{}", socket.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("podman system service: {e}"));
        let podman = Podman {
            service,
            socket,
            parent_existed,
            dir,
        };
        let tarball = tarball.display().to_string();
        let loaded = podman.podman(&["load", "-i", &tarball]);
        assert!(
            loaded.status.success(),
            "podman load: {}",
            text(&loaded.stderr)
        );
        // Can podman run a container here at all? (The rlimit refusal happens at run time.)
        let probe = podman.podman(&[
            "run",
            "--rm",
            "--network",
            "host",
            ULIMITS[0],
            ULIMITS[1],
            ULIMITS[2],
            ULIMITS[3],
            IMAGE,
            "--duration",
            "0s",
        ]);
        if !probe.status.success() {
            let why = text(&probe.stderr);
            assert!(
                !on_ci(),
                "{test}: podman cannot run a container here: {why}"
            );
            eprintln!("SKIPPED {test}: podman cannot run a container here: {why}");
            return None;
        }
        let up = wait_until(Duration::from_secs(30), || {
            std::os::unix::net::UnixStream::connect(&podman.socket).is_ok()
        });
        assert!(
            up,
            "podman system service did not listen on {} within 30 s: {}",
            podman.socket.display(),
            fs::read_to_string(podman.dir.path().join("service.log")).unwrap_or_default()
        );
        Some(podman)
    }

    /// The Docker-compatible API socket.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// `podman <args…>` with this instance's storage.
    pub fn podman(&self, args: &[&str]) -> std::process::Output {
        base(self.dir.path())
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("podman {args:?}: {e}"))
    }

    /// Runs the workload (`faultline-workload <args…>`) detached as `name` with the labels
    /// (`KEY=VALUE`) on the host network, and waits until it printed its ready line; its id.
    ///
    /// # Panics
    /// When podman refuses or the workload is not ready within 30 s.
    pub fn run(&self, name: &str, labels: &[&str], args: &[&str]) -> String {
        let mut argv = vec!["run", "-d", "--name", name, "--network", "host"];
        argv.extend(ULIMITS);
        for l in labels {
            argv.extend(["--label", l]);
        }
        argv.push(IMAGE);
        argv.extend_from_slice(args);
        let out = self.podman(&argv);
        assert!(
            out.status.success(),
            "podman {argv:?}: {}",
            text(&out.stderr)
        );
        let id = text(&out.stdout).trim().to_owned();
        let ready = wait_until(Duration::from_secs(30), || {
            let logs = self.podman(&["logs", &id]);
            text(&logs.stdout).contains("ready ") || text(&logs.stderr).contains("ready ")
        });
        assert!(ready, "{name}: no ready line within 30 s");
        id
    }

    /// `podman inspect -f {{.State.Status}}` (running, exited, paused…).
    pub fn status(&self, id: &str) -> String {
        text(
            &self
                .podman(&["inspect", "-f", "{{.State.Status}}", id])
                .stdout,
        )
        .trim()
        .to_owned()
    }

    /// The container's main process on the host.
    pub fn main_pid(&self, id: &str) -> i32 {
        text(&self.podman(&["inspect", "-f", "{{.State.Pid}}", id]).stdout)
            .trim()
            .parse()
            .unwrap_or(0)
    }
}

/// `podman` with the storage, run root and tmp dir of the instance in `dir`.
fn base(dir: &Path) -> Command {
    let mut cmd = Command::new("podman");
    cmd.arg("--root")
        .arg(dir.join("root"))
        .arg("--runroot")
        .arg(dir.join("runroot"))
        .arg("--tmpdir")
        .arg(dir.join("tmp"))
        .args(["--cgroup-manager", "cgroupfs", "--events-backend", "file"]);
    cmd
}

/// The live processes whose command line names `dir` (this instance's podman and conmon
/// processes, and nothing else: the directory is a fresh temporary one).
fn processes_naming(dir: &Path) -> Vec<i32> {
    let needle = dir.as_os_str().as_encoded_bytes();
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| crate::chaos::running(*pid))
        .filter(|pid| {
            fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|cmdline| {
                cmdline
                    .split(|b| *b == 0)
                    .any(|arg| arg.windows(needle.len()).any(|w| w == needle))
            })
        })
        .collect()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

impl Drop for Podman {
    fn drop(&mut self) {
        let _ = self.podman(&["rm", "-f", "-a", "-t", "0"]);
        let pid = Pid::from_raw(i32::try_from(self.service.id()).unwrap_or(i32::MAX));
        let _ = kill(pid, Signal::SIGTERM);
        if !wait_until(Duration::from_secs(10), || {
            matches!(self.service.try_wait(), Ok(Some(_)))
        }) {
            let _ = self.service.kill();
        }
        let _ = self.service.wait();
        // Each container's conmon runs `podman … container cleanup` as the container exits,
        // and that podman mounts the storage again: wait for every process naming this
        // instance's directory (SIGKILL to what is left after 10 s: only ours name it).
        let ours = || processes_naming(self.dir.path());
        if !wait_until(Duration::from_secs(10), || ours().is_empty()) {
            for pid in ours() {
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
            let _ = wait_until(Duration::from_secs(5), || ours().is_empty());
        }
        // Its storage driver bind-mounts its own home under the directory.
        crate::chaos::unmount_below(self.dir.path());
        // The parent cgroups podman made, where it made them (empty now; a cgroup directory
        // with only control files in it is removed by rmdir).
        for root in crate::chaos::cgroup_roots() {
            if !self.parent_existed.contains(&root) {
                let _ = fs::remove_dir(root.join(PARENT).join("conmon"));
                let _ = fs::remove_dir(root.join(PARENT));
            }
        }
    }
}
