//! The fault phase: each step of `faults:` applied at its offset, `together` (every offset
//! from the phase's start) or in `sequence` (each after the previous fault ended). A step
//! is a chaos fault, injected through the engine as the drill's requester in a task of the
//! drill's inject tracker (so an abort waits for it and reverts it), or a command (an
//! irreversible step: nothing to revert). The canary writer is stopped, its last write
//! finished, before the first fault lands.
//!
//! The first step that fails ends the phase, and the drill, with an error.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use faultline_chaos::{AuditAction, FaultId, FaultSpec};
use futures::future::join_all;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::Drill;
use super::live::{LiveState, ev};
use crate::drill::probe::{self, CommandOutput};
use crate::drill::report::{EventKind, FaultWindow};
use crate::drill::scenario::{FaultMode, FaultStep};

/// Runs the fault phase; `Err` says which step failed and why.
pub(super) async fn apply(
    sh: &Arc<Drill>,
    writer: Option<JoinHandle<()>>,
    canary_stop: &CancellationToken,
) -> Result<(), String> {
    let (live, clock) = (&sh.ctx.live, &sh.clock);
    let t = live.begin(clock, "faults");
    let applied = match sh.sc.fault_mode {
        FaultMode::Together => together(sh, writer, canary_stop).await,
        FaultMode::Sequence => sequence(sh, writer, canary_stop).await,
    };
    match &applied {
        Ok(()) => live.end(clock, "faults", t, true, "every fault applied"),
        Err(e) => live.end(clock, "faults", t, false, e),
    }
    applied
}

/// Every step `at` after the phase began; the first error in step order.
async fn together(
    sh: &Arc<Drill>,
    mut writer: Option<JoinHandle<()>>,
    canary_stop: &CancellationToken,
) -> Result<(), String> {
    let phase_start = tokio::time::Instant::now();
    let steps = sh.sc.faults.iter().enumerate().map(|(i, step)| {
        let writer_stop = canary_stop.clone();
        async move {
            tokio::time::sleep_until(phase_start + step.at.0).await;
            writer_stop.cancel();
            apply_step(sh, i).await
        }
    });
    // The writer must have finished its last write before the first fault lands: stop it
    // at the earliest offset.
    let stop_writer = async {
        tokio::time::sleep_until(phase_start + earliest(&sh.sc.faults)).await;
        stop_canary(canary_stop, &mut writer).await;
    };
    let (results, ()) = tokio::join!(join_all(steps), stop_writer);
    results.into_iter().collect::<Result<Vec<_>, _>>().map(drop)
}

/// Each step `at` after the previous one's fault ended; stops at the first error.
async fn sequence(
    sh: &Arc<Drill>,
    mut writer: Option<JoinHandle<()>>,
    canary_stop: &CancellationToken,
) -> Result<(), String> {
    let last = sh.sc.faults.len().saturating_sub(1);
    for (i, step) in sh.sc.faults.iter().enumerate() {
        tokio::time::sleep(step.at.0).await;
        if i == 0 {
            stop_canary(canary_stop, &mut writer).await;
        }
        let held = apply_step(sh, i).await?;
        if let (Some(id), true) = (held, i < last)
            && let Ok(fid) = id.parse::<FaultId>()
        {
            sh.ctx.engine.wait(&fid).await;
        }
    }
    Ok(())
}

/// The earliest offset of the steps.
fn earliest(steps: &[FaultStep]) -> Duration {
    steps.iter().map(|s| s.at.0).min().unwrap_or_default()
}

/// Stops the canary writer and waits for its last write.
async fn stop_canary(stop: &CancellationToken, writer: &mut Option<JoinHandle<()>>) {
    stop.cancel();
    if let Some(w) = writer.take() {
        // The writer only ends by `stop`; a panic in it leaves fewer markers, which the
        // RPO measurement already reports.
        let _ = w.await;
    }
}

/// Applies fault step `i`; `Ok(Some(id))` for a chaos fault that is held (not instant).
async fn apply_step(sh: &Arc<Drill>, i: usize) -> Result<Option<String>, String> {
    let step = &sh.sc.faults[i];
    if let Some(argv) = &step.command {
        return run_command_step(sh, i, argv, step.timeout.0)
            .await
            .map(|()| None);
    }
    let Some(spec) = step.fault.clone() else {
        return Err(format!("fault step {} has nothing to do", i + 1));
    };
    let sh2 = sh.clone();
    // A task of the drill's own tracker: if the drill is aborted while this runs, the
    // clean-up waits for it and reverts what it applied.
    let handle = sh.injects.spawn(async move { inject(&sh2, spec).await });
    handle
        .await
        .unwrap_or_else(|e| Err(format!("inject task failed: {e}")))
}

/// Runs step `i`'s command: an instant fault window, or the step's error.
async fn run_command_step(
    sh: &Drill,
    i: usize,
    argv: &[String],
    timeout: Duration,
) -> Result<(), String> {
    let (live, clock) = (&sh.ctx.live, &sh.clock);
    let at = clock.now();
    let r = probe::run_command(argv, timeout).await;
    let (ok, detail) = command_result(argv, &r);
    let id = format!("command-{}", i + 1);
    live.event(ev(at, EventKind::FaultCommand, &id, Some(ok), &detail));
    if !ok {
        return Err(format!("fault step {} failed: {detail}", i + 1));
    }
    live.lock().applied(FaultWindow {
        id,
        kind: "command".into(),
        targets: vec![argv.join(" ")],
        applied_at: at,
        reverted_at: Some(at),
        instant: true,
        revert_error: None,
        selection: None,
    });
    Ok(())
}

/// Whether a fault command succeeded (exit 0), and what the timeline says about it.
fn command_result(argv: &[String], r: &Result<CommandOutput, String>) -> (bool, String) {
    match r {
        Ok(o) if o.code == Some(0) => (true, format!("{} exited 0", argv.join(" "))),
        Ok(o) => (
            false,
            format!(
                "{} exited {}: {}",
                argv.join(" "),
                o.code.map_or("by a signal".into(), |c| c.to_string()),
                o.stderr.trim()
            ),
        ),
        Err(e) => (false, e.clone()),
    }
}

/// Injects `spec` through the engine; `Ok(Some(id))` when the fault is held.
async fn inject(sh: &Arc<Drill>, spec: FaultSpec) -> Result<Option<String>, String> {
    let (live, clock) = (&sh.ctx.live, &sh.clock);
    let mut audit = sh.ctx.engine.audit().subscribe();
    let asked = clock.now();
    let kind = spec.kind().to_owned();
    let f = match sh.ctx.engine.inject(spec, sh.ctx.requester.clone()).await {
        Ok(f) => f,
        Err(e) => {
            let detail = e.to_string();
            live.event(ev(
                clock.now(),
                EventKind::FaultError,
                &kind,
                Some(false),
                &detail,
            ));
            return Err(format!("fault {kind} could not be applied: {e}"));
        }
    };
    let returned = clock.now();
    // The engine stamps the apply right after the kind's apply returned; map that
    // wall-clock stamp onto the drill's clock.
    let mut at = returned;
    while let Ok(a) = audit.try_recv() {
        if a.fault_id == f.id && a.action == AuditAction::Apply {
            let wall_now = SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .ok()
                .map(|d| d.as_secs_f64());
            at = on_drill_clock(a.at_unix_ms, wall_now, clock.now(), (asked, returned));
        }
    }
    let id = f.id.to_string();
    let mut e = ev(
        at,
        EventKind::FaultApply,
        &id,
        Some(true),
        &f.targets.join(", "),
    );
    e.latency = Some(returned - asked);
    live.event(e);
    live.lock().applied(FaultWindow {
        id: id.clone(),
        kind: f.kind.clone(),
        targets: f.targets.clone(),
        applied_at: at,
        reverted_at: f.instant.then_some(at),
        instant: f.instant,
        revert_error: None,
        selection: f.selection.clone(),
    });
    if f.instant {
        return Ok(None);
    }
    watch_revert(sh, f.id);
    Ok(Some(id))
}

/// Where the wall-clock stamp `stamp_ms` falls on the drill's clock, read `now` when the
/// wall clock read `wall_now` (no wall clock: the stamp is taken as now), kept within the
/// inject call (`call`: asked, returned).
fn on_drill_clock(stamp_ms: u64, wall_now: Option<f64>, now: f64, call: (f64, f64)) -> f64 {
    let stamp = stamp_ms as f64 / 1000.0;
    let wall_now = wall_now.unwrap_or(stamp);
    (now - (wall_now - stamp)).clamp(call.0, call.1)
}

/// Notes when the engine reverts held fault `fid` (deadline, abort, kill switch).
fn watch_revert(sh: &Arc<Drill>, fid: FaultId) {
    let (engine, sh2) = (sh.ctx.engine.clone(), sh.clone());
    sh.tasks.spawn(
        async move {
            engine.wait(&fid).await;
            let at = sh2.clock.now();
            sh2.ctx.live.lock().engine_reverted(&fid.to_string(), at);
        }
        .instrument(tracing::info_span!("drill_fault_watch", drill = %sh.id)),
    );
}

impl LiveState {
    /// The engine reverted fault `id` at `at`: its window closes and the timeline says so,
    /// unless the drill already noted its revert.
    fn engine_reverted(&mut self, id: &str, at: f64) {
        let Some(w) = self
            .faults
            .iter_mut()
            .find(|w| w.id == id && w.reverted_at.is_none())
        else {
            return;
        };
        w.reverted_at = Some(at);
        self.timeline
            .push(ev(at, EventKind::FaultRevert, id, Some(true), "reverted"));
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{drill_in, window};
    use super::*;

    #[test]
    fn a_command_step_passes_on_exit_0_only_and_says_how_it_ended() {
        let argv = ["rm".to_owned(), "-rf".to_owned(), "/srv/x".to_owned()];
        let out = |code, stderr: &str| {
            Ok(CommandOutput {
                code,
                stdout: String::new(),
                stderr: stderr.into(),
            })
        };
        assert_eq!(
            command_result(&argv, &out(Some(0), "")),
            (true, "rm -rf /srv/x exited 0".into())
        );
        assert_eq!(
            command_result(&argv, &out(Some(1), " denied\n")),
            (false, "rm -rf /srv/x exited 1: denied".into())
        );
        assert_eq!(
            command_result(&argv, &out(None, "")),
            (false, "rm -rf /srv/x exited by a signal: ".into())
        );
        assert_eq!(
            command_result(&argv, &Err("timed out".into())),
            (false, "timed out".into())
        );
    }

    #[test]
    fn the_engine_stamp_lands_on_the_drill_clock_within_the_inject_call() {
        // Stamped 0.3 s before the wall clock was read, when the drill clock read 50.5.
        let at = on_drill_clock(1_000_000_000_700, Some(1_000_000_001.0), 50.5, (50.0, 50.6));
        assert!((at - 50.2).abs() < 1e-6, "{at}");
        let at = on_drill_clock(1_000_000_000_000, Some(1_000_000_001.0), 50.5, (50.0, 50.6));
        assert_eq!(at, 50.0, "never before the inject was asked for");
        let at = on_drill_clock(1_000_000_002_000, Some(1_000_000_001.0), 50.5, (50.0, 50.6));
        assert_eq!(at, 50.6, "never after it returned");
        assert_eq!(on_drill_clock(5, None, 50.5, (50.0, 50.6)), 50.5);
    }

    #[test]
    fn an_engine_revert_closes_the_window_once() {
        let mut s = LiveState::default();
        s.applied(window("f1", 10.0, None));
        s.engine_reverted("f1", 11.0);
        s.engine_reverted("f1", 12.0);
        s.engine_reverted("unknown", 12.0);
        assert_eq!(s.faults[0].reverted_at, Some(11.0));
        assert_eq!(s.events(EventKind::FaultRevert).len(), 1);
    }

    #[tokio::test]
    async fn a_sequence_stops_at_the_first_failing_step_and_the_phase_says_why() {
        let (dir, sh) = drill_in(
            "faults:\n  - command: [touch, {dir}/first]\n  - command: [\"false\"]\n  - command: [touch, {dir}/after]\n",
        );
        let after = dir.path().join("after");
        let e = apply(&sh, None, &CancellationToken::new())
            .await
            .unwrap_err();
        assert!(e.starts_with("fault step 2 failed: false exited 1"), "{e}");
        assert!(!after.exists(), "no step after the failing one ran");
        let s = sh.ctx.live.lock();
        assert_eq!(s.faults.len(), 1, "the first command's window");
        assert!(s.fault_at.is_some());
        let phase = &s.phases[0];
        assert_eq!((phase.name.as_str(), phase.ok), ("faults", false));
        assert_eq!(phase.detail, e);
    }

    #[tokio::test]
    async fn together_starts_every_step_at_its_offset_from_the_phase_start() {
        let (dir, sh) = drill_in(
            "fault_mode: together\nfaults:\n  - at: 50ms\n    command: [touch, {dir}/a]\n  - command: [touch, {dir}/b]\n",
        );
        let stop = CancellationToken::new();
        apply(&sh, None, &stop).await.unwrap();
        assert!(stop.is_cancelled(), "the canary writer is stopped");
        assert!(dir.path().join("a").exists() && dir.path().join("b").exists());
        let s = sh.ctx.live.lock();
        let at = |id: &str| s.faults.iter().find(|f| f.id == id).unwrap().applied_at;
        let gap = at("command-1") - at("command-2");
        assert!(
            gap >= 0.045,
            "step 1 starts 50 ms after step 2, not after it: {gap}"
        );
    }
}
