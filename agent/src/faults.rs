//! This agent's fault engine: built from the configuration and the state directory in
//! exactly one place ([`open_engine`]), and its journal recovered at start in exactly one
//! place ([`recover_at_start`]). `faultline run` (for the API and drills), `faultline fault`
//! in-process and `faultline drill run` all go through here; the engine itself, its guards
//! and journal are the chaos crate's.

use std::path::Path;

use faultline_chaos::{
    Audit, ChaosConfig, Engine, Env, Journal, RecoveryOutcome, RecoveryReport, WorkerCommand,
};

/// A fault engine journaling in `<state_dir>/faults/journal`, reading processes under
/// `proc_root`, checking against `chaos`, auditing to `audit`. Its helper processes are this
/// executable.
pub fn open_engine(
    chaos: &ChaosConfig,
    proc_root: &Path,
    state_dir: &Path,
    audit: Audit,
) -> Result<Engine, String> {
    let worker = WorkerCommand::current_exe()
        .map_err(|e| format!("cannot find the faultline executable for helper processes: {e}"))?;
    let env = Env::detect(proc_root.to_path_buf(), worker);
    let journal = Journal::open(state_dir).map_err(|e| e.to_string())?;
    Ok(Engine::new(chaos.clone(), env, journal, audit))
}

/// Reverts what the engine's journal holds from dead processes, logging each fault. Never
/// fails the start: an unreadable journal is logged.
pub async fn recover_at_start(engine: &Engine) {
    log_recovery(&engine.recover().await);
}

/// Logs what recovery did with each journal entry, and a summary.
pub fn log_recovery(reports: &[RecoveryReport]) {
    for r in reports {
        let id = r.id.as_ref().map(ToString::to_string).unwrap_or_default();
        match &r.outcome {
            RecoveryOutcome::Reverted => {
                tracing::info!(fault_id = %id, kind = ?r.kind, targets = %r.targets.join(", "), "fault recovered: reverted")
            }
            RecoveryOutcome::HeldByLiveAgent { owner } => {
                tracing::info!(fault_id = %id, owner = %owner, "fault left alone: a live faultline process holds it")
            }
            RecoveryOutcome::Failed { error } => {
                tracing::error!(fault_id = %id, path = %r.path, error = %error, "fault recovery failed; it stays in the journal")
            }
            RecoveryOutcome::Corrupt { error, moved_to } => {
                tracing::error!(path = %r.path, error = %error, moved_to = ?moved_to, "unreadable fault journal entry")
            }
        }
    }
    if !reports.is_empty() {
        tracing::info!(
            entries = reports.len(),
            reverted = reports
                .iter()
                .filter(|r| r.outcome == RecoveryOutcome::Reverted)
                .count(),
            "fault journal recovery done"
        );
    }
}
