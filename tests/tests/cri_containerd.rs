//! The chaos crate's CRI client against a real containerd that the test starts itself
//! (`faultline_tests::containerd`: its own config, root, state and socket; never Docker's
//! engine).
//!
//! Three pods labelled `app=web`, one workload container each, are made through the client
//! the way the kubelet makes them. The test proves that the client:
//! - reads the runtime's version (containerd, CRI `v1`);
//! - lists every container with its pod's name, namespace and uid, its container name, image
//!   and labels, and passes label and sandbox filters through to the runtime;
//! - reports a running container as `CONTAINER_RUNNING` and, after `StopContainer`, as
//!   `CONTAINER_EXITED` through its own `ContainerStatus`;
//! - says "not found" for an unknown container, naming the socket and the container.
//!
//! The processes are checked independently of the CRI (which reports no pids): from
//! `/proc/<pid>/cgroup`, the stopped container's workload process exists before the stop and
//! is gone after, while the other two pods' processes still run.
//!
//! Without containerd, runc, ctr or Docker (which builds the image) the test prints SKIPPED;
//! under CI it fails instead. The guard removes the pods, containerd and its files on drop,
//! also when an assertion fails.

// A test binary: a panic *is* the failure report.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::collections::HashMap;
use std::time::{Duration, Instant};

use faultline_chaos::cri::proto::{
    ContainerFilter, ContainerState, PodSandboxFilter, PodSandboxState,
};
use faultline_tests::containerd::{Containerd, IMAGE, TestPod};
use faultline_tests::eventually;

const TEST: &str = "cri_client_lists_pods_and_stops_a_container_on_a_real_containerd";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cri_client_lists_pods_and_stops_a_container_on_a_real_containerd() {
    let started = Instant::now();
    let Some(containerd) = Containerd::start(TEST).await else {
        return;
    };
    eprintln!("containerd up in {:?}", started.elapsed());
    let client = containerd.client();
    let socket = containerd.socket().display().to_string();

    let version = client.version().await.unwrap();
    assert_eq!(version.runtime_name, "containerd", "{version:?}");
    assert_eq!(version.runtime_api_version, "v1", "{version:?}");
    assert_eq!(client.runtime(), &version);

    let namespace = format!("faultline-test-{}", std::process::id());
    let mut pods: Vec<TestPod> = Vec::new();
    for i in 0..3 {
        pods.push(
            containerd
                .run_pod(&namespace, &format!("web-{i}"), "web", "app", &[])
                .await,
        );
    }
    eprintln!("three pods ready after {:?}", started.elapsed());

    lists_every_container_with_its_pod(&containerd, &pods, &namespace).await;
    filters_reach_the_runtime(&containerd, &pods).await;

    for pod in &pods {
        let status = client.pod_sandbox_status(&pod.sandbox_id).await.unwrap();
        assert_eq!(status.state(), PodSandboxState::SandboxReady, "{status:?}");
        assert_eq!(status.metadata.as_ref().unwrap().uid, pod.uid);
        let status = client.container_status(&pod.container_id).await.unwrap();
        assert_eq!(
            status.state(),
            ContainerState::ContainerRunning,
            "{status:?}"
        );
        assert_eq!(status.metadata.as_ref().unwrap().name, "app");
        assert!(
            !pod.pids().is_empty(),
            "{}: no process in its cgroup",
            pod.name
        );
    }

    // Stop the middle pod's container: the CRI says exited, /proc says its process is gone.
    let victim = &pods[1];
    let before = victim.pids();
    for pid in &before {
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        assert!(
            cmdline.starts_with(b"/faultline-workload"),
            "pid {pid} in {}'s cgroup is not the workload: {:?}",
            victim.name,
            String::from_utf8_lossy(&cmdline)
        );
    }
    client
        .stop_container(&victim.container_id, Duration::from_secs(10))
        .await
        .unwrap();
    let status = client.container_status(&victim.container_id).await.unwrap();
    assert_eq!(
        status.state(),
        ContainerState::ContainerExited,
        "{status:?}"
    );
    assert_eq!(
        status.exit_code, 0,
        "the workload exits 0 on SIGTERM: {status:?}"
    );
    assert!(
        eventually(Duration::from_secs(10), || before
            .iter()
            .all(|pid| !faultline_tests::chaos::running(*pid)))
        .await,
        "{}'s processes {before:?} still run after StopContainer",
        victim.name
    );
    assert!(
        victim.pids().is_empty(),
        "{}: {:?}",
        victim.name,
        victim.pids()
    );
    // Stopping a stopped container succeeds (the CRI makes it idempotent).
    client
        .stop_container(&victim.container_id, Duration::from_secs(1))
        .await
        .unwrap();
    for pod in [&pods[0], &pods[2]] {
        let status = client.container_status(&pod.container_id).await.unwrap();
        assert_eq!(
            status.state(),
            ContainerState::ContainerRunning,
            "{}",
            pod.name
        );
        assert!(!pod.pids().is_empty(), "{}: its process is gone", pod.name);
    }

    let missing = client
        .container_status("no-such-container")
        .await
        .unwrap_err();
    assert!(missing.is_not_found(), "{missing:?}");
    let text = missing.to_string();
    assert!(
        text.contains(&socket) && text.contains("no-such-container"),
        "{text}"
    );
    eprintln!("test body done after {:?}", started.elapsed());
}

/// `list_pod_containers` names every container with its pod, image and labels.
async fn lists_every_container_with_its_pod(
    containerd: &Containerd,
    pods: &[TestPod],
    namespace: &str,
) {
    let listed: HashMap<String, _> = containerd
        .client()
        .list_pod_containers(None)
        .await
        .unwrap()
        .into_iter()
        .map(|c| (c.id.clone(), c))
        .collect();
    // The instance is the test's own: its three containers are all there is (sandboxes'
    // own containers are not listed by the CRI).
    assert_eq!(listed.len(), 3, "{listed:#?}");
    for pod in pods {
        let c = listed
            .get(&pod.container_id)
            .unwrap_or_else(|| panic!("{} not listed: {listed:#?}", pod.container_id));
        assert_eq!(c.name, "app");
        assert_eq!(c.image, IMAGE, "{c:?}");
        assert_eq!(c.state, ContainerState::ContainerRunning);
        let label = |key: &str| c.labels.get(key).map(String::as_str);
        assert_eq!(label("io.kubernetes.container.name"), Some("app"));
        assert_eq!(label("io.kubernetes.pod.name"), Some(pod.name.as_str()));
        assert_eq!(label("io.kubernetes.pod.namespace"), Some(namespace));
        assert_eq!(label("io.kubernetes.pod.uid"), Some(pod.uid.as_str()));
        let p = c.pod.as_ref().unwrap_or_else(|| panic!("{c:?} has no pod"));
        assert_eq!(p.sandbox_id, pod.sandbox_id);
        assert_eq!(p.name, pod.name);
        assert_eq!(p.namespace, namespace);
        assert_eq!(p.uid, pod.uid);
        assert_eq!(p.labels.get("app").map(String::as_str), Some("web"));
    }
}

/// Label and sandbox filters go to the runtime and narrow the listing.
async fn filters_reach_the_runtime(containerd: &Containerd, pods: &[TestPod]) {
    let client = containerd.client();
    let by_label = |key: &str, value: &str| PodSandboxFilter {
        label_selector: HashMap::from([(key.to_owned(), value.to_owned())]),
        ..Default::default()
    };
    let web = client
        .list_pod_sandboxes(Some(by_label("app", "web")))
        .await
        .unwrap();
    assert_eq!(web.len(), 3, "{web:#?}");
    let none = client
        .list_pod_sandboxes(Some(by_label("app", "payments")))
        .await
        .unwrap();
    assert!(none.is_empty(), "{none:#?}");
    let one = client
        .list_containers(Some(ContainerFilter {
            pod_sandbox_id: pods[2].sandbox_id.clone(),
            ..Default::default()
        }))
        .await
        .unwrap();
    assert_eq!(one.len(), 1, "{one:#?}");
    assert_eq!(one[0].id, pods[2].container_id);
}
