//! One node's evidence as the posture report reads it: the [`Catalog`] (what the node is
//! configured to prove: scenarios with their objectives and schedules, backup sources with
//! their RPO, RTO and restore tests) and the [`Item`]s of its history (a compact
//! [`DrillRecord`] per drill report, a [`CheckRecord`] per backup check), oldest first.
//!
//! [`read_page`] serves both the local report and `GET /v1/history`: items after a cursor,
//! at most a bounded number per page, with the cursor of the next page.

use std::path::Path;

use serde::{Deserialize, Serialize};

pub use crate::backup::history::CheckRecord;
use crate::backup::{BackupSourceConfig, SourceKind};
use crate::drill::history::History;
use crate::drill::report::{DrillReport, ObjectiveResult, Verdict};
use crate::drill::schedule::{self, Loaded};

/// The most items one page holds.
pub const MAX_PAGE: usize = 2000;

/// A configured scenario.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ScenarioInfo {
    /// The `drills:` entry's name.
    pub name: String,
    /// `service:`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    /// `tier:`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tier: Option<String>,
    /// `objectives.rto`, seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rto_seconds: Option<f64>,
    /// `objectives.rpo`, seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rpo_seconds: Option<f64>,
    /// The cron schedule, when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<String>,
    /// The schedule's period: seconds between its next two starts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub every_seconds: Option<f64>,
}

/// A configured backup source.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SourceInfo {
    /// Name.
    pub name: String,
    /// Kind.
    pub kind: SourceKind,
    /// `service:`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    /// `tier:`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tier: Option<String>,
    /// RPO, seconds.
    pub rpo_seconds: f64,
    /// Restore-time objective, seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rto_seconds: Option<f64>,
    /// How often the restore test runs; `None` when none is scheduled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore_every_seconds: Option<f64>,
}

/// What a node is configured to prove.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Catalog {
    /// The `drills:` entries.
    pub scenarios: Vec<ScenarioInfo>,
    /// The `backups:` entries.
    pub sources: Vec<SourceInfo>,
}

impl Catalog {
    /// From the loaded `drills:` and the `backups:` of a config.
    pub fn new(drills: &[Loaded], backups: &[BackupSourceConfig]) -> Self {
        let now = chrono::Utc::now();
        let scenarios = drills
            .iter()
            .map(|d| {
                let every_seconds = d.cron.as_ref().and_then(|c| {
                    let a = schedule::next_run(c, d.tz, now)?;
                    let b = schedule::next_run(c, d.tz, a)?;
                    Some((b - a).num_milliseconds() as f64 / 1e3)
                });
                let o = &d.scenario.objectives;
                ScenarioInfo {
                    name: d.name.clone(),
                    service: d.scenario.service.clone(),
                    tier: d.scenario.tier.clone(),
                    rto_seconds: o.rto.map(|r| r.0.as_secs_f64()),
                    rpo_seconds: o.rpo.map(|r| r.0.as_secs_f64()),
                    schedule: d.cron.as_ref().map(|c| c.pattern.to_string()),
                    every_seconds,
                }
            })
            .collect();
        let sources = backups
            .iter()
            .map(|b| SourceInfo {
                name: b.name.clone(),
                kind: b.kind,
                service: b.service.clone(),
                tier: b.tier.clone(),
                rpo_seconds: b.rpo.0.as_secs_f64(),
                rto_seconds: b.rto.map(|r| r.0.as_secs_f64()),
                restore_every_seconds: b
                    .restore
                    .as_ref()
                    .filter(|r| r.enabled)
                    .map(|r| r.every.0.as_secs_f64()),
            })
            .collect();
        Self { scenarios, sources }
    }
}

/// A drill as the history keeps it for the posture report.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DrillRecord {
    /// Drill id (its full report: `GET /v1/drills/{id}`, `<state-dir>/drills/{id}.json`).
    pub id: String,
    /// Scenario name.
    pub scenario: String,
    /// The scenario's `service:` as run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    /// The scenario's `tier:` as run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tier: Option<String>,
    /// Unix seconds.
    pub started_at: f64,
    /// Unix seconds.
    pub finished_at: f64,
    /// The verdict.
    pub verdict: Verdict,
    /// One line on why.
    pub reason: String,
    /// Measured RTO, seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rto_seconds: Option<f64>,
    /// Measured RPO (canary, else backup point), seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rpo_seconds: Option<f64>,
    /// Each objective's verdict.
    pub objectives: Vec<ObjectiveResult>,
}

impl From<&DrillReport> for DrillRecord {
    fn from(r: &DrillReport) -> Self {
        let label = |k: &str| {
            r.scenario_spec
                .get(k)
                .and_then(|v| v.as_str())
                .map(str::to_owned)
        };
        Self {
            id: r.id.clone(),
            scenario: r.scenario.clone(),
            service: label("service"),
            tier: label("tier"),
            started_at: r.started_at,
            finished_at: r.finished_at,
            verdict: r.verdict,
            reason: r.reason.clone(),
            rto_seconds: r.rto.map(|m| m.seconds),
            rpo_seconds: r.rpo.as_ref().map(|m| m.seconds).or(r.backup_rpo_seconds),
            objectives: r.objectives.clone(),
        }
    }
}

/// One piece of evidence.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Item {
    /// A drill.
    Drill(DrillRecord),
    /// A backup check.
    Check(CheckRecord),
}

impl Item {
    /// When it started, Unix seconds.
    pub fn at(&self) -> f64 {
        match self {
            Item::Drill(d) => d.started_at,
            Item::Check(c) => c.started,
        }
    }

    /// Its id.
    pub fn id(&self) -> &str {
        match self {
            Item::Drill(d) => &d.id,
            Item::Check(c) => &c.id,
        }
    }

    /// The paging key: `<at with ms>|<id>`.
    pub fn cursor(&self) -> String {
        format!("{:.3}|{}", self.at(), self.id())
    }
}

/// One page of a node's history.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct HistoryPage {
    /// What the node is configured to prove.
    pub catalog: Catalog,
    /// Items, oldest first.
    pub items: Vec<Item>,
    /// Pass this as `after` for the next page; absent on the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
    /// Records skipped because they were torn by a crash or damaged.
    #[serde(default)]
    pub skipped: usize,
}

/// Why the history could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The drill reports.
    #[error(transparent)]
    Drills(#[from] crate::drill::history::HistoryError),
    /// The backup check records.
    #[error(transparent)]
    Checks(#[from] crate::backup::history::HistoryIoError),
}

fn parse_cursor(c: &str) -> Option<(f64, &str)> {
    let (at, id) = c.split_once('|')?;
    Some((at.parse().ok()?, id))
}

/// The drill reports whose file was written at or after `from` (a report is written when
/// its drill ends, so an older file holds a drill that started before `from`).
fn drills_from(drills: &History, from: f64) -> (Vec<DrillRecord>, usize) {
    let (mut out, mut skipped) = (Vec::new(), 0);
    let Ok(rd) = std::fs::read_dir(drills.dir()) else {
        return (out, skipped);
    };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(id) = name
            .strip_suffix(".json")
            .filter(|_| !name.starts_with('.'))
        else {
            continue;
        };
        let written = e
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(f64::INFINITY, |d| d.as_secs_f64());
        if written < from {
            continue;
        }
        match drills.get(id) {
            Ok(Some(r)) if r.verdict != Verdict::Running => out.push(DrillRecord::from(&r)),
            Ok(_) => {}
            Err(_) => skipped += 1,
        }
    }
    (out, skipped)
}

/// The items started at or after `since`, after the `after` cursor, at most `limit` (bounded
/// by [`MAX_PAGE`]), oldest first. A page reads the day segments from the cursor's day on
/// and stops after the day that filled it, so paging through a long history reads it about
/// once. Blocking file I/O.
pub fn read_page(
    state_dir: &Path,
    catalog: &Catalog,
    since: f64,
    after: Option<&str>,
    limit: usize,
) -> Result<HistoryPage, ReadError> {
    let limit = limit.clamp(1, MAX_PAGE);
    let cursor = after.and_then(parse_cursor);
    // The cursor's time is rounded to the millisecond: start a little before it.
    let from = cursor.map_or(since, |(at, _)| since.max(at - 0.001));
    let drills = History::open(state_dir)?;
    let (mut checks, mut stopped) = crate::backup::history::read_days(state_dir, from, limit)?;
    if stopped.is_some() && checks.records.iter().all(|r| r.started < from + 0.002) {
        // Nothing new in the days read (a burst within one millisecond): read on to the end.
        (checks, stopped) = crate::backup::history::read_days(state_dir, from, usize::MAX)?;
    }
    let (drill_items, torn_reports) = drills_from(&drills, from);
    let mut items: Vec<Item> = drill_items
        .into_iter()
        .filter(|d| d.started_at >= since)
        .map(Item::Drill)
        .chain(checks.records.into_iter().map(Item::Check))
        // Past the day the checks' read stopped at, the next page reads on.
        .filter(|i| stopped.is_none_or(|end| i.at() < end))
        .collect();
    items.sort_by(|a, b| a.at().total_cmp(&b.at()).then_with(|| a.id().cmp(b.id())));
    if let Some((at, id)) = cursor {
        items.retain(|i| {
            let t = (i.at() * 1000.0).round() / 1000.0;
            t > at || (t == at && i.id() > id)
        });
    }
    let more = items.len() > limit || stopped.is_some();
    items.truncate(limit);
    let next = more.then(|| items.last().map(Item::cursor)).flatten();
    Ok(HistoryPage {
        catalog: catalog.clone(),
        items,
        next,
        skipped: checks.skipped + torn_reports,
    })
}

/// Every item since `since`, page by page (the local report's read).
pub fn read_all(state_dir: &Path, catalog: &Catalog, since: f64) -> Result<HistoryPage, ReadError> {
    let mut all = read_page(state_dir, catalog, since, None, MAX_PAGE)?;
    while let Some(next) = all.next.take() {
        let page = read_page(state_dir, catalog, since, Some(&next), MAX_PAGE)?;
        all.items.extend(page.items);
        all.next = page.next;
    }
    Ok(all)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::drill::report::fixture;

    #[test]
    fn pages_follow_each_other_without_loss_or_repeat() {
        let dir = tempfile::tempdir().unwrap();
        let h = History::open(dir.path()).unwrap();
        for i in 0..5 {
            let mut r = fixture::report();
            r.id = format!("drill-{i}");
            r.started_at = 1_700_000_000.0 + f64::from(i) * 10.0;
            r.scenario_spec =
                serde_json::json!({"name": "web", "service": "shop", "tier": "tier-1"});
            h.save(&r).unwrap();
        }
        let cat = Catalog::default();
        let mut seen = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let p = read_page(dir.path(), &cat, 0.0, after.as_deref(), 2).unwrap();
            assert!(p.items.len() <= 2);
            seen.extend(p.items.iter().map(|i| i.id().to_owned()));
            match p.next {
                Some(n) => after = Some(n),
                None => break,
            }
        }
        assert_eq!(
            seen,
            ["drill-0", "drill-1", "drill-2", "drill-3", "drill-4"]
        );
        let all = read_all(dir.path(), &cat, 1_700_000_015.0).unwrap();
        assert_eq!(all.items.len(), 3);
        let Item::Drill(d) = &all.items[0] else {
            panic!("a drill")
        };
        assert_eq!(
            (d.service.as_deref(), d.tier.as_deref()),
            (Some("shop"), Some("tier-1"))
        );
        assert_eq!(d.rto_seconds, Some(1.05));
    }

    #[test]
    fn paging_over_many_days_of_checks_returns_each_item_once_in_order() {
        use crate::backup::CheckKind;
        use crate::backup::history::append;
        let dir = tempfile::tempdir().unwrap();
        let t0 = 1_790_000_000.0;
        let mut want = Vec::new();
        for day in 0..3 {
            for i in 0..5 {
                let started = t0 + f64::from(day) * 86_400.0 + f64::from(i) * 60.0;
                let r = CheckRecord::test_record("s", CheckKind::Freshness, started);
                append(dir.path(), &r).unwrap();
                want.push(r.id);
            }
        }
        let cat = Catalog::default();
        for limit in [1, 2, 4, 7, 100] {
            let mut seen = Vec::new();
            let mut after: Option<String> = None;
            let mut pages = 0;
            loop {
                let p = read_page(dir.path(), &cat, t0 + 60.0, after.as_deref(), limit).unwrap();
                pages += 1;
                seen.extend(p.items.iter().map(|i| i.id().to_owned()));
                match p.next {
                    Some(n) => after = Some(n),
                    None => break,
                }
                assert!(pages < 100, "paging does not end");
            }
            assert_eq!(seen, want[1..], "limit {limit}");
        }
    }
}
