//! Journal recovery: revert what the fault journal still holds once the agent process that
//! applied it is gone (killed, crashed, or a one-shot `faultline fault inject` that ended).
//!
//! Each entry is looked at on its own and reported ([`RecoveryReport`]):
//! - its owner (pid + start time, [`crate::procfs::is_alive`]) is alive: left alone, since
//!   that process holds the fault and reverts it at its deadline — unless `force`
//!   (`faultline fault revert --all|ID`);
//! - otherwise it is reverted from its record the way the engine reverts ([`revert_entry`]:
//!   the kind's revert, leftover helpers, then the entry), audited as `Recover`; a failed
//!   revert keeps the entry for the next attempt;
//! - an entry that does not parse (or names another fault than its file's) is never trusted:
//!   the helper processes its JSON still names are ended if they are faultline helpers whose
//!   agent is gone ([`helper::end_orphans`]), and the file is moved aside
//!   ([`Journal::quarantine`]) for a human.
//!
//! Blocking: runs at start-up and from the CLI, not on the async workers
//! ([`crate::Engine::recover`] moves it to the blocking pool). Not here: the protocol that
//! makes the journal trustworthy ([`crate::journal`]) and reverts of active faults
//! ([`crate::engine`]).

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use crate::audit::{Audit, AuditAction};
use crate::config::ChaosConfig;
use crate::engine::revert_entry;
use crate::fault::{Context, Env, FaultId, Requester, from_unix_millis};
use crate::helper;
use crate::journal::Journal;
use crate::procfs::{self, ProcessIdentity};

/// What recovery did with one journal entry.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "kebab-case")]
pub enum RecoveryOutcome {
    /// Reverted and removed from the journal.
    Reverted,
    /// Revert failed; the entry stays for the next attempt.
    Failed {
        /// Why.
        error: String,
    },
    /// Unreadable: its helpers (if named) were ended and the file moved aside.
    Corrupt {
        /// Why it could not be read.
        error: String,
        /// Where the file went.
        moved_to: Option<String>,
    },
    /// Left alone: the agent process that applied it is alive and holds it.
    HeldByLiveAgent {
        /// That process.
        owner: ProcessIdentity,
    },
}

/// One entry's recovery.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RecoveryReport {
    /// The fault id (absent for an unreadable entry).
    pub id: Option<FaultId>,
    /// The kind, if known.
    pub kind: Option<String>,
    /// The journal file.
    pub path: String,
    /// Resolved targets, if known.
    pub targets: Vec<String>,
    /// What happened.
    pub outcome: RecoveryOutcome,
}

impl RecoveryReport {
    pub(crate) fn failed_task(e: &tokio::task::JoinError) -> Self {
        RecoveryReport {
            id: None,
            kind: None,
            path: String::new(),
            targets: Vec::new(),
            outcome: RecoveryOutcome::Failed {
                error: format!("recovery task failed: {e}"),
            },
        }
    }
}

/// Reverts every journaled fault whose owning agent is dead (all of them with `force`,
/// which `faultline fault revert --all` uses), reporting each entry. Never panics on a bad
/// entry.
pub fn recover(
    journal: &Journal,
    config: &Arc<ChaosConfig>,
    env: &Arc<Env>,
    audit: &Audit,
    force: bool,
) -> Vec<RecoveryReport> {
    recover_matching(journal, config, env, audit, force, |_| true)
}

/// [`recover`] restricted to the entries `select` accepts (`faultline fault revert ID`).
pub fn recover_matching(
    journal: &Journal,
    config: &Arc<ChaosConfig>,
    env: &Arc<Env>,
    audit: &Audit,
    force: bool,
    select: impl Fn(&FaultId) -> bool,
) -> Vec<RecoveryReport> {
    let entries = match journal.entries() {
        Ok(e) => e,
        Err(e) => {
            return vec![RecoveryReport {
                id: None,
                kind: None,
                path: journal.dir().display().to_string(),
                targets: Vec::new(),
                outcome: RecoveryOutcome::Failed {
                    error: e.to_string(),
                },
            }];
        }
    };
    let mut out = Vec::new();
    for item in entries {
        match item {
            Ok(entry) => {
                if !select(&entry.id) {
                    continue;
                }
                let path = journal.path(&entry.id).display().to_string();
                let targets: Vec<String> = entry.targets.iter().map(ToString::to_string).collect();
                let owner_alive = owner_alive(&entry, env);
                if owner_alive && !force {
                    out.push(RecoveryReport {
                        id: Some(entry.id.clone()),
                        kind: Some(entry.spec.kind().to_owned()),
                        path,
                        targets,
                        outcome: RecoveryOutcome::HeldByLiveAgent {
                            owner: entry.owner.clone(),
                        },
                    });
                    continue;
                }
                let ctx = Context {
                    id: entry.id.clone(),
                    requester: Requester::agent("recovery"),
                    deadline: from_unix_millis(entry.deadline_unix_ms),
                    config: config.clone(),
                    env: env.clone(),
                };
                let outcome = match revert_entry(journal, audit, &entry, &ctx, AuditAction::Recover)
                {
                    Ok(()) => {
                        info!(fault_id = %entry.id, kind = entry.spec.kind(), targets = %targets.join(", "), "recovered a fault from the journal: reverted");
                        RecoveryOutcome::Reverted
                    }
                    Err(e) => {
                        warn!(fault_id = %entry.id, kind = entry.spec.kind(), error = %e, "could not revert a journaled fault; it stays in the journal");
                        RecoveryOutcome::Failed {
                            error: e.to_string(),
                        }
                    }
                };
                out.push(RecoveryReport {
                    id: Some(entry.id.clone()),
                    kind: Some(entry.spec.kind().to_owned()),
                    path,
                    targets,
                    outcome,
                });
            }
            Err(corrupt) => {
                let _ = helper::end_orphans(&corrupt.helpers, env);
                let moved_to = journal
                    .quarantine(&corrupt)
                    .ok()
                    .map(|p| p.display().to_string());
                warn!(path = %corrupt.path.display(), error = %corrupt.error, moved_to = ?moved_to, helpers_ended = corrupt.helpers.len(), "unreadable fault journal entry: its helpers were ended; check what it names by hand");
                out.push(RecoveryReport {
                    id: None,
                    kind: None,
                    path: corrupt.path.display().to_string(),
                    targets: Vec::new(),
                    outcome: RecoveryOutcome::Corrupt {
                        error: corrupt.error,
                        moved_to,
                    },
                });
            }
        }
    }
    out
}

/// Whether the process that journaled `entry` still runs (pid + start time + boot); an entry
/// without an owner (pid 0) has none.
pub(crate) fn owner_alive(entry: &crate::JournalEntry, env: &Env) -> bool {
    entry.owner.pid != 0 && procfs::is_alive(&env.proc_root, &entry.owner, &env.boot_id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fault::RevertRecord;
    use crate::journal::{JOURNAL_VERSION, JournalEntry, Phase};
    use crate::spec::FaultSpec;

    fn env() -> Arc<Env> {
        Arc::new(Env::for_tests())
    }

    fn state(pid: u32) -> Option<char> {
        procfs::read_stat(std::path::Path::new("/proc"), pid as i32).map(|s| s.state)
    }

    #[test]
    fn recovery_reverts_dead_owners_faults_once_and_leaves_live_ones() {
        let dir = tempfile::tempdir().unwrap();
        let journal = Journal::open(dir.path()).unwrap();
        let env = env();
        let config = Arc::new(ChaosConfig::default());
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let target = procfs::identity(&env.proc_root, child.id() as i32, &env.boot_id).unwrap();
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(target.pid),
            nix::sys::signal::Signal::SIGSTOP,
        )
        .unwrap();
        assert!(crate::helper::alive(std::slice::from_ref(&target), &env) == 1);
        let spec: FaultSpec = serde_json::from_str(&format!(
            r#"{{"kind":"process-pause","pid":{},"duration":"60s"}}"#,
            target.pid
        ))
        .unwrap();
        let record = RevertRecord::with_state(&crate::process::ProcessState {
            signal: crate::units::SignalName(nix::sys::signal::Signal::SIGSTOP),
            targets: vec![target.clone()],
        })
        .unwrap();
        let dead_owner = ProcessIdentity {
            start_time: env.agent.start_time + 1,
            ..env.agent.clone()
        };
        let entry = |id: &str, owner: ProcessIdentity| JournalEntry {
            version: JOURNAL_VERSION,
            id: id.parse().unwrap(),
            spec: spec.clone(),
            requester: Requester::cli(),
            owner,
            created_unix_ms: 1,
            deadline_unix_ms: 2,
            phase: Phase::Applied,
            targets: Vec::new(),
            selection: None,
            record: record.clone(),
        };
        journal
            .write(&entry("process-pause-0000000a", dead_owner))
            .unwrap();
        journal
            .write(&entry("process-pause-0000000b", env.agent.clone()))
            .unwrap();
        std::fs::write(journal.dir().join("torn-2.json"), b"{\"version\":1,\"id\":").unwrap();
        let audit = Audit::default();
        let first = recover(&journal, &config, &env, &audit, false);
        assert_eq!(first.len(), 3, "{first:?}");
        assert!(first.iter().any(|r| r.outcome == RecoveryOutcome::Reverted));
        assert!(
            first
                .iter()
                .any(|r| matches!(r.outcome, RecoveryOutcome::HeldByLiveAgent { .. }))
        );
        assert!(
            first
                .iter()
                .any(|r| matches!(r.outcome, RecoveryOutcome::Corrupt { .. }))
        );
        assert!(
            matches!(state(child.id()), Some('S' | 'R')),
            "SIGCONT was sent"
        );
        // Idempotent: the reverted and corrupt entries are gone, the live one is still left.
        let second = recover(&journal, &config, &env, &audit, false);
        assert_eq!(second.len(), 1, "{second:?}");
        assert!(matches!(
            second[0].outcome,
            RecoveryOutcome::HeldByLiveAgent { .. }
        ));
        // Forced (revert --all): reverting an already resumed process is fine.
        let forced = recover(&journal, &config, &env, &audit, true);
        assert_eq!(forced.len(), 1);
        assert_eq!(forced[0].outcome, RecoveryOutcome::Reverted);
        assert!(recover(&journal, &config, &env, &audit, true).is_empty());
        child.kill().unwrap();
        child.wait().unwrap();
    }
}
