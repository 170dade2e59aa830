//! Executing one drill: the state machine, from the steady-state check to the report.
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
//! One file a step: `steady`, `watch` (the prober and the canary writer), `faults`,
//! `recover`, `verify`, `clean_up` (the reverts) and `snapshot` (the report, also of a
//! running drill: [`live_report`]). This file runs them in order ([`run`]).
//!
//! The whole body runs under one `select!` with the drill's abort token (API, kill switch,
//! guard rails, shutdown) and its `max_duration`: whichever comes first ends the body and
//! the clean-up reverts what the drill applied. Injects run as tasks of the drill's own
//! tracker, so an inject in flight when the drill is aborted is waited for and reverted too.
//!
//! What happened is kept in a [`Live`] record (`live`; the API reads it while the drill
//! runs); the report is built from it with the pure functions of [`super::measure`].
//!
//! Not here: the scenario file ([`super::scenario`]), the probes ([`super::probe`]), the
//! recovery actions ([`super::recovery`]) and who starts a drill (`crate::cli`'s `drill run`,
//! [`super::service`]).

mod clean_up;
mod faults;
mod live;
mod recover;
mod snapshot;
mod steady;
mod verify;
mod watch;

#[cfg(test)]
mod tests;

use std::path::PathBuf;
use std::sync::Arc;

use faultline_chaos::{Engine, Requester};
use futures::future::join_all;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::info;

pub use live::Live;
pub use snapshot::{live_progress, live_report};

use super::measure::Survivor;
use super::probe::{self, Clock, MetricSource, Outcome, Probe};
use super::report::DrillReport;
use super::scenario::Scenario;
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

/// How the drill's body ended.
#[derive(Debug)]
enum Ended {
    SteadyStateFailed(String),
    Error(String),
    Measured {
        recovered: bool,
        verified: bool,
        /// The canary reader's answer (`None`: no canary, or no recovery to read after).
        survivor: Option<Result<Option<Survivor>, String>>,
        detail: String,
    },
    Aborted(String),
    TimedOut,
}

/// One running drill: its scenario and context, its clock and probes, and the owners of
/// everything it spawns.
struct Drill {
    sc: Scenario,
    ctx: RunCtx,
    clock: Clock,
    id: String,
    probes: Vec<Box<dyn Probe>>,
    guards: Vec<Box<dyn Probe>>,
    /// The prober, the canary writer and the fault watchers.
    tasks: TaskTracker,
    /// Injects in flight.
    injects: TaskTracker,
    /// Ends the body: the abort token's child, also cancelled by a failing guard rail.
    stop: CancellationToken,
    /// Stops the background tasks (prober, canary writer).
    bg: CancellationToken,
}

impl Drill {
    fn new(id: &str, sc: &Scenario, ctx: RunCtx, clock: Clock) -> Self {
        let build = |specs: &[super::scenario::ProbeSpec]| {
            specs
                .iter()
                .map(|p| probe::build(p, ctx.metrics.clone()))
                .collect()
        };
        Drill {
            probes: build(&sc.steady_state),
            guards: build(&sc.abort_when),
            sc: sc.clone(),
            stop: ctx.abort.child_token(),
            ctx,
            clock,
            id: id.to_owned(),
            tasks: TaskTracker::new(),
            injects: TaskTracker::new(),
            bg: CancellationToken::new(),
        }
    }
}

/// Runs the drill `id` of scenario `sc` to its end and returns the report. Never panics;
/// every fault it applied is reverted before it returns.
pub async fn run(id: &str, sc: &Scenario, ctx: RunCtx) -> DrillReport {
    let clock = Clock::new();
    let started = clock.now();
    let sh = Arc::new(Drill::new(id, sc, ctx, clock));
    info!(drill = id, scenario = %sc.name, requester = %sh.ctx.requester, "drill started");
    let deadline = tokio::time::Instant::now() + sc.max_duration.0;
    let ended = tokio::select! {
        e = body(&sh) => e,
        () = sh.stop.cancelled() => Ended::Aborted(
            sh.ctx.live.lock().abort_reason.clone().unwrap_or_else(|| "aborted".into())),
        () = tokio::time::sleep_until(deadline) => Ended::TimedOut,
    };
    match &ended {
        Ended::Aborted(reason) => sh.ctx.live.aborted(&clock, started, reason),
        Ended::TimedOut => sh.ctx.live.timed_out(&clock, &sc.max_duration),
        _ => {}
    }
    clean_up::clean_up(&sh).await;
    let report = snapshot::build_report(&sh, started, ended);
    info!(drill = id, scenario = %sc.name, verdict = report.verdict.as_str(), reason = %report.reason, "drill finished");
    report
}

/// The steps in order, each ending the drill early when it fails.
async fn body(sh: &Arc<Drill>) -> Ended {
    if let Err(why) = steady::check(sh).await {
        return Ended::SteadyStateFailed(why);
    }
    watch::spawn_prober(sh);
    let canary_stop = sh.bg.child_token();
    let writer = sh
        .sc
        .canary
        .as_ref()
        .map(|c| watch::spawn_canary(sh, c.clone(), canary_stop.clone()));
    if let Err(e) = faults::apply(sh, writer, &canary_stop).await {
        return Ended::Error(e);
    }
    let recovery = recover::recover(sh).await;
    let (verified, survivor) = verify::verify(sh, recovery.recovered).await;
    Ended::Measured {
        recovered: recovery.recovered,
        verified,
        survivor,
        detail: recovery.detail,
    }
}

/// Every probe of `probes` once, concurrently.
async fn round(probes: &[Box<dyn Probe>], clock: &Clock) -> Vec<Outcome> {
    join_all(probes.iter().map(|p| p.probe(clock))).await
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
