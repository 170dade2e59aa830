//! Crash safety of the faults a running `faultline run` holds, observed from outside faultline.
//!
//! One 10-minute fault of every kind that holds state is posted to the agent's API
//! (`POST /v1/faults`): a process pause of the test's own `sleep`, CPU and memory stress, a
//! latency proxy in front of the test's echo server, a disk fill and disk I/O on a tmpfs the
//! test mounted, a partition and a rate limit inside two network namespaces the test made,
//! and a container pause of a container the test started. Each is seen in effect by an
//! observer that does not ask faultline: `/proc/<pid>/stat`, the tmpfs's files and
//! `statvfs(2)`, a TCP connect, `nft list ruleset`, `tc qdisc show`, the container's cgroup
//! freezer state.
//!
//! Then the agent is SIGKILLed. What ran inside it or under it goes at once: the stress
//! helpers (PR_SET_PDEATHSIG) and the proxy's listener. The rest still holds, since only the
//! journal can undo it. The agent started again on the same state dir must revert all of it
//! within 1 s of the restart, process start included, and log `fault recovered: reverted`
//! naming each fault id; afterwards its journal is empty and its API lists no fault.
//!
//! Root-only kinds (disk, network) are skipped without root and container-pause without
//! Docker; under CI either absence fails the test.
//!
//! Timing: 1 s is the bar, asserted as in `chaos_recovery.rs`. Every observer polls
//! on its own thread every 10 ms, so a slow one does not
//! delay another's figure; each figure is an upper bound by one observation.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers: a panic is the failure report
use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use faultline_tests::api::{OPERATOR, VIEWER, http, start_agent, write_tokens};
use faultline_tests::chaos::{
    Tmpfs, Victim, accepting, echo_server, helper_pids, is_root, journal_entries, require, running,
    state, wait_until,
};
use faultline_tests::docker::{Container, docker_available};
use faultline_tests::freezer::{self, ThawOnDrop};
use faultline_tests::netns::{self, ADDR_B, NetnsPair};
use serde_json::{Value, json};

const T: Duration = Duration::from_secs(10);
/// Longer than the test by far: nothing may end because its time ran out.
const HOLD: &str = "10m";
/// The added latency of the proxy fault.
const LATENCY: Duration = Duration::from_millis(50);

/// Whether a fault is in effect now, seen without asking faultline.
type Observer<'a> = Box<dyn Fn() -> bool + Send + Sync + 'a>;

/// One fault the agent holds, and how the test sees it.
struct Held<'a> {
    kind: &'static str,
    id: String,
    in_effect: Observer<'a>,
    /// False for what dies with the agent process (stress helpers, the in-agent proxy);
    /// true for what only the journal can undo (stopped process, files, kernel state).
    outlives_agent: bool,
}

/// `POST /v1/faults` as the operator; the created fault's id.
fn post(api: &str, body: &Value) -> String {
    let (status, answer) = http(api, "POST", "/v1/faults", Some(OPERATOR), &body.to_string());
    assert_eq!(status, 201, "POST /v1/faults {body}: {answer}");
    let created: Value = serde_json::from_str(&answer).unwrap();
    created["id"].as_str().unwrap().to_owned()
}

/// The helper pids the journal entry of fault `id` names.
fn helpers_of(state_dir: &std::path::Path, id: &str) -> Vec<i32> {
    journal_entries(state_dir)
        .iter()
        .find(|e| e["id"] == id)
        .map(helper_pids)
        .unwrap_or_default()
}

/// Resident memory of `pid` in bytes (`VmRSS`), 0 when it is gone.
fn rss_bytes(pid: i32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .map_or(0, |kib| kib * 1024)
}

/// One echo through `addr`: its round-trip time.
fn echo_rtt(addr: SocketAddr) -> Duration {
    let mut c = TcpStream::connect_timeout(&addr, T).unwrap();
    c.set_read_timeout(Some(T)).unwrap();
    let t = Instant::now();
    c.write_all(b"ping").unwrap();
    let mut buf = [0u8; 4];
    c.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"ping");
    t.elapsed()
}

/// Whether `fs` holds a file whose name starts with `prefix`.
fn has_file<'a>(fs: &'a Tmpfs, prefix: &'static str) -> Observer<'a> {
    Box::new(move || fs.files().iter().any(|f| f.starts_with(prefix)))
}

// `Agent` and `Container` need a tokio runtime; the observations are plain blocking calls.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_held_by_a_sigkilled_agent_are_reverted_within_1s_of_its_restart() {
    let disk = require(is_root(), "root (disk faults on a test tmpfs)");
    let net = netns::require_kernel_tools();
    let docker = docker_available("container-pause held by a sigkilled agent");

    // The targets, each removed on drop also when the test fails.
    let upstream = echo_server();
    let listen: SocketAddr = format!("127.0.0.1:{}", faultline_tests::backup::free_port())
        .parse()
        .unwrap();
    let fs = disk.then(|| Tmpfs::mount("32m"));
    let pair = net.then(|| NetnsPair::create("crash-agent"));
    let container = if docker {
        let c = Container::run("crash-agent", &[], &["--listen", "0.0.0.0:7000"]).await;
        c.wait_ready(Duration::from_secs(20)).await;
        Some(c)
    } else {
        None
    };
    // Dropped before the container: a frozen task cannot die, `docker rm -f` would hang.
    let mut thaw = ThawOnDrop::default();
    let cgroup = container
        .as_ref()
        .map(|c| freezer::cgroup_of_container(&c.id));
    if let Some(cg) = &cgroup {
        thaw.add(cg);
    }

    let tokens_dir = tempfile::tempdir().unwrap();
    let tokens = write_tokens(tokens_dir.path());
    // Up to nine faults at once: above the default cap of eight.
    let (mut agent, api) = start_agent(
        &tokens,
        "",
        "chaos:\n  max_concurrent: 16\n  disk_free_floor: 10%\n",
    );
    let state_dir = agent.dir().join("state");

    // Started last: `sleep 300` must not run out while images and binaries build.
    let victim = Victim::sleep();
    let mut held: Vec<Held<'_>> = Vec::new();
    let vpid = victim.pid();
    held.push(Held {
        kind: "process-pause",
        id: post(
            &api,
            &json!({"kind": "process-pause", "pid": vpid, "duration": HOLD}),
        ),
        in_effect: Box::new(move || state(vpid) == Some('T')),
        outlives_agent: true,
    });
    for (kind, body) in [
        (
            "cpu-stress",
            json!({"kind": "cpu-stress", "workers": 1, "load": 20, "duration": HOLD}),
        ),
        (
            "memory-stress",
            json!({"kind": "memory-stress", "bytes": "16MiB", "duration": HOLD}),
        ),
    ] {
        let id = post(&api, &body);
        let helpers = helpers_of(&state_dir, &id);
        assert!(!helpers.is_empty(), "{kind}: no helpers journaled");
        held.push(Held {
            kind,
            id,
            in_effect: Box::new(move || helpers.iter().any(|p| running(*p))),
            outlives_agent: false,
        });
    }
    held.push(Held {
        kind: "latency",
        id: post(
            &api,
            &json!({
                "kind": "latency",
                "listen": listen.to_string(),
                "upstream": upstream.to_string(),
                "latency": "50ms",
                "duration": HOLD,
            }),
        ),
        in_effect: Box::new(move || accepting(listen)),
        outlives_agent: false,
    });
    if let Some(fs) = &fs {
        let path = fs.path().to_string_lossy().into_owned();
        held.push(Held {
            kind: "disk-fill",
            id: post(
                &api,
                &json!({"kind": "disk-fill", "path": path, "percent": 40, "duration": HOLD}),
            ),
            in_effect: has_file(fs, ".faultline-fill-"),
            outlives_agent: true,
        });
        held.push(Held {
            kind: "disk-io",
            id: post(
                &api,
                &json!({"kind": "disk-io", "path": path, "write_rate": "1MiB", "duration": HOLD}),
            ),
            in_effect: has_file(fs, ".faultline-io-"),
            outlives_agent: true,
        });
    }
    if let Some(pair) = &pair {
        let ns = pair.a.clone();
        held.push(Held {
            kind: "partition",
            id: post(
                &api,
                &json!({
                    "kind": "partition",
                    "netns": ns,
                    "dest": [format!("{ADDR_B}/32")],
                    "port": [7030],
                    "duration": HOLD,
                }),
            ),
            in_effect: Box::new(move || NetnsPair::nft_ruleset(&ns).contains("faultline")),
            outlives_agent: true,
        });
        let ns = pair.a.clone();
        held.push(Held {
            kind: "rate-limit",
            id: post(
                &api,
                &json!({
                    "kind": "rate-limit",
                    "netns": ns,
                    "dev": "veth-a",
                    "rate": "1mbit",
                    "duration": HOLD,
                }),
            ),
            in_effect: Box::new(move || NetnsPair::qdiscs(&ns).contains("tbf")),
            outlives_agent: true,
        });
    }
    if let (Some(c), Some(cg)) = (&container, cgroup.clone()) {
        held.push(Held {
            kind: "container-pause",
            id: post(
                &api,
                &json!({"kind": "container-pause", "container": c.name, "duration": HOLD}),
            ),
            in_effect: Box::new(move || freezer::frozen(&cg) == Some(true)),
            outlives_agent: true,
        });
    }
    let kinds: Vec<&str> = held.iter().map(|h| h.kind).collect();
    eprintln!("holding {} faults: {kinds:?}", held.len());

    // Every fault in effect, as seen from outside.
    for h in &held {
        assert!(wait_until(T, &h.in_effect), "{} not in effect", h.kind);
    }
    assert!(
        echo_rtt(listen) >= LATENCY,
        "the proxy does not add its latency"
    );
    if let Some(fs) = &fs {
        assert!(fs.used_percent() >= 39.0, "fill: {:.1}%", fs.used_percent());
    }
    let entries = journal_entries(&state_dir);
    assert_eq!(entries.len(), held.len(), "{entries:#?}");
    assert!(
        entries.iter().all(|e| e["phase"] == "applied"),
        "{entries:#?}"
    );
    let helpers: Vec<i32> = entries.iter().flat_map(helper_pids).collect();
    let memory = held.iter().find(|h| h.kind == "memory-stress").unwrap();
    let memory_rss: u64 = helpers_of(&state_dir, &memory.id)
        .iter()
        .map(|p| rss_bytes(*p))
        .sum();
    assert!(memory_rss >= 16 << 20, "memory helper RSS {memory_rss} B");

    agent.kill().await;
    // What ran in or under the agent dies with it, before any recovery.
    assert!(
        wait_until(Duration::from_secs(1), || helpers
            .iter()
            .all(|p| !running(*p))),
        "helpers survived SIGKILL of the agent: {:?}",
        helpers.iter().filter(|p| running(**p)).collect::<Vec<_>>()
    );
    for h in held.iter().filter(|h| !h.outlives_agent) {
        assert!(
            wait_until(Duration::from_secs(1), || !(h.in_effect)()),
            "{} still in effect after SIGKILL of the agent",
            h.kind
        );
    }
    // What only the journal can undo is still there.
    for h in held.iter().filter(|h| h.outlives_agent) {
        assert!((h.in_effect)(), "{} ended before recovery", h.kind);
    }
    assert_eq!(journal_entries(&state_dir).len(), held.len());

    let started = Instant::now();
    agent.restart();
    let gone_after: Vec<Option<Duration>> = std::thread::scope(|s| {
        let watchers: Vec<_> = held
            .iter()
            .map(|h| {
                s.spawn(|| {
                    wait_until(Duration::from_secs(5), || !(h.in_effect)())
                        .then(|| started.elapsed())
                })
            })
            .collect();
        watchers.into_iter().map(|w| w.join().unwrap()).collect()
    });
    for (h, took) in held.iter().zip(&gone_after) {
        eprintln!("  {:<16} {:<40} gone after {took:?}", h.kind, h.id);
    }
    let left: Vec<&str> = held
        .iter()
        .zip(&gone_after)
        .filter(|(_, t)| t.is_none())
        .map(|(h, _)| h.kind)
        .collect();
    assert!(
        left.is_empty(),
        "not reverted 5 s after the restart: {left:?}; journal {:#?}",
        journal_entries(&state_dir)
    );
    let took = gone_after.iter().flatten().max().copied().unwrap();
    eprintln!(
        "recovery after restart took {took:?} for {} faults (including process start)",
        held.len()
    );
    assert!(took < Duration::from_secs(1), "recovery took {took:?}");

    // Each reported as recovered, by id.
    let reported = |h: &Held<'_>| {
        agent
            .stderr()
            .lines()
            .any(|l| l.contains("fault recovered: reverted") && l.contains(&h.id))
    };
    for h in &held {
        assert!(
            wait_until(T, || reported(h)),
            "{} ({}) not reported as recovered",
            h.kind,
            h.id
        );
    }
    assert!(journal_entries(&state_dir).is_empty());
    let listed = faultline_tests::drill::poll_for(T, || {
        let (status, body) = http(&api, "GET", "/v1/faults", Some(VIEWER), "");
        (status == 200).then_some(body)
    })
    .expect("the restarted agent's API answers");
    assert_eq!(serde_json::from_str::<Value>(&listed).unwrap(), json!([]));
    assert!(
        agent.terminate(T).await.is_some_and(|s| s.success()),
        "the restarted agent did not stop cleanly"
    );
}
