//! The drill report: one [`DrillReport`] per drill — the whole timeline, the probe rounds,
//! the fault windows, the measurements with their precision, each objective's verdict — and
//! its renderings: JSON (serde, the durable form kept in the history), JUnit XML
//! ([`junit`]), a self-contained HTML timeline ([`html`]) and OTLP traces and logs
//! ([`otlp`]). Every drill, whether started by the CLI, the API or a schedule, produces
//! the same shape.

use serde::{Deserialize, Serialize};

use super::measure::{Round, RpoMeasure, RtoMeasure};

pub mod html;
pub mod junit;
pub mod otlp;

/// Format version of the JSON report.
pub const REPORT_VERSION: u32 = 1;

/// How a drill ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    /// Every objective met.
    Passed,
    /// An objective was missed (or recovery never happened).
    Failed,
    /// The steady state did not hold before the faults: nothing was injected.
    SteadyStateFailed,
    /// Aborted (API, kill switch, `abort_when`, shutdown); every fault was reverted.
    Aborted,
    /// `max_duration` passed; every fault was reverted.
    TimedOut,
    /// The drill could not be carried out (a fault was refused, a step failed).
    Error,
    /// Still running (live view only).
    Running,
}

impl Verdict {
    /// The kebab-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Passed => "passed",
            Verdict::Failed => "failed",
            Verdict::SteadyStateFailed => "steady-state-failed",
            Verdict::Aborted => "aborted",
            Verdict::TimedOut => "timed-out",
            Verdict::Error => "error",
            Verdict::Running => "running",
        }
    }

    /// All final verdicts (for metrics).
    pub const FINAL: [Verdict; 6] = [
        Verdict::Passed,
        Verdict::Failed,
        Verdict::SteadyStateFailed,
        Verdict::Aborted,
        Verdict::TimedOut,
        Verdict::Error,
    ];

    /// `test.suite.run.status` (semantic conventions).
    pub fn suite_status(self) -> &'static str {
        match self {
            Verdict::Passed => "success",
            Verdict::Failed | Verdict::Error => "failure",
            Verdict::SteadyStateFailed => "skipped",
            Verdict::Aborted => "aborted",
            Verdict::TimedOut => "timed_out",
            Verdict::Running => "in_progress",
        }
    }
}

/// What kind of timeline event.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EventKind {
    /// A phase started.
    PhaseStart,
    /// A phase ended.
    PhaseEnd,
    /// A probe ran.
    Probe,
    /// A guard-rail (`abort_when`) probe ran and failed.
    GuardRail,
    /// A fault was applied.
    FaultApply,
    /// A fault was reverted.
    FaultRevert,
    /// A fault step's command ran.
    FaultCommand,
    /// A fault could not be applied.
    FaultError,
    /// A recovery action ran.
    RecoveryAction,
    /// The recovery point (first of K passing rounds).
    Recovered,
    /// A canary marker was written (or failed).
    Marker,
    /// The canary reader ran.
    MarkerRead,
    /// The drill was aborted.
    Abort,
}

impl EventKind {
    /// A probe's outcome or a canary marker: the events a drill records every round or
    /// marker interval. The others (phases, faults, recovery, aborts…) are the news a game
    /// day's timeline and [`Progress::events`] count.
    pub fn is_routine(self) -> bool {
        matches!(self, EventKind::Probe | EventKind::Marker)
    }
}

/// One timeline event.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Unix seconds.
    pub at: f64,
    /// What.
    pub kind: EventKind,
    /// The probe, phase, fault id, action…
    pub name: String,
    /// Success, where that applies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ok: Option<bool>,
    /// Seconds it took, where that applies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency: Option<f64>,
    /// Marker sequence number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    /// Details.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub detail: String,
}

/// A phase's span.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Phase {
    /// `steady-state`, `faults`, `detection`, `recovery`, `verification`.
    pub name: String,
    /// Unix seconds.
    pub start: f64,
    /// Unix seconds.
    pub end: f64,
    /// Whether it achieved its purpose.
    pub ok: bool,
    /// Why not, or what happened.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub detail: String,
}

/// One fault's window.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FaultWindow {
    /// Fault id (chaos engine), or `command-<n>` for a command step.
    pub id: String,
    /// Kind (`process-kill`, `command`).
    pub kind: String,
    /// Resolved targets or the command line.
    pub targets: Vec<String>,
    /// Unix seconds.
    pub applied_at: f64,
    /// Unix seconds; equal to `applied_at` for instant faults; `None` if never confirmed.
    pub reverted_at: Option<f64>,
    /// Over once applied (a kill, a command).
    pub instant: bool,
    /// Revert error, if the revert failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revert_error: Option<String>,
    /// How pod selectors picked the targets (what matched, the picks, the seed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selection: Option<faultline_chaos::Selection>,
}

/// One objective's verdict.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ObjectiveResult {
    /// `rto` or `rpo`.
    pub name: String,
    /// Target, seconds.
    pub target_seconds: f64,
    /// Measured, seconds (absent when it could not be measured).
    pub measured_seconds: Option<f64>,
    /// ± seconds.
    pub precision_seconds: Option<f64>,
    /// Met.
    pub met: bool,
    /// How it was measured, or why not.
    pub detail: String,
}

/// The whole report.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DrillReport {
    /// [`REPORT_VERSION`].
    pub version: u32,
    /// Drill id.
    pub id: String,
    /// Scenario name.
    pub scenario: String,
    /// Scenario description.
    #[serde(default)]
    pub description: String,
    /// Who started it (`cli:alice`, `api:ci-token`, `schedule:nightly`).
    pub requester: String,
    /// Unix seconds.
    pub started_at: f64,
    /// Unix seconds.
    pub finished_at: f64,
    /// The outcome.
    pub verdict: Verdict,
    /// One line on why.
    pub reason: String,
    /// Probe interval, seconds.
    pub probe_interval_seconds: f64,
    /// K.
    pub consecutive: usize,
    /// First fault's apply time, Unix seconds.
    pub fault_at: Option<f64>,
    /// Seconds from fault to the first failing probe round.
    pub detection_seconds: Option<f64>,
    /// The RTO.
    pub rto: Option<RtoMeasure>,
    /// The canary RPO.
    pub rpo: Option<RpoMeasure>,
    /// The restored backup's point in time, Unix seconds.
    pub backup_point_at: Option<f64>,
    /// Fault time minus that.
    pub backup_rpo_seconds: Option<f64>,
    /// Objectives.
    pub objectives: Vec<ObjectiveResult>,
    /// Phases.
    pub phases: Vec<Phase>,
    /// Faults.
    pub faults: Vec<FaultWindow>,
    /// Probe rounds during faults and recovery.
    pub rounds: Vec<Round>,
    /// Everything, in time order.
    pub timeline: Vec<Event>,
    /// The scenario as run.
    pub scenario_spec: serde_json::Value,
}

impl DrillReport {
    /// A short multi-line summary for people.
    pub fn summary(&self) -> String {
        let mut s = format!(
            "drill {} ({}) by {}: {}\n  {}\n",
            self.id,
            self.scenario,
            self.requester,
            self.verdict.as_str().to_uppercase(),
            self.reason
        );
        if let Some(d) = self.detection_seconds {
            s.push_str(&format!("  detection: {}\n", secs(d)));
        }
        if let Some(r) = &self.rto {
            s.push_str(&format!(
                "  RTO: {} ± {} (probe every {}, K={}{})\n",
                secs(r.seconds),
                secs(r.precision_seconds),
                secs(self.probe_interval_seconds),
                self.consecutive,
                if r.outage_observed {
                    ""
                } else {
                    "; no failing probe was seen"
                }
            ));
        }
        if let Some(r) = &self.rpo {
            s.push_str(&format!(
                "  RPO: {}{} ± {} ({} markers written before the fault, {} lost)\n",
                if r.lower_bound { "≥ " } else { "" },
                secs(r.seconds),
                secs(r.precision_seconds),
                r.written,
                r.lost
            ));
        }
        if let Some(b) = self.backup_rpo_seconds {
            s.push_str(&format!(
                "  backup RPO (fault − backup point): {}\n",
                secs(b)
            ));
        }
        for o in &self.objectives {
            s.push_str(&format!(
                "  objective {}: {} (target {}, measured {}) — {}\n",
                o.name,
                if o.met { "MET" } else { "MISSED" },
                secs(o.target_seconds),
                o.measured_seconds.map_or("—".into(), secs),
                o.detail
            ));
        }
        s
    }

    /// All objectives met (and there was no failure before measuring).
    pub fn all_met(&self) -> bool {
        self.verdict == Verdict::Passed
    }
}

/// Seconds for people: `1.234 s` or `56.7 ms`.
pub fn secs(v: f64) -> String {
    if v.abs() < 1.0 {
        format!("{:.1} ms", v * 1000.0)
    } else {
        format!("{v:.3} s")
    }
}

/// How far a drill has got, in a few fields and the same few bytes however long it runs:
/// what `GET /v1/drills/{id}/progress` answers. A caller following many drills (a game day)
/// reads the whole report only when there is news — `events` changed or the verdict is
/// final — instead of at every poll (docs/adr/0023).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Progress {
    /// Drill id.
    pub id: String,
    /// `running` until the drill ends, then its verdict.
    pub verdict: Verdict,
    /// The phase it is in (while running) or ended in; empty before the first.
    pub phase: String,
    /// Timeline events so far that are not routine ([`EventKind::is_routine`]): phases,
    /// faults applied and reverted, recovery, aborts.
    pub events: usize,
    /// Probe rounds so far.
    pub rounds: usize,
}

impl Progress {
    /// The progress of a finished drill, from its report.
    pub fn of(r: &DrillReport) -> Self {
        Self {
            id: r.id.clone(),
            verdict: r.verdict,
            phase: r.phases.last().map(|p| p.name.clone()).unwrap_or_default(),
            events: r.timeline.iter().filter(|e| !e.kind.is_routine()).count(),
            rounds: r.rounds.len(),
        }
    }
}

/// A compact summary for listings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// Drill id.
    pub id: String,
    /// Scenario.
    pub scenario: String,
    /// Who.
    pub requester: String,
    /// Unix seconds.
    pub started_at: f64,
    /// Unix seconds (absent while running).
    pub finished_at: Option<f64>,
    /// Verdict.
    pub verdict: Verdict,
    /// RTO seconds.
    pub rto_seconds: Option<f64>,
    /// RPO seconds.
    pub rpo_seconds: Option<f64>,
}

impl From<&DrillReport> for Summary {
    fn from(r: &DrillReport) -> Self {
        Summary {
            id: r.id.clone(),
            scenario: r.scenario.clone(),
            requester: r.requester.clone(),
            started_at: r.started_at,
            finished_at: Some(r.finished_at),
            verdict: r.verdict,
            rto_seconds: r.rto.map(|m| m.seconds),
            rpo_seconds: r.rpo.as_ref().map(|m| m.seconds).or(r.backup_rpo_seconds),
        }
    }
}

#[cfg(test)]
pub(crate) mod fixture {
    //! A realistic report for the renderers' tests.
    use super::*;
    use crate::drill::measure::{Round, RpoMeasure, RtoMeasure};

    pub fn report() -> DrillReport {
        let t0 = 1_700_000_000.0;
        let rounds: Vec<Round> = (0..40)
            .map(|i| Round {
                at: t0 + 1.0 + f64::from(i) * 0.1,
                latency: 0.002,
                ok: !(5..15).contains(&i),
            })
            .collect();
        DrillReport {
            version: REPORT_VERSION,
            id: "drill-1-abcd".into(),
            scenario: "web <restart>".into(),
            description: "a & b".into(),
            requester: "cli:root".into(),
            started_at: t0,
            finished_at: t0 + 6.0,
            verdict: Verdict::Failed,
            reason: "rpo missed".into(),
            probe_interval_seconds: 0.1,
            consecutive: 3,
            fault_at: Some(t0 + 1.45),
            detection_seconds: Some(0.05),
            rto: Some(RtoMeasure {
                seconds: 1.05,
                recovered_at: t0 + 2.5,
                precision_seconds: 0.102,
                outage_observed: true,
            }),
            rpo: Some(RpoMeasure {
                seconds: 0.8,
                precision_seconds: 0.1,
                newest_surviving_seq: Some(6),
                newest_surviving_at: Some(t0 + 0.65),
                written: 14,
                lost: 8,
                lost_seqs: (7..15).collect(),
                lower_bound: false,
            }),
            backup_point_at: Some(t0 + 0.6),
            backup_rpo_seconds: Some(0.85),
            objectives: vec![
                ObjectiveResult {
                    name: "rto".into(),
                    target_seconds: 5.0,
                    measured_seconds: Some(1.05),
                    precision_seconds: Some(0.102),
                    met: true,
                    detail: "ok".into(),
                },
                ObjectiveResult {
                    name: "rpo".into(),
                    target_seconds: 0.1,
                    measured_seconds: Some(0.8),
                    precision_seconds: Some(0.1),
                    met: false,
                    detail: "8 markers lost".into(),
                },
            ],
            phases: vec![
                Phase {
                    name: "steady-state".into(),
                    start: t0,
                    end: t0 + 0.01,
                    ok: true,
                    detail: String::new(),
                },
                Phase {
                    name: "faults".into(),
                    start: t0 + 0.01,
                    end: t0 + 1.5,
                    ok: true,
                    detail: String::new(),
                },
                Phase {
                    name: "recovery".into(),
                    start: t0 + 1.5,
                    end: t0 + 2.8,
                    ok: true,
                    detail: String::new(),
                },
                Phase {
                    name: "verification".into(),
                    start: t0 + 5.0,
                    end: t0 + 6.0,
                    ok: true,
                    detail: String::new(),
                },
            ],
            faults: vec![FaultWindow {
                selection: None,
                id: "process-pause-00000001".into(),
                kind: "process-pause".into(),
                targets: vec!["pid 42".into()],
                applied_at: t0 + 1.45,
                reverted_at: Some(t0 + 2.4),
                instant: false,
                revert_error: None,
            }],
            timeline: vec![Event {
                at: t0 + 1.45,
                kind: EventKind::FaultApply,
                name: "process-pause-00000001".into(),
                ok: Some(true),
                latency: None,
                seq: None,
                detail: "pid 42".into(),
            }],
            rounds,
            scenario_spec: serde_json::json!({"name": "web"}),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_round_trip_and_summary() {
        let r = fixture::report();
        let json = serde_json::to_string(&r).unwrap();
        let back: DrillReport = serde_json::from_str(&json).unwrap();
        assert_eq!(back, r);
        let s = r.summary();
        assert!(s.contains("FAILED") && s.contains("RTO: 1.050 s"), "{s}");
        assert!(s.contains("objective rpo: MISSED"), "{s}");
        let sum = Summary::from(&r);
        assert_eq!(sum.rpo_seconds, Some(0.8));
    }
}
