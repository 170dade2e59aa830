//! The real `faultline` binary as a child process.
//!
//! [`agent_binary`] finds (and, once per test process, builds) the binary in the same target
//! directory and profile as the running test. [`Agent`] starts `faultline run` with a YAML
//! config and a state directory in a fresh temporary directory, sends its stdout and stderr to
//! files there for diagnostics, and never outlives the test: dropping it kills the child, and
//! a test that panics prints the agent's stderr first. [`run_cli`] runs one-shot subcommands
//! (`config validate`, `collect --once`) with a timeout.
//!
//! The child's environment is scrubbed of `OTEL_*` and `HOST_*` variables so the developer's
//! shell cannot change what a test exercises.

use std::ffi::OsStr;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Output, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use nix::sys::signal::{self, Signal};
use nix::unistd::Pid;
use tempfile::TempDir;
use tokio::process::{Child, Command};

/// Environment variables the agent reads that must not leak in from the caller's shell.
const SCRUBBED_ENV: &[&str] = &[
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
    "OTEL_EXPORTER_OTLP_PROTOCOL",
    "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL",
    "OTEL_EXPORTER_OTLP_HEADERS",
    "OTEL_EXPORTER_OTLP_METRICS_HEADERS",
    "OTEL_EXPORTER_OTLP_COMPRESSION",
    "OTEL_EXPORTER_OTLP_TIMEOUT",
    "OTEL_EXPORTER_OTLP_CERTIFICATE",
    "OTEL_EXPORTER_OTLP_METRICS_CERTIFICATE",
    "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE",
    "OTEL_EXPORTER_OTLP_METRICS_CLIENT_CERTIFICATE",
    "OTEL_EXPORTER_OTLP_CLIENT_KEY",
    "OTEL_EXPORTER_OTLP_METRICS_CLIENT_KEY",
    "OTEL_RESOURCE_ATTRIBUTES",
    "OTEL_SERVICE_NAME",
    "HOST_PROC",
    "HOST_SYS",
    "HOST_ROOT",
    "NODE_NAME",
    "RUST_LOG",
];

/// The workspace root (this crate's parent directory).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Where the test executable's profile directory is (`<target>/<profile>`), derived from the
/// running executable (`<target>/<profile>/deps/<test>-<hash>`), with `CARGO_TARGET_DIR`
/// taking precedence for the target root.
pub fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_else(|e| panic!("current_exe: {e}"));
    let deps = exe
        .parent()
        .unwrap_or_else(|| panic!("{} has no parent", exe.display()));
    let from_exe = if deps.file_name() == Some(OsStr::new("deps")) {
        deps.parent().unwrap_or(deps).to_path_buf()
    } else {
        deps.to_path_buf()
    };
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(target) => {
            let profile = from_exe.file_name().unwrap_or(OsStr::new("debug"));
            let target = PathBuf::from(target);
            let target = if target.is_absolute() {
                target
            } else {
                workspace_root().join(target)
            };
            target.join(profile)
        }
        None => from_exe,
    }
}

/// The path of the `faultline` binary matching the running test's profile.
///
/// The first call in a test process runs `cargo build -p faultline-agent --bin faultline`
/// (same profile, same target directory) — a no-op when the binary is fresh, and the only way
/// to be sure a stale binary is never what gets tested, since `cargo test -p faultline-tests`
/// does not build other packages' binaries. `FAULTLINE_BIN` names a prebuilt binary instead
/// and skips the build. Blocks while building.
///
/// # Panics
/// When the build fails or the binary is still missing afterwards.
pub fn agent_binary() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(bin) = std::env::var_os("FAULTLINE_BIN") {
            return PathBuf::from(bin);
        }
        let dir = profile_dir();
        let bin = dir.join("faultline");
        let mut cmd = nested_cargo();
        cmd.current_dir(workspace_root()).args([
            "build",
            "--quiet",
            "-p",
            "faultline-agent",
            "--bin",
            "faultline",
        ]);
        match dir.file_name().and_then(OsStr::to_str) {
            Some("debug") | None => {}
            Some("release") => {
                cmd.arg("--release");
            }
            Some(other) => {
                cmd.args(["--profile", other]);
            }
        }
        if let Some(target) = dir.parent() {
            cmd.env("CARGO_TARGET_DIR", target);
        }
        let status = cmd
            .status()
            .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
        assert!(status.success(), "{cmd:?} failed: {status}");
        assert!(bin.is_file(), "{} missing after {cmd:?}", bin.display());
        bin
    })
    .clone()
}

/// `cargo` (the one running the tests) for a nested build from a test, without the
/// variables `cargo test` sets for the test's own package (`CARGO_MANIFEST_DIR`,
/// `CARGO_PKG_*`, `OUT_DIR`, …). Build scripts track some of them (ring's
/// `rerun-if-env-changed=CARGO_MANIFEST_DIR`): inherited, they made every nested build rerun
/// ring's build script and recompile rustls, tonic and the agent (~80 s), and the next plain
/// `cargo build` recompile them back.
pub fn nested_cargo() -> std::process::Command {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = std::process::Command::new(cargo);
    without_package_env(&mut cmd);
    cmd
}

/// Removes from `cmd`'s environment what `cargo test` set for the test's own package (see
/// [`nested_cargo`]), for scripts that run cargo themselves.
pub fn without_package_env(cmd: &mut std::process::Command) {
    for (name, _) in std::env::vars_os() {
        let Some(name) = name.to_str() else { continue };
        let per_package = matches!(
            name,
            "CARGO_MANIFEST_DIR"
                | "CARGO_MANIFEST_PATH"
                | "CARGO_CRATE_NAME"
                | "CARGO_BIN_NAME"
                | "CARGO_PRIMARY_PACKAGE"
                | "CARGO_TARGET_TMPDIR"
                | "OUT_DIR"
        ) || name.starts_with("CARGO_PKG_")
            || name.starts_with("CARGO_BIN_EXE_");
        if per_package {
            cmd.env_remove(name);
        }
    }
}

/// A command for the agent binary with a scrubbed environment.
/// `faultline` as a command that ends with the test that starts it ([`crate::ending_with_test`]).
pub fn faultline_command() -> std::process::Command {
    crate::ending_with_test(agent_binary())
}

fn agent_command() -> Command {
    let mut cmd = Command::from(faultline_command());
    for var in SCRUBBED_ENV {
        cmd.env_remove(var);
    }
    cmd.stdin(Stdio::null()).kill_on_drop(true);
    cmd
}

/// Run a one-shot `faultline` command (for example `["config", "default"]`) and collect its
/// output.
///
/// # Panics
/// When it cannot be started or does not finish within `timeout` (it is killed then).
pub async fn run_cli<I, S>(args: I, timeout: Duration) -> Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut cmd = agent_command();
    cmd.args(args).stdout(Stdio::piped()).stderr(Stdio::piped());
    let desc = format!("{cmd:?}");
    match tokio::time::timeout(timeout, cmd.output()).await {
        Ok(Ok(out)) => out,
        Ok(Err(e)) => panic!("cannot run {desc}: {e}"),
        Err(_) => panic!("{desc} did not finish within {timeout:?}"),
    }
}

/// A running `faultline run`. Dropping it kills the process; its helper processes are checked
/// for strays before and after ([`crate::chaos::HelperWatch`]).
#[derive(Debug)]
pub struct Agent {
    child: Child,
    // Dropped (checked once more, the agent killed by now) before `dir`, whose journal it reads.
    helpers: crate::chaos::HelperWatch,
    dir: TempDir,
}

impl Agent {
    /// Write `config_yaml` to `<tmp>/faultline.yaml` and start
    /// `faultline --state-dir <tmp>/state run --config <tmp>/faultline.yaml`.
    ///
    /// # Panics
    /// When the temporary directory or the process cannot be created.
    pub fn start(config_yaml: &str) -> Self {
        Self::start_with_env(config_yaml, &[])
    }

    /// [`Self::start`] with extra environment variables.
    ///
    /// # Panics
    /// As [`Self::start`].
    pub fn start_with_env(config_yaml: &str, env: &[(&str, &str)]) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("faultline-it-")
            .tempdir()
            .unwrap_or_else(|e| panic!("tempdir: {e}"));
        let config = dir.path().join("faultline.yaml");
        fs::write(&config, config_yaml).unwrap_or_else(|e| panic!("{}: {e}", config.display()));
        let state = dir.path().join("state");
        fs::create_dir(&state).unwrap_or_else(|e| panic!("{}: {e}", state.display()));
        let helpers = crate::chaos::HelperWatch::new(&state);
        let open = |name: &str| {
            let path = dir.path().join(name);
            fs::File::create(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        };
        let mut cmd = agent_command();
        cmd.arg("--state-dir")
            .arg(&state)
            .arg("run")
            .arg("--config")
            .arg(&config)
            .envs(env.iter().copied())
            .env(crate::chaos::HELPER_MARK_VAR, helpers.mark())
            .stdout(open("stdout.log"))
            .stderr(open("stderr.log"));
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {cmd:?}: {e}"));
        Self {
            child,
            helpers,
            dir,
        }
    }

    /// The temporary directory holding config, state and logs.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Start `faultline run` again in the same directory (same config and state directory,
    /// logs appended) after the previous process ended ([`Self::kill`], [`Self::terminate`]).
    /// Extra environment given to [`Self::start_with_env`] is not repeated.
    ///
    /// # Panics
    /// When the previous process still runs or the new one cannot be spawned.
    pub fn restart(&mut self) {
        assert!(
            self.exit_status().is_some(),
            "restart: the previous agent process is still running"
        );
        let dir = self.dir.path();
        let append = |name: &str| {
            let path = dir.join(name);
            fs::OpenOptions::new()
                .append(true)
                .create(true)
                .open(&path)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        };
        let mut cmd = agent_command();
        cmd.arg("--state-dir")
            .arg(dir.join("state"))
            .arg("run")
            .arg("--config")
            .arg(dir.join("faultline.yaml"))
            .env(crate::chaos::HELPER_MARK_VAR, self.helpers.mark())
            .stdout(append("stdout.log"))
            .stderr(append("stderr.log"));
        self.child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {cmd:?}: {e}"));
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<Pid> {
        self.child
            .id()
            .and_then(|id| i32::try_from(id).ok())
            .map(Pid::from_raw)
    }

    /// What the agent wrote to stderr so far.
    pub fn stderr(&self) -> String {
        fs::read_to_string(self.dir.path().join("stderr.log")).unwrap_or_default()
    }

    /// What the agent wrote to stdout so far.
    pub fn stdout(&self) -> String {
        fs::read_to_string(self.dir.path().join("stdout.log")).unwrap_or_default()
    }

    /// The exit status if the process has ended, `None` while it runs.
    ///
    /// # Panics
    /// When the status cannot be queried.
    pub fn exit_status(&mut self) -> Option<ExitStatus> {
        self.child
            .try_wait()
            .unwrap_or_else(|e| panic!("try_wait: {e}"))
    }

    /// Send SIGTERM and wait up to `timeout` for the process to exit. Returns its status, or
    /// `None` if it was still running at the deadline (it is then killed).
    ///
    /// # Panics
    /// When the signal cannot be sent to a running process.
    pub async fn terminate(&mut self, timeout: Duration) -> Option<ExitStatus> {
        if let Some(status) = self.exit_status() {
            return Some(status);
        }
        if let Some(pid) = self.pid() {
            signal::kill(pid, Signal::SIGTERM).unwrap_or_else(|e| panic!("SIGTERM {pid}: {e}"));
        }
        match tokio::time::timeout(timeout, self.child.wait()).await {
            Ok(status) => Some(status.unwrap_or_else(|e| panic!("wait: {e}"))),
            Err(_) => {
                self.kill().await;
                None
            }
        }
    }

    /// Send SIGKILL and reap the process.
    pub async fn kill(&mut self) {
        if let Some(pid) = self.pid() {
            // ESRCH means it already exited; either way `wait` below reaps it.
            let _ = signal::kill(pid, Signal::SIGKILL);
        }
        let _ = self.child.wait().await;
    }

    /// Wait up to `timeout` for the agent's stderr to contain `needle` (re-reading the log
    /// every 50 ms). Returns whether it did.
    pub async fn wait_for_stderr(&self, needle: &str, timeout: Duration) -> bool {
        crate::eventually(timeout, || self.stderr().contains(needle)).await
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(pid) = self.pid() {
            // While it still runs: a helper it forgot to end would die with it unseen.
            self.helpers.check("while the agent still ran");
            // Not yet reaped: kill it. `kill_on_drop` would too, but being explicit keeps the
            // guarantee visible here. ESRCH (already gone) is fine.
            let _ = signal::kill(pid, Signal::SIGKILL);
        }
        if std::thread::panicking() {
            eprintln!(
                "---- faultline agent stderr ({}) ----\n{}\n---- end of agent stderr ----",
                self.dir.path().display(),
                tail(&self.stderr(), 200)
            );
        }
    }
}

/// The last `lines` lines of `text`.
fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// The settings the OTLP tests vary, rendered to a `faultline run` YAML config by
/// [`OtlpConfig::to_yaml`]. Everything else keeps the agent's defaults.
#[derive(Clone, Debug)]
pub struct OtlpConfig {
    /// Collection interval.
    pub interval: Duration,
    /// `grpc` or `http/protobuf`.
    pub transport: crate::Transport,
    /// Base endpoint (the receiver's [`crate::OtlpReceiver::endpoint`]).
    pub endpoint: String,
    /// `gzip`, or `None` for no compression.
    pub compression: Option<&'static str>,
    /// Extra request headers.
    pub headers: Vec<(String, String)>,
    /// Per-request export timeout.
    pub timeout: Duration,
    /// First retry backoff.
    pub initial_backoff: Duration,
    /// Backoff ceiling.
    pub max_backoff: Duration,
    /// Shutdown grace period.
    pub shutdown_grace: Duration,
    /// `export.otlp.tls`: files for an `https` endpoint (all `None`: the section is left out).
    pub tls: TlsFiles,
    /// `export.prometheus.listen`, enabling Prometheus (to read the self-telemetry when the
    /// OTLP backend gets nothing); `None` keeps it disabled.
    pub prometheus_listen: Option<std::net::SocketAddr>,
}

/// `export.otlp.tls` of an [`OtlpConfig`].
#[derive(Clone, Debug, Default)]
pub struct TlsFiles {
    /// `ca_file`.
    pub ca_file: Option<PathBuf>,
    /// `cert_file`.
    pub cert_file: Option<PathBuf>,
    /// `key_file`.
    pub key_file: Option<PathBuf>,
}

impl TlsFiles {
    /// The YAML line (with its two-level indent) or `""` when nothing is set.
    fn to_yaml(&self) -> String {
        let fields: Vec<String> = [
            ("ca_file", &self.ca_file),
            ("cert_file", &self.cert_file),
            ("key_file", &self.key_file),
        ]
        .into_iter()
        .filter_map(|(k, v)| {
            v.as_ref()
                .map(|p| format!("{k}: {:?}", p.display().to_string()))
        })
        .collect();
        if fields.is_empty() {
            String::new()
        } else {
            format!("    tls: {{{}}}\n", fields.join(", "))
        }
    }
}

impl OtlpConfig {
    /// One-second cycles exporting to `endpoint` over `transport`, with short timeouts and
    /// backoffs so fault scenarios play out in seconds.
    pub fn new(transport: crate::Transport, endpoint: String) -> Self {
        Self {
            interval: Duration::from_secs(1),
            transport,
            endpoint,
            compression: None,
            headers: Vec::new(),
            timeout: Duration::from_secs(2),
            initial_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(1),
            shutdown_grace: Duration::from_secs(5),
            tls: TlsFiles::default(),
            prometheus_listen: None,
        }
    }

    /// The YAML config.
    pub fn to_yaml(&self) -> String {
        let ms = |d: Duration| format!("{}ms", d.as_millis());
        let protocol = match self.transport {
            crate::Transport::Grpc => "grpc",
            crate::Transport::Http => "http/protobuf",
        };
        let headers: Vec<String> = self
            .headers
            .iter()
            .map(|(k, v)| format!("{k:?}: {v:?}"))
            .collect();
        let prometheus = match self.prometheus_listen {
            Some(listen) => format!("{{enabled: true, listen: \"{listen}\"}}"),
            None => "{enabled: false}".to_owned(),
        };
        format!(
            "interval: {interval}\n\
             shutdown_grace: {grace}\n\
             export:\n\
            \x20 otlp:\n\
            \x20   enabled: true\n\
            \x20   protocol: {protocol}\n\
            \x20   endpoint: {endpoint:?}\n\
            \x20   compression: {compression}\n\
            \x20   timeout: {timeout}\n\
            \x20   headers: {{{headers}}}\n\
            \x20   retry: {{initial_backoff: {initial}, max_backoff: {max}}}\n\
             {tls}\
            \x20 prometheus: {prometheus}\n",
            interval = ms(self.interval),
            grace = ms(self.shutdown_grace),
            endpoint = self.endpoint,
            compression = self.compression.unwrap_or("none"),
            timeout = ms(self.timeout),
            headers = headers.join(", "),
            initial = ms(self.initial_backoff),
            max = ms(self.max_backoff),
            tls = self.tls.to_yaml(),
        )
    }
}
