//! Step one, the steady state: every steady-state probe and guard rail runs once before
//! anything is injected. One failing ends the drill (`steady-state-failed`) with nothing
//! injected: a drill against a system that is already unwell measures nothing.

use super::{Drill, round};
use crate::drill::probe::Outcome;
use crate::drill::report::EventKind;

/// Runs the steady-state phase; `Err` says why the steady state does not hold.
pub(super) async fn check(sh: &Drill) -> Result<(), String> {
    let (live, clock) = (&sh.ctx.live, &sh.clock);
    let t = live.begin(clock, "steady-state");
    let outcomes = round(&sh.probes, clock).await;
    let guards = round(&sh.guards, clock).await;
    for o in &outcomes {
        live.outcome(o, EventKind::Probe);
    }
    for o in &guards {
        live.outcome(o, EventKind::GuardRail);
    }
    match failures(&outcomes, &guards) {
        None => {
            live.end(clock, "steady-state", t, true, "every probe passed");
            Ok(())
        }
        Some(why) => {
            live.end(clock, "steady-state", t, false, &why);
            Err(why)
        }
    }
}

/// Why the steady state does not hold, naming every failing probe and guard rail with
/// what it saw; `None` when all passed.
fn failures(outcomes: &[Outcome], guards: &[Outcome]) -> Option<String> {
    let failed: Vec<String> = outcomes
        .iter()
        .chain(guards)
        .filter(|o| !o.ok)
        .map(|o| format!("{}: {}", o.probe, o.detail))
        .collect();
    (!failed.is_empty()).then(|| {
        format!(
            "steady state does not hold, nothing was injected: {}",
            failed.join("; ")
        )
    })
}

#[cfg(test)]
mod tests {
    use super::super::tests::{drill, outcome};
    use super::*;

    #[test]
    fn a_failing_probe_or_guard_rail_is_named_with_what_it_saw() {
        let probes = [outcome("web", true, "200"), outcome("db", false, "refused")];
        let guards = [outcome("tenant", false, "timeout")];
        let why = failures(&probes, &guards).unwrap();
        assert_eq!(
            why,
            "steady state does not hold, nothing was injected: db: refused; tenant: timeout"
        );
        assert_eq!(
            failures(&probes[..1], &[outcome("tenant", true, "")]),
            None,
            "all passed"
        );
        assert!(
            failures(&probes[..1], &guards).is_some(),
            "a guard alone fails it"
        );
    }

    #[tokio::test]
    async fn the_phase_records_every_outcome_and_ends_failed_with_the_reason() {
        let (_dir, sh) = drill(&[("up", false)], &[]);
        let why = check(&sh).await.unwrap_err();
        let s = sh.ctx.live.lock();
        let phase = &s.phases[0];
        assert_eq!((phase.name.as_str(), phase.ok), ("steady-state", false));
        assert_eq!(phase.detail, why);
        let probes = s.events(EventKind::Probe);
        assert_eq!((probes[0].name.as_str(), probes[0].ok), ("up", Some(false)));
        assert_eq!(s.fault_at, None, "nothing injected");
    }
}
