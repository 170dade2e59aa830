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
//! - [`chaos`]: fault-injection fixtures: scratch state dirs, child processes and tmpfs
//!   mounts owned by the test (removed on drop), independent /proc and statvfs readings.
//! - [`deploy`]: the shipped manifests read as JSON, the chart rendered, the agent image
//!   built by `deploy/docker/build-local.sh`, and a guard for its containers.
//! - [`docker`]: real containers from a `FROM scratch` image of the project's workload.
//! - [`backup`]: restic and borg repositories and a PostgreSQL cluster with a pgBackRest
//!   stanza in temp dirs, and `faultline backup check --format json` runs.
//! - [`drill`]: a self-healing service under a restart loop, `faultline drill run`, PNG checks.
//! - [`api`]: requests to the agent's HTTP API, tokens files, an agent with the API on.
//! - [`gameday`]: node containers (agent + supervised echo service) on a private Docker
//!   network for the multi-node game-day test.
//! - [`soak`]: the soak's own readings of a running agent (fds, RSS, threads, helpers,
//!   journal, qdiscs, nft tables, disk queue) and its CSV rows.
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
pub mod chaos;
pub mod containerd;
pub mod deploy;
pub mod docker;
pub mod drill;
pub mod gameday;
pub mod netns;
pub mod pki;
pub mod procfs;
pub mod receiver;
pub mod semconv;
pub mod soak;

pub use agent::{Agent, OtlpConfig, TlsFiles, agent_binary, run_cli, workspace_root};
pub use receiver::{
    Behaviour, LogView, OtlpReceiver, Point, PointKind, Received, Reply, Signal, SpanView,
    Transport,
};
pub use semconv::{Semconv, semconv};

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
