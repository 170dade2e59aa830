//! `faultline backup check` against real restic and borg repositories, plain backup files and
//! command sources, each made by the test in a temp dir. Every test compares what faultline
//! says with what the tool itself says when run by hand, including on damaged repositories,
//! and restore tests must leave their scratch directory empty.

// A test binary: a panic *is* the failure report, so `expect` is how it reports.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use faultline_tests::backup::{self, Borg, CheckRun, Restic, backup_check, require, run, run_ok};
use faultline_tests::procfs::pids_with_argv;
use serde_json::Value;

fn restic_source(name: &str, r: &Restic, rpo: &str, extra: &str) -> String {
    format!(
        "  - name: {name}\n    kind: restic\n    repository: {}\n    password_file: {}\n    rpo: {rpo}\n{extra}",
        r.repo.display(),
        r.password_file.display()
    )
}

fn borg_source(name: &str, b: &Borg, rpo: &str, extra: &str) -> String {
    format!(
        "  - name: {name}\n    kind: borg\n    repository: {}\n    password_file: {}\n    rpo: {rpo}\n    env: {{BORG_BASE_DIR: {}}}\n{extra}",
        b.repo.display(),
        b.passphrase_file.display(),
        b.base.display()
    )
}

fn config(sources: &[String]) -> String {
    format!("backups:\n{}", sources.concat())
}

fn empty_dir(p: &Path) -> bool {
    std::fs::read_dir(p)
        .map(|mut d| d.next().is_none())
        .unwrap_or(true)
}

fn strs(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restic_fresh_backup_passes_and_inventory_agrees_with_restic() {
    if !require(&["restic"]) {
        return;
    }
    // Built before the backups, so that their age is not the build's duration.
    faultline_tests::agent::agent_binary();
    let r = Restic::init();
    r.backup();
    std::fs::write(r.data.join("more.txt"), "second backup adds this\n").unwrap();
    let newest = r.backup();
    let state = r.dir.path().join("state");
    let run = backup_check(
        &config(&[restic_source("app", &r, "1h", "")]),
        &state,
        &["--check", "freshness"],
    )
    .await;
    assert_eq!(run.code, Some(0), "{}\n{}", run.stdout, run.stderr);
    let res = run.result("app", "freshness");
    assert_eq!(res["status"], "healthy");
    // By hand: restic's own list and stats.
    let snaps: Value =
        serde_json::from_str(&run_ok(r.cmd().args(["snapshots", "--json"]))).unwrap();
    let stats: Value =
        serde_json::from_str(&run_ok(r.cmd().args(["stats", "--json", "latest"]))).unwrap();
    let inv = &res["inventory"];
    assert_eq!(
        inv["count"].as_u64().unwrap() as usize,
        snaps.as_array().unwrap().len()
    );
    assert_eq!(inv["newest_id"].as_str().unwrap()[..8], newest[..8]);
    assert_eq!(inv["newest_size"], stats["total_size"]);
    assert!(inv["age_seconds"].as_f64().unwrap() < 600.0);
    assert_eq!(inv["size_anomaly"], false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restic_backup_older_than_the_rpo_fails_freshness() {
    if !require(&["restic"]) {
        return;
    }
    let r = Restic::init();
    r.backup();
    let state = r.dir.path().join("state");
    let run = backup_check(
        &config(&[restic_source("app", &r, "1ms", "")]),
        &state,
        &["--check", "freshness"],
    )
    .await;
    assert_eq!(run.code, Some(1), "{}", run.stdout);
    let res = run.result("app", "freshness");
    assert_eq!(res["status"], "unhealthy");
    assert!(
        res["summary"]
            .as_str()
            .unwrap()
            .contains("older than the RPO"),
        "{res}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restic_empty_repository_is_unhealthy_not_silent() {
    if !require(&["restic"]) {
        return;
    }
    let r = Restic::init();
    let state = r.dir.path().join("state");
    let run = backup_check(
        &config(&[restic_source("app", &r, "1h", "")]),
        &state,
        &["--check", "freshness"],
    )
    .await;
    assert_eq!(run.code, Some(1));
    let res = run.result("app", "freshness");
    assert!(
        res["summary"].as_str().unwrap().contains("no backup found"),
        "{res}"
    );
    assert_eq!(res["inventory"]["count"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restic_deleted_or_truncated_pack_fails_integrity_with_restics_finding() {
    if !require(&["restic"]) {
        return;
    }
    for damage in ["delete", "truncate"] {
        let r = Restic::init();
        r.backup();
        let state = r.dir.path().join("state");
        let cfg = config(&[restic_source("app", &r, "1h", "")]);
        let ok = backup_check(&cfg, &state, &["--check", "integrity"]).await;
        assert_eq!(ok.code, Some(0), "intact repository: {}", ok.stdout);
        let pack = r
            .packs()
            .into_iter()
            .max_by_key(|p| std::fs::metadata(p).unwrap().len())
            .unwrap();
        let pack_id = pack.file_name().unwrap().to_string_lossy().into_owned();
        if damage == "delete" {
            std::fs::remove_file(&pack).unwrap();
        } else {
            std::fs::OpenOptions::new()
                .write(true)
                .open(&pack)
                .unwrap()
                .set_len(100)
                .unwrap();
        }
        let bad = backup_check(&cfg, &state, &["--check", "integrity"]).await;
        assert_eq!(bad.code, Some(1), "{damage}: {}", bad.stdout);
        let res = bad.result("app", "integrity");
        assert_eq!(res["status"], "unhealthy");
        let findings = strs(&res["integrity"]["findings"]).join("\n");
        let expected = if damage == "delete" {
            "does not exist"
        } else {
            "unexpected file size"
        };
        assert!(
            findings.contains(expected) && findings.contains(&pack_id[..16]),
            "{damage}: {findings}"
        );
        // By hand, restic says the same.
        let by_hand = backup::run(r.cmd().arg("check"));
        assert!(!by_hand.status.success());
        let stderr = String::from_utf8_lossy(&by_hand.stderr);
        assert!(
            stderr.contains(expected) && stderr.contains(&pack_id[..16]),
            "{stderr}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restic_read_data_rotation_covers_every_subset_across_restarts() {
    if !require(&["restic"]) {
        return;
    }
    let r = Restic::init();
    r.backup();
    let state = r.dir.path().join("state");
    let cfg = config(&[restic_source(
        "app",
        &r,
        "1h",
        "    integrity: {read_data_subsets: 3}\n",
    )]);
    let mut seen = Vec::new();
    // Each run is a new process: the position must come from the state file.
    for _ in 0..4 {
        let run = backup_check(&cfg, &state, &["--check", "integrity"]).await;
        assert_eq!(run.code, Some(0), "{}", run.stdout);
        seen.push(
            run.result("app", "integrity")["integrity"]["subset"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    assert_eq!(seen, ["1/3", "2/3", "3/3", "1/3"]);
    let st: Value =
        serde_json::from_str(&std::fs::read_to_string(state.join("backup/app.json")).unwrap())
            .unwrap();
    assert_eq!(st["next_subset"], 2);
    assert_eq!(st["last_subset"], "1/3");
}

/// A restic repository backed up after `prepare` ran on its data (with the manifest taken
/// before), then `faultline backup check --check restore` with an RTO line (or none) and the
/// expected paths `hello.txt` and `second_path`. Returns the run, the scratch directory and the
/// repository (whose temp dir holds the scratch directory: keep it alive while checking).
async fn restic_restore_run(
    prepare: impl FnOnce(&Restic),
    rto: &str,
    second_path: &str,
) -> (CheckRun, PathBuf, Restic) {
    let r = Restic::init();
    let manifest = r.dir.path().join("SHA256SUMS");
    std::fs::write(&manifest, backup::manifest_of(&r.data)).unwrap();
    prepare(&r);
    r.backup();
    let state = r.dir.path().join("state");
    let scratch = r.dir.path().join("scratch");
    let extra = format!(
        "{rto}    restore:\n      scratch_dir: {}\n      manifest: {}\n      expect_paths: [{}/hello.txt, {}/{second_path}]\n",
        scratch.display(),
        manifest.display(),
        r.data.display(),
        r.data.display()
    );
    let run = backup_check(
        &config(&[restic_source("app", &r, "1h", &extra)]),
        &state,
        &["--check", "restore"],
    )
    .await;
    (run, scratch, r)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restic_restore_test_restores_verifies_times_and_cleans_up() {
    if !require(&["restic", "sha256sum"]) {
        return;
    }
    let (run, scratch, _repo) = restic_restore_run(|_| {}, "    rto: 5m\n", "sub").await;
    assert_eq!(run.code, Some(0), "{}\n{}", run.stdout, run.stderr);
    let d = &run.result("app", "restore")["restore"];
    assert!(d["restore_seconds"].as_f64().unwrap() > 0.0, "{d}");
    assert!(d["verify_seconds"].as_f64().unwrap() > 0.0, "{d}");
    assert_eq!(d["restored_files"], 3);
    let verified = strs(&d["verified"]).join("\n");
    assert!(
        verified.contains("sha256 of 3 of 3 manifest files match"),
        "{verified}"
    );
    assert!(verified.contains("hello.txt present"), "{verified}");
    assert_eq!(d["scratch_cleaned"], true);
    assert!(empty_dir(&scratch), "scratch space left behind");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restic_restore_with_wrong_content_fails_and_still_cleans_up() {
    if !require(&["restic", "sha256sum"]) {
        return;
    }
    // The data changes after the manifest was taken: the backup holds other content.
    let tamper = |r: &Restic| std::fs::write(r.data.join("hello.txt"), "tampered\n").unwrap();
    let (run, scratch, _repo) = restic_restore_run(tamper, "", "not-there").await;
    assert_eq!(run.code, Some(1), "{}", run.stdout);
    let res = run.result("app", "restore");
    let problems = strs(&res["restore"]["problems"]).join("\n");
    assert!(
        problems.contains("sha256 mismatch") && problems.contains("hello.txt"),
        "{problems}"
    );
    assert!(problems.contains("not-there is missing"), "{problems}");
    assert_eq!(res["restore"]["scratch_cleaned"], true);
    assert!(
        empty_dir(&scratch),
        "scratch space left behind after a failed test"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_password_missing_repository_and_missing_binary_are_clear_and_unhealthy() {
    if !require(&["restic"]) {
        return;
    }
    let r = Restic::init();
    r.backup();
    let wrong = r.dir.path().join("wrong.pass");
    std::fs::write(&wrong, "not the password\n").unwrap();
    let sources = [
        format!(
            "  - name: wrongpw\n    kind: restic\n    repository: {}\n    password_file: {}\n    rpo: 1h\n",
            r.repo.display(),
            wrong.display()
        ),
        format!(
            "  - name: norepo\n    kind: restic\n    repository: {}/nope\n    password_file: {}\n    rpo: 1h\n",
            r.dir.path().display(),
            r.password_file.display()
        ),
        format!(
            "  - name: nobinary\n    kind: restic\n    binary: /nonexistent/bin/restic\n    repository: {}\n    password_file: {}\n    rpo: 1h\n",
            r.repo.display(),
            r.password_file.display()
        ),
    ];
    let state = r.dir.path().join("state");
    let run = backup_check(&config(&sources), &state, &["--check", "freshness"]).await;
    assert_eq!(run.code, Some(1), "{}", run.stdout);
    let err = |s: &str| {
        let res = run.result(s, "freshness");
        assert_eq!(res["status"], "unhealthy", "{res}");
        res["error"].as_str().unwrap().to_owned()
    };
    assert!(
        err("wrongpw").contains("wrong password"),
        "{}",
        err("wrongpw")
    );
    assert!(
        err("norepo").contains("repository does not exist"),
        "{}",
        err("norepo")
    );
    assert!(
        err("nobinary").contains("/nonexistent/bin/restic: not found"),
        "{}",
        err("nobinary")
    );
    // The table format says the same to a person.
    let cfg = state.join("faultline.yaml");
    let out = faultline_tests::run_cli(
        [
            "--state-dir",
            state.to_str().unwrap(),
            "backup",
            "check",
            "--config",
            cfg.to_str().unwrap(),
            "--check",
            "freshness",
        ],
        Duration::from_secs(60),
    )
    .await;
    let table = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        table.contains("wrongpw")
            && table.contains("unhealthy")
            && table.contains("stderr: Fatal: wrong password"),
        "{table}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn borg_freshness_and_inventory_agree_with_borg_and_old_backups_fail() {
    if !require(&["borg"]) {
        return;
    }
    // Built before the backups, so that their age is not the build's duration.
    faultline_tests::agent::agent_binary();
    let b = Borg::init();
    b.create("first");
    b.create("second");
    let state = b.dir.path().join("state");
    let yaml = config(&[
        borg_source("files", &b, "1h", ""),
        borg_source("stale", &b, "1ms", ""),
    ]);
    let run = backup_check(&yaml, &state, &["--check", "freshness"]).await;
    assert_eq!(run.code, Some(1), "{}\n{}", run.stdout, run.stderr);
    let fresh = run.result("files", "freshness");
    assert_eq!(fresh["status"], "healthy", "{fresh}");
    let listed: Value = serde_json::from_str(&run_ok(
        b.cmd()
            .arg("list")
            .arg("--json")
            .arg(&b.repo)
            .env("TZ", "UTC"),
    ))
    .unwrap();
    let info: Value = serde_json::from_str(&run_ok(
        b.cmd()
            .args(["info", "--json", "--last", "1"])
            .arg(&b.repo)
            .env("TZ", "UTC"),
    ))
    .unwrap();
    let inv = &fresh["inventory"];
    assert_eq!(
        inv["count"].as_u64().unwrap() as usize,
        listed["archives"].as_array().unwrap().len()
    );
    assert_eq!(inv["newest_id"], "second");
    assert_eq!(
        inv["newest_size"],
        info["archives"][0]["stats"]["original_size"]
    );
    // borg prints UTC under TZ=UTC: the newest end time read by hand, as UTC, is faultline's.
    let end = info["archives"][0]["end"].as_str().unwrap();
    assert_eq!(
        inv["newest_time_utc"].as_str().unwrap(),
        format!("{}Z", &end[..19])
    );
    assert!(
        inv["age_seconds"].as_f64().unwrap() < 600.0,
        "ages must not be shifted by a zone: {inv}"
    );
    assert_eq!(run.result("stale", "freshness")["status"], "unhealthy");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn borg_damaged_segment_fails_integrity_with_borgs_finding() {
    if !require(&["borg"]) {
        return;
    }
    let b = Borg::init();
    b.create("only");
    let state = b.dir.path().join("state");
    let cfg = config(&[borg_source("files", &b, "1h", "")]);
    let ok = backup_check(&cfg, &state, &["--check", "integrity"]).await;
    assert_eq!(
        ok.code,
        Some(0),
        "intact repository: {}\n{}",
        ok.stdout,
        ok.stderr
    );
    // Flip bytes in the middle of the largest data segment.
    let seg = b.segments().into_iter().next().unwrap();
    let mut bytes = std::fs::read(&seg).unwrap();
    let mid = bytes.len() / 2;
    for x in &mut bytes[mid..mid + 64] {
        *x ^= 0xff;
    }
    std::fs::write(&seg, bytes).unwrap();
    let bad = backup_check(&cfg, &state, &["--check", "integrity"]).await;
    assert_eq!(bad.code, Some(1), "{}", bad.stdout);
    let res = bad.result("files", "integrity");
    let findings = strs(&res["integrity"]["findings"]).join("\n");
    assert!(
        findings.contains("Data integrity error") || findings.contains("checksum mismatch"),
        "{findings}"
    );
    let by_hand = run(b.cmd().arg("check").arg(&b.repo));
    assert!(
        !by_hand.status.success(),
        "borg check by hand must fail too"
    );
    let stderr = String::from_utf8_lossy(&by_hand.stderr);
    let first = strs(&res["integrity"]["findings"])[0].clone();
    assert!(
        stderr
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
            .contains(&first),
        "{first} not in {stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn borg_restore_test_verifies_and_wrong_passphrase_is_unhealthy() {
    if !require(&["borg", "sha256sum"]) {
        return;
    }
    let b = Borg::init();
    let manifest = b.dir.path().join("SHA256SUMS");
    std::fs::write(&manifest, backup::manifest_of(&b.data)).unwrap();
    b.create("nightly");
    let state = b.dir.path().join("state");
    let scratch = b.dir.path().join("scratch");
    let extra = format!(
        "    restore: {{scratch_dir: {}, manifest: {}, sample: 2, expect_paths: [{}/sub/numbers.csv]}}\n",
        scratch.display(),
        manifest.display(),
        b.data.display()
    );
    let wrong = b.dir.path().join("wrong");
    std::fs::write(&wrong, "nope\n").unwrap();
    let bad_pw = format!(
        "  - name: badpw\n    kind: borg\n    repository: {}\n    password_file: {}\n    rpo: 1h\n    env: {{BORG_BASE_DIR: {}}}\n",
        b.repo.display(),
        wrong.display(),
        b.base.display()
    );
    let run = backup_check(
        &config(&[borg_source("files", &b, "1h", &extra), bad_pw]),
        &state,
        &[],
    )
    .await;
    assert_eq!(run.code, Some(1), "{}", run.stdout);
    let d = &run.result("files", "restore")["restore"];
    assert_eq!(run.result("files", "restore")["status"], "healthy", "{d}");
    assert!(
        strs(&d["verified"])
            .join("\n")
            .contains("sha256 of 2 of 3 manifest files match"),
        "{d}"
    );
    assert!(d["restore_seconds"].as_f64().unwrap() > 0.0);
    assert!(empty_dir(&scratch));
    assert_eq!(run.result("files", "integrity")["status"], "healthy");
    let bad = run.result("badpw", "freshness");
    assert_eq!(bad["status"], "unhealthy");
    assert!(
        bad["error"].as_str().unwrap().contains("wrong password"),
        "{bad}"
    );
    assert!(
        bad["stderr"].as_str().unwrap().contains("is incorrect"),
        "{bad}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_source_checks_manifest_and_restores_a_tarball() {
    if !require(&["tar", "sha256sum"]) {
        return;
    }
    let dir = backup::tempdir("fl-files-");
    backup::write_data(dir.path());
    let dumps = dir.path().join("dumps");
    std::fs::create_dir(&dumps).unwrap();
    run_ok(
        Command::new("tar")
            .arg("-czf")
            .arg(dumps.join("app-1.tar.gz"))
            .arg("-C")
            .arg(dir.path())
            .arg("data"),
    );
    std::fs::write(dumps.join("notes.txt"), "not a backup\n").unwrap();
    let sums = run_ok(
        Command::new("sha256sum")
            .arg("app-1.tar.gz")
            .current_dir(&dumps),
    );
    let manifest = dumps.join("SHA256SUMS");
    std::fs::write(&manifest, &sums).unwrap();
    let inner_manifest = dir.path().join("inner.sums");
    std::fs::write(
        &inner_manifest,
        run_ok(
            Command::new("sha256sum")
                .args(["data/hello.txt", "data/sub/blob.bin"])
                .current_dir(dir.path()),
        ),
    )
    .unwrap();
    let scratch = dir.path().join("scratch");
    let yaml = format!(
        "backups:\n  - name: dumps\n    kind: files\n    path: {}\n    glob: \"*.tar.gz\"\n    manifest: {}\n    rpo: 1h\n    restore: {{scratch_dir: {}, manifest: {}, expect_paths: [data/sub/numbers.csv]}}\n",
        dumps.display(),
        manifest.display(),
        scratch.display(),
        inner_manifest.display()
    );
    let state = dir.path().join("state");
    let ok = backup_check(&yaml, &state, &[]).await;
    assert_eq!(ok.code, Some(0), "{}\n{}", ok.stdout, ok.stderr);
    let inv = &ok.result("dumps", "freshness")["inventory"];
    assert_eq!(inv["count"], 1, "the glob must leave notes.txt out: {inv}");
    assert_eq!(
        inv["newest_size"].as_u64().unwrap(),
        std::fs::metadata(dumps.join("app-1.tar.gz")).unwrap().len()
    );
    assert!(
        strs(&ok.result("dumps", "restore")["restore"]["verified"])
            .join("\n")
            .contains("sha256 of 2 of 2")
    );
    assert!(empty_dir(&scratch));
    // Corrupt the dump: the manifest check fails, as sha256sum -c by hand does.
    let mut bytes = std::fs::read(dumps.join("app-1.tar.gz")).unwrap();
    let n = bytes.len();
    bytes[n / 2] ^= 0x55;
    std::fs::write(dumps.join("app-1.tar.gz"), bytes).unwrap();
    let bad = backup_check(&yaml, &state, &["--check", "integrity"]).await;
    assert_eq!(bad.code, Some(1));
    let findings = strs(&bad.result("dumps", "integrity")["integrity"]["findings"]).join("\n");
    assert!(
        findings.contains("sha256 mismatch for app-1.tar.gz"),
        "{findings}"
    );
    assert!(
        !run(Command::new("sha256sum")
            .args(["-c", "SHA256SUMS"])
            .current_dir(&dumps))
        .status
        .success()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn command_sources_are_judged_and_a_hanging_tool_is_killed_at_its_timeout() {
    let dir = backup::tempdir("fl-cmd-");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    // A duration no other process on the machine uses, to find leftovers by name.
    let hang = format!("60.{}", std::process::id());
    let yaml = format!(
        "backups:\n\
         \x20 - name: hangs\n    kind: command\n    list_command: [sh, -c, \"sleep {hang} & sleep {hang}; echo []\"]\n    rpo: 1h\n    freshness: {{timeout: 1s}}\n\
         \x20 - name: good\n    kind: command\n    list_command: [sh, -c, 'echo \"[{{\\\"time\\\": {now}, \\\"size\\\": 10, \\\"id\\\": \\\"n1\\\"}}]\"']\n    check_command: [\"true\"]\n    rpo: 1h\n\
         \x20 - name: badcheck\n    kind: command\n    list_command: [sh, -c, 'echo \"[]\"']\n    check_command: [sh, -c, 'echo corrupt chunk 7 >&2; exit 3']\n    rpo: 1h\n"
    );
    let state = dir.path().join("state");
    let hung_argv = ["sleep", hang.as_str()];
    // Built first: neither the stopwatch nor the watcher below may run during a build.
    faultline_tests::agent::agent_binary();
    let started = Instant::now();
    // While the check runs, both sleeps (the wrapper's foreground child and its background
    // grandchild) must be seen alive: this proves the leftover search below can find them.
    let (run, seen_alive) = tokio::join!(
        backup_check(&yaml, &state, &[]),
        faultline_tests::eventually(Duration::from_secs(30), || {
            pids_with_argv(&hung_argv).len() == 2
        })
    );
    assert!(
        seen_alive,
        "the hanging tool's two sleeps were never seen running"
    );
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "the hanging tool was not killed at 1s"
    );
    assert_eq!(run.code, Some(1), "{}\n{}", run.stdout, run.stderr);
    let hung = run.result("hangs", "freshness");
    assert_eq!(hung["status"], "unhealthy");
    assert!(
        hung["error"]
            .as_str()
            .unwrap()
            .contains("did not finish within 1s"),
        "{hung}"
    );
    assert!(hung["duration_seconds"].as_f64().unwrap() < 10.0);
    assert_eq!(run.result("good", "freshness")["status"], "healthy");
    assert_eq!(
        run.result("good", "freshness")["inventory"]["newest_id"],
        "n1"
    );
    assert_eq!(run.result("good", "integrity")["status"], "healthy");
    assert_eq!(run.result("hangs", "integrity")["status"], "skipped");
    let bad = run.result("badcheck", "integrity");
    assert_eq!(bad["status"], "unhealthy");
    assert!(
        strs(&bad["integrity"]["findings"])
            .join("\n")
            .contains("corrupt chunk 7"),
        "{bad}"
    );
    assert!(
        run.result("badcheck", "freshness")["summary"]
            .as_str()
            .unwrap()
            .contains("no backup found")
    );
    // Neither the wrapper's child nor its background grandchild survives: the whole process
    // group was killed. SIGKILL takes effect asynchronously, so allow a moment for it; a
    // survivor would live for its full 60 s and fail this.
    assert!(
        faultline_tests::eventually(Duration::from_secs(5), || pids_with_argv(&hung_argv)
            .is_empty())
        .await,
        "a killed tool left its processes behind: {:?}",
        pids_with_argv(&hung_argv)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configuration_errors_exit_2_naming_the_field() {
    let dir = backup::tempdir("fl-cfg-");
    let state = dir.path().join("state");
    let run = backup_check(
        "backups:\n  - name: a\n    kind: restic\n    password_file: /p\n    rpo: 1h\n",
        &state,
        &[],
    )
    .await;
    assert_eq!(run.code, Some(2));
    assert!(
        run.stderr.contains("backups[0].repository"),
        "{}",
        run.stderr
    );
    let run = backup_check(
        "backups:\n  - name: a\n    kind: files\n    path: /tmp\n    rpo: 1h\n",
        &state,
        &["--source", "zzz"],
    )
    .await;
    assert_eq!(run.code, Some(2));
    assert!(
        run.stderr.contains("no source named \"zzz\""),
        "{}",
        run.stderr
    );
    let run = backup_check("interval: 10s\n", &state, &[]).await;
    assert_eq!(run.code, Some(2));
    assert!(
        run.stderr.contains("no backup sources configured"),
        "{}",
        run.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_is_refused_when_the_scratch_filesystem_lacks_room() {
    if !require(&["restic"])
        || !faultline_tests::chaos::require(
            faultline_tests::chaos::is_root(),
            "root (to mount a tmpfs)",
        )
    {
        return;
    }
    let r = Restic::init();
    r.backup();
    // 1 MiB free: less than the backup's size + 10 % + 1 MiB the test requires.
    let small = faultline_tests::chaos::Tmpfs::mount("1m");
    let state = r.dir.path().join("state");
    let extra = format!("    restore: {{scratch_dir: {}}}\n", small.path().display());
    let run = backup_check(
        &config(&[restic_source("app", &r, "1h", &extra)]),
        &state,
        &["--check", "restore"],
    )
    .await;
    assert_eq!(run.code, Some(1), "{}\n{}", run.stdout, run.stderr);
    let res = run.result("app", "restore");
    let err = res["error"].as_str().unwrap();
    assert!(
        err.contains("refused") && err.contains("bytes free"),
        "{res}"
    );
    let d = &res["restore"];
    assert!(
        d["free_bytes"].as_u64().unwrap() < d["required_bytes"].as_u64().unwrap(),
        "{d}"
    );
    assert!(
        d["restore_seconds"].is_null(),
        "nothing may be restored: {d}"
    );
    assert!(
        empty_dir(small.path()),
        "the refused test wrote into the tmpfs"
    );
}

/// A lock holder started in a process group of its own, so that dropping the guard ends it
/// and everything it started (borg's `sleep`) also when an assert fails.
struct GroupGuard(std::process::Child);

impl GroupGuard {
    fn spawn(cmd: &mut Command) -> Self {
        use std::os::unix::process::CommandExt as _;
        Self(cmd.process_group(0).spawn().unwrap())
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        let pgid = nix::unistd::Pid::from_raw(-(self.0.id() as i32));
        let _ = nix::sys::signal::kill(pgid, nix::sys::signal::Signal::SIGKILL);
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restic_repository_locked_by_a_running_backup_is_reported_as_locked() {
    if !require(&["restic"]) {
        return;
    }
    let r = Restic::init();
    r.backup();
    // A backup reading a stdin that never ends holds its (non-exclusive) lock for as long as
    // the guard lives; `restic check` needs the exclusive lock and cannot get it.
    let holder = GroupGuard::spawn(
        r.cmd()
            .args([
                "backup",
                "--stdin",
                "--stdin-filename",
                "held.txt",
                "--quiet",
            ])
            .stdin(std::process::Stdio::piped()),
    );
    let locks = r.repo.join("locks");
    assert!(
        faultline_tests::eventually(Duration::from_secs(20), || std::fs::read_dir(&locks)
            .is_ok_and(|mut d| d.next().is_some()))
        .await,
        "restic backup --stdin never took its lock"
    );
    let state = r.dir.path().join("state");
    let run = backup_check(
        &config(&[restic_source("app", &r, "1h", "")]),
        &state,
        &["--check", "integrity"],
    )
    .await;
    // By hand, while the lock is still held: restic itself says so.
    let by_hand = backup::run(r.cmd().arg("check"));
    drop(holder);
    let by_hand_err = String::from_utf8_lossy(&by_hand.stderr).to_lowercase();
    assert!(
        !by_hand.status.success() && by_hand_err.contains("lock"),
        "restic check by hand should fail on the lock: {by_hand_err}"
    );
    assert_eq!(run.code, Some(1), "{}\n{}", run.stdout, run.stderr);
    let res = run.result("app", "integrity");
    assert_eq!(res["status"], "unhealthy");
    let err = res["error"].as_str().unwrap();
    assert!(
        err.contains("repository is locked by another process"),
        "the lock must be named, not a generic failure: {res}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn borg_repository_locked_by_another_process_is_reported_as_locked() {
    if !require(&["borg"]) {
        return;
    }
    let b = Borg::init();
    b.create("only");
    // Another borg holds the repository's exclusive lock for the whole check.
    let holder = GroupGuard::spawn(b.cmd().arg("with-lock").arg(&b.repo).args(["sleep", "120"]));
    assert!(
        faultline_tests::eventually(Duration::from_secs(20), || b
            .repo
            .join("lock.exclusive")
            .exists())
        .await,
        "borg with-lock never took the lock"
    );
    let state = b.dir.path().join("state");
    let run = backup_check(
        &config(&[borg_source("files", &b, "1h", "")]),
        &state,
        &["--check", "integrity"],
    )
    .await;
    drop(holder);
    assert_eq!(run.code, Some(1), "{}\n{}", run.stdout, run.stderr);
    let res = run.result("files", "integrity");
    assert_eq!(res["status"], "unhealthy");
    let err = res["error"].as_str().unwrap();
    assert!(
        err.contains("repository is locked by another process"),
        "the lock must be named, not a generic failure: {res}"
    );
    assert!(
        res["stderr"]
            .as_str()
            .unwrap_or("")
            .to_lowercase()
            .contains("lock"),
        "{res}"
    );
}
