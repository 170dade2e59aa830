//! `faultline gameday run` against three real agents: node containers on a private Docker
//! network this test creates, each running `faultline run` (API on 0.0.0.0 inside the
//! container, published on a random 127.0.0.1 port) and the project's echo service,
//! restarted by the workload's `supervise` PID 1 one second after it dies. The game day runs
//! on the host against the published ports.
//!
//! Proved, in one game (a single parallel stage):
//! - node1 (a scenario named in the agent's own `drills:` config) kills the service; the
//!   combined report carries the RTO node1's agent measured (the supervisor's 1 s restart
//!   delay, so at least 1 s and well under the 20 s objective);
//! - node2 (an inline scenario file) puts a 300 ms latency proxy in front of the service;
//!   its probe (an echo round trip through the proxy, falling back to the service's port
//!   when no proxy listens) fails over 100 ms, so the report shows the slowest probe round
//!   above 300 ms and an RTO of about the fault's 4 s;
//! - node3 is cut off (`docker network disconnect`) while its process-pause fault is
//!   active: the report names it `unreachable`, with a `since` no earlier than the cut and
//!   within `unreachable_after` (+ one poll) of it, while node1 and node2 finish; the game
//!   fails (exit 1) because of node3 alone. Reconnected afterwards, node3's agent lists no
//!   active fault, its drill's report shows the pause reverted within its 12 s duration
//!   (+ 3 s), and the service process is running (not stopped).
//!
//! Then a second game: long faults on every node and SIGINT to `faultline gameday run`
//! pulls every agent's kill switch: the report says aborted, every drill ended `aborted`,
//! and no agent has an active fault. A bad game-day file exits 2 naming file, line and
//! field (no Docker needed).
//!
//! Safety: only this test's containers and network are touched (removed on drop, also on
//! failure); all traffic goes to 127.0.0.1. Needs Docker; skips without it, fails under
//! CI.

// Test helpers outside `#[test]` functions fail loudly by design.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::path::Path;
use std::time::{Duration, Instant};

use faultline_tests::agent_binary;
use faultline_tests::docker::docker_available;
use faultline_tests::drill::{
    api_call as http, chromium, finished_drill, png_stats, poll_for, screenshot,
};
use faultline_tests::gameday::{Network, Node, node_config, spawn_game, wait_game};
use serde_json::Value;

const TOKEN: &str = "gameday-operator-token-0123";

fn json(s: &str) -> Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("{e}: {s}"))
}

const KILL: &str = "\
name: web-kill
description: the echo service is killed; its supervisor restarts it after 1 s
probe_interval: 100ms
max_duration: 60s
steady_state:
  - name: echo-port
    tcp: { address: \"127.0.0.1:7000\", timeout: 500ms }
faults:
  - at: 300ms
    fault: { kind: process-kill, cmdline: \"^/faultline-workload --listen\", duration: 1s }
recovery: { strategy: self-heal, consecutive: 3, timeout: 30s }
objectives: { rto: 20s }
";

fn latency_scenario(duration: &str) -> String {
    format!(
        "\
name: echo-latency
description: 300 ms added in front of the echo service
probe_interval: 200ms
max_duration: 90s
steady_state:
  - name: echo-rtt
    command: {{ run: [/faultline-workload, ping, \"127.0.0.1:7100,127.0.0.1:7000\", --timeout, 2s, --max-rtt, 100ms], timeout: 5s }}
faults:
  - at: 300ms
    fault: {{ kind: latency, listen: \"127.0.0.1:7100\", upstream: \"127.0.0.1:7000\", latency: 300ms, duration: {duration} }}
recovery: {{ strategy: self-heal, consecutive: 2, timeout: 60s }}
objectives: {{ rto: 20s }}
"
    )
}

fn pause_scenario(duration: &str) -> String {
    format!(
        "\
name: echo-pause
description: the echo service is stopped (SIGSTOP) for a while
probe_interval: 200ms
max_duration: 90s
steady_state:
  - name: echo-rtt
    command: {{ run: [/faultline-workload, ping, \"127.0.0.1:7000\", --timeout, 500ms], timeout: 5s }}
faults:
  - at: 300ms
    fault: {{ kind: process-pause, cmdline: \"^/faultline-workload --listen\", duration: {duration} }}
recovery: {{ strategy: self-heal, consecutive: 2, timeout: 60s }}
objectives: {{ rto: 30s }}
"
    )
}

fn node_etc(dir: &Path, name: &str, drills: &[(&str, &str)]) -> std::path::PathBuf {
    let etc = dir.join(name);
    std::fs::create_dir_all(&etc).unwrap();
    std::fs::write(
        etc.join("tokens.yaml"),
        format!("- {{name: gameday, role: operator, token: {TOKEN}}}\n"),
    )
    .unwrap();
    let paths: Vec<String> = drills
        .iter()
        .map(|(file, text)| {
            std::fs::write(etc.join(file), text).unwrap();
            format!("/etc/faultline/{file}")
        })
        .collect();
    let refs: Vec<&str> = paths.iter().map(String::as_str).collect();
    std::fs::write(etc.join("faultline.yaml"), node_config(&refs)).unwrap();
    etc
}

fn agents_yaml(nodes: &[&Node]) -> String {
    let mut s = String::from("agents:\n");
    for n in nodes {
        s.push_str(&format!(
            "  - name: {}\n    url: http://{}\n    token_file: token\n",
            n.name, n.api
        ));
    }
    s
}

fn active_faults(node: &Node) -> Option<Vec<Value>> {
    let (status, body) = http(&node.api, "GET", "/v1/faults", Some(TOKEN), "");
    (status == 200).then(|| json(&body).as_array().cloned().unwrap_or_default())
}

fn run_of<'a>(report: &'a Value, agent: &str) -> &'a Value {
    report["runs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["agent"] == agent)
        .unwrap_or_else(|| panic!("no run on {agent} in {report:#}"))
}

#[test]
fn gameday_measures_every_node_reports_an_unreachable_one_and_ctrl_c_pulls_every_kill_switch() {
    if !docker_available("gameday") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("token"), format!("{TOKEN}\n")).unwrap();
    let network = Network::create("gameday");
    let service = ["/faultline-workload", "--listen", "127.0.0.1:7000"];
    let node1 = Node::start(
        &network,
        "node1",
        &node_etc(dir.path(), "node1", &[("kill.yaml", KILL)]),
        &service,
    );
    let node2 = Node::start(
        &network,
        "node2",
        &node_etc(dir.path(), "node2", &[]),
        &service,
    );
    let mut node3 = Node::start(
        &network,
        "node3",
        &node_etc(dir.path(), "node3", &[]),
        &service,
    );

    std::fs::write(dir.path().join("latency.yaml"), latency_scenario("4s")).unwrap();
    std::fs::write(dir.path().join("pause.yaml"), pause_scenario("12s")).unwrap();
    let game = format!(
        "name: three-nodes\ndescription: kill on node1, latency on node2, node3 cut off\n{}\
         poll_interval: 200ms\nrequest_timeout: 1s\nunreachable_after: 3s\nmax_duration: 3m\n\
         plan:\n  - name: all-at-once\n    parallel:\n\
         \x20     - {{ scenario: web-kill, agents: [node1] }}\n\
         \x20     - {{ scenario_file: latency.yaml, agents: [node2] }}\n\
         \x20     - {{ scenario_file: pause.yaml, agents: [node3] }}\n\
         objectives: {{ rto: 20s }}\nabort_when:\n  verdicts: [error]\n",
        agents_yaml(&[&node1, &node2, &node3])
    );
    let file = dir.path().join("game.yaml");
    std::fs::write(&file, &game).unwrap();
    let validate = std::process::Command::new(agent_binary())
        .args(["gameday", "validate"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(validate.status.success(), "{validate:?}");

    let started = Instant::now();
    let child = spawn_game(dir.path(), &file);
    // Cut node3 off once its pause is active.
    let faults = poll_for(Duration::from_secs(60), || {
        active_faults(&node3).filter(|f| !f.is_empty())
    })
    .unwrap_or_else(|| panic!("node3 never had an active fault:\n{}", node3.run.logs()));
    assert_eq!(faults[0]["kind"], "process-pause", "{faults:?}");
    let cut_unix = unix_now();
    node3.disconnect();
    eprintln!("node3 cut off {:?} into the game", started.elapsed());
    assert_eq!(
        http(&node3.api, "GET", "/healthz", None, "").0,
        0,
        "node3 still answers"
    );

    let (code, out) = wait_game(child, Duration::from_secs(120));
    eprintln!("{out}");
    assert_eq!(code, 1, "the game fails because of node3:\n{out}");
    let report = json(&std::fs::read_to_string(dir.path().join("game.json")).unwrap());
    assert_eq!(report["verdict"], "failed");
    let reason = report["reason"].as_str().unwrap();
    assert!(reason.contains("node3 unreachable"), "{reason}");
    assert!(
        !reason.contains("node1") && !reason.contains("node2"),
        "{reason}"
    );

    let r1 = run_of(&report, "node1");
    assert_eq!(r1["status"], "finished", "{r1:#}");
    assert_eq!(r1["verdict"], "passed", "{:#}", r1["report"]["reason"]);
    let rto1 = r1["rto_seconds"].as_f64().unwrap();
    assert!((1.0..20.0).contains(&rto1), "node1 RTO {rto1}");
    assert_eq!(r1["report"]["faults"][0]["kind"], "process-kill");

    let r2 = run_of(&report, "node2");
    assert_eq!(r2["status"], "finished", "{r2:#}");
    assert_eq!(r2["verdict"], "passed", "{:#}", r2["report"]["reason"]);
    let slowest = r2["probe_latency_max_seconds"].as_f64().unwrap();
    assert!(
        slowest >= 0.3,
        "node2's slowest probe {slowest} s: the 300 ms were not seen"
    );
    let rto2 = r2["rto_seconds"].as_f64().unwrap();
    // The probe fails while the proxy adds 300 ms: about the fault's 4 s.
    assert!((3.0..15.0).contains(&rto2), "node2 RTO {rto2}");

    let r3 = run_of(&report, "node3");
    assert_eq!(r3["status"], "unreachable", "{r3:#}");
    let since = r3["unreachable_since"].as_f64().unwrap();
    assert!(
        since >= cut_unix - 0.5 && since <= cut_unix + 3.0,
        "unreachable since {since}, cut at {cut_unix}"
    );
    let drill3 = r3["drill_id"].as_str().unwrap().to_owned();
    let a3 = report["agents"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["name"] == "node3")
        .unwrap();
    assert_eq!(a3["outcome"], "unreachable");
    let declared = a3["declared_unreachable_at"].as_f64().unwrap();
    assert!(declared - since >= 3.0 && declared - since < 6.0, "{a3:#}");
    for n in ["node1", "node2"] {
        let a = report["agents"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["name"] == n)
            .unwrap();
        assert_eq!(a["outcome"], "passed", "{a:#}");
    }
    assert_eq!(report["rto_seconds"].as_f64().unwrap(), rto1.max(rto2));
    let timeline = report["timeline"].as_array().unwrap();
    assert!(
        timeline
            .iter()
            .any(|e| e["kind"] == "unreachable" && e["agent"] == "node3")
    );
    assert!(
        timeline
            .iter()
            .any(|e| e["kind"] == "fault-apply" && e["agent"] == "node1")
    );
    assert!(
        timeline
            .iter()
            .any(|e| e["kind"] == "fault-apply" && e["agent"] == "node2")
    );
    assert!(
        timeline
            .windows(2)
            .all(|w| w[0]["at"].as_f64() <= w[1]["at"].as_f64())
    );

    // node3 went on alone: its pause reverted at its deadline (12 s after it was applied;
    // 3 s of margin for a loaded machine). `docker top` sees it while node3 is cut off.
    let resumed = poll_for(Duration::from_secs(40), || {
        let p = node3.processes("--listen 127.0.0.1:7000");
        (!p.is_empty() && p.iter().all(|(_, s)| *s != 'T')).then(unix_now)
    })
    .unwrap_or_else(|| {
        panic!(
            "node3's service stays stopped: {:?}",
            node3.processes("--listen")
        )
    });
    node3.reconnect();
    let faults = poll_for(Duration::from_secs(30), || active_faults(&node3))
        .unwrap_or_else(|| panic!("node3 does not answer after reconnecting"));
    assert!(faults.is_empty(), "node3 still has faults: {faults:?}");
    let (status, body) = http(
        &node3.api,
        "GET",
        &format!("/v1/drills/{drill3}"),
        Some(TOKEN),
        "",
    );
    assert_eq!(status, 200, "{body}");
    let d3 = json(&body);
    let f = &d3["faults"][0];
    let applied = f["applied_at"].as_f64().unwrap();
    let held = f["reverted_at"].as_f64().unwrap() - applied;
    assert!(
        (11.5..15.0).contains(&held),
        "node3's pause held {held} s (12 s asked): {d3:#}"
    );
    assert!(
        resumed - applied < 12.0 + 3.0,
        "node3's service resumed {:.3} s after the pause (12 s asked)",
        resumed - applied
    );
    eprintln!(
        "measured: node1 RTO {rto1:.3} s, node2 RTO {rto2:.3} s (slowest probe {slowest:.3} s), \
         node3 unreachable {:.3} s after the cut, its pause held {held:.3} s",
        since - cut_unix
    );

    let html = dir.path().join("game.html");
    let page = std::fs::read_to_string(&html).unwrap();
    assert!(page.contains("id=\"game-timeline\"") && page.contains("class=\"unreachable\""));
    match chromium() {
        Some(c) => {
            let png = dir.path().join("game.png");
            screenshot(&c, &html, &png);
            let (w, h, distinct, other) = png_stats(&png);
            eprintln!(
                "screenshot {w}x{h}: {distinct} byte values, {:.1}% not dominant",
                other * 100.0
            );
            assert!(distinct > 20 && other > 0.02, "the screenshot looks blank");
        }
        None => {
            assert!(!faultline_tests::in_ci(), "chromium is required under CI");
            eprintln!("SKIPPED: the screenshot check (chromium is not installed)");
        }
    }

    // node3's drill ends on its own once two probes pass after the revert; a second drill
    // before that would be refused (409). Without chromium nothing above takes that long.
    finished_drill(&node3.api, TOKEN, &drill3, Duration::from_secs(30));

    // Second game: long faults everywhere, then Ctrl-C.
    std::fs::write(
        dir.path().join("long-latency.yaml"),
        latency_scenario("60s"),
    )
    .unwrap();
    std::fs::write(dir.path().join("long-pause.yaml"), pause_scenario("60s")).unwrap();
    let game = format!(
        "name: interrupted\n{}poll_interval: 200ms\nrequest_timeout: 2s\nunreachable_after: 10s\n\
         plan:\n  - parallel:\n\
         \x20     - {{ scenario_file: long-latency.yaml, agents: [node1, node2] }}\n\
         \x20     - {{ scenario_file: long-pause.yaml, agents: [node3] }}\n",
        agents_yaml(&[&node1, &node2, &node3])
    );
    let file = dir.path().join("interrupted.yaml");
    std::fs::write(&file, &game).unwrap();
    let child = spawn_game(dir.path(), &file);
    for n in [&node1, &node2, &node3] {
        poll_for(Duration::from_secs(60), || {
            active_faults(n).filter(|f| !f.is_empty())
        })
        .unwrap_or_else(|| panic!("{} never had an active fault", n.name));
    }
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap()),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let (code, out) = wait_game(child, Duration::from_secs(60));
    assert_eq!(code, 1, "{out}");
    let report = json(&std::fs::read_to_string(dir.path().join("interrupted.json")).unwrap());
    assert_eq!(report["verdict"], "aborted", "{out}");
    for n in [&node1, &node2, &node3] {
        let a = report["agents"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["name"] == n.name.as_str())
            .unwrap();
        let ks = a["kill_switch"].as_str().unwrap_or("");
        assert!(ks.contains("drills aborted"), "{}: {ks}", n.name);
        let r = run_of(&report, &n.name);
        assert_eq!(r["verdict"], "aborted", "{}: {r:#}", n.name);
        assert_eq!(active_faults(n), Some(vec![]), "{} has faults left", n.name);
    }
    drop((node1, node2, node3));
    drop(network);
}

fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

#[test]
fn a_bad_game_day_file_exits_2_naming_file_line_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.yaml");
    std::fs::write(
        &file,
        "name: bad\nagents:\n  - name: node1\n    url: http://127.0.0.1:1\n    token_env: NOPE\nplan:\n  - scenario: x\n    agents: [node9]\n",
    )
    .unwrap();
    for sub in ["validate", "run"] {
        let out = std::process::Command::new(agent_binary())
            .args(["gameday", sub])
            .arg(&file)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{sub}: {err}");
        assert!(
            err.contains(&format!("{}:8: plan[0].agents:", file.display()))
                && err.contains("node9"),
            "{sub}: {err}"
        );
    }
    std::fs::write(
        &file,
        "name: bad\nagents:\n  - name: node1\n    url: http://127.0.0.1:1\n    token_env: FAULTLINE_TEST_UNSET_TOKEN\nplan:\n  - scenario: x\n    agents: [node1]\n",
    )
    .unwrap();
    let out = std::process::Command::new(agent_binary())
        .args(["gameday", "run"])
        .arg(&file)
        .env_remove("FAULTLINE_TEST_UNSET_TOKEN")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains(":5: agents[0].token_env:") && err.contains("FAULTLINE_TEST_UNSET_TOKEN"),
        "{err}"
    );
}

/// Abort conditions and the preflight on two agents run on the host (no Docker): each
/// pauses a `sleep` this test started; closing the listener an `abort_when` probe watches
/// aborts the game — every agent's kill switch resumes its victim at once, long before the
/// 60 s pause — and a game naming an agent that does not answer starts nothing.
// `Agent` is a tokio child process; the rest of the test is plain blocking I/O.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abort_probe_pulls_every_kill_switch_and_a_failed_preflight_starts_nothing() {
    use faultline_tests::Agent;
    use faultline_tests::chaos::{Victim, state};
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("token"), format!("{TOKEN}\n")).unwrap();
    let tokens = dir.path().join("tokens.yaml");
    std::fs::write(
        &tokens,
        format!("- {{name: gameday, role: operator, token: {TOKEN}}}\n"),
    )
    .unwrap();
    let service = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let service_addr = service.local_addr().unwrap();
    let guard = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let guard_addr = guard.local_addr().unwrap();
    let mut agents = Vec::new();
    let mut apis = Vec::new();
    for _ in 0..2 {
        let api = format!("127.0.0.1:{}", faultline_tests::backup::free_port());
        agents.push(Agent::start(&format!(
            "interval: 10s\nexport:\n  otlp:\n    enabled: false\napi:\n  enabled: true\n  listen: {api}\n  tokens_file: {}\n",
            tokens.display()
        )));
        apis.push(api);
    }
    for (api, agent) in apis.iter().zip(&agents) {
        assert!(
            poll_for(Duration::from_secs(20), || (http(
                api, "GET", "/healthz", None, ""
            )
            .0 == 200)
                .then_some(()))
            .is_some(),
            "the API did not come up:\n{}",
            agent.stderr()
        );
    }
    let victims = [Victim::sleep(), Victim::sleep()];
    for (i, v) in victims.iter().enumerate() {
        std::fs::write(
            dir.path().join(format!("pause{i}.yaml")),
            format!(
                "name: pause{i}\nprobe_interval: 100ms\nsteady_state:\n  - name: port\n    tcp: {{ address: \"{service_addr}\" }}\nfaults:\n  - at: 100ms\n    fault: {{ kind: process-pause, pid: {}, duration: 60s }}\nrecovery: {{ strategy: self-heal, timeout: 60s }}\n",
                v.pid()
            ),
        )
        .unwrap();
    }
    let game = format!(
        "name: guarded\nagents:\n  - {{ name: a, url: \"http://{}\", token_file: token }}\n  - {{ name: b, url: \"http://{}\", token_file: token }}\n\
         poll_interval: 100ms\nplan:\n  - parallel:\n      - {{ scenario_file: pause0.yaml, agents: [a] }}\n      - {{ scenario_file: pause1.yaml, agents: [b] }}\n\
         abort_when:\n  probes:\n    - name: guard\n      tcp: {{ address: \"{guard_addr}\", timeout: 500ms }}\n",
        apis[0], apis[1]
    );
    let file = dir.path().join("guarded.yaml");
    std::fs::write(&file, game).unwrap();
    let child = spawn_game(dir.path(), &file);
    for v in &victims {
        assert!(
            poll_for(Duration::from_secs(30), || (state(v.pid()) == Some('T'))
                .then_some(()))
            .is_some(),
            "victim {} was never paused",
            v.pid()
        );
    }
    let closed = Instant::now();
    drop(guard);
    for v in &victims {
        assert!(
            poll_for(Duration::from_secs(20), || matches!(
                state(v.pid()),
                Some('S' | 'R')
            )
            .then_some(()))
            .is_some(),
            "victim {} still paused after the abort probe failed",
            v.pid()
        );
    }
    eprintln!(
        "both victims resumed {:?} after the guard closed",
        closed.elapsed()
    );
    let (code, out) = wait_game(child, Duration::from_secs(60));
    assert_eq!(code, 1, "{out}");
    let report = json(&std::fs::read_to_string(dir.path().join("guarded.json")).unwrap());
    assert_eq!(report["verdict"], "aborted");
    let by = report["aborted_by"].as_str().unwrap();
    assert!(by.contains("abort_when probe guard failed"), "{by}");
    for a in ["a", "b"] {
        assert_eq!(run_of(&report, a)["verdict"], "aborted", "{report:#}");
    }
    for api in &apis {
        let (_, body) = http(api, "GET", "/v1/faults", Some(TOKEN), "");
        assert_eq!(json(&body), serde_json::json!([]), "faults left on {api}");
    }

    // An agent that does not answer: nothing starts anywhere.
    let dead = format!("127.0.0.1:{}", faultline_tests::backup::free_port());
    let game = format!(
        "name: preflight\nagents:\n  - {{ name: a, url: \"http://{}\", token_file: token }}\n  - {{ name: dead, url: \"http://{dead}\", token_file: token }}\n\
         request_timeout: 1s\nplan:\n  - {{ scenario_file: pause0.yaml, agents: [a] }}\n",
        apis[0]
    );
    let file = dir.path().join("preflight.yaml");
    std::fs::write(&file, game).unwrap();
    let (_, before) = http(&apis[0], "GET", "/v1/drills", Some(TOKEN), "");
    let (code, out) = wait_game(spawn_game(dir.path(), &file), Duration::from_secs(30));
    assert_eq!(code, 1, "{out}");
    let report = json(&std::fs::read_to_string(dir.path().join("preflight.json")).unwrap());
    assert!(
        report["reason"].as_str().unwrap().contains("preflight"),
        "{report:#}"
    );
    assert_eq!(run_of(&report, "a")["status"], "skipped");
    let (_, after) = http(&apis[0], "GET", "/v1/drills", Some(TOKEN), "");
    assert_eq!(
        json(&before).as_array().map(Vec::len),
        json(&after).as_array().map(Vec::len),
        "a drill started despite the failed preflight"
    );
    assert!(matches!(state(victims[0].pid()), Some('S' | 'R')));
}
