//! The live record of a running drill ([`Live`]): its phase, timeline, probe rounds, fault
//! windows and canary markers. Every step writes to it; the API reads it while the drill
//! runs, and the report is built from it at the end.
//!
//! Not here: what the steps decide (their own files); the report's arithmetic
//! (`super::snapshot`, [`crate::drill::measure`]).

use std::sync::{Mutex, MutexGuard};

use crate::drill::measure::{self, Marker, Round, RtoMeasure};
use crate::drill::probe::{Clock, Outcome};
use crate::drill::report::{Event, EventKind, FaultWindow, Phase};
use faultline_chaos::units::HumanDuration;

/// Everything a running drill has recorded so far.
#[derive(Debug, Default)]
pub struct Live {
    state: Mutex<LiveState>,
}

/// What [`Live`] holds, behind its lock.
#[derive(Debug, Default)]
pub(super) struct LiveState {
    pub(super) phase: String,
    pub(super) timeline: Vec<Event>,
    pub(super) rounds: Vec<Round>,
    pub(super) faults: Vec<FaultWindow>,
    pub(super) markers: Vec<Marker>,
    pub(super) phases: Vec<Phase>,
    pub(super) abort_reason: Option<String>,
    /// When the first fault (or fault command) of the drill was applied.
    pub(super) fault_at: Option<f64>,
    pub(super) backup_point_at: Option<f64>,
}

impl Live {
    pub(super) fn lock(&self) -> MutexGuard<'_, LiveState> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Sets why the drill is being aborted (first reason wins).
    pub fn set_abort_reason(&self, reason: String) {
        let mut s = self.lock();
        if s.abort_reason.is_none() {
            s.abort_reason = Some(reason);
        }
    }

    /// The current phase.
    pub fn phase(&self) -> String {
        self.lock().phase.clone()
    }

    pub(super) fn event(&self, e: Event) {
        self.lock().timeline.push(e);
    }

    /// Starts phase `name`; returns its start.
    pub(super) fn begin(&self, clock: &Clock, name: &str) -> f64 {
        let at = clock.now();
        let mut s = self.lock();
        s.phase = name.to_owned();
        s.timeline
            .push(ev(at, EventKind::PhaseStart, name, None, ""));
        at
    }

    /// Ends phase `name`, begun at `start`.
    pub(super) fn end(&self, clock: &Clock, name: &str, start: f64, ok: bool, detail: &str) {
        let at = clock.now();
        let mut s = self.lock();
        s.timeline
            .push(ev(at, EventKind::PhaseEnd, name, Some(ok), detail));
        s.phases.push(Phase {
            name: name.to_owned(),
            start,
            end: at,
            ok,
            detail: detail.to_owned(),
        });
    }

    /// A probe's outcome on the timeline, as `kind`.
    pub(super) fn outcome(&self, o: &Outcome, kind: EventKind) {
        self.event(Event {
            at: o.at,
            kind,
            name: o.probe.clone(),
            ok: Some(o.ok),
            latency: Some(o.latency),
            seq: None,
            detail: o.detail.clone(),
        });
    }

    /// The drill was aborted for `reason`: an abort event, and the phase that was running
    /// ends failed with that reason (from its own start, else from `started`).
    pub(super) fn aborted(&self, clock: &Clock, started: f64, reason: &str) {
        self.event(ev(
            clock.now(),
            EventKind::Abort,
            "abort",
            Some(false),
            reason,
        ));
        let open = {
            let s = self.lock();
            let phase = s.phase.clone();
            let ended = phase.is_empty() || s.phases.iter().any(|p| p.name == phase);
            (!ended).then(|| {
                let start = s
                    .timeline
                    .iter()
                    .rev()
                    .find(|e| e.kind == EventKind::PhaseStart && e.name == phase)
                    .map_or(started, |e| e.at);
                (phase, start)
            })
        };
        if let Some((phase, start)) = open {
            self.end(clock, &phase, start, false, reason);
        }
    }

    /// The drill ran past its `max_duration`.
    pub(super) fn timed_out(&self, clock: &Clock, max_duration: &HumanDuration) {
        self.event(ev(
            clock.now(),
            EventKind::Abort,
            "max_duration",
            Some(false),
            &format!("max_duration {max_duration} passed"),
        ));
    }
}

impl LiveState {
    /// A fault (or fault command) was applied: its window, and the drill's fault time if it
    /// is the first.
    pub(super) fn applied(&mut self, window: FaultWindow) {
        self.fault_at.get_or_insert(window.applied_at);
        self.faults.push(window);
    }

    /// The RTO the rounds so far show: `k` passing rounds in a row after the first fault.
    pub(super) fn rto(&self, k: usize, interval: f64) -> Option<RtoMeasure> {
        self.fault_at
            .and_then(|f| measure::rto(&self.rounds, f, k, interval))
    }
}

/// A timeline event without latency or sequence number.
pub(super) fn ev(at: f64, kind: EventKind, name: &str, ok: Option<bool>, detail: &str) -> Event {
    Event {
        at,
        kind,
        name: name.to_owned(),
        ok,
        latency: None,
        seq: None,
        detail: detail.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_abort_ends_the_running_phase_failed_from_its_own_start() {
        let (live, clock) = (Live::default(), Clock::new());
        let steady = live.begin(&clock, "steady-state");
        live.end(&clock, "steady-state", steady, true, "every probe passed");
        let faults = live.begin(&clock, "faults");
        live.aborted(&clock, 0.0, "kill switch");

        let s = live.lock();
        let names: Vec<&str> = s.phases.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["steady-state", "faults"]);
        let p = &s.phases[1];
        assert_eq!(
            (p.start, p.ok, p.detail.as_str()),
            (faults, false, "kill switch")
        );
        assert!(
            s.timeline
                .iter()
                .any(|e| e.kind == EventKind::Abort && e.detail == "kill switch")
        );
    }

    #[test]
    fn an_abort_between_phases_ends_no_phase_twice() {
        let (live, clock) = (Live::default(), Clock::new());
        let t = live.begin(&clock, "steady-state");
        live.end(&clock, "steady-state", t, true, "");
        live.aborted(&clock, 0.0, "api");
        assert_eq!(live.lock().phases.len(), 1);

        let before_any = Live::default();
        before_any.aborted(&clock, 0.0, "api");
        assert!(before_any.lock().phases.is_empty());
    }

    #[test]
    fn the_first_applied_fault_sets_the_fault_time() {
        let mut s = LiveState::default();
        for (id, at) in [("a", 10.0), ("b", 12.0)] {
            s.applied(FaultWindow {
                id: id.into(),
                kind: "command".into(),
                targets: Vec::new(),
                applied_at: at,
                reverted_at: Some(at),
                instant: true,
                revert_error: None,
                selection: None,
            });
        }
        assert_eq!(s.fault_at, Some(10.0));
        assert_eq!(s.faults.len(), 2);
    }
}
