//! `faultline backup check` against a real PostgreSQL 15 cluster archiving into a real
//! pgBackRest stanza, both in a temp dir on a free loopback port: freshness agrees with
//! `pgbackrest info`, `verify` passes on an intact repository, a restore test starts a
//! temporary PostgreSQL on the restored data and checks a query, a wrong predicate fails, and
//! a WAL segment removed from the archive fails the integrity check with pgBackRest's finding.

// A test binary: a panic *is* the failure report, so `expect` is how it reports.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::time::{Duration, Instant};

use faultline_tests::backup::{PgCluster, backup_check, require, run_ok};
use serde_json::Value;

fn strs(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

fn source(pg: &PgCluster, expect: &str) -> String {
    let user = pg
        .user
        .map(|u| format!("    user: {u}\n"))
        .unwrap_or_default();
    format!(
        "backups:\n  - name: db\n    kind: pgbackrest\n    stanza: t\n    config: {}\n{user}    rpo: 1h\n    rto: 10m\n    restore:\n      scratch_dir: {}\n      timeout: 90s\n      query: \"select count(*) from t\"\n      expect: \"{expect}\"\n",
        pg.conf().display(),
        pg.dir.path().join("scratch").display()
    )
}

fn postgres_processes_under(dir: &std::path::Path) -> usize {
    let out = run_ok(std::process::Command::new("ps").args(["-eo", "args"]));
    out.lines()
        .filter(|l| l.contains("postgres") && l.contains(&dir.display().to_string()))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgbackrest_freshness_verify_restore_and_missing_wal() {
    if !require(&[
        "pgbackrest",
        "/usr/lib/postgresql/15/bin/pg_ctl",
        "/usr/lib/postgresql/15/bin/initdb",
    ]) {
        return;
    }
    let pg = PgCluster::start();
    pg.backup_full();
    // More WAL after the backup, so a segment can go missing in the middle of the archive.
    for _ in 0..3 {
        pg.psql("insert into t select generate_series(1, 10); select pg_switch_wal();");
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while pg.wal_files().len() < 5 {
        assert!(
            Instant::now() < deadline,
            "WAL not archived: {:?}",
            pg.wal_files()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let state = pg.dir.path().join("state");
    let scratch = pg.dir.path().join("scratch");

    // Freshness, integrity and the restore test on the intact stanza.
    let run = backup_check(&source(&pg, ">= 1000"), &state, &[]).await;
    assert_eq!(run.code, Some(0), "{}\n{}", run.stdout, run.stderr);
    let info: Value =
        serde_json::from_str(&run_ok(pg.pgbackrest().args(["--output=json", "info"]))).unwrap();
    let sets = info[0]["backup"].as_array().unwrap();
    let inv = &run.result("db", "freshness")["inventory"];
    assert_eq!(inv["count"].as_u64().unwrap() as usize, sets.len());
    assert_eq!(inv["newest_id"], sets[0]["label"]);
    assert_eq!(inv["newest_size"], sets[0]["info"]["size"]);
    assert_eq!(run.result("db", "integrity")["status"], "healthy");
    let restore = run.result("db", "restore");
    let d = &restore["restore"];
    let verified = strs(&d["verified"]).join("\n");
    assert!(
        verified.contains("PostgreSQL started on the restored data (127.0.0.1:"),
        "{verified}"
    );
    assert!(
        verified.contains("returned \"1000\", satisfies >= 1000"),
        "{verified}"
    );
    assert!(
        d["restore_seconds"].as_f64().unwrap() > 0.0 && d["verify_seconds"].as_f64().unwrap() > 0.0,
        "{d}"
    );
    assert_eq!(d["scratch_cleaned"], true);
    assert!(
        std::fs::read_dir(&scratch).unwrap().next().is_none(),
        "scratch space left behind"
    );
    assert_eq!(
        postgres_processes_under(&scratch),
        0,
        "the temporary PostgreSQL is still running"
    );

    // A predicate the restored data does not satisfy fails, and still cleans up.
    let run = backup_check(&source(&pg, "== 5"), &state, &["--check", "restore"]).await;
    assert_eq!(run.code, Some(1), "{}", run.stdout);
    let problems = strs(&run.result("db", "restore")["restore"]["problems"]).join("\n");
    assert!(
        problems.contains("returned \"1000\", which does not satisfy == 5"),
        "{problems}"
    );
    assert!(std::fs::read_dir(&scratch).unwrap().next().is_none());
    assert_eq!(postgres_processes_under(&scratch), 0);

    // Remove a WAL segment in the middle of the archive.
    let wal = pg.wal_files();
    let victim = wal[wal.len() - 2].clone();
    let victim_name = victim.file_name().unwrap().to_string_lossy()[..24].to_owned();
    std::fs::remove_file(&victim).unwrap();
    let run = backup_check(&source(&pg, ">= 1000"), &state, &["--check", "integrity"]).await;
    assert_eq!(run.code, Some(1), "{}", run.stdout);
    let res = run.result("db", "integrity");
    let findings = strs(&res["integrity"]["findings"]).join("\n");
    assert!(findings.contains("has a gap"), "{findings}");
    // By hand: pgBackRest's verify logs the archive in two ranges around the missing segment.
    let by_hand =
        run_ok(
            pg.pgbackrest()
                .args(["--log-level-console=detail", "--output=text", "verify"]),
        );
    let ranges: Vec<&str> = by_hand
        .lines()
        .filter(|l| l.contains("wal start:"))
        .collect();
    assert_eq!(ranges.len(), 2, "{by_hand}");
    let prev = u64::from_str_radix(&victim_name[16..], 16).unwrap() - 1;
    assert!(
        findings.contains(&format!("{}{prev:08X} is followed by", &victim_name[..16])),
        "{findings} / {victim_name}"
    );
}
