//! A `faultline` the suite starts ends with the thread that started it: a test process killed
//! outright (a CI timeout, a stopped session) must not leave agents running on the machine.
//! The test starts an agent through [`faultline_command`] on a thread of its own, lets the
//! thread end, and watches the agent's `/proc` entry go; it kills the agent itself if not.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::process::Stdio;
use std::time::Duration;

use faultline_tests::agent::faultline_command;
use faultline_tests::chaos::{running, wait_until};

#[test]
fn an_agent_started_by_the_suite_stops_when_its_starting_thread_ends() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("faultline.yaml");
    std::fs::write(
        &config,
        "interval: 1s\nexport:\n  otlp:\n    enabled: false\n",
    )
    .unwrap();
    let state = dir.path().join("state");
    let pid = std::thread::spawn(move || {
        let child = faultline_command()
            .arg("--state-dir")
            .arg(&state)
            .arg("run")
            .arg("--config")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn faultline");
        let pid = i32::try_from(child.id()).unwrap();
        // Running the agent's own executable (past any wrapper's exec).
        let agent = faultline_tests::agent_binary().canonicalize().unwrap();
        assert!(
            wait_until(Duration::from_secs(20), || std::fs::read_link(format!(
                "/proc/{pid}/exe"
            ))
            .is_ok_and(|exe| exe == agent)),
            "the agent did not start"
        );
        // The thread ends without waiting for or killing its child.
        std::mem::forget(child);
        pid
    })
    .join()
    .unwrap();
    let gone = wait_until(Duration::from_secs(10), || !running(pid));
    if !gone {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    // Reap it (it is this process's child): no zombie left either.
    let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), None);
    assert!(gone, "the agent outlived the thread that started it");
}
