//! Fixtures for the game-day test (`tests/gameday.rs`): node containers on a private Docker
//! network the test creates, each running `faultline run` (API on 0.0.0.0 inside the
//! container, published on a random 127.0.0.1 port of the host) and the project's echo
//! service under the workload's `supervise` mode (a tiny PID 1 that restarts it), all in
//! one `FROM scratch` image built from the agent image of `deploy/docker/build-local.sh`
//! plus the static workload. Plain `docker network` and `docker run` (no compose plugin
//! is installed on the project's machines).
//!
//! The host reaches the agents only through the published loopback ports. Everything is
//! removed on drop (containers with their volumes, then the network), also when the test
//! fails.
//!
//! Also here, for every game-day test: [`spawn_game`] and [`wait_game`], the real
//! `faultline gameday run` as a child process; [`local_agents`], agents on this host's
//! loopback for games without Docker; and [`StoppedSeen`], the test's own record from /proc
//! of when the processes a game pauses were stopped.

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use crate::deploy::{DockerRun, agent_image};
use crate::docker::workload_binary;
use crate::drill::{api_call as http, poll_for};

/// The node image [`node_image`] builds.
pub const NODE_IMAGE: &str = "faultline-gameday-node:test";

/// The agent image plus the static workload, built once per test process.
///
/// # Panics
/// When a build fails.
pub fn node_image() -> &'static str {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        let base = agent_image();
        let bin = workload_binary();
        let ctx = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
        std::fs::copy(&bin, ctx.path().join("faultline-workload"))
            .unwrap_or_else(|e| panic!("copy {}: {e}", bin.display()));
        std::fs::write(
            ctx.path().join("Dockerfile"),
            format!(
                "FROM {base}\nLABEL org.faultline.test=gameday-node\n\
                 COPY faultline-workload /faultline-workload\n\
                 ENTRYPOINT [\"/faultline-workload\"]\n"
            ),
        )
        .unwrap_or_else(|e| panic!("Dockerfile: {e}"));
        let out = Command::new("docker")
            .env("DOCKER_BUILDKIT", "0")
            .args(["build", "-q", "-t", NODE_IMAGE])
            .arg(ctx.path())
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("docker build: {e}"));
        assert!(
            out.status.success(),
            "docker build {NODE_IMAGE} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    });
    NODE_IMAGE
}

fn docker(args: &[&str]) -> std::process::Output {
    Command::new("docker")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("docker {args:?}: {e}"))
}

/// A Docker network this test created; removed on drop (after the containers, which are
/// declared after it and so dropped first).
#[derive(Debug)]
pub struct Network {
    /// Its name.
    pub name: String,
}

impl Network {
    /// `docker network create --internal=false <name>` (a user-defined bridge).
    ///
    /// # Panics
    /// When docker fails.
    pub fn create(hint: &str) -> Self {
        let name = format!("faultline-test-{}-{hint}", std::process::id());
        let out = docker(&[
            "network",
            "create",
            "--label",
            "org.faultline.test=1",
            &name,
        ]);
        assert!(
            out.status.success(),
            "docker network create {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Self { name }
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        let _ = Command::new("docker")
            .args(["network", "rm", &self.name])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// One node: a container of [`node_image`] on a [`Network`].
#[derive(Debug)]
pub struct Node {
    /// Its name on the network (also the container's hostname).
    pub name: String,
    /// The container.
    pub run: DockerRun,
    /// The agent API as the host reaches it: `127.0.0.1:<published port>`.
    pub api: String,
    network: String,
}

/// The agent's config inside every node: API on 0.0.0.0:9465 with the tokens of
/// `/etc/faultline/tokens.yaml`, no OTLP export, the drills of `drills` (paths inside the
/// container).
pub fn node_config(drills: &[&str]) -> String {
    let mut c = String::from(
        "interval: 10s\nexport:\n  otlp:\n    enabled: false\napi:\n  enabled: true\n  listen: 0.0.0.0:9465\n  tokens_file: /etc/faultline/tokens.yaml\n",
    );
    if !drills.is_empty() {
        c.push_str("drills:\n");
        for d in drills {
            c.push_str(&format!("  - scenario: {d}\n"));
        }
    }
    c
}

impl Node {
    /// Starts a node: `etc` (holding `faultline.yaml`, `tokens.yaml` and any scenario
    /// files) is mounted read-only at `/etc/faultline`; `service` is the supervised
    /// service's command line (restarted 1 s after it exits).
    ///
    /// # Panics
    /// When docker fails or the API does not answer within 60 s.
    pub fn start(network: &Network, name: &str, etc: &Path, service: &[&str]) -> Self {
        let cname = format!("{}-{name}", network.name);
        let mut args: Vec<String> = [
            "--network",
            &network.name,
            "--network-alias",
            name,
            "--hostname",
            name,
            "-p",
            "127.0.0.1::9465",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        args.push(format!(
            "--mount=type=bind,src={},dst=/etc/faultline,readonly",
            etc.display()
        ));
        args.push(node_image().to_owned());
        for a in ["supervise", "--restart-delay", "1s", "--"] {
            args.push(a.to_owned());
        }
        args.extend(service.iter().map(|s| (*s).to_owned()));
        for a in [
            ":::",
            "/faultline",
            "--state-dir",
            "/var/lib/faultline",
            "run",
            "--config",
            "/etc/faultline/faultline.yaml",
        ] {
            args.push(a.to_owned());
        }
        let run = DockerRun::start(&cname, &args);
        let out = docker(&["port", &run.id, "9465/tcp"]);
        let api = String::from_utf8_lossy(&out.stdout)
            .lines()
            .find(|l| l.starts_with("127.0.0.1:"))
            .unwrap_or_else(|| panic!("no published API port for {name}: {out:?}"))
            .trim()
            .to_owned();
        let node = Self {
            name: name.to_owned(),
            run,
            api,
            network: network.name.clone(),
        };
        let up = crate::drill::poll_for(Duration::from_secs(60), || {
            (http(&node.api, "GET", "/healthz", None, "").0 == 200).then_some(())
        });
        assert!(
            up.is_some(),
            "the agent of {name} did not answer on {}:\n{}",
            node.api,
            node.run.logs()
        );
        node
    }

    /// `docker network disconnect -f`: the node keeps running, unreachable.
    ///
    /// # Panics
    /// When docker fails.
    pub fn disconnect(&self) {
        let out = docker(&["network", "disconnect", "-f", &self.network, &self.run.id]);
        assert!(
            out.status.success(),
            "disconnect {}: {}",
            self.name,
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// `docker network connect` again; returns the API address (the published port may
    /// change).
    ///
    /// # Panics
    /// When docker fails.
    pub fn reconnect(&mut self) -> String {
        let out = docker(&[
            "network",
            "connect",
            "--alias",
            &self.name,
            &self.network,
            &self.run.id,
        ]);
        assert!(
            out.status.success(),
            "connect {}: {}",
            self.name,
            String::from_utf8_lossy(&out.stderr)
        );
        let out = docker(&["port", &self.run.id, "9465/tcp"]);
        if let Some(a) = String::from_utf8_lossy(&out.stdout)
            .lines()
            .find(|l| l.starts_with("127.0.0.1:"))
        {
            self.api = a.trim().to_owned();
        }
        self.api.clone()
    }

    /// The host pids and `ps` state letters of the processes in the container whose
    /// command line contains `needle` (`docker top`).
    pub fn processes(&self, needle: &str) -> Vec<(i32, char)> {
        let out = docker(&["top", &self.run.id, "-eo", "pid,args"]);
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .skip(1)
            .filter(|l| l.contains(needle))
            .filter_map(|l| l.split_whitespace().next()?.parse::<i32>().ok())
            .filter_map(|pid| Some((pid, crate::chaos::state(pid)?)))
            .collect()
    }
}

/// `faultline gameday run FILE --report-json DIR/<stem>.json --html DIR/<stem>.html`, its
/// output piped ([`wait_game`] collects it).
///
/// # Panics
/// When it cannot be spawned.
pub fn spawn_game(dir: &Path, file: &Path) -> std::process::Child {
    let stem = file
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| panic!("{} has no file name", file.display()));
    let mut cmd = crate::agent::faultline_command();
    cmd.args(["gameday", "run"])
        .arg(file)
        .arg("--report-json")
        .arg(dir.join(format!("{stem}.json")))
        .arg("--html")
        .arg(dir.join(format!("{stem}.html")))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd.spawn()
        .unwrap_or_else(|e| panic!("spawning {cmd:?}: {e}"))
}

/// Waits up to `timeout` for a game [`spawn_game`] started (killed past it); its exit code
/// and its stdout and stderr together.
///
/// # Panics
/// When the game did not end within `timeout`, or its output cannot be read.
pub fn wait_game(mut child: std::process::Child, timeout: Duration) -> (i32, String) {
    let done = poll_for(timeout, || {
        child
            .try_wait()
            .unwrap_or_else(|e| panic!("waiting for the game: {e}"))
    });
    if done.is_none() {
        let _ = child.kill();
    }
    let out = child
        .wait_with_output()
        .unwrap_or_else(|e| panic!("reading the game's output: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        done.is_some(),
        "the game did not end within {timeout:?}:\n{text}"
    );
    (out.status.code().unwrap_or(-1), text)
}

/// `n` agents on this host for game days without Docker: `faultline run` with the API on a
/// free 127.0.0.1 port each, `tokens` as their tokens file, no export. Returns each agent
/// and its API address once every one answers `/healthz`.
///
/// # Panics
/// When an agent does not answer within 30 s.
pub fn local_agents(n: usize, tokens: &Path) -> Vec<(crate::Agent, String)> {
    let agents: Vec<(crate::Agent, String)> = (0..n)
        .map(|_| {
            let api = format!("127.0.0.1:{}", crate::backup::free_port());
            let agent = crate::Agent::start(&format!(
                "interval: 10s\nexport:\n  otlp:\n    enabled: false\n{}",
                crate::drill::api_section(&api, tokens, &[])
            ));
            (agent, api)
        })
        .collect();
    for (agent, api) in &agents {
        let up = poll_for(Duration::from_secs(30), || {
            (http(api, "GET", "/healthz", None, "").0 == 200).then_some(())
        });
        assert!(
            up.is_some(),
            "the agent on {api} did not come up:\n{}",
            agent.stderr()
        );
    }
    agents
}

/// Per pid: when it was first and last seen stopped (Unix seconds), if ever.
type StopSpans = Vec<(i32, Option<(f64, f64)>)>;

/// The test's own record of when each of some processes was seen stopped (state `T` in
/// `/proc`), read every 5 ms on a thread until dropped.
#[derive(Debug)]
pub struct StoppedSeen {
    seen: std::sync::Arc<std::sync::Mutex<StopSpans>>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl StoppedSeen {
    /// Starts watching `pids`.
    pub fn start(pids: &[i32]) -> Self {
        use std::sync::atomic::Ordering;
        let seen = std::sync::Arc::new(std::sync::Mutex::new(
            pids.iter().map(|p| (*p, None)).collect::<StopSpans>(),
        ));
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (s, st) = (seen.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            while !st.load(Ordering::Relaxed) {
                let now = crate::stopwatch::unix_now();
                for (pid, span) in s.lock().unwrap_or_else(|e| e.into_inner()).iter_mut() {
                    if crate::chaos::state(*pid) == Some('T') {
                        let first = span.map_or(now, |(f, _)| f);
                        *span = Some((first, now));
                    }
                }
                // A dedicated thread polling /proc, not an async worker.
                #[allow(clippy::disallowed_methods)]
                std::thread::sleep(Duration::from_millis(5));
            }
        });
        Self {
            seen,
            stop,
            thread: Some(thread),
        }
    }

    /// When `pid` was first and last seen stopped (Unix seconds), if ever.
    pub fn stopped(&self, pid: i32) -> Option<(f64, f64)> {
        self.seen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .find(|(p, _)| *p == pid)
            .and_then(|(_, span)| *span)
    }
}

impl Drop for StoppedSeen {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
