//! The recovery phase: with `strategy: actions`, the recovery actions in order (after
//! `recovery.after`; the first failing one ends the phase), then, for either strategy, the
//! wait for `recovery.consecutive` passing prober rounds in a row after the first fault,
//! within `recovery.timeout` counted from the phase's start. The first of those rounds is
//! the recovery point the RTO is measured to.

use tokio::time::Instant;

use super::Drill;
use super::live::ev;
use crate::drill::measure::RtoMeasure;
use crate::drill::recovery;
use crate::drill::report::EventKind;
use crate::drill::scenario::{Recovery, Strategy};

/// How the recovery phase ended.
#[derive(Debug)]
pub(super) struct Recovered {
    /// The service came back.
    pub(super) recovered: bool,
    /// Why not, or `recovered`.
    pub(super) detail: String,
}

/// Runs the recovery phase.
pub(super) async fn recover(sh: &Drill) -> Recovered {
    let (live, clock) = (&sh.ctx.live, &sh.clock);
    let t = live.begin(clock, "recovery");
    let rec = &sh.sc.recovery;
    let deadline = Instant::now() + rec.timeout.0;
    let action_failure = match rec.strategy {
        Strategy::Actions => run_actions(sh).await.err(),
        Strategy::SelfHeal => None,
    };
    let recovered = action_failure.is_none() && wait_for_recovery(sh, deadline).await;
    let detail = recovery_detail(action_failure, recovered, rec);
    live.end(clock, "recovery", t, recovered, &detail);
    Recovered { recovered, detail }
}

/// The recovery actions in order, each on the timeline; `Err` names the first that failed.
async fn run_actions(sh: &Drill) -> Result<(), String> {
    let (live, clock) = (&sh.ctx.live, &sh.clock);
    tokio::time::sleep(sh.sc.recovery.after.0).await;
    for a in &sh.sc.recovery.actions {
        let at = clock.now();
        let out = recovery::run(a, &sh.ctx.backups, &sh.ctx.state_dir, &sh.id).await;
        let mut e = ev(
            at,
            EventKind::RecoveryAction,
            &a.label(),
            Some(out.ok),
            &out.detail,
        );
        e.latency = Some(clock.now() - at);
        live.event(e);
        if let Some(b) = out.backup_point_at {
            live.lock().backup_point_at = Some(b);
        }
        if !out.ok {
            return Err(format!(
                "recovery action `{}` failed: {}",
                a.label(),
                out.detail
            ));
        }
    }
    Ok(())
}

/// Waits until the prober's rounds show the recovery (re-checked every half probe
/// interval), or `deadline`; the recovery point goes on the timeline.
async fn wait_for_recovery(sh: &Drill, deadline: Instant) -> bool {
    let rec = &sh.sc.recovery;
    let interval = sh.sc.probe_interval.0.as_secs_f64();
    loop {
        let done = sh.ctx.live.lock().rto(rec.consecutive, interval);
        if let Some(m) = done {
            sh.ctx.live.event(ev(
                m.recovered_at,
                EventKind::Recovered,
                "recovered",
                Some(true),
                &recovered_detail(&m, rec.consecutive),
            ));
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(sh.sc.probe_interval.0 / 2).await;
    }
}

/// The recovery point's words on the timeline.
fn recovered_detail(m: &RtoMeasure, consecutive: usize) -> String {
    format!(
        "{consecutive} passing rounds in a row from here; RTO {:.3} s ± {:.3} s",
        m.seconds, m.precision_seconds
    )
}

/// The recovery phase's detail: the failed action, `recovered`, or what did not happen in
/// time.
fn recovery_detail(action_failure: Option<String>, recovered: bool, rec: &Recovery) -> String {
    match (action_failure, recovered) {
        (Some(e), _) => e,
        (None, true) => "recovered".into(),
        (None, false) => format!(
            "no {} passing probe rounds in a row within recovery.timeout {}",
            rec.consecutive, rec.timeout
        ),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::tests::{drill_in, evidence};
    use super::*;

    #[test]
    fn the_detail_names_the_failed_action_or_the_missed_timeout() {
        let rec = Recovery {
            consecutive: 2,
            timeout: faultline_chaos::units::HumanDuration(Duration::from_secs(5)),
            ..Recovery::default()
        };
        assert_eq!(
            recovery_detail(Some("recovery action `x` failed: 1".into()), false, &rec),
            "recovery action `x` failed: 1"
        );
        assert_eq!(recovery_detail(None, true, &rec), "recovered");
        assert_eq!(
            recovery_detail(None, false, &rec),
            "no 2 passing probe rounds in a row within recovery.timeout 5s"
        );
    }

    #[tokio::test]
    async fn recovery_is_k_passing_rounds_after_the_fault_and_its_point_is_recorded() {
        let (_dir, sh) = drill_in(
            "recovery: { consecutive: 2, timeout: 1s }\nfaults:\n  - command: [\"true\"]\n",
        );
        evidence(
            &sh,
            100.0,
            &[(99.9, true), (100.1, false), (100.2, true), (100.3, true)],
        );
        let r = recover(&sh).await;
        assert!(r.recovered, "{r:?}");
        assert_eq!(r.detail, "recovered");
        let s = sh.ctx.live.lock();
        let point = s.events(EventKind::Recovered);
        assert_eq!(point[0].at, 100.2, "the first of the two passing rounds");
        assert!(s.phases[0].ok);
    }

    #[tokio::test]
    async fn without_k_passing_rounds_recovery_times_out() {
        let (_dir, sh) = drill_in(
            "recovery: { consecutive: 2, timeout: 100ms }\nfaults:\n  - command: [\"true\"]\n",
        );
        evidence(&sh, 100.0, &[(100.2, true)]);
        let r = recover(&sh).await;
        assert!(!r.recovered);
        assert!(
            r.detail.starts_with("no 2 passing probe rounds"),
            "{}",
            r.detail
        );
        assert!(!sh.ctx.live.lock().phases[0].ok);
    }

    #[tokio::test]
    async fn the_first_failing_action_ends_recovery_and_later_actions_do_not_run() {
        let (dir, sh) = drill_in(
            "recovery:\n  strategy: actions\n  timeout: 5s\n  actions:\n    - command: [\"false\"]\n    - command: [touch, {dir}/later]\nfaults:\n  - command: [\"true\"]\n",
        );
        let later = dir.path().join("later");
        // Rounds that show a recovery: a failed action still fails the phase.
        evidence(&sh, 100.0, &[(100.1, true), (100.2, true), (100.3, true)]);
        let r = recover(&sh).await;
        assert!(!r.recovered);
        assert!(
            r.detail
                .starts_with("recovery action `command false` failed"),
            "{}",
            r.detail
        );
        assert!(!later.exists());
        let s = sh.ctx.live.lock();
        assert!(s.events(EventKind::Recovered).is_empty());
        assert_eq!(s.events(EventKind::RecoveryAction).len(), 1);
    }
}
