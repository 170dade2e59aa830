//! Real Docker containers for integration tests, with no image registry.
//!
//! No image can be pulled on the project's machines, so [`workload_image`] builds one
//! `FROM scratch` around the project's own static workload program (`tests/workload`, crate
//! `faultline-workload`: burns a share of a CPU, holds memory, writes bytes, sends loopback
//! traffic, serves TCP). The binary is built once per test process with
//! `RUSTFLAGS='-C target-feature=+crt-static' cargo build -p faultline-workload --release
//! --target <arch>-unknown-linux-gnu`, the image once as `faultline-workload:test` (kept
//! between runs: rebuilding is a cache hit).
//!
//! [`Container`] starts one container and removes it (`docker rm -f`) when dropped, also when
//! the test panics. [`Topology`] is three of them — `web`, `other`, `peer` — on an internal
//! Docker network of the test's own ([`Network`]), for the network faults: each container has
//! its own network namespace, reached by the test through its main process's pid. [`docker_available`] decides between running and skipping: absent Docker
//! skips with a printed reason, except under CI (`CI` non-empty and not `false`/`0`), where it fails. [`api_get`] asks the
//! Engine API directly over its unix socket, for figures to compare with (`/stats`).
//!
//! Not here: assertions; those live in `tests/tests/containers.rs` and the fault tests.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use tokio::process::Command;

use crate::agent::{profile_dir, workspace_root};

/// The image [`workload_image`] builds.
pub const WORKLOAD_IMAGE: &str = "faultline-workload:test";
/// The Engine API socket.
pub const DOCKER_SOCKET: &str = "/var/run/docker.sock";

/// Whether a Docker engine answers. When it does not: prints why `test` is skipped and
/// returns `false`, or panics under CI (CI always has the engine).
pub fn docker_available(test: &str) -> bool {
    let out = std::process::Command::new("docker")
        .args(["version", "--format", "{{.Server.Version}}"])
        .stdin(Stdio::null())
        .output();
    let reason = match out {
        Ok(o) if o.status.success() => return true,
        Ok(o) => String::from_utf8_lossy(&o.stderr).trim().to_owned(),
        Err(e) => format!("cannot run docker: {e}"),
    };
    if crate::in_ci() {
        panic!("{test}: Docker is required on CI but not usable: {reason}");
    }
    eprintln!("SKIPPED {test}: no usable Docker engine ({reason})");
    false
}

/// The static workload binary, built once per test process.
///
/// # Panics
/// When the build fails.
pub fn workload_binary() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let target_root = profile_dir()
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| workspace_root().join("target"));
        let triple = format!("{}-unknown-linux-gnu", std::env::consts::ARCH);
        let mut cmd = crate::agent::nested_cargo();
        cmd.current_dir(workspace_root())
            .args([
                "build",
                "--quiet",
                "-p",
                "faultline-workload",
                "--release",
                "--target",
                &triple,
            ])
            .env("RUSTFLAGS", "-C target-feature=+crt-static")
            .env("CARGO_TARGET_DIR", &target_root);
        let status = cmd
            .status()
            .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
        assert!(status.success(), "{cmd:?} failed: {status}");
        let bin = target_root.join(&triple).join("release/faultline-workload");
        assert!(bin.is_file(), "{} missing after {cmd:?}", bin.display());
        bin
    })
    .clone()
}

/// The workload image, built once per test process (`FROM scratch`, the static binary as
/// entrypoint).
///
/// # Panics
/// When the build fails.
pub fn workload_image() -> &'static str {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        let bin = workload_binary();
        let ctx = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
        std::fs::copy(&bin, ctx.path().join("faultline-workload")).unwrap_or_else(|e| panic!("copy {}: {e}", bin.display()));
        std::fs::write(
            ctx.path().join("Dockerfile"),
            "FROM scratch\nLABEL org.faultline.test=workload\nCOPY faultline-workload /faultline-workload\nENTRYPOINT [\"/faultline-workload\"]\n",
        )
        .unwrap_or_else(|e| panic!("Dockerfile: {e}"));
        // The classic builder needs no buildx plugin and no registry.
        let out = std::process::Command::new("docker")
            .env("DOCKER_BUILDKIT", "0")
            .args(["build", "-q", "-t", WORKLOAD_IMAGE])
            .arg(ctx.path())
            .output()
            .unwrap_or_else(|e| panic!("docker build: {e}"));
        assert!(out.status.success(), "docker build failed: {}", String::from_utf8_lossy(&out.stderr));
    });
    WORKLOAD_IMAGE
}

async fn docker(args: &[&str]) -> std::process::Output {
    let out = Command::new("docker")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .await;
    out.unwrap_or_else(|e| panic!("docker {args:?}: {e}"))
}

async fn docker_ok(args: &[&str]) -> String {
    let out = docker(args).await;
    assert!(
        out.status.success(),
        "docker {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// A container this test started; removed with `docker rm -f` when dropped.
#[derive(Debug)]
pub struct Container {
    /// Full ID.
    pub id: String,
    /// Name (`faultline-test-<pid>-<n>-<hint>`).
    pub name: String,
}

impl Container {
    /// `docker run -d --name <unique> <docker_args> faultline-workload:test <workload_args>`.
    pub async fn run(hint: &str, docker_args: &[String], workload_args: &[&str]) -> Self {
        static N: AtomicUsize = AtomicUsize::new(0);
        let name = format!(
            "faultline-test-{}-{}-{hint}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        let image = workload_image();
        let mut args: Vec<&str> = vec![
            "run",
            "-d",
            "--name",
            &name,
            "--label",
            "org.faultline.test=1",
        ];
        args.extend(docker_args.iter().map(String::as_str));
        args.push(image);
        args.extend_from_slice(workload_args);
        let out = docker(&args).await;
        if !out.status.success() {
            // A half-created container still has to go.
            let _ = docker(&["rm", "-f", &name]).await;
            panic!(
                "docker {args:?} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let id = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        Self { id, name }
    }

    /// `docker logs` (stdout and stderr).
    pub async fn logs(&self) -> String {
        let out = docker(&["logs", &self.id]).await;
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    }

    /// Waits until the workload printed its `ready` line.
    ///
    /// # Panics
    /// When it does not within `timeout` (the logs are in the message).
    pub async fn wait_ready(&self, timeout: Duration) {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let logs = self.logs().await;
            if logs.contains("ready ") {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "container {} not ready within {timeout:?}; logs:\n{logs}",
                self.name
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// `docker stop -t 5` (the workload exits on SIGTERM at once).
    pub async fn stop(&self) {
        docker_ok(&["stop", "-t", "5", &self.id]).await;
    }

    /// `docker start`.
    pub async fn start(&self) {
        docker_ok(&["start", &self.id]).await;
    }

    /// `docker rename` to `new_name`; [`Self::name`] follows. Dropping still removes the
    /// container, by its ID.
    pub async fn rename(&mut self, new_name: &str) {
        docker_ok(&["rename", &self.id, new_name]).await;
        self.name = new_name.to_owned();
    }

    /// `docker inspect` of this container.
    pub async fn inspect(&self) -> serde_json::Value {
        api_get(&format!("/containers/{}/json", self.id)).await
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = std::process::Command::new("docker")
            .args(["rm", "-f", "-v", &self.id])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// A Docker network of the test's own (`--internal`, a `10.78.x.0/24` subnet), removed on drop
/// (after its containers, which must go first).
#[derive(Debug)]
pub struct Network {
    /// Its name: `faultline-test-net-<pid>-<tag>`.
    pub name: String,
    /// `10.78.N`: the first three octets of its subnet.
    prefix: [u8; 3],
}

impl Network {
    /// A network of this test's own: the name carries the pid and `tag` (Docker allows two
    /// networks of one name, and a binary's tests run in parallel); the first free subnet
    /// from one picked by the pid.
    ///
    /// # Panics
    /// When no subnet among 40 is free.
    pub fn create(tag: &str) -> Self {
        let name = format!("faultline-test-net-{}-{tag}", std::process::id());
        let run = |args: &[&str]| {
            std::process::Command::new("docker")
                .args(args)
                .stdin(Stdio::null())
                .output()
                .unwrap_or_else(|e| panic!("docker {args:?}: {e}"))
        };
        let _ = run(&["network", "rm", &name]);
        for n in (std::process::id() % 200)..(std::process::id() % 200 + 40) {
            let third = (n % 250) as u8;
            let subnet = format!("10.78.{third}.0/24");
            let out = run(&[
                "network",
                "create",
                "--internal",
                "--subnet",
                &subnet,
                &name,
            ]);
            if out.status.success() {
                return Network {
                    name,
                    prefix: [10, 78, third],
                };
            }
        }
        panic!("no free 10.78.x.0/24 subnet for a Docker network");
    }

    /// The address `.host` of its subnet.
    pub fn ip(&self, host: u8) -> std::net::Ipv4Addr {
        std::net::Ipv4Addr::new(self.prefix[0], self.prefix[1], self.prefix[2], host)
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        let _ = std::process::Command::new("docker")
            .args(["network", "rm", &self.name])
            .stdin(Stdio::null())
            .output();
    }
}

/// The host pid of a container's main process (its network namespace is the container's).
///
/// # Panics
/// When Docker reports none.
pub async fn pid_of(c: &Container) -> i32 {
    let pid = c.inspect().await["State"]["Pid"].as_i64();
    pid.and_then(|p| i32::try_from(p).ok())
        .filter(|p| *p > 0)
        .unwrap_or_else(|| panic!("container {}: no main pid", c.name))
}

/// Three workload containers on a [`Network`] of their own, each serving on port 7000: `web`
/// (a fault's target) at `.2`, `other` (a second container that must stay unaffected) at `.3`
/// and `peer` (where traffic goes; the test binds its own listeners in its namespace) at `.4`.
/// The fields drop in order: the containers, then the network.
#[derive(Debug)]
pub struct Topology {
    /// The target.
    pub web: Container,
    /// Its main process.
    pub web_pid: i32,
    /// The bystander.
    pub other: Container,
    /// Its main process.
    pub other_pid: i32,
    /// The peer.
    pub peer: Container,
    /// Its main process.
    pub peer_pid: i32,
    /// Their network.
    pub net: Network,
}

impl Topology {
    /// Starts the three and waits until each is ready; `tag` goes into their names.
    pub async fn start(tag: &str) -> Self {
        let net = Network::create(tag);
        let run = |host: u8, hint: String| {
            let args = vec![
                "--network".to_owned(),
                net.name.clone(),
                "--ip".to_owned(),
                net.ip(host).to_string(),
            ];
            async move {
                let c = Container::run(&hint, &args, &["--listen", "0.0.0.0:7000"]).await;
                c.wait_ready(Duration::from_secs(20)).await;
                c
            }
        };
        let web = run(2, format!("{tag}-web")).await;
        let other = run(3, format!("{tag}-other")).await;
        let peer = run(4, format!("{tag}-peer")).await;
        let (web_pid, other_pid, peer_pid) = (
            pid_of(&web).await,
            pid_of(&other).await,
            pid_of(&peer).await,
        );
        Topology {
            web,
            web_pid,
            other,
            other_pid,
            peer,
            peer_pid,
            net,
        }
    }

    /// `peer`'s address.
    pub fn peer_ip(&self) -> std::net::Ipv4Addr {
        self.net.ip(4)
    }

    /// Bytes per second from a sender in `from_pid`'s namespace to a receiver the test binds
    /// in `peer`'s namespace on `port` ([`crate::netns::throughput`]).
    pub fn throughput(&self, from_pid: i32, port: u16, bytes: usize) -> f64 {
        use crate::netns::{of_pid, throughput};
        let to = std::net::SocketAddr::from((self.peer_ip(), port));
        throughput(&of_pid(from_pid), &of_pid(self.peer_pid), to, bytes)
    }

    /// A connect from `from_pid`'s namespace to `peer` on `port` (listened on by the test).
    pub fn connect(
        &self,
        from_pid: i32,
        port: u16,
        timeout: Duration,
    ) -> std::io::Result<std::net::TcpStream> {
        let to = std::net::SocketAddr::from((self.peer_ip(), port));
        crate::netns::connect_from(&crate::netns::of_pid(from_pid), to, timeout)
    }

    /// A listener of the test's in `peer`'s namespace.
    pub fn listen_on_peer(&self, port: u16) -> std::net::TcpListener {
        crate::netns::listen_in(&crate::netns::of_pid(self.peer_pid), port)
    }
}

/// GET `path` from the Engine API over [`DOCKER_SOCKET`], as JSON.
///
/// # Panics
/// On any failure (a test helper: the panic is the report).
pub async fn api_get(path: &str) -> serde_json::Value {
    let stream = tokio::net::UnixStream::connect(DOCKER_SOCKET)
        .await
        .unwrap_or_else(|e| panic!("connect {DOCKER_SOCKET}: {e}"));
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake::<_, Empty<Bytes>>(TokioIo::new(stream))
            .await
            .unwrap_or_else(|e| panic!("handshake: {e}"));
    let driver = tokio::spawn(conn);
    let req = http::Request::get(format!("http://docker{path}"))
        .header("host", "docker")
        .body(Empty::new())
        .unwrap_or_else(|e| panic!("{e}"));
    let resp = sender
        .send_request(req)
        .await
        .unwrap_or_else(|e| panic!("GET {path}: {e}"));
    let status = resp.status();
    let body = resp
        .into_body()
        .collect()
        .await
        .unwrap_or_else(|e| panic!("GET {path}: {e}"))
        .to_bytes();
    driver.abort();
    assert!(
        status.is_success(),
        "GET {path}: {status}: {}",
        String::from_utf8_lossy(&body)
    );
    serde_json::from_slice(&body).unwrap_or_else(|e| panic!("GET {path}: {e}"))
}

/// The whole-disk device (`/dev/vda`) holding `path`, when it is on a block device.
/// cgroup v1 blkio throttle rules (`docker run --device-write-bps`) take whole disks only.
pub fn block_device_of(path: &Path) -> Option<(PathBuf, String)> {
    let dev = std::fs::metadata(path).ok()?.dev();
    let (major, minor) = (nix::sys::stat::major(dev), nix::sys::stat::minor(dev));
    let mut sys = std::fs::canonicalize(format!("/sys/dev/block/{major}:{minor}")).ok()?;
    if sys.join("partition").exists() {
        sys = sys.parent()?.to_path_buf();
    }
    let name = sys.file_name()?.to_str()?.to_owned();
    let node = PathBuf::from("/dev").join(&name);
    node.exists().then_some((node, name))
}
