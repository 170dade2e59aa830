//! The agent's API and drill service in `faultline run`: authentication (401 without a
//! token, 403 for a viewer — nothing changes), fault injection through the API, an
//! `abort_when` guard rail that aborts a drill mid-way with every fault reverted at once, the
//! kill switch (`POST /v1/abort`), a scheduled drill, and the same report shape from a
//! schedule, the API and the CLI — JSON, and JUnit and HTML served from the agent's history.
//!
//! The API drill and the CLI drill measure a real outage: each kills a supervised echo
//! service of its own (the test's restart loop brings it back 300 ms after it dies) while the
//! test's own stopwatch probes it from outside every millisecond; each report's fault time,
//! recovery point and RTO must agree with that stopwatch within the precision the report
//! states. The two run at the same time, on different services.
//!
//! Only the test's own processes are paused (`sleep`) or killed (the echo services).

// Test helpers outside `#[test]` functions fail loudly by design.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::net::TcpStream;
use std::time::{Duration, Instant};

use faultline_tests::Agent;
use faultline_tests::api::get_document;
use faultline_tests::chaos::{Victim, state};
use faultline_tests::drill::{
    Supervised, api_call as http, drill_run, finished_drill, html_outline, junit_outline,
    kill_scenario, poll_for,
};
use faultline_tests::stopwatch::{Stopwatch, assert_rto_matches, unix_now};

const OPERATOR: &str = "operator-token-0123456789";
const VIEWER: &str = "viewer-token-0123456789ab";

fn json(s: &str) -> serde_json::Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("{e}: {s}"))
}

fn paused(pid: i32) -> bool {
    state(pid) == Some('T')
}

fn keys(v: &serde_json::Value) -> Vec<String> {
    let mut k: Vec<String> = v
        .as_object()
        .map(|o| o.keys().cloned().collect())
        .unwrap_or_default();
    k.sort();
    k
}

/// A JUnit outline's element paths without the verdict-dependent `<failure>`/`<error>`.
fn junit_shape(outline: &serde_json::Value) -> Vec<String> {
    outline["paths"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p.as_str())
        .filter(|p| !p.ends_with("/failure") && !p.ends_with("/error"))
        .map(str::to_owned)
        .collect()
}

fn scenario_yaml(name: &str, listen: &str, pid: i32, extra: &str) -> String {
    format!(
        "name: {name}\nprobe_interval: 50ms\nmax_duration: 60s\nsteady_state:\n  - name: port\n    tcp: {{ address: \"{listen}\", timeout: 200ms }}\nfaults:\n  - at: 100ms\n    fault: {{ kind: process-pause, pid: {pid}, duration: 60s }}\nrecovery: {{ strategy: self-heal, consecutive: 2, timeout: 30s }}\nobjectives: {{ rto: 10s }}\n{extra}"
    )
}

/// Checks a passed drill that killed a supervised service against the outage the test's
/// stopwatch saw after `since`: the same service, the fault time, the recovery point, the RTO.
fn assert_real_outage(what: &str, report: &serde_json::Value, watch: &Stopwatch, since: f64) {
    assert_eq!(report["verdict"], "passed", "{what}: {report:#}");
    assert_eq!(
        report["rto"]["outage_observed"], true,
        "{what}: no failing probe round: {report:#}"
    );
    let outage = watch
        .outage_after(since, Duration::from_secs(5))
        .unwrap_or_else(|| panic!("{what}: the stopwatch saw no outage: {report:#}"));
    let line = assert_rto_matches(report, &outage);
    eprintln!("{what}: {line} ({} stopwatch attempts)", watch.attempts());
}

// `Agent` is a tokio child process; the rest of the test is plain blocking I/O.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_auth_abort_when_kill_switch_schedule_and_report_shapes() {
    let dir = tempfile::tempdir().unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let listen = listener.local_addr().unwrap().to_string();
    let api_port = faultline_tests::backup::free_port();
    let api = format!("127.0.0.1:{api_port}");
    let tokens = dir.path().join("tokens.yaml");
    std::fs::write(
        &tokens,
        format!("- {{name: ops, role: operator, token: {OPERATOR}}}\n- {{name: dash, role: viewer, token: {VIEWER}}}\n"),
    )
    .unwrap();
    // The scheduled scenario: a short pause of its own victim every 2 s.
    let sched_victim = Victim::sleep();
    let sched_file = dir.path().join("sched.yaml");
    std::fs::write(
        &sched_file,
        scenario_yaml("sched", &listen, sched_victim.pid(), "")
            .replace("duration: 60s }", "duration: 150ms }"),
    )
    .unwrap();
    let agent = Agent::start(&format!(
        "interval: 1s\nexport:\n  otlp:\n    enabled: false\napi:\n  enabled: true\n  listen: {api}\n  tokens_file: {}\ndrills:\n  - name: sched\n    scenario: {}\n    schedule: \"*/2 * * * * *\"\n    timezone: UTC\n    jitter: 100ms\n",
        tokens.display(),
        sched_file.display()
    ));
    assert!(
        poll_for(Duration::from_secs(20), || (TcpStream::connect(&api)
            .is_ok())
        .then_some(()))
        .is_some(),
        "the API did not come up:\n{}",
        agent.stderr()
    );
    assert_eq!(http(&api, "GET", "/healthz", None, "").0, 200);
    assert_eq!(http(&api, "GET", "/v1/drills", None, "").0, 401);
    assert_eq!(
        http(&api, "GET", "/v1/drills", Some("wrong-token-xxxxxxxx"), "").0,
        401
    );
    assert_eq!(http(&api, "GET", "/v1/drills", Some(VIEWER), "").0, 200);

    // A fault through the API.
    let a = Victim::sleep();
    let (st, body) = http(
        &api,
        "POST",
        "/v1/faults",
        Some(OPERATOR),
        &format!(
            "{{\"kind\":\"process-pause\",\"pid\":{},\"duration\":\"60s\"}}",
            a.pid()
        ),
    );
    assert_eq!(st, 201, "{body}");
    assert!(paused(a.pid()));
    assert_eq!(
        http(&api, "POST", "/v1/faults", Some(OPERATOR), "{\"kind\":").0,
        400
    );
    // Unauthenticated and viewer kill switches are refused and change nothing.
    assert_eq!(http(&api, "POST", "/v1/abort", None, "").0, 401);
    assert_eq!(http(&api, "POST", "/v1/abort", Some(VIEWER), "").0, 403);
    assert!(paused(a.pid()), "a refused abort changed something");
    let (_, faults) = http(&api, "GET", "/v1/faults", Some(VIEWER), "");
    assert_eq!(json(&faults).as_array().unwrap().len(), 1);
    // A bad inline scenario is a 400 naming the field.
    let (st, body) = http(
        &api,
        "POST",
        "/v1/drills",
        Some(OPERATOR),
        "{\"inline\": \"name: x\\nsteady_state: []\\nfaults: []\\n\"}",
    );
    assert_eq!(st, 400, "{body}");
    assert!(body.contains("steady_state"), "{body}");

    // abort_when fires mid-drill: every fault of the drill is reverted at once.
    let b = Victim::sleep();
    let flag = dir.path().join("abort-now");
    let guard = format!(
        "abort_when:\n  - name: no-flag\n    command: {{ run: [test, \"!\", -e, \"{}\"], timeout: 1s }}\n",
        flag.display()
    );
    let inline = scenario_yaml("guarded", &listen, b.pid(), &guard);
    let (st, body) = http(
        &api,
        "POST",
        "/v1/drills",
        Some(OPERATOR),
        &serde_json::json!({ "inline": inline }).to_string(),
    );
    assert_eq!(st, 202, "{body}");
    let api_id = json(&body)["id"].as_str().unwrap().to_owned();
    assert!(poll_for(Duration::from_secs(10), || paused(b.pid()).then_some(())).is_some());
    std::fs::write(&flag, "").unwrap();
    let t = Instant::now();
    assert!(
        poll_for(Duration::from_secs(5), || (!paused(b.pid())).then_some(())).is_some(),
        "the guard rail did not revert the fault"
    );
    eprintln!("abort_when → fault reverted in {:?}", t.elapsed());
    let api_report = poll_for(Duration::from_secs(10), || {
        let r = json(
            &http(
                &api,
                "GET",
                &format!("/v1/drills/{api_id}"),
                Some(VIEWER),
                "",
            )
            .1,
        );
        (r["verdict"] != "running").then_some(r)
    })
    .unwrap();
    assert_eq!(api_report["verdict"], "aborted", "{api_report:#}");
    assert!(api_report["reason"].as_str().unwrap().contains("no-flag"));

    // The kill switch: a running drill's fault and the API fault on `a` reverted at once.
    let c = Victim::sleep();
    let (st, body) = http(
        &api,
        "POST",
        "/v1/drills",
        Some(OPERATOR),
        &serde_json::json!({ "inline": scenario_yaml("killme", &listen, c.pid(), "") }).to_string(),
    );
    assert_eq!(st, 202, "{body}");
    let kill_id = json(&body)["id"].as_str().unwrap().to_owned();
    assert!(poll_for(Duration::from_secs(10), || paused(c.pid()).then_some(())).is_some());
    assert_eq!(
        http(
            &api,
            "POST",
            &format!("/v1/drills/{kill_id}/abort"),
            Some(VIEWER),
            ""
        )
        .0,
        403
    );
    assert!(paused(c.pid()) && paused(a.pid()));
    let (st, body) = http(&api, "POST", "/v1/abort", Some(OPERATOR), "");
    assert_eq!(st, 200, "{body}");
    assert!(
        !paused(a.pid()) && !paused(c.pid()),
        "kill switch left a process stopped: a {:?}, c {:?}; {body}",
        state(a.pid()),
        state(c.pid())
    );
    assert!(
        json(&body)["drills_aborted"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d == kill_id.as_str())
    );

    // A scheduled drill ran (requester schedule:sched) and finished. One that was running
    // when the kill switch was pulled is rightly aborted: take one started after it.
    let after_kill = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let sched_report = poll_for(Duration::from_secs(20), || {
        let list = json(&http(&api, "GET", "/v1/drills", Some(VIEWER), "").1);
        let id = list.as_array()?.iter().find(|d| {
            d["requester"] == "schedule:sched"
                && d["verdict"] != "running"
                && d["started_at"].as_f64().is_some_and(|t| t > after_kill)
        })?["id"]
            .as_str()?
            .to_owned();
        Some(json(
            &http(&api, "GET", &format!("/v1/drills/{id}"), Some(VIEWER), "").1,
        ))
    })
    .expect("no scheduled drill finished");
    assert_eq!(sched_report["verdict"], "passed", "{sched_report:#}");

    // Real outages: an API drill and a CLI drill at once, each killing its own supervised
    // service while the test's stopwatch watches it. The CLI's report also has the same shape
    // as the schedule's and the API's.
    let (svc_api, svc_cli) = (
        Supervised::start(Duration::from_millis(300)),
        Supervised::start(Duration::from_millis(300)),
    );
    let (watch_api, watch_cli) = (Stopwatch::tcp(&svc_api.addr), Stopwatch::tcp(&svc_cli.addr));
    let since = unix_now();
    let (st, body) = http(
        &api,
        "POST",
        "/v1/drills",
        Some(OPERATOR),
        &serde_json::json!({ "inline": kill_scenario("outage-api", &svc_api.addr, svc_api.pid()) })
            .to_string(),
    );
    assert_eq!(st, 202, "{body}");
    let outage_api_id = json(&body)["id"].as_str().unwrap().to_owned();
    let kill_file = dir.path().join("outage-cli.yaml");
    std::fs::write(
        &kill_file,
        kill_scenario("outage-cli", &svc_cli.addr, svc_cli.pid()),
    )
    .unwrap();
    let (cli_json, cli_junit, cli_html) = (
        dir.path().join("cli.json"),
        dir.path().join("cli.xml"),
        dir.path().join("cli.html"),
    );
    let out = drill_run(
        &dir.path().join("cli-state"),
        &kill_file,
        &[
            "--report-json",
            cli_json.to_str().unwrap(),
            "--junit",
            cli_junit.to_str().unwrap(),
            "--html",
            cli_html.to_str().unwrap(),
        ],
        Duration::from_secs(60),
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cli_report = json(&std::fs::read_to_string(&cli_json).unwrap());
    assert_real_outage("CLI drill", &cli_report, &watch_cli, since);
    let outage_api = finished_drill(&api, VIEWER, &outage_api_id, Duration::from_secs(30));
    assert_real_outage("API drill", &outage_api, &watch_api, since);
    drop((watch_api, watch_cli, svc_api, svc_cli));
    for r in [&sched_report, &api_report] {
        assert_eq!(keys(r), keys(&cli_report));
    }
    assert_eq!(keys(&sched_report["rto"]), keys(&cli_report["rto"]));
    assert_eq!(
        keys(&sched_report["objectives"][0]),
        keys(&cli_report["objectives"][0])
    );

    // JUnit and HTML of the scheduled and the API drill, from the agent's stored history:
    // the same documents the CLI writes, with one test case per objective.
    let cli_junit = junit_outline(&std::fs::read_to_string(&cli_junit).unwrap());
    let cli_html = html_outline(&std::fs::read_to_string(&cli_html).unwrap());
    assert_eq!(cli_junit["cases"][0]["name"], "rto", "{cli_junit:#}");
    for (report, case_error) in [(&sched_report, false), (&api_report, true)] {
        let id = report["id"].as_str().unwrap();
        for format in ["junit", "html"] {
            let path = format!("/v1/drills/{id}/{format}");
            assert_eq!(get_document(&api, &path, None).status, 401, "{path}");
            assert_eq!(
                get_document(&api, &path, Some("wrong-token-xxxxxxxx")).status,
                401,
                "{path}"
            );
        }
        let junit = get_document(&api, &format!("/v1/drills/{id}/junit"), Some(VIEWER));
        assert_eq!(junit.status, 200, "{}", junit.body);
        assert_eq!(
            junit.header("content-type"),
            Some("application/xml; charset=utf-8")
        );
        let outline = junit_outline(&junit.body);
        // The same elements as the CLI's file, but for the verdict's own <failure>/<error>.
        assert_eq!(
            junit_shape(&outline),
            junit_shape(&cli_junit),
            "{outline:#}"
        );
        assert_eq!(outline["suite"]["id"], id, "{outline:#}");
        assert_eq!(outline["suite"]["name"], report["scenario"], "{outline:#}");
        let cases = outline["cases"].as_array().unwrap();
        let names: Vec<&str> = cases.iter().filter_map(|c| c["name"].as_str()).collect();
        let objectives: Vec<&str> = report["objectives"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|o| o["name"].as_str())
            .collect();
        assert_eq!(
            names, objectives,
            "one test case per objective: {outline:#}"
        );
        assert_eq!(names, ["rto"]);
        // The passed scheduled drill's RTO case is clean; the aborted API drill's is an error
        // that says why.
        assert!(cases[0]["failure"].is_null(), "{outline:#}");
        if case_error {
            let e = cases[0]["error"].as_str().unwrap_or_default();
            assert!(
                e.contains("aborted") && e.contains("no-flag"),
                "{outline:#}"
            );
        } else {
            assert!(cases[0]["error"].is_null(), "{outline:#}");
        }

        let html = get_document(&api, &format!("/v1/drills/{id}/html"), Some(VIEWER));
        assert_eq!(html.status, 200, "{}", html.body);
        assert_eq!(
            html.header("content-type"),
            Some("text/html; charset=utf-8")
        );
        let page = html_outline(&html.body);
        assert_eq!(page["unbalanced"], serde_json::json!([]), "{page:#}");
        assert_eq!(page["ids"], cli_html["ids"], "{page:#}");
        assert!(
            page["ids"]
                .as_array()
                .unwrap()
                .contains(&serde_json::json!("objective-rto")),
            "{page:#}"
        );
        assert_eq!(
            page["verdict"],
            report["verdict"].as_str().unwrap().to_uppercase(),
            "{page:#}"
        );
        assert!(page["title"].as_str().unwrap().contains(id), "{page:#}");
        assert_eq!(page["svg"], 1, "the timeline is drawn: {page:#}");
    }
    assert_eq!(
        get_document(&api, "/v1/drills/no-such-drill/junit", Some(VIEWER)).status,
        404
    );
    drop(agent);
    drop(listener);
}
