//! What runs in the background from the first fault to verification: the prober (every
//! `probe_interval` a round of the steady-state probes, whose results the RTO and the
//! detection are measured from, and the guard rails, one failing aborts the drill) and the
//! canary writer (a numbered, timestamped marker every `canary.interval` until the first
//! fault, for the RPO).
//!
//! Both are tasks of the drill's tracker, stopped by its `bg` token (the canary writer
//! also by its own, at the first fault).

use std::sync::Arc;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, warn};

use super::live::LiveState;
use super::{Drill, round};
use crate::drill::canary;
use crate::drill::measure::{Marker, Round};
use crate::drill::probe::Outcome;
use crate::drill::report::{Event, EventKind};
use crate::drill::scenario::Canary;

/// Starts the prober.
pub(super) fn spawn_prober(sh: &Arc<Drill>) {
    let sh2 = sh.clone();
    sh.tasks.spawn(
        async move {
            let sh = sh2;
            let mut tick = tokio::time::interval(sh.sc.probe_interval.0);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    () = sh.bg.cancelled() => return,
                    _ = tick.tick() => {}
                }
                let (outcomes, guards) =
                    tokio::join!(round(&sh.probes, &sh.clock), round(&sh.guards, &sh.clock));
                if sh.bg.is_cancelled() {
                    return;
                }
                if let Some(why) = record_round(&sh, &outcomes, &guards) {
                    warn!(drill = %sh.id, reason = %why, "guard rail failed: aborting the drill");
                    sh.ctx.live.set_abort_reason(why);
                    sh.stop.cancel();
                    return;
                }
            }
        }
        .instrument(tracing::info_span!("drill_prober", drill = %sh.id)),
    );
}

/// Records one prober round: every probe's outcome, the round, and the first failing guard
/// rail; returns why the drill must abort when a guard rail failed.
fn record_round(sh: &Drill, outcomes: &[Outcome], guards: &[Outcome]) -> Option<String> {
    let live = &sh.ctx.live;
    for o in outcomes {
        live.outcome(o, EventKind::Probe);
    }
    if let Some(r) = round_of(outcomes) {
        live.lock().rounds.push(r);
    }
    let bad = guards.iter().find(|o| !o.ok)?;
    live.outcome(bad, EventKind::GuardRail);
    Some(format!("abort_when: {} failed: {}", bad.probe, bad.detail))
}

/// A round from its outcomes: it starts with the earliest probe, lasts as long as the
/// slowest, and passes when every probe passed; `None` without outcomes.
fn round_of(outcomes: &[Outcome]) -> Option<Round> {
    let r = Round {
        at: outcomes.iter().map(|o| o.at).fold(f64::INFINITY, f64::min),
        latency: outcomes.iter().map(|o| o.latency).fold(0.0, f64::max),
        ok: outcomes.iter().all(|o| o.ok),
    };
    r.at.is_finite().then_some(r)
}

/// Starts the canary writer; it ends when `stop` is cancelled.
pub(super) fn spawn_canary(sh: &Arc<Drill>, c: Canary, stop: CancellationToken) -> JoinHandle<()> {
    let sh2 = sh.clone();
    sh.tasks.spawn(
        async move {
            let sh = sh2;
            let mut tick = tokio::time::interval(c.interval.0);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut seq = 0u64;
            loop {
                tokio::select! {
                    () = stop.cancelled() => return,
                    _ = tick.tick() => {}
                }
                seq += 1;
                let at = sh.clock.now();
                let ts_ms = (at * 1000.0).round() as u64;
                let r = canary::call(&c.writer, seq, ts_ms, true).await;
                let latency = sh.clock.now() - at;
                sh.ctx.live.lock().marker(seq, at, ts_ms, latency, r.err());
            }
        }
        .instrument(tracing::info_span!("drill_canary", drill = %sh.id)),
    )
}

impl LiveState {
    /// Marker `seq`, stamped `ts_ms` and written from `at` for `latency` seconds, with the
    /// writer's error if it failed: a marker and a timeline event.
    fn marker(&mut self, seq: u64, at: f64, ts_ms: u64, latency: f64, error: Option<String>) {
        self.markers.push(Marker {
            seq,
            at: ts_ms as f64 / 1000.0,
            latency,
            acked: error.is_none(),
        });
        self.timeline.push(Event {
            at,
            kind: EventKind::Marker,
            name: format!("marker {seq}"),
            ok: Some(error.is_none()),
            latency: Some(latency),
            seq: Some(seq),
            detail: error.unwrap_or_default(),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{drill, outcome_at};
    use super::*;

    #[test]
    fn a_round_starts_with_its_first_probe_lasts_its_slowest_and_needs_every_probe() {
        let r = round_of(&[
            outcome_at("a", true, 10.2, 0.05),
            outcome_at("b", false, 10.1, 0.01),
        ])
        .unwrap();
        assert_eq!(
            r,
            Round {
                at: 10.1,
                latency: 0.05,
                ok: false
            }
        );
        assert!(round_of(&[outcome_at("a", true, 10.0, 0.0)]).unwrap().ok);
        assert_eq!(round_of(&[]), None, "no probes, no round");
    }

    #[test]
    fn a_failing_guard_rail_aborts_and_the_round_is_kept() {
        let (_dir, sh) = drill(&[], &[]);
        let probes = [outcome_at("up", true, 5.0, 0.01)];
        let guards = [
            outcome_at("tenant", true, 5.0, 0.01),
            outcome_at("disk", false, 5.0, 0.01),
        ];
        let why = record_round(&sh, &probes, &guards).unwrap();
        assert!(why.starts_with("abort_when: disk failed"), "{why}");
        assert_eq!(record_round(&sh, &probes, &guards[..1]), None);
        let s = sh.ctx.live.lock();
        assert_eq!(s.rounds.len(), 2);
        let rails: Vec<&str> = s
            .events(EventKind::GuardRail)
            .iter()
            .map(|e| e.name.as_str())
            .collect();
        assert_eq!(
            rails,
            ["disk"],
            "only the failing guard rail is on the timeline"
        );
    }

    #[test]
    fn a_marker_carries_its_millisecond_stamp_and_whether_it_was_acknowledged() {
        let mut s = LiveState::default();
        s.marker(1, 100.0004, 100_000, 0.002, None);
        s.marker(2, 100.1, 100_100, 0.003, Some("refused".into()));
        assert_eq!(s.markers[0].at, 100.0, "the time written into the marker");
        assert!(s.markers[0].acked && !s.markers[1].acked);
        let e = &s.timeline[1];
        assert_eq!(
            (e.seq, e.ok, e.detail.as_str()),
            (Some(2), Some(false), "refused")
        );
    }
}
