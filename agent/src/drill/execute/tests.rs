//! Whole drills through [`run`] with command probes and command fault steps (nothing the
//! chaos engine applies), and the fixtures the steps' own tests share.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use faultline_chaos::{Audit, ChaosConfig, Engine, Env, Journal, Requester, WorkerCommand};
use tempfile::TempDir;
use tokio_util::sync::CancellationToken;

use super::live::LiveState;
use super::*;
use crate::drill::measure::Round;
use crate::drill::report::{Event, EventKind, FaultWindow, Verdict};
use crate::drill::scenario::{self, Known};

/// A probe's outcome at time 0 that took no time.
pub(super) fn outcome(probe: &str, ok: bool, detail: &str) -> Outcome {
    Outcome {
        probe: probe.into(),
        at: 0.0,
        latency: 0.0,
        ok,
        detail: detail.into(),
    }
}

/// A probe's outcome at `at` that took `latency`.
pub(super) fn outcome_at(probe: &str, ok: bool, at: f64, latency: f64) -> Outcome {
    Outcome {
        at,
        latency,
        ..outcome(probe, ok, if ok { "ok" } else { "down" })
    }
}

/// A held fault's window.
pub(super) fn window(id: &str, applied_at: f64, reverted_at: Option<f64>) -> FaultWindow {
    FaultWindow {
        id: id.into(),
        kind: "process-pause".into(),
        targets: Vec::new(),
        applied_at,
        reverted_at,
        instant: false,
        revert_error: None,
        selection: None,
    }
}

/// Scenario `t` probing every 20 ms with `rest` (which must have `faults:`); a steady
/// state of one passing command probe unless `rest` has its own.
pub(super) fn scenario(rest: &str) -> Scenario {
    let steady = if rest.contains("steady_state:") {
        ""
    } else {
        "steady_state:\n  - name: up\n    command: { run: [\"true\"] }\n"
    };
    let text = format!("name: t\nprobe_interval: 20ms\n{steady}{rest}");
    scenario::parse(&text, "t.yaml", &Known::default()).unwrap()
}

/// [`scenario`] with `{dir}` in `rest` standing for a fresh directory, which is returned.
pub(super) fn scenario_in(rest: &str) -> (TempDir, Scenario) {
    let dir = tempfile::tempdir().unwrap();
    let sc = scenario(&rest.replace("{dir}", &dir.path().display().to_string()));
    (dir, sc)
}

/// What a drill needs, on a fault engine journaling in `state_dir`.
fn ctx(state_dir: &Path) -> RunCtx {
    let env = Env::detect(
        PathBuf::from("/proc"),
        WorkerCommand::current_exe().unwrap(),
    );
    RunCtx {
        engine: Engine::new(
            ChaosConfig::default(),
            env,
            Journal::open(state_dir).unwrap(),
            Audit::default(),
        ),
        metrics: None,
        backups: Arc::new(Vec::new()),
        state_dir: state_dir.to_path_buf(),
        requester: Requester::cli(),
        abort: CancellationToken::new(),
        live: Arc::new(Live::default()),
    }
}

/// Drill `d1` of [`scenario_in`]`(rest)`, not started, with its directory (also its state
/// directory).
pub(super) fn drill_in(rest: &str) -> (TempDir, Arc<Drill>) {
    let (dir, sc) = scenario_in(rest);
    let sh = Drill::new("d1", &sc, ctx(dir.path()), Clock::new());
    (dir, Arc::new(sh))
}

/// A drill whose steady-state probes and guard rails pass or fail as given (`true` and
/// `false` commands; one passing probe when `probes` is empty).
pub(super) fn drill(probes: &[(&str, bool)], guards: &[(&str, bool)]) -> (TempDir, Arc<Drill>) {
    let list = |key: &str, p: &[(&str, bool)]| {
        let items: String = p
            .iter()
            .map(|(name, ok)| format!("  - name: {name}\n    command: {{ run: [\"{ok}\"] }}\n"))
            .collect();
        if items.is_empty() {
            String::new()
        } else {
            format!("{key}:\n{items}")
        }
    };
    drill_in(&format!(
        "{}{}faults:\n  - command: [\"true\"]\n",
        list("steady_state", probes),
        list("abort_when", guards)
    ))
}

/// Probe rounds from `(at, ok)`, each 10 ms long.
pub(super) fn rounds(r: &[(f64, bool)]) -> Vec<Round> {
    r.iter()
        .map(|&(at, ok)| Round {
            at,
            latency: 0.01,
            ok,
        })
        .collect()
}

/// Sets the fault time and the prober's rounds.
pub(super) fn evidence(sh: &Drill, fault_at: f64, r: &[(f64, bool)]) {
    let mut s = sh.ctx.live.lock();
    s.fault_at = Some(fault_at);
    s.rounds = rounds(r);
}

impl LiveState {
    /// The timeline's events of `kind`.
    pub(super) fn events(&self, kind: EventKind) -> Vec<&Event> {
        self.timeline.iter().filter(|e| e.kind == kind).collect()
    }
}

/// An empty file `name` in `dir`.
fn present(dir: &Path, name: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, "").unwrap();
    path
}

fn phase_names(r: &DrillReport) -> Vec<&str> {
    r.phases
        .iter()
        .map(|p| p.name.as_str())
        .filter(|n| *n != "detection")
        .collect()
}

#[tokio::test]
async fn a_drill_whose_service_is_brought_back_passes_through_every_phase() {
    let (dir, sc) = scenario_in(
        "steady_state:\n  - name: up\n    command: { run: [test, -e, {dir}/up] }\nfaults:\n  - command: [rm, {dir}/up]\nrecovery:\n  strategy: actions\n  consecutive: 2\n  timeout: 10s\n  actions:\n    - command: [touch, {dir}/up]\nobjectives: { rto: 30s }\n",
    );
    let up = present(dir.path(), "up");
    let c = ctx(dir.path());
    let live = c.live.clone();
    let r = run("d1", &sc, c).await;
    assert_eq!(r.verdict, Verdict::Passed, "{}", r.reason);
    assert_eq!(r.reason, "every objective met");
    assert_eq!(
        phase_names(&r),
        ["steady-state", "faults", "recovery", "verification"]
    );
    assert!(r.phases.iter().all(|p| p.ok), "{:?}", r.phases);
    assert_eq!(r.faults.len(), 1);
    assert!(r.rto.is_some() && r.objectives[0].met);
    assert!(up.exists());
    assert_eq!(live.phase(), "verification");
}

#[tokio::test]
async fn a_failing_steady_state_ends_the_drill_with_nothing_injected() {
    let (dir, sc) = scenario_in(
        "steady_state:\n  - name: down\n    command: { run: [\"false\"] }\nfaults:\n  - command: [touch, {dir}/injected]\n",
    );
    let injected = dir.path().join("injected");
    let r = run("d1", &sc, ctx(dir.path())).await;
    assert_eq!(r.verdict, Verdict::SteadyStateFailed);
    assert!(r.reason.contains("down: "), "{}", r.reason);
    assert_eq!(phase_names(&r), ["steady-state"]);
    assert!(!injected.exists());
    assert!(r.faults.is_empty() && r.fault_at.is_none());
}

#[tokio::test]
async fn a_failing_guard_rail_aborts_the_drill_during_recovery() {
    let (dir, sc) = scenario_in(
        "abort_when:\n  - name: tenant\n    command: { run: [test, -e, {dir}/guard] }\nfaults:\n  - command: [rm, {dir}/guard]\nrecovery: { consecutive: 1000, timeout: 30s }\n",
    );
    present(dir.path(), "guard");
    let r = run("d1", &sc, ctx(dir.path())).await;
    assert_eq!(r.verdict, Verdict::Aborted, "{}", r.reason);
    assert!(
        r.reason.starts_with("aborted: abort_when: tenant failed"),
        "{}",
        r.reason
    );
    let recovery = r.phases.iter().find(|p| p.name == "recovery").unwrap();
    assert!(!recovery.ok, "the running phase ends failed");
}

#[tokio::test]
async fn an_aborted_drill_ends_its_running_phase_and_applies_nothing_more() {
    let (dir, sc) = scenario_in("faults:\n  - at: 30s\n    command: [touch, {dir}/late]\n");
    let late = dir.path().join("late");
    let c = ctx(dir.path());
    let (live, abort) = (c.live.clone(), c.abort.clone());
    let aborter = tokio::spawn(async move {
        while live.phase() != "faults" {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        live.set_abort_reason("operator".into());
        abort.cancel();
    });
    let r = tokio::time::timeout(Duration::from_secs(20), run("d1", &sc, c))
        .await
        .unwrap();
    aborter.await.unwrap();
    assert_eq!(r.verdict, Verdict::Aborted);
    assert_eq!(r.reason, "aborted: operator");
    let faults = r.phases.iter().find(|p| p.name == "faults").unwrap();
    assert_eq!((faults.ok, faults.detail.as_str()), (false, "operator"));
    assert!(!late.exists());
}

#[tokio::test]
async fn a_drill_past_max_duration_times_out() {
    let dir = tempfile::tempdir().unwrap();
    let sc = scenario("max_duration: 1s\nfaults:\n  - at: 30s\n    command: [\"true\"]\n");
    let r = tokio::time::timeout(Duration::from_secs(20), run("d1", &sc, ctx(dir.path())))
        .await
        .unwrap();
    assert_eq!(r.verdict, Verdict::TimedOut);
    assert_eq!(r.reason, "max_duration 1s passed");
    assert!(
        r.timeline
            .iter()
            .any(|e| e.kind == EventKind::Abort && e.name == "max_duration")
    );
}
