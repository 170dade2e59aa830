//! The systemd unit as shipped: `systemd-analyze verify` accepts it without a warning,
//! `systemd-analyze security --offline=true` scores it (the score is printed and recorded in
//! docs/DEPLOY.md; the test holds it at "OK" or better), the sysusers and tmpfiles snippets
//! create the user and its state directory, and the real agent speaks the notification protocol the unit relies on
//! (`Type=notify`, `WatchdogSec=`): READY=1, WATCHDOG=1 at half the timeout, STOPPING=1.
//!
//! The checks run against a scratch root (`--root`) holding the unit, the system's own unit
//! files (for the targets it orders after) and the real `faultline` binary at the path
//! `ExecStart=` names, so nothing on the machine is touched.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers: a panic is the failure report

use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use faultline_tests::deploy::{deploy_dir, tool_available};
use faultline_tests::{Agent, agent_binary};

fn unit_file() -> PathBuf {
    deploy_dir().join("systemd/faultline.service")
}

fn systemd_analyze(test: &str) -> bool {
    tool_available(
        test,
        "systemd-analyze (Debian package systemd)",
        Command::new("systemd-analyze").arg("--version"),
    )
}

/// A scratch root with the unit, the host's unit files and the agent binary.
fn scratch_root() -> tempfile::TempDir {
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    std::fs::create_dir_all(r.join("usr/bin")).unwrap();
    std::fs::create_dir_all(r.join("etc/systemd/system")).unwrap();
    std::fs::create_dir_all(r.join("usr/lib/systemd")).unwrap();
    std::fs::copy(agent_binary(), r.join("usr/bin/faultline")).unwrap();
    std::fs::copy(unit_file(), r.join("etc/systemd/system/faultline.service")).unwrap();
    let system_units = ["/usr/lib/systemd/system", "/lib/systemd/system"]
        .into_iter()
        .map(Path::new)
        .find(|p| p.join("multi-user.target").exists())
        .expect("the system's unit directory (multi-user.target)");
    let status = Command::new("cp")
        .arg("-r")
        .arg(system_units)
        .arg(r.join("usr/lib/systemd/"))
        .status()
        .unwrap();
    assert!(status.success());
    root
}

#[test]
fn systemd_analyze_verify_accepts_the_unit_without_warnings() {
    if !systemd_analyze("systemd_analyze_verify") {
        return;
    }
    let root = scratch_root();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(format!("--root={}", root.path().display()))
        .arg("faultline.service")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "verify failed:\n{stderr}");
    // verify exits 0 on unknown keys; a warning is a mistake in the unit all the same.
    assert!(
        stderr.trim().is_empty(),
        "verify warned about the unit:\n{stderr}"
    );

    // It does catch mistakes: a misspelled key is reported.
    let unit = root.path().join("etc/systemd/system/faultline.service");
    let text = std::fs::read_to_string(&unit).unwrap();
    std::fs::write(&unit, text.replace("Restart=always", "Restartt=always")).unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(format!("--root={}", root.path().display()))
        .arg("faultline.service")
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Restartt"),
        "verify did not notice a misspelled key"
    );
}

/// The exposure score (0 = locked down, 10 = unprotected) of the shipped unit.
fn exposure(root: &Path) -> (f64, String) {
    let out = Command::new("systemd-analyze")
        .args(["security", "--offline=true", "--no-pager"])
        .arg(format!("--root={}", root.display()))
        .arg("faultline.service")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let line = text
        .lines()
        .find(|l| l.contains("Overall exposure level for faultline.service"))
        .unwrap_or_else(|| panic!("no overall score in:\n{text}"));
    let score: f64 = line
        .rsplit(':')
        .next()
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("cannot read the score in {line:?}"));
    (score, text)
}

#[test]
fn systemd_analyze_security_scores_the_unit_ok() {
    if !systemd_analyze("systemd_analyze_security") {
        return;
    }
    let root = scratch_root();
    let (score, text) = exposure(root.path());
    eprintln!("systemd-analyze security: faultline.service exposure {score}");
    // systemd's scale: 0 = locked down, 10 = unprotected (systemd 252 labels 2.6 "OK").
    // docs/DEPLOY.md records the measured 2.6 (2026-12-06: the network faults' CAP_NET_ADMIN,
    // CAP_SYS_ADMIN, CAP_SYS_PTRACE and net namespaces added 0.8 to the earlier 1.8); the
    // bound is that plus 0.3, so one dropped hardening directive of weight ≥ 0.3 fails here.
    // Every item still open is explained in docs/DEPLOY.md.
    const RECORDED: f64 = 2.6;
    assert!(
        score <= RECORDED + 0.3,
        "exposure {score} is worse than the recorded {RECORDED} (+0.3):\n{text}"
    );
    for hardened in [
        "NoNewPrivileges=",
        "ProtectSystem=",
        "PrivateTmp=",
        "SystemCallFilter=~@privileged",
    ] {
        let line = text
            .lines()
            .find(|l| l.contains(hardened))
            .unwrap_or_else(|| panic!("{hardened} not assessed:\n{text}"));
        assert!(line.contains('✓'), "{hardened} not in force: {line}");
    }
}

#[test]
fn sysusers_snippet_creates_the_faultline_user() {
    if !tool_available(
        "sysusers_snippet",
        "systemd-sysusers (Debian package systemd)",
        Command::new("systemd-sysusers").arg("--version"),
    ) {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(root.path().join("etc")).unwrap();
    let out = Command::new("systemd-sysusers")
        .arg(format!("--root={}", root.path().display()))
        .arg(deploy_dir().join("systemd/faultline.sysusers.conf"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let passwd = std::fs::read_to_string(root.path().join("etc/passwd")).unwrap();
    let line = passwd
        .lines()
        .find(|l| l.starts_with("faultline:"))
        .unwrap_or_else(|| panic!("no faultline user in:\n{passwd}"));
    assert!(
        line.ends_with(":/var/lib/faultline:/usr/sbin/nologin"),
        "{line}"
    );

    let uid: u32 = line.split(':').nth(2).unwrap().parse().unwrap();

    // The tmpfiles snippet then creates the state directory for that user in the same root.
    let out = Command::new("systemd-tmpfiles")
        .arg(format!("--root={}", root.path().display()))
        .arg("--create")
        .arg(deploy_dir().join("systemd/faultline.tmpfiles.conf"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let state = std::fs::metadata(root.path().join("var/lib/faultline")).unwrap();
    assert!(state.is_dir());
    assert_eq!(state.uid(), uid);
    assert_eq!(state.permissions().mode() & 0o7777, 0o750);
}

fn recv_until(sock: &UnixDatagram, want: &str, timeout: Duration, seen: &mut Vec<String>) {
    let deadline = Instant::now() + timeout;
    let mut buf = [0u8; 512];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "no {want:?} within {timeout:?}; got {seen:?}"
        );
        sock.set_read_timeout(Some(left)).unwrap();
        match sock.recv(&mut buf) {
            Ok(n) => {
                let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
                let hit = msg.lines().any(|l| l == want);
                seen.push(msg);
                if hit {
                    return;
                }
            }
            Err(e) => panic!("no {want:?} within {timeout:?} ({e}); got {seen:?}"),
        }
    }
}

#[tokio::test]
async fn agent_sends_ready_feeds_the_watchdog_and_says_stopping() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&path).unwrap();
    let mut agent = Agent::start_with_env(
        "interval: 1s\nexport:\n  otlp:\n    enabled: false\n",
        &[
            ("NOTIFY_SOCKET", path.to_str().unwrap()),
            // 600 ms watchdog: pings every 300 ms.
            ("WATCHDOG_USEC", "600000"),
        ],
    );
    let sock = tokio::task::spawn_blocking(move || {
        let mut seen = Vec::new();
        recv_until(&sock, "READY=1", Duration::from_secs(30), &mut seen);
        let first = Instant::now();
        for _ in 0..4 {
            recv_until(&sock, "WATCHDOG=1", Duration::from_secs(5), &mut seen);
        }
        // Four pings 300 ms apart after READY (the first at once): about 0.9 s; bounds wide
        // enough for a loaded machine, tight enough to tell 300 ms from 10 s.
        let took = first.elapsed();
        assert!(
            took >= Duration::from_millis(700) && took < Duration::from_secs(4),
            "{took:?} {seen:?}"
        );
        sock
    })
    .await
    .unwrap();
    let status = agent.terminate(Duration::from_secs(15)).await;
    assert!(status.is_some_and(|s| s.success()), "{status:?}");
    let mut seen = Vec::new();
    recv_until(&sock, "STOPPING=1", Duration::from_secs(1), &mut seen);
}
