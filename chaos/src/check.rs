//! Checking a fault on the system: whether what it did is in effect now
//! ([`crate::Fault::check`] of its kind, looked at on the system, never in memory), as one
//! audited [`CheckReport`].
//!
//! The engine checks each fault right after apply and again when asked
//! ([`crate::Engine::check`]); [`check_journaled`] checks a journal entry outside an engine
//! (`faultline fault list` over the faults other processes hold).

use std::sync::Arc;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::audit::{Audit, AuditAction};
use crate::config::ChaosConfig;
use crate::error::FaultError;
use crate::fault::{Context, Effect, EffectState, Env, Requester, from_unix_millis, unix_millis};
use crate::journal::JournalEntry;

/// The outcome of one [`crate::Fault::check`], as listed and audited.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CheckReport {
    /// When the fault was checked, ms since the epoch.
    pub at_unix_ms: u64,
    /// What the check saw; absent when it could not look.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub effect: Option<Effect>,
    /// Why the check could not look.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl CheckReport {
    fn of(r: &Result<Effect, FaultError>) -> Self {
        let (effect, error) = match r {
            Ok(e) => (Some(e.clone()), None),
            Err(e) => (None, Some(e.to_string())),
        };
        CheckReport {
            at_unix_ms: unix_millis(SystemTime::now()),
            effect,
            error,
        }
    }

    /// Whether the check saw the fault in effect, fully or partly.
    pub fn in_effect(&self) -> bool {
        self.effect
            .as_ref()
            .is_some_and(|e| e.state != EffectState::NotInEffect)
    }
}

impl std::fmt::Display for CheckReport {
    /// `in-effect: <what was seen>`, `partial: …`, `not-in-effect: …` or `check failed: …`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (&self.effect, &self.error) {
            (Some(e), _) => {
                let state = match e.state {
                    EffectState::InEffect => "in-effect",
                    EffectState::Partial => "partial",
                    EffectState::NotInEffect => "not-in-effect",
                };
                write!(f, "{state}: {}", e.detail)
            }
            (None, Some(err)) => write!(f, "check failed: {err}"),
            (None, None) => f.write_str("not checked"),
        }
    }
}

/// Checks a journaled fault on the system ([`crate::Fault::check`]) and audits the check
/// (`Check` by `ctx.requester`: ok when seen in effect, an error otherwise).
pub(crate) fn check_entry(entry: &JournalEntry, ctx: &Context, audit: &Audit) -> CheckReport {
    let report = CheckReport::of(&entry.spec.fault().check(&entry.record, ctx));
    let summary = report.to_string();
    audit.record(
        AuditAction::Check,
        &entry.id,
        entry.spec.kind(),
        &ctx.requester,
        entry.targets.iter().map(ToString::to_string).collect(),
        entry.deadline_unix_ms,
        if report.in_effect() {
            Ok(summary)
        } else {
            Err(summary)
        },
    );
    report
}

/// [`check_entry`] for a journal entry outside an engine (`faultline fault list`), as
/// `requester`. Blocking.
pub fn check_journaled(
    entry: &JournalEntry,
    config: &Arc<ChaosConfig>,
    env: &Arc<Env>,
    audit: &Audit,
    requester: Requester,
) -> CheckReport {
    let ctx = Context {
        id: entry.id.clone(),
        requester,
        deadline: from_unix_millis(entry.deadline_unix_ms),
        config: config.clone(),
        env: env.clone(),
    };
    check_entry(entry, &ctx, audit)
}
