//! OTLP logs and traces of the real `faultline run`, end to end, over gRPC and over
//! HTTP/protobuf into the test's receiver:
//!
//! - a fault applied through the API with an operator token and reverted through the API
//!   gives `faultline.fault.audit` records for plan, apply, the check right after apply and
//!   revert, with requester `api:ops`, the resolved target and the deadline; the API
//!   requests themselves give `faultline.api.request` records; a fault still active at
//!   SIGTERM is reverted by the shutdown and that revert still reaches the backend;
//! - the in-process one-shot commands — `fault inject`, `fault revert --all` after a
//!   SIGKILLed injector, `drill run` — send their fault audit records before they exit (a
//!   held fault's while it is held);
//! - backup checks of a `files` and a failing `command` source give exactly one
//!   `faultline.backup.check` record per check, with source, kind, check, status and the
//!   tool's own words;
//! - a drill run through the API gives one trace: a root span with the scenario, the measured
//!   RTO and RPO and the verdict, children for each phase and the fault, all in one trace with
//!   the right parents, and its timeline as log records in the same trace. The drill kills a
//!   supervised echo service (a real outage: the test's restart loop brings it back 300 ms
//!   later), and its RTO agrees with the test's own stopwatch of that service;
//! - the first logs request is refused (UNAVAILABLE / 503) and its records arrive on retry;
//! - every attribute outside `faultline.*` is a current semantic-conventions attribute with a
//!   valid value (when the registry is present; required on CI).
//!
//! Only the test's own processes are paused (`sleep`) or killed (the echo service).

// Test helpers outside `#[test]` functions fail loudly by design.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use faultline_tests::chaos::{Scratch, Victim, state};
use faultline_tests::drill::{
    OPERATOR_TOKEN as OPERATOR, VIEWER_TOKEN as VIEWER, api_call as http, api_section, poll_for,
    wait_listening, write_tokens,
};
use faultline_tests::drill::{Supervised, drill_run};
use faultline_tests::stopwatch::{Stopwatch, assert_rto_matches, unix_now};
use faultline_tests::{
    Agent, Behaviour, LogView, OtlpConfig, OtlpReceiver, Signal, SpanView, Transport, semconv,
};

const WAIT: Duration = Duration::from_secs(60);

fn now_ns() -> u64 {
    u64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos(),
    )
    .unwrap()
}

fn json(s: &str) -> serde_json::Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("{e}: {s}"))
}

fn paused(pid: i32) -> bool {
    state(pid) == Some('T')
}

fn audits<'a>(logs: &'a [LogView], fault: &str) -> Vec<&'a LogView> {
    logs.iter()
        .filter(|l| {
            l.event_name == "faultline.fault.audit" && l.attr("faultline.fault.id") == fault
        })
        .collect()
}

fn actions(records: &[&LogView]) -> Vec<String> {
    records
        .iter()
        .map(|l| l.attr("faultline.fault.action").to_owned())
        .collect()
}

fn backup_checks(logs: &[LogView]) -> BTreeMap<(String, String), Vec<LogView>> {
    let mut out: BTreeMap<(String, String), Vec<LogView>> = BTreeMap::new();
    for l in logs
        .iter()
        .filter(|l| l.event_name == "faultline.backup.check")
    {
        out.entry((
            l.attr("faultline.backup.source").to_owned(),
            l.attr("faultline.backup.check").to_owned(),
        ))
        .or_default()
        .push(l.clone());
    }
    out
}

fn f64_attr(attrs: &BTreeMap<String, String>, key: &str) -> f64 {
    attrs
        .get(key)
        .unwrap_or_else(|| panic!("no {key} in {attrs:?}"))
        .parse()
        .unwrap_or_else(|e| panic!("{key}: {e}"))
}

/// Every attribute outside faultline's own namespace is a current semconv attribute, and enum
/// values are members.
fn assert_semconv(attrs: &BTreeMap<String, String>, what: &str) {
    let Some(reg) = semconv() else { return };
    for (k, v) in attrs {
        if k.starts_with("faultline.") {
            continue;
        }
        let def = reg
            .attributes
            .get(k)
            .unwrap_or_else(|| panic!("{what}: {k} is not in the semantic conventions"));
        assert!(def.deprecated.is_none(), "{what}: {k} is deprecated");
        let allowed = def.value_texts();
        if def.kind == "enum" {
            assert!(
                allowed.contains(v),
                "{what}: {k}={v} is not one of {allowed:?}"
            );
        }
    }
}

async fn signals_end_to_end(transport: Transport) {
    let dir = tempfile::tempdir().unwrap();
    let started_ns = now_ns();
    let receiver = OtlpReceiver::start().await.unwrap();
    // The first logs request fails; its records must arrive on retry.
    receiver.set_signal_behaviour(
        Signal::Logs,
        Behaviour::FailWith {
            grpc: tonic::Code::Unavailable,
            http: http::StatusCode::SERVICE_UNAVAILABLE,
            retry_after: None,
            times: 1,
        },
    );

    // Backup sources: a healthy `files` one and a `command` one whose tools fail.
    let dumps = dir.path().join("dumps");
    std::fs::create_dir(&dumps).unwrap();
    std::fs::write(dumps.join("db-1.sql"), "select 1;\n").unwrap();
    // The drill (below) has a file canary.
    let canary = dir.path().join("canary");
    let api = format!("127.0.0.1:{}", faultline_tests::backup::free_port());
    let tokens = write_tokens(dir.path());
    let otlp = OtlpConfig::new(transport, receiver.endpoint(transport));
    let yaml = format!(
        "{}{}backups:\n\
         \x20 - name: dumps\n    kind: files\n    path: {dumps}\n    rpo: 1h\n    freshness: {{every: 1h}}\n    integrity: {{every: 1h}}\n\
         \x20 - name: broken\n    kind: command\n    list_command: [sh, -c, \"echo disk on fire >&2; exit 3\"]\n    check_command: [sh, -c, \"echo corrupt pack >&2; exit 1\"]\n    rpo: 1h\n    freshness: {{every: 1h}}\n    integrity: {{every: 1h}}\n",
        otlp.to_yaml(),
        api_section(&api, &tokens, &[]),
        dumps = dumps.display(),
    );
    let mut agent = Agent::start(&yaml);
    assert!(
        wait_listening(&api),
        "the API did not come up:\n{}",
        agent.stderr()
    );

    // (a) A fault through the API, reverted through the API.
    let victim = Victim::sleep();
    let pid = victim.pid().to_string();
    let (st, body) = http(
        &api,
        "POST",
        "/v1/faults",
        Some(OPERATOR),
        &format!("{{\"kind\":\"process-pause\",\"pid\":{pid},\"duration\":\"60s\"}}"),
    );
    assert_eq!(st, 201, "{body}");
    let fault = json(&body)["id"].as_str().unwrap().to_owned();
    assert!(paused(victim.pid()));
    let (st, body) = http(
        &api,
        "DELETE",
        &format!("/v1/faults/{fault}"),
        Some(OPERATOR),
        "",
    );
    assert_eq!(st, 200, "{body}");
    assert!(!paused(victim.pid()));
    // A viewer's attempt is refused and audited too.
    assert_eq!(http(&api, "POST", "/v1/faults", Some(VIEWER), "{}").0, 403);
    let logs = receiver
        .wait_for_logs(
            |l| {
                actions(&audits(l, &fault)).contains(&"revert".to_owned())
                    && l.iter().any(|r| {
                        r.event_name == "faultline.api.request"
                            && r.attr("http.response.status_code") == "403"
                    })
            },
            WAIT,
        )
        .await;
    let records = audits(&logs, &fault);
    assert_eq!(
        actions(&records),
        ["plan", "apply", "check", "revert"],
        "{records:#?}"
    );
    let mut last = 0;
    for r in &records {
        assert_eq!(r.attr("faultline.fault.requester"), "api:ops", "{r:#?}");
        assert_eq!(r.attr("faultline.fault.kind"), "process-pause");
        assert_eq!(r.attr("faultline.fault.outcome"), "ok");
        assert!(r.attr("faultline.fault.targets").contains(&pid), "{r:#?}");
        assert!(!r.attr("faultline.fault.deadline").is_empty(), "{r:#?}");
        assert_eq!((r.severity_number, r.severity_text.as_str()), (9, "INFO"));
        if r.attr("faultline.fault.action") == "check" {
            assert!(
                r.attr("faultline.fault.detail").starts_with("in-effect: "),
                "{r:#?}"
            );
        }
        assert!(
            r.body.contains(&fault) && r.body.contains("api:ops"),
            "{r:#?}"
        );
        // The event's own time, in order, within the test.
        assert!(r.time_unix_nano >= started_ns && r.time_unix_nano <= now_ns());
        assert!(r.time_unix_nano >= last);
        last = r.time_unix_nano;
        assert_eq!(r.scope, "faultline");
        assert!(r.resource.contains_key("service.name"), "{:?}", r.resource);
        assert_semconv(&r.attributes, "fault audit record");
    }
    let api_records: Vec<&LogView> = logs
        .iter()
        .filter(|l| l.event_name == "faultline.api.request")
        .collect();
    let created = api_records
        .iter()
        .find(|l| l.attr("http.response.status_code") == "201")
        .expect("the POST /v1/faults request is audited");
    assert_eq!(created.attr("faultline.api.token"), "ops");
    assert_eq!(created.attr("http.request.method"), "POST");
    assert_eq!(created.attr("url.path"), "/v1/faults");
    let refused = api_records
        .iter()
        .find(|l| l.attr("http.response.status_code") == "403")
        .unwrap();
    assert_eq!(
        (
            refused.attr("faultline.api.token"),
            refused.severity_text.as_str()
        ),
        ("dash", "WARN")
    );
    for r in &api_records {
        assert_semconv(&r.attributes, "API request record");
    }

    // (c) A drill through the API: one trace, and its timeline in the same trace. It kills a
    // supervised service the test's stopwatch watches.
    let drill_svc = Supervised::start(Duration::from_millis(300));
    let drill_watch = Stopwatch::tcp(&drill_svc.addr);
    let killed = drill_svc.pid();
    let since = unix_now();
    let scenario = format!(
        "name: signals\nprobe_interval: 50ms\nmax_duration: 60s\n\
         steady_state:\n  - name: port\n    tcp: {{ address: \"{}\", timeout: 200ms }}\n\
         faults:\n  - at: 100ms\n    fault: {{ kind: process-kill, pid: {}, duration: 1s }}\n\
         recovery: {{ strategy: self-heal, consecutive: 2, timeout: 30s }}\n\
         objectives: {{ rto: 10s, rpo: 10s }}\n\
         canary:\n  interval: 100ms\n  writer: {{ command: [sh, -c, \"echo {{seq}} {{ts_ms}} > {c}.tmp && mv {c}.tmp {c}\"] }}\n  reader: {{ command: [cat, \"{c}\"] }}\n",
        drill_svc.addr,
        killed,
        c = canary.display(),
    );
    let (st, body) = http(
        &api,
        "POST",
        "/v1/drills",
        Some(OPERATOR),
        &serde_json::json!({ "inline": scenario }).to_string(),
    );
    assert_eq!(st, 202, "{body}");
    let drill = json(&body)["id"].as_str().unwrap().to_owned();
    let report = poll_for(WAIT, || {
        let r = json(
            &http(
                &api,
                "GET",
                &format!("/v1/drills/{drill}"),
                Some(VIEWER),
                "",
            )
            .1,
        );
        (r["verdict"] != "running").then_some(r)
    })
    .expect("the drill did not finish");
    assert_eq!(report["verdict"], "passed", "{report:#}");
    let outage = drill_watch
        .outage_after(since, Duration::from_secs(5))
        .expect("the stopwatch saw no outage of the drill's service");
    eprintln!("drill: {}", assert_rto_matches(&report, &outage));
    let of_drill = |s: &SpanView| s.attributes.get("faultline.drill.id") == Some(&drill);
    let spans: Vec<SpanView> = receiver
        .wait_for_spans(|s| s.iter().any(of_drill), WAIT)
        .await
        .into_iter()
        .filter(of_drill)
        .collect();
    let roots: Vec<&SpanView> = spans
        .iter()
        .filter(|s| s.parent_span_id.is_empty())
        .collect();
    assert_eq!(roots.len(), 1, "{spans:#?}");
    let root = roots[0];
    assert_eq!(root.name, "drill signals");
    assert_eq!(root.trace_id.len(), 32);
    assert_eq!(root.status_code, 1, "status OK for a passed drill");
    let a = &root.attributes;
    assert_eq!(a["test.suite.name"], "signals");
    assert_eq!(a["test.suite.run.status"], "success");
    assert_eq!(a["faultline.drill.verdict"], "passed");
    assert_eq!(a["faultline.drill.requester"], "api:ops");
    let rto = f64_attr(a, "faultline.drill.rto");
    let rpo = f64_attr(a, "faultline.drill.rpo");
    assert!(
        (rto - report["rto"]["seconds"].as_f64().unwrap()).abs() < 1e-9,
        "RTO attribute {rto} vs report {:#}",
        report["rto"]
    );
    assert!((rpo - report["rpo"]["seconds"].as_f64().unwrap()).abs() < 1e-9);
    assert!((0.0..10.0).contains(&rto) && (0.0..10.0).contains(&rpo));
    let objectives: BTreeMap<String, String> = root
        .events
        .iter()
        .map(|(_, e)| {
            (
                e["test.case.name"].clone(),
                e["test.case.result.status"].clone(),
            )
        })
        .collect();
    assert_eq!(
        objectives,
        BTreeMap::from([
            ("rpo".to_owned(), "pass".to_owned()),
            ("rto".to_owned(), "pass".to_owned())
        ])
    );
    assert_semconv(&root.attributes, "drill root span");
    for (_, e) in &root.events {
        assert_semconv(e, "objective span event");
    }
    let children: Vec<&str> = spans
        .iter()
        .filter(|s| !s.parent_span_id.is_empty())
        .map(|s| s.name.as_str())
        .collect();
    for want in [
        "steady-state",
        "faults",
        "fault process-kill",
        "recovery",
        "verification",
    ] {
        assert!(children.contains(&want), "no {want} span in {children:?}");
    }
    for s in &spans {
        assert_eq!(s.trace_id, root.trace_id, "{s:#?}");
        if s.span_id != root.span_id {
            assert_eq!(s.parent_span_id, root.span_id, "{s:#?}");
            assert!(
                s.start_time_unix_nano >= root.start_time_unix_nano
                    && s.end_time_unix_nano <= root.end_time_unix_nano
                    && s.start_time_unix_nano <= s.end_time_unix_nano,
                "{s:#?} outside its root {root:#?}"
            );
        }
        assert_eq!(s.attributes["test.suite.name"], "signals");
    }
    let fault_span = spans
        .iter()
        .find(|s| s.name == "fault process-kill")
        .unwrap();
    assert!(fault_span.attributes["faultline.fault.targets"].contains(&killed.to_string()));
    let timeline: Vec<LogView> = receiver
        .wait_for_logs(
            |l| {
                l.iter().any(|r| {
                    r.attr("faultline.drill.id") == drill
                        && r.attr("faultline.drill.event.name") == "verification"
                })
            },
            WAIT,
        )
        .await
        .into_iter()
        .filter(|r| r.attr("faultline.drill.id") == drill)
        .collect();
    for r in &timeline {
        assert_eq!(
            (r.trace_id.as_str(), r.span_id.as_str()),
            (root.trace_id.as_str(), root.span_id.as_str()),
            "{r:#?}"
        );
        assert!(r.event_name.starts_with("faultline.drill."), "{r:#?}");
        assert_semconv(&r.attributes, "drill timeline record");
    }
    let names: Vec<&str> = timeline
        .iter()
        .map(|r| r.attr("faultline.drill.event.name"))
        .collect();
    for want in ["steady-state", "faults", "recovery", "verification"] {
        assert!(names.contains(&want), "no {want} event in {names:?}");
    }

    // (b) Backup checks: exactly one record per (source, check), with the tools' words.
    let logs = receiver
        .wait_for_logs(|l| backup_checks(l).len() == 4, WAIT)
        .await;
    let checks = backup_checks(&logs);
    for ((source, check), records) in &checks {
        assert_eq!(records.len(), 1, "{source} {check}: {records:#?}");
        let r = &records[0];
        let kind = if source == "dumps" {
            "files"
        } else {
            "command"
        };
        assert_eq!(r.attr("faultline.backup.kind"), kind);
        let healthy = source == "dumps";
        assert_eq!(
            r.attr("faultline.backup.status"),
            if healthy { "healthy" } else { "unhealthy" },
            "{r:#?}"
        );
        assert_eq!(r.severity_text, if healthy { "INFO" } else { "ERROR" });
        assert!(r.body.starts_with(&format!("{source} {check}")), "{r:#?}");
        assert!(!r.attr("faultline.backup.check.duration").is_empty());
        assert!(r.time_unix_nano >= started_ns && r.time_unix_nano <= now_ns());
    }
    let key = |s: &str, c: &str| (s.to_owned(), c.to_owned());
    assert_eq!(
        checks.keys().cloned().collect::<Vec<_>>(),
        [
            key("broken", "freshness"),
            key("broken", "integrity"),
            key("dumps", "freshness"),
            key("dumps", "integrity")
        ]
    );
    assert_eq!(
        checks[&key("dumps", "freshness")][0].attr("faultline.backup.count"),
        "1"
    );
    let words = |c: &str| {
        let r = &checks[&key("broken", c)][0];
        format!(
            "{} {} {}",
            r.attr("faultline.backup.error"),
            r.attr("faultline.backup.stderr"),
            r.attr("faultline.backup.integrity.findings")
        )
    };
    assert!(
        words("freshness").contains("disk on fire"),
        "{}",
        words("freshness")
    );
    assert!(
        words("integrity").contains("corrupt pack"),
        "{}",
        words("integrity")
    );

    // A fault still active at SIGTERM: the shutdown reverts it, and that revert is sent.
    let last_victim = Victim::sleep();
    let (st, body) = http(
        &api,
        "POST",
        "/v1/faults",
        Some(OPERATOR),
        &format!(
            "{{\"kind\":\"process-pause\",\"pid\":{},\"duration\":\"60s\"}}",
            last_victim.pid()
        ),
    );
    assert_eq!(st, 201, "{body}");
    let open = json(&body)["id"].as_str().unwrap().to_owned();
    let status = agent.terminate(Duration::from_secs(20)).await;
    assert_eq!(status.and_then(|s| s.code()), Some(0), "{}", agent.stderr());
    assert!(
        !paused(last_victim.pid()),
        "the shutdown left the victim stopped"
    );
    let logs = receiver.log_records();
    let shutdown = audits(&logs, &open);
    assert_eq!(
        actions(&shutdown),
        ["plan", "apply", "check", "revert"],
        "{shutdown:#?}"
    );
    assert_eq!(
        shutdown[3].attr("faultline.fault.requester"),
        "agent:shutdown"
    );

    // The refused first request's records were all delivered by a later one.
    let requests = receiver.log_requests();
    assert!(
        !requests[0].accepted(),
        "the first logs request was to fail"
    );
    let delivered: Vec<(u64, String)> = logs
        .iter()
        .map(|l| (l.time_unix_nano, l.body.clone()))
        .collect();
    for r in requests[0].log_records() {
        assert!(
            delivered.contains(&(r.time_unix_nano, r.body.clone())),
            "lost on retry: {r:#?}"
        );
    }
    assert!(requests.iter().all(|r| r.transport == transport));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_audit_backup_events_and_drill_trace_over_grpc() {
    signals_end_to_end(Transport::Grpc).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_audit_backup_events_and_drill_trace_over_http() {
    signals_end_to_end(Transport::Http).await;
}

/// The in-process commands' audits, read from the receiver right after each exits (no
/// waiting: they must be there by then).
async fn one_shot_commands_send_their_fault_audits(transport: Transport) {
    let receiver = OtlpReceiver::start().await.unwrap();
    let otlp = OtlpConfig::new(transport, receiver.endpoint(transport));
    let s = Scratch::with_config(&otlp.to_yaml());
    let cli = |args: Vec<String>| {
        let mut cmd = s.command(&args.iter().map(String::as_str).collect::<Vec<_>>());
        cmd.env_remove("OTEL_EXPORTER_OTLP_ENDPOINT");
        cmd
    };
    let run =
        |mut cmd: std::process::Command| tokio::task::block_in_place(|| cmd.output().unwrap());
    let of_kind = |logs: &[LogView], kind: &str| -> BTreeMap<String, Vec<String>> {
        let mut by_id: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for l in logs.iter().filter(|l| {
            l.event_name == "faultline.fault.audit" && l.attr("faultline.fault.kind") == kind
        }) {
            by_id
                .entry(l.attr("faultline.fault.id").to_owned())
                .or_default()
                .push(l.attr("faultline.fault.action").to_owned());
        }
        by_id
    };

    // (1) `fault inject` held to its deadline.
    let victim = Victim::sleep();
    let pid = victim.pid().to_string();
    let args = |v: &[&str]| v.iter().map(|a| (*a).to_owned()).collect::<Vec<_>>();
    let out = run(cli(args(&[
        "fault",
        "inject",
        "process-pause",
        "--pid",
        &pid,
        "--duration",
        "300ms",
    ])));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let logs = receiver.log_records();
    let injected = of_kind(&logs, "process-pause");
    assert_eq!(injected.len(), 1, "{logs:#?}");
    let (id, acts) = injected.iter().next().unwrap();
    assert_eq!(acts, &["plan", "apply", "check", "revert"], "{logs:#?}");
    for r in audits(&logs, id) {
        let requester = r.attr("faultline.fault.requester");
        let expected = if r.attr("faultline.fault.action") == "revert" {
            requester == "agent:deadline" || requester == "agent:shutdown"
        } else {
            requester.starts_with("cli:")
        };
        assert!(expected, "{r:#?}");
        assert!(r.attr("faultline.fault.targets").contains(&pid), "{r:#?}");
        assert_eq!(r.attr("faultline.fault.outcome"), "ok", "{r:#?}");
    }

    // (2) `fault revert --all` of a fault whose injector was SIGKILLed.
    let held = Victim::sleep();
    let mut bg = s.spawn(
        "held",
        &[
            "fault",
            "inject",
            "process-pause",
            "--pid",
            &held.pid().to_string(),
            "--duration",
            "60s",
        ],
    );
    let entry = s
        .wait_applied("process-pause", WAIT)
        .unwrap_or_else(|| panic!("not applied: {}", bg.stderr()));
    let held_id = entry["id"].as_str().unwrap().to_owned();
    // Sent while the fault is held, not only when the command ends.
    receiver
        .wait_for_logs(
            |l| actions(&audits(l, &held_id)) == ["plan", "apply", "check"],
            WAIT,
        )
        .await;
    bg.signal(nix::sys::signal::Signal::SIGKILL);
    bg.wait_exit(WAIT);
    assert!(paused(held.pid()));
    let out = run(cli(args(&["fault", "revert", "--all"])));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!paused(held.pid()));
    let logs = receiver.log_records();
    let recovered = audits(&logs, &held_id);
    assert_eq!(
        actions(&recovered),
        ["plan", "apply", "check", "recover"],
        "{recovered:#?}"
    );

    // (3) `drill run`: the audits of the drill's own fault.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let drill_victim = Victim::sleep();
    let scenario = s.path().join("drill.yaml");
    std::fs::write(
        &scenario,
        format!(
            "name: one-shot\nprobe_interval: 50ms\nmax_duration: 60s\n\
             steady_state:\n  - name: port\n    tcp: {{ address: \"{}\", timeout: 200ms }}\n\
             faults:\n  - at: 100ms\n    fault: {{ kind: process-pause, pid: {}, duration: 300ms }}\n\
             recovery: {{ strategy: self-heal, consecutive: 2, timeout: 30s }}\n\
             objectives: {{ rto: 10s }}\n",
            listener.local_addr().unwrap(),
            drill_victim.pid()
        ),
    )
    .unwrap();
    let config = s.path().join("faultline.yaml");
    let out = tokio::task::block_in_place(|| {
        drill_run(
            &s.state(),
            &scenario,
            &["--config", config.to_str().unwrap()],
            WAIT,
        )
    });
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let logs = receiver.log_records();
    let mut drill_faults: Vec<Vec<String>> = of_kind(&logs, "process-pause")
        .into_iter()
        .filter(|(id, _)| *id != *injected.keys().next().unwrap() && *id != held_id)
        .map(|(_, a)| a)
        .collect();
    drill_faults.sort();
    // The drill plans its faults first (a dry run, to lock their targets), then injects.
    assert_eq!(
        drill_faults,
        [vec!["plan"], vec!["plan", "apply", "check", "revert"]],
        "{logs:#?}"
    );
    drop(listener);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_shot_commands_send_their_fault_audits_over_grpc() {
    one_shot_commands_send_their_fault_audits(Transport::Grpc).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_shot_commands_send_their_fault_audits_over_http() {
    one_shot_commands_send_their_fault_audits(Transport::Http).await;
}
