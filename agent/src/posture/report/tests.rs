use super::*;
use crate::drill::report::ObjectiveResult;
use crate::posture::history::{Catalog, ScenarioInfo, SourceInfo};

const DAY: f64 = 86_400.0;
const T0: f64 = 1_790_000_000.0;

fn drill(id: &str, scenario: &str, at: f64, rto: Option<f64>, target: f64) -> Item {
    let met = rto.is_some_and(|r| r <= target);
    Item::Drill(DrillRecord {
        id: id.into(),
        scenario: scenario.into(),
        service: Some("shop".into()),
        tier: Some("tier-1".into()),
        started_at: at,
        finished_at: at + 5.0,
        verdict: if met {
            Verdict::Passed
        } else {
            Verdict::Failed
        },
        reason: String::new(),
        rto_seconds: rto,
        rpo_seconds: None,
        objectives: vec![ObjectiveResult {
            name: "rto".into(),
            target_seconds: target,
            measured_seconds: rto,
            precision_seconds: None,
            met,
            detail: String::new(),
        }],
    })
}

fn check(source: &str, kind: CheckKind, at: f64, ok: bool, secs: Option<f64>) -> Item {
    Item::Check(CheckRecord {
        id: format!("{source}-{}-{at}", kind.as_str()),
        source: source.into(),
        kind: SourceKind::Restic,
        service: Some("shop".into()),
        tier: None,
        check: kind,
        status: if ok {
            Status::Healthy
        } else {
            Status::Unhealthy
        },
        started: at,
        duration_seconds: 1.0,
        summary: "s".into(),
        error: None,
        age_seconds: None,
        rpo_seconds: Some(3600.0),
        restore_seconds: secs,
        verify_seconds: secs.map(|_| 0.5),
        rto_seconds: Some(10.0),
        rto_exceeded: None,
        backup_id: None,
    })
}

fn catalog() -> Catalog {
    Catalog {
        scenarios: vec![
            ScenarioInfo {
                name: "web".into(),
                service: Some("shop".into()),
                tier: Some("tier-1".into()),
                rto_seconds: Some(5.0),
                rpo_seconds: None,
                schedule: Some("0 3 * * *".into()),
                every_seconds: Some(DAY),
            },
            ScenarioInfo {
                name: "never".into(),
                service: Some("shop".into()),
                tier: None,
                rto_seconds: Some(5.0),
                rpo_seconds: None,
                schedule: None,
                every_seconds: None,
            },
        ],
        sources: vec![
            SourceInfo {
                name: "db".into(),
                kind: SourceKind::Restic,
                service: Some("shop".into()),
                tier: None,
                rpo_seconds: 3600.0,
                rto_seconds: Some(10.0),
                restore_every_seconds: Some(DAY),
            },
            SourceInfo {
                name: "logs".into(),
                kind: SourceKind::Files,
                service: Some("ops".into()),
                tier: None,
                rpo_seconds: 3600.0,
                rto_seconds: None,
                restore_every_seconds: None,
            },
        ],
    }
}

fn node(items: Vec<Item>) -> NodeEvidence {
    NodeEvidence {
        node: "n1".into(),
        drill_href: "file:///s/drills/{id}.json".into(),
        history: Ok(HistoryPage {
            catalog: catalog(),
            items,
            next: None,
            skipped: 1,
        }),
    }
}

fn opt(until: f64) -> Options {
    Options {
        since: T0 - 90.0 * DAY,
        until,
        service: None,
    }
}

#[test]
fn pass_rates_worst_median_and_missed_objectives_come_from_the_drills() {
    let items = vec![
        drill("d1", "web", T0, Some(1.0), 5.0),
        drill("d2", "web", T0 + DAY, Some(3.0), 5.0),
        drill("d3", "web", T0 + 2.0 * DAY, Some(7.0), 5.0),
        drill("d4", "web", T0 + 3.0 * DAY, None, 5.0),
        drill("old", "web", T0 - 100.0 * DAY, Some(1.0), 5.0),
    ];
    let p = build(&[node(items)], &opt(T0 + 3.5 * DAY));
    let shop = p.services.iter().find(|s| s.service == "shop").unwrap();
    assert_eq!(shop.tier.as_deref(), Some("tier-1"));
    let web = shop.scenarios.iter().find(|s| s.scenario == "web").unwrap();
    assert_eq!((web.runs, web.passed, web.pass_rate), (4, 2, Some(0.5)));
    let rto = &web.objectives[0];
    assert_eq!((rto.evidence, rto.met, rto.missed), (4, 2, 2));
    assert_eq!(rto.figures.measured, 3);
    assert_eq!(rto.figures.worst_seconds, Some(7.0));
    assert_eq!(rto.figures.median_seconds, Some(3.0));
    assert_eq!(rto.figures.trend.direction, "worsening");
    assert_eq!(web.drills[0].href, "file:///s/drills/d1.json");
    assert_eq!(p.totals.drills, 4);
    assert_eq!(p.totals.objectives_missed, 2);
    assert_eq!(p.nodes[0].skipped, 1);
    let kinds: Vec<(&str, &str)> = p
        .gaps
        .iter()
        .map(|g| (g.kind.as_str(), g.subject.as_str()))
        .collect();
    assert!(kinds.contains(&("scenario-not-run", "never")), "{kinds:?}");
    assert!(
        kinds.contains(&("objective-without-evidence", "never/rto")),
        "{kinds:?}"
    );
    assert!(!kinds.iter().any(|k| k.1 == "web"), "{kinds:?}");
    // Two days later the daily schedule is overdue.
    let late = build(
        &[node(vec![drill("d1", "web", T0, Some(1.0), 5.0)])],
        &opt(T0 + 2.0 * DAY),
    );
    assert!(
        late.gaps
            .iter()
            .any(|g| g.kind == "scenario-overdue" && g.subject == "web"),
        "{:?}",
        late.gaps
    );
}

#[test]
fn sources_get_freshness_compliance_restore_pass_rate_and_durations_against_the_rto() {
    let items = vec![
        check("db", CheckKind::Freshness, T0, true, None),
        check("db", CheckKind::Freshness, T0 + 1.0, false, None),
        check("db", CheckKind::Restore, T0 + 2.0, true, Some(2.0)),
        check("db", CheckKind::Restore, T0 + 3.0, true, Some(12.0)),
        check("db", CheckKind::Restore, T0 + 4.0, false, None),
    ];
    let p = build(&[node(items)], &opt(T0 + DAY));
    let shop = p.services.iter().find(|s| s.service == "shop").unwrap();
    let db = &shop.sources[0];
    assert_eq!(db.freshness.rate, Some(0.5));
    assert_eq!((db.restore.runs, db.restore.passed), (3, 2));
    assert_eq!(db.restore_duration.worst_seconds, Some(12.5));
    assert_eq!(db.restore_duration.median_seconds, Some(7.5));
    assert_eq!(
        (db.restores_within_rto.runs, db.restores_within_rto.passed),
        (2, 1)
    );
    assert_eq!(db.checks[2].href, format!("#check-{}", db.checks[2].id));
    let ops = p.services.iter().find(|s| s.service == "ops").unwrap();
    assert_eq!(ops.sources[0].source, "logs");
    assert!(
        p.gaps
            .iter()
            .any(|g| g.kind == "source-never-restore-tested"
                && g.subject == "logs"
                && g.detail.contains("no restore test configured"))
    );
    assert!(
        !p.gaps.iter().any(|g| g.subject.starts_with("db")),
        "{:?}",
        p.gaps
    );
    // --service keeps one service.
    let only = build(
        &[node(vec![])],
        &Options {
            service: Some("ops".into()),
            ..opt(T0)
        },
    );
    let names: Vec<&str> = only.services.iter().map(|s| s.service.as_str()).collect();
    assert_eq!(names, ["ops"]);
}

#[test]
fn an_unreachable_node_is_listed_never_left_out() {
    let down = NodeEvidence {
        node: "n2".into(),
        drill_href: String::new(),
        history: Err("did not answer".into()),
    };
    let p = build(&[node(vec![]), down], &opt(T0));
    assert_eq!(p.nodes.len(), 2);
    assert_eq!(p.nodes[1].status, "unreachable");
    assert_eq!(p.nodes[1].error.as_deref(), Some("did not answer"));
}

#[test]
fn median_and_trend_follow_their_definitions() {
    assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
    assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), Some(2.5));
    assert_eq!(median(&[]), None);
    let flat = trend(&[(0.0, 1.0), (DAY, 1.05), (2.0 * DAY, 0.98)]);
    assert_eq!(flat.direction, "stable");
    let better = trend(&[(0.0, 3.0), (DAY, 2.0), (2.0 * DAY, 1.0)]);
    assert_eq!(better.direction, "improving");
    assert!((better.slope_seconds_per_day.unwrap() + 1.0).abs() < 1e-9);
    assert_eq!(
        trend(&[(0.0, 1.0), (1.0, 9.0)]).direction,
        "insufficient-data"
    );
}
