//! The examples a user starts from (`examples/`) and the README's first drill, run as
//! written.
//!
//! - Every file under `examples/` is checked by the command its directory calls for
//!   (`drills/`: `drill validate`, with the agent config its header names; `gameday/`:
//!   `gameday validate`; `config/`: `config validate`) and opens with its comment: what it
//!   shows, what it needs, how to run it. A directory without a known validator fails.
//! - The three runnable drills run at once against real services, configured only through
//!   the variables their headers document (as a user would): Redis under the test's own
//!   supervisor, PostgreSQL restored from pgBackRest, Python's http.server behind the
//!   latency proxy. Each report's RTO and RPO must agree with the test's own stopwatch and
//!   canary within the precision the report states (its `± precision`, plus 20 ms for the
//!   test's own polling and thread wake-ups on a loaded machine).
//! - The README's "Your first drill" commands, cut out of README.md between its markers,
//!   run in bash (less the package install and the release build: CI installs the packages
//!   and this test puts its own build on PATH); the drill passes, and its HTML report is
//!   checked in headless Chromium at three widths through the DOM (verdict, RTO and RPO
//!   shown, no SVG label cut off, no script error).

// Test helpers outside `#[test]` functions fail loudly by design.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use faultline_tests::backup::{PgCluster, free_port, which};
use faultline_tests::browser::figure_in_summary;
use faultline_tests::drill::{drill_run_with_env, poll_for};
use faultline_tests::examples::{
    HttpServer, ListenWatch, OwnCanary, Redis, config_named_in, dead, example, postmaster_pid,
    psql, unix_at, unix_now, wait_until,
};
use faultline_tests::{agent_binary, in_ci, workspace_root};

/// The slack on top of a report's stated precision: the test's own pollers (1–10 ms) and
/// thread wake-ups on a loaded 2-core machine.
const SLACK: f64 = 0.020;

/// Whether every program is installed; otherwise SKIPPED (a failure under CI).
fn have(what: &str, programs: &[&str]) -> bool {
    let missing: Vec<&&str> = programs.iter().filter(|p| which(p).is_none()).collect();
    if missing.is_empty() {
        return true;
    }
    assert!(
        !in_ci(),
        "{what} needs {missing:?} under CI (.ci/run installs them)"
    );
    eprintln!("SKIPPED: {what}: {missing:?} not installed");
    false
}

fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "yaml" || x == "yml") {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

#[test]
fn every_example_file_validates_and_says_what_it_shows_needs_and_how_to_run_it() {
    let root = workspace_root();
    let examples = root.join("examples");
    let files = yaml_files(&examples);
    assert!(files.len() >= 7, "examples/ has only {files:?}");
    // What the examples' own `${VAR}`s point at when they name files that live on a real
    // host (/etc/faultline/…): the same variables a user sets.
    let scratch = tempfile::tempdir().unwrap();
    let tokens = faultline_tests::drill::write_tokens(scratch.path());
    let env = [
        ("FAULTLINE_TOKEN", "validate-only-token-0123".to_owned()),
        ("FAULTLINE_TOKENS", tokens.display().to_string()),
        (
            "FAULTLINE_DRILLS",
            examples.join("drills").display().to_string(),
        ),
    ];
    let mut failures = Vec::new();
    for f in &files {
        let rel = f.strip_prefix(&root).unwrap().display().to_string();
        let text = std::fs::read_to_string(f).unwrap();
        let header: String = text
            .lines()
            .take_while(|l| l.starts_with('#'))
            .collect::<Vec<_>>()
            .join("\n");
        for part in ["What it shows", "What it needs", "How to run it"] {
            if !header.contains(part) {
                failures.push(format!("{rel}: the opening comment lacks {part:?}"));
            }
        }
        let dir = f
            .strip_prefix(&examples)
            .unwrap()
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_string_lossy()
            .into_owned();
        let mut cmd = Command::new(agent_binary());
        cmd.current_dir(&root).envs(env.iter().map(|(k, v)| (k, v)));
        match dir.as_str() {
            "drills" => {
                cmd.args(["drill", "validate"]).arg(f);
                if let Some(config) = config_named_in(f) {
                    cmd.arg("--config").arg(config);
                }
            }
            "gameday" => {
                cmd.args(["gameday", "validate"]).arg(f);
            }
            "config" => {
                cmd.args(["config", "validate"]).arg(f);
            }
            other => {
                failures.push(format!(
                    "{rel}: no validator for examples/{other}/ (add one to this test)"
                ));
                continue;
            }
        }
        let out = cmd.output().unwrap();
        if !out.status.success() {
            failures.push(format!(
                "{rel}: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// A drill report's measurement: (seconds, ± precision).
fn measured(r: &serde_json::Value, what: &str) -> (f64, f64) {
    (
        r[what]["seconds"]
            .as_f64()
            .unwrap_or_else(|| panic!("no {what} in {r:#}")),
        r[what]["precision_seconds"].as_f64().unwrap(),
    )
}

/// Whether `value ± precision` overlaps `[lo, hi]` (the test's own interval) within
/// [`SLACK`].
fn agrees(value: f64, precision: f64, lo: f64, hi: f64) -> bool {
    value + precision + SLACK >= lo && value - precision - SLACK <= hi
}

fn report_of(out: &std::process::Output, json: &Path) -> serde_json::Value {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("{stdout}");
    assert_eq!(
        out.status.code(),
        Some(0),
        "the drill did not pass:\n{stdout}\n{stderr}"
    );
    serde_json::from_str(&std::fs::read_to_string(json).unwrap()).unwrap()
}

/// `drill run` of example `file` on a thread of its own (the test meanwhile does what the
/// example's header asks of a user, or watches), with the example's variables in `env`.
fn spawn_drill(
    state: PathBuf,
    file: &'static str,
    args: Vec<String>,
    env: Vec<(&'static str, String)>,
    timeout: Duration,
) -> std::thread::JoinHandle<std::process::Output> {
    std::thread::spawn(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        drill_run_with_env(&state, &example(file), &args, &env, timeout)
    })
}

/// examples/drills/redis-self-heal.yaml against a supervised redis-server.
fn redis_self_heal(dir: &Path) {
    let redis = Redis::start();
    // The test's own canary: a SET every 10 ms on one connection, until the crash breaks it.
    let mut own = redis.own_canary("test:canary", Duration::from_millis(10));
    let json = dir.join("redis.json");
    let out = drill_run_with_env(
        &dir.join("redis-state"),
        &example("drills/redis-self-heal.yaml"),
        &["--report-json", json.to_str().unwrap()],
        &[
            ("REDIS_PORT", redis.port.to_string()),
            ("KILL_AT", "2s".into()),
        ],
        Duration::from_secs(60),
    );
    let r = report_of(&out, &json);
    assert!(own.wait_stopped(Duration::from_secs(5)), "own canary");
    let outage = poll_for(Duration::from_secs(5), || {
        redis.sup.outages().into_iter().find(|o| o.up.is_some())
    })
    .expect("the supervisor saw the crash and the restart");
    let (died, up) = (unix_at(outage.died), unix_at(outage.up.unwrap()));
    let (rto, rto_p) = measured(&r, "rto");
    eprintln!(
        "redis RTO: report {rto:.3} ± {rto_p:.3} s, supervisor {:.3} s",
        up - died
    );
    assert!(
        agrees(rto, rto_p, up - died, up - died),
        "redis RTO {rto} ± {rto_p} vs the supervisor's {}",
        up - died
    );
    // The newest of the test's own markers that survived the restart: Redis's last snapshot
    // before the crash lies between it and the next write (the canary's resolution).
    let survivor = redis.command(&["GET", "test:canary"]).unwrap();
    let own_ts: f64 = survivor.split(' ').nth(1).unwrap().parse::<f64>().unwrap() / 1000.0;
    let res = own.resolution();
    let (rpo, rpo_p) = measured(&r, "rpo");
    eprintln!(
        "redis RPO: report {rpo:.3} ± {rpo_p:.3} s, own canary {:.3} s (resolution {res:.3} s, {} markers)",
        died - own_ts,
        own.markers().len()
    );
    assert!(
        agrees(rpo, rpo_p, died - own_ts - res, died - own_ts),
        "redis RPO {rpo} ± {rpo_p} vs own canary {} (resolution {res})",
        died - own_ts
    );
}

/// examples/drills/postgres-restore.yaml against a PostgreSQL 15 cluster with a pgBackRest
/// stanza; the backup the restore uses is taken while the canary writes, as its header says.
fn postgres_restore(dir: &Path) {
    let pg = PgCluster::start();
    pg.backup_full();
    psql(
        &pg,
        "create table test_canary(seq bigint primary key, ts_ms bigint not null)",
    )
    .unwrap();
    let pm = postmaster_pid(&pg).unwrap();
    let (sock, port) = (pg.dir.path().display().to_string(), pg.port);
    let insert = move |seq: u64, ts_ms: u64| {
        let argv = faultline_tests::examples::psql_argv_at(
            &sock,
            port,
            &format!("insert into test_canary values ({seq}, {ts_ms})"),
        );
        Command::new(&argv[0])
            .args(&argv[1..])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    let mut own = OwnCanary::start(Duration::from_millis(10), insert);
    let json = dir.join("pg.json");
    let data = pg.dir.path().join("data");
    let env = [
        ("PGDATA", data.display().to_string()),
        ("PGHOST", pg.dir.path().display().to_string()),
        ("PGPORT", pg.port.to_string()),
        ("PGBACKREST_STANZA", "t".into()),
        ("PGBACKREST_CONFIG", pg.conf().display().to_string()),
        // Room for the backup below (3–4 s on a loaded 2-core machine) before the crash,
        // more than twice over.
        ("KILL_AT", "10s".into()),
    ];
    let runner = spawn_drill(
        dir.join("pg-state"),
        "drills/postgres-restore.yaml",
        vec![
            "--config".into(),
            example("config/pgbackrest.yaml").display().to_string(),
            "--report-json".into(),
            json.display().to_string(),
        ],
        env.to_vec(),
        Duration::from_secs(240),
    );
    // Once faultline's canary writes, the backup the drill will restore.
    let writing = wait_until(Duration::from_millis(50), Duration::from_secs(30), || {
        psql(&pg, "select count(*) from faultline_canary")
            .and_then(|n| n.parse::<u32>().ok())
            .is_some_and(|n| n >= 3)
    });
    assert!(writing.is_some(), "faultline's canary never wrote");
    let backup_start = unix_now();
    faultline_tests::backup::run_ok(pg.pgbackrest().args(["--type=incr", "backup"]));
    let backup_end = unix_now();
    // The crash, seen by the test: the postmaster is gone (or a zombie).
    let died = wait_until(Duration::from_millis(1), Duration::from_secs(60), || {
        dead(pm)
    })
    .expect("the postmaster was not killed");
    assert!(
        backup_end < died,
        "the backup ended after the crash: KILL_AT is too short here"
    );
    // Back: the first moment the restored cluster answers as a primary, polled with psql.
    let mut last_try = died;
    let up = wait_until(Duration::from_millis(10), Duration::from_secs(200), || {
        if runner.is_finished() && last_try > died {
            // The drill is over and PostgreSQL does not answer: its output says why.
            return true;
        }
        let t = unix_now();
        let ok = psql(&pg, "select pg_is_in_recovery()").as_deref() == Some("f");
        if !ok {
            last_try = t;
        }
        ok
    })
    .expect("the restored cluster never answered as a primary");
    let out = runner.join().unwrap();
    let r = report_of(&out, &json);
    assert_eq!(
        psql(&pg, "select pg_is_in_recovery()").as_deref(),
        Some("f"),
        "the restored cluster does not answer as a primary"
    );
    assert!(own.wait_stopped(Duration::from_secs(5)), "own canary");
    let (rto, rto_p) = measured(&r, "rto");
    eprintln!(
        "postgres RTO: report {rto:.3} ± {rto_p:.3} s, test's psql between {:.3} and {:.3} s",
        last_try - died,
        up - died
    );
    assert!(
        agrees(rto, rto_p, last_try - died, up - died),
        "postgres RTO {rto} ± {rto_p} vs psql {}..{}",
        last_try - died,
        up - died
    );
    let row = psql(
        &pg,
        "select ts_ms from test_canary order by seq desc limit 1",
    )
    .expect("the test's canary table was restored");
    let own_ts = row.parse::<f64>().unwrap() / 1000.0;
    let res = own.resolution();
    let (rpo, rpo_p) = measured(&r, "rpo");
    eprintln!(
        "postgres RPO: report {rpo:.3} ± {rpo_p:.3} s, own canary {:.3} s (resolution {res:.3} s); backup RPO {:.3} s, backup ran {:.3}..{:.3} s before the crash",
        died - own_ts,
        r["backup_rpo_seconds"].as_f64().unwrap(),
        died - backup_end,
        died - backup_start
    );
    assert!(
        agrees(rpo, rpo_p, died - own_ts - res, died - own_ts),
        "postgres RPO {rpo} ± {rpo_p} vs own canary {} (resolution {res})",
        died - own_ts
    );
    // pgBackRest records the backup's stop in whole seconds.
    let point = r["backup_point_at"].as_f64().unwrap();
    assert!(
        point >= backup_start.floor() - 1.0 && point <= backup_end,
        "backup point {point} outside the backup's run {backup_start}..{backup_end}"
    );
    assert!(r["rpo"]["newest_surviving_seq"].as_u64().is_some());
    assert!(
        data.join("PG_VERSION").is_file(),
        "no cluster restored at PGDATA"
    );
}

/// examples/drills/http-latency.yaml against Python's http.server.
fn http_latency(dir: &Path) {
    let svc = HttpServer::start();
    let proxy = format!("127.0.0.1:{}", free_port());
    let watch = ListenWatch::start(&proxy);
    let json = dir.join("http.json");
    let env = [
        ("APP_ADDR", svc.addr.clone()),
        ("PROXY_ADDR", proxy.clone()),
        // A wide gap between the bound and the latency: a loaded machine's own slowness
        // must not look like the fault.
        ("LATENCY", "1s".into()),
        ("PAGE_WITHIN", "0.5".into()),
        ("SLOW_FOR", "2s".into()),
    ];
    let runner = spawn_drill(
        dir.join("http-state"),
        "drills/http-latency.yaml",
        vec!["--report-json".into(), json.display().to_string()],
        env.to_vec(),
        Duration::from_secs(60),
    );
    // While the proxy is there, a request through it takes the added latency.
    let up = poll_for(Duration::from_secs(30), || watch.window().0);
    assert!(up.is_some(), "the latency proxy never listened on {proxy}");
    let (status, took) = svc.get(&proxy).expect("a request through the proxy");
    assert!(status.contains(" 200 "), "{status}");
    assert!(
        took >= 0.3,
        "a request through the proxy took only {took:.3} s"
    );
    let out = runner.join().unwrap();
    let r = report_of(&out, &json);
    let (Some(from), Some(to)) = watch.window() else {
        panic!("the proxy did not go away: {:?}", watch.window())
    };
    let (rto, rto_p) = measured(&r, "rto");
    eprintln!(
        "http RTO: report {rto:.3} ± {rto_p:.3} s, the proxy listened {:.3} s; a request through it took {took:.3} s",
        to - from
    );
    // The slow path exists exactly while the fault is on; 2 ms between the watcher's tries.
    assert!(
        agrees(rto, rto_p, to - from - 0.002, to - from + 0.002),
        "http RTO {rto} ± {rto_p} vs the proxy's {} s",
        to - from
    );
    assert!(r["rpo"].is_null(), "no data is at stake: {:#}", r["rpo"]);
    assert!(
        r["detection_seconds"].as_f64().is_some(),
        "the slow responses were not seen"
    );
}

#[test]
fn the_runnable_example_drills_pass_and_agree_with_the_tests_own_clocks_and_canaries() {
    let redis = have("redis-self-heal", &["redis-server", "redis-cli"]);
    let initdb = format!("{}/initdb", faultline_tests::backup::PG_BIN);
    let pg = have("postgres-restore", &["pgbackrest", "runuser", &initdb]);
    let http = have("http-latency", &["python3", "curl", "sh"]);
    // Build (or find) the binary before anything runs against a clock.
    let _ = agent_binary();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::thread::scope(|s| {
        if redis {
            s.spawn(|| redis_self_heal(d));
        }
        if pg {
            s.spawn(|| postgres_restore(d));
        }
        if http {
            s.spawn(|| http_latency(d));
        }
    });
}

/// The shell commands of README.md between `<!-- first-drill:begin -->` and
/// `<!-- first-drill:end -->` (the fenced `sh` blocks there).
fn readme_first_drill() -> Vec<String> {
    let readme = std::fs::read_to_string(workspace_root().join("README.md")).unwrap();
    let section = readme
        .split("<!-- first-drill:begin -->")
        .nth(1)
        .and_then(|s| s.split("<!-- first-drill:end -->").next())
        .expect("README.md marks its first drill with first-drill:begin/end");
    let mut lines = Vec::new();
    let mut inside = false;
    for l in section.lines() {
        if l.starts_with("```") {
            inside = l.trim() == "```sh" && !inside;
            continue;
        }
        if inside {
            lines.push(l.to_owned());
        }
    }
    lines
}

/// Kills the README script's process group (the supervisor loop and Redis) however the
/// test ends.
struct Group(i32);

impl Drop for Group {
    fn drop(&mut self) {
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(self.0),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}

#[test]
fn the_readme_first_drill_runs_as_written_and_its_html_report_reads_at_three_widths() {
    if !have("README first drill", &["redis-server", "redis-cli", "bash"]) {
        return;
    }
    let lines = readme_first_drill();
    // The package install and the release build are CI's and this test's: the packages are
    // there (checked above) and the test's own build goes on PATH.
    let (setup, run): (Vec<String>, Vec<String>) = lines
        .into_iter()
        .partition(|l| l.starts_with("sudo apt-get") || l.starts_with("cargo build"));
    assert_eq!(
        setup.len(),
        2,
        "README's install and build lines: {setup:?}"
    );
    let script = run.join("\n");
    for needed in [
        "examples/drills/redis-self-heal.yaml",
        "--html /tmp/first-drill/report.html",
    ] {
        assert!(
            script.contains(needed),
            "README's first drill lacks {needed}"
        );
    }
    let dir = Path::new("/tmp/first-drill");
    assert!(
        !dir.exists() && std::net::TcpStream::connect("127.0.0.1:6390").is_err(),
        "/tmp/first-drill or port 6390 is taken: is another first drill running?"
    );
    struct Gone<'a>(&'a Path);
    impl Drop for Gone<'_> {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(self.0);
        }
    }
    let _gone = Gone(dir);
    let bin_dir = agent_binary().parent().unwrap().to_path_buf();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    // Output to files, not pipes: the script's background loop (and Redis) would hold a
    // pipe open past the script's end if it failed before stopping them.
    let logs = tempfile::tempdir().unwrap();
    let (out_file, err_file) = (logs.path().join("stdout"), logs.path().join("stderr"));
    let mut child = std::os::unix::process::CommandExt::process_group(
        faultline_tests::ending_with_test("bash")
            // Without -e, as in the terminal the commands are typed into (a killed
            // redis-server must not end the supervisor loop).
            .args(["-c", &script])
            .current_dir(workspace_root())
            .env("PATH", path)
            .stdin(std::process::Stdio::null())
            .stdout(std::fs::File::create(&out_file).unwrap())
            .stderr(std::fs::File::create(&err_file).unwrap()),
        0,
    )
    .spawn()
    .unwrap();
    let _group = Group(i32::try_from(child.id()).unwrap());
    let status = child.wait().unwrap();
    let stdout = std::fs::read_to_string(&out_file).unwrap();
    eprintln!("{stdout}");
    assert!(
        status.success(),
        "README's first drill failed ({status}):\n{stdout}\n{}",
        std::fs::read_to_string(&err_file).unwrap()
    );
    assert!(stdout.contains(": PASSED"), "{stdout}");
    let (rto, rpo) = (
        figure_in_summary(&stdout, "RTO"),
        figure_in_summary(&stdout, "RPO"),
    );
    // Redis is gone with its supervisor.
    assert!(
        wait_until(Duration::from_millis(20), Duration::from_secs(5), || {
            std::net::TcpStream::connect("127.0.0.1:6390").is_err()
        })
        .is_some(),
        "Redis still answers on 6390 after the README's last command"
    );

    let html = dir.join("report.html");
    let Some(chromium) = faultline_tests::drill::chromium() else {
        assert!(!in_ci(), "chromium is required under CI");
        eprintln!("SKIPPED: the report's layout check (chromium is not installed)");
        return;
    };
    let shots = tempfile::tempdir().unwrap();
    let keep = std::env::var_os("FAULTLINE_KEEP_SCREENSHOTS").map(PathBuf::from);
    let png = keep
        .as_deref()
        .unwrap_or(shots.path())
        .join("first-drill.png");
    let pages = faultline_tests::browser::check_report_page(
        &chromium,
        &html,
        "PASSED",
        &["RTO", "RPO", &rto, &rpo, "recovered (RTO"],
        &png,
    );
    eprintln!(
        "report.html read at {:?} px: {} labels in the timeline, none cut off",
        faultline_tests::browser::WIDTHS,
        pages[0]["svgs"][0]["texts"].as_array().map_or(0, Vec::len)
    );
}
