//! The `faultline.backup.*` metrics and the collector that records them each cycle from the
//! latest check results.
//!
//! No semantic conventions exist for backups; the names are documented in docs/METRICS.md
//! ("Backups"). Every point carries exactly two attributes, `faultline.backup.source` and
//! `faultline.backup.kind` — never a snapshot id — so cardinality is bounded by the number of
//! configured sources. A metric appears once its check has run at least once. Times are Unix
//! seconds; statuses are 1 (healthy) or 0 (unhealthy), unit `{status}` (not `1`, which the
//! Prometheus translation would suffix with `_ratio`). The age is recomputed every cycle from
//! the newest backup's time, so it keeps growing between freshness checks.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use faultline_exporters::model::{Attributes, Batch, MetricDesc};

use super::{CheckKind, CheckResult, SourceKind, Status, now_unix};
use crate::collectors::{CollectError, Collector, Context};

/// Newest successful backup time.
pub const LAST_SUCCESS_TIME: MetricDesc = MetricDesc::gauge(
    "faultline.backup.last_success.time",
    "s",
    "Unix time when the newest backup finished.",
);
/// Age of the newest backup.
pub const AGE: MetricDesc = MetricDesc::gauge(
    "faultline.backup.age",
    "s",
    "Age of the newest backup, recomputed every cycle.",
);
/// RPO target.
pub const RPO: MetricDesc = MetricDesc::gauge(
    "faultline.backup.rpo",
    "s",
    "The configured recovery point objective.",
);
/// Number of backups.
pub const COUNT: MetricDesc = MetricDesc::gauge(
    "faultline.backup.count",
    "{backup}",
    "Number of backups the source holds.",
);
/// Newest backup's size.
pub const SIZE: MetricDesc = MetricDesc::gauge(
    "faultline.backup.size",
    "By",
    "Size of the newest backup as the tool reports it (restored size where known).",
);
/// Size anomaly.
pub const SIZE_ANOMALY: MetricDesc = MetricDesc::gauge(
    "faultline.backup.size.anomaly",
    "{anomaly}",
    "1 when the newest backup shrank against the previous one by more than max_shrink, else 0.",
);
/// Freshness status.
pub const FRESHNESS_STATUS: MetricDesc = MetricDesc::gauge(
    "faultline.backup.freshness.status",
    "{status}",
    "1 when the newest backup is within the RPO, 0 when it is older, missing, or cannot be listed.",
);
/// Last freshness check time.
pub const FRESHNESS_TIME: MetricDesc = MetricDesc::gauge(
    "faultline.backup.freshness.time",
    "s",
    "Unix time of the last freshness check.",
);
/// Integrity status.
pub const INTEGRITY_STATUS: MetricDesc = MetricDesc::gauge(
    "faultline.backup.integrity.status",
    "{status}",
    "1 when the last integrity check found no problem, 0 otherwise.",
);
/// Last integrity check time.
pub const INTEGRITY_TIME: MetricDesc = MetricDesc::gauge(
    "faultline.backup.integrity.time",
    "s",
    "Unix time of the last integrity check.",
);
/// Restore test status.
pub const RESTORE_STATUS: MetricDesc = MetricDesc::gauge(
    "faultline.backup.restore.status",
    "{status}",
    "1 when the last restore test restored and verified the backup, 0 otherwise.",
);
/// Last restore test time.
pub const RESTORE_TIME: MetricDesc = MetricDesc::gauge(
    "faultline.backup.restore.time",
    "s",
    "Unix time of the last restore test.",
);
/// Restore duration.
pub const RESTORE_DURATION: MetricDesc = MetricDesc::gauge(
    "faultline.backup.restore.duration",
    "s",
    "How long the last restore test's restore phase took.",
);
/// Verification duration.
pub const RESTORE_VERIFY_DURATION: MetricDesc = MetricDesc::gauge(
    "faultline.backup.restore.verify.duration",
    "s",
    "How long the last restore test's verification phase took.",
);
/// Restore tests passed over the window.
pub const RESTORE_PASS_RATE: MetricDesc = MetricDesc::gauge(
    "faultline.backup.restore.pass_rate",
    "1",
    "Share of the source's restore tests that passed within history.pass_rate_window (0 to 1); absent while none ran in it.",
);
/// Overall status.
pub const STATUS: MetricDesc = MetricDesc::gauge(
    "faultline.backup.status",
    "{status}",
    "1 when every check that has run for the source is healthy, 0 when any is unhealthy.",
);

/// Every backup metric, for the metrics reference.
pub const BACKUP_METRICS: &[&MetricDesc] = &[
    &LAST_SUCCESS_TIME,
    &AGE,
    &RPO,
    &COUNT,
    &SIZE,
    &SIZE_ANOMALY,
    &FRESHNESS_STATUS,
    &FRESHNESS_TIME,
    &INTEGRITY_STATUS,
    &INTEGRITY_TIME,
    &RESTORE_STATUS,
    &RESTORE_TIME,
    &RESTORE_DURATION,
    &RESTORE_VERIFY_DURATION,
    &RESTORE_PASS_RATE,
    &STATUS,
];

/// The latest result of each check of each source.
#[derive(Debug, Default)]
pub struct Latest {
    sources: BTreeMap<String, SourceLatest>,
    /// Each source's restore tests within the window: (started, passed), oldest first.
    restores: BTreeMap<String, Vec<(f64, bool)>>,
    /// The pass rate's window, seconds (0: every test since the start).
    window_seconds: f64,
}

#[derive(Debug)]
struct SourceLatest {
    kind: SourceKind,
    rpo_seconds: f64,
    checks: BTreeMap<CheckKind, CheckResult>,
}

/// Shared between the scheduler (writes) and the collector (reads).
pub type SharedLatest = Arc<Mutex<Latest>>;

impl Latest {
    /// Empty, with the restore pass rate taken over `window`.
    pub fn with_window(window: std::time::Duration) -> Self {
        Self {
            window_seconds: window.as_secs_f64(),
            ..Self::default()
        }
    }

    /// Adds restore tests from the history (those already known are not counted twice).
    pub fn seed_restores(&mut self, records: &[super::history::CheckRecord]) {
        for r in records.iter().filter(|r| r.check == CheckKind::Restore) {
            let tests = self.restores.entry(r.source.clone()).or_default();
            if !tests.iter().any(|(t, _)| *t == r.started) {
                tests.push((r.started, r.status == Status::Healthy));
            }
            tests.sort_by(|a, b| a.0.total_cmp(&b.0));
        }
    }

    /// Registers a source so its RPO is reported before any check finished.
    pub fn register(&mut self, name: &str, kind: SourceKind, rpo_seconds: f64) {
        self.sources.entry(name.to_owned()).or_insert(SourceLatest {
            kind,
            rpo_seconds,
            checks: BTreeMap::new(),
        });
    }

    /// Stores a result (skipped results are not stored: they say nothing about health).
    pub fn store(&mut self, r: CheckResult) {
        if r.status == Status::Skipped {
            return;
        }
        if r.check == CheckKind::Restore {
            let tests = self.restores.entry(r.source.clone()).or_default();
            tests.push((r.started, r.status == Status::Healthy));
            tests.sort_by(|a, b| a.0.total_cmp(&b.0));
        }
        let s = self
            .sources
            .entry(r.source.clone())
            .or_insert(SourceLatest {
                kind: r.kind,
                rpo_seconds: r.inventory.as_ref().map_or(0.0, |i| i.rpo_seconds),
                checks: BTreeMap::new(),
            });
        s.checks.insert(r.check, r);
    }

    /// Each source: its name, kind, RPO in seconds and the latest result of each check.
    pub fn sources(
        &self,
    ) -> impl Iterator<Item = (&str, SourceKind, f64, &BTreeMap<CheckKind, CheckResult>)> {
        self.sources
            .iter()
            .map(|(n, s)| (n.as_str(), s.kind, s.rpo_seconds, &s.checks))
    }

    /// Records every metric into `batch` as of `now`.
    pub fn record(&self, batch: &mut Batch, now: f64) {
        let host = batch.host();
        for (name, s) in &self.sources {
            let attrs = || {
                Attributes::new()
                    .with("faultline.backup.source", name.clone())
                    .with("faultline.backup.kind", s.kind.as_str())
            };
            host.record(&RPO, attrs(), s.rpo_seconds);
            let flag = |st: Status| i64::from(st == Status::Healthy);
            if let Some(f) = s.checks.get(&CheckKind::Freshness) {
                host.record(&FRESHNESS_STATUS, attrs(), flag(f.status));
                host.record(&FRESHNESS_TIME, attrs(), f.started);
                if let Some(inv) = &f.inventory {
                    host.record(
                        &COUNT,
                        attrs(),
                        i64::try_from(inv.count).unwrap_or(i64::MAX),
                    );
                    if let Some(t) = inv.newest_time {
                        host.record(&LAST_SUCCESS_TIME, attrs(), t);
                        host.record(&AGE, attrs(), (now - t).max(0.0));
                    }
                    if let Some(sz) = inv.newest_size {
                        host.record(&SIZE, attrs(), sz);
                    }
                    host.record(&SIZE_ANOMALY, attrs(), i64::from(inv.size_anomaly));
                }
            }
            if let Some(i) = s.checks.get(&CheckKind::Integrity) {
                host.record(&INTEGRITY_STATUS, attrs(), flag(i.status));
                host.record(&INTEGRITY_TIME, attrs(), i.started);
            }
            if let Some(r) = s.checks.get(&CheckKind::Restore) {
                host.record(&RESTORE_STATUS, attrs(), flag(r.status));
                host.record(&RESTORE_TIME, attrs(), r.started);
                if let Some(d) = &r.restore {
                    if let Some(x) = d.restore_seconds {
                        host.record(&RESTORE_DURATION, attrs(), x);
                    }
                    if let Some(x) = d.verify_seconds {
                        host.record(&RESTORE_VERIFY_DURATION, attrs(), x);
                    }
                }
            }
            if let Some(rate) = self.restore_pass_rate(name, now) {
                host.record(&RESTORE_PASS_RATE, attrs(), rate);
            }
            if !s.checks.is_empty() {
                let all = s.checks.values().all(|c| c.status == Status::Healthy);
                host.record(&STATUS, attrs(), i64::from(all));
            }
        }
    }
}

impl Latest {
    /// Passed ÷ run among `source`'s restore tests started within the window before `now`.
    pub fn restore_pass_rate(&self, source: &str, now: f64) -> Option<f64> {
        let from = if self.window_seconds > 0.0 {
            now - self.window_seconds
        } else {
            f64::NEG_INFINITY
        };
        let tests: Vec<bool> = self
            .restores
            .get(source)?
            .iter()
            .filter(|(t, _)| *t >= from)
            .map(|(_, ok)| *ok)
            .collect();
        (!tests.is_empty())
            .then(|| tests.iter().filter(|ok| **ok).count() as f64 / tests.len() as f64)
    }
}

/// Records the latest backup results each collection cycle.
#[derive(Debug)]
pub struct BackupCollector {
    latest: SharedLatest,
}

impl BackupCollector {
    /// A collector over `latest`.
    pub fn new(latest: SharedLatest) -> Self {
        Self { latest }
    }

    /// The results it reports (`faultline status` reads them too).
    pub fn latest(&self) -> &SharedLatest {
        &self.latest
    }
}

impl Collector for BackupCollector {
    fn name(&self) -> &'static str {
        "backup"
    }

    fn collect(&mut self, _ctx: &Context, batch: &mut Batch) -> Result<(), CollectError> {
        // A panic while holding the lock cannot leave the map half-written (inserts are
        // single operations), so a poisoned lock's data is still good.
        let latest = self
            .latest
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        latest.record(batch, now_unix());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backup::Inventory;
    use faultline_exporters::model::Resource;

    fn result(check: CheckKind, status: Status) -> CheckResult {
        CheckResult {
            source: "s".into(),
            kind: SourceKind::Restic,
            check,
            status,
            summary: String::new(),
            started: 100.0,
            duration_seconds: 1.0,
            error: None,
            stderr: None,
            inventory: (check == CheckKind::Freshness).then(|| Inventory {
                count: 3,
                newest_time: Some(50.0),
                newest_size: Some(7),
                rpo_seconds: 60.0,
                ..Inventory::default()
            }),
            integrity: None,
            restore: None,
        }
    }

    #[test]
    fn records_with_only_source_and_kind_attributes_and_live_age() {
        let mut l = Latest::default();
        l.register("s", SourceKind::Restic, 60.0);
        l.store(result(CheckKind::Freshness, Status::Healthy));
        l.store(result(CheckKind::Integrity, Status::Unhealthy));
        l.store(result(CheckKind::Restore, Status::Skipped));
        let mut b = Batch::new(0, Arc::new(Resource::default()), 0);
        l.record(&mut b, 200.0);
        let get = |n: &str| b.host_metric(n).map(|m| m.points[0].value.as_f64());
        assert_eq!(get("faultline.backup.age"), Some(150.0));
        assert_eq!(get("faultline.backup.count"), Some(3.0));
        assert_eq!(get("faultline.backup.freshness.status"), Some(1.0));
        assert_eq!(get("faultline.backup.integrity.status"), Some(0.0));
        assert_eq!(get("faultline.backup.status"), Some(0.0));
        assert_eq!(get("faultline.backup.restore.status"), None);
        assert_eq!(get("faultline.backup.restore.pass_rate"), None);
        for m in &b.resources[0].metrics {
            assert!(m.name.starts_with("faultline.backup."));
            for p in &m.points {
                let keys: Vec<&str> = p.attributes.iter().map(|(k, _)| k).collect();
                assert_eq!(keys, ["faultline.backup.source", "faultline.backup.kind"]);
            }
        }
    }
}

#[cfg(test)]
mod pass_rate_tests {
    use super::*;

    #[test]
    fn the_restore_pass_rate_counts_the_window_only_and_seeds_from_the_history() {
        let mut l = Latest::with_window(std::time::Duration::from_secs(100));
        l.register("s", SourceKind::Restic, 60.0);
        let rec = |t: f64, ok: bool| {
            let mut r = crate::backup::history::CheckRecord {
                kind: SourceKind::Restic,
                duration_seconds: 1.0,
                ..crate::backup::history::CheckRecord::test_record("s", CheckKind::Restore, t)
            };
            if !ok {
                r.status = Status::Unhealthy;
            }
            r
        };
        let seeded = [rec(10.0, false), rec(150.0, true), rec(160.0, false)];
        l.seed_restores(&seeded);
        l.seed_restores(&seeded);
        // At 200 the window is [100, 200]: the test at 10 is out.
        assert_eq!(l.restore_pass_rate("s", 200.0), Some(0.5));
        let mut live = CheckResult {
            source: "s".into(),
            kind: SourceKind::Restic,
            check: CheckKind::Restore,
            status: Status::Healthy,
            summary: String::new(),
            started: 190.0,
            duration_seconds: 1.0,
            error: None,
            stderr: None,
            inventory: None,
            integrity: None,
            restore: None,
        };
        l.store(live.clone());
        live.status = Status::Skipped;
        l.store(live);
        let mut b = Batch::new(
            0,
            Arc::new(faultline_exporters::model::Resource::default()),
            0,
        );
        l.record(&mut b, 200.0);
        let rate = b
            .host_metric("faultline.backup.restore.pass_rate")
            .unwrap()
            .points[0]
            .value
            .as_f64();
        assert!((rate - 2.0 / 3.0).abs() < 1e-9, "{rate}");
        assert_eq!(l.restore_pass_rate("s", 1000.0), None);
        assert_eq!(l.restore_pass_rate("other", 200.0), None);
    }
}

#[cfg(test)]
mod doc_tests {
    use super::BACKUP_METRICS;

    #[test]
    fn every_backup_metric_is_in_the_metrics_reference() {
        crate::test_support::assert_in_metrics_reference(BACKUP_METRICS.iter().copied());
    }
}
