//! Runs every source's checks on their schedules inside `faultline run`.
//!
//! One task per (source, check), spawned on the runtime's `TaskTracker` and stopped by its
//! `CancellationToken`; each carries a tracing span naming its source and check. Checks never
//! block the collection loop: they are async (tools are child processes, file work goes to the
//! blocking pool) and hand results over through the shared [`SharedLatest`] that
//! [`BackupCollector`] reads each cycle.
//!
//! - Freshness runs at start and then every `freshness.every`.
//! - Integrity and restore tests are heavy: they run one at a time across all sources (a
//!   semaphore), and when each last ran is kept in `<state-dir>/backup/<source>.schedule.json`,
//!   so a restarted agent waits out the rest of the interval instead of re-reading a
//!   repository or restoring a backup on every restart. Never-run checks start right away.
//! - Checks of one source never overlap (the source's lock in [`Checker`]).
//! - On cancellation a running check is dropped: its child process is killed
//!   (`kill_on_drop`) and a restore test's scratch guard removes its directory.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use faultline_exporters::otlp::LogHandle;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use super::config::BackupSourceConfig;
use super::metrics::{BackupCollector, Latest, SharedLatest};
use super::{CheckKind, Checker, Entry, now_unix};
use super::{event, history};

/// When each check of a source last ran (Unix seconds), by check name.
type Schedule = BTreeMap<String, f64>;

fn schedule_path(state_dir: &Path, source: &str) -> PathBuf {
    state_dir
        .join("backup")
        .join(format!("{source}.schedule.json"))
}

async fn load_schedule(state_dir: &Path, source: &str) -> Schedule {
    match tokio::fs::read_to_string(schedule_path(state_dir, source)).await {
        Ok(t) => serde_json::from_str(&t).unwrap_or_default(),
        Err(_) => Schedule::new(),
    }
}

async fn save_schedule(state_dir: &Path, source: &str, s: &Schedule) {
    let p = schedule_path(state_dir, source);
    let write = async {
        let bytes = serde_json::to_vec(s).map_err(std::io::Error::other)?;
        crate::state_file::write_atomic_async(&p, bytes).await
    };
    if let Err(e) = write.await {
        tracing::warn!(file = %p.display(), error = %e, "cannot save when backup checks last ran; after a restart they run again at once");
    }
}

/// Spawns the check tasks for `sources` and returns the collector that reports them. Each
/// check's event also goes to `logs` (the OTLP log pipeline) when given.
pub fn spawn(
    sources: &[BackupSourceConfig],
    state_dir: &Path,
    pass_rate_window: Duration,
    logs: Option<&LogHandle>,
    cancel: &CancellationToken,
    tracker: &TaskTracker,
) -> BackupCollector {
    let latest: SharedLatest = Arc::new(Mutex::new(Latest::with_window(pass_rate_window)));
    // The restore tests of the window before this start, from the history.
    let (seed_latest, seed_dir) = (latest.clone(), state_dir.to_path_buf());
    tracker.spawn(
        async move {
            let since = now_unix() - pass_rate_window.as_secs_f64();
            match tokio::task::spawn_blocking(move || history::read_since(&seed_dir, since)).await {
                Ok(Ok(read)) => seed_latest
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .seed_restores(&read.records),
                Ok(Err(e)) => tracing::warn!(error = %e, "cannot read the backup check history; the restore pass rate starts empty"),
                Err(e) => tracing::warn!(error = %e, "history read did not finish"),
            }
        }
        .instrument(tracing::info_span!("backup_history_seed")),
    );
    {
        let mut l = latest
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for s in sources {
            l.register(&s.name, s.kind, s.rpo.0.as_secs_f64());
        }
    }
    let checker = Arc::new(Checker::new(sources, state_dir));
    let heavy = Arc::new(Semaphore::new(1));
    // One lock per source file of schedule times: the heavy checks of a source share it.
    for entry in checker.entries() {
        let sched = Arc::new(tokio::sync::Mutex::new(None::<Schedule>));
        for check in CheckKind::ALL {
            let every = match check {
                CheckKind::Freshness => Some(entry.cfg.freshness.every.0),
                CheckKind::Integrity => entry
                    .cfg
                    .integrity
                    .enabled
                    .then_some(entry.cfg.integrity.every.0),
                CheckKind::Restore => entry
                    .cfg
                    .restore
                    .as_ref()
                    .filter(|r| r.enabled)
                    .map(|r| r.every.0),
            };
            let Some(every) = every else { continue };
            if check == CheckKind::Integrity
                && entry.cfg.kind == super::SourceKind::Command
                && entry.cfg.check_command.is_none()
            {
                continue;
            }
            let task = CheckTask {
                checker: checker.clone(),
                entry: entry.clone(),
                check,
                every,
                latest: latest.clone(),
                heavy: (check != CheckKind::Freshness).then(|| heavy.clone()),
                sched: sched.clone(),
                state_dir: state_dir.to_path_buf(),
                logs: logs.cloned(),
            };
            let span = tracing::info_span!("backup_check", source = %entry.cfg.name, check = check.as_str());
            tracker.spawn(task.run(cancel.clone()).instrument(span));
        }
    }
    tracing::info!(sources = sources.len(), "backup checks scheduled");
    BackupCollector::new(latest)
}

struct CheckTask {
    checker: Arc<Checker>,
    entry: Arc<Entry>,
    check: CheckKind,
    every: Duration,
    latest: SharedLatest,
    heavy: Option<Arc<Semaphore>>,
    sched: Arc<tokio::sync::Mutex<Option<Schedule>>>,
    state_dir: PathBuf,
    logs: Option<LogHandle>,
}

impl CheckTask {
    async fn first_delay(&self) -> Duration {
        if self.heavy.is_none() {
            return Duration::ZERO;
        }
        let mut guard = self.sched.lock().await;
        let s = match guard.as_ref() {
            Some(s) => s.clone(),
            None => {
                let s = load_schedule(&self.state_dir, &self.entry.cfg.name).await;
                *guard = Some(s.clone());
                s
            }
        };
        match s.get(self.check.as_str()) {
            Some(&last) => {
                let due = last + self.every.as_secs_f64();
                Duration::from_secs_f64((due - now_unix()).clamp(0.0, self.every.as_secs_f64()))
            }
            None => Duration::ZERO,
        }
    }

    /// Appends the result to the history on the blocking pool (one fsync; never on the
    /// collection thread). A failure is logged: the check's result still counts.
    async fn record(&self, result: &super::CheckResult) {
        let cfg = &self.entry.cfg;
        let Some(rec) =
            history::CheckRecord::of(result, cfg.service.as_deref(), cfg.tier.as_deref())
        else {
            return;
        };
        let state_dir = self.state_dir.clone();
        match tokio::task::spawn_blocking(move || history::append(&state_dir, &rec)).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "cannot record the check in the history"),
            Err(e) => tracing::warn!(error = %e, "history write did not finish"),
        }
    }

    async fn run(self, cancel: CancellationToken) {
        let mut delay = self.first_delay().await;
        if !delay.is_zero() {
            tracing::info!(next_in = %faultline_exporters::repeat::human(delay), "ran before the restart; waiting for its next turn");
        }
        loop {
            tokio::select! {
                () = cancel.cancelled() => return,
                () = tokio::time::sleep(delay) => {}
            }
            let _permit = match &self.heavy {
                Some(sem) => tokio::select! {
                    () = cancel.cancelled() => return,
                    p = sem.clone().acquire_owned() => match p {
                        Ok(p) => Some(p),
                        Err(_) => return,
                    },
                },
                None => None,
            };
            let result = tokio::select! {
                () = cancel.cancelled() => return,
                r = self.checker.run(&self.entry, self.check) => r,
            };
            event::emit(&event::check_event(&result), &result, self.logs.as_ref());
            self.record(&result).await;
            if self.heavy.is_some() {
                let mut guard = self.sched.lock().await;
                let s = guard.get_or_insert_with(Schedule::new);
                s.insert(self.check.as_str().to_owned(), result.started);
                let snapshot = s.clone();
                save_schedule(&self.state_dir, &self.entry.cfg.name, &snapshot).await;
            }
            self.latest
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .store(result);
            delay = self.every;
        }
    }
}
