//! The verification phase: the background tasks stop, the steady-state probes run once
//! more, and after a recovery the canary reader says which marker survived (the RPO's
//! evidence). Verification fails when the steady state does not hold again.

use super::live::ev;
use super::{Drill, round};
use crate::drill::canary;
use crate::drill::measure::Survivor;
use crate::drill::report::EventKind;
use crate::drill::scenario::Canary;

/// The canary reader's answer: the newest surviving marker, or why it could not be read.
pub(super) type ReadBack = Result<Option<Survivor>, String>;

/// Runs the verification phase after a recovery (`recovered`) or not: whether the steady
/// state holds, and the canary reader's answer (`None`: no canary, or nothing recovered to
/// read from).
pub(super) async fn verify(sh: &Drill, recovered: bool) -> (bool, Option<ReadBack>) {
    let (live, clock) = (&sh.ctx.live, &sh.clock);
    let t = live.begin(clock, "verification");
    sh.bg.cancel();
    let outcomes = round(&sh.probes, clock).await;
    for o in &outcomes {
        live.outcome(o, EventKind::Probe);
    }
    let verified = outcomes.iter().all(|o| o.ok);
    let survivor = match &sh.sc.canary {
        Some(c) if recovered => Some(read_canary(sh, c).await),
        _ => None,
    };
    let detail = if verified {
        "steady state holds again"
    } else {
        "steady state does not hold after recovery"
    };
    live.end(clock, "verification", t, verified, detail);
    (verified, survivor)
}

/// Runs the canary reader; its answer goes on the timeline.
async fn read_canary(sh: &Drill, c: &Canary) -> ReadBack {
    let at = sh.clock.now();
    let r = canary::read(&c.reader, 5).await;
    let detail = match &r {
        Ok(Some(s)) => format!("newest surviving marker {}", s.seq),
        Ok(None) => "no marker survived".into(),
        Err(e) => e.clone(),
    };
    sh.ctx.live.event(ev(
        at,
        EventKind::MarkerRead,
        "canary reader",
        Some(r.is_ok()),
        &detail,
    ));
    r
}

#[cfg(test)]
mod tests {
    use super::super::tests::{drill, drill_in};
    use super::*;

    #[tokio::test]
    async fn verification_stops_the_background_and_fails_when_a_probe_fails() {
        let (_state, sh) = drill(&[("up", true), ("db", false)], &[]);
        let (verified, survivor) = verify(&sh, true).await;
        assert!(!verified);
        assert!(survivor.is_none(), "no canary");
        assert!(sh.bg.is_cancelled(), "prober and canary writer stopped");
        let s = sh.ctx.live.lock();
        let p = &s.phases[0];
        assert_eq!((p.name.as_str(), p.ok), ("verification", false));
        assert_eq!(p.detail, "steady state does not hold after recovery");
    }

    #[tokio::test]
    async fn the_canary_is_read_only_after_a_recovery() {
        let (dir, sh) = drill_in(
            "canary:\n  writer: { command: [\"true\"] }\n  reader: { command: [sh, -c, \"echo read >> {dir}/reads; echo 7 1000\"] }\nfaults:\n  - command: [\"true\"]\n",
        );
        let (verified, survivor) = verify(&sh, false).await;
        assert!(verified);
        assert!(survivor.is_none());
        assert!(
            !dir.path().join("reads").exists(),
            "not read without a recovery"
        );

        let (_, survivor) = verify(&sh, true).await;
        let s = survivor.unwrap().unwrap().unwrap();
        assert_eq!(s.seq, 7);
        let live = sh.ctx.live.lock();
        let read = live.events(EventKind::MarkerRead);
        assert_eq!(read[0].detail, "newest surviving marker 7");
    }
}
