//! The real `faultline run` with a `backups:` config whose sources fail in every way the issue
//! names — a tool that hangs past its timeout, a wrong password, a missing binary, a missing
//! repository — next to a healthy one: the agent keeps running and exporting, the
//! `faultline.backup.*` metrics reach the test's OTLP receiver with the right status per
//! source and only the source and kind as attributes, and each check logs one event.

// A test binary: a panic *is* the failure report, so `expect` is how it reports.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::time::Duration;

use faultline_tests::backup::{Restic, require};
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
