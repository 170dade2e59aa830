//! The real `faultline run` with a `backups:` config whose sources fail in every way the issue
//! names — a tool that hangs past its timeout, a wrong password, a missing binary, a missing
//! repository — next to a healthy one: the agent keeps running and exporting, the
//! `faultline.backup.*` metrics reach the test's OTLP receiver with the right status per
//! source and only the source and kind as attributes, and each check logs one event.

// A test binary: a panic *is* the failure report, so `expect` is how it reports.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::time::Duration;

use faultline_tests::backup::{self, Borg, PgCluster, Restic, require};
use faultline_tests::procfs::pids_with_argv;
use faultline_tests::{Agent, OtlpConfig, OtlpReceiver, Received, Transport};

const SOURCES: [&str; 5] = ["dumps", "hangs", "wrongpw", "nobinary", "norepo"];

/// The latest value of `metric` per source, across the requests so far.
fn by_source(reqs: &[Received], metric: &str) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for r in reqs {
        for p in r.points().into_iter().filter(|p| p.name == metric) {
            out.insert(
                p.attributes
                    .get("faultline.backup.source")
                    .cloned()
                    .unwrap_or_default(),
                p.value,
            );
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_keeps_running_and_exporting_while_backup_sources_fail() {
    if !require(&["restic"]) {
        return;
    }
    let r = Restic::init();
    r.backup();
    let wrong = r.dir.path().join("wrong.pass");
    std::fs::write(&wrong, "not it\n").unwrap();
    let dumps = r.dir.path().join("dumps");
    std::fs::create_dir(&dumps).unwrap();
    std::fs::write(dumps.join("db-1.sql"), "select 1;\n").unwrap();
    // The dump's age grows with however long the agent takes to build and start.
    let written = std::time::Instant::now();

    // A duration no other process on the machine uses, to find leftovers by name.
    let hang = format!("60.{}", std::process::id());
    let receiver = OtlpReceiver::start().await.unwrap();
    let mut cfg = OtlpConfig::new(Transport::Grpc, receiver.endpoint(Transport::Grpc));
    cfg.interval = Duration::from_millis(500);
    let yaml = format!(
        "{}backups:\n\
         \x20 - name: dumps\n    kind: files\n    path: {dumps}\n    rpo: 1h\n    freshness: {{every: 1s}}\n    integrity: {{every: 1h}}\n\
         \x20 - name: hangs\n    kind: command\n    list_command: [sleep, \"{hang}\"]\n    rpo: 1h\n    freshness: {{every: 1s, timeout: 1s}}\n\
         \x20 - name: wrongpw\n    kind: restic\n    repository: {repo}\n    password_file: {wrong}\n    rpo: 1h\n    freshness: {{every: 1s}}\n    integrity: {{enabled: false}}\n\
         \x20 - name: nobinary\n    kind: borg\n    binary: /nonexistent/borg\n    repository: {repo}\n    rpo: 1h\n    freshness: {{every: 1s}}\n    integrity: {{enabled: false}}\n\
         \x20 - name: norepo\n    kind: restic\n    repository: {missing}\n    password_file: {pass}\n    rpo: 1h\n    freshness: {{every: 1s}}\n    integrity: {{enabled: false}}\n",
        cfg.to_yaml(),
        dumps = dumps.display(),
        repo = r.repo.display(),
        wrong = wrong.display(),
        missing = r.dir.path().join("missing-repo").display(),
        pass = r.password_file.display(),
    );
    let mut agent = Agent::start(&yaml);

    // Every source's freshness status arrives, with the right value.
    let reqs = receiver
        .wait_for(
            |reqs| by_source(reqs, "faultline.backup.freshness.status").len() == SOURCES.len(),
            Duration::from_secs(60),
        )
        .await;
    let status = by_source(&reqs, "faultline.backup.freshness.status");
    assert_eq!(status["dumps"], 1.0, "{status:?}");
    for s in &SOURCES[1..] {
        assert_eq!(status[*s], 0.0, "{s} must be unhealthy: {status:?}");
    }
    assert_eq!(by_source(&reqs, "faultline.backup.count")["dumps"], 1.0);
    let age = by_source(&reqs, "faultline.backup.age")["dumps"];
    let bound = written.elapsed().as_secs_f64() + 2.0;
    assert!(
        (0.0..=bound).contains(&age),
        "dump age {age}s, expected 0..={bound:.1}s (the time since it was written)"
    );
    for p in reqs
        .iter()
        .flat_map(Received::points)
        .filter(|p| p.name.starts_with("faultline.backup."))
    {
        let keys: Vec<&str> = p.attributes.keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            ["faultline.backup.kind", "faultline.backup.source"],
            "{}",
            p.series()
        );
    }

    // The hanging tool has been killed at least twice by now and the agent is still alive
    // and exporting: more requests keep arriving.
    assert!(
        agent
            .wait_for_stderr("did not finish within 1s", Duration::from_secs(20))
            .await,
        "{}",
        agent.stderr()
    );
    let seen = receiver.requests().len();
    receiver
        .wait_for(|reqs| reqs.len() >= seen + 4, Duration::from_secs(30))
        .await;
    assert!(
        agent.exit_status().is_none(),
        "the agent died: {}",
        agent.stderr()
    );
    assert_eq!(
        by_source(&receiver.requests(), "faultline.backup.integrity.status")["dumps"],
        1.0
    );

    // One event per check, with the tool's own words.
    let log = agent.stderr();
    assert!(log.contains("wrong password"), "{log}");
    assert!(log.contains("/nonexistent/borg: not found"), "{log}");
    assert!(log.contains("repository does not exist"), "{log}");
    assert!(
        log.contains("faultline.backup.check"),
        "events carry their attributes: {log}"
    );

    // It still shuts down cleanly, killing the tool that is hanging right now.
    let status = agent.terminate(Duration::from_secs(15)).await;
    assert_eq!(status.and_then(|s| s.code()), Some(0), "{}", agent.stderr());
    let hung_argv = ["sleep", hang.as_str()];
    assert!(
        faultline_tests::eventually(Duration::from_secs(5), || pids_with_argv(&hung_argv)
            .is_empty())
        .await,
        "a hanging tool outlived the agent: {:?}",
        pids_with_argv(&hung_argv)
    );
}

/// The newest OTLP record of `check` for `source`.
fn record<'a>(
    logs: &'a [faultline_tests::LogView],
    source: &str,
    check: &str,
) -> Option<&'a faultline_tests::LogView> {
    logs.iter().rev().find(|l| {
        l.event_name == "faultline.backup.check"
            && l.attr("faultline.backup.source") == source
            && l.attr("faultline.backup.check") == check
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_checks_healthy_sources_of_every_kind_on_schedule_with_restore_tests() {
    if !require(&[
        "restic",
        "borg",
        "pgbackrest",
        "sha256sum",
        "/usr/lib/postgresql/15/bin/pg_ctl",
    ]) {
        return;
    }
    // Built before the backups, so that their age is not the build's duration.
    faultline_tests::agent::agent_binary();
    let r = Restic::init();
    let r_manifest = r.dir.path().join("SHA256SUMS");
    std::fs::write(&r_manifest, backup::manifest_of(&r.data)).unwrap();
    r.backup();
    let b = Borg::init();
    let b_manifest = b.dir.path().join("SHA256SUMS");
    std::fs::write(&b_manifest, backup::manifest_of(&b.data)).unwrap();
    b.create("nightly");
    let pg = PgCluster::start();
    pg.backup_full();
    let dir = backup::tempdir("fl-kinds-");
    let data = backup::write_data(dir.path());
    let dumps = dir.path().join("dumps");
    std::fs::create_dir(&dumps).unwrap();
    std::fs::write(dumps.join("db-1.sql"), "select 1;\n").unwrap();
    let scratch = dir.path().join("scratch");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let pg_user = pg
        .user
        .map(|u| format!("    user: {u}\n"))
        .unwrap_or_default();
    let sched = "    freshness: {every: 1s}\n    integrity: {every: 1h}\n";
    let receiver = OtlpReceiver::start().await.unwrap();
    let mut cfg = OtlpConfig::new(Transport::Grpc, receiver.endpoint(Transport::Grpc));
    cfg.interval = Duration::from_millis(500);
    let yaml = format!(
        "{otlp}backups:\n\
         \x20 - name: restic\n    kind: restic\n    repository: {rrepo}\n    password_file: {rpass}\n    rpo: 1h\n    rto: 10m\n{sched}    restore: {{every: 1h, scratch_dir: {scratch}, manifest: {rman}, expect_paths: [{rdata}/hello.txt]}}\n\
         \x20 - name: borg\n    kind: borg\n    repository: {brepo}\n    password_file: {bpass}\n    env: {{BORG_BASE_DIR: {bbase}}}\n    rpo: 1h\n    rto: 10m\n{sched}    restore: {{every: 1h, scratch_dir: {scratch}, manifest: {bman}, expect_paths: [{bdata}/sub/numbers.csv]}}\n\
         \x20 - name: pg\n    kind: pgbackrest\n    stanza: t\n    config: {pgconf}\n{pg_user}    rpo: 1h\n    rto: 10m\n{sched}    restore: {{every: 1h, timeout: 120s, scratch_dir: {pgscratch}, query: \"select count(*) from t\", expect: \">= 1000\"}}\n\
         \x20 - name: files\n    kind: files\n    path: {dumps}\n    rpo: 1h\n{sched}\
         \x20 - name: cmd\n    kind: command\n    list_command: [sh, -c, 'echo \"[{{\\\"time\\\": {now}, \\\"size\\\": 100, \\\"id\\\": \\\"n1\\\"}}]\"']\n    check_command: [\"true\"]\n    restore_command: [cp, -r, {data}, \"{{dir}}/restored-{{id}}\"]\n    rpo: 1h\n    rto: 10m\n{sched}    restore: {{every: 1h, scratch_dir: {scratch}, expect_paths: [restored-n1/hello.txt]}}\n\
         \x20 - name: slow\n    kind: command\n    list_command: [sh, -c, 'echo \"[{{\\\"time\\\": {now}, \\\"size\\\": 100, \\\"id\\\": \\\"n1\\\"}}]\"']\n    restore_command: [sh, -c, 'sleep 0.3; cp -r {data} \"$FAULTLINE_RESTORE_DIR/x\"']\n    rpo: 1h\n    rto: 100ms\n    freshness: {{every: 1s}}\n    restore: {{every: 1h, scratch_dir: {scratch}}}\n",
        otlp = cfg.to_yaml(),
        rrepo = r.repo.display(),
        rpass = r.password_file.display(),
        rman = r_manifest.display(),
        rdata = r.data.display(),
        brepo = b.repo.display(),
        bpass = b.passphrase_file.display(),
        bbase = b.base.display(),
        bman = b_manifest.display(),
        bdata = b.data.display(),
        pgconf = pg.conf().display(),
        pgscratch = pg.dir.path().join("scratch").display(),
        scratch = scratch.display(),
        dumps = dumps.display(),
        data = data.display(),
    );
    let mut agent = Agent::start(&yaml);

    let restored = ["restic", "borg", "pg", "cmd", "slow"];
    let logs = receiver
        .wait_for_logs(
            |l| restored.iter().all(|s| record(l, s, "restore").is_some()),
            Duration::from_secs(240),
        )
        .await;
    for s in ["restic", "borg", "pg", "cmd"] {
        let rec = record(&logs, s, "restore").unwrap();
        assert_eq!(rec.attr("faultline.backup.status"), "healthy", "{rec:#?}");
        assert!(
            rec.attr("faultline.backup.restore.duration")
                .parse::<f64>()
                .unwrap()
                > 0.0
        );
        assert!(
            rec.attr("faultline.backup.restore.files")
                .parse::<u64>()
                .unwrap()
                >= 1,
            "{rec:#?}"
        );
        assert!(
            rec.attr("faultline.backup.restore.bytes")
                .parse::<u64>()
                .unwrap()
                > 0,
            "{rec:#?}"
        );
        assert_eq!(
            rec.attr("faultline.backup.restore.rto_exceeded"),
            "false",
            "{rec:#?}"
        );
        assert_eq!(rec.attr("faultline.backup.restore.scratch_cleaned"), "true");
        let verified = rec.attr("faultline.backup.restore.verified");
        let want = match s {
            "restic" => "sha256 of 3 of 3 manifest files match",
            "borg" => "sha256 of 3 of 3 manifest files match",
            "pg" => "satisfies >= 1000",
            _ => "restored-n1/hello.txt present",
        };
        assert!(verified.contains(want), "{s}: {verified}");
    }
    let slow = record(&logs, "slow", "restore").unwrap();
    assert_eq!(
        slow.attr("faultline.backup.status"),
        "unhealthy",
        "{slow:#?}"
    );
    assert_eq!(slow.attr("faultline.backup.restore.rto_exceeded"), "true");
    assert!(
        slow.attr("faultline.backup.restore.problems")
            .contains("longer than the restore-time target 100ms"),
        "{slow:#?}"
    );

    // The metrics agree: every source fresh and checked, restore tests healthy (but the slow one).
    let all = ["restic", "borg", "pg", "files", "cmd"];
    let reqs = receiver
        .wait_for(
            |reqs| {
                let st = by_source(reqs, "faultline.backup.restore.status");
                let i = by_source(reqs, "faultline.backup.integrity.status");
                restored.iter().all(|s| st.contains_key(*s))
                    && all.iter().all(|s| i.contains_key(*s))
            },
            Duration::from_secs(60),
        )
        .await;
    let fresh = by_source(&reqs, "faultline.backup.freshness.status");
    let integrity = by_source(&reqs, "faultline.backup.integrity.status");
    let age = by_source(&reqs, "faultline.backup.age");
    for s in all {
        assert_eq!(fresh[s], 1.0, "{s} freshness: {fresh:?}");
        assert_eq!(integrity[s], 1.0, "{s} integrity: {integrity:?}");
        assert!((0.0..3600.0).contains(&age[s]), "{s} age {age:?}");
    }
    let restore = by_source(&reqs, "faultline.backup.restore.status");
    let duration = by_source(&reqs, "faultline.backup.restore.duration");
    for s in ["restic", "borg", "pg", "cmd"] {
        assert_eq!(restore[s], 1.0, "{s} restore: {restore:?}");
        assert!(duration[s] > 0.0, "{s} duration: {duration:?}");
    }
    assert_eq!(restore["slow"], 0.0);
    assert!(
        std::fs::read_dir(&scratch).unwrap().next().is_none(),
        "scratch space left behind"
    );
    assert!(agent.exit_status().is_none(), "{}", agent.stderr());
    let status = agent.terminate(Duration::from_secs(15)).await;
    assert_eq!(status.and_then(|s| s.code()), Some(0), "{}", agent.stderr());
}
