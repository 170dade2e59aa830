//! The DR posture report (`faultline report posture`) against evidence the test made itself
//! with the real binary:
//!
//! - drills by the real runner (`faultline drill run`) killing a self-healing service the
//!   test owns — some meeting a loose RTO objective, some missing a tight one — and restic
//!   backup checks passing and failing (`faultline backup check`); the report's pass rates,
//!   worst and median RTO (against the test's own stopwatch of each outage), missed
//!   objectives, restore pass rates and gaps (a configured scenario never run, a source never
//!   restore-tested) are checked; the HTML is loaded in headless Chromium (its DOM has the
//!   figures; a screenshot and the printed PDF, rasterised, are not blank);
//! - the fleet form: three agents (`faultline run`, API on 127.0.0.1/2/3) merged by service
//!   through `GET /v1/history`, one stopped and listed as unreachable;
//! - the history across SIGKILLs of an agent writing check records, a torn record a power
//!   loss leaves, and retention removing the oldest first at start.
#![allow(clippy::disallowed_methods)] // std::thread::sleep: varies where a SIGKILL lands
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use faultline_tests::agent::faultline_command;
use faultline_tests::backup::{Restic, free_port, require};
use faultline_tests::chaos::runtime;
use faultline_tests::drill::{
    OPERATOR_TOKEN, Supervised, VIEWER_TOKEN, api_call, chromium, drill_run, finished_drill,
    png_stats, poll_for, screenshot, write_tokens,
};
use faultline_tests::{Agent, in_ci};
use serde_json::Value;

const INTERVAL_MS: u64 = 50;

/// `faultline [--state-dir STATE] ARGS…`, its output.
fn faultline(state: &Path, args: &[&str]) -> Output {
    faultline_command()
        .arg("--state-dir")
        .arg(state)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("running faultline {args:?}: {e}"))
}

/// `report posture` as JSON.
fn posture_json(state: &Path, args: &[&str]) -> Value {
    let mut all = vec!["report", "posture", "--format", "json"];
    all.extend_from_slice(args);
    let out = faultline(state, &all);
    assert_eq!(
        out.status.code(),
        Some(0),
        "report posture {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)))
}

/// A drill scenario killing `pid` (served at `addr`) with an RTO objective.
fn scenario(
    dir: &Path,
    file: &str,
    name: &str,
    service: &str,
    addr: &str,
    pid: u32,
    rto: &str,
) -> PathBuf {
    let p = dir.join(file);
    std::fs::write(
        &p,
        format!(
            "name: {name}\nservice: {service}\ntier: tier-1\nprobe_interval: {INTERVAL_MS}ms\nmax_duration: 30s\n\
             steady_state:\n  - name: echo\n    tcp: {{ address: \"{addr}\", timeout: 200ms }}\n\
             faults:\n  - at: 100ms\n    fault: {{ kind: process-kill, pid: {pid}, duration: 1s }}\n\
             recovery: {{ strategy: self-heal, consecutive: 3, timeout: 10s }}\n\
             objectives: {{ rto: {rto} }}\n"
        ),
    )
    .unwrap();
    p
}

/// One drill run by the test: the pid it killed, its objective and whether it exited 0.
struct Run {
    pid: u32,
    passed: bool,
}

/// Runs `objectives.len()` drills of scenario `name` on `svc` one after the other.
fn drills(
    dir: &Path,
    state: &Path,
    svc: &Supervised,
    name: &str,
    service: &str,
    objectives: &[&str],
) -> Vec<Run> {
    objectives
        .iter()
        .enumerate()
        .map(|(i, rto)| {
            let pid = svc.pid();
            let file = scenario(
                dir,
                &format!("{name}-{pid}.yaml"),
                name,
                service,
                &svc.addr,
                pid,
                rto,
            );
            let out = drill_run(state, &file, &[], Duration::from_secs(60));
            let code = out.status.code();
            assert!(
                matches!(code, Some(0 | 1)),
                "drill {name} #{i}: {code:?}\n{}\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            // The supervisor brings the next pid up before the next drill's steady state.
            poll_for(Duration::from_secs(10), || (svc.pid() != pid).then_some(()))
                .expect("the service came back");
            Run {
                pid,
                passed: code == Some(0),
            }
        })
        .collect()
}

/// The outside stopwatch of each killed pid's outage, seconds.
fn stopwatch(svc: &Supervised, runs: &[Run]) -> Vec<f64> {
    runs.iter()
        .map(|r| {
            poll_for(Duration::from_secs(5), || {
                svc.outages()
                    .into_iter()
                    .find(|o| o.pid == r.pid)
                    .and_then(|o| o.seconds())
            })
            .expect("the supervisor saw the outage")
        })
        .collect()
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    }
}

fn find<'a>(v: &'a Value, key: &str, name: &str) -> &'a Value {
    v.as_array()
        .and_then(|a| a.iter().find(|x| x[key] == name))
        .unwrap_or_else(|| panic!("no {key} = {name} in {v:#}"))
}

fn service<'a>(p: &'a Value, name: &str) -> &'a Value {
    find(&p["services"], "service", name)
}

#[test]
fn posture_figures_match_the_drills_and_backup_checks_the_test_ran() {
    if !require(&["restic"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let (web, cache) = (
        Supervised::start(Duration::from_millis(300)),
        Supervised::start(Duration::from_millis(300)),
    );
    let restic = Restic::init();
    restic.backup();
    let data = restic.data.display().to_string();
    assert!(restic.data.join("hello.txt").is_file() && !restic.data.join("missing.txt").exists());
    // What the node is meant to prove: three scenarios (one never run, scheduled daily) and
    // three sources (one without a restore test).
    let never = scenario(
        dir.path(),
        "failover.yaml",
        "failover",
        "shop",
        "127.0.0.1:1",
        1,
        "30s",
    );
    let web_conf = scenario(dir.path(), "web.yaml", "web", "shop", &web.addr, 1, "5s");
    let cache_conf = scenario(
        dir.path(),
        "cache.yaml",
        "cache",
        "ledger",
        &cache.addr,
        1,
        "100ms",
    );
    let source = |name: &str, service: &str, extra: &str| {
        format!(
            "  - name: {name}\n    kind: restic\n    repository: {}\n    password_file: {}\n    rpo: 1h\n    service: {service}\n{extra}",
            restic.repo.display(),
            restic.password_file.display()
        )
    };
    let config = dir.path().join("faultline.yaml");
    std::fs::write(
        &config,
        format!(
            "drills:\n  - scenario: {}\n  - scenario: {}\n  - scenario: {}\n    schedule: \"0 3 * * *\"\nbackups:\n{}{}{}",
            web_conf.display(),
            cache_conf.display(),
            never.display(),
            source("app-files", "shop", &format!("    rto: 1m\n    integrity: {{ enabled: false }}\n    restore: {{ every: 1d, expect_paths: [{data}/hello.txt] }}\n")),
            source("app-broken", "ledger", &format!("    integrity: {{ enabled: false }}\n    restore: {{ every: 1d, expect_paths: [{data}/missing.txt] }}\n")),
            source("app-norestore", "shop", "    integrity: { enabled: false }\n"),
        ),
    )
    .unwrap();
    let cfg = config.to_str().unwrap();
    // Drills of two scenarios and the backup checks, all at once.
    let (web_runs, cache_runs, checks) = std::thread::scope(|s| {
        // One scenario's drills one after the other (its name is a lock target); the two
        // scenarios and the two backup checks at once.
        let w = s.spawn(|| {
            drills(
                dir.path(),
                &state,
                &web,
                "web",
                "shop",
                &["5s", "5s", "100ms"],
            )
        });
        let c = s.spawn(|| {
            drills(
                dir.path(),
                &state,
                &cache,
                "cache",
                "ledger",
                &["100ms", "100ms"],
            )
        });
        let checks: Vec<_> = (0..2)
            .map(|_| {
                s.spawn(|| faultline(&state, &["backup", "check", "-c", cfg, "--format", "json"]))
            })
            .collect();
        (
            w.join().unwrap(),
            c.join().unwrap(),
            checks
                .into_iter()
                .map(|b| b.join().unwrap())
                .collect::<Vec<_>>(),
        )
    });
    for out in &checks {
        assert_eq!(
            out.status.code(),
            Some(1),
            "app-broken fails: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // The test's own view: exit codes, and the stopwatch of every outage.
    let web_truth = stopwatch(&web, &web_runs);
    let cache_truth = stopwatch(&cache, &cache_runs);
    eprintln!("stopwatch: web {web_truth:.3?}, cache {cache_truth:.3?}");
    let passed = |runs: &[Run]| runs.iter().filter(|r| r.passed).count();
    assert_eq!(
        (passed(&web_runs), passed(&cache_runs)),
        (2, 0),
        "a 300 ms restart meets a 5 s RTO and misses a 100 ms one"
    );

    let p = posture_json(&state, &["-c", cfg, "--since", "1h"]);
    let shop = service(&p, "shop");
    assert_eq!(shop["tier"], "tier-1");
    let w = find(&shop["scenarios"], "scenario", "web");
    assert_eq!(w["runs"], 3);
    assert_eq!(w["passed"], 2);
    assert!(
        (w["pass_rate"].as_f64().unwrap() - 2.0 / 3.0).abs() < 1e-9,
        "{w:#}"
    );
    let rto = find(&w["objectives"], "name", "rto");
    assert_eq!(
        (
            rto["evidence"].as_u64(),
            rto["met"].as_u64(),
            rto["missed"].as_u64()
        ),
        (Some(3), Some(2), Some(1))
    );
    // Worst and median RTO against the stopwatch: within the probe interval + 20 ms, the
    // precision drill_self_heal establishes for one RTO.
    let tolerance = INTERVAL_MS as f64 / 1000.0 + 0.020;
    let worst = rto["figures"]["worst_seconds"].as_f64().unwrap();
    let med = rto["figures"]["median_seconds"].as_f64().unwrap();
    let truth_worst = web_truth.iter().copied().fold(0.0, f64::max);
    eprintln!(
        "web RTO: report worst {worst:.4} median {med:.4}; stopwatch worst {truth_worst:.4} median {:.4}",
        median(&web_truth)
    );
    assert!(
        (worst - truth_worst).abs() <= tolerance,
        "worst {worst} vs stopwatch {truth_worst}"
    );
    assert!(
        (med - median(&web_truth)).abs() <= tolerance,
        "median {med} vs stopwatch {web_truth:?}"
    );
    // Every drill links to its own report, which exists.
    for d in w["drills"].as_array().unwrap() {
        let href = d["href"].as_str().unwrap();
        let file = href.strip_prefix("file://").unwrap();
        assert!(Path::new(file).is_file(), "{href}");
    }
    let ledger = service(&p, "ledger");
    let c = find(&ledger["scenarios"], "scenario", "cache");
    assert_eq!(
        (c["runs"].as_u64(), c["passed"].as_u64()),
        (Some(2), Some(0))
    );
    assert_eq!(c["pass_rate"], 0.0);
    assert_eq!(p["totals"]["drills"], 5);
    assert_eq!(
        p["totals"]["objectives_missed"], 3,
        "one web and two cache drills"
    );
    // Backups: two restore tests of each source, passing where the path exists.
    let files = find(&shop["sources"], "source", "app-files");
    assert_eq!(
        (
            files["restore"]["runs"].as_u64(),
            files["restore"]["rate"].as_f64()
        ),
        (Some(2), Some(1.0))
    );
    assert_eq!(files["freshness"]["rate"], 1.0);
    assert_eq!(files["restores_within_rto"]["passed"], 2);
    let broken = find(&ledger["sources"], "source", "app-broken");
    assert_eq!(
        (
            broken["restore"]["runs"].as_u64(),
            broken["restore"]["rate"].as_f64()
        ),
        (Some(2), Some(0.0))
    );
    assert!((p["totals"]["restore_pass_rate"].as_f64().unwrap() - 0.5).abs() < 1e-9);
    // Gaps: the scenario never run, the source never restore-tested, nothing else of theirs.
    let gaps: Vec<(String, String)> = p["gaps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| {
            (
                g["kind"].as_str().unwrap().to_owned(),
                g["subject"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    for want in [
        ("scenario-not-run", "failover"),
        ("objective-without-evidence", "failover/rto"),
        ("source-never-restore-tested", "app-norestore"),
    ] {
        assert!(
            gaps.iter().any(|g| (g.0.as_str(), g.1.as_str()) == want),
            "{want:?} not in {gaps:?}"
        );
    }
    assert!(
        !gaps
            .iter()
            .any(|g| g.1.starts_with("web") || g.1.starts_with("app-files")),
        "{gaps:?}"
    );
    // --service keeps one.
    let only = posture_json(&state, &["-c", cfg, "--service", "ledger"]);
    assert_eq!(only["services"].as_array().unwrap().len(), 1);

    // JUnit: one case per objective; the missed ones fail.
    let junit = dir.path().join("posture.xml");
    let out = faultline(
        &state,
        &[
            "report",
            "posture",
            "-c",
            cfg,
            "--format",
            "junit",
            "-o",
            junit.to_str().unwrap(),
        ],
    );
    assert_eq!(out.status.code(), Some(0));
    let outline = faultline_tests::drill::junit_outline(&std::fs::read_to_string(&junit).unwrap());
    let case = |name: &str| {
        outline["cases"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == name)
            .unwrap_or_else(|| panic!("no case {name}: {outline:#}"))
            .clone()
    };
    assert!(
        case("web rto")["failure"]
            .as_str()
            .unwrap()
            .contains("missed in 1 of 3")
    );
    assert!(
        case("failover rto")["failure"]
            .as_str()
            .unwrap()
            .contains("no drill")
    );
    assert!(case("app-files restore-test")["failure"].is_null());
    assert!(!case("app-broken restore-test")["failure"].is_null());
    let md = faultline(&state, &["report", "posture", "-c", cfg, "--format", "md"]);
    assert!(String::from_utf8_lossy(&md.stdout).contains("| scenario-not-run | shop |"));

    // The HTML, in headless Chromium.
    let html = dir.path().join("posture.html");
    let out = faultline(
        &state,
        &["report", "posture", "-c", cfg, "-o", html.to_str().unwrap()],
    );
    assert_eq!(out.status.code(), Some(0));
    html_in_chromium(&html, &worst);
}

/// Loads the page in headless Chromium: the DOM it builds has the figures and the plots;
/// the screenshot and every printed PDF page (rasterised) are not blank.
fn html_in_chromium(html: &Path, worst: &f64) {
    let Some(chromium) = chromium() else {
        assert!(!in_ci(), "chromium is required under CI");
        eprintln!("SKIPPED: the HTML checks (chromium is not installed)");
        return;
    };
    let profile = tempfile::tempdir().unwrap();
    let run = |extra: &[String]| {
        Command::new(&chromium)
            .args(["--headless", "--no-sandbox", "--disable-gpu"])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .args(extra)
            .arg(format!("file://{}", html.display()))
            .stdin(Stdio::null())
            .output()
            .expect("chromium runs")
    };
    let dom = String::from_utf8_lossy(&run(&["--dump-dom".into()]).stdout).into_owned();
    for needle in [
        "id=\"scenario-shop-web\"",
        "data-pass-rate=\"0.6667\"",
        &format!("data-worst=\"{worst:.4}\""),
        "id=\"plot-web-rto\"",
        "class=\"objective-line\"",
        "id=\"plot-app-files-restore\"",
        "data-kind=\"scenario-not-run\" data-subject=\"failover\"",
        "data-restore-pass-rate=\"0.0000\"",
    ] {
        assert!(dom.contains(needle), "the DOM lacks {needle}");
    }
    let points = dom.matches("<circle class=\"point").count();
    assert!(points >= 3 + 2 + 2, "plot points: {points}");
    let png = html.with_extension("png");
    screenshot(&chromium, html, &png);
    let (w, h, distinct, other) = png_stats(&png);
    eprintln!(
        "screenshot {w}x{h}: {distinct} distinct byte values, {:.1}% not the dominant one",
        other * 100.0
    );
    assert!(distinct > 20 && other > 0.01, "a blank screenshot");
    let pdf = html.with_extension("pdf");
    run(&[
        format!("--print-to-pdf={}", pdf.display()),
        "--no-pdf-header-footer".into(),
    ]);
    assert!(pdf.is_file(), "chromium printed no PDF");
    if !require(&["pdftoppm"]) {
        return; // require() fails under CI
    }
    let prefix = html.with_file_name("page");
    let out = Command::new("pdftoppm")
        .args(["-png", "-r", "50"])
        .arg(&pdf)
        .arg(&prefix)
        .output()
        .expect("pdftoppm runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut pages: Vec<PathBuf> = std::fs::read_dir(html.parent().unwrap())
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("page"))
        })
        .collect();
    pages.sort();
    assert!(!pages.is_empty());
    for page in &pages {
        let (w, h, distinct, other) = png_stats(page);
        eprintln!("{}: {w}x{h}, {:.1}% ink", page.display(), other * 100.0);
        assert!(w < h, "A4 portrait");
        assert!(distinct > 2 && other > 0.002, "{} is blank", page.display());
    }
    if let Ok(keep) = std::env::var("FAULTLINE_KEEP_POSTURE") {
        for f in pages.iter().chain([&png, &pdf, &html.to_path_buf()]) {
            let _ = std::fs::copy(f, Path::new(&keep).join(f.file_name().unwrap()));
        }
    }
}

/// Three agents on 127.0.0.1, .2 and .3 with the API on, a drill of `web` on the first two
/// and a backup source each; the third stopped before the report.
#[test]
fn fleet_report_merges_agents_by_service_and_lists_a_stopped_one_unreachable() {
    let rt = runtime();
    let _in_runtime = rt.enter();
    let dir = tempfile::tempdir().unwrap();
    let tokens = write_tokens(dir.path());
    let backups = dir.path().join("backups");
    std::fs::create_dir_all(&backups).unwrap();
    std::fs::write(backups.join("b1.tar.gz"), b"backup").unwrap();
    let mut agents: Vec<(Agent, String)> = (1..=3)
        .map(|i| {
            let addr = format!("127.0.0.{i}:{}", free_port());
            let service = if i == 3 { "ledger" } else { "shop" };
            let agent = Agent::start_with_env(
                &format!(
                    "interval: 1s\nexport:\n  otlp:\n    enabled: false\n{}backups:\n  - name: dumps-{i}\n    kind: files\n    path: {}\n    rpo: 1h\n    service: {service}\n",
                    faultline_tests::drill::api_section(&addr, &tokens, &[]),
                    backups.display()
                ),
                &[("NODE_NAME", &format!("node-{i}"))],
            );
            (agent, addr)
        })
        .collect();
    for (a, addr) in &agents {
        assert!(
            poll_for(Duration::from_secs(30), || {
                let (s, body) = api_call(addr, "GET", "/v1/history", Some(VIEWER_TOKEN), "");
                (s == 200 && body.contains("\"type\": \"check\"")).then_some(())
            })
            .is_some(),
            "{addr}: no check in the history:\n{}",
            a.stderr()
        );
    }
    // A drill of `web` (service shop) on node-1 and node-2, through the API, at once: a
    // command step against a probe of the agent's own API port.
    let ids: Vec<(String, String)> = agents[..2]
        .iter()
        .map(|(_, addr)| {
            let inline = format!(
                "{{\"inline\": \"name: web\\nservice: shop\\nprobe_interval: 50ms\\nsteady_state:\\n  - name: api\\n    tcp: {{ address: '{addr}' }}\\nfaults:\\n  - command: [\\\"true\\\"]\\nrecovery: {{ consecutive: 1, timeout: 5s }}\\nobjectives: {{ rto: 5s }}\\n\"}}"
            );
            let (s, body) = api_call(addr, "POST", "/v1/drills", Some(OPERATOR_TOKEN), &inline);
            assert_eq!(s, 202, "{body}");
            let v: Value = serde_json::from_str(&body).unwrap();
            (addr.clone(), v["id"].as_str().unwrap().to_owned())
        })
        .collect();
    for (addr, id) in &ids {
        finished_drill(addr, OPERATOR_TOKEN, id, Duration::from_secs(30));
    }
    // The route: viewer only, paged, bounded, bad parameters named.
    let a1 = &agents[0].1;
    assert_eq!(api_call(a1, "GET", "/v1/history", None, "").0, 401);
    let (s, body) = api_call(a1, "GET", "/v1/history?limit=1", Some(VIEWER_TOKEN), "");
    assert_eq!(s, 200, "{body}");
    let page: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(page["items"].as_array().unwrap().len(), 1);
    let next = page["next"]
        .as_str()
        .expect("a next page")
        .replace('|', "%7C");
    let (s, body) = api_call(
        a1,
        "GET",
        &format!("/v1/history?limit=1&after={next}"),
        Some(VIEWER_TOKEN),
        "",
    );
    let second: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(s, 200);
    assert_ne!(second["items"][0]["id"], page["items"][0]["id"]);
    let (s, body) = api_call(
        a1,
        "GET",
        "/v1/history?limit=100000",
        Some(VIEWER_TOKEN),
        "",
    );
    assert!(s == 400 && body.contains("limit"), "{s} {body}");

    let (mut stopped, addr3) = agents.pop().unwrap();
    rt.block_on(stopped.terminate(Duration::from_secs(10)));
    let gameday = dir.path().join("fleet.yaml");
    let mut inventory = String::new();
    for (i, addr) in agents
        .iter()
        .map(|a| a.1.clone())
        .chain([addr3])
        .enumerate()
    {
        inventory.push_str(&format!(
            "  - {{ name: node-{}, url: \"http://{addr}\", token_file: {} }}\n",
            i + 1,
            dir.path().join("viewer.token").display()
        ));
    }
    std::fs::write(dir.path().join("viewer.token"), VIEWER_TOKEN).unwrap();
    std::fs::write(
        &gameday,
        format!("name: fleet\nrequest_timeout: 2s\nagents:\n{inventory}plan:\n  - scenario: web\n    agents: all\n"),
    )
    .unwrap();
    let p = posture_json(dir.path(), &["--agents", gameday.to_str().unwrap()]);
    let status: Vec<(String, String)> = p["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| {
            (
                n["node"].as_str().unwrap().to_owned(),
                n["status"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        status,
        [
            ("node-1".into(), "ok".into()),
            ("node-2".into(), "ok".into()),
            ("node-3".into(), "unreachable".into())
        ]
    );
    assert!(
        p["nodes"][2]["error"]
            .as_str()
            .unwrap()
            .contains("did not answer"),
        "{p:#}"
    );
    let shop = service(&p, "shop");
    let web = find(&shop["scenarios"], "scenario", "web");
    assert_eq!(web["runs"], 2);
    assert_eq!(web["nodes"], serde_json::json!(["node-1", "node-2"]));
    for d in web["drills"].as_array().unwrap() {
        assert!(d["href"].as_str().unwrap().ends_with("/html"), "{d}");
    }
    let sources: Vec<&str> = shop["sources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["source"].as_str().unwrap())
        .collect();
    assert_eq!(sources, ["dumps-1", "dumps-2"]);
    assert!(
        p["services"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["service"] != "ledger"),
        "node-3's evidence is not made up"
    );
}

/// Writes check records through the real binary while SIGKILLing it, leaves a record torn
/// as a power loss would, and checks that the history reads whole records only and keeps
/// every one written before; then retention at start removes the oldest first.
#[test]
fn history_survives_sigkill_and_retention_removes_the_oldest_first() {
    let rt = runtime();
    let _in_runtime = rt.enter();
    let dir = tempfile::tempdir().unwrap();
    let backups = dir.path().join("backups");
    std::fs::create_dir_all(&backups).unwrap();
    std::fs::write(backups.join("b1.tar.gz"), b"backup").unwrap();
    let sources: String = (0..8)
        .map(|i| {
            format!(
                "  - name: s{i}\n    kind: files\n    path: {}\n    rpo: 1h\n    freshness: {{ every: 100ms }}\n    integrity: {{ enabled: false }}\n",
                backups.display()
            )
        })
        .collect();
    let mut agent = Agent::start(&format!(
        "interval: 1s\nexport:\n  otlp:\n    enabled: false\nhistory:\n  retention: 30d\n  max_bytes: 1MiB\nbackups:\n{sources}"
    ));
    let state = agent.dir().join("state");
    let seg_dir = state.join("history/backup");
    let count = || -> (u64, u64) {
        let p = posture_json(&state, &[]);
        let n = p["nodes"][0]["checks"].as_u64().unwrap();
        (n, p["nodes"][0]["skipped"].as_u64().unwrap())
    };
    let mut before = 0;
    for round in 0..4u64 {
        // Records arrive (80 a second), then SIGKILL lands somewhere among the writes.
        poll_for(Duration::from_secs(20), || {
            let lines = std::fs::read_dir(&seg_dir)
                .ok()?
                .flatten()
                .map(|e| {
                    std::fs::read(e.path()).map_or(0, |b| b.iter().filter(|c| **c == b'\n').count())
                })
                .sum::<usize>();
            (lines as u64 >= before + 20).then_some(())
        })
        .unwrap_or_else(|| panic!("no records written:\n{}", agent.stderr()));
        std::thread::sleep(Duration::from_millis(17 * round));
        rt.block_on(agent.kill());
        let (n, skipped) = count();
        assert_eq!(
            skipped, 0,
            "round {round}: a record torn by SIGKILL was read or counted"
        );
        assert!(
            n >= before + 20,
            "round {round}: {n} records after the kill, {before} before"
        );
        before = n;
        agent.restart();
    }
    rt.block_on(agent.kill());
    // A power loss can leave a record cut short: the reader skips it, the next writer ends
    // the torn line, and its own records are read whole.
    let (seg, _) = newest(&seg_dir);
    let mut bytes = std::fs::read(&seg).unwrap();
    bytes.extend_from_slice(b"deadbeef {\"id\":\"s0-freshness-1\",\"source\":\"s");
    std::fs::write(&seg, &bytes).unwrap();
    let (n, skipped) = count();
    assert_eq!((n, skipped), (before, 1));
    // The next writer (`backup check`, one freshness record) ends the torn line first: its
    // own record is read whole, next to the skipped one.
    let cfg = agent.dir().join("faultline.yaml");
    let out = faultline(
        &state,
        &[
            "backup",
            "check",
            "-c",
            cfg.to_str().unwrap(),
            "--source",
            "s0",
        ],
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(count(), (before + 1, 1), "the record after the torn one");
    // Retention, at the next start: a segment older than 30 days goes; past 1 MiB the
    // oldest of the rest go until it fits, never the newest.
    assert_eq!(chrono_day(1_796_587_242), "2026-12-06");
    let day = 86_400;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let name = |days_ago: u64| {
        let t = chrono_day(now - days_ago * day);
        seg_dir.join(format!("{t}.log"))
    };
    let record = std::fs::read(&seg).unwrap();
    let line_end = record.iter().position(|c| *c == b'\n').unwrap() + 1;
    let filler: Vec<u8> = record[..line_end].repeat(400_000 / line_end + 1);
    let (ancient, old, mid) = (name(40), name(5), name(4));
    std::fs::write(&ancient, &record[..line_end]).unwrap();
    std::fs::write(&old, &filler).unwrap();
    std::fs::write(&mid, &filler).unwrap();
    let extra = name(3);
    std::fs::write(&extra, &filler).unwrap();
    agent.restart();
    assert!(
        poll_for(Duration::from_secs(20), || (!ancient.exists()
            && !old.exists())
        .then_some(()))
        .is_some(),
        "retention did not remove the oldest:\n{}",
        agent.stderr()
    );
    assert!(
        mid.exists() && extra.exists() && seg.exists(),
        "the newer segments stay"
    );
    rt.block_on(agent.kill());
}

/// The newest segment file and its size.
fn newest(dir: &Path) -> (PathBuf, u64) {
    let mut all: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    all.sort();
    let p = all.pop().expect("a segment");
    let len = std::fs::metadata(&p).unwrap().len();
    (p, len)
}

/// `YYYY-MM-DD` of a Unix time (UTC), by the civil-from-days algorithm.
fn chrono_day(unix: u64) -> String {
    let z = (unix / 86_400) as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}
