//! Shared helpers for faultline's integration tests: the real `faultline` binary against real
//! peers.
//!
//! - [`agent`]: finding/building the binary ([`agent_binary`]), running it as a child process
//!   that never outlives the test ([`Agent`]), and one-shot CLI runs ([`run_cli`]).
//! - [`receiver`]: an in-process OTLP receiver for metrics, traces and logs ([`OtlpReceiver`])
//!   on both transports,
//!   whose replies (accept, fail, delay, partial success) a test programs while it runs,
//!   optionally over TLS requiring a client certificate.
//! - [`pki`]: a test CA issuing server and client certificates (rcgen).
//! - [`semconv`]: the semantic-conventions registry the conformance tests check against.
//! - [`procfs`]: independent `/proc` readings to compare the agent's values with.
//! - [`props`]: the property tests' runner (fixed seed, `PROPTEST_CASES`).
//! - [`chaos`]: fault-injection fixtures: scratch state dirs, child processes and tmpfs
//!   mounts owned by the test (removed on drop), independent /proc and statvfs readings, and
//!   the stray-helper scan every chaos fixture (and [`Agent`]) runs when it goes.
//! - [`deploy`]: the shipped manifests read as JSON, the chart rendered, the agent image
//!   built by `deploy/docker/build-local.sh`, and a guard for its containers.
//! - [`dns`]: a DNS server of the test's own (dnsmasq on a loopback port) and free ports on
//!   several loopback addresses, for game days that find their agents through DNS.
//! - [`docker`]: real containers from a `FROM scratch` image of the project's workload.
//! - [`containerd`], [`podman`]: a containerd (CRI) and a podman (Docker-compatible API
//!   socket) of the test's own, running that image.
//! - [`freezer`]: the cgroup freezer read by the test itself (container-pause evidence).
//! - [`backup`]: restic and borg repositories and a PostgreSQL cluster with a pgBackRest
//!   stanza in temp dirs, and `faultline backup check --format json` runs.
//! - [`drill`]: a self-healing service under a restart loop, `faultline drill run`, PNG checks.
//! - [`examples`]: the real services the runnable examples drill (a supervised Redis, a
//!   PostgreSQL with pgBackRest, an HTTP server) and the test's own canary and stopwatches.
//! - [`browser`]: a report page in headless Chromium: screenshots at three widths, and the
//!   page's own layout measurements (every SVG label inside its picture) through the DOM.
//! - [`api`]: requests to the agent's HTTP API, tokens files, an agent with the API on.
//! - [`gameday`]: node containers (agent + supervised echo service) on a private Docker
//!   network for the multi-node game-day test.
//! - [`soak`]: the soak's own readings of a running agent (fds, RSS, threads, helpers,
//!   journal, qdiscs, nft tables, disk queue) and its CSV rows.
//! - [`stopwatch`]: the test's own stopwatch of a service's outages (probed from outside about
//!   every millisecond, each edge bracketed) and the check of a drill report's fault time,
//!   recovery point and RTO against it.
//! - [`eventually`]: wait for a condition with a deadline instead of sleeping.
//! - [`python3`]: a Python script's output, for parsers from its standard library.
//!
//! Not here: assertions about faultline itself; those live in `tests/*.rs`, one file per
//! area (OTLP export, backend faults, CLI and config).
#![forbid(unsafe_code)]

use std::io::Write as _;
use std::time::Duration;

pub mod agent;
pub mod api;
pub mod backup;
pub mod browser;
pub mod chaos;
pub mod containerd;
pub mod deploy;
pub mod dns;
pub mod docker;
pub mod drill;
pub mod examples;
pub mod freezer;
pub mod gameday;
pub mod netns;
pub mod pki;
pub mod podman;
pub mod procfs;
pub mod props;
pub mod receiver;
pub mod semconv;
pub mod soak;
pub mod stopwatch;

pub use agent::{Agent, OtlpConfig, TlsFiles, agent_binary, run_cli, workspace_root};
pub use receiver::{
    Behaviour, LogView, OtlpReceiver, Point, PointKind, Received, Reply, Signal, SpanView,
    Transport,
};
pub use semconv::{Semconv, semconv};

/// Whether this run is under CI: `CI` set, non-empty and not `false` or `0`. Every skip gate
/// asks this one function: a test whose peer is missing prints SKIPPED and returns, except
/// under CI, where it fails.
pub fn in_ci() -> bool {
    ci_value(std::env::var("CI").ok().as_deref())
}

/// [`in_ci`] for a given value of `CI` (`None` when unset).
fn ci_value(value: Option<&str>) -> bool {
    value.is_some_and(|v| !v.is_empty() && v != "false" && v != "0")
}

/// Re-check `cond` every 50 ms until it holds or `timeout` passes; returns whether it held.
/// For conditions nothing notifies about (a log line, a file); prefer a notifying wait such as
/// [`OtlpReceiver::wait_for`] where there is one.
pub async fn eventually<F: FnMut() -> bool>(timeout: Duration, mut cond: F) -> bool {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Runs `python3 -c script args…` with `stdin` and returns its stdout: for checks that want
/// a real parser from Python's standard library (XML, HTML) or its YAML module.
///
/// # Panics
/// When python3 cannot run or the script fails (its stderr is in the message).
pub fn python3(script: &str, args: &[&str], stdin: Option<&str>) -> String {
    let mut child = std::process::Command::new("python3")
        .arg("-c")
        .arg(script)
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("python3: {e}"));
    let mut input = child
        .stdin
        .take()
        .unwrap_or_else(|| panic!("python3 stdin"));
    input
        .write_all(stdin.unwrap_or("").as_bytes())
        .unwrap_or_else(|e| panic!("python3 stdin: {e}"));
    drop(input);
    let out = child
        .wait_with_output()
        .unwrap_or_else(|e| panic!("python3: {e}"));
    assert!(
        out.status.success(),
        "python3 {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `program` as a command that ends with the test that starts it: run through util-linux's
/// `setpriv --pdeathsig TERM`, so that a test process killed outright (a CI timeout, a stopped
/// session) takes the agents, runtimes and servers it started with it instead of leaving them
/// running; they get SIGTERM (an agent reverts its faults as on any stop). The signal follows
/// the death of the spawning *thread*: start long-lived processes from the test's own thread
/// or runtime, never from a short-lived helper thread. Plain `program` where setpriv lacks
/// `--pdeathsig`.
pub fn ending_with_test(program: impl AsRef<std::ffi::OsStr>) -> std::process::Command {
    // Found once, by absolute path: a test may run the command with a PATH of its own (one
    // without tc or nft, say) that lacks setpriv.
    static SETPRIV: std::sync::OnceLock<Option<std::path::PathBuf>> = std::sync::OnceLock::new();
    let setpriv = SETPRIV.get_or_init(|| {
        let path = std::env::var_os("PATH")?;
        let found = std::env::split_paths(&path)
            .map(|dir| dir.join("setpriv"))
            .find(|p| p.is_file())?;
        std::process::Command::new(&found)
            .arg("--help")
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("--pdeathsig"))
            .then_some(found)
    });
    match setpriv {
        Some(setpriv) => {
            let mut cmd = std::process::Command::new(setpriv);
            cmd.args(["--pdeathsig", "TERM", "--"]).arg(program);
            cmd
        }
        None => std::process::Command::new(program),
    }
}

#[cfg(test)]
mod tests {
    use super::ci_value;

    #[test]
    fn any_non_empty_ci_other_than_false_or_0_is_ci() {
        for v in ["true", "1", "yes", "TRUE", "gitlab"] {
            assert!(ci_value(Some(v)), "CI={v} must count as CI");
        }
        for v in [None, Some(""), Some("false"), Some("0")] {
            assert!(!ci_value(v), "CI={v:?} must not count as CI");
        }
    }
}
