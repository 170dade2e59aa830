//! A data-loss drill against a real PostgreSQL 15: faultline's canary writes a marker every
//! 100 ms, the test takes a `pg_basebackup` mid-way (kept as a tarball in a `files` backup
//! source, its mtime set to the backup's end), the drill kills the postmaster and deletes
//! the data directory, and recovery restores the backup into place and starts PostgreSQL.
//! The reported RPO must match the ground truth the test reads from the restored table, and
//! the backup time, within one canary interval; the JUnit file marks a tight RPO target as
//! failed and (on a second drill) a loose one as passed.

// Test helpers outside `#[test]` functions fail loudly by design.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::path::Path;
use std::process::Command;
use std::time::{Duration, SystemTime};

use faultline_tests::drill::{PgCanary, drill_run, poll_for};

const CANARY_S: f64 = 0.1;

fn now() -> f64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

fn available() -> bool {
    let ok = Path::new(&format!("{}/initdb", faultline_tests::backup::PG_BIN)).is_file()
        && faultline_tests::backup::which("tar").is_some();
    if !ok {
        assert!(
            !faultline_tests::in_ci(),
            "PostgreSQL 15 is required under CI"
        );
        eprintln!("SKIPPED: PostgreSQL 15 (Debian) is not installed");
    }
    ok
}

struct Run {
    report: serde_json::Value,
    junit: String,
    code: Option<i32>,
    backup_end: f64,
    /// When `pg_basebackup` started: the backup's point in time lies between this and
    /// `backup_end` (its start checkpoint, or WAL up to its end).
    backup_start: f64,
}

fn drill(pg: &PgCanary, n: u32, rpo_target: &str) -> Run {
    let dir = pg.dir.path();
    let table = format!("canary{n}");
    pg.psql(&format!(
        "create table {table}(seq bigint primary key, ts bigint not null);"
    ));
    let backups = dir.join("backups");
    std::fs::create_dir_all(&backups).unwrap();
    let config = dir.join("agent.yaml");
    std::fs::write(
        &config,
        format!(
            "export:\n  otlp:\n    enabled: false\nbackups:\n  - name: pgdata\n    kind: files\n    rpo: 1h\n    path: {}\n    glob: \"base-{n}.tar.gz\"\n",
            backups.display()
        ),
    )
    .unwrap();
    let data = pg.data().display().to_string();
    let mut actions =
        vec![serde_json::json!({"restore_backup": {"source": "pgdata", "target": data}})];
    if let Some(u) = pg.user {
        actions.push(serde_json::json!({"command": ["chown", "-R", format!("{u}:{u}"), data]}));
    }
    actions.push(serde_json::json!({"command": ["chmod", "700", data]}));
    actions.push(serde_json::json!({"command": pg.start_argv(), "timeout": "90s"}));
    let scenario = serde_json::json!({
        "name": format!("pg-data-loss-{n}"),
        "probe_interval": "100ms",
        "max_duration": "120s",
        "steady_state": [{"name": "pg", "command": {"run": pg.psql_argv("select 1"), "output": "1", "timeout": "2s"}}],
        "canary": {
            "interval": "100ms",
            "writer": {"command": pg.psql_argv(&format!("insert into {table} values ({{seq}}, {{ts_ms}})"))},
            "reader": {"command": pg.psql_argv(&format!("select seq, ts from {table} order by seq desc limit 1"))}
        },
        "fault_mode": "sequence",
        "faults": [
            {"at": "3500ms", "fault": {"kind": "process-kill", "pid": pg.postmaster_pid(), "duration": "1s"}},
            {"at": "100ms", "command": ["rm", "-rf", data]}
        ],
        "recovery": {"strategy": "actions", "consecutive": 2, "timeout": "90s", "actions": actions},
        "objectives": {"rto": "120s", "rpo": rpo_target}
    });
    let file = dir.join(format!("scenario-{n}.json"));
    std::fs::write(&file, scenario.to_string()).unwrap();
    let (json, junit) = (
        dir.join(format!("r{n}.json")),
        dir.join(format!("r{n}.xml")),
    );
    let state = dir.join("state");
    let (f, j, js, c) = (file.clone(), json.clone(), junit.clone(), config.clone());
    let runner = std::thread::spawn(move || {
        drill_run(
            &state,
            &f,
            &[
                "--config",
                c.to_str().unwrap(),
                "--report-json",
                j.to_str().unwrap(),
                "--junit",
                js.to_str().unwrap(),
            ],
            Duration::from_secs(180),
        )
    });
    // Mid-way: once the canary has written a few markers, take the backup.
    let wrote = poll_for(Duration::from_secs(30), || {
        let rows: u64 = pg
            .psql(&format!("select count(*) from {table}"))
            .trim()
            .parse()
            .ok()?;
        (rows >= 8).then_some(())
    });
    if wrote.is_none() {
        let out = runner.join().unwrap();
        panic!(
            "the canary wrote no markers:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let bb = dir.join(format!("bb-{n}"));
    let backup_start = now();
    pg.basebackup(&bb);
    let backup_end = now();
    let tarball = backups.join(format!("base-{n}.tar.gz"));
    faultline_tests::backup::run_ok(
        Command::new("tar")
            .arg("-czf")
            .arg(&tarball)
            .arg("-C")
            .arg(&bb)
            .arg("."),
    );
    faultline_tests::backup::run_ok(
        Command::new("touch")
            .arg("-d")
            .arg(format!("@{backup_end:.6}"))
            .arg(&tarball),
    );
    let out = runner.join().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    eprintln!("{stdout}");
    if !stdout.contains("PASSED") {
        let log = std::fs::read_to_string(dir.join("pg.log")).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(15).collect();
        eprintln!("pg.log (last lines, newest first):\n{}", tail.join("\n"));
    }
    let report: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(&json)
            .unwrap_or_else(|e| panic!("{e}\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr))),
    )
    .unwrap();
    Run {
        report,
        junit: std::fs::read_to_string(&junit).unwrap(),
        code: out.status.code(),
        backup_end,
        backup_start,
    }
}

#[test]
fn data_loss_drill_rpo_matches_the_restored_table_and_the_backup_time() {
    if !available() {
        return;
    }
    // Build (or find) the binary first: the drill below runs against a clock.
    let _ = faultline_tests::agent_binary();
    let pg = PgCanary::start();
    // Tight target: missed.
    let run = drill(&pg, 1, "500ms");
    let r = &run.report;
    assert_eq!(r["verdict"], "failed", "{r:#}");
    assert_eq!(run.code, Some(1));
    let fault_at = r["fault_at"].as_f64().unwrap();
    let rpo = r["rpo"]["seconds"].as_f64().unwrap();
    let (max_seq, max_ts) = {
        let row = pg.psql("select max(seq), max(ts) from canary1");
        let mut p = row.trim().split('|');
        let seq: u64 = p.next().unwrap().parse().unwrap();
        let ts: f64 = p.next().unwrap().parse().unwrap();
        (seq, ts / 1000.0)
    };
    let truth = fault_at - max_ts;
    let from_backup = fault_at - run.backup_end;
    eprintln!(
        "RPO: faultline {rpo:.3} s (± {:.3}), restored table {truth:.3} s, backup time {from_backup:.3} s; backup RPO reported {:.3} s; lost {} of {} markers",
        r["rpo"]["precision_seconds"].as_f64().unwrap(),
        r["backup_rpo_seconds"].as_f64().unwrap(),
        r["rpo"]["lost"],
        r["rpo"]["written"]
    );
    assert_eq!(r["rpo"]["newest_surviving_seq"].as_u64(), Some(max_seq));
    assert!((rpo - truth).abs() <= CANARY_S, "{rpo} vs table {truth}");
    // The newest marker in the backup was written before the backup ended and no earlier than
    // one canary interval before it started; how long pg_basebackup ran depends on the
    // machine's load, so the window is measured, not assumed.
    let backup_window = run.backup_end - run.backup_start;
    assert!(
        rpo >= from_backup - 0.05 && rpo <= from_backup + backup_window + CANARY_S + 0.05,
        "{rpo} vs backup time {from_backup} (backup ran {backup_window:.3} s)"
    );
    assert!((r["backup_rpo_seconds"].as_f64().unwrap() - from_backup).abs() < 0.01);
    assert!(r["rpo"]["lost"].as_u64().unwrap() > 0);
    assert!(r["rto"]["seconds"].as_f64().unwrap() > 0.0);
    let rpo_case = run.junit.split("<testcase name=\"rpo\"").nth(1).unwrap();
    assert!(
        rpo_case
            .split("</testcase>")
            .next()
            .unwrap()
            .contains("<failure"),
        "{}",
        run.junit
    );
    let rto_case = run.junit.split("<testcase name=\"rto\"").nth(1).unwrap();
    assert!(
        !rto_case
            .split("</testcase>")
            .next()
            .unwrap()
            .contains("<failure")
    );

    // Loose target on a second drill (against the restored cluster): passed.
    let run = drill(&pg, 2, "60s");
    assert_eq!(run.report["verdict"], "passed", "{:#}", run.report);
    assert_eq!(run.code, Some(0));
    assert!(!run.junit.contains("<failure") && run.junit.contains("<testcase name=\"rpo\""));
}
