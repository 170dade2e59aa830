//! Drill metrics, recorded each collection cycle from the results the drill service keeps:
//! `faultline.drill.rto` and `faultline.drill.rpo` (gauges, seconds, the latest measured
//! drill of each scenario), `faultline.drill.count` (drills finished since the agent
//! started, by scenario and verdict), and compliance as telemetry: per scenario and objective
//! `faultline.drill.objective.status` (1 the latest drill met it, 0 missed) and
//! `faultline.drill.objective.value` (its target). The latest figures of each scenario are
//! seeded from the history when the agent starts ([`Stats::seed`]), so a restart does not
//! blank a dashboard until the next drill.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use faultline_exporters::model::{Attributes, Batch, MetricDesc, now_unix_nanos};

use super::report::{DrillReport, Verdict};
use crate::collectors::{CollectError, Collector, Context};

/// Latest RTO per scenario.
pub const RTO: MetricDesc = MetricDesc::gauge(
    "faultline.drill.rto",
    "s",
    "Recovery time measured by the latest drill of the scenario that recovered.",
);
/// Latest RPO per scenario.
pub const RPO: MetricDesc = MetricDesc::gauge(
    "faultline.drill.rpo",
    "s",
    "Recovery point (data-loss window) measured by the latest drill of the scenario.",
);
/// Drills by verdict.
pub const COUNT: MetricDesc = MetricDesc::counter(
    "faultline.drill.count",
    "{drill}",
    "Drills finished since the agent started, by scenario and verdict.",
);

/// Objective met by the latest drill.
pub const OBJECTIVE_STATUS: MetricDesc = MetricDesc::gauge(
    "faultline.drill.objective.status",
    "{status}",
    "1 when the latest drill of the scenario met the objective, 0 when it missed it.",
);
/// The objective's target.
pub const OBJECTIVE_VALUE: MetricDesc = MetricDesc::gauge(
    "faultline.drill.objective.value",
    "s",
    "The objective's target in the latest drill of the scenario.",
);

/// Every drill metric, for the metrics reference.
pub const ALL: &[&MetricDesc] = &[&RTO, &RPO, &COUNT, &OBJECTIVE_STATUS, &OBJECTIVE_VALUE];

/// Attribute: the scenario name.
pub const ATTR_SCENARIO: &str = "faultline.drill.scenario";
/// Attribute: the verdict.
pub const ATTR_VERDICT: &str = "faultline.drill.verdict";
/// Attribute: the objective (`rto`, `rpo`).
pub const ATTR_OBJECTIVE: &str = "faultline.drill.objective.name";

/// What the collector reports.
#[derive(Debug, Default)]
pub struct Stats {
    rto: BTreeMap<String, f64>,
    rpo: BTreeMap<String, f64>,
    counts: BTreeMap<(String, Verdict), u64>,
    /// (scenario, objective) → (met, target seconds, the drill's start).
    objectives: BTreeMap<(String, String), (bool, f64, f64)>,
}

/// Shared between the service (writes) and the collector (reads).
pub type SharedStats = Arc<Mutex<Stats>>;

impl Stats {
    /// Takes a finished drill into account.
    pub fn store(&mut self, r: &DrillReport) {
        *self
            .counts
            .entry((r.scenario.clone(), r.verdict))
            .or_default() += 1;
        self.latest(r);
    }

    /// Takes a drill from the history into account for the latest figures (not the counts,
    /// which are since the start): only where it is newer than what is known.
    pub fn seed(&mut self, r: &DrillReport) {
        let newer = self
            .objectives
            .iter()
            .filter(|((s, _), _)| *s == r.scenario)
            .all(|(_, (_, _, at))| *at < r.started_at);
        if newer {
            self.latest(r);
        }
    }

    fn latest(&mut self, r: &DrillReport) {
        for o in &r.objectives {
            self.objectives.insert(
                (r.scenario.clone(), o.name.clone()),
                (o.met, o.target_seconds, r.started_at),
            );
        }
        if let Some(m) = &r.rto {
            self.rto.insert(r.scenario.clone(), m.seconds);
        }
        if let Some(v) = r.rpo.as_ref().map(|m| m.seconds).or(r.backup_rpo_seconds) {
            self.rpo.insert(r.scenario.clone(), v);
        }
    }

    /// Records the metrics.
    pub fn record(&self, batch: &mut Batch, start_unix_nanos: u64) {
        let host = batch.host();
        let sc = |s: &str| Attributes::new().with(ATTR_SCENARIO, s.to_owned());
        for (s, v) in &self.rto {
            host.record(&RTO, sc(s), *v);
        }
        for (s, v) in &self.rpo {
            host.record(&RPO, sc(s), *v);
        }
        for ((s, o), (met, target, _)) in &self.objectives {
            host.record(
                &OBJECTIVE_STATUS,
                sc(s).with(ATTR_OBJECTIVE, o.clone()),
                i64::from(*met),
            );
            host.record(
                &OBJECTIVE_VALUE,
                sc(s).with(ATTR_OBJECTIVE, o.clone()),
                *target,
            );
        }
        let scenarios: std::collections::BTreeSet<&String> =
            self.counts.keys().map(|(s, _)| s).collect();
        for s in scenarios {
            for v in Verdict::FINAL {
                let n = self.counts.get(&(s.clone(), v)).copied().unwrap_or(0);
                host.record_since(
                    &COUNT,
                    sc(s).with(ATTR_VERDICT, v.as_str()),
                    n,
                    start_unix_nanos,
                );
            }
        }
    }
}

/// The collector over the service's stats.
#[derive(Debug)]
pub struct DrillCollector {
    stats: SharedStats,
    start: u64,
}

impl DrillCollector {
    /// Over `stats`.
    pub fn new(stats: SharedStats) -> Self {
        Self {
            stats,
            start: now_unix_nanos(),
        }
    }
}

impl Collector for DrillCollector {
    fn name(&self) -> &'static str {
        "drill"
    }

    fn collect(&mut self, _ctx: &Context, batch: &mut Batch) -> Result<(), CollectError> {
        self.stats
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .record(batch, self.start);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::report::fixture;
    use super::*;
    use faultline_exporters::model::Resource;

    #[test]
    fn latest_figures_and_counts_by_verdict() {
        let mut s = Stats::default();
        let r = fixture::report();
        s.store(&r);
        s.store(&r);
        let mut b = Batch::new(1, Arc::new(Resource::default()), 0);
        s.record(&mut b, 5);
        assert_eq!(
            b.host_metric("faultline.drill.rto").unwrap().points[0]
                .value
                .as_f64(),
            1.05
        );
        assert_eq!(
            b.host_metric("faultline.drill.rpo").unwrap().points[0]
                .value
                .as_f64(),
            0.8
        );
        let count = b.host_metric("faultline.drill.count").unwrap();
        assert_eq!(count.points.len(), Verdict::FINAL.len());
        let failed = count
            .points
            .iter()
            .find(|p| p.attributes.get(ATTR_VERDICT).map(|v| v.to_text()) == Some("failed".into()))
            .unwrap();
        assert_eq!(failed.value.as_f64(), 2.0);
    }

    #[test]
    fn objective_status_and_value_per_scenario_and_objective_and_seeding_keeps_the_newest() {
        let mut s = Stats::default();
        let mut r = fixture::report();
        s.store(&r);
        let mut older = r.clone();
        older.started_at -= 100.0;
        for o in &mut older.objectives {
            o.met = !o.met;
        }
        s.seed(&older);
        let mut b = Batch::new(1, Arc::new(Resource::default()), 0);
        s.record(&mut b, 5);
        let status = b.host_metric("faultline.drill.objective.status").unwrap();
        let of = |name: &str| {
            status
                .points
                .iter()
                .find(|p| {
                    p.attributes.get(ATTR_OBJECTIVE).map(|v| v.to_text()) == Some(name.into())
                })
                .unwrap()
                .value
                .as_f64()
        };
        // The fixture met its RTO and missed its RPO; the older seeded drill changed nothing.
        assert_eq!((of("rto"), of("rpo")), (1.0, 0.0));
        let value = b.host_metric("faultline.drill.objective.value").unwrap();
        assert_eq!(value.points.len(), 2);
        // A newer drill from the history replaces the figures.
        r.started_at += 100.0;
        r.objectives[1].met = true;
        s.seed(&r);
        let mut b = Batch::new(1, Arc::new(Resource::default()), 0);
        s.record(&mut b, 5);
        let status = b.host_metric("faultline.drill.objective.status").unwrap();
        assert!(status.points.iter().all(|p| p.value.as_f64() == 1.0));
    }

    #[test]
    fn every_drill_metric_is_in_the_metrics_reference() {
        crate::test_support::assert_in_metrics_reference(ALL.iter().copied());
    }
}
