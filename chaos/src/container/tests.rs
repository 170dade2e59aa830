use super::runtime::{Found, Runtime, Seen};
use super::*;
use crate::error::Guard;
use crate::select::Candidate;

fn ctx(protected: &[&str]) -> Context {
    Context {
        id: crate::fault::FaultId::new("container-pause"),
        requester: crate::fault::Requester::cli(),
        deadline: std::time::SystemTime::now(),
        config: std::sync::Arc::new(crate::config::ChaosConfig {
            protected_processes: protected.iter().map(|s| (*s).to_owned()).collect(),
            ..crate::config::ChaosConfig::default()
        }),
        env: std::sync::Arc::new(crate::fault::Env::for_tests()),
    }
}

fn engine() -> Runtime {
    Runtime {
        kind: RuntimeKind::Engine,
        socket: "/run/test-docker.sock".into(),
    }
}

/// A running container whose main process is host pid `pid` (an id no cgroup names).
fn running_as(pid: i32) -> Found {
    Found {
        runtime: engine(),
        candidate: Candidate {
            id: "f".repeat(64),
            name: "victim".into(),
            ..Candidate::default()
        },
        main_pid: (pid != 0).then_some(pid),
        seen: Seen {
            running: true,
            status: "running".into(),
            ..Seen::default()
        },
    }
}

#[test]
fn a_container_holding_a_guarded_process_is_refused_naming_the_guard() {
    let mut child = std::process::Command::new("sleep")
        .arg("30")
        .spawn()
        .unwrap();
    let pid = child.id() as i32;
    let refused = |ctx: &Context, f: &Found| {
        let e = targets::guard_members(ctx, "container-pause", f, &[]).unwrap_err();
        (e.guard(), e.to_string())
    };
    let (g, msg) = refused(&ctx(&["sleep"]), &running_as(pid));
    assert_eq!(g, Some(Guard::ProtectedProcess), "{msg}");
    assert!(
        msg.contains("refused by guard protected-process")
            && msg.contains("container victim")
            && msg.contains("\"sleep\""),
        "{msg}"
    );
    // The defaults (kubelet, containerd, dockerd, sshd, systemd…) do not protect `sleep`.
    let ok = |ctx: &Context, f: &Found| targets::guard_members(ctx, "container-pause", f, &[]);
    assert!(ok(&ctx(&[]), &running_as(pid)).is_ok());
    assert!(ok(&ctx(crate::config::DEFAULT_PROTECTED), &running_as(pid)).is_ok());
    // PID 1 of the host and the agent itself, also as members rather than main process.
    assert_eq!(refused(&ctx(&[]), &running_as(1)).0, Some(Guard::Pid1));
    let me = std::process::id() as i32;
    assert_eq!(
        refused(&ctx(&[]), &running_as(me)).0,
        Some(Guard::AgentItself)
    );
    let e = targets::guard_members(&ctx(&[]), "container-stop", &running_as(0), &[me]).unwrap_err();
    assert_eq!(e.guard(), Some(Guard::AgentItself), "{e}");
    // A stopped container (no main process, no members) has nothing to protect.
    assert!(ok(&ctx(&["sleep"]), &running_as(0)).is_ok());
    child.kill().unwrap();
    child.wait().unwrap();
}

#[test]
fn a_record_journaled_by_an_older_faultline_still_reverts() {
    let old = serde_json::json!({
        "socket": "/var/run/docker.sock",
        "id": "a".repeat(64),
        "name": "web",
        "action": "pause",
        "started_at": "2026-01-01T00:00:00Z"
    });
    let record = RevertRecord {
        helpers: Vec::new(),
        state: old,
    };
    let recs = records(&record).unwrap();
    assert_eq!(recs.len(), 1);
    assert_eq!(recs[0].runtime, RuntimeKind::Engine);
    assert_eq!(recs[0].freezer, None);
    let garbage = RevertRecord {
        helpers: Vec::new(),
        state: serde_json::json!({"containers": "x"}),
    };
    assert!(records(&garbage).is_err());
}

fn cri_record(action: ContainerAction) -> ContainerRecord {
    ContainerRecord {
        socket: "/run/containerd/containerd.sock".into(),
        runtime: RuntimeKind::Cri,
        id: "b".repeat(64),
        name: "app".into(),
        pod: Some(PodRef {
            namespace: "shop".into(),
            name: "web-1".into(),
            uid: String::new(),
        }),
        action,
        started_at: String::new(),
        freezer: None,
    }
}

#[test]
fn cri_stop_and_kill_are_irreversible_and_say_the_kubelet_brings_them_back() {
    let rt = cri_record(ContainerAction::Kill).runtime();
    let kill = How {
        action: ContainerAction::Kill,
        grace: Duration::ZERO,
        signal: Some(default_signal()),
    };
    let (act, rev) = ops::steps(kill, &cri_record(ContainerAction::Kill), &rt);
    assert!(
        act.contains("StopContainer") && act.contains("SIGKILL"),
        "{act}"
    );
    assert!(
        rev.contains("kubelet") && rev.contains("irreversible"),
        "{rev}"
    );
    assert!(rev.contains("pod shop/web-1"), "{rev}");
    // What the kubelet reverts needs no revert from faultline: Ok without asking anything.
    let record = RevertRecord::with_state(&ContainersState {
        containers: vec![cri_record(ContainerAction::Stop)],
    })
    .unwrap();
    ops::revert(&record).unwrap();
}

#[test]
fn what_a_cri_runtime_cannot_do_is_refused_with_the_alternative() {
    let rt = cri_record(ContainerAction::Restart).runtime();
    let restart = How {
        action: ContainerAction::Restart,
        grace: Duration::from_secs(1),
        signal: None,
    };
    let e = ops::check_runtime("container-restart", restart, &rt).unwrap_err();
    assert!(
        matches!(e, FaultError::Unsupported { .. }) && e.to_string().contains("container-kill"),
        "{e}"
    );
    let term = How {
        action: ContainerAction::Kill,
        grace: Duration::ZERO,
        signal: Some(SignalName(nix::sys::signal::Signal::SIGTERM)),
    };
    let e = ops::check_runtime("container-kill", term, &rt).unwrap_err();
    assert!(e.to_string().contains("container-stop"), "{e}");
    // The Engine API can do both.
    assert!(ops::check_runtime("container-kill", term, &engine()).is_ok());
}

#[test]
fn container_faults_take_selectors_from_flags_and_json_alike() {
    use clap::Parser;
    #[derive(Debug, Parser)]
    struct Cli {
        #[command(subcommand)]
        spec: crate::spec::FaultSpec,
    }
    let cli = Cli::try_parse_from([
        "x",
        "container-kill",
        "--namespace",
        "shop",
        "--label",
        "app=web",
        "--label",
        "tier=front",
        "--count",
        "1",
        "--seed",
        "42",
        "--cri-socket",
        "/run/c.sock",
        "--duration",
        "30s",
    ])
    .unwrap();
    let json: crate::spec::FaultSpec = serde_json::from_str(
        r#"{"kind":"container-kill","namespace":"shop","label":{"app":"web","tier":"front"},
            "count":1,"seed":42,"cri_socket":"/run/c.sock","duration":"30s"}"#,
    )
    .unwrap();
    assert_eq!(cli.spec, json);
    let back: crate::spec::FaultSpec =
        serde_json::from_str(&serde_json::to_string(&json).unwrap()).unwrap();
    assert_eq!(back, json);
    // A spec journaled before the selectors existed still parses.
    let old: crate::spec::FaultSpec = serde_json::from_str(
        r#"{"kind":"container-pause","container":"web","docker_socket":"/d.sock","duration":"5s"}"#,
    )
    .unwrap();
    assert_eq!(old.kind(), "container-pause");
    // Neither --container nor a selector, or both: refused before any runtime is asked.
    let ctx = ctx(&[]);
    for spec in [
        r#"{"kind":"container-stop","duration":"5s"}"#,
        r#"{"kind":"container-stop","container":"web","pod":"web-1","duration":"5s"}"#,
    ] {
        let spec: crate::spec::FaultSpec = serde_json::from_str(spec).unwrap();
        let e = spec.fault().plan(&ctx).unwrap_err();
        assert!(matches!(e, FaultError::Invalid { .. }), "{e}");
        assert!(e.to_string().contains("--container"), "{e}");
    }
}
