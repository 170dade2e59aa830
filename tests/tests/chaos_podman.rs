//! Container faults against podman through its Docker-compatible API (`podman system
//! service`), with the real `faultline` binary and a podman the test sets up itself
//! (`faultline_tests::podman`: storage of its own, its own API socket, named to faultline with
//! `--docker-socket`). Every effect is read by the test itself: `podman inspect` (podman's own
//! CLI, not faultline's client), the freezer's state file and `/proc/<pid>/stat`.
//!
//! - `container-pause` freezes the container's cgroup (`/libpod_parent/libpod-<id>`) and
//!   thaws it on SIGTERM; after the injector is SIGKILLed, `faultline fault revert --all`
//!   thaws it.
//! - `container-kill --label … --count 1` kills exactly one of three containers (podman says
//!   exited) and the revert starts it again; a label nothing carries is refused naming it.
//! - A container that carries a pod's Kubernetes labels in `kube-system` is refused naming
//!   the `protected-namespace` guard: the guards read the pod from the Engine API's labels.
//!
//! Without podman or Docker (which builds the image), or where podman cannot run a container,
//! the test prints SKIPPED with podman's words; under CI it fails.

// A test binary: a panic *is* the failure report.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::time::Duration;

use faultline_tests::chaos::{Scratch, wait_until};
use faultline_tests::freezer::{self, ThawOnDrop, Watched};
use faultline_tests::podman::Podman;
use nix::sys::signal::Signal;

const TEST: &str = "container_faults_and_selectors_through_podmans_docker_api";

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn container_faults_and_selectors_through_podmans_docker_api() {
    let Some(podman) = Podman::start(TEST) else {
        return;
    };
    let socket = podman.socket().display().to_string();
    let mark_value = std::process::id().to_string();
    let mark = format!("org.faultline.podman={mark_value}");
    let ids: Vec<String> = (0..3)
        .map(|i| {
            podman.run(
                &format!("faultline-pm-{i}"),
                &[("org.faultline.podman", &mark_value)],
                &[],
            )
        })
        .collect();
    let system = podman.run(
        "faultline-pm-dns",
        &[
            ("io.kubernetes.pod.namespace", "kube-system"),
            ("io.kubernetes.pod.name", "dns-0"),
            ("io.kubernetes.container.name", "dns"),
        ],
        &[],
    );
    // Dropped before `podman`: a frozen task cannot die, so the removal would hang.
    let mut thaw = ThawOnDrop::default();
    let pids: Vec<i32> = ids.iter().map(|id| podman.pid(id)).collect();
    let cgroups: Vec<String> = pids
        .iter()
        .map(|p| freezer::cgroup_of(*p).unwrap())
        .collect();
    for (cgroup, id) in cgroups.iter().zip(&ids) {
        assert!(cgroup.ends_with(&format!("libpod-{id}")), "{cgroup}");
        thaw.add(cgroup);
    }
    let s = Scratch::new("");

    // Pause: frozen, thawed on SIGTERM; frozen, SIGKILL, thawed by `revert --all`.
    let watched = Watched {
        cgroup: cgroups[0].clone(),
        pids: vec![pids[0]],
    };
    let args = [
        "fault",
        "inject",
        "container-pause",
        "--docker-socket",
        &socket,
        "--container",
        "faultline-pm-0",
        "--duration",
        "60s",
    ];
    watched.sigterm_thaws(watched.inject(&s, "pause", &args));
    watched.sigkill_keeps_it_frozen(watched.inject(&s, "pause-killed", &args));
    watched.revert_all_thaws(&s);

    // Kill exactly one of three by label; the revert starts it again.
    let mut bg = s.spawn(
        "kill-one",
        &[
            "fault",
            "inject",
            "container-kill",
            "--docker-socket",
            &socket,
            "--label",
            &mark,
            "--count",
            "1",
            "--duration",
            "60s",
        ],
    );
    assert!(
        s.wait_applied("container-kill", Duration::from_secs(20))
            .is_some(),
        "{}",
        bg.stderr()
    );
    let states: Vec<String> = ids.iter().map(|id| podman.status(id)).collect();
    let exited: Vec<usize> = (0..3).filter(|i| states[*i] == "exited").collect();
    assert_eq!(exited.len(), 1, "exactly one of three: {states:?}");
    assert_eq!(
        states.iter().filter(|s| *s == "running").count(),
        2,
        "{states:?}"
    );
    let named = wait_until(Duration::from_secs(5), || {
        bg.stdout().contains(&format!("faultline-pm-{}", exited[0]))
    });
    assert!(named, "the output names the container: {}", bg.stdout());
    bg.signal(Signal::SIGTERM);
    assert!(
        bg.wait_exit(Duration::from_secs(30))
            .expect("exits")
            .success(),
        "{}",
        bg.stderr()
    );
    assert!(
        wait_until(Duration::from_secs(10), || podman.status(&ids[exited[0]])
            == "running"),
        "not started again: {}",
        podman.status(&ids[exited[0]])
    );

    // Nothing matched, and a pod in a protected namespace.
    let out = s.run(&[
        "fault",
        "inject",
        "container-kill",
        "--docker-socket",
        &socket,
        "--label",
        "app=nope",
        "--duration",
        "5s",
    ]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("label app=nope") && stderr.contains(&socket),
        "{stderr}"
    );
    let out = s.run(&[
        "fault",
        "inject",
        "container-pause",
        "--docker-socket",
        &socket,
        "--namespace",
        "kube-system",
        "--duration",
        "5s",
    ]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(
        stderr.contains("refused by guard protected-namespace")
            && stderr.contains("kube-system/dns-0"),
        "{stderr}"
    );
    assert_eq!(podman.status(&system), "running");
    assert!(s.journal_entries().is_empty(), "{:?}", s.journal_entries());
}
