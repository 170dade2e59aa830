//! Process selectors that need a real peer: `--cgroup PATH` against a cgroup the test creates
//! itself (with a nested child cgroup: "in it or below it"), and `--container ID` against a
//! container the test starts itself (the `FROM scratch` workload image). Each checks that
//! exactly the selected processes are paused (state T in `/proc/<pid>/stat`, read
//! independently) and resumed by the revert, and that a bystander is never touched.

// Test helpers outside `#[test]` functions fail loudly by design.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::time::Duration;

use faultline_tests::chaos::{Scratch, TestCgroup, Victim, is_root, require, state, wait_until};
use faultline_tests::docker::{Container, docker_available};
use nix::sys::signal::Signal;

const T: Duration = Duration::from_secs(15);

fn paused(pid: i32) -> bool {
    state(pid) == Some('T')
}

#[test]
fn cgroup_selector_pauses_exactly_the_processes_in_and_below_the_cgroup() {
    if !require(is_root(), "root (to create a test cgroup)") {
        return;
    }
    let cg = TestCgroup::create("select");
    let inner = cg.child("inner");
    let (a, b, bystander) = (Victim::sleep(), Victim::sleep(), Victim::sleep());
    cg.add(cg.rel(), a.pid());
    cg.add(&inner, b.pid());
    let s = Scratch::new("");
    // A dry run resolves exactly the two processes.
    let out = s.run(&[
        "fault",
        "inject",
        "--dry-run",
        "--json",
        "process-pause",
        "--cgroup",
        cg.rel(),
        "--mode",
        "all",
        "--duration",
        "30s",
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(plan["targets"].as_array().unwrap().len(), 2, "{plan:#}");
    // The same cgroup named by its directory under the cgroup mount.
    let fs_path = cg.path().to_string_lossy().into_owned();
    let out = s.run(&[
        "fault",
        "inject",
        "--dry-run",
        "--json",
        "process-pause",
        "--cgroup",
        &fs_path,
        "--mode",
        "all",
        "--duration",
        "30s",
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let by_dir: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(by_dir["targets"], plan["targets"], "{by_dir:#}");

    let mut bg = s.spawn(
        "pause",
        &[
            "fault",
            "inject",
            "process-pause",
            "--cgroup",
            cg.rel(),
            "--mode",
            "all",
            "--duration",
            "30s",
        ],
    );
    assert!(
        wait_until(T, || paused(a.pid()) && paused(b.pid())),
        "not paused: {}",
        bg.stderr()
    );
    assert!(
        !paused(bystander.pid()),
        "a process outside the cgroup was paused"
    );
    let entry = s.wait_applied("process-pause", T).unwrap();
    assert_eq!(entry["targets"].as_array().unwrap().len(), 2, "{entry:#}");
    bg.signal(Signal::SIGTERM);
    assert!(
        bg.wait_exit(T).is_some_and(|s| s.success()),
        "{}",
        bg.stderr()
    );
    assert!(!paused(a.pid()) && !paused(b.pid()), "not resumed");

    // A cgroup with no process is refused, naming it.
    let empty = cg.child("empty");
    let out = s.run(&[
        "fault",
        "inject",
        "process-pause",
        "--cgroup",
        &empty,
        "--duration",
        "5s",
    ]);
    assert_ne!(out.status.code(), Some(0));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no process in cgroup"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The host pid of the container's main process (`docker inspect`, not faultline).
fn container_pid(c: &Container) -> i32 {
    let out = std::process::Command::new("docker")
        .args(["inspect", "-f", "{{.State.Pid}}", &c.id])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

#[tokio::test]
async fn container_selector_pauses_the_containers_process_and_the_revert_resumes_it() {
    if !docker_available("container_selector") {
        return;
    }
    let c = Container::run("select", &[], &["--listen", "0.0.0.0:7000"]).await;
    c.wait_ready(Duration::from_secs(20)).await;
    let other = Container::run("bystander", &[], &["--listen", "0.0.0.0:7000"]).await;
    other.wait_ready(Duration::from_secs(20)).await;
    let (pid, other_pid) = (container_pid(&c), container_pid(&other));
    let s = Scratch::new("");
    // The short (12-digit) id, as `docker ps` shows it.
    let mut bg = s.spawn(
        "pause",
        &[
            "fault",
            "inject",
            "process-pause",
            "--container",
            &c.id[..12],
            "--mode",
            "all",
            "--duration",
            "30s",
        ],
    );
    assert!(wait_until(T, || paused(pid)), "not paused: {}", bg.stderr());
    assert!(
        !paused(other_pid),
        "the other container's process was paused"
    );
    let entry = s.wait_applied("process-pause", T).unwrap();
    let targets = entry["targets"].to_string();
    assert!(targets.contains(&format!("{pid}")), "{targets}");
    bg.signal(Signal::SIGTERM);
    assert!(
        bg.wait_exit(T).is_some_and(|s| s.success()),
        "{}",
        bg.stderr()
    );
    assert!(wait_until(T, || !paused(pid)), "not resumed");
}
