//! The end of every drill, however it ended (measured, error, abort, timeout): the
//! background tasks stop, injects in flight are waited for, and every held fault of the
//! drill not yet reverted is reverted through the engine, concurrently. A fault that cannot
//! be reverted stays in the chaos journal (for `faultline fault revert`) and its window
//! carries the error.

use std::time::Duration;

use faultline_chaos::{FaultError, FaultId};
use futures::future::join_all;
use tracing::warn;

use super::Drill;
use super::live::{LiveState, ev};
use crate::drill::report::EventKind;

/// How long the drill's tasks get to stop once the faults are reverted.
const TASKS_GRACE: Duration = Duration::from_secs(30);

/// Reverts what the drill still holds and stops its tasks.
pub(super) async fn clean_up(sh: &Drill) {
    sh.bg.cancel();
    sh.injects.close();
    sh.injects.wait().await;
    let to_revert = sh.ctx.live.lock().unreverted();
    let reverts = to_revert.iter().map(|id| async move {
        let r = match id.parse::<FaultId>() {
            Ok(fid) => sh.ctx.engine.abort(&fid, sh.ctx.requester.clone()).await,
            Err(e) => Err(FaultError::Other(e)),
        };
        (id, r)
    });
    for (id, r) in join_all(reverts).await {
        let at = sh.clock.now();
        let (ok, detail) = revert_outcome(&r);
        if !ok {
            warn!(drill = %sh.id, fault_id = %id, error = %detail, "a drill fault could not be reverted; it stays in the journal for `faultline fault revert`");
        }
        sh.ctx.live.lock().reverted_at_end(id, at, ok, &detail);
    }
    sh.tasks.close();
    if tokio::time::timeout(TASKS_GRACE, sh.tasks.wait())
        .await
        .is_err()
    {
        warn!(drill = %sh.id, "drill tasks did not stop within 30s");
    }
}

/// Whether a revert at the end succeeded, and the timeline's words for it. A fault the
/// engine no longer knows was already reverted (deadline, kill switch).
fn revert_outcome(r: &Result<(), FaultError>) -> (bool, String) {
    match r {
        Ok(()) | Err(FaultError::UnknownId(_)) => (true, "reverted at the drill's end".into()),
        Err(e) => (false, e.to_string()),
    }
}

impl LiveState {
    /// The held faults not yet reverted.
    fn unreverted(&self) -> Vec<String> {
        self.faults
            .iter()
            .filter(|f| !f.instant && f.reverted_at.is_none())
            .map(|f| f.id.clone())
            .collect()
    }

    /// The end-of-drill revert of `id` at `at`: its window closes (unless the engine's
    /// revert was noted first) and carries the error when it failed; the timeline says so.
    fn reverted_at_end(&mut self, id: &str, at: f64, ok: bool, detail: &str) {
        if let Some(f) = self.faults.iter_mut().find(|f| f.id == id) {
            if f.reverted_at.is_none() {
                f.reverted_at = Some(at);
            }
            if !ok {
                f.revert_error = Some(detail.to_owned());
            }
        }
        self.timeline
            .push(ev(at, EventKind::FaultRevert, id, Some(ok), detail));
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::window;
    use super::*;

    #[test]
    fn only_held_faults_not_yet_reverted_are_reverted_at_the_end() {
        let mut s = LiveState::default();
        s.applied(window("held", 1.0, None));
        s.applied(window("gone", 1.0, Some(2.0)));
        let mut kill = window("kill", 1.0, Some(1.0));
        kill.instant = true;
        s.applied(kill);
        assert_eq!(s.unreverted(), ["held"]);
    }

    #[test]
    fn a_fault_the_engine_no_longer_knows_counts_as_reverted() {
        assert!(revert_outcome(&Ok(())).0);
        assert!(revert_outcome(&Err(FaultError::UnknownId("f1".into()))).0);
        let (ok, detail) = revert_outcome(&Err(FaultError::Other("tc failed".into())));
        assert!(!ok);
        assert!(detail.contains("tc failed"), "{detail}");
    }

    #[test]
    fn a_failed_revert_is_kept_on_its_window_and_the_timeline() {
        let mut s = LiveState::default();
        s.applied(window("f1", 1.0, None));
        s.applied(window("f2", 1.0, Some(1.5)));
        s.reverted_at_end("f1", 3.0, false, "EPERM");
        s.reverted_at_end("f2", 3.0, true, "reverted at the drill's end");
        assert_eq!(s.faults[0].reverted_at, Some(3.0));
        assert_eq!(s.faults[0].revert_error.as_deref(), Some("EPERM"));
        assert_eq!(
            s.faults[1].reverted_at,
            Some(1.5),
            "the engine's revert time stays"
        );
        let oks: Vec<Option<bool>> = s.timeline.iter().map(|e| e.ok).collect();
        assert_eq!(oks, [Some(false), Some(true)]);
    }
}
