//! A self-healing service under a drill: the project's workload (TCP echo) kept alive by a
//! restart loop the test owns; `faultline drill run` kills it (process-kill by pid — only the
//! test's own process) and measures the RTO. The test's own stopwatch (death seen by the
//! supervisor, first successful connect polled every 1 ms) must agree with faultline's RTO
//! within the probe interval + 20 ms. The JSON, JUnit and HTML reports are checked, the HTML
//! one in headless Chromium at three widths through its DOM (tests/src/browser.rs).

use std::time::Duration;

use faultline_tests::drill::{Supervised, chromium, drill_run};

const INTERVAL_MS: u64 = 50;

#[test]
fn drill_rto_of_a_self_healing_service_matches_the_outside_stopwatch() {
    let svc = Supervised::start(Duration::from_millis(400));
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let scenario = dir.path().join("selfheal.yaml");
    let pid = svc.pid();
    std::fs::write(
        &scenario,
        format!(
            "name: selfheal\n\
             description: echo service restarted by its supervisor\n\
             probe_interval: {INTERVAL_MS}ms\n\
             max_duration: 30s\n\
             steady_state:\n\
             \x20 - name: echo\n\
             \x20   tcp: {{ address: \"{addr}\", timeout: 200ms }}\n\
             faults:\n\
             \x20 - at: 300ms\n\
             \x20   fault: {{ kind: process-kill, pid: {pid}, duration: 1s }}\n\
             recovery: {{ strategy: self-heal, consecutive: 3, timeout: 10s }}\n\
             objectives: {{ rto: 5s }}\n",
            addr = svc.addr
        ),
    )
    .unwrap();
    let (json, junit, html) = (
        dir.path().join("r.json"),
        dir.path().join("r.xml"),
        dir.path().join("r.html"),
    );
    let out = drill_run(
        &state,
        &scenario,
        &[
            "--report-json",
            json.to_str().unwrap(),
            "--junit",
            junit.to_str().unwrap(),
            "--html",
            html.to_str().unwrap(),
        ],
        Duration::from_secs(60),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(0),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert!(
        stdout.contains("PASSED") && stdout.contains("RTO:"),
        "{stdout}"
    );

    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(report["verdict"], "passed", "{report:#}");
    let rto = report["rto"]["seconds"].as_f64().unwrap();
    let precision = report["rto"]["precision_seconds"].as_f64().unwrap();
    assert!(report["rto"]["outage_observed"].as_bool().unwrap());
    // The outside stopwatch: the outage of the pid faultline killed.
    let outage = faultline_tests::drill::poll_for(Duration::from_secs(5), || {
        svc.outages()
            .into_iter()
            .find(|o| o.pid == pid && o.up.is_some())
    })
    .expect("the supervisor saw the kill and the restart");
    let truth = outage.seconds().unwrap();
    let tolerance = INTERVAL_MS as f64 / 1000.0 + 0.020;
    eprintln!(
        "RTO: faultline {rto:.4} s (± {precision:.4} s), outside stopwatch {truth:.4} s, difference {:.4} s, tolerance {tolerance:.3} s",
        rto - truth
    );
    assert!(
        (rto - truth).abs() <= tolerance,
        "faultline RTO {rto:.4} s vs stopwatch {truth:.4} s: more than {tolerance} s apart"
    );
    assert!(precision >= INTERVAL_MS as f64 / 1000.0 && precision < 0.25);
    // The timeline has the fault, failing and passing probes, the recovery point.
    let kinds: Vec<&str> = report["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["kind"].as_str())
        .collect();
    for k in [
        "phase-start",
        "fault-apply",
        "probe",
        "recovered",
        "phase-end",
    ] {
        assert!(kinds.contains(&k), "timeline lacks {k}: {kinds:?}");
    }
    assert!(
        report["rounds"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["ok"] == false)
    );
    // History keeps it.
    let id = report["id"].as_str().unwrap();
    assert!(state.join("drills").join(format!("{id}.json")).is_file());

    let x = std::fs::read_to_string(&junit).unwrap();
    assert!(
        x.contains("<testcase name=\"rto\"") && !x.contains("<failure"),
        "{x}"
    );

    let page = std::fs::read_to_string(&html).unwrap();
    assert!(page.contains("<svg id=\"timeline\"") && page.contains("class=\"fault\""));
    let Some(chromium) = chromium() else {
        assert!(!faultline_tests::in_ci(), "chromium is required under CI");
        eprintln!("SKIPPED: the report's layout check (chromium is not installed)");
        return;
    };
    // The page as a browser lays it out, at three widths: verdict, RTO and detection shown,
    // no label cut off or covered, no script error (tests/src/browser.rs).
    let shots = std::env::var_os("FAULTLINE_KEEP_SCREENSHOTS")
        .map_or_else(|| dir.path().to_path_buf(), std::path::PathBuf::from);
    let rto_card = faultline_tests::browser::figure_in_summary(&stdout, "RTO");
    faultline_tests::browser::check_report_page(
        &chromium,
        &html,
        "PASSED",
        &["RTO", &rto_card, "DETECTION", "recovered (RTO"],
        &shots.join("selfheal.png"),
    );
}
