//! The report of a drill from its live record: at the end ([`build_report`]) or while it
//! runs ([`live_report`], verdict `running`, for the API). The RTO, detection and RPO
//! come from [`crate::drill::measure`]; here they are judged against the objectives and the
//! way the drill ended becomes a verdict and its reason.

use faultline_chaos::Requester;

use super::live::{Live, LiveState};
use super::verify::ReadBack;
use super::{Drill, Ended};
use crate::drill::measure::{self, RpoMeasure, RtoMeasure};
use crate::drill::report::{
    DrillReport, ObjectiveResult, Phase, Progress, REPORT_VERSION, Verdict,
};
use crate::drill::scenario::{Canary, Scenario};
use faultline_chaos::units::HumanDuration;

/// The final report of drill `sh`, started at `started`, that ended as `ended`.
pub(super) fn build_report(sh: &Drill, started: f64, ended: Ended) -> DrillReport {
    let finished = sh.clock.now();
    snapshot(
        &sh.id,
        &sh.sc,
        &sh.ctx.requester,
        &sh.ctx.live,
        started,
        finished,
        Some(ended),
    )
}

/// A report of a running drill (verdict `running`), for the API.
pub fn live_report(
    id: &str,
    sc: &Scenario,
    requester: &Requester,
    live: &Live,
    started: f64,
    now: f64,
) -> DrillReport {
    snapshot(id, sc, requester, live, started, now, None)
}

/// How far a running drill is (verdict `running`), for the API's progress route: counted
/// under the live record's lock, nothing copied, whatever the drill's length.
pub fn live_progress(id: &str, live: &Live) -> Progress {
    let s = live.lock();
    Progress {
        id: id.to_owned(),
        verdict: Verdict::Running,
        phase: s.phase.clone(),
        events: s.timeline.iter().filter(|e| !e.kind.is_routine()).count(),
        rounds: s.rounds.len(),
    }
}

fn snapshot(
    id: &str,
    sc: &Scenario,
    requester: &Requester,
    live: &Live,
    started: f64,
    finished: f64,
    ended: Option<Ended>,
) -> DrillReport {
    let s = live.lock();
    let interval = sc.probe_interval.0.as_secs_f64();
    let k = sc.recovery.consecutive;
    let survivor = match &ended {
        Some(Ended::Measured {
            survivor: Some(r), ..
        }) => Some(r),
        _ => None,
    };
    let m = Measures::of(&s, sc, survivor);
    let mut objectives = Vec::new();
    if let Some(t) = sc.objectives.rto {
        objectives.push(rto_objective(t, m.rto.as_ref(), k, sc.probe_interval));
    }
    if let Some(t) = sc.objectives.rpo {
        objectives.push(rpo_objective(
            t,
            m.rpo.as_ref(),
            m.backup_rpo,
            m.reader_error.as_deref(),
        ));
    }
    let (verdict, reason) = verdict(ended, &objectives, &s.phase, sc.max_duration);
    let mut timeline = s.timeline.clone();
    timeline.sort_by(|a, b| a.at.total_cmp(&b.at));
    DrillReport {
        version: REPORT_VERSION,
        id: id.to_owned(),
        scenario: sc.name.clone(),
        description: sc.description.clone(),
        requester: requester.to_string(),
        started_at: started,
        finished_at: finished,
        verdict,
        reason,
        probe_interval_seconds: interval,
        consecutive: k,
        fault_at: s.fault_at,
        detection_seconds: m.detection,
        phases: phases(&s.phases, s.fault_at, m.detection),
        rto: m.rto,
        rpo: m.rpo,
        backup_point_at: s.backup_point_at,
        backup_rpo_seconds: m.backup_rpo,
        objectives,
        faults: s.faults.clone(),
        rounds: s.rounds.clone(),
        timeline,
        scenario_spec: serde_json::to_value(sc).unwrap_or_default(),
    }
}

/// What the evidence so far measures.
#[derive(Debug, Default)]
struct Measures {
    rto: Option<RtoMeasure>,
    detection: Option<f64>,
    rpo: Option<RpoMeasure>,
    backup_rpo: Option<f64>,
    /// Why the canary reader gave no answer.
    reader_error: Option<String>,
}

impl Measures {
    /// From the live record `s` of scenario `sc`, with the canary reader's answer when
    /// verification read it.
    fn of(s: &LiveState, sc: &Scenario, survivor: Option<&ReadBack>) -> Self {
        let Some(fault_at) = s.fault_at else {
            return Measures::default();
        };
        let mut m = Measures {
            rto: s.rto(sc.recovery.consecutive, sc.probe_interval.0.as_secs_f64()),
            detection: measure::detection(&s.rounds, fault_at),
            backup_rpo: s.backup_point_at.map(|b| measure::backup_rpo(fault_at, b)),
            ..Measures::default()
        };
        match (survivor, &sc.canary) {
            (Some(Ok(surv)), Some(Canary { interval, .. })) => {
                m.rpo = Some(measure::rpo(
                    &s.markers,
                    fault_at,
                    *surv,
                    interval.0.as_secs_f64(),
                ));
            }
            (Some(Err(e)), Some(_)) => m.reader_error = Some(e.clone()),
            _ => {}
        }
        m
    }
}

/// The recorded phases plus `detection` (from the fault to the first failing round), in
/// time order.
fn phases(recorded: &[Phase], fault_at: Option<f64>, detection: Option<f64>) -> Vec<Phase> {
    let mut phases = recorded.to_vec();
    if let (Some(f), Some(d)) = (fault_at, detection) {
        phases.push(Phase {
            name: "detection".into(),
            start: f,
            end: f + d,
            ok: true,
            detail: format!("first failing probe round {d:.3} s after the fault"),
        });
    }
    phases.sort_by(|a, b| a.start.total_cmp(&b.start));
    phases
}

/// The RTO objective `target` against the measured RTO (`None`: no recovery).
fn rto_objective(
    target: HumanDuration,
    rto: Option<&RtoMeasure>,
    k: usize,
    probe_interval: HumanDuration,
) -> ObjectiveResult {
    let target = target.0.as_secs_f64();
    match rto {
        Some(m) => ObjectiveResult {
            name: "rto".into(),
            target_seconds: target,
            measured_seconds: Some(m.seconds),
            precision_seconds: Some(m.precision_seconds),
            met: measure::meets(m.seconds, target),
            detail: format!(
                "first of {k} consecutive passing probe rounds after the fault; probe every {probe_interval}"
            ),
        },
        None => ObjectiveResult {
            name: "rto".into(),
            target_seconds: target,
            measured_seconds: None,
            precision_seconds: None,
            met: false,
            detail: "the service did not recover during the drill".into(),
        },
    }
}

/// The RPO objective `target` against the canary's RPO, else the restored backup's, else
/// why neither was measured. A canary RPO that is only a lower bound (no marker survived)
/// never meets it.
fn rpo_objective(
    target: HumanDuration,
    rpo: Option<&RpoMeasure>,
    backup_rpo: Option<f64>,
    reader_error: Option<&str>,
) -> ObjectiveResult {
    let target = target.0.as_secs_f64();
    match (rpo, backup_rpo) {
        (Some(m), _) => ObjectiveResult {
            name: "rpo".into(),
            target_seconds: target,
            measured_seconds: Some(m.seconds),
            precision_seconds: Some(m.precision_seconds),
            met: !m.lower_bound && measure::meets(m.seconds, target),
            detail: format!(
                "newest surviving canary marker {}; {} of {} markers written before the fault lost{}",
                m.newest_surviving_seq
                    .map_or("none".into(), |q| q.to_string()),
                m.lost,
                m.written,
                backup_rpo.map_or(String::new(), |b| format!(
                    "; backup point {b:.3} s before the fault"
                ))
            ),
        },
        (None, Some(b)) => ObjectiveResult {
            name: "rpo".into(),
            target_seconds: target,
            measured_seconds: Some(b),
            precision_seconds: None,
            met: measure::meets(b, target),
            detail: "fault time minus the restored backup's point in time".into(),
        },
        (None, None) => ObjectiveResult {
            name: "rpo".into(),
            target_seconds: target,
            measured_seconds: None,
            precision_seconds: None,
            met: false,
            detail: reader_error.map_or("not measured".into(), |e| {
                format!("canary reader failed: {e}")
            }),
        },
    }
}

/// The verdict and its reason: how the drill ended (`None`: it still runs, in `phase`)
/// and, for a measured drill, whether it recovered, verified and met every objective.
fn verdict(
    ended: Option<Ended>,
    objectives: &[ObjectiveResult],
    phase: &str,
    max_duration: HumanDuration,
) -> (Verdict, String) {
    let Some(ended) = ended else {
        return (Verdict::Running, format!("running: {phase}"));
    };
    match ended {
        Ended::SteadyStateFailed(r) => (Verdict::SteadyStateFailed, r),
        Ended::Error(r) => (Verdict::Error, r),
        Ended::Aborted(r) => (Verdict::Aborted, format!("aborted: {r}")),
        Ended::TimedOut => (
            Verdict::TimedOut,
            format!("max_duration {max_duration} passed"),
        ),
        Ended::Measured {
            recovered: false,
            detail,
            ..
        } => (Verdict::Failed, detail),
        Ended::Measured {
            verified: false, ..
        } => (
            Verdict::Failed,
            "the steady state did not hold at verification".into(),
        ),
        Ended::Measured { .. } => {
            let missed: Vec<&str> = objectives
                .iter()
                .filter(|o| !o.met)
                .map(|o| o.name.as_str())
                .collect();
            if !missed.is_empty() {
                (
                    Verdict::Failed,
                    format!("objective missed: {}", missed.join(", ")),
                )
            } else if objectives.is_empty() {
                (Verdict::Passed, "recovered; no objectives set".into())
            } else {
                (Verdict::Passed, "every objective met".into())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::tests::{rounds, scenario};
    use super::*;
    use crate::drill::measure::{Marker, Survivor};
    use crate::drill::report::{Event, EventKind};

    fn dur(ms: u64) -> HumanDuration {
        HumanDuration(Duration::from_millis(ms))
    }

    fn measured(recovered: bool, verified: bool) -> Option<Ended> {
        Some(Ended::Measured {
            recovered,
            verified,
            survivor: None,
            detail: "no 3 passing probe rounds".into(),
        })
    }

    fn objective(name: &str, met: bool) -> ObjectiveResult {
        ObjectiveResult {
            name: name.into(),
            target_seconds: 1.0,
            measured_seconds: Some(1.0),
            precision_seconds: None,
            met,
            detail: String::new(),
        }
    }

    fn rpo(seconds: f64, lower_bound: bool) -> RpoMeasure {
        RpoMeasure {
            seconds,
            precision_seconds: 0.1,
            newest_surviving_seq: (!lower_bound).then_some(4),
            newest_surviving_at: None,
            written: 6,
            lost: 2,
            lost_seqs: vec![5, 6],
            lower_bound,
        }
    }

    #[test]
    fn a_measured_drill_passes_only_recovered_verified_and_with_every_objective_met() {
        let v = |ended, objectives: &[ObjectiveResult]| {
            verdict(ended, objectives, "verification", dur(60_000))
        };
        let met = [objective("rto", true)];
        let missed = [objective("rto", true), objective("rpo", false)];
        assert_eq!(
            v(measured(true, true), &met),
            (Verdict::Passed, "every objective met".into())
        );
        assert_eq!(
            v(measured(true, true), &[]),
            (Verdict::Passed, "recovered; no objectives set".into())
        );
        assert_eq!(
            v(measured(true, true), &missed),
            (Verdict::Failed, "objective missed: rpo".into())
        );
        assert_eq!(
            v(measured(true, false), &met),
            (
                Verdict::Failed,
                "the steady state did not hold at verification".into()
            )
        );
        assert_eq!(
            v(measured(false, false), &met),
            (Verdict::Failed, "no 3 passing probe rounds".into()),
            "no recovery is the reason, before verification"
        );
    }

    #[test]
    fn progress_counts_the_news_and_stays_small_however_long_a_drill_runs() {
        use super::super::tests::outcome_at;
        let sc = scenario("faults:\n  - command: [\"true\"]\n");
        let (live, clock) = (Live::default(), crate::drill::probe::Clock::new());
        let probe_for = |n: u32| {
            for i in 0..n {
                live.outcome(
                    &outcome_at("up", true, f64::from(i), 0.001),
                    EventKind::Probe,
                );
            }
            live.lock()
                .rounds
                .extend(rounds(&vec![(0.0, true); n as usize]));
        };
        let t = live.begin(&clock, "faults");
        probe_for(10);
        let p = live_progress("d", &live);
        assert_eq!(
            (p.verdict, p.phase.as_str(), p.events, p.rounds),
            (Verdict::Running, "faults", 1, 10)
        );
        let small = serde_json::to_vec(&p).unwrap().len();
        live.end(&clock, "faults", t, true, "");
        probe_for(5000);
        let p = live_progress("d", &live);
        assert_eq!(
            (p.events, p.rounds),
            (2, 5010),
            "probe outcomes are no news"
        );
        assert_eq!(serde_json::to_vec(&p).unwrap().len(), small + 2);
        let requester = Requester::Api { token: "t".into() };
        let report = live_report("d", &sc, &requester, &live, 0.0, 1.0);
        assert_eq!(
            Progress::of(&report),
            p,
            "the report's own count is the live one"
        );
    }

    #[test]
    fn a_drill_that_runs_or_ended_early_says_how() {
        let v = |ended| verdict(ended, &[], "recovery", dur(120_000));
        assert_eq!(v(None), (Verdict::Running, "running: recovery".into()));
        assert_eq!(
            v(Some(Ended::Aborted("kill switch".into()))),
            (Verdict::Aborted, "aborted: kill switch".into())
        );
        assert_eq!(
            v(Some(Ended::TimedOut)),
            (Verdict::TimedOut, "max_duration 2m passed".into())
        );
        assert_eq!(
            v(Some(Ended::Error("fault step 1 failed".into()))),
            (Verdict::Error, "fault step 1 failed".into())
        );
        assert_eq!(
            v(Some(Ended::SteadyStateFailed("db: refused".into()))),
            (Verdict::SteadyStateFailed, "db: refused".into())
        );
    }

    #[test]
    fn the_rto_objective_is_met_up_to_its_target_and_missed_without_recovery() {
        let m = |seconds| RtoMeasure {
            seconds,
            recovered_at: 0.0,
            precision_seconds: 0.1,
            outage_observed: true,
        };
        let o = |rto: Option<&RtoMeasure>| rto_objective(dur(5_000), rto, 3, dur(100));
        assert!(o(Some(&m(5.0))).met);
        assert!(!o(Some(&m(5.2))).met);
        let none = o(None);
        assert!(!none.met);
        assert_eq!(none.measured_seconds, None);
        assert_eq!(none.detail, "the service did not recover during the drill");
    }

    #[test]
    fn the_rpo_objective_prefers_the_canary_and_a_lower_bound_never_meets_it() {
        let target = dur(10_000);
        let canary = rpo_objective(target, Some(&rpo(1.0, false)), Some(30.0), None);
        assert!(canary.met);
        assert_eq!(
            canary.measured_seconds,
            Some(1.0),
            "the canary over the backup"
        );
        assert!(
            canary.detail.contains("backup point 30.000 s"),
            "{}",
            canary.detail
        );
        assert!(!rpo_objective(target, Some(&rpo(1.0, true)), None, None).met);
        let backup = rpo_objective(target, None, Some(4.0), None);
        assert!(backup.met);
        assert_eq!(backup.measured_seconds, Some(4.0));
        let failed = rpo_objective(target, None, None, Some("psql: refused"));
        assert!(!failed.met);
        assert_eq!(failed.detail, "canary reader failed: psql: refused");
        assert_eq!(
            rpo_objective(target, None, None, None).detail,
            "not measured"
        );
    }

    #[test]
    fn the_rpo_is_measured_only_from_a_reader_answer_with_a_canary() {
        let sc = scenario(
            "canary:\n  interval: 100ms\n  writer: { command: [\"true\"] }\n  reader: { command: [\"true\"] }\nfaults:\n  - command: [\"true\"]\n",
        );
        let mut s = LiveState {
            fault_at: Some(10.0),
            ..LiveState::default()
        };
        s.markers = (1..=3)
            .map(|seq| Marker {
                seq,
                at: 9.0 + seq as f64 / 10.0,
                latency: 0.01,
                acked: true,
            })
            .collect();
        let read: ReadBack = Ok(Some(Survivor { seq: 2, at: None }));
        let m = Measures::of(&s, &sc, Some(&read));
        let rpo = m.rpo.unwrap();
        assert_eq!((rpo.newest_surviving_seq, rpo.lost), (Some(2), 1));
        assert!(
            (rpo.precision_seconds - 0.11).abs() < 1e-9,
            "canary interval + latency"
        );

        let failed: ReadBack = Err("refused".into());
        let m = Measures::of(&s, &sc, Some(&failed));
        assert_eq!((m.rpo, m.reader_error.as_deref()), (None, Some("refused")));
        assert!(Measures::of(&s, &sc, None).rpo.is_none(), "not read yet");
        let without_canary = scenario("faults:\n  - command: [\"true\"]\n");
        assert!(Measures::of(&s, &without_canary, Some(&read)).rpo.is_none());
        s.fault_at = None;
        assert!(Measures::of(&s, &sc, Some(&read)).rpo.is_none(), "no fault");
    }

    #[test]
    fn detection_is_a_phase_from_the_fault_to_the_first_failing_round() {
        let recorded = [
            Phase {
                name: "steady-state".into(),
                start: 1.0,
                end: 2.0,
                ok: true,
                detail: String::new(),
            },
            Phase {
                name: "recovery".into(),
                start: 12.0,
                end: 14.0,
                ok: true,
                detail: String::new(),
            },
        ];
        let names = |p: Vec<Phase>| p.into_iter().map(|p| p.name).collect::<Vec<_>>();
        let with = phases(&recorded, Some(10.0), Some(0.25));
        assert_eq!((with[1].start, with[1].end), (10.0, 10.25));
        assert_eq!(names(with), ["steady-state", "detection", "recovery"]);
        assert_eq!(
            names(phases(&recorded, Some(10.0), None)),
            ["steady-state", "recovery"]
        );
    }

    #[test]
    fn a_live_report_runs_with_its_timeline_in_time_order_and_its_measures() {
        let sc = scenario("objectives: { rto: 5s }\nfaults:\n  - command: [\"true\"]\n");
        let live = Live::default();
        {
            let mut s = live.lock();
            s.phase = "recovery".into();
            s.fault_at = Some(10.0);
            s.rounds = rounds(&[(10.1, false), (10.2, true), (10.3, true), (10.4, true)]);
            for at in [3.0, 1.0, 2.0] {
                s.timeline.push(Event {
                    at,
                    kind: EventKind::Probe,
                    name: "up".into(),
                    ok: Some(true),
                    latency: None,
                    seq: None,
                    detail: String::new(),
                });
            }
        }
        let r = live_report("d1", &sc, &Requester::cli(), &live, 0.0, 11.0);
        assert_eq!(r.verdict, Verdict::Running);
        let at: Vec<f64> = r.timeline.iter().map(|e| e.at).collect();
        assert_eq!(at, [1.0, 2.0, 3.0]);
        assert!((r.detection_seconds.unwrap() - 0.1).abs() < 1e-9);
        assert_eq!(r.rto.unwrap().recovered_at, 10.2);
        assert!(r.objectives[0].met, "{:?}", r.objectives);
    }
}
