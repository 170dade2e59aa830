//! The agent's drill service across processes and restarts, and its API over TLS:
//!
//! - the API served over TLS (rustls) with a self-signed certificate the test makes (rcgen):
//!   the CLI trusting that certificate gets answers, one trusting another CA is refused and
//!   never falls back in-process, and plain HTTP to the port gets no HTTP answer;
//! - drill history survives a restart of the agent on the same state directory;
//! - `faultline drill run` on targets a drill in the agent holds is refused (exit 3, naming
//!   the holder) and runs nothing, while a CLI drill on other targets runs.
//!
//! Only the test's own `sleep` processes are paused.

// Test helpers outside `#[test]` functions fail loudly by design.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::path::Path;
use std::time::Duration;

use faultline_tests::Agent;
use faultline_tests::chaos::{Scratch, Victim, state};
use faultline_tests::drill::{
    OPERATOR_TOKEN, VIEWER_TOKEN, api_call, api_section, drill_run, finished_drill, poll_for,
    wait_listening, write_tokens,
};

fn json(s: &str) -> serde_json::Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("{e}: {s}"))
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn paused(pid: i32) -> bool {
    state(pid) == Some('T')
}

/// A drill on `pid` whose process-pause lasts `hold` (the drill runs at least that long).
fn scenario_yaml(name: &str, listen: &str, pid: i32, hold: &str) -> String {
    format!(
        "name: {name}\nprobe_interval: 50ms\nmax_duration: 60s\nsteady_state:\n  - name: port\n    tcp: {{ address: \"{listen}\", timeout: 200ms }}\nfaults:\n  - at: 100ms\n    fault: {{ kind: process-pause, pid: {pid}, duration: {hold} }}\nrecovery: {{ strategy: self-heal, consecutive: 2, timeout: 30s }}\nobjectives: {{ rto: 10s }}\n"
    )
}

fn agent_with_api(api: &str, tokens: &Path, extra: &[String]) -> Agent {
    let agent = Agent::start(&format!(
        "interval: 1s\nexport:\n  otlp:\n    enabled: false\n{}",
        api_section(api, tokens, extra)
    ));
    assert!(
        wait_listening(api),
        "the API did not come up:\n{}",
        agent.stderr()
    );
    agent
}

fn start_drill(api: &str, yaml: &str) -> String {
    let (st, body) = api_call(
        api,
        "POST",
        "/v1/drills",
        Some(OPERATOR_TOKEN),
        &serde_json::json!({ "inline": yaml }).to_string(),
    );
    assert_eq!(st, 202, "{body}");
    json(&body)["id"].as_str().unwrap().to_owned()
}

// `Agent` is a tokio child process; the rest of the test is plain blocking I/O.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_over_tls_answers_with_the_ca_and_refuses_plain_http_and_other_cas() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = write_tokens(dir.path());
    let write_cert = |name: &str| {
        let c = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into(), "localhost".into()])
            .unwrap();
        let (cert, key) = (
            dir.path().join(format!("{name}.pem")),
            dir.path().join(format!("{name}.key")),
        );
        std::fs::write(&cert, c.cert.pem()).unwrap();
        std::fs::write(&key, c.signing_key.serialize_pem()).unwrap();
        (cert, key)
    };
    let (cert, key) = write_cert("agent");
    let (other_ca, _) = write_cert("other");
    let api = format!("127.0.0.1:{}", faultline_tests::backup::free_port());
    let extra = [
        format!("cert_file: {}", cert.display()),
        format!("key_file: {}", key.display()),
    ];
    let _agent = agent_with_api(&api, &tokens, &extra);
    // The CLI with the config's own certificate as its CA: an HTTPS answer.
    let s = Scratch::new(&api_section(&api, &tokens, &extra));
    let out = s.run(&["fault", "list"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains(&format!("https://{api}")),
        "{}",
        text(&out.stderr)
    );
    assert!(
        text(&out.stdout).contains("no faults"),
        "{}",
        text(&out.stdout)
    );
    // An explicit --ca-file works the same.
    let ca = cert.to_string_lossy().into_owned();
    let out = s.run(&["fault", "list", "--ca-file", &ca]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    // Another CA: the handshake fails, the command fails, nothing runs in-process.
    let other = other_ca.to_string_lossy().into_owned();
    let out = s.run(&["fault", "list", "--ca-file", &other]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(err.to_lowercase().contains("certificate"), "{err}");
    assert!(!err.contains("in-process"), "{err}");
    // Plain HTTP to the TLS port gets no HTTP response.
    let mut c = TcpStream::connect(&api).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    let _ = write!(
        c,
        "GET /v1/faults HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {VIEWER_TOKEN}\r\nConnection: close\r\n\r\n"
    );
    let mut got = Vec::new();
    let _ = c.read_to_end(&mut got);
    assert!(
        !text(&got).starts_with("HTTP/"),
        "plain HTTP was answered: {}",
        text(&got)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drill_history_survives_an_agent_restart() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = write_tokens(dir.path());
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let listen = listener.local_addr().unwrap().to_string();
    let api = format!("127.0.0.1:{}", faultline_tests::backup::free_port());
    let mut agent = agent_with_api(&api, &tokens, &[]);
    let victim = Victim::sleep();
    let id = start_drill(
        &api,
        &scenario_yaml("restart", &listen, victim.pid(), "150ms"),
    );
    let before = finished_drill(&api, VIEWER_TOKEN, &id, Duration::from_secs(30));
    assert_eq!(before["verdict"], "passed", "{before:#}");

    assert!(agent.terminate(Duration::from_secs(15)).await.is_some());
    agent.restart();
    assert!(
        wait_listening(&api),
        "the API did not come back:\n{}",
        agent.stderr()
    );
    let (st, list) = api_call(&api, "GET", "/v1/drills", Some(VIEWER_TOKEN), "");
    assert_eq!(st, 200, "{list}");
    let list = json(&list);
    let listed = list
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["id"] == id.as_str())
        .unwrap_or_else(|| panic!("{id} missing after the restart: {list:#}"));
    assert_eq!(listed["verdict"], "passed");
    let (st, after) = api_call(
        &api,
        "GET",
        &format!("/v1/drills/{id}"),
        Some(VIEWER_TOKEN),
        "",
    );
    assert_eq!(st, 200, "{after}");
    assert_eq!(
        json(&after),
        before,
        "the stored report changed across the restart"
    );
    drop(listener);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cli_drill_on_targets_busy_in_the_agent_is_refused_and_runs_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = write_tokens(dir.path());
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let listen = listener.local_addr().unwrap().to_string();
    let api = format!("127.0.0.1:{}", faultline_tests::backup::free_port());
    let agent = agent_with_api(&api, &tokens, &[]);
    let state_dir = agent.dir().join("state");
    let (busy, free) = (Victim::sleep(), Victim::sleep());
    // The agent's drill holds `busy` paused for a minute. Its probe (the test's listener) never
    // fails, so with 2 passing rounds it would declare recovery and revert after ~100 ms, racing
    // the CLI below; 600 rounds of 50 ms keep it in recovery, holding the pause, for 30 s.
    let agent_id = start_drill(
        &api,
        &scenario_yaml("agent-side", &listen, busy.pid(), "60s")
            .replace("consecutive: 2,", "consecutive: 600,"),
    );
    assert!(
        poll_for(Duration::from_secs(10), || paused(busy.pid()).then_some(())).is_some(),
        "{}",
        agent.stderr()
    );
    // The CLI, on the agent's state directory, on the same process: refused.
    let same = dir.path().join("same.yaml");
    std::fs::write(
        &same,
        scenario_yaml("cli-side", &listen, busy.pid(), "150ms"),
    )
    .unwrap();
    let out = drill_run(&state_dir, &same, &[], Duration::from_secs(60));
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(err.contains("drill refused, nothing ran"), "{err}");
    assert!(err.contains(&agent_id), "the holder is not named: {err}");
    assert!(
        !text(&out.stdout).contains("started"),
        "{}",
        text(&out.stdout)
    );
    assert!(paused(busy.pid()), "the agent's fault was disturbed");
    // On another process the CLI drill runs while the agent's drill goes on.
    let other = dir.path().join("other.yaml");
    std::fs::write(
        &other,
        scenario_yaml("cli-other", &listen, free.pid(), "150ms"),
    )
    .unwrap();
    let out = drill_run(&state_dir, &other, &[], Duration::from_secs(60));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(!paused(free.pid()));
    // Once the agent's drill is over (aborted now, or finished on its own after recovery)
    // its locks are gone: the same CLI drill runs. A report that is no longer live means
    // the drill left the service's map, which drops its locks.
    let (st, body) = api_call(
        &api,
        "POST",
        &format!("/v1/drills/{agent_id}/abort"),
        Some(OPERATOR_TOKEN),
        "",
    );
    assert!(st == 202 || st == 404, "{st} {body}");
    let verdict =
        finished_drill(&api, VIEWER_TOKEN, &agent_id, Duration::from_secs(30))["verdict"].clone();
    assert!(verdict == "aborted" || verdict == "passed", "{verdict}");
    let out = drill_run(&state_dir, &same, &[], Duration::from_secs(60));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(!paused(busy.pid()));
    drop(listener);
}
