//! `faultline drill run`'s refusals, with the real binary: a drill whose steady state does not
//! hold injects nothing (the test's own child is watched and never stopped), exits 1 and says
//! why in its summary and reports; a bad scenario exits 2 before anything runs, naming the
//! file, line and field. Only the test's own `sleep` processes are targeted, and the only
//! traffic is a connect to a loopback port.

// A test binary: a panic *is* the failure report.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::net::TcpListener;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use faultline_tests::chaos::{Victim, state};
use faultline_tests::drill::{drill_run, junit_outline};

/// A drill whose steady state is one TCP connect to `address` and whose fault pauses `pid`
/// for 60 s (until the drill ends), at once.
fn scenario(address: &str, pid: i32) -> String {
    format!(
        "name: steady-gate\n\
         probe_interval: 50ms\n\
         max_duration: 60s\n\
         steady_state:\n\
         \x20 - name: port\n\
         \x20   tcp: {{ address: \"{address}\", timeout: 500ms }}\n\
         faults:\n\
         \x20 - at: 0s\n\
         \x20   fault: {{ kind: process-pause, pid: {pid}, duration: 60s }}\n\
         recovery: {{ strategy: self-heal, consecutive: 2, timeout: 20s }}\n\
         objectives: {{ rto: 10s }}\n"
    )
}

/// Watches `pid`'s state every millisecond on a thread while `f` runs: (f's result, whether
/// the process was ever seen stopped, how many samples were taken).
#[allow(clippy::disallowed_methods)] // std::thread::sleep on the watcher's own thread, no runtime
fn watching_stops<T>(pid: i32, f: impl FnOnce() -> T) -> (T, bool, u64) {
    let done = Arc::new(AtomicBool::new(false));
    let watcher = {
        let done = done.clone();
        std::thread::spawn(move || {
            let (mut stopped, mut samples) = (false, 0u64);
            while !done.load(Ordering::Relaxed) {
                stopped |= state(pid) == Some('T');
                samples += 1;
                std::thread::sleep(Duration::from_millis(1));
            }
            (stopped, samples)
        })
    };
    let out = f();
    done.store(true, Ordering::Relaxed);
    let (stopped, samples) = watcher.join().unwrap();
    (out, stopped, samples)
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn write(dir: &Path, name: &str, body: &str) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, body).unwrap();
    p
}

#[test]
fn a_failing_steady_state_injects_nothing_exits_1_and_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let victim = Victim::sleep();
    // A loopback port that was just free and is now closed: the connect is refused.
    let closed = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().to_string()
    };
    let file = write(dir.path(), "gate.yaml", &scenario(&closed, victim.pid()));
    let (json, junit) = (dir.path().join("r.json"), dir.path().join("r.xml"));
    let (out, stopped, samples) = watching_stops(victim.pid(), || {
        drill_run(
            &dir.path().join("state"),
            &file,
            &[
                "--report-json",
                json.to_str().unwrap(),
                "--junit",
                junit.to_str().unwrap(),
            ],
            Duration::from_secs(60),
        )
    });
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(samples > 10, "the watcher barely ran ({samples} samples)");
    assert!(
        !stopped,
        "the child was paused although the steady state failed"
    );
    assert_eq!(state(victim.pid()), Some('S'), "the child is not sleeping");

    // The summary and the reports say why: which probe, against what, and that nothing ran.
    assert!(
        stdout.contains("steady state does not hold, nothing was injected"),
        "{stdout}"
    );
    assert!(stdout.contains("port"), "{stdout}");
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(report["verdict"], "steady-state-failed", "{report:#}");
    let reason = report["reason"].as_str().unwrap();
    assert!(
        reason.contains("nothing was injected") && reason.contains("port:"),
        "{reason}"
    );
    let timeline = report["timeline"].as_array().unwrap();
    assert!(
        !timeline
            .iter()
            .any(|e| e["kind"].as_str().is_some_and(|k| k.starts_with("fault"))),
        "the timeline has fault events: {report:#}"
    );
    assert!(
        timeline
            .iter()
            .any(|e| e["kind"] == "probe" && e["ok"] == false && e["name"] == "port"),
        "the failing probe is not in the timeline: {report:#}"
    );
    let cases = junit_outline(&std::fs::read_to_string(&junit).unwrap());
    let rto = &cases["cases"][0];
    assert_eq!(rto["name"], "rto", "{cases:#}");
    assert!(
        rto["error"]
            .as_str()
            .is_some_and(|e| e.contains("steady-state-failed")),
        "{cases:#}"
    );

    // Control: the same scenario with the port open does pause the child, so the watcher
    // above would have seen an injection.
    let open = TcpListener::bind("127.0.0.1:0").unwrap();
    let file = write(
        dir.path(),
        "open.yaml",
        &scenario(&open.local_addr().unwrap().to_string(), victim.pid()),
    );
    let (out, stopped, _) = watching_stops(victim.pid(), || {
        drill_run(
            &dir.path().join("state"),
            &file,
            &[],
            Duration::from_secs(60),
        )
    });
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert!(
        stopped,
        "with the steady state holding, the fault never paused the child"
    );
    assert_eq!(state(victim.pid()), Some('S'), "the pause was not reverted");
}

#[test]
fn a_scenario_error_exits_2_naming_file_line_and_field_and_runs_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let victim = Victim::sleep();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let good = scenario(&listener.local_addr().unwrap().to_string(), victim.pid());
    let state_dir = dir.path().join("state");
    // (what is wrong, the scenario text, the line and field the message must name)
    let cases = [
        (
            "a misspelt key",
            good.replace("    tcp: {", "    tcpp: {"),
            6,
            "tcpp",
        ),
        (
            "an address that is no address",
            good.replace(
                &format!("address: \"{}\"", listener.local_addr().unwrap()),
                "address: nowhere",
            ),
            6,
            "steady_state[0].tcp.address",
        ),
        (
            "a zero consecutive count",
            good.replace("consecutive: 2", "consecutive: 0"),
            10,
            "recovery.consecutive",
        ),
    ];
    for (what, bad_text, line, field) in cases {
        assert_ne!(bad_text, good, "{what}: the replacement did not apply");
        let file = write(dir.path(), "bad.yaml", &bad_text);
        let (out, stopped, _) = watching_stops(victim.pid(), || {
            drill_run(&state_dir, &file, &[], Duration::from_secs(30))
        });
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{what}: {stderr}");
        let at = format!("{}:{line}:", file.display());
        assert!(
            stderr.contains(&at) && stderr.contains(field),
            "{what}: expected {at} and {field} in: {stderr}"
        );
        assert!(!stopped, "{what}: a rejected scenario paused the child");
        assert!(
            !text(&out.stdout).contains("started"),
            "{what}: the drill started: {}",
            text(&out.stdout)
        );
    }
    // Nothing ran, so nothing was kept in the history.
    let kept = std::fs::read_dir(state_dir.join("drills"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(kept, 0, "a rejected scenario left a report");
}
