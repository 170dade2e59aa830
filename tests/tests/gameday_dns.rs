//! A game day that finds its agents through DNS: three `faultline run` processes on
//! 127.0.0.2, 127.0.0.3 and 127.0.0.4 (one port, each with its own `NODE_NAME`), and a
//! dnsmasq of the test's own on a free 127.0.0.1 port answering the headless-Service name
//! with those three addresses. The game-day file says
//! `agents: {dns: faultline-api.faultline.svc.cluster.local, resolver: 127.0.0.1:N}` and one
//! step `agents: {count: 2}`.
//!
//! Proved:
//! - `GET /v1/info` names each agent's node (its `NODE_NAME`) and this machine's host name
//!   (read by the test from /proc), for a viewer token; without a token it is 401;
//! - the game finds the three agents (the report's discovery lists the three addresses with
//!   their nodes, and dnsmasq's own log shows the query), runs the drill on exactly two and
//!   reports the third `not-selected`. Checked from the test's own evidence: each agent's
//!   `GET /v1/drills` (two list one drill, the third none, and the two are the report's
//!   chosen ones), and each agent's victim process read from /proc (the two chosen agents'
//!   victims were seen stopped, the third's never);
//! - the recorded seed replays: the same file with `seed:` set to it picks the same two;
//! - a name with no record is an error naming the name and the resolver, and an unreachable
//!   resolver is an error naming it; neither starts a drill anywhere.
//!
//! Safety: the agents, their victims (`sleep`) and dnsmasq are the test's own children,
//! killed on drop; every address is loopback; the machine's resolver is not touched (the game
//! day is pointed at the test's dnsmasq). Needs dnsmasq: SKIPPED without it, fails under CI.

// A test binary: a panic is the failure report.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use faultline_tests::Agent;
use faultline_tests::chaos::{Victim, state};
use faultline_tests::dns::{Dnsmasq, dnsmasq_available, free_port_on, free_udp_and_tcp_port};
use faultline_tests::drill::{
    OPERATOR_TOKEN, VIEWER_TOKEN, api_call as http, poll_for, write_tokens,
};
use faultline_tests::gameday::{spawn_game, wait_game};
use serde_json::Value;

const TEST: &str = "a_game_day_finds_three_agents_through_dns_and_drills_count_2_of_them";
const SERVICE: &str = "faultline-api.faultline.svc.cluster.local";
const DOMAIN: &str = "cluster.local";
const NODES: [(&str, &str); 3] = [
    ("node-a", "127.0.0.2"),
    ("node-b", "127.0.0.3"),
    ("node-c", "127.0.0.4"),
];

fn json(s: &str) -> Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("{e}: {s}"))
}

/// One agent of the cluster: its process, API address and the `sleep` its `pause`
/// scenario stops.
struct Member {
    node: &'static str,
    api: String,
    victim: Victim,
    agent: Agent,
}

fn start_member(dir: &Path, tokens: &Path, node: &'static str, ip: &str, port: u16) -> Member {
    let victim = Victim::sleep();
    // The steady state: the victim is not stopped. It fails while the pause holds and
    // recovers when the agent resumes the victim at the fault's 2 s deadline.
    let scenario = dir.join(format!("pause-{node}.yaml"));
    std::fs::write(
        &scenario,
        format!(
            "name: pause\nprobe_interval: 100ms\nsteady_state:\n  - name: victim-runs\n    command: {{ run: [sh, -c, \"! grep -q '^State:.*stopped' /proc/{pid}/status\"], timeout: 2s }}\n\
             faults:\n  - at: 100ms\n    fault: {{ kind: process-pause, pid: {pid}, duration: 2s }}\n\
             recovery: {{ strategy: self-heal, consecutive: 2, timeout: 30s }}\n",
            pid = victim.pid()
        ),
    )
    .unwrap();
    let api = format!("{ip}:{port}");
    let agent = Agent::start_with_env(
        &format!(
            "interval: 10s\nexport:\n  otlp:\n    enabled: false\n{}drills:\n  - scenario: {}\n",
            faultline_tests::drill::api_section(&api, tokens, &[]),
            scenario.display()
        ),
        &[("NODE_NAME", node)],
    );
    Member {
        node,
        api,
        victim,
        agent,
    }
}

/// The drills `m`'s agent lists (`GET /v1/drills`, running and finished): each the `pause`
/// scenario.
fn drills_on(m: &Member) -> Vec<Value> {
    let (status, body) = http(&m.api, "GET", "/v1/drills", Some(VIEWER_TOKEN), "");
    assert_eq!(status, 200, "{}: {body}", m.node);
    let list = json(&body).as_array().cloned().unwrap_or_default();
    for d in &list {
        assert_eq!(d["scenario"], "pause", "{}: {d}", m.node);
    }
    list
}

fn game_file(
    dir: &Path,
    name: &str,
    port: u16,
    resolver: &str,
    dns: &str,
    extra: &str,
) -> std::path::PathBuf {
    let file = dir.join(format!("{name}.yaml"));
    std::fs::write(
        &file,
        format!(
            "name: {name}\nagents:\n  dns: {dns}\n  port: {port}\n  scheme: http\n  token_file: token\n  resolver: {resolver}\n\
             {extra}poll_interval: 100ms\nrequest_timeout: 2s\nmax_duration: 2m\n\
             plan:\n  - scenario: pause\n    agents: {{count: 2}}\n"
        ),
    )
    .unwrap();
    file
}

/// Runs the game in `file`; (exit code, stdout+stderr, the JSON report if one was written).
fn run_game(dir: &Path, file: &Path) -> (i32, String, Option<Value>) {
    let (code, out) = wait_game(spawn_game(dir, file), Duration::from_secs(120));
    let report = std::fs::read_to_string(file.with_extension("json"))
        .ok()
        .map(|t| json(&t));
    (code, out, report)
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("not a list: {v}"))
        .iter()
        .map(|s| s.as_str().unwrap().to_owned())
        .collect()
}

// `Agent` is a tokio child process; the rest is plain blocking I/O.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_game_day_finds_three_agents_through_dns_and_drills_count_2_of_them() {
    if !dnsmasq_available(TEST) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let tokens = write_tokens(dir.path());
    std::fs::write(dir.path().join("token"), format!("{OPERATOR_TOKEN}\n")).unwrap();
    let ips: Vec<IpAddr> = NODES.iter().map(|(_, ip)| ip.parse().unwrap()).collect();
    let port = free_port_on(&ips);
    let members: Vec<Member> = NODES
        .iter()
        .map(|(node, ip)| start_member(dir.path(), &tokens, node, ip, port))
        .collect();
    for m in &members {
        let up = poll_for(Duration::from_secs(30), || {
            (http(&m.api, "GET", "/healthz", None, "").0 == 200).then_some(())
        });
        assert!(
            up.is_some(),
            "{} did not come up:\n{}",
            m.node,
            m.agent.stderr()
        );
    }

    // GET /v1/info: the node from NODE_NAME, this machine's host name, for a viewer.
    let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .unwrap()
        .trim()
        .to_owned();
    for m in &members {
        let (status, body) = http(&m.api, "GET", "/v1/info", Some(VIEWER_TOKEN), "");
        assert_eq!(status, 200, "{body}");
        let info = json(&body);
        assert_eq!(info["node"], m.node, "{info}");
        assert_eq!(info["hostname"], hostname.as_str(), "{info}");
        assert!(
            info["version"].as_str().is_some_and(|v| !v.is_empty()),
            "{info}"
        );
        assert_eq!(http(&m.api, "GET", "/v1/info", None, "").0, 401);
    }

    let records: Vec<(&str, IpAddr)> = ips.iter().map(|ip| (SERVICE, *ip)).collect();
    let dns = Dnsmasq::start(DOMAIN, &records);
    let file = game_file(dir.path(), "dns-count", port, &dns.address(), SERVICE, "");

    // Watch every victim from /proc while the game runs: which were ever stopped.
    let started = Instant::now();
    let pids: Vec<i32> = members.iter().map(|m| m.victim.pid()).collect();
    let watching = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let watcher = {
        let watching = watching.clone();
        std::thread::spawn(move || {
            let mut stopped = vec![false; pids.len()];
            while watching.load(std::sync::atomic::Ordering::Relaxed) {
                for (i, pid) in pids.iter().enumerate() {
                    stopped[i] |= state(*pid) == Some('T');
                }
                // A dedicated thread polling /proc, not an async worker.
                #[allow(clippy::disallowed_methods)]
                std::thread::sleep(Duration::from_millis(10));
            }
            stopped
        })
    };
    let (code, out, report) = tokio::task::block_in_place(|| run_game(dir.path(), &file));
    watching.store(false, std::sync::atomic::Ordering::Relaxed);
    let stopped = watcher.join().unwrap();
    eprintln!("{out}\ngame took {:?}", started.elapsed());
    assert_eq!(code, 0, "{out}");
    let report = report.unwrap_or_else(|| panic!("no report:\n{out}"));

    // What the agents themselves say: exactly two ran a drill.
    let ran: BTreeMap<&str, usize> = members
        .iter()
        .map(|m| (m.node, drills_on(m).len()))
        .collect();
    let chosen: Vec<&str> = ran
        .iter()
        .filter(|(_, n)| **n > 0)
        .map(|(k, _)| *k)
        .collect();
    assert_eq!(chosen.len(), 2, "drills per agent: {ran:?}");
    assert!(ran.values().all(|n| *n <= 1), "drills per agent: {ran:?}");
    // And /proc: exactly the chosen agents' victims were stopped.
    for (m, was_stopped) in members.iter().zip(&stopped) {
        assert_eq!(
            *was_stopped,
            chosen.contains(&m.node),
            "{}'s victim stopped: {was_stopped}; chosen {chosen:?}",
            m.node
        );
        assert_ne!(state(m.victim.pid()), Some('T'), "{} left stopped", m.node);
    }

    // The report: three agents found, two chosen (the same two), the third not selected.
    let found = &report["discovery"];
    assert_eq!(found["dns"], SERVICE, "{found}");
    assert_eq!(found["resolver"], dns.address().as_str());
    let mut by_address: Vec<(String, String)> = found["agents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["address"].as_str().unwrap().to_owned(),
                a["node"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    by_address.sort();
    let expected: Vec<(String, String)> = NODES
        .iter()
        .map(|(n, ip)| ((*ip).to_owned(), (*n).to_owned()))
        .collect();
    assert_eq!(by_address, expected);
    let selection = &report["selections"][0];
    assert_eq!(selection["rule"], "count 2", "{selection}");
    assert_eq!(strings(&selection["chosen"]), chosen, "{selection}");
    let idle: Vec<&str> = NODES
        .iter()
        .map(|(n, _)| *n)
        .filter(|n| !chosen.contains(n))
        .collect();
    assert_eq!(strings(&selection["not_selected"]), idle);
    for a in report["agents"].as_array().unwrap() {
        let name = a["name"].as_str().unwrap();
        let want = if chosen.contains(&name) {
            "passed"
        } else {
            "not-selected"
        };
        assert_eq!(a["outcome"], want, "{a}");
        let ip = NODES.iter().find(|(n, _)| *n == name).unwrap().1;
        assert_eq!(a["url"], format!("http://{ip}:{port}"), "{a}");
    }
    assert_eq!(report["verdict"], "passed", "{out}");
    assert!(
        out.contains("not selected: ") && out.contains(idle[0]),
        "the summary does not name the agent not selected:\n{out}"
    );
    assert!(
        dns.log().contains(&format!("query[A] {SERVICE}")),
        "dnsmasq saw no query:\n{}",
        dns.log()
    );

    // The recorded seed replays the same pick.
    let seed = report["seed"].as_u64().unwrap();
    let replay = game_file(
        dir.path(),
        "dns-replay",
        port,
        &dns.address(),
        SERVICE,
        &format!("seed: {seed}\n"),
    );
    let (code, out, report) = tokio::task::block_in_place(|| run_game(dir.path(), &replay));
    assert_eq!(code, 0, "{out}");
    let report = report.unwrap();
    assert_eq!(report["seed"].as_u64(), Some(seed));
    assert_eq!(strings(&report["selections"][0]["chosen"]), chosen, "{out}");
    let again: BTreeMap<&str, usize> = members
        .iter()
        .map(|m| (m.node, drills_on(m).len()))
        .collect();
    for (node, n) in &again {
        let want = ran[node] + usize::from(chosen.contains(node));
        assert_eq!(*n, want, "after the replay: {again:?} (before: {ran:?})");
    }

    // A name without a record: an error naming it and the resolver; nothing starts.
    let missing = "nothing.faultline.svc.cluster.local";
    let file = game_file(dir.path(), "dns-missing", port, &dns.address(), missing, "");
    let (code, out, report) = tokio::task::block_in_place(|| run_game(dir.path(), &file));
    assert_eq!(code, 1, "{out}");
    assert!(report.is_none(), "a report was written: {report:?}");
    assert!(
        out.contains(missing)
            && out.contains(&dns.address())
            && out.contains("no A or AAAA record"),
        "{out}"
    );

    // A resolver that does not answer: a clear error naming it; nothing starts.
    let dead = format!("127.0.0.1:{}", free_udp_and_tcp_port());
    let file = game_file(dir.path(), "dns-dead", port, &dead, SERVICE, "");
    let asked = Instant::now();
    let (code, out, _) = tokio::task::block_in_place(|| run_game(dir.path(), &file));
    eprintln!("unreachable resolver: {out}(after {:?})", asked.elapsed());
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(&format!(
            "the DNS resolver {dead} gave no answer for {SERVICE}"
        )),
        "{out}"
    );
    let after: BTreeMap<&str, usize> = members
        .iter()
        .map(|m| (m.node, drills_on(m).len()))
        .collect();
    assert_eq!(after, again, "a drill started although discovery failed");
    drop(dns);
    drop(members);
}
