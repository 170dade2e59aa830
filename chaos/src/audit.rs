//! Audit events: every plan, apply, check, revert, refusal and recovery is one
//! [`AuditEvent`], logged as a tracing line (target `faultline::audit`) and sent to every
//! [`Audit::subscribe`]r — the agent forwards them as OTLP log records.
//!
//! The channel is a bounded broadcast: a slow subscriber loses the oldest events (and is
//! told how many), the engine never waits on it. The tracing line is always written.

use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

use crate::fault::{FaultId, Requester, unix_millis};
use crate::select::Selection;

/// What happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AuditAction {
    /// A plan was made (dry run or before apply).
    Plan,
    /// A request was refused by a guard or failed validation.
    Refuse,
    /// The fault was applied.
    Apply,
    /// Its effect was checked.
    Check,
    /// It was reverted.
    Revert,
    /// It was reverted by journal recovery at start.
    Recover,
    /// The engine changed an active fault to keep it within a guard (a disk fill shrunk
    /// because free space fell below `chaos.disk_free_floor`).
    Adjust,
}

impl AuditAction {
    /// The name in logs and OTLP records (the serde name).
    pub fn as_str(self) -> &'static str {
        match self {
            AuditAction::Plan => "plan",
            AuditAction::Refuse => "refuse",
            AuditAction::Apply => "apply",
            AuditAction::Check => "check",
            AuditAction::Revert => "revert",
            AuditAction::Recover => "recover",
            AuditAction::Adjust => "adjust",
        }
    }
}

/// One audit event.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AuditEvent {
    /// When, in milliseconds since the Unix epoch.
    pub at_unix_ms: u64,
    /// What happened.
    pub action: AuditAction,
    /// The fault.
    pub fault_id: FaultId,
    /// Its kind.
    pub kind: String,
    /// Who asked.
    pub requester: Requester,
    /// The resolved targets, human-readable.
    pub targets: Vec<String>,
    /// The fault's deadline, ms since the epoch (0 when not yet known).
    pub deadline_unix_ms: u64,
    /// `ok`, or the error.
    pub outcome: Result<String, String>,
    /// How pod selectors picked the targets (seed and picks), on plan and apply events of
    /// faults that used them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selection: Option<Selection>,
}

impl AuditEvent {
    /// An event stamped now, without a selection.
    #[allow(clippy::too_many_arguments)]
    pub fn now(
        action: AuditAction,
        fault_id: &FaultId,
        kind: &str,
        requester: &Requester,
        targets: Vec<String>,
        deadline_unix_ms: u64,
        outcome: Result<String, String>,
    ) -> Self {
        AuditEvent {
            at_unix_ms: unix_millis(std::time::SystemTime::now()),
            action,
            fault_id: fault_id.clone(),
            kind: kind.to_owned(),
            requester: requester.clone(),
            targets,
            deadline_unix_ms,
            outcome,
            selection: None,
        }
    }

    /// The event with `selection` recorded.
    pub fn with_selection(mut self, selection: Option<Selection>) -> Self {
        self.selection = selection;
        self
    }
}

/// The audit sink: tracing plus a broadcast channel.
#[derive(Clone, Debug)]
pub struct Audit {
    tx: broadcast::Sender<AuditEvent>,
}

impl Default for Audit {
    fn default() -> Self {
        Self::new(1024)
    }
}

impl Audit {
    /// A sink whose subscribers may lag by `capacity` events.
    pub fn new(capacity: usize) -> Self {
        let (tx, _) = broadcast::channel(capacity.max(1));
        Audit { tx }
    }

    /// A receiver of every event from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<AuditEvent> {
        self.tx.subscribe()
    }

    /// Logs and broadcasts `event`.
    pub fn emit(&self, event: AuditEvent) {
        let targets = event.targets.join(", ");
        // Recorded only when pod selectors picked the targets.
        let selection = event.selection.as_ref().map(tracing::field::display);
        match &event.outcome {
            Ok(detail) => tracing::info!(
                target: "faultline::audit",
                action = ?event.action,
                fault_id = %event.fault_id,
                kind = %event.kind,
                requester = %event.requester,
                targets = %targets,
                selection,
                deadline_unix_ms = event.deadline_unix_ms,
                at_unix_ms = event.at_unix_ms,
                outcome = %detail,
                "fault audit"
            ),
            Err(error) => tracing::warn!(
                target: "faultline::audit",
                action = ?event.action,
                fault_id = %event.fault_id,
                kind = %event.kind,
                requester = %event.requester,
                targets = %targets,
                selection,
                deadline_unix_ms = event.deadline_unix_ms,
                at_unix_ms = event.at_unix_ms,
                error = %error,
                "fault audit"
            ),
        }
        // No subscriber is fine: the tracing line is the record of last resort.
        let _ = self.tx.send(event);
    }

    /// Builds and emits an event stamped now.
    #[allow(clippy::too_many_arguments)]
    pub fn record(
        &self,
        action: AuditAction,
        fault_id: &FaultId,
        kind: &str,
        requester: &Requester,
        targets: Vec<String>,
        deadline_unix_ms: u64,
        outcome: Result<String, String>,
    ) {
        self.emit(AuditEvent::now(
            action,
            fault_id,
            kind,
            requester,
            targets,
            deadline_unix_ms,
            outcome,
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::AuditAction;

    #[test]
    fn action_names_are_the_serde_names() {
        use AuditAction::*;
        for a in [Plan, Refuse, Apply, Check, Revert, Recover, Adjust] {
            assert_eq!(serde_json::to_value(a).unwrap(), a.as_str());
        }
    }
}
