use super::*;
use crate::fault::EffectState;
use crate::procfs;

fn env() -> Arc<Env> {
    Arc::new(Env::for_tests())
}

fn state(pid: u32) -> Option<char> {
    procfs::read_stat(std::path::Path::new("/proc"), pid as i32).map(|s| s.state)
}

/// `sleep 300` children, resumed, killed and reaped on drop even when the test fails.
struct Sleepers(Vec<std::process::Child>);

impl Sleepers {
    fn start(n: usize) -> Self {
        Sleepers(
            (0..n)
                .map(|_| {
                    std::process::Command::new("sleep")
                        .arg("300")
                        .spawn()
                        .unwrap()
                })
                .collect(),
        )
    }
    fn pause_spec(&self, i: usize) -> FaultSpec {
        serde_json::from_str(&format!(
            r#"{{"kind":"process-pause","pid":{},"duration":"60s"}}"#,
            self.0[i].id()
        ))
        .unwrap()
    }
    fn state(&self, i: usize) -> Option<char> {
        state(self.0[i].id())
    }
}

impl Drop for Sleepers {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let pid = nix::unistd::Pid::from_raw(c.id() as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGCONT);
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_past_the_cap_is_refused_naming_max_concurrent_and_nothing_is_applied() {
    const CAP: usize = 2;
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::new(
        ChaosConfig {
            max_concurrent: CAP,
            ..ChaosConfig::default()
        },
        (*env()).clone(),
        Journal::open(dir.path()).unwrap(),
        Audit::default(),
    );
    let mut audit = engine.audit().subscribe();
    let victims = Sleepers::start(CAP + 1);
    for i in 0..CAP {
        engine
            .inject(victims.pause_spec(i), Requester::cli())
            .await
            .unwrap();
        assert_eq!(victims.state(i), Some('T'), "victim {i} paused");
    }
    let e = engine
        .inject(victims.pause_spec(CAP), Requester::cli())
        .await
        .unwrap_err();
    assert_eq!(e.guard(), Some(Guard::MaxConcurrent), "{e}");
    assert!(
        e.to_string().contains("refused by guard max-concurrent"),
        "{e}"
    );
    // Nothing of the refused fault: the victim runs, no third entry or active fault.
    assert!(
        matches!(victims.state(CAP), Some('S' | 'R')),
        "{:?}",
        victims.state(CAP)
    );
    assert_eq!(engine.list().len(), CAP);
    assert_eq!(journal_files(dir.path()), CAP);
    let mut actions = Vec::new();
    while let Ok(ev) = audit.try_recv() {
        actions.push(ev.action);
    }
    assert_eq!(actions.last(), Some(&AuditAction::Refuse), "{actions:?}");
    assert_eq!(
        actions.iter().filter(|a| **a == AuditAction::Apply).count(),
        CAP,
        "{actions:?}"
    );
    // A freed slot is usable again: the cap counts active faults, not history.
    let first = engine.list()[0].id.clone();
    engine.abort(&first, Requester::cli()).await.unwrap();
    engine
        .inject(victims.pause_spec(CAP), Requester::cli())
        .await
        .unwrap();
    assert_eq!(victims.state(CAP), Some('T'));
    for (id, r) in engine.shutdown().await {
        r.unwrap_or_else(|e| panic!("{id}: {e}"));
    }
    assert_eq!(journal_files(dir.path()), 0);
}

fn journal_files(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir.join("faults/journal"))
        .map(|rd| rd.filter_map(Result::ok).count())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_inject_is_checked_after_apply_and_listed_with_the_check() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::new(
        ChaosConfig::default(),
        (*env()).clone(),
        Journal::open(dir.path()).unwrap(),
        Audit::default(),
    );
    let mut audit = engine.audit().subscribe();
    let victims = Sleepers::start(1);
    let f = engine
        .inject(victims.pause_spec(0), Requester::cli())
        .await
        .unwrap();
    let check = f.check.expect("checked after apply");
    assert_eq!(
        check.effect.as_ref().map(|e| e.state),
        Some(EffectState::InEffect),
        "{check}"
    );
    assert_eq!(engine.list()[0].check.as_ref(), Some(&check));
    // Resumed behind the engine's back: the next check sees it, audited as an error.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(victims.0[0].id() as i32),
        nix::sys::signal::Signal::SIGCONT,
    )
    .unwrap();
    let listed = engine.check_all(Requester::agent("test")).await;
    let again = listed[0].check.clone().unwrap();
    assert_eq!(
        again.effect.as_ref().map(|e| e.state),
        Some(EffectState::NotInEffect),
        "{again}"
    );
    let mut checks = Vec::new();
    while let Ok(ev) = audit.try_recv() {
        if ev.action == AuditAction::Check {
            checks.push(ev.outcome);
        }
    }
    assert_eq!(checks.len(), 2, "{checks:?}");
    assert!(
        checks[0].as_ref().is_ok_and(|d| d.starts_with("in-effect")),
        "{checks:?}"
    );
    assert!(
        checks[1]
            .as_ref()
            .is_err_and(|d| d.starts_with("not-in-effect")),
        "{checks:?}"
    );
    engine.shutdown().await;
}
