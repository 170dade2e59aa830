//! Container metadata from a real containerd's CRI (`faultline_tests::containerd`: the test's
//! own instance, config, root and socket; never Docker's engine), through the real binary:
//! `faultline collect --once --format json` with `containers.cri.socket` at the test's socket,
//! Docker and the kubelet disabled, and the cgroup and proc roots the host's.
//!
//! Three pods are made the way the kubelet makes them (a pod uid, a `kubepods` cgroup parent,
//! the `io.kubernetes.*` identity labels, `app=<name>` on the pod). One of them has its
//! container created from the image's ID, as the kubelet creates containers, so the listing
//! names no image and only the container's status can.
//!
//! The test proves, against evidence it gathers itself (its own CRI client's listing and
//! `Version`, its own reads of `/proc/<pid>/cgroup`):
//! - each container is reported under its own ID with its pod's name, namespace and uid, its
//!   container name, its image name and tag, and the runtime's name from `Version`;
//! - each pod sandbox (the pause process has a cgroup of its own) with its pod's names;
//! - the allowlisted pod label `app` appears as `container.label.app`; the pod's
//!   `io.kubernetes.pod.name` label, on the pod but not on the allowlist, does not, nor does
//!   any other label;
//! - the attribute keys are the semantic conventions' own, none deprecated.
//!
//! A second test runs `faultline run` (one-second cycles, exporting to an in-process OTLP
//! receiver, `containers.cri.refresh` 30 s) and starts a pod after the agent's first listing:
//! every point of the pod's container in its first three exported cycles carries its pod's
//! name. Within that time only the collector's early request can have named it: a container
//! it meets unnamed is held back one cycle and the CRI is listed at once.
//!
//! Without containerd, runc, ctr or Docker (which builds the image) the test prints SKIPPED;
//! under CI it fails instead. The guard removes the pods, containerd and its files on drop,
//! also when an assertion fails.

// A test binary: a panic *is* the failure report.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use faultline_tests::containerd::{Containerd, TestPod};
use faultline_tests::{Agent, OtlpConfig, OtlpReceiver, Transport, run_cli, semconv};
use serde_json::Value;

const TEST: &str = "collect_once_names_each_cri_container_with_its_pod_from_a_real_containerd";
/// The workload image's name and tag as containerd knows them.
const IMAGE_NAME: &str = "docker.io/library/faultline-workload";
const IMAGE_TAG: &str = "test";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn collect_once_names_each_cri_container_with_its_pod_from_a_real_containerd() {
    let Some(containerd) = Containerd::start(TEST).await else {
        return;
    };
    // Built now, not inside the collection's time limit.
    let _ = faultline_tests::agent_binary();
    let client = containerd.client();
    let namespace = format!("faultline-meta-{}", std::process::id());
    let web = containerd
        .run_pod(&namespace, "web-0", "web", "server", &[])
        .await;
    // The image's ID, from the test's own listing: what the kubelet creates containers from.
    let listed = client.list_containers(None).await.unwrap();
    let image_id = listed[0].image_ref.clone();
    assert!(image_id.starts_with("sha256:"), "{listed:#?}");
    let api = containerd
        .run_pod_from(&image_id, &namespace, "api-0", "api", "handler", &[])
        .await;
    let store = containerd
        .run_pod(&namespace, "store-0", "store", "db", &[])
        .await;
    let pods = [&web, &api, &store];

    // The evidence: the runtime's name, each pod's labels, the listing's image of the pod
    // created by ID, and each container's processes in its own cgroup.
    let runtime = client.version().await.unwrap().runtime_name;
    assert_eq!(runtime, "containerd");
    let by_container: HashMap<String, _> = client
        .list_pod_containers(None)
        .await
        .unwrap()
        .into_iter()
        .map(|c| (c.id.clone(), c))
        .collect();
    for (pod, app) in [(&web, "web"), (&api, "api"), (&store, "store")] {
        let listed = &by_container[&pod.container_id];
        let labels = &listed.pod.as_ref().unwrap().labels;
        assert_eq!(labels.get("app").map(String::as_str), Some(app));
        assert_eq!(
            labels.get("io.kubernetes.pod.name").map(String::as_str),
            Some(pod.name.as_str()),
            "the pod carries a label that is not on the allowlist"
        );
        assert!(
            !pod.pids().is_empty(),
            "{}: no process in its cgroup",
            pod.name
        );
    }
    assert_eq!(
        by_container[&api.container_id].image, image_id,
        "the listing names no image for a container created from the image ID"
    );

    let cfg_dir = tempfile::tempdir().unwrap();
    let cfg = cfg_dir.path().join("faultline.yaml");
    std::fs::write(
        &cfg,
        format!(
            "proc_root: /proc\nsys_root: /sys\nexport:\n  otlp:\n    enabled: false\n\
             host:\n  enabled: false\ncontainers:\n  docker:\n    enabled: false\n\
             \x20 kubelet:\n    enabled: false\n  cri:\n    socket: {}\n  labels: [app]\n",
            containerd.socket().display()
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

    for (pod, container_name, app) in [
        (&web, "server", "web"),
        (&api, "handler", "api"),
        (&store, "db", "store"),
    ] {
        let a = attributes(&batch, &pod.container_id, &stderr);
        let expect = [
            ("k8s.pod.name", pod.name.as_str()),
            ("k8s.namespace.name", namespace.as_str()),
            ("k8s.pod.uid", pod.uid.as_str()),
            ("k8s.container.name", container_name),
            ("container.name", container_name),
            ("container.image.name", IMAGE_NAME),
            ("container.runtime.name", runtime.as_str()),
            ("container.label.app", app),
        ];
        for (key, want) in expect {
            assert_eq!(
                a.get(key).and_then(Value::as_str),
                Some(want),
                "{}: {key} in {a:#?}",
                pod.name
            );
        }
        assert_eq!(
            a["container.image.tags"],
            serde_json::json!([IMAGE_TAG]),
            "{a:#?}"
        );
        only_allowlisted_labels(&a, &pod.name);

        let sandbox = attributes(&batch, &pod.sandbox_id, &stderr);
        for (key, want) in [
            ("k8s.pod.name", pod.name.as_str()),
            ("k8s.namespace.name", namespace.as_str()),
            ("k8s.pod.uid", pod.uid.as_str()),
            ("container.label.app", app),
        ] {
            assert_eq!(
                sandbox.get(key).and_then(Value::as_str),
                Some(want),
                "{} sandbox: {key} in {sandbox:#?}",
                pod.name
            );
        }
        assert!(
            sandbox.get("k8s.container.name").is_none(),
            "a sandbox is no container of the pod spec: {sandbox:#?}"
        );
        only_allowlisted_labels(&sandbox, &pod.name);
    }
    semantic_conventions(&batch, &pods);
}

/// The resource attributes of the container `id` in the collected batch.
fn attributes(batch: &Value, id: &str, stderr: &str) -> serde_json::Map<String, Value> {
    batch["resource_metrics"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["resource"]["attributes"]["container.id"] == id)
        .unwrap_or_else(|| panic!("container {id} not collected; agent stderr:\n{stderr}"))
        ["resource"]["attributes"]
        .as_object()
        .unwrap()
        .clone()
}

/// `container.label.app` and no other label attribute.
fn only_allowlisted_labels(a: &serde_json::Map<String, Value>, pod: &str) {
    let labels: Vec<&String> = a
        .keys()
        .filter(|k| k.starts_with("container.label."))
        .collect();
    assert_eq!(labels, ["container.label.app"], "{pod}: {a:#?}");
}

/// Every attribute key of the pods' resources is in the registry (a template key such as
/// `container.label.<key>` by its prefix), and none is deprecated.
fn semantic_conventions(batch: &Value, pods: &[&TestPod]) {
    let Some(registry) = semconv() else {
        return;
    };
    let ids: Vec<&str> = pods
        .iter()
        .flat_map(|p| [p.container_id.as_str(), p.sandbox_id.as_str()])
        .collect();
    for r in batch["resource_metrics"].as_array().unwrap() {
        let a = r["resource"]["attributes"].as_object().unwrap();
        if !a
            .get("container.id")
            .and_then(Value::as_str)
            .is_some_and(|id| ids.contains(&id))
        {
            continue;
        }
        for key in a
            .keys()
            .filter(|k| k.starts_with("container.") || k.starts_with("k8s."))
        {
            let def = registry.attributes.get(key.as_str()).or_else(|| {
                let (template, _) = key.split_at(key.find(".label.")? + ".label".len());
                registry.attributes.get(template)
            });
            let def = def.unwrap_or_else(|| panic!("{key} is not in the semantic conventions"));
            assert!(
                def.deprecated.is_none(),
                "{key} is deprecated: {:?}",
                def.deprecated
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_names_a_pod_started_after_it_in_every_point_by_listing_the_cri_early() {
    let test = "run_names_a_pod_started_after_it_in_every_point_by_listing_the_cri_early";
    let Some(containerd) = Containerd::start(test).await else {
        return;
    };
    let receiver = OtlpReceiver::start().await.unwrap();
    let config = OtlpConfig::new(Transport::Grpc, receiver.endpoint(Transport::Grpc));
    let _agent = Agent::start(&format!(
        "{}proc_root: /proc\nsys_root: /sys\nhost:\n  enabled: false\ncontainers:\n  \
         docker:\n    enabled: false\n  cri:\n    socket: {}\n    refresh: 30s\n",
        config.to_yaml(),
        containerd.socket().display()
    ));
    let wait = Duration::from_secs(60);
    // The agent's second cycle is exported: its first CRI listing is over.
    receiver
        .wait_for(
            |r| {
                r.iter()
                    .flat_map(faultline_tests::Received::points)
                    .any(|p| p.name == "faultline.cycle.duration")
            },
            wait,
        )
        .await;
    let namespace = format!("faultline-late-{}", std::process::id());
    let pod = containerd
        .run_pod(&namespace, "late-0", "late", "worker", &[])
        .await;

    let cycles = |r: &[faultline_tests::Received]| {
        let mut by_time: BTreeMap<u64, Vec<faultline_tests::Point>> = BTreeMap::new();
        for p in r.iter().flat_map(faultline_tests::Received::points) {
            if p.resource.get("container.id") == Some(&pod.container_id) {
                by_time.entry(p.time_unix_nano).or_default().push(p);
            }
        }
        by_time
    };
    let reqs = receiver.wait_for(|r| cycles(r).len() >= 3, wait).await;
    for (time, points) in cycles(&reqs).iter().take(3) {
        for p in points {
            for (key, want) in [
                ("k8s.pod.name", pod.name.as_str()),
                ("k8s.namespace.name", namespace.as_str()),
                ("k8s.container.name", "worker"),
            ] {
                assert_eq!(
                    p.resource.get(key).map(String::as_str),
                    Some(want),
                    "{key} of {} in cycle {time}",
                    p.name
                );
            }
        }
    }
}
