//! Container faults through the Docker Engine API: `container-stop`, `container-kill`,
//! `container-pause` and `container-restart`, by container id or name.
//!
//! Docker is reached through the crate's Engine API client ([`crate::docker`]), one call at a
//! time on a small runtime of the call's own (the [`Fault`] methods are blocking).
//!
//! Targets are resolved to the full container id at plan time (a name can be reused by a new
//! container; the id cannot), and the revert record holds that id and the socket. Reverts:
//! - stop → start; kill → start (a killed container stays exited until started; one with a
//!   restart policy may already be running again, which revert accepts);
//! - pause → unpause;
//! - restart is over once applied (the plan says `instant`); its revert only starts the
//!   container if it is not running.
//!
//! Each revert checks the state first and does nothing when the container is already as it
//! was (or has been removed), so reverting twice, or after a crash, is safe.
//!
//! Guards: a container that holds the agent itself (its id appears in the agent's
//! `/proc/self/cgroup`) is refused with the `agent-itself` guard. Stopping, killing or
//! pausing a container signals every process in it, so each of them — its main process
//! (`State.Pid`) and every process whose cgroup names the container — goes through the same
//! process guards as a process fault's targets ([`crate::guard::check_process`]: PID 1, the
//! agent, its parent, kernel threads, `chaos.protected_processes`); one hit refuses the
//! whole container, naming the guard and the process.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::docker::{ContainerInfo, DEFAULT_SOCKET, Docker, DockerError, valid_container_ref};
use crate::error::{FaultError, Guard};
use crate::fault::{Context, Effect, Fault, Plan, RevertRecord, Target};
use crate::guard;
use crate::procfs::{self, ProcessIdentity};
use crate::units::{HumanDuration, SignalName};

pub(crate) fn default_socket() -> PathBuf {
    PathBuf::from(DEFAULT_SOCKET)
}

pub(crate) fn is_default_socket(p: &Path) -> bool {
    p == Path::new(DEFAULT_SOCKET)
}

/// Run an Engine API future to completion from a blocking [`Fault`] method, on a small
/// runtime of its own in a scoped thread (safe whether or not the caller is inside a tokio
/// runtime; the thread and runtime end with the call).
pub(crate) fn blocking<T: Send>(
    fut: impl std::future::Future<Output = Result<T, DockerError>> + Send,
) -> Result<T, FaultError> {
    std::thread::scope(|s| {
        s.spawn(|| {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| {
                    FaultError::Other(format!("cannot start a runtime for the Docker client: {e}"))
                })?;
            rt.block_on(fut)
                .map_err(|e| FaultError::Other(e.to_string()))
        })
        .join()
        .unwrap_or_else(|_| {
            Err(FaultError::Other(
                "the Docker client thread panicked".into(),
            ))
        })
    })
}

/// Which container fault.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ContainerAction {
    /// `POST /stop`; revert: start.
    Stop,
    /// `POST /kill`; revert: start.
    Kill,
    /// `POST /pause`; revert: unpause.
    Pause,
    /// `POST /restart`; revert: start if not running.
    Restart,
}

impl ContainerAction {
    fn kind(self) -> &'static str {
        match self {
            ContainerAction::Stop => "container-stop",
            ContainerAction::Kill => "container-kill",
            ContainerAction::Pause => "container-pause",
            ContainerAction::Restart => "container-restart",
        }
    }
}

/// What revert needs for a container fault.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContainerRecord {
    /// The Engine socket.
    pub socket: PathBuf,
    /// Full container id.
    pub id: String,
    /// Its name at plan time.
    pub name: String,
    /// What was done.
    pub action: ContainerAction,
    /// `StartedAt` before the fault (a restart's check compares it).
    pub started_at: String,
}

/// `container-stop`: stop a running container (SIGTERM, then SIGKILL after the grace
/// period); revert starts it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, clap::Args)]
#[serde(deny_unknown_fields)]
pub struct ContainerStopSpec {
    /// Container id or name.
    #[arg(long)]
    pub container: String,
    /// Grace period before Docker kills it.
    #[arg(long, default_value = "10s")]
    #[serde(default = "default_grace")]
    pub grace: HumanDuration,
    /// The Docker Engine socket.
    #[arg(long, default_value = DEFAULT_SOCKET)]
    #[serde(default = "default_socket", skip_serializing_if = "is_default_socket")]
    pub docker_socket: PathBuf,
    /// How long the container stays stopped.
    #[arg(long)]
    pub duration: HumanDuration,
}

/// `container-kill`: send a signal to a container's main process; revert starts it if it is
/// no longer running.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, clap::Args)]
#[serde(deny_unknown_fields)]
pub struct ContainerKillSpec {
    /// Container id or name.
    #[arg(long)]
    pub container: String,
    /// The signal (KILL, TERM, 9…).
    #[arg(long, default_value = "KILL")]
    #[serde(default = "default_signal")]
    pub signal: SignalName,
    /// The Docker Engine socket.
    #[arg(long, default_value = DEFAULT_SOCKET)]
    #[serde(default = "default_socket", skip_serializing_if = "is_default_socket")]
    pub docker_socket: PathBuf,
    /// How long the fault lasts before the container is started again.
    #[arg(long)]
    pub duration: HumanDuration,
}

/// `container-pause`: freeze a container (cgroup freezer); revert unpauses it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, clap::Args)]
#[serde(deny_unknown_fields)]
pub struct ContainerPauseSpec {
    /// Container id or name.
    #[arg(long)]
    pub container: String,
    /// The Docker Engine socket.
    #[arg(long, default_value = DEFAULT_SOCKET)]
    #[serde(default = "default_socket", skip_serializing_if = "is_default_socket")]
    pub docker_socket: PathBuf,
    /// How long it stays paused.
    #[arg(long)]
    pub duration: HumanDuration,
}

/// `container-restart`: restart a container (over once applied).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, clap::Args)]
#[serde(deny_unknown_fields)]
pub struct ContainerRestartSpec {
    /// Container id or name.
    #[arg(long)]
    pub container: String,
    /// Grace period before Docker kills it.
    #[arg(long, default_value = "10s")]
    #[serde(default = "default_grace")]
    pub grace: HumanDuration,
    /// The Docker Engine socket.
    #[arg(long, default_value = DEFAULT_SOCKET)]
    #[serde(default = "default_socket", skip_serializing_if = "is_default_socket")]
    pub docker_socket: PathBuf,
    /// Required like every fault's; a restart is over once applied.
    #[arg(long)]
    pub duration: HumanDuration,
}

fn default_grace() -> HumanDuration {
    HumanDuration(Duration::from_secs(10))
}

fn default_signal() -> SignalName {
    SignalName(nix::sys::signal::Signal::SIGKILL)
}

/// Refuses the container holding this process (`agent-itself`) and one holding a process
/// the process guards protect (see the module docs).
fn guard_container(ctx: &Context, info: &ContainerInfo, kind: &str) -> Result<(), FaultError> {
    let env = &ctx.env;
    let cgroup = std::fs::read_to_string(env.proc_root.join("self/cgroup")).unwrap_or_default();
    if !info.id.is_empty() && cgroup.contains(&info.id) {
        return Err(FaultError::refused(
            Guard::AgentItself,
            format!(
                "{kind}: container {} ({}) runs the agent itself",
                info.short_name(),
                info.id
            ),
        ));
    }
    let main = i32::try_from(info.state.pid).ok().filter(|p| *p != 0);
    let id = info.id.to_ascii_lowercase();
    let members: Vec<i32> = if id.len() >= 12 {
        procfs::pids(&env.proc_root)
            .unwrap_or_default()
            .into_iter()
            .filter(|p| Some(*p) != main && procfs::in_container(&env.proc_root, *p, &id))
            .collect()
    } else {
        Vec::new()
    };
    for pid in main.into_iter().chain(members) {
        let p = procfs::identity(&env.proc_root, pid, &env.boot_id).unwrap_or(ProcessIdentity {
            pid,
            start_time: 0,
            boot_id: env.boot_id.clone(),
            name: String::new(),
        });
        if let Err(FaultError::Refused { guard, message }) =
            guard::check_process(&p, &ctx.config, env)
        {
            return Err(FaultError::refused(
                guard,
                format!(
                    "{kind}: container {} ({}) holds a protected process, and {kind} signals all of them: {message}",
                    info.short_name(),
                    info.id
                ),
            ));
        }
    }
    Ok(())
}

fn plan_container(
    ctx: &Context,
    action: ContainerAction,
    container: &str,
    socket: &Path,
    duration: HumanDuration,
    doing: String,
) -> Result<Plan, FaultError> {
    let kind = action.kind();
    if !valid_container_ref(container) {
        return Err(FaultError::Invalid {
            kind,
            message: format!("--container {container:?} is not a container id or name"),
        });
    }
    let docker = Docker::new(socket);
    let info = blocking(docker.inspect(container)).map_err(|e| match e {
        FaultError::Other(m) if m.contains("answered 404") => FaultError::NoTarget {
            kind,
            message: format!("no container {container:?} ({m})"),
        },
        FaultError::Other(m) if m.contains("cannot reach the Docker Engine") => {
            FaultError::Unsupported { kind, message: m }
        }
        other => other,
    })?;
    guard_container(ctx, &info, kind)?;
    let s = &info.state;
    let problem = match action {
        ContainerAction::Stop | ContainerAction::Kill | ContainerAction::Restart if !s.running => {
            Some(format!("is {}, not running", s.status))
        }
        ContainerAction::Stop | ContainerAction::Kill if s.paused => {
            Some("is paused; unpause it first".to_owned())
        }
        ContainerAction::Pause if s.paused => Some("is already paused".to_owned()),
        ContainerAction::Pause if !s.running => Some(format!("is {}, not running", s.status)),
        _ => None,
    };
    if let Some(p) = problem {
        return Err(FaultError::NoTarget {
            kind,
            message: format!("container {container} {p}"),
        });
    }
    let rec = ContainerRecord {
        socket: socket.to_owned(),
        id: info.id.clone(),
        name: info.short_name().to_owned(),
        action,
        started_at: s.started_at.clone(),
    };
    let revert = match action {
        ContainerAction::Stop | ContainerAction::Kill => {
            format!("POST /containers/{}/start", info.id)
        }
        ContainerAction::Pause => format!("POST /containers/{}/unpause", info.id),
        ContainerAction::Restart => {
            format!("POST /containers/{}/start if it is not running", info.id)
        }
    };
    Ok(Plan {
        id: ctx.id.clone(),
        kind: kind.to_owned(),
        duration,
        targets: vec![Target::Container {
            id: info.id.clone(),
            name: Some(rec.name.clone()),
        }],
        actions: vec![doing.replace("{id}", &info.id)],
        reverts: vec![revert],
        instant: action == ContainerAction::Restart,
        record: RevertRecord::with_state(&rec)?,
    })
}

fn apply_container(plan: &Plan, query: &str, extra: Duration) -> Result<RevertRecord, FaultError> {
    let rec: ContainerRecord = plan.record.state()?;
    let verb = match rec.action {
        ContainerAction::Stop => "stop",
        ContainerAction::Kill => "kill",
        ContainerAction::Pause => "pause",
        ContainerAction::Restart => "restart",
    };
    let docker = Docker::new(&rec.socket);
    blocking(docker.post(&rec.id, verb, query, extra))
        .map_err(|e| FaultError::Other(format!("{}: {e}", rec.action.kind())))?;
    Ok(plan.record.clone())
}

/// `None` when the container no longer exists.
fn inspect_opt(rec: &ContainerRecord) -> Result<Option<ContainerInfo>, FaultError> {
    let docker = Docker::new(&rec.socket);
    blocking(async {
        match docker.inspect(&rec.id).await {
            Ok(i) => Ok(Some(i)),
            Err(e) if e.status() == Some(404) => Ok(None),
            Err(e) => Err(e),
        }
    })
}

fn check_container(record: &RevertRecord) -> Result<Effect, FaultError> {
    let rec: ContainerRecord = record.state()?;
    let Some(info) = inspect_opt(&rec)? else {
        return Ok(Effect::not_in_effect(format!(
            "container {} no longer exists",
            rec.id
        )));
    };
    let s = &info.state;
    let in_effect = match rec.action {
        ContainerAction::Stop | ContainerAction::Kill => !s.running,
        ContainerAction::Pause => s.paused,
        ContainerAction::Restart => s.running && s.started_at != rec.started_at,
    };
    let detail = format!(
        "container {} is {} (started {})",
        rec.name, s.status, s.started_at
    );
    Ok(if in_effect {
        Effect::in_effect(detail)
    } else {
        Effect::not_in_effect(detail)
    })
}

fn revert_container(record: &RevertRecord) -> Result<(), FaultError> {
    let rec: ContainerRecord = record.state()?;
    let docker = Docker::new(&rec.socket);
    let Some(info) = inspect_opt(&rec)? else {
        tracing::info!(container = %rec.id, "container removed; nothing to revert");
        return Ok(());
    };
    let s = &info.state;
    let step = match rec.action {
        ContainerAction::Pause if s.paused => Some("unpause"),
        ContainerAction::Pause => None,
        _ if !s.running => Some("start"),
        _ => None,
    };
    if let Some(step) = step {
        blocking(docker.post(&rec.id, step, "", Duration::ZERO))
            .map_err(|e| FaultError::Other(format!("{} revert: {e}", rec.action.kind())))?;
        let after = inspect_opt(&rec)?;
        let ok = after
            .as_ref()
            .is_none_or(|i| i.state.running && !i.state.paused);
        if !ok {
            return Err(FaultError::Other(format!(
                "{} revert: container {} is still {} after {step}",
                rec.action.kind(),
                rec.name,
                after.map(|i| i.state.status).unwrap_or_default()
            )));
        }
    }
    Ok(())
}

fn secs(d: HumanDuration) -> u64 {
    d.0.as_secs()
}

impl Fault for ContainerStopSpec {
    fn plan(&self, ctx: &Context) -> Result<Plan, FaultError> {
        let doing = format!("POST /containers/{{id}}/stop?t={}", secs(self.grace));
        plan_container(
            ctx,
            ContainerAction::Stop,
            &self.container,
            &self.docker_socket,
            self.duration,
            doing,
        )
    }
    fn apply(&self, plan: &Plan, _ctx: &Context) -> Result<RevertRecord, FaultError> {
        apply_container(plan, &format!("?t={}", secs(self.grace)), self.grace.0)
    }
    fn check(&self, record: &RevertRecord, _ctx: &Context) -> Result<Effect, FaultError> {
        check_container(record)
    }
    fn revert(&self, record: &RevertRecord, _ctx: &Context) -> Result<(), FaultError> {
        revert_container(record)
    }
}

impl Fault for ContainerKillSpec {
    fn plan(&self, ctx: &Context) -> Result<Plan, FaultError> {
        let doing = format!(
            "POST /containers/{{id}}/kill?signal={}",
            self.signal.0.as_str()
        );
        plan_container(
            ctx,
            ContainerAction::Kill,
            &self.container,
            &self.docker_socket,
            self.duration,
            doing,
        )
    }
    fn apply(&self, plan: &Plan, _ctx: &Context) -> Result<RevertRecord, FaultError> {
        apply_container(
            plan,
            &format!("?signal={}", self.signal.0.as_str()),
            Duration::ZERO,
        )
    }
    fn check(&self, record: &RevertRecord, _ctx: &Context) -> Result<Effect, FaultError> {
        check_container(record)
    }
    fn revert(&self, record: &RevertRecord, _ctx: &Context) -> Result<(), FaultError> {
        revert_container(record)
    }
}

impl Fault for ContainerPauseSpec {
    fn plan(&self, ctx: &Context) -> Result<Plan, FaultError> {
        let doing = "POST /containers/{id}/pause".to_owned();
        plan_container(
            ctx,
            ContainerAction::Pause,
            &self.container,
            &self.docker_socket,
            self.duration,
            doing,
        )
    }
    fn apply(&self, plan: &Plan, _ctx: &Context) -> Result<RevertRecord, FaultError> {
        apply_container(plan, "", Duration::ZERO)
    }
    fn check(&self, record: &RevertRecord, _ctx: &Context) -> Result<Effect, FaultError> {
        check_container(record)
    }
    fn revert(&self, record: &RevertRecord, _ctx: &Context) -> Result<(), FaultError> {
        revert_container(record)
    }
}

impl Fault for ContainerRestartSpec {
    fn plan(&self, ctx: &Context) -> Result<Plan, FaultError> {
        let doing = format!("POST /containers/{{id}}/restart?t={}", secs(self.grace));
        plan_container(
            ctx,
            ContainerAction::Restart,
            &self.container,
            &self.docker_socket,
            self.duration,
            doing,
        )
    }
    fn apply(&self, plan: &Plan, _ctx: &Context) -> Result<RevertRecord, FaultError> {
        apply_container(plan, &format!("?t={}", secs(self.grace)), self.grace.0)
    }
    fn check(&self, record: &RevertRecord, _ctx: &Context) -> Result<Effect, FaultError> {
        check_container(record)
    }
    fn revert(&self, record: &RevertRecord, _ctx: &Context) -> Result<(), FaultError> {
        revert_container(record)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::docker::ContainerState;

    fn ctx(protected: &[&str]) -> Context {
        let env = crate::fault::Env::for_tests();
        Context {
            id: crate::fault::FaultId::new("container-pause"),
            requester: crate::fault::Requester::cli(),
            deadline: std::time::SystemTime::now(),
            config: std::sync::Arc::new(crate::config::ChaosConfig {
                protected_processes: protected.iter().map(|s| (*s).to_owned()).collect(),
                ..crate::config::ChaosConfig::default()
            }),
            env: std::sync::Arc::new(env),
        }
    }

    /// A running container whose main process is host pid `pid` (an id no cgroup names).
    fn running_as(pid: i64) -> ContainerInfo {
        ContainerInfo {
            id: "f".repeat(64),
            name: "/victim".into(),
            state: ContainerState {
                status: "running".into(),
                running: true,
                paused: false,
                pid,
                started_at: String::new(),
            },
            ..ContainerInfo::default()
        }
    }

    #[test]
    fn a_container_holding_a_guarded_process_is_refused_naming_the_guard() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let pid = i64::from(child.id());
        let refused = |ctx: &Context, info: &ContainerInfo| {
            let e = guard_container(ctx, info, "container-pause").unwrap_err();
            (e.guard(), e.to_string())
        };
        let (g, msg) = refused(&ctx(&["sleep"]), &running_as(pid));
        assert_eq!(g, Some(Guard::ProtectedProcess), "{msg}");
        assert!(
            msg.contains("refused by guard protected-process")
                && msg.contains("container victim")
                && msg.contains("\"sleep\""),
            "{msg}"
        );
        // The defaults (kubelet, containerd, dockerd, sshd, systemd…) do not protect `sleep`.
        assert!(guard_container(&ctx(&[]), &running_as(pid), "container-pause").is_ok());
        assert!(
            guard_container(
                &ctx(crate::config::DEFAULT_PROTECTED),
                &running_as(pid),
                "container-pause"
            )
            .is_ok()
        );
        // PID 1 of the host and the agent itself.
        assert_eq!(refused(&ctx(&[]), &running_as(1)).0, Some(Guard::Pid1));
        let me = i64::from(std::process::id());
        assert_eq!(
            refused(&ctx(&[]), &running_as(me)).0,
            Some(Guard::AgentItself)
        );
        // A stopped container (no main process) has nothing to protect.
        assert!(guard_container(&ctx(&["sleep"]), &running_as(0), "container-stop").is_ok());
        child.kill().unwrap();
        child.wait().unwrap();
    }
}
