//! The drill state machine:
//!
//! ```text
//! steady state ──fail──▶ report "steady-state-failed" (nothing injected)
//!      │ pass
//!      ▼
//! prober (every probe_interval: steady-state probes → a round; abort_when probes → abort)
//! canary writer (every canary.interval until the first fault)
//!      ▼
//! faults (chaos Engine, as the drill's requester; sequence or together; command steps)
//!      ▼
//! detection (first failing round) ─ recovery (self-heal wait, or actions; then K passing
//! rounds in a row) ─ verification (probes once more; canary reader)
//!      ▼
//! every fault of the drill reverted (concurrently) — also on abort, timeout, error
//! ```
//!
//! The whole body runs under one `select!` with the drill's abort token (API, kill switch,
//! guard rails, shutdown) and its `max_duration`: whichever comes first ends the body and
//! the clean-up reverts what the drill applied. Injects run as tasks of the drill's own
//! tracker, so an inject in flight when the drill is aborted is waited for and reverted too.
//!
//! What happened is kept in a [`Live`] record (the API reads it while the drill runs); the
//! report is built from it with the pure functions of [`super::measure`].

use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use faultline_chaos::{Engine, FaultError, FaultSpec, Requester};
use futures::future::join_all;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, info, warn};

use super::canary;
use super::measure::{self, Marker, Round, Survivor};
use super::probe::{self, Clock, MetricSource, Outcome, Probe};
use super::recovery;
use super::report::{
    DrillReport, Event, EventKind, FaultWindow, ObjectiveResult, Phase, REPORT_VERSION, Verdict,
};
use super::scenario::{FaultMode, Scenario, Strategy};
use crate::backup::BackupSourceConfig;

/// What a drill needs from whoever runs it.
#[derive(Clone)]
pub struct RunCtx {
    /// The fault engine.
    pub engine: Engine,
    /// For metric probes.
    pub metrics: Option<Arc<dyn MetricSource>>,
    /// The agent's backup sources (restore actions).
    pub backups: Arc<Vec<BackupSourceConfig>>,
    /// The agent's state directory.
    pub state_dir: PathBuf,
    /// Who started it (every fault is applied as this requester).
    pub requester: Requester,
    /// Cancelled to abort the drill.
    pub abort: CancellationToken,
    /// The live record.
    pub live: Arc<Live>,
}

impl std::fmt::Debug for RunCtx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunCtx")
            .field("requester", &self.requester)
            .field("state_dir", &self.state_dir)
            .finish_non_exhaustive()
    }
}

/// Everything a running drill has recorded so far.
#[derive(Debug, Default)]
pub struct Live {
    state: Mutex<LiveState>,
}

#[derive(Debug, Default)]
struct LiveState {
    phase: String,
    timeline: Vec<Event>,
    rounds: Vec<Round>,
    faults: Vec<FaultWindow>,
    markers: Vec<Marker>,
    phases: Vec<Phase>,
    abort_reason: Option<String>,
    fault_at: Option<f64>,
    backup_point_at: Option<f64>,
}

impl Live {
    fn lock(&self) -> MutexGuard<'_, LiveState> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Sets why the drill is being aborted (first reason wins).
    pub fn set_abort_reason(&self, reason: String) {
        let mut s = self.lock();
        if s.abort_reason.is_none() {
            s.abort_reason = Some(reason);
        }
    }

    /// The current phase.
    pub fn phase(&self) -> String {
        self.lock().phase.clone()
    }

    fn event(&self, e: Event) {
        self.lock().timeline.push(e);
    }

    fn begin(&self, clock: &Clock, name: &str) -> f64 {
        let at = clock.now();
        let mut s = self.lock();
        s.phase = name.to_owned();
        s.timeline
            .push(ev(at, EventKind::PhaseStart, name, None, ""));
        at
    }

    fn end(&self, clock: &Clock, name: &str, start: f64, ok: bool, detail: &str) {
        let at = clock.now();
        let mut s = self.lock();
        s.timeline
            .push(ev(at, EventKind::PhaseEnd, name, Some(ok), detail));
        s.phases.push(Phase {
            name: name.to_owned(),
            start,
            end: at,
            ok,
            detail: detail.to_owned(),
        });
    }

    fn outcome(&self, o: &Outcome, kind: EventKind) {
        self.event(Event {
            at: o.at,
            kind,
            name: o.probe.clone(),
            ok: Some(o.ok),
            latency: Some(o.latency),
            seq: None,
            detail: o.detail.clone(),
        });
    }
}

fn ev(at: f64, kind: EventKind, name: &str, ok: Option<bool>, detail: &str) -> Event {
    Event {
        at,
        kind,
        name: name.to_owned(),
        ok,
        latency: None,
        seq: None,
        detail: detail.to_owned(),
    }
}

enum Ended {
    SteadyStateFailed(String),
    Error(String),
    Measured {
        recovered: bool,
        verified: bool,
        survivor: Option<Result<Option<Survivor>, String>>,
        detail: String,
    },
    Aborted(String),
    TimedOut,
}

struct Shared {
    sc: Scenario,
    ctx: RunCtx,
    clock: Clock,
    id: String,
    probes: Arc<Vec<Box<dyn Probe>>>,
    guards: Arc<Vec<Box<dyn Probe>>>,
    tasks: TaskTracker,
    injects: TaskTracker,
    stop: CancellationToken,
    bg: CancellationToken,
}

/// Runs the drill `id` of scenario `sc` to its end and returns the report. Never panics;
/// every fault it applied is reverted before it returns.
pub async fn run(id: &str, sc: &Scenario, ctx: RunCtx) -> DrillReport {
    let clock = Clock::new();
    let started = clock.now();
    let stop = ctx.abort.child_token();
    let sh = Arc::new(Shared {
        probes: Arc::new(
            sc.steady_state
                .iter()
                .map(|p| probe::build(p, ctx.metrics.clone()))
                .collect(),
        ),
        guards: Arc::new(
            sc.abort_when
                .iter()
                .map(|p| probe::build(p, ctx.metrics.clone()))
                .collect(),
        ),
        sc: sc.clone(),
        ctx,
        clock,
        id: id.to_owned(),
        tasks: TaskTracker::new(),
        injects: TaskTracker::new(),
        stop: stop.clone(),
        bg: CancellationToken::new(),
    });
    info!(drill = id, scenario = %sc.name, requester = %sh.ctx.requester, "drill started");
    let deadline = tokio::time::Instant::now() + sc.max_duration.0;
    let ended = tokio::select! {
        e = body(&sh) => e,
        () = stop.cancelled() => Ended::Aborted(
            sh.ctx.live.lock().abort_reason.clone().unwrap_or_else(|| "aborted".into())),
        () = tokio::time::sleep_until(deadline) => Ended::TimedOut,
    };
    let live = &sh.ctx.live;
    if let Ended::Aborted(reason) = &ended {
        live.event(ev(
            clock.now(),
            EventKind::Abort,
            "abort",
            Some(false),
            reason,
        ));
        let phase = live.phase();
        if !phase.is_empty() && !live.lock().phases.iter().any(|p| p.name == phase) {
            let start = live
                .lock()
                .timeline
                .iter()
                .rev()
                .find(|e| e.kind == EventKind::PhaseStart && e.name == phase)
                .map_or(started, |e| e.at);
            live.end(&clock, &phase, start, false, reason);
        }
    }
    if matches!(ended, Ended::TimedOut) {
        live.event(ev(
            clock.now(),
            EventKind::Abort,
            "max_duration",
            Some(false),
            &format!("max_duration {} passed", sc.max_duration),
        ));
    }
    clean_up(&sh).await;
    let report = build_report(&sh, started, ended);
    info!(drill = id, scenario = %sc.name, verdict = report.verdict.as_str(), reason = %report.reason, "drill finished");
    report
}

async fn clean_up(sh: &Shared) {
    sh.bg.cancel();
    sh.injects.close();
    sh.injects.wait().await;
    let to_revert: Vec<String> = sh
        .ctx
        .live
        .lock()
        .faults
        .iter()
        .filter(|f| !f.instant && f.reverted_at.is_none())
        .map(|f| f.id.clone())
        .collect();
    let reverts = to_revert.iter().map(|id| async move {
        let fid = id.parse::<faultline_chaos::FaultId>();
        let r = match fid {
            Ok(fid) => sh.ctx.engine.abort(&fid, sh.ctx.requester.clone()).await,
            Err(e) => Err(FaultError::Other(e)),
        };
        (id.clone(), r)
    });
    for (id, r) in join_all(reverts).await {
        let at = sh.clock.now();
        let (ok, detail) = match &r {
            Ok(()) | Err(FaultError::UnknownId(_)) => (true, "reverted at the drill's end".into()),
            Err(e) => (false, e.to_string()),
        };
        if !ok {
            warn!(drill = %sh.id, fault_id = %id, error = %detail, "a drill fault could not be reverted; it stays in the journal for `faultline fault revert`");
        }
        let mut s = sh.ctx.live.lock();
        if let Some(f) = s.faults.iter_mut().find(|f| f.id == id) {
            if f.reverted_at.is_none() {
                f.reverted_at = Some(at);
            }
            if !ok {
                f.revert_error = Some(detail.clone());
            }
        }
        s.timeline
            .push(ev(at, EventKind::FaultRevert, &id, Some(ok), &detail));
    }
    sh.tasks.close();
    if tokio::time::timeout(Duration::from_secs(30), sh.tasks.wait())
        .await
        .is_err()
    {
        warn!(drill = %sh.id, "drill tasks did not stop within 30s");
    }
}

async fn round(probes: &[Box<dyn Probe>], clock: &Clock) -> Vec<Outcome> {
    join_all(probes.iter().map(|p| p.probe(clock))).await
}

async fn body(sh: &Arc<Shared>) -> Ended {
    let live = &sh.ctx.live;
    let clock = &sh.clock;
    // Steady state.
    let t = live.begin(clock, "steady-state");
    let outcomes = round(&sh.probes, clock).await;
    let guards = round(&sh.guards, clock).await;
    for o in &outcomes {
        live.outcome(o, EventKind::Probe);
    }
    for o in &guards {
        live.outcome(o, EventKind::GuardRail);
    }
    let failed: Vec<String> = outcomes
        .iter()
        .chain(&guards)
        .filter(|o| !o.ok)
        .map(|o| format!("{}: {}", o.probe, o.detail))
        .collect();
    if !failed.is_empty() {
        let why = format!(
            "steady state does not hold, nothing was injected: {}",
            failed.join("; ")
        );
        live.end(clock, "steady-state", t, false, &why);
        return Ended::SteadyStateFailed(why);
    }
    live.end(clock, "steady-state", t, true, "every probe passed");

    spawn_prober(sh);
    let canary_stop = sh.bg.child_token();
    let writer = sh
        .sc
        .canary
        .as_ref()
        .map(|c| spawn_canary(sh, c.clone(), canary_stop.clone()));

    // Faults.
    let t = live.begin(clock, "faults");
    let phase_start = tokio::time::Instant::now();
    let mut writer = writer;
    let applied = match sh.sc.fault_mode {
        FaultMode::Together => {
            let steps = sh.sc.faults.iter().enumerate().map(|(i, step)| {
                let writer_stop = canary_stop.clone();
                async move {
                    tokio::time::sleep_until(phase_start + step.at.0).await;
                    writer_stop.cancel();
                    apply_step(sh, i).await
                }
            });
            // The writer must have finished its last write before the first fault lands:
            // stop it at the earliest offset.
            let earliest = sh
                .sc
                .faults
                .iter()
                .map(|s| s.at.0)
                .min()
                .unwrap_or_default();
            let stop_writer = async {
                tokio::time::sleep_until(phase_start + earliest).await;
                canary_stop.cancel();
                if let Some(w) = writer.take() {
                    let _ = w.await;
                }
            };
            let (results, ()) = tokio::join!(join_all(steps), stop_writer);
            results.into_iter().collect::<Result<Vec<_>, _>>()
        }
        FaultMode::Sequence => {
            let mut out = Vec::new();
            let mut failure = None;
            for (i, step) in sh.sc.faults.iter().enumerate() {
                tokio::time::sleep(step.at.0).await;
                if i == 0 {
                    canary_stop.cancel();
                    if let Some(w) = writer.take() {
                        let _ = w.await;
                    }
                }
                match apply_step(sh, i).await {
                    Ok(a) => {
                        let last = i + 1 == sh.sc.faults.len();
                        if let (Some(id), false) = (&a, last) {
                            // Each fault after the previous one ended.
                            if let Ok(fid) = id.parse::<faultline_chaos::FaultId>() {
                                sh.ctx.engine.wait(&fid).await;
                            }
                        }
                        out.push(a);
                    }
                    Err(e) => {
                        failure = Some(e);
                        break;
                    }
                }
            }
            match failure {
                Some(e) => Err(e),
                None => Ok(out),
            }
        }
    };
    if let Err(e) = applied {
        live.end(clock, "faults", t, false, &e);
        return Ended::Error(e);
    }
    live.end(clock, "faults", t, true, "every fault applied");

    // Recovery.
    let t = live.begin(clock, "recovery");
    let rec = &sh.sc.recovery;
    let recovery_deadline = tokio::time::Instant::now() + rec.timeout.0;
    let mut action_failure = None;
    if rec.strategy == Strategy::Actions {
        tokio::time::sleep(rec.after.0).await;
        for a in &rec.actions {
            let at = clock.now();
            let out = recovery::run(a, &sh.ctx.backups, &sh.ctx.state_dir, &sh.id).await;
            let mut e = ev(
                at,
                EventKind::RecoveryAction,
                &a.label(),
                Some(out.ok),
                &out.detail,
            );
            e.latency = Some(clock.now() - at);
            live.event(e);
            if let Some(b) = out.backup_point_at {
                live.lock().backup_point_at = Some(b);
            }
            if !out.ok {
                action_failure = Some(format!(
                    "recovery action `{}` failed: {}",
                    a.label(),
                    out.detail
                ));
                break;
            }
        }
    }
    let interval = sh.sc.probe_interval.0.as_secs_f64();
    let recovered = match &action_failure {
        Some(_) => false,
        None => loop {
            let done = {
                let s = live.lock();
                s.fault_at
                    .and_then(|f| measure::rto(&s.rounds, f, rec.consecutive, interval))
            };
            if let Some(m) = done {
                live.event(ev(
                    m.recovered_at,
                    EventKind::Recovered,
                    "recovered",
                    Some(true),
                    &format!(
                        "{} passing rounds in a row from here; RTO {:.3} s ± {:.3} s",
                        rec.consecutive, m.seconds, m.precision_seconds
                    ),
                ));
                break true;
            }
            if tokio::time::Instant::now() >= recovery_deadline {
                break false;
            }
            tokio::time::sleep(sh.sc.probe_interval.0 / 2).await;
        },
    };
    let why = match (&action_failure, recovered) {
        (Some(e), _) => e.clone(),
        (None, true) => "recovered".into(),
        (None, false) => format!(
            "no {} passing probe rounds in a row within recovery.timeout {}",
            rec.consecutive, rec.timeout
        ),
    };
    live.end(clock, "recovery", t, recovered, &why);

    // Verification.
    let t = live.begin(clock, "verification");
    sh.bg.cancel();
    let outcomes = round(&sh.probes, clock).await;
    for o in &outcomes {
        live.outcome(o, EventKind::Probe);
    }
    let verified = outcomes.iter().all(|o| o.ok);
    let survivor = match &sh.sc.canary {
        Some(c) if recovered => {
            let at = clock.now();
            let r = canary::read(&c.reader, 5).await;
            let detail = match &r {
                Ok(Some(s)) => format!("newest surviving marker {}", s.seq),
                Ok(None) => "no marker survived".into(),
                Err(e) => e.clone(),
            };
            live.event(ev(
                at,
                EventKind::MarkerRead,
                "canary reader",
                Some(r.is_ok()),
                &detail,
            ));
            Some(r)
        }
        _ => None,
    };
    live.end(
        clock,
        "verification",
        t,
        verified,
        if verified {
            "steady state holds again"
        } else {
            "steady state does not hold after recovery"
        },
    );
    Ended::Measured {
        recovered,
        verified,
        survivor,
        detail: why,
    }
}

/// Applies fault step `i`; `Ok(Some(id))` for a chaos fault that is held (not instant).
async fn apply_step(sh: &Arc<Shared>, i: usize) -> Result<Option<String>, String> {
    let step = &sh.sc.faults[i];
    let live = &sh.ctx.live;
    let clock = &sh.clock;
    if let Some(argv) = &step.command {
        let at = clock.now();
        let r = probe::run_command(argv, step.timeout.0).await;
        let (ok, detail) = match &r {
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
        };
        let id = format!("command-{}", i + 1);
        live.event(ev(at, EventKind::FaultCommand, &id, Some(ok), &detail));
        if !ok {
            return Err(format!("fault step {} failed: {detail}", i + 1));
        }
        let mut s = live.lock();
        s.fault_at.get_or_insert(at);
        s.faults.push(FaultWindow {
            id,
            kind: "command".into(),
            targets: vec![argv.join(" ")],
            applied_at: at,
            reverted_at: Some(at),
            instant: true,
            revert_error: None,
            selection: None,
        });
        return Ok(None);
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

async fn inject(sh: &Arc<Shared>, spec: FaultSpec) -> Result<Option<String>, String> {
    let live = &sh.ctx.live;
    let clock = &sh.clock;
    let mut audit = sh.ctx.engine.audit().subscribe();
    let asked = clock.now();
    let kind = spec.kind().to_owned();
    match sh.ctx.engine.inject(spec, sh.ctx.requester.clone()).await {
        Err(e) => {
            let at = clock.now();
            live.event(ev(
                at,
                EventKind::FaultError,
                &kind,
                Some(false),
                &e.to_string(),
            ));
            Err(format!("fault {kind} could not be applied: {e}"))
        }
        Ok(f) => {
            let returned = clock.now();
            // The engine stamps the apply right after the kind's apply returned; map that
            // wall-clock stamp onto the drill's clock.
            let mut at = returned;
            while let Ok(a) = audit.try_recv() {
                if a.fault_id == f.id && a.action == faultline_chaos::AuditAction::Apply {
                    let stamp = a.at_unix_ms as f64 / 1000.0;
                    let wall_now = SystemTime::now()
                        .duration_since(SystemTime::UNIX_EPOCH)
                        .map_or(stamp, |d| d.as_secs_f64());
                    at = (clock.now() - (wall_now - stamp)).clamp(asked, returned);
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
            {
                let mut s = live.lock();
                s.fault_at.get_or_insert(at);
                s.faults.push(FaultWindow {
                    id: id.clone(),
                    kind: f.kind.clone(),
                    targets: f.targets.clone(),
                    applied_at: at,
                    reverted_at: f.instant.then_some(at),
                    instant: f.instant,
                    revert_error: None,
                    selection: f.selection.clone(),
                });
            }
            if f.instant {
                return Ok(None);
            }
            // Note when the engine reverts it (deadline, abort, kill switch).
            let (engine, sh2, fid) = (sh.ctx.engine.clone(), sh.clone(), f.id.clone());
            sh.tasks.spawn(
                async move {
                    engine.wait(&fid).await;
                    let at = sh2.clock.now();
                    let mut s = sh2.ctx.live.lock();
                    let id = fid.to_string();
                    let mut first = false;
                    if let Some(w) = s.faults.iter_mut().find(|w| w.id == id)
                        && w.reverted_at.is_none()
                    {
                        w.reverted_at = Some(at);
                        first = true;
                    }
                    if first {
                        s.timeline.push(ev(
                            at,
                            EventKind::FaultRevert,
                            &id,
                            Some(true),
                            "reverted",
                        ));
                    }
                }
                .instrument(tracing::info_span!("drill_fault_watch", drill = %sh.id)),
            );
            Ok(Some(id))
        }
    }
}

fn spawn_prober(sh: &Arc<Shared>) {
    let sh2 = sh.clone();
    sh.tasks.spawn(
        async move {
            let sh = sh2;
            let mut tick = tokio::time::interval(sh.sc.probe_interval.0);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    () = sh.bg.cancelled() => return,
                    _ = tick.tick() => {}
                }
                let (outcomes, guards) =
                    tokio::join!(round(&sh.probes, &sh.clock), round(&sh.guards, &sh.clock));
                if sh.bg.is_cancelled() {
                    return;
                }
                let live = &sh.ctx.live;
                for o in &outcomes {
                    live.outcome(o, EventKind::Probe);
                }
                let r = Round {
                    at: outcomes.iter().map(|o| o.at).fold(f64::INFINITY, f64::min),
                    latency: outcomes.iter().map(|o| o.latency).fold(0.0, f64::max),
                    ok: outcomes.iter().all(|o| o.ok),
                };
                if r.at.is_finite() {
                    live.lock().rounds.push(r);
                }
                if let Some(bad) = guards.iter().find(|o| !o.ok) {
                    live.outcome(bad, EventKind::GuardRail);
                    let why = format!("abort_when: {} failed: {}", bad.probe, bad.detail);
                    warn!(drill = %sh.id, reason = %why, "guard rail failed: aborting the drill");
                    live.set_abort_reason(why);
                    sh.stop.cancel();
                    return;
                }
            }
        }
        .instrument(tracing::info_span!("drill_prober", drill = %sh.id)),
    );
}

fn spawn_canary(
    sh: &Arc<Shared>,
    c: super::scenario::Canary,
    stop: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    let sh2 = sh.clone();
    sh.tasks.spawn(
        async move {
            let sh = sh2;
            let mut tick = tokio::time::interval(c.interval.0);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut seq = 0u64;
            loop {
                tokio::select! {
                    () = stop.cancelled() => return,
                    _ = tick.tick() => {}
                }
                seq += 1;
                let at = sh.clock.now();
                let ts_ms = (at * 1000.0).round() as u64;
                let r = canary::call(&c.writer, seq, ts_ms, true).await;
                let latency = sh.clock.now() - at;
                let mut s = sh.ctx.live.lock();
                s.markers.push(Marker {
                    seq,
                    at: ts_ms as f64 / 1000.0,
                    latency,
                    acked: r.is_ok(),
                });
                s.timeline.push(Event {
                    at,
                    kind: EventKind::Marker,
                    name: format!("marker {seq}"),
                    ok: Some(r.is_ok()),
                    latency: Some(latency),
                    seq: Some(seq),
                    detail: r.err().unwrap_or_default(),
                });
            }
        }
        .instrument(tracing::info_span!("drill_canary", drill = %sh.id)),
    )
}

fn build_report(sh: &Shared, started: f64, ended: Ended) -> DrillReport {
    let finished = sh.clock.now();
    snapshot(
        &sh.id,
        &sh.sc,
        &sh.ctx.requester,
        &sh.ctx.live,
        started,
        finished,
        Some(ended),
    )
}

/// A report of a running drill (verdict `running`), for the API.
pub fn live_report(
    id: &str,
    sc: &Scenario,
    requester: &Requester,
    live: &Live,
    started: f64,
    now: f64,
) -> DrillReport {
    snapshot(id, sc, requester, live, started, now, None)
}

fn snapshot(
    id: &str,
    sc: &Scenario,
    requester: &Requester,
    live: &Live,
    started: f64,
    finished: f64,
    ended: Option<Ended>,
) -> DrillReport {
    let s = live.lock();
    let interval = sc.probe_interval.0.as_secs_f64();
    let k = sc.recovery.consecutive;
    let fault_at = s.fault_at;
    let rto = fault_at.and_then(|f| measure::rto(&s.rounds, f, k, interval));
    let detection = fault_at.and_then(|f| measure::detection(&s.rounds, f));
    let backup_rpo = match (fault_at, s.backup_point_at) {
        (Some(f), Some(b)) => Some(measure::backup_rpo(f, b)),
        _ => None,
    };
    let mut reader_error = None;
    let rpo = match (&ended, fault_at, &sc.canary) {
        (
            Some(Ended::Measured {
                survivor: Some(r), ..
            }),
            Some(f),
            Some(c),
        ) => match r {
            Ok(surv) => Some(measure::rpo(
                &s.markers,
                f,
                *surv,
                c.interval.0.as_secs_f64(),
            )),
            Err(e) => {
                reader_error = Some(e.clone());
                None
            }
        },
        _ => None,
    };
    let mut phases = s.phases.clone();
    if let (Some(f), Some(d)) = (fault_at, detection) {
        phases.push(Phase {
            name: "detection".into(),
            start: f,
            end: f + d,
            ok: true,
            detail: format!("first failing probe round {:.3} s after the fault", d),
        });
    }
    phases.sort_by(|a, b| a.start.total_cmp(&b.start));
    let mut objectives = Vec::new();
    if let Some(t) = sc.objectives.rto {
        let target = t.0.as_secs_f64();
        objectives.push(match &rto {
            Some(m) => ObjectiveResult {
                name: "rto".into(),
                target_seconds: target,
                measured_seconds: Some(m.seconds),
                precision_seconds: Some(m.precision_seconds),
                met: measure::meets(m.seconds, target),
                detail: format!(
                    "first of {k} consecutive passing probe rounds after the fault; probe every {}",
                    sc.probe_interval
                ),
            },
            None => ObjectiveResult {
                name: "rto".into(),
                target_seconds: target,
                measured_seconds: None,
                precision_seconds: None,
                met: false,
                detail: "the service did not recover during the drill".into(),
            },
        });
    }
    if let Some(t) = sc.objectives.rpo {
        let target = t.0.as_secs_f64();
        let o = match (&rpo, backup_rpo) {
            (Some(m), _) => ObjectiveResult {
                name: "rpo".into(),
                target_seconds: target,
                measured_seconds: Some(m.seconds),
                precision_seconds: Some(m.precision_seconds),
                met: !m.lower_bound && measure::meets(m.seconds, target),
                detail: format!(
                    "newest surviving canary marker {}; {} of {} markers written before the fault lost{}",
                    m.newest_surviving_seq
                        .map_or("none".into(), |q| q.to_string()),
                    m.lost,
                    m.written,
                    backup_rpo.map_or(String::new(), |b| format!(
                        "; backup point {b:.3} s before the fault"
                    ))
                ),
            },
            (None, Some(b)) => ObjectiveResult {
                name: "rpo".into(),
                target_seconds: target,
                measured_seconds: Some(b),
                precision_seconds: None,
                met: measure::meets(b, target),
                detail: "fault time minus the restored backup's point in time".into(),
            },
            (None, None) => ObjectiveResult {
                name: "rpo".into(),
                target_seconds: target,
                measured_seconds: None,
                precision_seconds: None,
                met: false,
                detail: reader_error.clone().map_or("not measured".into(), |e| {
                    format!("canary reader failed: {e}")
                }),
            },
        };
        objectives.push(o);
    }
    let (verdict, reason) = match ended {
        None => (Verdict::Running, format!("running: {}", s.phase)),
        Some(Ended::SteadyStateFailed(r)) => (Verdict::SteadyStateFailed, r),
        Some(Ended::Error(r)) => (Verdict::Error, r),
        Some(Ended::Aborted(r)) => (Verdict::Aborted, format!("aborted: {r}")),
        Some(Ended::TimedOut) => (
            Verdict::TimedOut,
            format!("max_duration {} passed", sc.max_duration),
        ),
        Some(Ended::Measured {
            recovered,
            verified,
            detail,
            ..
        }) => {
            let missed: Vec<&str> = objectives
                .iter()
                .filter(|o| !o.met)
                .map(|o| o.name.as_str())
                .collect();
            if !recovered {
                (Verdict::Failed, detail)
            } else if !verified {
                (
                    Verdict::Failed,
                    "the steady state did not hold at verification".into(),
                )
            } else if !missed.is_empty() {
                (
                    Verdict::Failed,
                    format!("objective missed: {}", missed.join(", ")),
                )
            } else {
                (
                    Verdict::Passed,
                    if objectives.is_empty() {
                        "recovered; no objectives set".into()
                    } else {
                        "every objective met".into()
                    },
                )
            }
        }
    };
    let mut timeline = s.timeline.clone();
    timeline.sort_by(|a, b| a.at.total_cmp(&b.at));
    DrillReport {
        version: REPORT_VERSION,
        id: id.to_owned(),
        scenario: sc.name.clone(),
        description: sc.description.clone(),
        requester: requester.to_string(),
        started_at: started,
        finished_at: finished,
        verdict,
        reason,
        probe_interval_seconds: interval,
        consecutive: k,
        fault_at,
        detection_seconds: detection,
        rto,
        rpo,
        backup_point_at: s.backup_point_at,
        backup_rpo_seconds: backup_rpo,
        objectives,
        phases,
        faults: s.faults.clone(),
        rounds: s.rounds.clone(),
        timeline,
        scenario_spec: serde_json::to_value(sc).unwrap_or_default(),
    }
}

/// The lock names a drill holds: the scenario's `targets` plus every fault's resolved
/// targets (planned now, through the guards: a refused fault stops the drill before it
/// starts). A fault that picks containers at random by pod selectors gets its seed pinned
/// first, so that the drill injects into what it locked (and its report shows the seed).
pub async fn targets(
    sc: &mut Scenario,
    engine: &Engine,
    requester: &Requester,
) -> Result<Vec<String>, String> {
    for step in &mut sc.faults {
        if let Some(spec) = &mut step.fault {
            spec.pin_seed(rand::random());
        }
    }
    let mut out: Vec<String> = sc.targets.clone();
    for (i, step) in sc.faults.iter().enumerate() {
        if let Some(spec) = &step.fault {
            let plan = engine
                .plan(spec.clone(), requester.clone())
                .await
                .map_err(|e| format!("faults[{i}] ({}): {e}", spec.kind()))?;
            out.extend(plan.targets.iter().map(ToString::to_string));
        }
    }
    out.sort();
    out.dedup();
    Ok(out)
}
