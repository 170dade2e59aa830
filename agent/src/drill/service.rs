//! The drill service inside `faultline run`: the running drills (each with its abort token
//! and target locks) on the fault engine it is given, the history, the results the metrics
//! collector reads, the scheduler tasks and the OTLP report sender. The API
//! ([`crate::api`]) and the scheduler are its only clients; the runtime builds it
//! (`runtime::drills`), and every task it spawns is owned by its [`TaskTracker`] under the
//! runtime's [`CancellationToken`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use faultline_chaos::{Engine, Requester};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, error, info, warn};

use super::execute::{self, Live, RunCtx};
use super::history::History;
use super::metrics::SharedStats;
use super::probe::{Clock, MetricSource};
use super::report::{DrillReport, Progress, Summary, otlp};
use super::scenario::{Known, Scenario};
use super::schedule::{self, Loaded};
use crate::backup::BackupSourceConfig;
use crate::outcome::Outcome;
use crate::telemetry::events::Signals;

/// Why a drill did not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Another drill holds one of its targets.
    #[error("drill {drill} is running on {targets}; two drills never share a target")]
    Busy {
        /// The running drill.
        drill: String,
        /// The shared targets.
        targets: String,
    },
    /// Another drill — possibly in another process (`faultline drill run`) — holds a target's
    /// lock ([`super::locks`]).
    #[error("{0}")]
    Locked(super::locks::LockError),
    /// A fault was refused by the guards or cannot be planned.
    #[error("refused before anything ran: {0}")]
    Refused(String),
    /// The agent is stopping.
    #[error("the agent is shutting down")]
    ShuttingDown,
}

impl StartError {
    /// What the API answers and `faultline drill run` exits with ([`Outcome`]).
    pub fn outcome(&self) -> Outcome {
        match self {
            StartError::Busy { .. } | StartError::Locked(_) => Outcome::Busy,
            StartError::Refused(_) => Outcome::Refused,
            StartError::ShuttingDown => Outcome::Unavailable,
        }
    }
}

struct Running {
    scenario: Scenario,
    requester: Requester,
    targets: Vec<String>,
    started: f64,
    abort: CancellationToken,
    live: Arc<Live>,
    /// Held until the drill is removed from the map (after its report is stored).
    _locks: super::locks::TargetLocks,
}

struct Inner {
    engine: Engine,
    history: History,
    metrics: Option<Arc<dyn MetricSource>>,
    backups: Arc<Vec<BackupSourceConfig>>,
    state_dir: PathBuf,
    known: Known,
    scenarios: BTreeMap<String, Scenario>,
    /// The `drills:` entries as configured (schedules included).
    loaded: Vec<Loaded>,
    running: Mutex<BTreeMap<String, Running>>,
    /// When each scheduled drill starts next (Unix seconds, jitter included), by name.
    next_runs: Mutex<BTreeMap<String, f64>>,
    stats: SharedStats,
    exporter: Option<Signals>,
    tracker: TaskTracker,
    cancel: CancellationToken,
    clock: Clock,
}

/// Shared handle (cheap to clone).
#[derive(Clone)]
pub struct DrillService {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for DrillService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DrillService")
            .field("state_dir", &self.inner.state_dir)
            .finish_non_exhaustive()
    }
}

/// What the service is built from.
#[derive(Debug)]
pub struct ServiceParts {
    /// The engine.
    pub engine: Engine,
    /// State directory.
    pub state_dir: PathBuf,
    /// Backup sources.
    pub backups: Vec<BackupSourceConfig>,
    /// Scenario validation context.
    pub known: Known,
    /// Configured drills.
    pub drills: Vec<Loaded>,
    /// OTLP traces and logs.
    pub exporter: Option<Signals>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A new drill id: `drill-<unix ms>-<4 hex>`.
pub fn new_id() -> String {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    format!("drill-{ms}-{:04x}", rand::random::<u16>())
}

impl DrillService {
    /// Builds the service and spawns the scheduler tasks.
    pub fn start_service(
        parts: ServiceParts,
        metrics: Option<Arc<dyn MetricSource>>,
        cancel: &CancellationToken,
        tracker: &TaskTracker,
    ) -> Result<Self, super::history::HistoryError> {
        let history = History::open(&parts.state_dir)?;
        let scheduled: Vec<Loaded> = parts
            .drills
            .iter()
            .filter(|d| d.cron.is_some())
            .cloned()
            .collect();
        let svc = DrillService {
            inner: Arc::new(Inner {
                engine: parts.engine,
                history,
                metrics,
                backups: Arc::new(parts.backups),
                state_dir: parts.state_dir,
                known: parts.known,
                loaded: parts.drills.clone(),
                scenarios: parts
                    .drills
                    .into_iter()
                    .map(|d| (d.name, d.scenario))
                    .collect(),
                running: Mutex::new(BTreeMap::new()),
                next_runs: Mutex::new(BTreeMap::new()),
                stats: SharedStats::default(),
                exporter: parts.exporter,
                tracker: tracker.clone(),
                cancel: cancel.clone(),
                clock: Clock::new(),
            }),
        };
        svc.seed_stats();
        for d in scheduled {
            let s = svc.clone();
            let name = d.name.clone();
            tracker.spawn(
                async move { s.schedule_loop(d).await }
                    .instrument(tracing::info_span!("drill_schedule", drill = %name)),
            );
        }
        Ok(svc)
    }

    async fn schedule_loop(&self, d: Loaded) {
        let Some(cron) = d.cron.clone() else { return };
        loop {
            let now = chrono::Utc::now();
            let Some(next) = schedule::next_run(&cron, d.tz, now) else {
                warn!(drill = %d.name, "the schedule has no next run; scheduler stops");
                return;
            };
            let wait = (next - now).to_std().unwrap_or_default() + schedule::jitter(d.jitter);
            info!(drill = %d.name, next = %next, wait = %faultline_exporters::repeat::human(wait), "next scheduled drill");
            let at = now.timestamp_millis() as f64 / 1e3 + wait.as_secs_f64();
            lock(&self.inner.next_runs).insert(d.name.clone(), at);
            tokio::select! {
                () = self.inner.cancel.cancelled() => return,
                () = tokio::time::sleep(wait) => {}
            }
            let who = Requester::Schedule {
                name: d.name.clone(),
            };
            match self.start(d.scenario.clone(), who).await {
                Ok(id) => info!(drill = %d.name, id = %id, "scheduled drill started"),
                Err(e) => warn!(drill = %d.name, error = %e, "scheduled drill skipped"),
            }
        }
    }

    /// The fault engine.
    pub fn engine(&self) -> &Engine {
        &self.inner.engine
    }

    /// Validation context for inline scenarios.
    pub fn known(&self) -> &Known {
        &self.inner.known
    }

    /// A configured scenario by its `drills:` name.
    pub fn scenario(&self, name: &str) -> Option<Scenario> {
        self.inner.scenarios.get(name).cloned()
    }

    /// Seeds the metrics' latest figures with the newest stored drill of each scenario, on
    /// the blocking pool (owned by the service's tracker).
    fn seed_stats(&self) {
        let (history, stats) = (self.inner.history.clone(), self.inner.stats.clone());
        self.inner.tracker.spawn_blocking(move || {
            let Ok(list) = history.list() else { return };
            let mut seen = std::collections::BTreeSet::new();
            for s in list {
                if !seen.insert(s.scenario.clone()) {
                    continue;
                }
                if let Ok(Some(r)) = history.get(&s.id) {
                    lock(&stats).seed(&r);
                }
            }
        });
    }

    /// The configured `drills:` entries, schedules included.
    pub fn loaded(&self) -> &[Loaded] {
        &self.inner.loaded
    }

    /// The configured backup sources.
    pub fn backups(&self) -> &[BackupSourceConfig] {
        &self.inner.backups
    }

    /// The scheduled drill that starts next: its name and when (Unix seconds).
    pub fn next_scheduled(&self) -> Option<(String, f64)> {
        lock(&self.inner.next_runs)
            .iter()
            .min_by(|a, b| a.1.total_cmp(b.1))
            .map(|(n, t)| (n.clone(), *t))
    }

    /// Results for the metrics collector.
    pub fn stats(&self) -> SharedStats {
        self.inner.stats.clone()
    }

    /// Starts a drill; returns its id once its targets are locked.
    pub async fn start(
        &self,
        mut sc: Scenario,
        requester: Requester,
    ) -> Result<String, StartError> {
        if self.inner.cancel.is_cancelled() {
            return Err(StartError::ShuttingDown);
        }
        let targets = execute::targets(&mut sc, &self.inner.engine, &requester)
            .await
            .map_err(StartError::Refused)?;
        let id = new_id();
        let abort = self.inner.cancel.child_token();
        let live = Arc::new(Live::default());
        let mut wanted = targets.clone();
        wanted.push(format!("scenario:{}", sc.name));
        // The cross-process locks first (a `faultline drill run` may hold a target), on a
        // blocking thread: they are files.
        let locks = {
            let (dir, wanted, holder) = (
                self.inner.state_dir.clone(),
                wanted.clone(),
                format!(
                    "drill {id} ({}) in faultline run pid {}",
                    sc.name,
                    std::process::id()
                ),
            );
            tokio::task::spawn_blocking(move || super::locks::acquire(&dir, &wanted, &holder))
                .await
                .map_err(|e| StartError::Refused(format!("target lock task failed: {e}")))?
                .map_err(StartError::Locked)?
        };
        {
            let mut running = lock(&self.inner.running);
            for (other, r) in running.iter() {
                let mut theirs = r.targets.clone();
                theirs.push(format!("scenario:{}", r.scenario.name));
                let shared: Vec<&String> = wanted.iter().filter(|t| theirs.contains(t)).collect();
                if !shared.is_empty() {
                    return Err(StartError::Busy {
                        drill: other.clone(),
                        targets: shared
                            .iter()
                            .map(|s| s.as_str())
                            .collect::<Vec<_>>()
                            .join(", "),
                    });
                }
            }
            running.insert(
                id.clone(),
                Running {
                    scenario: sc.clone(),
                    requester: requester.clone(),
                    targets,
                    started: self.inner.clock.now(),
                    abort: abort.clone(),
                    live: live.clone(),
                    _locks: locks,
                },
            );
        }
        let ctx = RunCtx {
            engine: self.inner.engine.clone(),
            metrics: self.inner.metrics.clone(),
            backups: self.inner.backups.clone(),
            state_dir: self.inner.state_dir.clone(),
            requester,
            abort,
            live,
        };
        let svc = self.clone();
        let drill_id = id.clone();
        self.inner.tracker.spawn(
            async move {
                let report = execute::run(&drill_id, &sc, ctx).await;
                svc.finish(report).await;
                lock(&svc.inner.running).remove(&drill_id);
            }
            .instrument(tracing::info_span!("drill", id = %id)),
        );
        Ok(id)
    }

    async fn finish(&self, report: DrillReport) {
        lock(&self.inner.stats).store(&report);
        let history = self.inner.history.clone();
        let r = report.clone();
        match tokio::task::spawn_blocking(move || history.save(&r)).await {
            Ok(Ok(path)) => info!(path = %path.display(), "drill report stored"),
            Ok(Err(e)) => error!(error = %e, "cannot store the drill report"),
            Err(e) => error!(error = %e, "drill report store task failed"),
        }
        if let Some(signals) = &self.inner.exporter {
            send_otlp(signals, &report).await;
        }
    }

    /// Running drills and the history, newest first.
    pub async fn list(&self) -> Vec<Summary> {
        let mut out: Vec<Summary> = lock(&self.inner.running)
            .iter()
            .map(|(id, r)| Summary {
                id: id.clone(),
                scenario: r.scenario.name.clone(),
                requester: r.requester.to_string(),
                started_at: r.started,
                finished_at: None,
                verdict: super::report::Verdict::Running,
                rto_seconds: None,
                rpo_seconds: None,
            })
            .collect();
        let history = self.inner.history.clone();
        match tokio::task::spawn_blocking(move || history.list()).await {
            Ok(Ok(h)) => {
                let live: Vec<String> = out.iter().map(|o| o.id.clone()).collect();
                out.extend(h.into_iter().filter(|s| !live.contains(&s.id)));
            }
            Ok(Err(e)) => warn!(error = %e, "cannot list the drill history"),
            Err(e) => warn!(error = %e, "history task failed"),
        }
        out.sort_by(|a, b| b.started_at.total_cmp(&a.started_at));
        out
    }

    /// One drill: live while running, else from the history.
    pub async fn get(&self, id: &str) -> Option<DrillReport> {
        let live = lock(&self.inner.running).get(id).map(|r| {
            execute::live_report(
                id,
                &r.scenario,
                &r.requester,
                &r.live,
                r.started,
                self.inner.clock.now(),
            )
        });
        if live.is_some() {
            return live;
        }
        self.stored(id).await
    }

    /// A drill's report from the history, read on the blocking pool.
    async fn stored(&self, id: &str) -> Option<DrillReport> {
        let history = self.inner.history.clone();
        let id = id.to_owned();
        tokio::task::spawn_blocking(move || history.get(&id))
            .await
            .ok()
            .and_then(Result::ok)
            .flatten()
    }

    /// How far one drill is: counted on its live record while it runs, else from the
    /// history (read once, when it has ended).
    pub async fn progress(&self, id: &str) -> Option<Progress> {
        let live = lock(&self.inner.running)
            .get(id)
            .map(|r| execute::live_progress(id, &r.live));
        if live.is_some() {
            return live;
        }
        self.stored(id).await.map(|r| Progress::of(&r))
    }

    /// Aborts one running drill; false when it is not running.
    pub fn abort(&self, id: &str, who: &str) -> bool {
        match lock(&self.inner.running).get(id) {
            Some(r) => {
                r.live.set_abort_reason(format!("aborted by {who}"));
                r.abort.cancel();
                true
            }
            None => false,
        }
    }

    /// The kill switch: aborts every drill and reverts every active fault at once. Returns
    /// (drills aborted, faults reverted, revert errors).
    pub async fn abort_all(&self, who: &Requester) -> (Vec<String>, Vec<String>, Vec<String>) {
        let drills: Vec<String> = {
            let running = lock(&self.inner.running);
            for r in running.values() {
                r.live
                    .set_abort_reason(format!("kill switch pulled by {who}"));
                r.abort.cancel();
            }
            running.keys().cloned().collect()
        };
        let results = self.inner.engine.abort_all(who.clone()).await;
        let mut reverted = Vec::new();
        let mut errors = Vec::new();
        for (id, r) in results {
            match r {
                Ok(()) => reverted.push(id.to_string()),
                Err(e) => errors.push(format!("{id}: {e}")),
            }
        }
        (drills, reverted, errors)
    }

    /// The OTLP log pipeline, when OTLP export is on (the API queues its request audits).
    pub fn logs(&self) -> Option<&faultline_exporters::otlp::LogHandle> {
        self.inner.exporter.as_ref().map(|s| &s.logs)
    }

    /// The state directory.
    pub fn state_dir(&self) -> &Path {
        &self.inner.state_dir
    }
}

/// Sends the report's trace and queues its timeline on the log pipeline; failures are
/// logged, never fatal.
pub async fn send_otlp(signals: &Signals, report: &DrillReport) {
    if let Err(e) = signals
        .sender
        .send_traces(&otlp::traces(report, &signals.resource))
        .await
    {
        warn!(error = %e, drill = %report.id, "cannot export the drill trace over OTLP");
    }
    for record in otlp::log_records(report) {
        signals.logs.emit_record(record);
    }
}
