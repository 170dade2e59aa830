//! Container and process faults on a CRI runtime, through the real `faultline` binary, against
//! a real containerd the test starts itself (`faultline_tests::containerd`: its own config,
//! root, state and socket, named to faultline with `--cri-socket`; Docker's engine is not
//! used except to build the image). Pods are made through the CRI the kubelet's way, with
//! Kubernetes labels.
//!
//! Every effect is checked with evidence the test gathers itself: the CRI state from its own
//! client (`ContainerStatus`), the processes' state letters in `/proc/<pid>/stat`, the
//! freezer's own state file in the pod's cgroup.
//!
//! - `--label app=web --count 1` kills exactly one of three matching pods (CRI says exited,
//!   its process is gone) and leaves the other two running; the output names the pod, the
//!   seed and says the kubelet, not faultline, brings it back.
//! - A label that matches nothing is refused naming the selector; a pod in `kube-system` is
//!   refused naming the `protected-namespace` guard, and left running.
//! - `container-pause` freezes the pod's cgroup (its processes show `D`, `freezer.state`
//!   `FROZEN`) and thaws it on SIGTERM; after the injector is SIGKILLed, `faultline fault
//!   revert --all` thaws it, and so does the next `faultline` start (its journal recovery).
//! - `process-pause` with pod selectors stops the pod's processes (`T`) and resumes them.
//! - A drill scenario with a label selector runs end to end (`faultline drill run`) and its
//!   report names the pod it froze — the pod the test saw frozen.
//! - `POST /v1/faults` takes the same selector fields in JSON (a running `faultline run`'s
//!   API): the pod it answers as picked is the one frozen, `DELETE` thaws it, and a label
//!   that matches nothing is a 400 naming the selector.
//!
//! Without containerd, runc, ctr or Docker the test prints SKIPPED; under CI it fails.

// A test binary: a panic *is* the failure report.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::time::{Duration, Instant};

use faultline_chaos::cri::proto::ContainerState;
use faultline_tests::chaos::{Scratch, wait_until};
use faultline_tests::containerd::{Containerd, TestPod};
use faultline_tests::freezer::{self, ThawOnDrop, Watched};
use nix::sys::signal::Signal;

const TEST: &str = "container_faults_and_pod_selectors_on_a_real_containerd";

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The CRI state of `pod`'s container, from the test's own client.
async fn cri_state(containerd: &Containerd, pod: &TestPod) -> ContainerState {
    containerd
        .client()
        .container_status(&pod.container_id)
        .await
        .unwrap()
        .state()
}

/// The freezer cgroup of `pod`'s container, from its processes' `/proc/<pid>/cgroup`.
fn freezer_path(pod: &TestPod) -> String {
    let pids = pod.pids();
    let pid = pids
        .first()
        .unwrap_or_else(|| panic!("{}: no process", pod.name));
    let path = freezer::cgroup_of(*pid).unwrap();
    assert!(path.ends_with(&pod.container_id), "{path}");
    path
}

/// A loopback port that was free a moment ago.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn container_faults_and_pod_selectors_on_a_real_containerd() {
    let started = Instant::now();
    let Some(containerd) = Containerd::start(TEST).await else {
        return;
    };
    // Dropped before `containerd`: a frozen task cannot die, so the pods' removal would hang.
    let mut thaw = ThawOnDrop::default();
    let socket = containerd.socket().display().to_string();
    let ns = format!("faultline-cri-{}", std::process::id());
    let mut web = Vec::new();
    for i in 0..3 {
        web.push(
            containerd
                .run_pod(&ns, &format!("web-{i}"), "web", "app", &[])
                .await,
        );
    }
    let db = containerd.run_pod(&ns, "db-0", "db", "db", &[]).await;
    let system = containerd
        .run_pod("kube-system", "dns-0", "dns", "dns", &[])
        .await;
    let ports = [free_port(), free_port()];
    let mut api = Vec::new();
    for (i, port) in ports.iter().enumerate() {
        let listen = format!("127.0.0.1:{port}");
        api.push(
            containerd
                .run_pod(
                    &ns,
                    &format!("api-{i}"),
                    "api",
                    "api",
                    &["--listen", &listen],
                )
                .await,
        );
    }
    for pod in web.iter().chain([&db, &system]).chain(&api) {
        thaw.add(&freezer_path(pod));
    }
    eprintln!("pods ready after {:?}", started.elapsed());
    let s = Scratch::new("");

    one_of_three_is_killed_and_the_others_run(&containerd, &s, &socket, &ns, &web).await;
    nothing_matched_and_protected_namespaces_are_refused(&containerd, &s, &socket, &ns, &system)
        .await;
    pause_freezes_and_every_way_of_reverting_thaws(&containerd, &s, &socket, &ns, &db).await;
    process_faults_take_the_same_selectors(&s, &socket, &ns, &db);
    a_drill_with_a_label_selector_names_the_pod_it_hit(&s, &socket, &ns, &api, ports).await;
    the_api_takes_the_same_json(&socket, &ns, &web);
    assert!(s.journal_entries().is_empty(), "{:?}", s.journal_entries());
    eprintln!("test body done after {:?}", started.elapsed());
}

async fn one_of_three_is_killed_and_the_others_run(
    containerd: &Containerd,
    s: &Scratch,
    socket: &str,
    ns: &str,
    web: &[TestPod],
) {
    let pids: Vec<Vec<i32>> = web.iter().map(TestPod::pids).collect();
    let out = s.run(&[
        "fault",
        "inject",
        "container-kill",
        "--cri-socket",
        socket,
        "--namespace",
        ns,
        "--label",
        "app=web",
        "--count",
        "1",
        "--seed",
        "7",
        "--duration",
        "30s",
    ]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    let mut exited = Vec::new();
    for (i, pod) in web.iter().enumerate() {
        match cri_state(containerd, pod).await {
            ContainerState::ContainerExited => exited.push(i),
            ContainerState::ContainerRunning => assert!(
                pids[i].iter().all(|p| faultline_tests::chaos::running(*p)),
                "{} runs per CRI but its processes are gone",
                pod.name
            ),
            other => panic!("{}: {other:?}", pod.name),
        }
    }
    assert_eq!(
        exited.len(),
        1,
        "exactly one of three: {exited:?}\n{stdout}"
    );
    let hit = &web[exited[0]];
    assert!(
        wait_until(Duration::from_secs(10), || pids[exited[0]]
            .iter()
            .all(|p| !faultline_tests::chaos::running(*p))),
        "{}'s processes {:?} survive the kill",
        hit.name,
        pids[exited[0]]
    );
    // The output names the pod hit, the pick and its seed, and who brings the pod back.
    assert!(
        stdout.contains(&format!("of pod {ns}/{}", hit.name)),
        "{stdout}"
    );
    assert!(
        stdout.contains("selected: 1 of 3 matching") && stdout.contains("seed 7"),
        "{stdout}"
    );
    assert!(
        stdout.contains("CRI ContainerStatus") && stdout.contains("the kubelet, not faultline"),
        "{stdout}"
    );
}

async fn nothing_matched_and_protected_namespaces_are_refused(
    containerd: &Containerd,
    s: &Scratch,
    socket: &str,
    ns: &str,
    system: &TestPod,
) {
    let out = s.run(&[
        "fault",
        "inject",
        "container-pause",
        "--cri-socket",
        socket,
        "--namespace",
        ns,
        "--label",
        "app=nope",
        "--duration",
        "30s",
    ]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("no running container matches the selector")
            && stderr.contains(&format!("namespace={ns} label app=nope")),
        "{stderr}"
    );
    for kind in ["container-pause", "container-kill", "process-pause"] {
        let out = s.run(&[
            "fault",
            "inject",
            kind,
            "--cri-socket",
            socket,
            "--namespace",
            "kube-system",
            "--pod",
            "dns-0",
            "--duration",
            "30s",
        ]);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(3), "{kind}: {stderr}");
        assert!(
            stderr.contains("refused by guard protected-namespace")
                && stderr.contains("kube-system/dns-0"),
            "{kind}: {stderr}"
        );
    }
    assert_eq!(
        cri_state(containerd, system).await,
        ContainerState::ContainerRunning
    );
    assert!(freezer::all_runnable(&system.pids()), "{:?}", system.pids());
    // The list is configuration: emptied, the same pod may be planned.
    let open = Scratch::new("chaos:\n  protected_namespaces: []\n");
    let out = open.run(&[
        "fault",
        "inject",
        "container-pause",
        "--cri-socket",
        socket,
        "--namespace",
        "kube-system",
        "--pod",
        "dns-0",
        "--dry-run",
        "--duration",
        "30s",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(s.journal_entries().is_empty());
}

async fn pause_freezes_and_every_way_of_reverting_thaws(
    containerd: &Containerd,
    s: &Scratch,
    socket: &str,
    ns: &str,
    db: &TestPod,
) {
    let watched = Watched {
        cgroup: freezer_path(db),
        pids: db.pids(),
    };
    let args = [
        "fault",
        "inject",
        "container-pause",
        "--cri-socket",
        socket,
        "--namespace",
        ns,
        "--pod",
        "db-0",
        "--duration",
        "60s",
    ];
    // Held, then reverted by SIGTERM.
    let bg = watched.inject(s, "pause", &args);
    eprintln!("frozen: /proc states {:?}", freezer::states(&watched.pids));
    // The CRI knows nothing of a freeze: the container still runs as far as it is concerned.
    assert_eq!(
        cri_state(containerd, db).await,
        ContainerState::ContainerRunning
    );
    watched.sigterm_thaws(bg);
    // The injector SIGKILLed: frozen until `fault revert --all` reverts the journal entry.
    watched.sigkill_keeps_it_frozen(watched.inject(s, "pause-killed", &args));
    watched.revert_all_thaws(s);
    // Again, and this time the next faultline start recovers it (journal recovery runs first
    // in every command that opens the engine; a dry run applies nothing itself).
    watched.sigkill_keeps_it_frozen(watched.inject(s, "pause-killed-2", &args));
    let mut dry = args.to_vec();
    dry.insert(2, "--dry-run");
    let out = s.run(&dry);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        watched.thawed(),
        "not thawed by the next start: {:?}",
        freezer::states(&watched.pids)
    );
    assert!(s.journal_entries().is_empty());
}

fn process_faults_take_the_same_selectors(s: &Scratch, socket: &str, ns: &str, db: &TestPod) {
    let pids = db.pids();
    let mut bg = s.spawn(
        "process-pause",
        &[
            "fault",
            "inject",
            "process-pause",
            "--cri-socket",
            socket,
            "--namespace",
            ns,
            "--label",
            "app=db",
            "--duration",
            "60s",
        ],
    );
    assert!(
        s.wait_applied("process-pause", Duration::from_secs(20))
            .is_some(),
        "{}",
        bg.stderr()
    );
    let stopped = wait_until(Duration::from_secs(5), || {
        freezer::states(&pids).iter().all(|c| *c == 'T')
    });
    assert!(stopped, "not stopped: {:?}", freezer::states(&pids));
    // The line is printed after the check that follows the journal's `applied`.
    let named = wait_until(Duration::from_secs(5), || {
        bg.stdout().contains(&format!("of pod {ns}/db-0"))
    });
    assert!(named, "{}", bg.stdout());
    bg.signal(Signal::SIGTERM);
    assert!(
        bg.wait_exit(Duration::from_secs(20))
            .expect("exits")
            .success(),
        "{}",
        bg.stderr()
    );
    assert!(freezer::all_runnable(&pids), "{:?}", freezer::states(&pids));
}

async fn a_drill_with_a_label_selector_names_the_pod_it_hit(
    s: &Scratch,
    socket: &str,
    ns: &str,
    api: &[TestPod],
    ports: [u16; 2],
) {
    let scenario = format!(
        "name: cri-label-pause\n\
         probe_interval: 100ms\n\
         max_duration: 60s\n\
         steady_state:\n\
         \x20 - name: api-0\n\
         \x20   tcp: {{ address: \"127.0.0.1:{}\", timeout: 500ms }}\n\
         \x20 - name: api-1\n\
         \x20   tcp: {{ address: \"127.0.0.1:{}\", timeout: 500ms }}\n\
         faults:\n\
         \x20 - at: 0s\n\
         \x20   fault:\n\
         \x20     kind: container-pause\n\
         \x20     cri_socket: {socket}\n\
         \x20     namespace: {ns}\n\
         \x20     label: {{app: api}}\n\
         \x20     count: 1\n\
         \x20     duration: 3s\n\
         recovery: {{ strategy: self-heal, consecutive: 2, timeout: 20s }}\n\
         objectives: {{ rto: 20s }}\n",
        ports[0], ports[1]
    );
    let file = s.path().join("drill.yaml");
    std::fs::write(&file, scenario).unwrap();
    let report = s.path().join("drill.json");
    let pids: Vec<Vec<i32>> = api.iter().map(TestPod::pids).collect();
    let (state, file2, report2) = (s.state(), file.clone(), report.clone());
    let drill = tokio::task::spawn_blocking(move || {
        faultline_tests::drill::drill_run(
            &state,
            &file2,
            &["--report-json", &report2.display().to_string()],
            Duration::from_secs(90),
        )
    });
    // Watch both pods while the drill runs: which one does the test itself see frozen?
    let mut seen_frozen = [false, false];
    while !drill.is_finished() {
        for (i, p) in pids.iter().enumerate() {
            seen_frozen[i] |= freezer::all_frozen_in_proc(p);
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let out = drill.await.unwrap();
    eprintln!("drill: {}", text(&out.stdout));
    assert!(
        out.status.success(),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    let fault = &report["faults"][0];
    let targets = fault["targets"].to_string();
    let named: Vec<usize> = (0..2)
        .filter(|i| targets.contains(&format!("of pod {ns}/api-{i}")))
        .collect();
    assert_eq!(named.len(), 1, "the report names one pod: {targets}");
    assert_eq!(
        seen_frozen,
        [named[0] == 0, named[0] == 1],
        "the pod the report names is the one seen frozen: {targets}"
    );
    let selection = &fault["selection"];
    assert_eq!(
        selection["matched"].as_array().map(Vec::len),
        Some(2),
        "{selection}"
    );
    assert_eq!(
        selection["picked"].as_array().map(Vec::len),
        Some(1),
        "{selection}"
    );
    // The drill pinned the seed before it locked its targets: the report's scenario has it.
    assert_eq!(
        report["scenario_spec"]["faults"][0]["fault"]["seed"], selection["seed"],
        "{report}"
    );
    for p in &pids {
        assert!(freezer::all_runnable(p), "{:?}", freezer::states(p));
    }
}

fn the_api_takes_the_same_json(socket: &str, ns: &str, web: &[TestPod]) {
    use faultline_tests::api::{OPERATOR, http, start_agent, write_tokens};
    let dir = tempfile::tempdir().unwrap();
    let tokens = write_tokens(dir.path());
    let (_agent, addr) = start_agent(&tokens, "", "");
    let spec = |label: &str| {
        serde_json::json!({
            "kind": "container-pause", "cri_socket": socket, "namespace": ns,
            "label": {"app": label}, "count": 1, "seed": 3, "duration": "60s",
        })
        .to_string()
    };
    let (status, body) = http(&addr, "POST", "/v1/faults", Some(OPERATOR), &spec("nope"));
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("label app=nope"), "{body}");
    let (status, body) = http(&addr, "POST", "/v1/faults", Some(OPERATOR), &spec("web"));
    assert_eq!(status, 201, "{body}");
    let fault: serde_json::Value = serde_json::from_str(&body).unwrap();
    let picked = fault["selection"]["picked"].to_string();
    // The first test killed one of the three web pods: two run, one of them is picked.
    assert_eq!(
        fault["selection"]["matched"].as_array().map(Vec::len),
        Some(2),
        "{body}"
    );
    assert_eq!(fault["selection"]["seed"], 3, "{body}");
    let running: Vec<&TestPod> = web.iter().filter(|p| !p.pids().is_empty()).collect();
    assert_eq!(running.len(), 2);
    for pod in &running {
        let hit = picked.contains(&format!("{ns}/{}/", pod.name));
        let path = freezer_path(pod);
        assert_eq!(freezer::frozen(&path), Some(hit), "{}: {picked}", pod.name);
        assert_eq!(
            freezer::all_frozen_in_proc(&pod.pids()),
            hit,
            "{}",
            pod.name
        );
    }
    let id = fault["id"].as_str().unwrap();
    let (status, body) = http(
        &addr,
        "DELETE",
        &format!("/v1/faults/{id}"),
        Some(OPERATOR),
        "",
    );
    assert!(status < 300, "{status} {body}");
    for pod in &running {
        assert_eq!(
            freezer::frozen(&freezer_path(pod)),
            Some(false),
            "{}",
            pod.name
        );
        assert!(freezer::all_runnable(&pod.pids()), "{}", pod.name);
    }
}
