//! This agent's fault engine: built from the configuration and the state directory in
//! exactly one place ([`open_engine`]), and its journal recovered at start in exactly one
//! place ([`recover_at_start`]). `faultline run` (for the API and drills), `faultline fault`
//! in-process and `faultline drill run` all go through here; the engine itself, its guards
//! and journal are the chaos crate's.

use std::path::{Path, PathBuf};

use faultline_chaos::{
    Audit, ChaosConfig, Engine, Env, Journal, RecoveryOutcome, RecoveryReport, RuntimeSockets,
    WorkerCommand,
};

use crate::collectors::Roots;

/// What the engine is built from, taken from the configuration (`Config::fault_settings`).
#[derive(Clone, Debug)]
pub struct EngineSettings {
    /// The guards' limits (`chaos:`).
    pub chaos: ChaosConfig,
    /// Where the host's `/proc` and `/` are.
    pub roots: Roots,
    /// `containers.docker.socket`.
    pub docker_socket: PathBuf,
    /// `containers.cri.socket`, when set.
    pub cri_socket: Option<PathBuf>,
}

/// A fault engine journaling in `<state_dir>/faults/journal`, checking against the `chaos:`
/// limits, reading processes under the `/proc` root, finding container runtimes as
/// [`runtime_sockets`] says, auditing to `audit`. Its helper processes are this executable.
pub fn open_engine(
    settings: &EngineSettings,
    state_dir: &Path,
    audit: Audit,
) -> Result<Engine, String> {
    let worker = WorkerCommand::current_exe()
        .map_err(|e| format!("cannot find the faultline executable for helper processes: {e}"))?;
    let mut env = Env::detect(settings.roots.proc.clone(), worker);
    env.sockets = runtime_sockets(settings);
    let journal = Journal::open(state_dir).map_err(|e| e.to_string())?;
    Ok(Engine::new(settings.chaos.clone(), env, journal, audit))
}

/// Where container faults look for the runtimes when a fault names no socket: the Docker
/// socket of `containers.docker.socket`; and, when faultline sees the host under a root of
/// its own (`rootfs`/`HOST_ROOT`, as in the DaemonSet), the first standard CRI socket under
/// it (the collector's rule, `cri::detect_under`); `containers.cri.socket` wins over both.
/// Otherwise the chaos crate looks at the standard paths.
fn runtime_sockets(settings: &EngineSettings) -> RuntimeSockets {
    let rootfs = &settings.roots.rootfs;
    let found = (rootfs != Path::new("/"))
        .then(|| faultline_chaos::cri::detect_under(rootfs))
        .flatten();
    RuntimeSockets {
        cri: settings.cri_socket.clone().or(found),
        docker: Some(settings.docker_socket.clone()),
    }
}

/// Reverts what the engine's journal holds from dead processes, logging each fault. Never
/// fails the start: an unreadable journal is logged.
pub async fn recover_at_start(engine: &Engine) {
    log_recovery(&engine.recover().await);
}

/// Logs what recovery did with each journal entry, and a summary.
fn log_recovery(reports: &[RecoveryReport]) {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cri_socket_under_the_host_root_and_the_configured_docker_socket_are_the_defaults() {
        let root = tempfile::tempdir().unwrap();
        let mut config = crate::config::Config {
            rootfs: Some(root.path().to_owned()),
            ..crate::config::Config::default()
        };
        config.containers.docker.socket = "/host/run/docker.sock".into();
        let none = runtime_sockets(&config.fault_settings());
        assert_eq!(none.cri, None, "no socket under the root yet");
        assert_eq!(
            none.docker.as_deref(),
            Some(Path::new("/host/run/docker.sock"))
        );
        // CRI-O's /var/run/crio/crio.sock is looked for under run/: /var/run is a symlink.
        std::fs::create_dir_all(root.path().join("run/crio")).unwrap();
        let crio = root.path().join("run/crio/crio.sock");
        let _listener = std::os::unix::net::UnixListener::bind(&crio).unwrap();
        assert_eq!(
            runtime_sockets(&config.fault_settings()).cri,
            Some(crio.clone())
        );
        // A configured CRI socket wins.
        config.containers.cri.socket = Some("/elsewhere/cri.sock".into());
        assert_eq!(
            runtime_sockets(&config.fault_settings()).cri.as_deref(),
            Some(Path::new("/elsewhere/cri.sock"))
        );
        config.containers.cri.socket = None;
        // On the host itself (rootfs /), the chaos crate looks at the standard paths.
        config.rootfs = Some("/".into());
        assert_eq!(runtime_sockets(&config.fault_settings()).cri, None);
    }
}
