//! `faultline status` against the real `faultline run`, and the agent's quiet logging while
//! its OTLP backend is away.
//!
//! - Every part of the status is checked against what the test itself did and saw: an export
//!   outage (a closed loopback port; the queue directory the test reads), an active fault
//!   (its own `sleep` paused through the API; `/proc` says `T`), a finished drill (started
//!   through the API; its report from the API), an unhealthy backup source (a `files` source
//!   whose directory does not exist). The table fits 80 columns; `GET /v1/status` gives the
//!   same document to a viewer token; the socket is mode 0600; without an agent (none
//!   started, or one SIGKILLed that left its socket behind) the command says so in one line
//!   and exits 3, and a restarted agent replaces the stale socket.
//! - Three minutes with no OTLP receiver print at most five lines about the export, then the
//!   test's receiver appears (late, on the port the agent was given) and exactly one line
//!   says the export recovered, while the receiver gets the cycles of the outage.

// Test helpers outside `#[test]` functions fail loudly by design.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::time::{Duration, Instant};

use faultline_tests::chaos::{Victim, state};
use faultline_tests::drill::{
    OPERATOR_TOKEN, VIEWER_TOKEN, api_call, api_section, finished_drill, poll_for, wait_listening,
    write_tokens,
};
use faultline_tests::{Agent, OtlpReceiver, run_cli};
use serde_json::Value;

fn json(s: &str) -> Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("{e}: {s}"))
}

fn keys(v: &Value) -> Vec<&str> {
    let mut k: Vec<&str> = v
        .as_object()
        .unwrap_or_else(|| panic!("not an object: {v}"))
        .keys()
        .map(String::as_str)
        .collect();
    k.sort_unstable();
    k
}

/// `faultline --state-dir STATE status [--format FORMAT]`: (exit code, stdout, stderr).
async fn status(state: &Path, format: Option<&str>) -> (Option<i32>, String, String) {
    let mut args = vec![
        "--state-dir".to_owned(),
        state.display().to_string(),
        "status".to_owned(),
    ];
    if let Some(f) = format {
        args.extend(["--format".to_owned(), f.to_owned()]);
    }
    let out = run_cli(&args, Duration::from_secs(30)).await;
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `faultline status --format json` from a blocking poll: (exit code, stdout).
fn status_now(state: &Path) -> Option<(Option<i32>, Vec<u8>)> {
    let out = std::process::Command::new(faultline_tests::agent_binary())
        .arg("--state-dir")
        .arg(state)
        .args(["status", "--format", "json"])
        .output()
        .ok()?;
    Some((out.status.code(), out.stdout))
}

/// Bytes the files under `dir` take (the test's own reading of the disk queue).
fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .filter_map(|e| e.metadata().ok())
                .filter(std::fs::Metadata::is_file)
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

fn assert_one_line_no_agent(code: Option<i32>, stdout: &str, stderr: &str) {
    assert_eq!(code, Some(3), "stdout: {stdout}\nstderr: {stderr}");
    assert!(stdout.is_empty(), "{stdout}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("no agent is running"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_shows_export_outage_fault_drill_and_backups_and_exits_3_without_an_agent() {
    let dir = tempfile::tempdir().unwrap();
    // Without any agent: exit 3, one line.
    let (code, out, err) = status(dir.path(), Some("json")).await;
    assert_one_line_no_agent(code, &out, &err);

    // A loopback port nobody listens on: every export attempt is refused.
    let closed_port = faultline_tests::backup::free_port();
    let endpoint = format!("http://127.0.0.1:{closed_port}");
    let api = format!("127.0.0.1:{}", faultline_tests::backup::free_port());
    let tokens = write_tokens(dir.path());
    let missing = dir.path().join("no-such-backups");
    let started = Instant::now();
    let mut agent = Agent::start(&format!(
        "interval: 1s\ncontainers:\n  enabled: false\nexport:\n  otlp:\n    endpoint: {endpoint}\n{}backups:\n  - name: nightly\n    kind: files\n    path: {}\n    rpo: 1h\n    freshness: {{every: 1s}}\n    integrity: {{enabled: false}}\n",
        api_section(&api, &tokens, &[]),
        missing.display()
    ));
    let state_dir = agent.dir().join("state");
    let config_file = agent.dir().join("faultline.yaml");
    assert!(wait_listening(&api), "API down:\n{}", agent.stderr());

    // An active fault: the test's own victim, paused through the API for two minutes.
    let victim = Victim::sleep();
    let (st, body) = api_call(
        &api,
        "POST",
        "/v1/faults",
        Some(OPERATOR_TOKEN),
        &format!(
            "{{\"kind\":\"process-pause\",\"pid\":{},\"duration\":\"120s\"}}",
            victim.pid()
        ),
    );
    assert_eq!(st, 201, "{body}");
    let fault_id = json(&body)["id"].as_str().unwrap().to_owned();
    let injected = Instant::now();
    assert_eq!(state(victim.pid()), Some('T'), "the victim is not paused");

    // A finished drill: a short pause of a second victim, watched through a port of the test.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let listen = listener.local_addr().unwrap();
    let drill_victim = Victim::sleep();
    let scenario = format!(
        "name: status-drill\nprobe_interval: 50ms\nmax_duration: 60s\nsteady_state:\n  - name: port\n    tcp: {{ address: \"{listen}\", timeout: 200ms }}\nfaults:\n  - at: 100ms\n    fault: {{ kind: process-pause, pid: {}, duration: 150ms }}\nrecovery: {{ strategy: self-heal, consecutive: 2, timeout: 30s }}\nobjectives: {{ rto: 10s }}\n",
        drill_victim.pid()
    );
    let (st, body) = api_call(&api, "POST", "/v1/drills", Some(OPERATOR_TOKEN), &scenario);
    assert_eq!(st, 202, "{body}");
    let drill_id = json(&body)["id"].as_str().unwrap().to_owned();
    let report = finished_drill(&api, OPERATOR_TOKEN, &drill_id, Duration::from_secs(60));

    // The backup check has run (every second) and failed.
    let doc = poll_for(Duration::from_secs(30), || {
        let (_, stdout) = status_now(&state_dir)?;
        let v: Value = serde_json::from_slice(&stdout).ok()?;
        let ready = v["backups"][0]["checks"]
            .as_array()
            .is_some_and(|c| !c.is_empty())
            && v["export"]["backlog_batches"].as_u64() >= Some(3);
        ready.then_some(v)
    })
    .unwrap_or_else(|| panic!("no complete status:\n{}", agent.stderr()));
    // Written to a pipe, the log is plain text: no terminal colour codes in a journal or file.
    assert!(
        !agent.stderr().contains('\x1b'),
        "colour codes in a log that is not a terminal:\n{}",
        agent.stderr()
    );
    let asked = Instant::now();
    // The documented top-level form, and each part's fields.
    assert_eq!(
        keys(&doc),
        [
            "agent",
            "backups",
            "collectors",
            "drills",
            "export",
            "faults"
        ]
    );

    // The agent.
    let a = &doc["agent"];
    assert_eq!(
        keys(a),
        [
            "config_file",
            "interval_seconds",
            "state_dir",
            "uptime_seconds",
            "version"
        ]
    );
    assert_eq!(a["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(a["config_file"], config_file.display().to_string());
    assert_eq!(a["state_dir"], state_dir.display().to_string());
    assert_eq!(a["interval_seconds"], 1.0);
    let uptime = a["uptime_seconds"].as_f64().unwrap();
    assert!(
        uptime > 0.0 && uptime <= started.elapsed().as_secs_f64(),
        "uptime {uptime} s, the test's stopwatch {:?}",
        started.elapsed()
    );

    // Collectors: the host's, each with its last duration, and the backup collector.
    let collectors = doc["collectors"].as_array().unwrap();
    let names: Vec<&str> = collectors
        .iter()
        .filter_map(|c| c["name"].as_str())
        .collect();
    for n in ["host.cpu", "host.memory", "backup"] {
        assert!(names.contains(&n), "{n} missing: {names:?}");
    }
    for c in collectors {
        assert_eq!(
            keys(c),
            ["errors", "last_duration_seconds", "last_error", "name"]
        );
        assert!(c["last_duration_seconds"].as_f64().unwrap() >= 0.0, "{c}");
    }

    // The export: failing to the closed port, the backlog the test finds on disk.
    let e = &doc["export"];
    assert_eq!(
        keys(e),
        [
            "backlog_batches",
            "backlog_bytes",
            "dropped_points",
            "endpoint",
            "failing_attempts",
            "healthy",
            "last_error",
            "last_success_unix",
            "oldest_batch_age_seconds",
            "queue_dir",
            "sent_points"
        ]
    );
    assert_eq!(e["endpoint"], endpoint);
    assert_eq!(e["healthy"], false, "{e}");
    assert!(e["failing_attempts"].as_u64().unwrap() >= 1, "{e}");
    assert!(e["last_success_unix"].is_null(), "{e}");
    assert!(
        e["last_error"].as_str().is_some_and(|s| !s.is_empty()),
        "{e}"
    );
    let queue_dir = state_dir.join("queue");
    assert_eq!(e["queue_dir"], queue_dir.display().to_string());
    let backlog_bytes = e["backlog_bytes"].as_u64().unwrap();
    let on_disk = dir_bytes(&queue_dir);
    assert!(
        backlog_bytes > 0 && backlog_bytes <= on_disk,
        "backlog {backlog_bytes} B, the queue directory holds {on_disk} B"
    );
    // Nothing was ever sent: every cycle since the start waits, the oldest from about the
    // agent's first cycle (it started before the test's stopwatch stopped at `asked`).
    let oldest = e["oldest_batch_age_seconds"].as_f64().unwrap();
    let since_start = asked.duration_since(started).as_secs_f64();
    assert!(
        oldest <= since_start && oldest >= since_start - 15.0,
        "oldest batch {oldest} s old, agent started {since_start} s ago"
    );
    assert_eq!(e["sent_points"], 0);

    // The fault: the test's own, with the time left from its own stopwatch.
    let faults = doc["faults"].as_array().unwrap();
    assert_eq!(faults.len(), 1, "{faults:?}");
    let f = &faults[0];
    assert_eq!(
        keys(f),
        [
            "check",
            "check_detail",
            "id",
            "kind",
            "targets",
            "time_left_seconds"
        ]
    );
    assert_eq!(f["id"], fault_id);
    assert_eq!(f["kind"], "process-pause");
    let left = f["time_left_seconds"].as_f64().unwrap();
    let expected = 120.0 - injected.elapsed().as_secs_f64();
    assert!(
        (left - expected).abs() < 5.0,
        "time left {left} s, the test expects about {expected} s"
    );
    assert_eq!(f["check"], "in-effect", "{f}");
    assert_eq!(state(victim.pid()), Some('T'));

    // The drill: the last of its scenario, as the API's report says.
    let drills = &doc["drills"];
    assert_eq!(keys(drills), ["last", "next", "running"]);
    assert_eq!(drills["running"].as_array().unwrap().len(), 0, "{drills}");
    assert!(drills["next"].is_null(), "{drills}");
    let last = drills["last"].as_array().unwrap();
    assert_eq!(last.len(), 1, "{drills}");
    assert_eq!(
        keys(&last[0]),
        [
            "finished_at",
            "id",
            "rpo_seconds",
            "rto_seconds",
            "scenario",
            "started_at",
            "verdict"
        ]
    );
    assert_eq!(last[0]["id"], drill_id);
    assert_eq!(last[0]["scenario"], "status-drill");
    assert_eq!(last[0]["verdict"], report["verdict"]);
    assert_eq!(last[0]["verdict"], "passed", "{report:#}");
    assert_eq!(
        last[0]["rto_seconds"], report["rto"]["seconds"],
        "{report:#}"
    );

    // The backup source: unhealthy, its freshness check naming the missing directory.
    let backups = doc["backups"].as_array().unwrap();
    assert_eq!(backups.len(), 1);
    let b = &backups[0];
    assert_eq!(
        keys(b),
        [
            "age_seconds",
            "checks",
            "healthy",
            "kind",
            "rpo_seconds",
            "source"
        ]
    );
    assert_eq!(b["source"], "nightly");
    assert_eq!(b["kind"], "files");
    assert_eq!(b["healthy"], false, "{b}");
    assert_eq!(b["rpo_seconds"], 3600.0);
    assert!(b["age_seconds"].is_null(), "{b}");
    let check = &b["checks"][0];
    assert_eq!(
        keys(check),
        ["at_unix", "check", "error", "status", "summary"]
    );
    assert_eq!(check["check"], "freshness");
    assert_eq!(check["status"], "unhealthy");
    assert!(
        check["error"]
            .as_str()
            .is_some_and(|s| s.contains("no-such-backups")),
        "{check}"
    );

    // The same document on the API, for a viewer; nothing without a token.
    let (st, body) = api_call(&api, "GET", "/v1/status", Some(VIEWER_TOKEN), "");
    assert_eq!(st, 200, "{body}");
    let from_api = json(&body);
    assert_eq!(keys(&from_api), keys(&doc));
    assert_eq!(from_api["faults"][0]["id"], fault_id);
    assert_eq!(from_api["drills"]["last"][0]["id"], drill_id);
    assert_eq!(api_call(&api, "GET", "/v1/status", None, "").0, 401);

    // The table: 80 columns, every part there.
    let (code, table, err) = status(&state_dir, None).await;
    assert_eq!(code, Some(0), "{err}");
    for line in table.lines() {
        assert!(
            line.chars().count() <= 80,
            "{} columns: {line}",
            line.chars().count()
        );
    }
    for part in [
        "FAILING",
        endpoint.as_str(),
        "host.cpu",
        fault_id.as_str(),
        "in-effect",
        "status-drill",
        "passed",
        "nightly",
        "UNHEALTHY",
    ] {
        assert!(table.contains(part), "{part:?} missing from\n{table}");
    }

    // The socket: the agent's user only.
    let socket = state_dir.join("agent.sock");
    let mode = std::fs::metadata(&socket).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "{mode:o}");

    // SIGKILL leaves the socket behind: nobody answers on it, one line, exit 3; a new agent
    // replaces it and answers.
    agent.kill().await;
    assert!(socket.exists(), "a killed agent cannot remove its socket");
    let (code, out, err) = status(&state_dir, Some("json")).await;
    assert_one_line_no_agent(code, &out, &err);
    agent.restart();
    let answered = poll_for(Duration::from_secs(30), || {
        (status_now(&state_dir)?.0 == Some(0)).then_some(())
    });
    assert!(
        answered.is_some(),
        "the restarted agent does not answer:\n{}",
        agent.stderr()
    );
    // A clean stop removes the socket.
    let stopped = agent.terminate(Duration::from_secs(30)).await;
    assert!(stopped.is_some_and(|s| s.success()), "{stopped:?}");
    assert!(!socket.exists(), "the socket outlived the agent");
    let (code, out, err) = status(&state_dir, None).await;
    assert_one_line_no_agent(code, &out, &err);
    drop(listener);
}

/// Whether `line` has a duration in micro- or nanoseconds (`549us`, `661ns`, `3µs`).
fn unrounded(line: &str) -> bool {
    let b = line.as_bytes();
    ["us", "ns", "µs"].iter().any(|unit| {
        line.match_indices(unit)
            .any(|(i, _)| i > 0 && b[i - 1].is_ascii_digit())
    })
}

/// Lines of the agent's stderr about the export, after start-up.
fn export_lines(stderr: &str) -> Vec<String> {
    stderr
        .lines()
        .skip_while(|l| !l.contains("faultline started"))
        .skip(1)
        .filter(|l| l.to_lowercase().contains("export"))
        .map(str::to_owned)
        .collect()
}

// Three minutes of outage by design (the figure); it runs alongside other tests.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_three_minute_export_outage_logs_at_most_five_lines_then_one_recovery_line() {
    // The receiver's ports are taken, then closed until the outage is over.
    let mut receiver = OtlpReceiver::start().await.unwrap();
    let endpoint = receiver.grpc_endpoint();
    receiver.stop().await;
    let agent = Agent::start(&format!(
        "interval: 1s\ncontainers:\n  enabled: false\nexport:\n  otlp:\n    endpoint: {endpoint}\n"
    ));
    let state_dir = agent.dir().join("state");
    assert!(
        agent
            .wait_for_stderr("faultline started", Duration::from_secs(30))
            .await,
        "{}",
        agent.stderr()
    );
    let outage = Instant::now();
    tokio::time::sleep(Duration::from_secs(180)).await;
    let during = export_lines(&agent.stderr());
    assert!(
        !during.is_empty() && during.len() <= 5,
        "{} lines about the export in 3 minutes:\n{}",
        during.len(),
        during.join("\n")
    );
    // The first says where, why, where the data is, and how to point elsewhere.
    let first = &during[0];
    for part in [
        endpoint.as_str(),
        "WARN",
        &format!("queue on disk at {}", state_dir.join("queue").display()),
        "export.otlp.endpoint",
        "OTEL_EXPORTER_OTLP_ENDPOINT",
    ] {
        assert!(
            first.contains(part),
            "{part:?} missing from the first line: {first}"
        );
    }
    // Durations are rounded for people: no `674ms 549us 661ns`.
    for l in &during {
        assert!(!unrounded(l), "unrounded duration: {l}");
    }
    let cycles_in_outage = outage.elapsed().as_secs();

    // The receiver appears: one recovery line, and the backlog reaches it.
    receiver.restart().await.unwrap();
    assert!(
        agent
            .wait_for_stderr("recovered", Duration::from_secs(90))
            .await,
        "no recovery line:\n{}",
        agent.stderr()
    );
    let received = receiver
        .wait_for(
            |reqs| {
                let mut stamps: Vec<u64> = reqs.iter().flat_map(|r| r.timestamps()).collect();
                stamps.sort_unstable();
                stamps.dedup();
                stamps.len() as u64 >= cycles_in_outage - 10
            },
            Duration::from_secs(60),
        )
        .await;
    let mut stamps: Vec<u64> = received.iter().flat_map(|r| r.timestamps()).collect();
    stamps.sort_unstable();
    stamps.dedup();
    assert!(
        stamps.len() as u64 >= cycles_in_outage - 10,
        "the receiver got {} cycles of a {cycles_in_outage} s outage",
        stamps.len()
    );
    // A few more cycles: still exactly one recovery line, and the status agrees.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after: Vec<String> = export_lines(&agent.stderr())
        .into_iter()
        .skip(during.len())
        .collect();
    let recoveries: Vec<&String> = after.iter().filter(|l| l.contains("recovered")).collect();
    assert_eq!(recoveries.len(), 1, "{after:#?}");
    assert!(recoveries[0].contains("INFO"), "{}", recoveries[0]);
    assert!(after.len() <= 2, "{after:#?}");
    let (code, out, err) = status(&state_dir, Some("json")).await;
    assert_eq!(code, Some(0), "{err}");
    let doc = json(&out);
    assert_eq!(doc["export"]["healthy"], true, "{doc:#}");
    assert!(
        doc["export"]["backlog_batches"].as_u64().unwrap() <= 2,
        "{doc:#}"
    );
    assert!(
        doc["export"]["last_success_unix"].as_f64().is_some(),
        "{doc:#}"
    );
}

#[tokio::test]
async fn the_top_level_help_says_what_faultline_is_and_lists_status() {
    let out = run_cli(["--help"], Duration::from_secs(30)).await;
    assert_eq!(out.status.code(), Some(0));
    let help = String::from_utf8_lossy(&out.stdout);
    let first = help.lines().next().unwrap_or_default();
    assert!(
        first.starts_with("faultline watches a node and tests that it recovers"),
        "{first}"
    );
    assert!(
        !help.contains("CLI, configuration, collectors and runtime"),
        "{help}"
    );
    assert!(help.contains("status"), "{help}");
}
