//! Container metadata from podman through its Docker-compatible API socket
//! (`faultline_tests::podman`: the test's own podman storage, configuration and
//! `podman system service` socket; never the machine's podman or Docker's engine), read by
//! the collector's Docker source (`containers.docker.socket` at podman's socket, the CRI
//! source off).
//!
//! 1. `faultline collect --once --format json` names a running podman container: its name,
//!    image name and tag, the runtime `podman` (its cgroup is `libpod_parent/libpod-<id>`),
//!    the allowlisted label `app`, and not the label `secret`, which the container has but
//!    the allowlist does not. The evidence is the test's own: `podman inspect` for the
//!    container's labels and main process, `/proc/<pid>/cgroup` for its cgroup.
//! 2. Under `faultline run` exporting to an in-process OTLP receiver, a container started
//!    after the agent's first listing is named in every point of its first three cycles:
//!    podman's `/events` stream (or the collector's on-demand inspect) reaches the agent.
//!
//! On this machine podman runs containers only with lowered `nofile`/`nproc` limits (root
//! lacks `CAP_SYS_RESOURCE`; see the helper's module docs). Without podman or Docker (which
//! builds the image) the tests print SKIPPED; under CI they fail instead.

// A test binary: a panic *is* the failure report.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use faultline_tests::podman::Podman;
use faultline_tests::{Agent, OtlpConfig, OtlpReceiver, Transport, run_cli};
use serde_json::Value;

/// The workload image's name and tag as podman reports them.
const IMAGE_NAME: &str = "localhost/faultline-workload";

/// The collector's container settings: podman's socket as the Engine API, no CRI.
fn containers_yaml(podman: &Podman) -> String {
    format!(
        "host:\n  enabled: false\ncontainers:\n  docker:\n    socket: {}\n  cri:\n    \
         enabled: false\n  labels: [app]\n",
        podman.socket().display()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn collect_once_names_a_podman_container_through_its_docker_compatible_socket() {
    let Some(podman) =
        Podman::start("collect_once_names_a_podman_container_through_its_docker_compatible_socket")
    else {
        return;
    };
    let _ = faultline_tests::agent_binary();
    let name = format!("web-{}", std::process::id());
    let id = podman.run(&name, &[("app", "web"), ("secret", "s3cret")], &[]);

    // The evidence: podman's own view of the container, and its process's cgroup.
    let labels: Value =
        serde_json::from_str(&podman.inspect(&id, "{{json .Config.Labels}}")).unwrap();
    assert_eq!(labels["app"], "web");
    assert_eq!(
        labels["secret"], "s3cret",
        "the container has an unlisted label"
    );
    let pid = podman.pid(&id);
    let cgroup = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    assert!(
        cgroup
            .lines()
            .any(|l| l.ends_with(&format!("/libpod-{id}"))),
        "{cgroup}"
    );

    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("faultline.yaml");
    std::fs::write(
        &cfg,
        format!(
            "export:\n  otlp:\n    enabled: false\n{}",
            containers_yaml(&podman)
        ),
    )
    .unwrap();
    let out = run_cli(
        [
            "collect",
            "--once",
            "--format",
            "json",
            "-c",
            cfg.to_str().unwrap(),
        ],
        Duration::from_secs(60),
    )
    .await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "collect failed: {stderr}");
    let batch: Value = serde_json::from_slice(&out.stdout).unwrap();
    let a = batch["resource_metrics"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["resource"]["attributes"]["container.id"] == id)
        .unwrap_or_else(|| {
            panic!(
                "container {id} not collected; agent stderr:\n{stderr}\npodman log:\n{}",
                podman.log()
            )
        })["resource"]["attributes"]
        .clone();
    for (key, want) in [
        ("container.name", name.as_str()),
        ("container.image.name", IMAGE_NAME),
        ("container.runtime.name", "podman"),
        ("container.label.app", "web"),
    ] {
        assert_eq!(a[key], want, "{key} in {a:#}");
    }
    assert_eq!(
        a["container.image.tags"],
        serde_json::json!(["test"]),
        "{a:#}"
    );
    assert!(
        a.get("container.label.secret").is_none(),
        "a label off the allowlist: {a:#}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_names_a_podman_container_started_after_it_in_every_point() {
    let Some(podman) =
        Podman::start("run_names_a_podman_container_started_after_it_in_every_point")
    else {
        return;
    };
    let receiver = OtlpReceiver::start().await.unwrap();
    let config = OtlpConfig::new(Transport::Grpc, receiver.endpoint(Transport::Grpc));
    let _agent = Agent::start(&format!("{}{}", config.to_yaml(), containers_yaml(&podman)));
    let wait = Duration::from_secs(60);
    // Its second cycle is exported: the agent's initial listing is over.
    receiver
        .wait_for(
            |r| {
                r.iter()
                    .flat_map(|q| q.points())
                    .any(|p| p.name == "faultline.cycle.duration")
            },
            wait,
        )
        .await;
    let before_run = now_unix_nanos();
    let name = format!("late-{}", std::process::id());
    let id = podman.run(&name, &[("app", "late")], &[]);

    let of_container = |r: &[faultline_tests::Received]| {
        r.iter()
            .flat_map(|q| q.points())
            .filter(|p| p.resource.get("container.id") == Some(&id))
            .collect::<Vec<_>>()
    };
    let reqs = receiver
        .wait_for(
            |r| {
                of_container(r)
                    .iter()
                    .map(|p| p.time_unix_nano)
                    .collect::<BTreeSet<_>>()
                    .len()
                    >= 3
            },
            wait,
        )
        .await;
    let points = of_container(&reqs);
    let cpu: Vec<_> = points
        .iter()
        .filter(|p| p.name == "container.cpu.time")
        .collect();
    assert!(
        !cpu.is_empty(),
        "no container.cpu.time point of the late container"
    );
    assert!(
        cpu.iter().all(|p| p.start_time_unix_nano >= before_run),
        "a container the agent's initial listing did not have"
    );
    for p in &points {
        for (key, want) in [
            ("container.name", name.as_str()),
            ("container.image.name", IMAGE_NAME),
            ("container.runtime.name", "podman"),
            ("container.label.app", "late"),
        ] {
            assert_eq!(
                p.resource.get(key).map(String::as_str),
                Some(want),
                "{key} of {} at {}",
                p.name,
                p.time_unix_nano
            );
        }
    }
}

fn now_unix_nanos() -> u64 {
    u64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos(),
    )
    .unwrap()
}
