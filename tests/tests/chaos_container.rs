//! Container faults through the real `faultline fault inject container-*` against containers
//! the test starts itself (the static `faultline-workload` image built `FROM scratch`), each
//! observed with the `docker inspect` command — not with faultline's own Docker client — and
//! removed on drop. Crash safety: a paused container whose injector is SIGKILLed is unpaused
//! by `faultline fault revert --all`. Guards: a container running a protected process is
//! refused (exit 3, the guard named) and left running.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers: a panic is the failure report
use std::process::Command;
use std::time::Duration;

use faultline_tests::chaos::{Scratch, wait_until};
use faultline_tests::docker::{Container, docker_available};
use nix::sys::signal::Signal;

/// `docker inspect -f '{{.State.Status}} {{.State.Paused}} {{.State.ExitCode}} {{.State.StartedAt}}'`.
fn inspect(c: &Container) -> (String, bool, i64, String) {
    let out = Command::new("docker")
        .args([
            "inspect",
            "-f",
            "{{.State.Status}} {{.State.Paused}} {{.State.ExitCode}} {{.State.StartedAt}}",
            &c.id,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "docker inspect: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let f: Vec<&str> = text.split_whitespace().collect();
    (
        f[0].to_owned(),
        f[1] == "true",
        f[2].parse().unwrap(),
        f[3].to_owned(),
    )
}

async fn workload(hint: &str) -> Container {
    let c = Container::run(hint, &[], &["--listen", "0.0.0.0:7000"]).await;
    c.wait_ready(Duration::from_secs(20)).await;
    c
}

fn status_is(c: &Container, want: &str) -> bool {
    wait_until(Duration::from_secs(10), || inspect(c).0 == want)
}

#[tokio::test]
async fn container_stop_stops_it_and_revert_starts_it_again() {
    if !docker_available("container_stop") {
        return;
    }
    let c = workload("stop").await;
    let s = Scratch::new("");
    let mut bg = s.spawn(
        "stop",
        &[
            "fault",
            "inject",
            "container-stop",
            "--container",
            &c.name,
            "--grace",
            "2s",
            "--duration",
            "30s",
        ],
    );
    assert!(
        s.wait_applied("container-stop", Duration::from_secs(20))
            .is_some(),
        "{}",
        bg.stderr()
    );
    assert!(status_is(&c, "exited"), "not stopped: {:?}", inspect(&c));
    bg.signal(Signal::SIGTERM);
    assert!(
        bg.wait_exit(Duration::from_secs(20))
            .expect("exits")
            .success(),
        "{}",
        bg.stderr()
    );
    assert!(
        status_is(&c, "running"),
        "not started again: {:?}",
        inspect(&c)
    );
}

#[tokio::test]
async fn container_kill_delivers_the_signal_and_revert_starts_it() {
    if !docker_available("container_kill") {
        return;
    }
    let c = workload("kill").await;
    let s = Scratch::new("");
    let mut bg = s.spawn(
        "kill",
        &[
            "fault",
            "inject",
            "container-kill",
            "--container",
            &c.id,
            "--signal",
            "KILL",
            "--duration",
            "30s",
        ],
    );
    assert!(
        s.wait_applied("container-kill", Duration::from_secs(20))
            .is_some(),
        "{}",
        bg.stderr()
    );
    assert!(status_is(&c, "exited"), "not killed: {:?}", inspect(&c));
    assert_eq!(inspect(&c).2, 137, "exit code of a SIGKILLed main process");
    bg.signal(Signal::SIGTERM);
    assert!(
        bg.wait_exit(Duration::from_secs(20))
            .expect("exits")
            .success(),
        "{}",
        bg.stderr()
    );
    assert!(
        status_is(&c, "running"),
        "not started again: {:?}",
        inspect(&c)
    );
}

#[tokio::test]
async fn container_pause_freezes_it_and_a_sigkilled_injector_is_recovered_by_revert_all() {
    if !docker_available("container_pause") {
        return;
    }
    let c = workload("pause").await;
    let s = Scratch::new("");
    let args = [
        "fault",
        "inject",
        "container-pause",
        "--container",
        &c.name,
        "--duration",
        "30s",
    ];
    let mut bg = s.spawn("pause", &args);
    assert!(
        s.wait_applied("container-pause", Duration::from_secs(20))
            .is_some(),
        "{}",
        bg.stderr()
    );
    assert!(
        status_is(&c, "paused") && inspect(&c).1,
        "not paused: {:?}",
        inspect(&c)
    );
    bg.signal(Signal::SIGTERM);
    assert!(
        bg.wait_exit(Duration::from_secs(20))
            .expect("exits")
            .success(),
        "{}",
        bg.stderr()
    );
    assert!(
        status_is(&c, "running") && !inspect(&c).1,
        "not unpaused: {:?}",
        inspect(&c)
    );

    // SIGKILL the injector: the container stays paused until the journal is recovered.
    let mut bg = s.spawn("pause2", &args);
    assert!(
        s.wait_applied("container-pause", Duration::from_secs(20))
            .is_some(),
        "{}",
        bg.stderr()
    );
    bg.signal(Signal::SIGKILL);
    bg.wait_exit(Duration::from_secs(5)).expect("killed");
    assert!(inspect(&c).1, "still paused after the injector died");
    let out = s.run(&["fault", "revert", "--all"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains(": reverted"),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !inspect(&c).1 && inspect(&c).0 == "running",
        "not unpaused: {:?}",
        inspect(&c)
    );
}

#[tokio::test]
async fn container_restart_restarts_it_and_refuses_a_missing_container() {
    if !docker_available("container_restart") {
        return;
    }
    let c = workload("restart").await;
    let before = inspect(&c).3;
    let s = Scratch::new("");
    let out = s.run(&[
        "fault",
        "inject",
        "container-restart",
        "--container",
        &c.name,
        "--grace",
        "1s",
        "--duration",
        "10s",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (status, _, _, after) = inspect(&c);
    assert_eq!(status, "running");
    assert_ne!(after, before, "StartedAt must change on restart");

    let out = s.run(&[
        "fault",
        "inject",
        "container-stop",
        "--container",
        "faultline-no-such-container",
        "--duration",
        "5s",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("no container \"faultline-no-such-container\""),
        "{err}"
    );
    assert!(s.journal_entries().is_empty());
}

#[tokio::test]
async fn a_container_running_a_protected_process_is_refused_naming_the_guard() {
    if !docker_available("container_protected") {
        return;
    }
    let c = workload("protected").await;
    // The workload's own process name stands in for kubelet, sshd and the other defaults.
    let s = Scratch::new("chaos:\n  protected_processes: [faultline-workload]\n");
    for kind in ["container-pause", "container-stop", "container-kill"] {
        let out = s.run(&[
            "fault",
            "inject",
            kind,
            "--container",
            &c.name,
            "--duration",
            "30s",
        ]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(3), "{kind}: {stderr}");
        assert!(
            stderr.contains("refused by guard protected-process")
                && stderr.contains(&c.name)
                && stderr.contains("faultline-workload"),
            "{kind}: {stderr}"
        );
        let (status, paused, _, _) = inspect(&c);
        assert_eq!((status.as_str(), paused), ("running", false), "{kind}");
    }
    assert!(s.journal_entries().is_empty(), "refusals journal nothing");
    // Without the name on the list, the same container may be paused.
    let s = Scratch::new("");
    let out = s.run(&[
        "fault",
        "inject",
        "container-pause",
        "--container",
        &c.name,
        "--dry-run",
        "--duration",
        "30s",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
