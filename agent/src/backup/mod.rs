//! Backup and restore health: freshness, inventory, integrity and scheduled restore tests for
//! restic, borg, pgBackRest, plain backup files and any tool behind a command.
//!
//! Every source kind sits behind the small [`BackupSource`] trait — `list()` the backups,
//! `check()` their integrity with the tool's own check, `restore(into)` one of them — one file
//! per kind ([`restic`], [`borg`], [`pgbackrest`], [`files`], [`command`]). The tools run
//! through [`tool`] (timeout, process-group kill, stderr captured, exit codes read per the
//! tool's documentation); their output is parsed by pure functions in [`parse`].
//!
//! The [`Checker`] turns a source and a [`CheckKind`] into a [`CheckResult`]: freshness and
//! inventory (age of the newest backup against the RPO, count, size, size anomaly), integrity
//! (with restic's read-data rotation remembered in [`state`]), and the restore test
//! ([`restore_check`]: free-space check, restore into scratch, verification, timing, cleanup).
//! A failure is always a result — unhealthy, with the error and the tool's stderr — never a
//! panic and never a silent "healthy".
//!
//! Inside `faultline run`, [`scheduler`] runs each check on its schedule as owned tasks and
//! keeps the latest results for [`metrics::BackupCollector`], which records the
//! `faultline.backup.*` metrics each cycle; each check also emits one log event
//! ([`event::check_event`]): a tracing line and, with OTLP on, an OTLP log record.
//! Every check that ran is also appended to the history ([`history`]: compact records in
//! day segments under `<state-dir>/history/backup/`), which the posture report reads.
//! `faultline backup check` (in `crate::cli`) runs the checks once, and records them too.
//!
//! Not here: taking backups (the tools' own schedulers do that) and repairing repositories.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};

pub mod borg;
pub mod command;
pub mod config;
pub mod event;
pub mod files;
pub mod history;
pub mod metrics;
pub mod parse;
pub mod pgbackrest;
pub mod restic;
pub mod restore_check;
pub mod scheduler;
pub mod state;
pub mod tool;

pub use config::{BackupSourceConfig, SourceKind};
pub use parse::Snapshot;

use parse::ParseError;
use tool::{Outcome, RunAs, RunError, ToolCommand, ToolOutput};

/// The checks a source gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CheckKind {
    /// Age of the newest backup against the RPO, plus inventory.
    Freshness,
    /// The tool's own integrity check.
    Integrity,
    /// Restore into scratch space and verify.
    Restore,
}

impl CheckKind {
    /// The lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            CheckKind::Freshness => "freshness",
            CheckKind::Integrity => "integrity",
            CheckKind::Restore => "restore",
        }
    }

    /// All of them, in the order they run.
    pub const ALL: [CheckKind; 3] = [
        CheckKind::Freshness,
        CheckKind::Integrity,
        CheckKind::Restore,
    ];
}

/// A check's verdict.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Passed.
    Healthy,
    /// Failed, or could not be carried out.
    Unhealthy,
    /// Not configured for this source (never counts as healthy or unhealthy).
    Skipped,
}

/// What a source operation needs from its caller.
#[derive(Clone, Debug)]
pub struct Ctx {
    /// The agent's state directory (`--state-dir`).
    pub state_dir: PathBuf,
    /// Timeout for each tool invocation of this check.
    pub timeout: Duration,
}

/// The result of a source's integrity check.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct IntegrityOutcome {
    /// The tool found no problem.
    pub ok: bool,
    /// What the tool reported as problems (its own words).
    pub findings: Vec<String>,
    /// Which part of the data was read (restic `n/t`, borg partial check), if not all.
    pub subset: Option<String>,
    /// One line: what was checked.
    pub summary: String,
    /// The command that ran.
    pub command: String,
}

/// A backup source: list, check, restore.
pub trait BackupSource: Send + Sync + std::fmt::Debug {
    /// Lists the backups, oldest first, with sizes at least for the newest two where the tool
    /// can tell.
    fn list<'a>(&'a self, ctx: &'a Ctx) -> BoxFuture<'a, Result<Vec<Snapshot>, SourceError>>;
    /// Runs the tool's own integrity check.
    fn check<'a>(&'a self, ctx: &'a Ctx) -> BoxFuture<'a, Result<IntegrityOutcome, SourceError>>;
    /// Restores `snapshot` into the empty directory `into`. Paths of the backed-up tree end up
    /// under `into` with their leading `/` removed (pgBackRest: the data directory at
    /// `into/data`).
    fn restore<'a>(
        &'a self,
        ctx: &'a Ctx,
        snapshot: &'a Snapshot,
        into: &'a Path,
    ) -> BoxFuture<'a, Result<String, SourceError>>;
    /// Where [`BackupSource::restore`] puts the restored tree inside `into`: `into` itself,
    /// or pgBackRest's data directory `into/data`. A drill's restore into place moves this
    /// onto its target.
    fn restored_tree(&self, into: &Path) -> PathBuf {
        into.to_path_buf()
    }
    /// [`BackupSource::restore`] into `into` for a tree that is then moved to `target` (a
    /// drill's restore into place). pgBackRest names the data directory in the restored
    /// cluster's `restore_command`, so it writes `target` there; other kinds restore as usual.
    fn restore_for<'a>(
        &'a self,
        ctx: &'a Ctx,
        snapshot: &'a Snapshot,
        into: &'a Path,
        _target: &'a Path,
    ) -> BoxFuture<'a, Result<String, SourceError>> {
        self.restore(ctx, snapshot, into)
    }
    /// Kind-specific verification of a restored tree after the generic one (paths, manifest);
    /// returns what was verified. pgBackRest starts PostgreSQL on it here.
    fn verify_restored<'a>(
        &'a self,
        _ctx: &'a Ctx,
        _into: &'a Path,
    ) -> BoxFuture<'a, Result<Vec<String>, SourceError>> {
        Box::pin(async { Ok(Vec::new()) })
    }
}

/// Why a source operation failed.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The tool could not be run to completion (missing binary, timeout).
    #[error(transparent)]
    Run(#[from] RunError),
    /// The tool ran and reported failure.
    #[error("{command}: {}", outcome.describe())]
    Tool {
        /// The command line.
        command: String,
        /// What its exit status means.
        outcome: Outcome,
        /// Its stderr (tail).
        stderr: String,
    },
    /// The tool's output is not what it documents.
    #[error("{command}: {source}")]
    Parse {
        /// The command line.
        command: String,
        /// The parser's complaint.
        source: ParseError,
    },
    /// The password or passphrase cannot be had.
    #[error("password: {0}")]
    Password(String),
    /// A file faultline reads itself.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Something the source cannot do as configured, or a verification that failed.
    #[error("{0}")]
    Failed(String),
}

impl SourceError {
    /// The tool's stderr, when there is one.
    pub fn stderr(&self) -> Option<&str> {
        match self {
            SourceError::Tool { stderr, .. }
            | SourceError::Run(RunError::Timeout { stderr, .. }) => Some(stderr),
            _ => None,
        }
    }
}

/// Runs `cmd`; Ok when it exits as success (or, with `warnings_ok`, with borg's warning code).
pub async fn run_ok(cmd: &ToolCommand, warnings_ok: bool) -> Result<ToolOutput, SourceError> {
    let out = tool::run(cmd).await?;
    match tool::interpret(cmd.tool, out.code, out.signal, &out.stderr) {
        Outcome::Ok => Ok(out),
        Outcome::Warning if warnings_ok => Ok(out),
        outcome => Err(SourceError::Tool {
            command: out.command,
            outcome,
            stderr: tool::tail(&out.stderr, 4000),
        }),
    }
}

/// Resolves a user name to uid/gid (reads the user database on the blocking pool).
pub async fn resolve_user(name: Option<&str>) -> Result<Option<RunAs>, SourceError> {
    let Some(name) = name.map(str::to_owned) else {
        return Ok(None);
    };
    let looked =
        tokio::task::spawn_blocking(move || nix::unistd::User::from_name(&name).map(|u| (name, u)))
            .await
            .map_err(|e| SourceError::Failed(format!("user lookup did not finish: {e}")))?;
    match looked {
        Ok((_, Some(u))) => Ok(Some(RunAs {
            uid: u.uid.as_raw(),
            gid: u.gid.as_raw(),
        })),
        Ok((name, None)) => Err(SourceError::Failed(format!(
            "user {name:?} (config `user`) does not exist"
        ))),
        Err(e) => Err(SourceError::Failed(format!(
            "cannot look up the configured user: {e}"
        ))),
    }
}

/// Reads a password from `password_file` or the agent's `password_env` variable.
pub async fn read_password(
    file: Option<&Path>,
    env: Option<&str>,
) -> Result<Option<String>, SourceError> {
    if let Some(f) = file {
        let text = tokio::fs::read_to_string(f).await.map_err(|e| {
            SourceError::Password(format!("cannot read password_file {}: {e}", f.display()))
        })?;
        let pw = text.lines().next().unwrap_or("").to_owned();
        return Ok(Some(pw));
    }
    if let Some(var) = env {
        return match std::env::var(var) {
            Ok(v) => Ok(Some(v)),
            Err(_) => Err(SourceError::Password(format!(
                "password_env {var} is not set in the agent's environment"
            ))),
        };
    }
    Ok(None)
}

/// Inventory and freshness of a source.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Inventory {
    /// Number of backups.
    pub count: usize,
    /// The newest backup's id.
    pub newest_id: Option<String>,
    /// When it finished, Unix seconds.
    pub newest_time: Option<f64>,
    /// The same, as `YYYY-MM-DDTHH:MM:SSZ`.
    pub newest_time_utc: Option<String>,
    /// Its age when checked, seconds.
    pub age_seconds: Option<f64>,
    /// The RPO target, seconds.
    pub rpo_seconds: f64,
    /// The newest backup's size.
    pub newest_size: Option<u64>,
    /// The previous backup's size.
    pub previous_size: Option<u64>,
    /// The newest is smaller than the previous by more than `max_shrink`.
    pub size_anomaly: bool,
}

/// Computes the inventory of `snaps` (oldest first) at `now`.
pub fn inventory(snaps: &[Snapshot], now: f64, rpo: Duration, max_shrink: f64) -> Inventory {
    let newest = snaps.last();
    let previous = snaps.len().checked_sub(2).and_then(|i| snaps.get(i));
    let newest_size = newest.and_then(|s| s.size);
    let previous_size = previous.and_then(|s| s.size);
    let size_anomaly = match (newest_size, previous_size) {
        (Some(n), Some(p)) if p > 0 => (n as f64) < (p as f64) * (1.0 - max_shrink),
        _ => false,
    };
    Inventory {
        count: snaps.len(),
        newest_id: newest.map(|s| s.id.clone()),
        newest_time: newest.map(|s| s.time),
        newest_time_utc: newest.map(|s| crate::timefmt::format_utc(s.time)),
        age_seconds: newest.map(|s| (now - s.time).max(0.0)),
        rpo_seconds: rpo.as_secs_f64(),
        newest_size,
        previous_size,
        size_anomaly,
    }
}

/// The result of one check of one source: what the table, the JSON, the event and the
/// metrics are made from.
#[derive(Clone, Debug, Serialize)]
pub struct CheckResult {
    /// Source name.
    pub source: String,
    /// Source kind.
    pub kind: SourceKind,
    /// Which check.
    pub check: CheckKind,
    /// The verdict.
    pub status: Status,
    /// One line for people.
    pub summary: String,
    /// When it started, Unix seconds.
    pub started: f64,
    /// How long it took, seconds.
    pub duration_seconds: f64,
    /// The error, when it could not be carried out or failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The tool's stderr (tail), when it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stderr: Option<String>,
    /// Freshness: the inventory.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub inventory: Option<Inventory>,
    /// Integrity: the tool's findings.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub integrity: Option<IntegrityOutcome>,
    /// Restore test details.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub restore: Option<restore_check::RestoreDetail>,
}

/// Unix seconds now.
pub fn now_unix() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// Builds the source object for a validated config.
pub fn build_source(cfg: &BackupSourceConfig) -> Box<dyn BackupSource> {
    match cfg.kind {
        SourceKind::Restic => Box::new(restic::Restic::new(cfg.clone())),
        SourceKind::Borg => Box::new(borg::Borg::new(cfg.clone())),
        SourceKind::Pgbackrest => Box::new(pgbackrest::PgBackRest::new(cfg.clone())),
        SourceKind::Files => Box::new(files::Files::new(cfg.clone())),
        SourceKind::Command => Box::new(command::CommandSource::new(cfg.clone())),
    }
}

/// One configured source with its implementation and a lock that keeps its checks from
/// overlapping (restic's `check` locks the repository exclusively; borg locks for everything).
#[derive(Debug)]
pub struct Entry {
    /// The config.
    pub cfg: BackupSourceConfig,
    /// The implementation.
    pub source: Box<dyn BackupSource>,
    lock: tokio::sync::Mutex<()>,
}

/// Runs checks against configured sources.
#[derive(Debug)]
pub struct Checker {
    entries: Vec<Arc<Entry>>,
    state_dir: PathBuf,
}

impl Checker {
    /// Builds the sources of a validated config.
    pub fn new(cfgs: &[BackupSourceConfig], state_dir: &Path) -> Self {
        let entries = cfgs
            .iter()
            .map(|c| {
                Arc::new(Entry {
                    cfg: c.clone(),
                    source: build_source(c),
                    lock: tokio::sync::Mutex::new(()),
                })
            })
            .collect();
        Self {
            entries,
            state_dir: state_dir.to_path_buf(),
        }
    }

    /// The sources.
    pub fn entries(&self) -> &[Arc<Entry>] {
        &self.entries
    }

    /// Runs one check of one source; never fails — problems are unhealthy results.
    pub async fn run(&self, entry: &Entry, check: CheckKind) -> CheckResult {
        let _serial = entry.lock.lock().await;
        let started = now_unix();
        let t0 = Instant::now();
        let cfg = &entry.cfg;
        let mut r = CheckResult {
            source: cfg.name.clone(),
            kind: cfg.kind,
            check,
            status: Status::Unhealthy,
            summary: String::new(),
            started,
            duration_seconds: 0.0,
            error: None,
            stderr: None,
            inventory: None,
            integrity: None,
            restore: None,
        };
        match check {
            CheckKind::Freshness => {
                let ctx = Ctx {
                    state_dir: self.state_dir.clone(),
                    timeout: cfg.freshness.timeout.0,
                };
                match entry.source.list(&ctx).await {
                    Ok(snaps) => {
                        let inv = inventory(&snaps, now_unix(), cfg.rpo.0, cfg.max_shrink);
                        match inv.age_seconds {
                            None => {
                                r.summary =
                                    "no backup found: a source without backups is unhealthy".into()
                            }
                            Some(age) => {
                                let fresh = age <= inv.rpo_seconds;
                                r.status = if fresh {
                                    Status::Healthy
                                } else {
                                    Status::Unhealthy
                                };
                                r.summary = format!(
                                    "newest of {} backups finished {} ago ({}), RPO {}{}",
                                    inv.count,
                                    human(age),
                                    inv.newest_time_utc.clone().unwrap_or_default(),
                                    cfg.rpo,
                                    if fresh { "" } else { ": older than the RPO" }
                                );
                                if inv.size_anomaly {
                                    r.summary.push_str(&format!(
                                        "; size anomaly: newest {} B vs previous {} B (shrank by more than {:.0} %)",
                                        inv.newest_size.unwrap_or(0),
                                        inv.previous_size.unwrap_or(0),
                                        cfg.max_shrink * 100.0
                                    ));
                                }
                            }
                        }
                        r.inventory = Some(inv);
                    }
                    Err(e) => fail(&mut r, &e, "cannot list backups"),
                }
            }
            CheckKind::Integrity
                if cfg.kind == SourceKind::Command && cfg.check_command.is_none() =>
            {
                r.status = Status::Skipped;
                r.summary = "no check_command configured".into();
            }
            CheckKind::Integrity => {
                let ctx = Ctx {
                    state_dir: self.state_dir.clone(),
                    timeout: cfg.integrity.timeout.0,
                };
                match entry.source.check(&ctx).await {
                    Ok(outcome) => {
                        r.status = if outcome.ok {
                            Status::Healthy
                        } else {
                            Status::Unhealthy
                        };
                        r.summary = if outcome.ok {
                            outcome.summary.clone()
                        } else {
                            format!(
                                "{}: {}",
                                outcome.summary,
                                outcome
                                    .findings
                                    .first()
                                    .cloned()
                                    .unwrap_or_else(|| "problems found".into())
                            )
                        };
                        r.integrity = Some(outcome);
                    }
                    Err(e) => fail(&mut r, &e, "integrity check could not run"),
                }
            }
            CheckKind::Restore => match &cfg.restore {
                None => {
                    r.status = Status::Skipped;
                    r.summary = "no restore test configured (add `restore:` to the source)".into();
                }
                Some(rcfg) => {
                    let ctx = Ctx {
                        state_dir: self.state_dir.clone(),
                        timeout: rcfg.timeout.0,
                    };
                    let out = restore_check::run(entry.source.as_ref(), cfg, rcfg, &ctx).await;
                    r.status = if out.error.is_none() {
                        Status::Healthy
                    } else {
                        Status::Unhealthy
                    };
                    r.summary = out.summary.clone();
                    r.error = out.error.clone();
                    r.stderr = out.stderr.clone();
                    r.restore = Some(out.detail);
                }
            },
        }
        if check == CheckKind::Integrity && !cfg.integrity.enabled && r.status != Status::Unhealthy
        {
            r.summary
                .push_str(" (integrity is not scheduled: integrity.enabled is false)");
        }
        r.duration_seconds = t0.elapsed().as_secs_f64();
        r
    }
}

fn fail(r: &mut CheckResult, e: &SourceError, what: &str) {
    r.status = Status::Unhealthy;
    r.summary = format!("{what}: {e}");
    r.error = Some(e.to_string());
    r.stderr = e
        .stderr()
        .filter(|s| !s.trim().is_empty())
        .map(str::to_owned);
}

/// `3h 2m` style, rounded to seconds.
pub fn human(secs: f64) -> String {
    humantime::format_duration(Duration::from_secs(secs.max(0.0).round() as u64)).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap(id: &str, time: f64, size: Option<u64>) -> Snapshot {
        Snapshot {
            id: id.into(),
            time,
            size,
        }
    }

    #[test]
    fn inventory_of_nothing_has_no_age() {
        let i = inventory(&[], 100.0, Duration::from_secs(10), 0.5);
        assert_eq!(i.count, 0);
        assert!(i.age_seconds.is_none());
        assert!(!i.size_anomaly);
    }

    #[test]
    fn inventory_age_and_shrink() {
        let s = [snap("a", 10.0, Some(1000)), snap("b", 90.0, Some(400))];
        let i = inventory(&s, 100.0, Duration::from_secs(60), 0.5);
        assert_eq!(i.count, 2);
        assert_eq!(i.age_seconds, Some(10.0));
        assert_eq!(i.newest_id.as_deref(), Some("b"));
        assert!(i.size_anomaly);
        assert!(!inventory(&s, 100.0, Duration::from_secs(60), 0.7).size_anomaly);
        let grew = [snap("a", 10.0, Some(400)), snap("b", 90.0, Some(1000))];
        assert!(!inventory(&grew, 100.0, Duration::from_secs(60), 0.1).size_anomaly);
    }
}
