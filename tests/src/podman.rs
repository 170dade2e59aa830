//! A real podman, run by the test itself: Debian's `podman` with its own storage root, run
//! root, temporary and event files, configuration and Docker-compatible API socket
//! (`podman system service --time=0 unix://<dir>/podman.sock`), all in one temporary
//! directory. It never touches the machine's podman storage (`/var/lib/containers`,
//! `/run/containers`) nor Docker's engine, which only builds the image: the workload image of
//! [`crate::docker`] is `docker save`d and `podman load`ed (as
//! `localhost/faultline-workload:test`), so no image is ever pulled.
//!
//! What this machine needed (measured; see [`containers_conf`]):
//! - Explicit, lowered `nofile` and `nproc` limits: root here lacks `CAP_SYS_RESOURCE`, and
//!   podman's defaults for root containers (raised limits) make every `podman run` fail with
//!   `error setting rlimit type 7: operation not permitted` (nofile), then type 6 (nproc)
//!   once nofile is set. `default_ulimits` in the instance's `containers.conf` covers
//!   containers made through the CLI and through the API alike.
//! - Host networking and the cgroupfs cgroup manager (no CNI or netavark setup, no systemd),
//!   which puts containers at `libpod_parent/libpod-<id>`.
//!
//! Dropping the guard (also when the test panics) removes its containers, stops the API
//! service, kills any of its conmon or container processes that are left, removes their
//! cgroups (and `libpod_parent` when this process's podmans made it), unmounts whatever is
//! still mounted under its directory and removes the directory. [`podman_available`]
//! decides between running and skipping: a missing tool skips with a printed reason, except
//! under CI, where it fails.

use std::fs;
use std::io::{Read as _, Write as _};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tempfile::TempDir;

use crate::chaos::wait_until;
use crate::containerd::{SharedDirs, cgroup_roots, on_path, run, unmount_under};
use crate::in_ci as on_ci;

/// The workload image as podman names it after `podman load`.
pub const IMAGE: &str = "localhost/faultline-workload:test";
/// Where podman's cgroupfs manager puts containers (`libpod-<id>`) and their monitors
/// (`conmon`).
const PARENT: &str = "libpod_parent";

/// Whether podman and a Docker engine (to build the image) are here. When not: prints why
/// `test` is skipped and returns `false`, or panics under CI ([`on_ci`]), where `.ci/run`
/// installs podman.
pub fn podman_available(test: &str) -> bool {
    let mut missing = Vec::new();
    if on_path("podman").is_none() {
        missing.push("podman");
    }
    let docker = Command::new("docker")
        .args(["version", "--format", "{{.Server.Version}}"])
        .stdin(Stdio::null())
        .output();
    if !matches!(docker, Ok(ref out) if out.status.success()) {
        missing.push("a Docker engine (builds the workload image)");
    }
    if missing.is_empty() {
        return true;
    }
    assert!(
        !on_ci(),
        "{test}: required under CI but missing: {} (.ci/run installs podman)",
        missing.join(", ")
    );
    eprintln!("SKIPPED {test}: missing {}", missing.join(", "));
    false
}

/// The `containers.conf` of an instance living in `dir`.
pub fn containers_conf(dir: &Path) -> String {
    let d = dir.display();
    format!(
        r#"[containers]
# Root here lacks CAP_SYS_RESOURCE: podman's raised defaults fail with "error setting rlimit
# type 7" (nofile) and "type 6" (nproc).
default_ulimits = ["nofile=1024:1024", "nproc=1024:1024"]
netns = "host"

[engine]
cgroup_manager = "cgroupfs"
events_logger = "file"
events_logfile_path = "{d}/events.log"
tmp_dir = "{d}/tmp"
"#
    )
}

/// A podman owned by the test; see the module docs. Everything goes on drop.
#[derive(Debug)]
pub struct Podman {
    socket: PathBuf,
    service: Child,
    log: PathBuf,
    /// The containers [`Podman::run`] started.
    ids: Mutex<Vec<String>>,
    // Last: removed after the cleanup in Drop.
    dir: TempDir,
}

impl Podman {
    /// Writes the instance's configuration, loads the workload image and starts the API
    /// service, waiting until it answers. `None` (printed as SKIPPED) when a tool is missing
    /// outside CI.
    ///
    /// # Panics
    /// When the image cannot be built or loaded, or the service does not answer within 30 s
    /// (its log is in the message).
    pub fn start(test: &str) -> Option<Self> {
        if !podman_available(test) {
            return None;
        }
        let dir = tempfile::Builder::new()
            .prefix("faultline-podman-")
            .tempdir()
            .unwrap_or_else(|e| panic!("tempdir: {e}"));
        fs::create_dir_all(dir.path().join("tmp")).unwrap_or_else(|e| panic!("mkdir tmp: {e}"));
        let conf = dir.path().join("containers.conf");
        fs::write(&conf, containers_conf(dir.path()))
            .unwrap_or_else(|e| panic!("{}: {e}", conf.display()));
        let tarball = dir.path().join("workload.tar");
        run(Command::new("docker")
            .args(["save", "-o"])
            .arg(&tarball)
            .arg(crate::docker::workload_image()));
        MADE.register(&made_dirs());
        let socket = dir.path().join("podman.sock");
        let log = dir.path().join("service.log");
        let log_file = fs::File::create(&log).unwrap_or_else(|e| panic!("{}: {e}", log.display()));
        let log_err = log_file
            .try_clone()
            .unwrap_or_else(|e| panic!("{}: {e}", log.display()));
        // The service outlives every call: it must end with the test (ending_with_test).
        let service = with_storage(crate::ending_with_test("podman"), dir.path())
            .args(["system", "service", "--time=0"])
            .arg(format!("unix://{}", socket.display()))
            .stdin(Stdio::null())
            .stdout(log_file)
            .stderr(log_err)
            .spawn()
            .unwrap_or_else(|e| panic!("podman system service: {e}"));
        let podman = Self {
            socket,
            service,
            log,
            ids: Mutex::new(Vec::new()),
            dir,
        };
        run(podman.command().arg("load").arg("-i").arg(&tarball));
        podman.wait_for_service(Duration::from_secs(30));
        Some(podman)
    }

    /// The Docker-compatible API socket.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// The API service's log so far (for failure messages).
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `podman` with this instance's storage, run root and configuration.
    pub fn command(&self) -> Command {
        podman_command(self.dir.path())
    }

    /// Runs a detached container `name` of the workload image (`faultline-workload <args>`)
    /// with `labels`, and returns its ID.
    ///
    /// # Panics
    /// When podman refuses (its stderr is in the message).
    pub fn run(&self, name: &str, labels: &[(&str, &str)], args: &[&str]) -> String {
        let mut cmd = self.command();
        cmd.args(["run", "-d", "--name", name]);
        for (key, value) in labels {
            cmd.arg("--label").arg(format!("{key}={value}"));
        }
        cmd.arg(IMAGE).args(args);
        let id = run(&mut cmd);
        self.ids
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(id.clone());
        id
    }

    /// `podman inspect --format <format>` of container `id`.
    ///
    /// # Panics
    /// When podman does not know the container.
    pub fn inspect(&self, id: &str, format: &str) -> String {
        run(self.command().args(["inspect", "--format", format, id]))
    }

    /// The main process of container `id`, from `podman inspect`.
    ///
    /// # Panics
    /// When podman does not know the container or it has no process.
    pub fn pid(&self, id: &str) -> i32 {
        let pid = self.inspect(id, "{{.State.Pid}}");
        pid.parse()
            .ok()
            .filter(|p| *p > 0)
            .unwrap_or_else(|| panic!("podman container {id} has no process: {pid:?}"))
    }

    /// The state of container `id` (`running`, `paused`, `exited`…); empty when podman
    /// does not know it (no panic: a removed container is a state too).
    pub fn status(&self, id: &str) -> String {
        self.command()
            .args(["inspect", "--format", "{{.State.Status}}", id])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .unwrap_or_default()
    }

    /// Waits until the socket answers `GET /_ping` with `200 OK`.
    fn wait_for_service(&self, timeout: Duration) {
        let answered = wait_until(timeout, || {
            ping(&self.socket).is_ok_and(|answer| answer.starts_with("HTTP/1.1 200"))
        });
        assert!(
            answered,
            "podman's API did not answer on {} within {timeout:?}; log:\n{}",
            self.socket.display(),
            self.log()
        );
    }

    /// SIGKILL to whatever of this instance still runs after `podman rm`: processes with the
    /// instance's directory on their command line (conmon, the service) and processes in the
    /// cgroup of a container it started (`…/libpod-<id>`).
    fn kill_leftovers(&self) {
        let dir = self.dir.path().as_os_str().as_encoded_bytes();
        let cgroups: Vec<String> = self
            .ids()
            .iter()
            .map(|id| format!("{PARENT}/libpod-{id}"))
            .collect();
        let Ok(entries) = fs::read_dir("/proc") else {
            return;
        };
        for pid in entries.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok()) {
            let by_cmdline = fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|raw| raw.windows(dir.len()).any(|w| w == dir));
            let in_container =
                fs::read_to_string(format!("/proc/{pid}/cgroup")).is_ok_and(|text| {
                    text.lines()
                        .any(|line| cgroups.iter().any(|c| line.ends_with(c.as_str())))
                });
            if by_cmdline || in_container {
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
        }
    }

    /// Removes the cgroups of the containers it started where they are left (a container
    /// killed above rather than removed by podman).
    fn remove_cgroups(&self) {
        for root in cgroup_roots() {
            for id in self.ids() {
                let _ = fs::remove_dir(root.join(PARENT).join(format!("libpod-{id}")));
            }
        }
    }

    fn ids(&self) -> Vec<String> {
        self.ids
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

/// One `GET /_ping` on the API socket: the answer's first line.
fn ping(socket: &Path) -> std::io::Result<String> {
    let mut stream = UnixStream::connect(socket)?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    stream.write_all(b"GET /_ping HTTP/1.1\r\nHost: podman\r\nConnection: close\r\n\r\n")?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer)?;
    Ok(answer.lines().next().unwrap_or("").to_owned())
}

/// This module's [`SharedDirs`].
static MADE: SharedDirs = SharedDirs::new();

/// The cgroups podman makes for its containers' parents, deepest first: `libpod_parent` and
/// its monitors' `conmon`.
fn made_dirs() -> Vec<PathBuf> {
    cgroup_roots()
        .into_iter()
        .flat_map(|root| [root.join(PARENT).join("conmon"), root.join(PARENT)])
        .collect()
}

/// `podman` with the storage, run root and configuration of the instance in `dir`.
fn podman_command(dir: &Path) -> Command {
    with_storage(Command::new("podman"), dir)
}

/// `cmd` (a podman command) with the storage and configuration of the instance in `dir`.
fn with_storage(mut cmd: Command, dir: &Path) -> Command {
    cmd.env("CONTAINERS_CONF", dir.join("containers.conf"))
        .arg("--root")
        .arg(dir.join("root"))
        .arg("--runroot")
        .arg(dir.join("runroot"));
    cmd
}

impl Drop for Podman {
    fn drop(&mut self) {
        let _ = self
            .command()
            .args(["rm", "--force", "--all", "--time", "0"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let pid = Pid::from_raw(i32::try_from(self.service.id()).unwrap_or(i32::MAX));
        let _ = kill(pid, Signal::SIGTERM);
        if !wait_until(Duration::from_secs(5), || {
            matches!(self.service.try_wait(), Ok(Some(_)))
        }) {
            let _ = self.service.kill();
        }
        let _ = self.service.wait();
        self.kill_leftovers();
        let _ = wait_until(Duration::from_secs(5), || {
            self.remove_cgroups();
            self.ids().iter().all(|id| {
                cgroup_roots()
                    .iter()
                    .all(|root| !root.join(PARENT).join(format!("libpod-{id}")).exists())
            })
        });
        unmount_under(self.dir.path(), "podman guard");
        MADE.release(&made_dirs());
    }
}
