//! How a running agent is: the figures `faultline status` shows and `GET /v1/status`
//! answers, gathered from the services of `faultline run` ([`Sources`]) into one [`Status`].
//!
//! [`Status`] is the stable JSON form documented in docs/STATUS.md: fields are added, never
//! renamed or removed. Every struct refuses unknown fields, so a client older than its agent
//! says so instead of showing half a picture. Gathering checks no fault anew and re-runs no
//! backup check; the drills part lists the drill history on disk (`<state-dir>/drills/`, which
//! `faultline drill run` writes too), as `GET /v1/drills` does, so its cost grows with the
//! number of stored reports.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use faultline_chaos::Engine;
use faultline_exporters::model::now_unix_nanos;
use faultline_exporters::otlp::ExportHandle;
use serde::{Deserialize, Serialize};

use crate::backup::metrics::SharedLatest;
use crate::drill::report::Verdict;
use crate::drill::service::DrillService;

/// The status socket's file name in the state directory (`faultline run` serves it,
/// `faultline status` asks it).
pub const SOCKET_NAME: &str = "agent.sock";

/// The whole answer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Status {
    /// The agent itself.
    pub agent: AgentStatus,
    /// Each collector, in collection order.
    pub collectors: Vec<CollectorStatus>,
    /// The OTLP metrics export; `null` when export is off.
    pub export: Option<ExportStatus>,
    /// Faults active now.
    pub faults: Vec<FaultStatus>,
    /// Drills: running, the last per scenario, the next scheduled.
    pub drills: DrillsStatus,
    /// Each configured backup source.
    pub backups: Vec<BackupStatus>,
}

/// The agent process.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentStatus {
    /// faultline's version.
    pub version: String,
    /// Seconds since it started.
    pub uptime_seconds: f64,
    /// The config file (`<embedded default>` without one).
    pub config_file: String,
    /// The state directory.
    pub state_dir: String,
    /// The collection interval, seconds.
    pub interval_seconds: f64,
}

/// One collector's last cycle.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CollectorStatus {
    /// Its name (`host.cpu`, `containers`, `backup`, …).
    pub name: String,
    /// How long its last run took, seconds; `null` before its first.
    pub last_duration_seconds: Option<f64>,
    /// Failed runs since the agent started.
    pub errors: u64,
    /// Why its last run failed; `null` when it succeeded.
    pub last_error: Option<String>,
}

/// The OTLP metrics export.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportStatus {
    /// Where it sends.
    pub endpoint: String,
    /// The last attempt succeeded (or none failed yet).
    pub healthy: bool,
    /// Failed attempts since the last success.
    pub failing_attempts: u64,
    /// When the backend last accepted a batch, Unix seconds; `null`: not yet.
    pub last_success_unix: Option<f64>,
    /// Why the last attempt failed, while failing.
    pub last_error: Option<String>,
    /// Batches waiting.
    pub backlog_batches: u64,
    /// Their size in bytes (on disk when the queue is persistent).
    pub backlog_bytes: u64,
    /// Age of the oldest waiting batch, seconds.
    pub oldest_batch_age_seconds: Option<f64>,
    /// The disk queue's directory; `null`: the queue is in memory.
    pub queue_dir: Option<String>,
    /// Data points the backend accepted since the agent started.
    pub sent_points: u64,
    /// Data points dropped since the agent started.
    pub dropped_points: u64,
}

/// An active fault.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultStatus {
    /// Its id.
    pub id: String,
    /// Its kind.
    pub kind: String,
    /// Its targets.
    pub targets: Vec<String>,
    /// Seconds until it reverts.
    pub time_left_seconds: f64,
    /// The latest check: `in-effect`, `partial`, `not-in-effect`, `error`; `null` when not
    /// checked yet.
    pub check: Option<String>,
    /// What the check saw, or why it could not look.
    pub check_detail: Option<String>,
}

/// Drills.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DrillsStatus {
    /// Running now.
    pub running: Vec<DrillStatus>,
    /// The newest finished drill of each scenario, by scenario name.
    pub last: Vec<DrillStatus>,
    /// The next scheduled drill; `null` when none is scheduled.
    pub next: Option<NextDrill>,
}

/// One drill.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DrillStatus {
    /// Drill id.
    pub id: String,
    /// Scenario name.
    pub scenario: String,
    /// `running`, `passed`, `failed`, … (as in drill reports).
    pub verdict: Verdict,
    /// Unix seconds.
    pub started_at: f64,
    /// Unix seconds; `null` while running.
    pub finished_at: Option<f64>,
    /// Measured RTO, seconds.
    pub rto_seconds: Option<f64>,
    /// Measured RPO, seconds.
    pub rpo_seconds: Option<f64>,
}

/// The next scheduled drill.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NextDrill {
    /// Its `drills:` entry name.
    pub name: String,
    /// When it starts, Unix seconds (jitter included).
    pub at_unix: f64,
}

/// A backup source.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackupStatus {
    /// Source name.
    pub source: String,
    /// Its kind.
    pub kind: String,
    /// Every check that ran passed; `null` before any ran.
    pub healthy: Option<bool>,
    /// Age of the newest backup, seconds (from the last freshness check, aged to now).
    pub age_seconds: Option<f64>,
    /// The RPO target, seconds.
    pub rpo_seconds: f64,
    /// The last result of each check that ran.
    pub checks: Vec<BackupCheckStatus>,
}

/// A backup check's last result.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackupCheckStatus {
    /// `freshness`, `integrity` or `restore`.
    pub check: String,
    /// `healthy` or `unhealthy`.
    pub status: String,
    /// When it ran, Unix seconds.
    pub at_unix: f64,
    /// One line for people.
    pub summary: String,
    /// The error, when it failed.
    pub error: Option<String>,
}

/// The collectors' last cycle, written by the collection thread.
pub type SharedCollectors = Arc<Mutex<Vec<CollectorStatus>>>;

/// Where the figures come from: the services of one `faultline run`.
#[derive(Clone, Debug)]
pub struct Sources {
    /// When the agent started.
    pub started: Instant,
    /// The config file, for people.
    pub config_file: String,
    /// The state directory.
    pub state_dir: PathBuf,
    /// The collection interval.
    pub interval: Duration,
    /// The collectors' last cycle.
    pub collectors: SharedCollectors,
    /// The export queue, when exporting.
    pub export: Option<ExportHandle>,
    /// The fault engine, when it runs.
    pub engine: Option<Engine>,
    /// The drill service, when it runs.
    pub drills: Option<DrillService>,
    /// The backup checks' latest results, when sources are configured.
    pub backups: Option<SharedLatest>,
}

pub(crate) fn now_unix() -> f64 {
    now_unix_nanos() as f64 / 1e9
}

impl Sources {
    /// The status now.
    pub async fn gather(&self) -> Status {
        let collectors = self
            .collectors
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        let drills = match &self.drills {
            Some(svc) => drills(svc).await,
            None => DrillsStatus::default(),
        };
        Status {
            agent: AgentStatus {
                version: env!("CARGO_PKG_VERSION").to_owned(),
                uptime_seconds: self.started.elapsed().as_secs_f64(),
                config_file: self.config_file.clone(),
                state_dir: self.state_dir.display().to_string(),
                interval_seconds: self.interval.as_secs_f64(),
            },
            collectors,
            export: self.export.as_ref().map(export),
            faults: self.engine.as_ref().map(faults).unwrap_or_default(),
            drills,
            backups: self.backups.as_ref().map(backups).unwrap_or_default(),
        }
    }
}

fn export(h: &ExportHandle) -> ExportStatus {
    use std::sync::atomic::Ordering::Relaxed;
    let s = h.stats();
    let backlog = h.backlog();
    let failing = s.failing_attempts.load(Relaxed);
    let last_success = s.last_success_unix_nanos.load(Relaxed);
    ExportStatus {
        endpoint: s.endpoint.clone(),
        healthy: failing == 0,
        failing_attempts: failing,
        last_success_unix: (last_success > 0).then(|| last_success as f64 / 1e9),
        last_error: s.last_error(),
        backlog_batches: backlog.batches,
        backlog_bytes: backlog.bytes,
        oldest_batch_age_seconds: backlog
            .oldest_age(now_unix_nanos())
            .map(|d| d.as_secs_f64()),
        queue_dir: backlog.dir.map(|d| d.display().to_string()),
        sent_points: s.sent_points.load(Relaxed),
        dropped_points: s.dropped_points.load(Relaxed),
    }
}

fn faults(engine: &Engine) -> Vec<FaultStatus> {
    use faultline_chaos::EffectState;
    let now_ms = now_unix_nanos() / 1_000_000;
    engine
        .list()
        .into_iter()
        .map(|f| {
            let (check, check_detail) = match &f.check {
                None => (None, None),
                Some(c) => match (&c.effect, &c.error) {
                    (Some(e), _) => {
                        let state = match e.state {
                            EffectState::InEffect => "in-effect",
                            EffectState::Partial => "partial",
                            EffectState::NotInEffect => "not-in-effect",
                        };
                        (Some(state.to_owned()), Some(e.detail.clone()))
                    }
                    (None, e) => (Some("error".to_owned()), e.clone()),
                },
            };
            FaultStatus {
                id: f.id.to_string(),
                kind: f.kind,
                targets: f.targets,
                time_left_seconds: f.deadline_unix_ms.saturating_sub(now_ms) as f64 / 1e3,
                check,
                check_detail,
            }
        })
        .collect()
}

async fn drills(svc: &DrillService) -> DrillsStatus {
    let mut out = DrillsStatus {
        next: svc
            .next_scheduled()
            .map(|(name, at_unix)| NextDrill { name, at_unix }),
        ..DrillsStatus::default()
    };
    // Newest first: the first finished drill of a scenario is its last.
    for s in svc.list().await {
        let d = DrillStatus {
            id: s.id,
            scenario: s.scenario,
            verdict: s.verdict,
            started_at: s.started_at,
            finished_at: s.finished_at,
            rto_seconds: s.rto_seconds,
            rpo_seconds: s.rpo_seconds,
        };
        if d.verdict == Verdict::Running {
            out.running.push(d);
        } else if !out.last.iter().any(|l| l.scenario == d.scenario) {
            out.last.push(d);
        }
    }
    out.last.sort_by(|a, b| a.scenario.cmp(&b.scenario));
    out
}

fn backups(latest: &SharedLatest) -> Vec<BackupStatus> {
    use crate::backup::{CheckKind, Status as CheckStatus};
    let now = now_unix();
    let latest = latest
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    latest
        .sources()
        .map(|(name, kind, rpo_seconds, checks)| BackupStatus {
            source: name.to_owned(),
            kind: kind.as_str().to_owned(),
            healthy: (!checks.is_empty())
                .then(|| checks.values().all(|c| c.status == CheckStatus::Healthy)),
            age_seconds: checks
                .get(&CheckKind::Freshness)
                .and_then(|f| f.inventory.as_ref()?.newest_time)
                .map(|t| (now - t).max(0.0)),
            rpo_seconds,
            checks: checks
                .values()
                .map(|c| BackupCheckStatus {
                    check: c.check.as_str().to_owned(),
                    status: crate::backup::event::status_str(c.status).to_owned(),
                    at_unix: c.started,
                    summary: c.summary.clone(),
                    error: c.error.clone(),
                })
                .collect(),
        })
        .collect()
}
