//! The posture report: pure arithmetic over the evidence of one or many nodes
//! ([`NodeEvidence`]), by service. The JSON form is [`Posture`] (documented field by field in
//! docs/POSTURE.md, with the definitions used here):
//!
//! - **pass rate** (drills): drills that ended `passed` ÷ drills that ended, any verdict,
//!   in the period;
//! - **compliance** (an objective): drills whose report judged the objective met ÷ drills
//!   whose report carries the objective (a drill that never recovered misses its RTO);
//!   for a backup source's RPO, healthy freshness checks ÷ freshness checks;
//! - **restore pass rate**: restore tests that restored and verified ÷ restore tests run;
//! - **worst** and **median**: of the measured values (the mean of the middle two for an
//!   even count);
//! - **trend**: the least-squares slope of the measured values over time; with three points
//!   or more, `worsening` when the change it predicts over the period's span is above 10 % of
//!   the median, `improving` below −10 %, else `stable`; `insufficient-data` under three
//!   points;
//! - **gaps**: a configured scenario not run in the period (`scenario-not-run`) or whose
//!   last run is older than 1.5 periods of its schedule (`scenario-overdue`); a source with no
//!   restore test in the period (`source-never-restore-tested`); an objective no evidence in
//!   the period measured (`objective-without-evidence`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::history::{CheckRecord, DrillRecord, HistoryPage, Item};
use crate::backup::{CheckKind, SourceKind, Status};
use crate::drill::report::Verdict;

/// Format version of the JSON report.
pub const POSTURE_VERSION: u32 = 1;

/// The service of evidence that names none.
pub const UNASSIGNED: &str = "unassigned";

/// A schedule's run is overdue past this many periods.
const OVERDUE_PERIODS: f64 = 1.5;

/// A trend below this share of the median over the period is `stable`.
const TREND_THRESHOLD: f64 = 0.10;

/// One node's evidence, or why it could not be had.
#[derive(Clone, Debug)]
pub struct NodeEvidence {
    /// The node's name.
    pub node: String,
    /// Where a drill's own report is, with `{id}` for its id
    /// (`file:///var/lib/faultline/drills/{id}.json`, `https://node:9465/v1/drills/{id}/html`).
    pub drill_href: String,
    /// The history, or why it could not be read (an unreachable agent).
    pub history: Result<HistoryPage, String>,
}

/// What the report covers.
#[derive(Clone, Debug)]
pub struct Options {
    /// Start of the period, Unix seconds.
    pub since: f64,
    /// End of the period (the report's time), Unix seconds.
    pub until: f64,
    /// Only this service.
    pub service: Option<String>,
}

/// The whole report.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Posture {
    /// [`POSTURE_VERSION`].
    pub version: u32,
    /// Start of the period, Unix seconds.
    pub since: f64,
    /// End of the period, Unix seconds.
    pub until: f64,
    /// The `--service` filter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_filter: Option<String>,
    /// Each node asked, reachable or not.
    pub nodes: Vec<NodeStatus>,
    /// Figures over everything in the report.
    pub totals: Totals,
    /// By service, by name.
    pub services: Vec<ServicePosture>,
    /// What was not proven.
    pub gaps: Vec<Gap>,
}

/// A node and whether its history could be read.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NodeStatus {
    /// Name.
    pub node: String,
    /// `ok` or `unreachable`.
    pub status: String,
    /// Why not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Drills in the period.
    pub drills: usize,
    /// Backup checks in the period.
    pub checks: usize,
    /// Records skipped as torn or damaged.
    pub skipped: usize,
}

/// Figures over the whole report.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Totals {
    /// Drills run.
    pub drills: usize,
    /// Of which passed.
    pub drills_passed: usize,
    /// passed ÷ run.
    pub drill_pass_rate: Option<f64>,
    /// Objective verdicts met.
    pub objectives_met: usize,
    /// Objective verdicts missed.
    pub objectives_missed: usize,
    /// Restore tests run.
    pub restore_tests: usize,
    /// Of which passed.
    pub restore_passed: usize,
    /// passed ÷ run.
    pub restore_pass_rate: Option<f64>,
    /// Number of gaps.
    pub gaps: usize,
}

/// One service.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ServicePosture {
    /// Name ([`UNASSIGNED`] for evidence that names none).
    pub service: String,
    /// Its tier, as written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tier: Option<String>,
    /// Its scenarios.
    pub scenarios: Vec<ScenarioPosture>,
    /// Its backup sources.
    pub sources: Vec<SourcePosture>,
}

/// A trend.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Trend {
    /// `improving`, `worsening`, `stable` or `insufficient-data`.
    pub direction: String,
    /// Least-squares slope, seconds per day.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slope_seconds_per_day: Option<f64>,
    /// Points it is computed from.
    pub points: usize,
}

/// Worst, median and trend of measured values.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Figures {
    /// Values measured.
    pub measured: usize,
    /// The largest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worst_seconds: Option<f64>,
    /// The median.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub median_seconds: Option<f64>,
    /// Over time.
    pub trend: Trend,
}

/// One objective of one scenario over the period.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ObjectivePosture {
    /// `rto` or `rpo`.
    pub name: String,
    /// The target, seconds (the latest run's, else the configured one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_seconds: Option<f64>,
    /// Drills that judged it.
    pub evidence: usize,
    /// Of which met.
    pub met: usize,
    /// Of which missed.
    pub missed: usize,
    /// met ÷ evidence.
    pub compliance: Option<f64>,
    /// The measured values.
    pub figures: Figures,
}

/// One objective's verdict in one drill.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunObjective {
    /// `rto` or `rpo`.
    pub name: String,
    /// Target, seconds.
    pub target_seconds: f64,
    /// Measured, seconds.
    pub measured_seconds: Option<f64>,
    /// Met.
    pub met: bool,
}

/// One drill, with the link to its report.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DrillRun {
    /// Drill id.
    pub id: String,
    /// The node it ran on.
    pub node: String,
    /// Its full report.
    pub href: String,
    /// Unix seconds.
    pub started_at: f64,
    /// Verdict.
    pub verdict: Verdict,
    /// Measured RTO.
    pub rto_seconds: Option<f64>,
    /// Measured RPO.
    pub rpo_seconds: Option<f64>,
    /// Objective verdicts.
    pub objectives: Vec<RunObjective>,
}

/// One scenario over the period.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ScenarioPosture {
    /// Name.
    pub scenario: String,
    /// Nodes it ran on or is configured on.
    pub nodes: Vec<String>,
    /// Drills run.
    pub runs: usize,
    /// Of which passed.
    pub passed: usize,
    /// passed ÷ runs.
    pub pass_rate: Option<f64>,
    /// The latest run, Unix seconds.
    pub last_run_at: Option<f64>,
    /// Each objective.
    pub objectives: Vec<ObjectivePosture>,
    /// Every drill, oldest first.
    pub drills: Vec<DrillRun>,
}

/// Runs and passes of one check kind.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CheckStats {
    /// Checks run.
    pub runs: usize,
    /// Of which healthy.
    pub passed: usize,
    /// passed ÷ runs (for freshness: the RPO compliance).
    pub rate: Option<f64>,
}

/// One check, with the link to its record.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CheckRun {
    /// Record id.
    pub id: String,
    /// The node.
    pub node: String,
    /// Its record in the report (`#check-<id>`).
    pub href: String,
    /// Which check.
    pub check: CheckKind,
    /// Healthy or unhealthy.
    pub status: Status,
    /// Unix seconds.
    pub started: f64,
    /// Restore + verification, seconds (restore tests).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore_seconds: Option<f64>,
    /// One line.
    pub summary: String,
}

/// One backup source over the period.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SourcePosture {
    /// Name.
    pub source: String,
    /// Kind.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<SourceKind>,
    /// Nodes.
    pub nodes: Vec<String>,
    /// RPO, seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rpo_seconds: Option<f64>,
    /// Restore-time objective, seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rto_seconds: Option<f64>,
    /// Freshness checks (rate: RPO compliance).
    pub freshness: CheckStats,
    /// Integrity checks.
    pub integrity: CheckStats,
    /// Restore tests (rate: restore pass rate).
    pub restore: CheckStats,
    /// Restore + verification durations of the restore tests that restored.
    pub restore_duration: Figures,
    /// Restore tests within the RTO, of those timed (with an RTO set).
    pub restores_within_rto: CheckStats,
    /// Every check, oldest first.
    pub checks: Vec<CheckRun>,
}

/// Something not proven.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Gap {
    /// `scenario-not-run`, `scenario-overdue`, `source-never-restore-tested`,
    /// `objective-without-evidence`.
    pub kind: String,
    /// The service.
    pub service: String,
    /// The node.
    pub node: String,
    /// The scenario, source, or `scenario/objective`.
    pub subject: String,
    /// For people.
    pub detail: String,
}

fn rate(passed: usize, runs: usize) -> Option<f64> {
    (runs > 0).then(|| passed as f64 / runs as f64)
}

/// The median of `v` (sorted or not).
pub fn median(v: &[f64]) -> Option<f64> {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(s[n / 2]),
        _ => Some((s[n / 2 - 1] + s[n / 2]) / 2.0),
    }
}

/// The trend of `(unix time, value)` points (see the module docs).
pub fn trend(points: &[(f64, f64)]) -> Trend {
    let n = points.len();
    if n < 3 {
        return Trend {
            direction: "insufficient-data".into(),
            slope_seconds_per_day: None,
            points: n,
        };
    }
    let days: Vec<(f64, f64)> = points.iter().map(|(t, v)| (t / 86_400.0, *v)).collect();
    let mx = days.iter().map(|p| p.0).sum::<f64>() / n as f64;
    let my = days.iter().map(|p| p.1).sum::<f64>() / n as f64;
    let sxx: f64 = days.iter().map(|p| (p.0 - mx).powi(2)).sum();
    let sxy: f64 = days.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    let slope = if sxx > 0.0 { sxy / sxx } else { 0.0 };
    let span = days.iter().map(|p| p.0).fold(f64::NEG_INFINITY, f64::max)
        - days.iter().map(|p| p.0).fold(f64::INFINITY, f64::min);
    let values: Vec<f64> = points.iter().map(|p| p.1).collect();
    let med = median(&values).unwrap_or(0.0).abs().max(1e-9);
    let change = slope * span / med;
    let direction = if change > TREND_THRESHOLD {
        "worsening"
    } else if change < -TREND_THRESHOLD {
        "improving"
    } else {
        "stable"
    };
    Trend {
        direction: direction.into(),
        slope_seconds_per_day: Some(slope),
        points: n,
    }
}

fn figures(points: &[(f64, f64)]) -> Figures {
    let values: Vec<f64> = points.iter().map(|p| p.1).collect();
    Figures {
        measured: values.len(),
        worst_seconds: values.iter().copied().reduce(f64::max),
        median_seconds: median(&values),
        trend: trend(points),
    }
}

#[derive(Default)]
struct ServiceAcc {
    tier: Option<String>,
    scenarios: BTreeMap<String, ScenarioAcc>,
    sources: BTreeMap<String, SourceAcc>,
}

#[derive(Default)]
struct ScenarioAcc {
    nodes: Vec<String>,
    configured: BTreeMap<&'static str, f64>,
    drills: Vec<DrillRun>,
}

#[derive(Default)]
struct SourceAcc {
    kind: Option<SourceKind>,
    nodes: Vec<String>,
    rpo: Option<f64>,
    rto: Option<f64>,
    records: Vec<(String, CheckRecord)>,
}

fn add_node(nodes: &mut Vec<String>, node: &str) {
    if !nodes.iter().any(|n| n == node) {
        nodes.push(node.to_owned());
    }
}

fn service_of(own: Option<&String>, configured: Option<&String>) -> String {
    own.or(configured)
        .cloned()
        .unwrap_or_else(|| UNASSIGNED.to_owned())
}

/// Builds the report from every node's evidence.
pub fn build(evidence: &[NodeEvidence], opt: &Options) -> Posture {
    let mut services: BTreeMap<String, ServiceAcc> = BTreeMap::new();
    let mut nodes = Vec::new();
    let mut gaps = Vec::new();
    let wanted = |s: &str| opt.service.as_deref().is_none_or(|w| w == s);
    for ev in evidence {
        let page = match &ev.history {
            Ok(p) => p,
            Err(e) => {
                nodes.push(NodeStatus {
                    node: ev.node.clone(),
                    status: "unreachable".into(),
                    error: Some(e.clone()),
                    drills: 0,
                    checks: 0,
                    skipped: 0,
                });
                continue;
            }
        };
        let cat = &page.catalog;
        let (mut n_drills, mut n_checks) = (0, 0);
        for item in page.items.iter().filter(|i| i.at() >= opt.since) {
            match item {
                Item::Drill(d) => {
                    let conf = cat.scenarios.iter().find(|s| s.name == d.scenario);
                    let service =
                        service_of(d.service.as_ref(), conf.and_then(|c| c.service.as_ref()));
                    if !wanted(&service) {
                        continue;
                    }
                    n_drills += 1;
                    let svc = services.entry(service).or_default();
                    svc.tier = svc
                        .tier
                        .take()
                        .or_else(|| d.tier.clone())
                        .or_else(|| conf.and_then(|c| c.tier.clone()));
                    let sc = svc.scenarios.entry(d.scenario.clone()).or_default();
                    add_node(&mut sc.nodes, &ev.node);
                    sc.drills.push(drill_run(d, &ev.node, &ev.drill_href));
                }
                Item::Check(c) => {
                    let conf = cat.sources.iter().find(|s| s.name == c.source);
                    let service =
                        service_of(c.service.as_ref(), conf.and_then(|s| s.service.as_ref()));
                    if !wanted(&service) {
                        continue;
                    }
                    n_checks += 1;
                    let svc = services.entry(service).or_default();
                    svc.tier = svc
                        .tier
                        .take()
                        .or_else(|| c.tier.clone())
                        .or_else(|| conf.and_then(|s| s.tier.clone()));
                    let src = svc.sources.entry(c.source.clone()).or_default();
                    add_node(&mut src.nodes, &ev.node);
                    src.kind = Some(c.kind);
                    src.rpo = src.rpo.or(c.rpo_seconds);
                    src.rto = src.rto.or(c.rto_seconds);
                    src.records.push((ev.node.clone(), c.clone()));
                }
            }
        }
        // What the node is configured to prove, run or not.
        for s in &cat.scenarios {
            let service = service_of(s.service.as_ref(), None);
            if !wanted(&service) {
                continue;
            }
            let svc = services.entry(service.clone()).or_default();
            svc.tier = svc.tier.take().or_else(|| s.tier.clone());
            let sc = svc.scenarios.entry(s.name.clone()).or_default();
            add_node(&mut sc.nodes, &ev.node);
            if let Some(t) = s.rto_seconds {
                sc.configured.insert("rto", t);
            }
            if let Some(t) = s.rpo_seconds {
                sc.configured.insert("rpo", t);
            }
            gaps.extend(scenario_gaps(s, &service, &ev.node, sc, opt));
        }
        for s in &cat.sources {
            let service = service_of(s.service.as_ref(), None);
            if !wanted(&service) {
                continue;
            }
            let svc = services.entry(service.clone()).or_default();
            svc.tier = svc.tier.take().or_else(|| s.tier.clone());
            let src = svc.sources.entry(s.name.clone()).or_default();
            add_node(&mut src.nodes, &ev.node);
            src.kind = Some(s.kind);
            src.rpo = Some(s.rpo_seconds);
            src.rto = s.rto_seconds.or(src.rto);
            gaps.extend(source_gaps(s, &service, &ev.node, src));
        }
        nodes.push(NodeStatus {
            node: ev.node.clone(),
            status: "ok".into(),
            error: None,
            drills: n_drills,
            checks: n_checks,
            skipped: page.skipped,
        });
    }
    let services: Vec<ServicePosture> = services
        .into_iter()
        .map(|(service, acc)| ServicePosture {
            service,
            tier: acc.tier,
            scenarios: acc
                .scenarios
                .into_iter()
                .map(|(name, a)| scenario_posture(name, a))
                .collect(),
            sources: acc
                .sources
                .into_iter()
                .map(|(name, a)| source_posture(name, a))
                .collect(),
        })
        .collect();
    let mut totals = Totals::default();
    for s in &services {
        for sc in &s.scenarios {
            totals.drills += sc.runs;
            totals.drills_passed += sc.passed;
            for o in &sc.objectives {
                totals.objectives_met += o.met;
                totals.objectives_missed += o.missed;
            }
        }
        for src in &s.sources {
            totals.restore_tests += src.restore.runs;
            totals.restore_passed += src.restore.passed;
        }
    }
    totals.drill_pass_rate = rate(totals.drills_passed, totals.drills);
    totals.restore_pass_rate = rate(totals.restore_passed, totals.restore_tests);
    totals.gaps = gaps.len();
    Posture {
        version: POSTURE_VERSION,
        since: opt.since,
        until: opt.until,
        service_filter: opt.service.clone(),
        nodes,
        totals,
        services,
        gaps,
    }
}

fn drill_run(d: &DrillRecord, node: &str, href: &str) -> DrillRun {
    DrillRun {
        id: d.id.clone(),
        node: node.to_owned(),
        href: href.replace("{id}", &d.id),
        started_at: d.started_at,
        verdict: d.verdict,
        rto_seconds: d.rto_seconds,
        rpo_seconds: d.rpo_seconds,
        objectives: d
            .objectives
            .iter()
            .map(|o| RunObjective {
                name: o.name.clone(),
                target_seconds: o.target_seconds,
                measured_seconds: o.measured_seconds,
                met: o.met,
            })
            .collect(),
    }
}

fn scenario_posture(scenario: String, mut a: ScenarioAcc) -> ScenarioPosture {
    a.drills
        .sort_by(|x, y| x.started_at.total_cmp(&y.started_at));
    let runs = a.drills.len();
    let passed = a
        .drills
        .iter()
        .filter(|d| d.verdict == Verdict::Passed)
        .count();
    let mut names: Vec<String> = a.configured.keys().map(|k| (*k).to_owned()).collect();
    for d in &a.drills {
        for o in &d.objectives {
            if !names.contains(&o.name) {
                names.push(o.name.clone());
            }
        }
    }
    names.sort();
    let objectives = names
        .into_iter()
        .map(|name| {
            let judged: Vec<(f64, &RunObjective)> = a
                .drills
                .iter()
                .flat_map(|d| {
                    d.objectives
                        .iter()
                        .filter(|o| o.name == name)
                        .map(move |o| (d.started_at, o))
                })
                .collect();
            let met = judged.iter().filter(|(_, o)| o.met).count();
            let points: Vec<(f64, f64)> = judged
                .iter()
                .filter_map(|(t, o)| o.measured_seconds.map(|m| (*t, m)))
                .collect();
            ObjectivePosture {
                target_seconds: judged
                    .last()
                    .map(|(_, o)| o.target_seconds)
                    .or_else(|| a.configured.get(name.as_str()).copied()),
                evidence: judged.len(),
                met,
                missed: judged.len() - met,
                compliance: rate(met, judged.len()),
                figures: figures(&points),
                name,
            }
        })
        .collect();
    ScenarioPosture {
        scenario,
        nodes: a.nodes,
        runs,
        passed,
        pass_rate: rate(passed, runs),
        last_run_at: a.drills.last().map(|d| d.started_at),
        objectives,
        drills: a.drills,
    }
}

fn source_posture(source: String, mut a: SourceAcc) -> SourcePosture {
    a.records
        .sort_by(|x, y| x.1.started.total_cmp(&y.1.started));
    let stats = |k: CheckKind| {
        let of: Vec<&CheckRecord> = a
            .records
            .iter()
            .map(|(_, r)| r)
            .filter(|r| r.check == k)
            .collect();
        let passed = of.iter().filter(|r| r.status == Status::Healthy).count();
        CheckStats {
            runs: of.len(),
            passed,
            rate: rate(passed, of.len()),
        }
    };
    let timed: Vec<(f64, f64)> = a
        .records
        .iter()
        .filter(|(_, r)| r.check == CheckKind::Restore)
        .filter_map(|(_, r)| r.restore_total_seconds().map(|s| (r.started, s)))
        .collect();
    let within = match a.rto {
        Some(rto) => {
            let ok = timed.iter().filter(|(_, s)| *s <= rto).count();
            CheckStats {
                runs: timed.len(),
                passed: ok,
                rate: rate(ok, timed.len()),
            }
        }
        None => CheckStats::default(),
    };
    SourcePosture {
        freshness: stats(CheckKind::Freshness),
        integrity: stats(CheckKind::Integrity),
        restore: stats(CheckKind::Restore),
        restore_duration: figures(&timed),
        restores_within_rto: within,
        checks: a
            .records
            .iter()
            .map(|(node, r)| CheckRun {
                id: r.id.clone(),
                node: node.clone(),
                href: format!("#check-{}", r.id),
                check: r.check,
                status: r.status,
                started: r.started,
                restore_seconds: r.restore_total_seconds(),
                summary: r.summary.clone(),
            })
            .collect(),
        source,
        kind: a.kind,
        nodes: a.nodes,
        rpo_seconds: a.rpo,
        rto_seconds: a.rto,
    }
}

fn scenario_gaps(
    s: &super::history::ScenarioInfo,
    service: &str,
    node: &str,
    sc: &ScenarioAcc,
    opt: &Options,
) -> Vec<Gap> {
    let gap = |kind: &str, subject: String, detail: String| Gap {
        kind: kind.into(),
        service: service.to_owned(),
        node: node.to_owned(),
        subject,
        detail,
    };
    let mine: Vec<&DrillRun> = sc.drills.iter().filter(|d| d.node == node).collect();
    let mut out = Vec::new();
    let last = mine.iter().map(|d| d.started_at).reduce(f64::max);
    match (last, s.every_seconds) {
        (None, _) => out.push(gap(
            "scenario-not-run",
            s.name.clone(),
            match &s.schedule {
                Some(c) => format!("scheduled \"{c}\" but no drill ran in the period"),
                None => "configured, never run in the period".into(),
            },
        )),
        (Some(t), Some(every)) if opt.until - t > OVERDUE_PERIODS * every => out.push(gap(
            "scenario-overdue",
            s.name.clone(),
            format!(
                "last run {} ago; its schedule runs it every {}",
                crate::backup::human(opt.until - t),
                crate::backup::human(every)
            ),
        )),
        _ => {}
    }
    for (name, target) in [("rto", s.rto_seconds), ("rpo", s.rpo_seconds)] {
        if target.is_none() {
            continue;
        }
        let measured = mine.iter().any(|d| {
            d.objectives
                .iter()
                .any(|o| o.name == name && o.measured_seconds.is_some())
        });
        if !measured {
            out.push(gap(
                "objective-without-evidence",
                format!("{}/{name}", s.name),
                format!("{name} objective set; no drill in the period measured it"),
            ));
        }
    }
    out
}

fn source_gaps(
    s: &super::history::SourceInfo,
    service: &str,
    node: &str,
    src: &SourceAcc,
) -> Vec<Gap> {
    let gap = |kind: &str, subject: String, detail: String| Gap {
        kind: kind.into(),
        service: service.to_owned(),
        node: node.to_owned(),
        subject,
        detail,
    };
    let mine = |k: CheckKind| {
        src.records
            .iter()
            .filter(move |(n, r)| n == node && r.check == k)
    };
    let mut out = Vec::new();
    if mine(CheckKind::Restore).next().is_none() {
        out.push(gap(
            "source-never-restore-tested",
            s.name.clone(),
            if s.restore_every_seconds.is_some() {
                "a restore test is scheduled but none ran in the period".into()
            } else {
                "no restore test configured (add `restore:` to the source)".into()
            },
        ));
    }
    if mine(CheckKind::Freshness).next().is_none() {
        out.push(gap(
            "objective-without-evidence",
            format!("{}/rpo", s.name),
            "rpo set; no freshness check in the period".into(),
        ));
    }
    if s.rto_seconds.is_some()
        && !mine(CheckKind::Restore).any(|(_, r)| r.restore_seconds.is_some())
    {
        out.push(gap(
            "objective-without-evidence",
            format!("{}/rto", s.name),
            "rto set; no restore test in the period was timed".into(),
        ));
    }
    out
}

#[cfg(test)]
mod tests;
