//! Container faults through the real `faultline fault inject container-*` against containers
//! the test starts itself (the static `faultline-workload` image built `FROM scratch`), each
//! observed with the `docker inspect` command — not with faultline's own Docker client — and
//! removed on drop. Pause freezes the container's cgroup (read by the test itself: the
//! freezer's state file and `/proc/<pid>/stat`); crash safety: a paused container whose
//! injector is SIGKILLed is thawed by `faultline fault revert --all`. Selectors: `--label
//! --count 1` stops exactly one of three containers and the revert starts it again. Guards:
//! a container running a protected process is refused (exit 3, the guard named) and left
//! running.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers: a panic is the failure report
use std::process::Command;
use std::time::Duration;

use faultline_tests::chaos::{Scratch, wait_until};
use faultline_tests::docker::{Container, docker_available};
use faultline_tests::freezer::{self, ThawOnDrop, Watched};
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

/// The main process of `c` (`docker inspect -f {{.State.Pid}}`).
fn main_pid(c: &Container) -> i32 {
    let out = Command::new("docker")
        .args(["inspect", "-f", "{{.State.Pid}}", &c.id])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

#[tokio::test]
async fn container_pause_freezes_its_cgroup_and_a_sigkilled_injector_is_recovered_by_revert_all() {
    if !docker_available("container_pause") {
        return;
    }
    let c = workload("pause").await;
    let pids = vec![main_pid(&c)];
    let cgroup = freezer::cgroup_of(pids[0]).unwrap();
    assert!(cgroup.contains(&c.id), "{cgroup}");
    // Dropped before the container: a frozen task cannot die, `docker rm -f` would hang.
    let mut thaw = ThawOnDrop::default();
    thaw.add(&cgroup);
    let watched = Watched { cgroup, pids };
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
    let bg = watched.inject(&s, "pause", &args);
    // The freezer is not Docker's pause: Docker still calls the container running.
    assert_eq!(inspect(&c).0, "running");
    watched.sigterm_thaws(bg);
    // SIGKILL the injector: the container stays frozen until the journal is recovered.
    watched.sigkill_keeps_it_frozen(watched.inject(&s, "pause2", &args));
    watched.revert_all_thaws(&s);
    assert_eq!(inspect(&c).0, "running");
}

#[tokio::test]
async fn docker_containers_are_picked_by_label_and_count_and_started_again() {
    if !docker_available("container_selectors") {
        return;
    }
    // A label of this test's own: the workload image's label is on every test's containers.
    let mark = format!("org.faultline.selector={}", std::process::id());
    let label = vec!["--label".to_owned(), mark.clone()];
    let mut cs = Vec::new();
    for i in 0..3 {
        let c = Container::run(&format!("sel{i}"), &label, &["--listen", "0.0.0.0:7000"]).await;
        c.wait_ready(Duration::from_secs(20)).await;
        cs.push(c);
    }
    let s = Scratch::new("");
    let mut bg = s.spawn(
        "stop-one",
        &[
            "fault",
            "inject",
            "container-stop",
            "--label",
            &mark,
            "--count",
            "1",
            "--grace",
            "2s",
            "--duration",
            "30s",
        ],
    );
    assert!(
        s.wait_applied("container-stop", Duration::from_secs(30))
            .is_some(),
        "{}",
        bg.stderr()
    );
    let states: Vec<String> = cs.iter().map(|c| inspect(c).0).collect();
    let stopped: Vec<&Container> = cs
        .iter()
        .zip(&states)
        .filter(|(_, st)| *st == "exited")
        .map(|(c, _)| c)
        .collect();
    assert_eq!(stopped.len(), 1, "exactly one of three: {states:?}");
    assert_eq!(
        states.iter().filter(|st| *st == "running").count(),
        2,
        "{states:?}"
    );
    let named = wait_until(Duration::from_secs(5), || {
        bg.stdout().contains(&stopped[0].name)
    });
    assert!(named, "the output names the container: {}", bg.stdout());
    assert!(
        bg.stdout().contains("selected: 1 of 3 matching"),
        "{}",
        bg.stdout()
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
        status_is(stopped[0], "running"),
        "not started again: {:?}",
        inspect(stopped[0])
    );
    // A label nothing carries is refused, naming it.
    let out = s.run(&[
        "fault",
        "inject",
        "container-stop",
        "--label",
        &format!("{mark}-none"),
        "--duration",
        "5s",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains(&format!("label {mark}-none")), "{err}");
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
