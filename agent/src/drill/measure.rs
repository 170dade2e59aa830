//! Pure measurement: RTO and RPO from the evidence a drill collected, with their precision.
//! No I/O, no clocks: every time is Unix seconds (f64) handed in by the runner.
//!
//! - **RTO** ([`rto`]): the start of the first passing probe round of `k` consecutive passing
//!   rounds that start at or after the fault's apply time, minus the apply time. Precision:
//!   the service came back somewhere between the start of the previous (failing) round and
//!   the end of the passing one, so the figure is good to the time between those two rounds'
//!   starts — one probe interval, or more where a loaded machine delayed the round — plus the
//!   passing probe's own latency.
//! - **Detection** ([`detection`]): the first failing round after apply, minus apply.
//! - **RPO** ([`rpo`]): the fault time minus the timestamp of the newest marker that survived
//!   recovery. Markers acknowledged before the fault and newer than the survivor are counted
//!   as lost. Precision: one canary interval plus the survivor's own write latency. When no
//!   marker survived, the RPO is at least the fault time minus the first marker's time
//!   (`lower_bound`).
//! - **Backup RPO** ([`backup_rpo`]): the fault time minus the restored backup's own point in
//!   time.

use serde::{Deserialize, Serialize};

/// One probe round: every probe ran once, starting at `at`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Round {
    /// When the round started, Unix seconds.
    pub at: f64,
    /// The slowest probe's latency in the round, seconds.
    pub latency: f64,
    /// Every probe passed.
    pub ok: bool,
}

/// A measured RTO.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct RtoMeasure {
    /// Seconds from the fault's apply to the recovery point.
    pub seconds: f64,
    /// The recovery point: start of the first of the `k` passing rounds, Unix seconds.
    pub recovered_at: f64,
    /// ± precision, seconds: the time since the round before the recovering one started (the
    /// probe interval, or more where that round came late) + the recovering probe's latency.
    pub precision_seconds: f64,
    /// Whether any round failed between apply and recovery (false: the outage, if any, was
    /// shorter than the probe interval).
    pub outage_observed: bool,
}

/// The RTO from the rounds (in time order), the apply time, `k` and the probe interval;
/// `None` when no `k` consecutive passing rounds follow the apply.
pub fn rto(rounds: &[Round], fault_at: f64, k: usize, interval: f64) -> Option<RtoMeasure> {
    let k = k.max(1);
    let after: Vec<&Round> = rounds.iter().filter(|r| r.at >= fault_at).collect();
    let mut run = 0usize;
    let mut failed_before = false;
    for (i, r) in after.iter().enumerate() {
        if r.ok {
            run += 1;
            if run == k {
                let at = i + 1 - k;
                let first = after[at];
                // The round before the recovering one: the service was down (or the run would
                // have started there) when it started. Without one, the nominal interval.
                let gap = at
                    .checked_sub(1)
                    .map_or(interval, |p| first.at - after[p].at);
                let outage_observed = failed_before;
                return Some(RtoMeasure {
                    seconds: (first.at - fault_at).max(0.0),
                    recovered_at: first.at,
                    precision_seconds: gap.max(interval) + first.latency,
                    outage_observed,
                });
            }
        } else {
            run = 0;
            failed_before = true;
        }
    }
    None
}

/// Seconds from apply to the first failing round, if one failed.
pub fn detection(rounds: &[Round], fault_at: f64) -> Option<f64> {
    rounds
        .iter()
        .find(|r| r.at >= fault_at && !r.ok)
        .map(|r| r.at - fault_at)
}

/// One marker the canary writer tried to write.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Marker {
    /// Sequence number, increasing from 1.
    pub seq: u64,
    /// The timestamp written into it, Unix seconds.
    pub at: f64,
    /// How long the write took, seconds.
    pub latency: f64,
    /// The writer reported success.
    pub acked: bool,
}

/// What the canary reader found after recovery.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Survivor {
    /// The newest surviving marker.
    pub seq: u64,
    /// Its timestamp as read back (Unix seconds), when the reader prints it.
    pub at: Option<f64>,
}

/// A measured RPO.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RpoMeasure {
    /// Seconds of writes lost: fault time minus the newest surviving marker's time.
    pub seconds: f64,
    /// ± precision, seconds.
    pub precision_seconds: f64,
    /// The newest surviving marker, if any.
    pub newest_surviving_seq: Option<u64>,
    /// Its timestamp.
    pub newest_surviving_at: Option<f64>,
    /// Markers acknowledged before the fault.
    pub written: usize,
    /// Of those, how many did not survive.
    pub lost: usize,
    /// The lost markers' sequence numbers (first 100).
    pub lost_seqs: Vec<u64>,
    /// True when no marker survived: the RPO is at least `seconds`.
    pub lower_bound: bool,
}

/// The RPO from the markers written (any order), the fault time, the reader's answer and
/// the canary interval.
pub fn rpo(
    markers: &[Marker],
    fault_at: f64,
    survivor: Option<Survivor>,
    interval: f64,
) -> RpoMeasure {
    let mut acked: Vec<&Marker> = markers
        .iter()
        .filter(|m| m.acked && m.at <= fault_at)
        .collect();
    acked.sort_by_key(|m| m.seq);
    let written = acked.len();
    match survivor {
        Some(s) => {
            let own = markers.iter().find(|m| m.seq == s.seq);
            let at = s.at.or(own.map(|m| m.at));
            let lost: Vec<u64> = acked
                .iter()
                .filter(|m| m.seq > s.seq)
                .map(|m| m.seq)
                .collect();
            let latency = own.map_or(0.0, |m| m.latency);
            RpoMeasure {
                seconds: at.map_or(0.0, |t| (fault_at - t).max(0.0)),
                precision_seconds: interval + latency,
                newest_surviving_seq: Some(s.seq),
                newest_surviving_at: at,
                written,
                lost: lost.len(),
                lost_seqs: lost.into_iter().take(100).collect(),
                lower_bound: at.is_none(),
            }
        }
        None => {
            let first = acked.first().map(|m| m.at);
            RpoMeasure {
                seconds: first.map_or(0.0, |t| (fault_at - t).max(0.0)),
                precision_seconds: interval,
                newest_surviving_seq: None,
                newest_surviving_at: None,
                written,
                lost: written,
                lost_seqs: acked.iter().map(|m| m.seq).take(100).collect(),
                lower_bound: true,
            }
        }
    }
}

/// Fault time minus the restored backup's point in time (never negative).
pub fn backup_rpo(fault_at: f64, backup_at: f64) -> f64 {
    (fault_at - backup_at).max(0.0)
}

/// Whether `measured` meets `target` (both seconds).
pub fn meets(measured: f64, target: f64) -> bool {
    measured <= target
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rounds(start: f64, step: f64, oks: &[bool]) -> Vec<Round> {
        oks.iter()
            .enumerate()
            .map(|(i, &ok)| Round {
                at: start + step * i as f64,
                latency: 0.002,
                ok,
            })
            .collect()
    }

    const T: bool = true;
    const F: bool = false;

    #[test]
    fn a_late_round_before_recovery_widens_the_rto_precision() {
        // Rounds every 0.1 s, but the one after the last failing round came 0.25 s late: the
        // service came back somewhere in those 0.35 s.
        let mut r = rounds(10.0, 0.1, &[T, F, F, T, T]);
        for x in &mut r[3..] {
            x.at += 0.25;
        }
        let m = rto(&r, 10.05, 2, 0.1).unwrap();
        assert!((m.recovered_at - 10.55).abs() < 1e-9, "{m:?}");
        assert!((m.precision_seconds - 0.352).abs() < 1e-9, "{m:?}");
    }

    #[test]
    fn rto_is_the_first_of_k_passing_rounds_after_apply() {
        // Fault at 10.05; rounds every 0.1 s from 10.0.
        let r = rounds(10.0, 0.1, &[T, F, F, F, T, T, T, T]);
        let m = rto(&r, 10.05, 3, 0.1).unwrap();
        assert!((m.seconds - 0.35).abs() < 1e-9, "{m:?}");
        assert!((m.recovered_at - 10.4).abs() < 1e-9);
        assert!((m.precision_seconds - 0.102).abs() < 1e-9);
        assert!(m.outage_observed);
        assert_eq!(
            detection(&r, 10.05).map(|d| (d * 1000.0).round()),
            Some(50.0)
        );
    }

    #[test]
    fn a_flap_restarts_the_count() {
        let r = rounds(0.0, 1.0, &[F, T, T, F, T, T, T]);
        let m = rto(&r, 0.0, 3, 1.0).unwrap();
        assert_eq!(m.seconds, 4.0);
        // k = 1: the first passing round counts.
        assert_eq!(rto(&r, 0.0, 1, 1.0).unwrap().seconds, 1.0);
        // k = 0 is treated as 1.
        assert_eq!(rto(&r, 0.0, 0, 1.0).unwrap().seconds, 1.0);
    }

    #[test]
    fn rounds_before_apply_do_not_count_and_no_recovery_is_none() {
        let r = rounds(0.0, 1.0, &[T, T, T, F, F, T, T]);
        assert!(rto(&r, 2.5, 3, 1.0).is_none());
        assert!(rto(&[], 0.0, 1, 1.0).is_none());
        assert_eq!(detection(&r, 2.5), Some(0.5));
        assert_eq!(detection(&rounds(0.0, 1.0, &[T, T]), 0.0), None);
    }

    #[test]
    fn no_observed_outage_is_flagged() {
        let r = rounds(5.0, 0.5, &[T, T, T]);
        let m = rto(&r, 4.9, 2, 0.5).unwrap();
        assert!(!m.outage_observed);
        assert!((m.seconds - 0.1).abs() < 1e-9);
    }

    fn markers(n: u64, start: f64, step: f64) -> Vec<Marker> {
        (1..=n)
            .map(|seq| Marker {
                seq,
                at: start + step * (seq - 1) as f64,
                latency: 0.004,
                acked: true,
            })
            .collect()
    }

    #[test]
    fn rpo_counts_lost_markers_from_the_survivor() {
        // Markers 1..=20 at 100.0, 100.1, …, 101.9; fault at 102.0; marker 12 (101.1)
        // survived.
        let m = markers(20, 100.0, 0.1);
        let r = rpo(&m, 102.0, Some(Survivor { seq: 12, at: None }), 0.1);
        assert!((r.seconds - 0.9).abs() < 1e-9, "{r:?}");
        assert_eq!(r.written, 20);
        assert_eq!(r.lost, 8);
        assert_eq!(r.lost_seqs, (13..=20).collect::<Vec<_>>());
        assert!((r.precision_seconds - 0.104).abs() < 1e-9);
        assert!(!r.lower_bound);
        // The reader's own timestamp wins over the writer's record.
        let r = rpo(
            &m,
            102.0,
            Some(Survivor {
                seq: 12,
                at: Some(101.0),
            }),
            0.1,
        );
        assert!((r.seconds - 1.0).abs() < 1e-9);
    }

    #[test]
    fn rpo_ignores_failed_writes_and_writes_after_the_fault() {
        let mut m = markers(10, 0.0, 1.0);
        m[8].acked = false; // seq 9 failed
        let r = rpo(&m, 8.5, Some(Survivor { seq: 7, at: None }), 1.0);
        // Acked before 8.5: 1..=8 (9 failed, 10 is after the fault).
        assert_eq!(r.written, 8);
        assert_eq!(r.lost, 1);
        assert_eq!(r.seconds, 2.5);
        // Everything survived: RPO is the gap to the last marker, nothing lost.
        let r = rpo(&m, 8.5, Some(Survivor { seq: 10, at: None }), 1.0);
        assert_eq!(r.lost, 0);
        assert_eq!(r.seconds, 0.0);
    }

    #[test]
    fn no_survivor_is_a_lower_bound_with_everything_lost() {
        let m = markers(5, 10.0, 1.0);
        let r = rpo(&m, 20.0, None, 1.0);
        assert!(r.lower_bound);
        assert_eq!(r.lost, 5);
        assert_eq!(r.seconds, 10.0);
        let empty = rpo(&[], 20.0, None, 1.0);
        assert_eq!((empty.written, empty.lost, empty.seconds), (0, 0, 0.0));
        // A survivor the writer never recorded (and without a timestamp) is a lower bound.
        let r = rpo(&m, 20.0, Some(Survivor { seq: 99, at: None }), 1.0);
        assert!(r.lower_bound);
    }

    #[test]
    fn backup_rpo_and_objectives() {
        assert_eq!(backup_rpo(100.0, 90.5), 9.5);
        assert_eq!(backup_rpo(100.0, 101.0), 0.0);
        assert!(meets(1.0, 1.0));
        assert!(!meets(1.01, 1.0));
    }
}
