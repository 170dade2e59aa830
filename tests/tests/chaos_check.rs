//! "Check that it is in effect": [`faultline_chaos::Fault::check`] as the engine runs it —
//! right after apply, on [`Engine::check`] and for `faultline fault list` — each answer
//! compared with what the test sees itself (`/proc/<pid>/stat`, the tmpfs's files) after
//! changing the world behind the fault's back:
//!
//! - process-pause: in effect while the target is stopped (T); not once the test SIGCONTs it;
//! - disk-fill: in effect while the fill file is there; not once the test deletes it;
//! - cpu-stress and memory-stress: in effect while the helper runs; not once the test
//!   SIGKILLs it (the helper is the test's engine's own child);
//! - a pause that cannot take (the target sits in a cgroup the test froze, where SIGSTOP
//!   does not stop it) fails the inject: it is reverted, the journal is empty, and the audit
//!   says plan, apply, check (error), revert;
//! - `faultline fault list` shows each journaled fault's check, and changes with the world.
//!
//! Safety: only the test's own children are signalled, only its own tmpfs filled, only its
//! own cgroup frozen; fixtures undo everything on drop.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use std::time::Duration;

use faultline_chaos::{
    ActiveFault, Audit, AuditAction, AuditEvent, ChaosConfig, EffectState, Engine, Env, FaultError,
    FaultSpec, Journal, Requester,
};
use faultline_tests::chaos::{
    HelperWatch, Scratch, TestCgroup, Tmpfs, Victim, is_root, require, running, runtime, state,
    wait_until,
};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::sync::broadcast;

const T: Duration = Duration::from_secs(10);

/// An engine journaling in a temp dir, helpers from the real binary's worker mode (checked
/// for strays when the fixture goes).
struct Fixture {
    _helpers: HelperWatch,
    _dir: tempfile::TempDir,
    engine: Engine,
    audit: broadcast::Receiver<AuditEvent>,
}

impl Fixture {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut helpers = HelperWatch::new(dir.path());
        let worker = helpers.worker_command();
        let engine = Engine::new(
            ChaosConfig {
                disk_free_floor: "10%".parse().unwrap(),
                ..ChaosConfig::default()
            },
            Env::detect("/proc".into(), worker),
            Journal::open(dir.path()).unwrap(),
            Audit::default(),
        );
        let audit = engine.audit().subscribe();
        Fixture {
            _helpers: helpers,
            _dir: dir,
            engine,
            audit,
        }
    }

    async fn inject(&self, json: &str) -> Result<ActiveFault, FaultError> {
        let spec: FaultSpec = serde_json::from_str(json).unwrap();
        self.engine.inject(spec, Requester::cli()).await
    }

    /// The state [`Engine::check`] reports now.
    async fn check(&self, f: &ActiveFault) -> EffectState {
        let r = self
            .engine
            .check(&f.id, Requester::agent("test"))
            .await
            .unwrap();
        r.effect
            .as_ref()
            .unwrap_or_else(|| panic!("check could not look: {r}"))
            .state
    }

    fn audited(&mut self) -> Vec<AuditEvent> {
        let mut out = Vec::new();
        while let Ok(e) = self.audit.try_recv() {
            out.push(e);
        }
        out
    }
}

fn after_apply(f: &ActiveFault) -> EffectState {
    f.check
        .as_ref()
        .and_then(|c| c.effect.as_ref())
        .map(|e| e.state)
        .expect("the engine checks after apply")
}

#[test]
fn process_pause_check_sees_the_stop_and_a_sigcont_behind_its_back() {
    let rt = runtime();
    let mut fx = Fixture::new();
    let victim = Victim::sleep();
    let f = rt
        .block_on(fx.inject(&format!(
            r#"{{"kind":"process-pause","pid":{},"duration":"60s"}}"#,
            victim.pid()
        )))
        .unwrap();
    assert_eq!(state(victim.pid()), Some('T'));
    assert_eq!(after_apply(&f), EffectState::InEffect);
    assert_eq!(rt.block_on(fx.check(&f)), EffectState::InEffect);
    kill(Pid::from_raw(victim.pid()), Signal::SIGCONT).unwrap();
    assert!(wait_until(T, || matches!(
        state(victim.pid()),
        Some('S' | 'R')
    )));
    assert_eq!(rt.block_on(fx.check(&f)), EffectState::NotInEffect);
    // Every check was audited: ok while in effect, an error once not.
    let checks: Vec<Result<String, String>> = fx
        .audited()
        .into_iter()
        .filter(|e| e.action == AuditAction::Check)
        .map(|e| e.outcome)
        .collect();
    assert_eq!(checks.len(), 3, "{checks:?}");
    assert!(checks[..2].iter().all(Result::is_ok), "{checks:?}");
    assert!(
        checks[2]
            .as_ref()
            .is_err_and(|d| d.starts_with("not-in-effect")),
        "{checks:?}"
    );
    rt.block_on(fx.engine.shutdown());
}

#[test]
fn disk_fill_check_sees_the_file_and_its_deletion() {
    if !require(is_root(), "root (to mount a test tmpfs)") {
        return;
    }
    let rt = runtime();
    let fx = Fixture::new();
    let fs = Tmpfs::mount("16m");
    let f = rt
        .block_on(fx.inject(&format!(
            r#"{{"kind":"disk-fill","path":{:?},"bytes":"4MiB","duration":"60s"}}"#,
            fs.path()
        )))
        .unwrap();
    assert_eq!(after_apply(&f), EffectState::InEffect);
    assert_eq!(rt.block_on(fx.check(&f)), EffectState::InEffect);
    let files = fs.files();
    assert_eq!(files.len(), 1, "{files:?}");
    std::fs::remove_file(fs.path().join(&files[0])).unwrap();
    assert_eq!(rt.block_on(fx.check(&f)), EffectState::NotInEffect);
    // Reverting a fill whose file is already gone is fine.
    rt.block_on(fx.engine.abort(&f.id, Requester::cli()))
        .unwrap();
}

#[test]
fn stress_checks_see_the_helper_and_its_death() {
    let rt = runtime();
    let fx = Fixture::new();
    for json in [
        r#"{"kind":"cpu-stress","workers":1,"load":10,"duration":"60s"}"#,
        r#"{"kind":"memory-stress","bytes":"8MiB","duration":"60s"}"#,
    ] {
        let f = rt.block_on(fx.inject(json)).unwrap();
        assert_eq!(after_apply(&f), EffectState::InEffect, "{json}");
        assert_eq!(rt.block_on(fx.check(&f)), EffectState::InEffect, "{json}");
        let helper = f.record.helpers[0].pid;
        assert!(running(helper));
        kill(Pid::from_raw(helper), Signal::SIGKILL).unwrap();
        assert!(wait_until(T, || !running(helper)), "{json}: helper lives");
        assert_eq!(
            rt.block_on(fx.check(&f)),
            EffectState::NotInEffect,
            "{json}"
        );
        rt.block_on(fx.engine.abort(&f.id, Requester::cli()))
            .unwrap();
    }
}

#[test]
fn a_pause_that_does_not_take_is_reverted_and_reported_as_an_error() {
    if !require(is_root(), "root (to freeze a test cgroup)") {
        return;
    }
    let rt = runtime();
    let mut fx = Fixture::new();
    let cg = TestCgroup::freezer("check");
    let victim = Victim::sleep();
    cg.add(cg.rel(), victim.pid());
    cg.freeze(true);
    // A frozen task does not act on SIGSTOP until thawed: the pause is not in effect.
    let e = rt
        .block_on(fx.inject(&format!(
            r#"{{"kind":"process-pause","pid":{},"duration":"60s"}}"#,
            victim.pid()
        )))
        .unwrap_err();
    assert!(matches!(e, FaultError::NotInEffect { .. }), "{e}");
    assert!(
        e.to_string().contains("not-in-effect") && e.to_string().contains("reverted"),
        "{e}"
    );
    assert!(fx.engine.list().is_empty());
    assert_eq!(
        std::fs::read_dir(fx.engine.journal().dir())
            .unwrap()
            .count(),
        0,
        "the journal keeps nothing"
    );
    let events = fx.audited();
    let actions: Vec<AuditAction> = events.iter().map(|e| e.action).collect();
    assert_eq!(
        actions,
        [
            AuditAction::Plan,
            AuditAction::Apply,
            AuditAction::Check,
            AuditAction::Revert
        ]
    );
    assert!(
        events[2].outcome.is_err() && events[3].outcome.is_ok(),
        "{events:#?}"
    );
    // The revert's SIGCONT cancelled the pending stop: thawed, the victim runs.
    cg.freeze(false);
    assert!(
        wait_until(T, || matches!(state(victim.pid()), Some('S' | 'R'))),
        "victim {:?} after thaw",
        state(victim.pid())
    );
    wait_until(Duration::from_millis(300), || false);
    assert_ne!(state(victim.pid()), Some('T'), "a stop was left pending");
}

#[test]
fn fault_list_shows_each_faults_check_and_follows_the_world() {
    let s = Scratch::new("");
    let victim = Victim::sleep();
    let bg = s.spawn(
        "pause",
        &[
            "fault",
            "inject",
            "process-pause",
            "--pid",
            &victim.pid().to_string(),
            "--duration",
            "60s",
        ],
    );
    assert!(
        s.wait_applied("process-pause", T).is_some(),
        "{}",
        bg.stderr()
    );
    assert!(
        wait_until(T, || bg.stdout().contains("check: in-effect")),
        "inject prints its check: {}",
        bg.stdout()
    );
    let listed = |s: &Scratch| -> serde_json::Value {
        let out = s.run(&["fault", "list", "--json"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v.as_array().map(Vec::len), Some(1), "{v:#}");
        v[0]["check"].clone()
    };
    assert_eq!(listed(&s)["effect"]["state"], "in-effect");
    kill(Pid::from_raw(victim.pid()), Signal::SIGCONT).unwrap();
    assert!(wait_until(T, || matches!(
        state(victim.pid()),
        Some('S' | 'R')
    )));
    let check = listed(&s);
    assert_eq!(check["effect"]["state"], "not-in-effect", "{check:#}");
    let text = s.run(&["fault", "list"]);
    assert!(
        String::from_utf8_lossy(&text.stdout).contains("check: not-in-effect"),
        "{}",
        String::from_utf8_lossy(&text.stdout)
    );
}
