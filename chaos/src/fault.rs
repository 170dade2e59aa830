//! The plug-in point: [`Fault`] (plan → apply → check → revert) and the data that flows
//! through it: [`Context`], [`Plan`], [`Target`], [`RevertRecord`], [`Effect`].
//!
//! A fault kind is a spec struct (in [`crate::spec`]) that implements [`Fault`]. The
//! [`crate::Engine`] drives it:
//!
//! 1. `plan(ctx)` validates the spec and resolves targets. No side effects. The plan's
//!    `record` is the *provisional* revert record: everything needed to undo the fault even
//!    if the agent dies in the middle of `apply` (deterministic names such as the fill file
//!    `.faultline-fill-<id>` or the nft table `faultline_<id>`, the resolved pids with their
//!    start times). The engine checks every [`Target`] against the guards, then writes the
//!    record to the journal and fsyncs it.
//! 2. `apply(plan, ctx)` makes the fault real and returns the final [`RevertRecord`] (with,
//!    say, the helper process it started). The engine journals it again. If `apply` fails,
//!    the engine calls `revert(plan.record)` so nothing stays half-applied.
//! 3. `check(record, ctx)` says whether the fault is in effect, looking at the system (not
//!    at memory). The engine calls it right after apply — a fault not in effect is
//!    reverted and the inject fails — and again whenever the faults are listed.
//! 4. `revert(record, ctx)` undoes it using the record alone — no in-memory state — so the
//!    journal can revert after a crash. Reverting something already reverted (or never
//!    applied) is `Ok`.
//!
//! All four are blocking calls; the engine runs them on the blocking pool. Inside them,
//! `tokio::runtime::Handle::try_current()` gives the engine's runtime when there is one,
//! for faults that talk to async peers (`handle.block_on(...)` is allowed on a blocking
//! thread).

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::config::ChaosConfig;
use crate::error::FaultError;
use crate::procfs::ProcessIdentity;

/// One fault kind. Implemented by each spec struct (see [`crate::spec::FaultSpec`]).
pub trait Fault: Send + Sync {
    /// Validates the spec and resolves its targets; no side effects.
    fn plan(&self, ctx: &Context) -> Result<Plan, FaultError>;
    /// Applies the planned fault; returns what is needed to revert it.
    fn apply(&self, plan: &Plan, ctx: &Context) -> Result<RevertRecord, FaultError>;
    /// Whether the fault is in effect now.
    fn check(&self, record: &RevertRecord, ctx: &Context) -> Result<Effect, FaultError>;
    /// Reverts from the record alone; idempotent.
    fn revert(&self, record: &RevertRecord, ctx: &Context) -> Result<(), FaultError>;
    /// How often the engine calls [`Fault::watch`] while the fault is active; `None` (the
    /// default) for kinds with nothing to watch.
    fn watch_every(&self) -> Option<std::time::Duration> {
        None
    }
    /// Keeps an active fault within its guards when the world moves under it (a disk fill
    /// when other writers eat the space left); returns what it changed, for the audit.
    fn watch(&self, _record: &RevertRecord, _ctx: &Context) -> Result<Option<String>, FaultError> {
        Ok(None)
    }
}

/// A fault's id: `<kind>-<8 hex digits>`, safe as a file name and in an nft table name
/// (`[a-z0-9-]`, at most 64 bytes).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct FaultId(String);

impl FaultId {
    /// A new random id for a fault of `kind`.
    pub fn new(kind: &str) -> Self {
        let n: u32 = rand::random();
        FaultId(format!("{kind}-{n:08x}"))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The id with `-` turned into `_` (for names that allow no dash, e.g. nft tables).
    pub fn underscored(&self) -> String {
        self.0.replace('-', "_")
    }
}

impl TryFrom<String> for FaultId {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        let ok = !s.is_empty()
            && s.len() <= 64
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if ok {
            Ok(FaultId(s))
        } else {
            Err(format!(
                "invalid fault id {s:?}: expected [a-z0-9-], at most 64 bytes"
            ))
        }
    }
}

impl std::str::FromStr for FaultId {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        FaultId::try_from(s.to_owned())
    }
}

impl From<FaultId> for String {
    fn from(id: FaultId) -> String {
        id.0
    }
}

impl fmt::Display for FaultId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Who asked for an operation; part of every audit event.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "via", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Requester {
    /// The command line, as this user.
    Cli {
        /// The user name (or uid).
        user: String,
    },
    /// The HTTP API, with this token.
    Api {
        /// The token's name (never the token).
        token: String,
    },
    /// A drill schedule.
    Schedule {
        /// The schedule's name.
        name: String,
    },
    /// The agent itself: deadline expiry, shutdown, journal recovery.
    Agent {
        /// Why (`deadline`, `shutdown`, `recovery`, `kill-switch`).
        reason: String,
    },
}

impl Requester {
    /// The CLI as the current user (`$USER`, else the uid).
    pub fn cli() -> Self {
        let user = std::env::var("USER")
            .ok()
            .filter(|u| !u.is_empty())
            .unwrap_or_else(|| {
                use std::os::unix::fs::MetadataExt;
                std::fs::metadata("/proc/self")
                    .map(|m| format!("uid {}", m.uid()))
                    .unwrap_or_else(|_| "unknown".into())
            });
        Requester::Cli { user }
    }

    /// The agent, for `reason`.
    pub fn agent(reason: &str) -> Self {
        Requester::Agent {
            reason: reason.to_owned(),
        }
    }
}

impl fmt::Display for Requester {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Requester::Cli { user } => write!(f, "cli:{user}"),
            Requester::Api { token } => write!(f, "api:{token}"),
            Requester::Schedule { name } => write!(f, "schedule:{name}"),
            Requester::Agent { reason } => write!(f, "agent:{reason}"),
        }
    }
}

/// How helper processes are started: the agent binary itself in its hidden worker mode.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkerCommand {
    /// The program (default: the current executable).
    pub program: PathBuf,
    /// Arguments before the worker's own (default: `["__chaos-worker"]`).
    pub args: Vec<String>,
}

/// The word that selects the hidden worker mode in the agent binary.
pub const WORKER_ARG: &str = "__chaos-worker";

impl WorkerCommand {
    /// The current executable with [`WORKER_ARG`].
    pub fn current_exe() -> std::io::Result<Self> {
        Ok(WorkerCommand {
            program: std::env::current_exe()?,
            args: vec![WORKER_ARG.to_owned()],
        })
    }
}

/// Facts about the host and the agent, fixed for the engine's life.
#[derive(Clone, Debug)]
pub struct Env {
    /// The `/proc` root.
    pub proc_root: PathBuf,
    /// How to start helper processes.
    pub worker: WorkerCommand,
    /// The agent process itself.
    pub agent: ProcessIdentity,
    /// The agent's parent pid.
    pub parent_pid: i32,
    /// The current boot id.
    pub boot_id: String,
    /// The Kubernetes pod the agent runs in, from `POD_NAMESPACE` and `POD_NAME` (the
    /// downward API), when both are set: the `agent-pod` guard refuses it.
    pub pod: Option<PodRef>,
    /// Where container faults and pod selectors look for the container runtimes when a spec
    /// names no socket (the agent's config); a `None` is looked for at its standard path.
    pub sockets: crate::select::RuntimeSockets,
}

impl Env {
    /// The environment of this process, with `/proc` at `proc_root` and helpers started
    /// through `worker`.
    pub fn detect(proc_root: PathBuf, worker: WorkerCommand) -> Self {
        let boot_id = crate::procfs::boot_id(&proc_root);
        let pid = std::process::id() as i32;
        let agent = crate::procfs::identity(&proc_root, pid, &boot_id).unwrap_or(ProcessIdentity {
            pid,
            start_time: 0,
            boot_id: boot_id.clone(),
            name: String::new(),
        });
        Env {
            proc_root,
            worker,
            agent,
            parent_pid: nix::unistd::getppid().as_raw(),
            boot_id,
            pod: PodRef::from_downward_api(
                std::env::var("POD_NAMESPACE").ok(),
                std::env::var("POD_NAME").ok(),
            ),
            sockets: crate::select::RuntimeSockets::default(),
        }
    }

    /// This process's environment under the host's `/proc`, for unit tests: helpers cannot
    /// start (`/bin/false`).
    #[cfg(test)]
    pub(crate) fn for_tests() -> Self {
        Env::detect(
            PathBuf::from("/proc"),
            WorkerCommand {
                program: "/bin/false".into(),
                args: vec![],
            },
        )
    }
}

/// What every fault operation gets: the fault's id, who asked, its deadline, the guard
/// configuration and the environment.
#[derive(Clone, Debug)]
pub struct Context {
    /// The fault's id (also in file and table names the fault creates).
    pub id: FaultId,
    /// Who asked.
    pub requester: Requester,
    /// When the fault must be reverted.
    pub deadline: SystemTime,
    /// Guard settings.
    pub config: Arc<ChaosConfig>,
    /// Host and agent facts.
    pub env: Arc<Env>,
}

/// A Kubernetes pod, as its container runtime names it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PodRef {
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
    /// Its uid (empty when the runtime did not say).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub uid: String,
}

impl PodRef {
    /// The pod the downward API names (`POD_NAMESPACE`, `POD_NAME`); `None` unless both are
    /// set and non-empty.
    pub fn from_downward_api(namespace: Option<String>, name: Option<String>) -> Option<Self> {
        match (namespace, name) {
            (Some(namespace), Some(name)) if !namespace.is_empty() && !name.is_empty() => {
                Some(PodRef {
                    namespace,
                    name,
                    uid: String::new(),
                })
            }
            _ => None,
        }
    }
}

impl fmt::Display for PodRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// The container a process target was selected through (pod selectors).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContainerRef {
    /// Container id.
    pub id: String,
    /// Its name.
    pub name: String,
    /// Its pod, when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<PodRef>,
}

impl fmt::Display for ContainerRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "container {}", self.name)?;
        if let Some(pod) = &self.pod {
            write!(f, " of pod {pod}")?;
        }
        Ok(())
    }
}

/// Something a fault touches, resolved at plan time. The engine checks every target
/// against the guards before anything is applied: add a variant rather than hiding a
/// target in `description`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Target {
    /// A process that will be signalled (guards: pid-1, agent-itself, agent-parent,
    /// kernel-thread, protected-process; with its container's pod known, also
    /// protected-namespace and agent-pod).
    Process {
        /// Which process.
        process: ProcessIdentity,
        /// The container it was selected through (pod selectors), if any.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        container: Option<ContainerRef>,
    },
    /// A file that will be created to take `bytes` of space in `dir`'s filesystem
    /// (guard: disk-free-floor).
    DiskFill {
        /// The directory.
        dir: PathBuf,
        /// The fill file.
        file: PathBuf,
        /// Bytes to allocate.
        bytes: u64,
    },
    /// Memory to allocate (guard: memory-share).
    Memory {
        /// Bytes.
        bytes: u64,
    },
    /// CPU load.
    Cpu {
        /// Workers.
        workers: u32,
        /// Load per worker, percent.
        load: f64,
    },
    /// A file or directory used for I/O load.
    Path {
        /// The path.
        path: PathBuf,
    },
    /// A network target (interface, namespace, address/port, proxy listen address).
    Network {
        /// Human-readable, e.g. `dev veth0 in netns t1 → 10.0.0.2:5432`.
        description: String,
    },
    /// A container (guards: agent-itself; with its pod known, protected-namespace and
    /// agent-pod).
    Container {
        /// Container id.
        id: String,
        /// Its name, if known.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        name: Option<String>,
        /// Its pod, if it has one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pod: Option<PodRef>,
    },
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Process {
                process,
                container: None,
            } => write!(f, "process {process}"),
            Target::Process {
                process,
                container: Some(c),
            } => write!(f, "process {process} in {c}"),
            Target::DiskFill { file, bytes, .. } => {
                write!(
                    f,
                    "fill file {} ({})",
                    file.display(),
                    crate::units::ByteSize(*bytes)
                )
            }
            Target::Memory { bytes } => write!(f, "memory {}", crate::units::ByteSize(*bytes)),
            Target::Cpu { workers, load } => write!(f, "cpu {workers} worker(s) at {load}%"),
            Target::Path { path } => write!(f, "path {}", path.display()),
            Target::Network { description } => write!(f, "network {description}"),
            Target::Container { id, name, pod } => {
                match name {
                    Some(n) => write!(f, "container {n} ({id})")?,
                    None => write!(f, "container {id}")?,
                }
                match pod {
                    Some(p) => write!(f, " of pod {p}"),
                    None => Ok(()),
                }
            }
        }
    }
}

/// The result of `plan`: what will be done to what, and the provisional revert record.
/// Printable (`--dry-run`) and serialisable (API).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Plan {
    /// The fault's id.
    pub id: FaultId,
    /// The kind (`process-pause`).
    pub kind: String,
    /// How long it lasts.
    pub duration: crate::units::HumanDuration,
    /// What it touches.
    pub targets: Vec<Target>,
    /// What apply will do, one line per step.
    pub actions: Vec<String>,
    /// What revert will do, one line per step.
    pub reverts: Vec<String>,
    /// True for faults that are over once applied (a kill): nothing to hold or revert.
    #[serde(default)]
    pub instant: bool,
    /// How pod selectors picked the targets (seed and picks), when they did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selection: Option<crate::select::Selection>,
    /// The revert record journaled before apply.
    pub record: RevertRecord,
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "fault {} ({}) for {}", self.id, self.kind, self.duration)?;
        if let Some(s) = &self.selection {
            writeln!(f, "selected: {s}")?;
        }
        writeln!(f, "targets:")?;
        for t in &self.targets {
            writeln!(f, "  - {t}")?;
        }
        writeln!(f, "apply:")?;
        for a in &self.actions {
            writeln!(f, "  - {a}")?;
        }
        writeln!(f, "revert:")?;
        if self.reverts.is_empty() {
            writeln!(f, "  - nothing to revert")?;
        }
        for r in &self.reverts {
            writeln!(f, "  - {r}")?;
        }
        Ok(())
    }
}

/// Everything needed to revert a fault without the object that applied it: serde data,
/// journaled before apply and after it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RevertRecord {
    /// Helper processes the fault started (stress workers, fill writers, proxies). Revert
    /// ends them, and the engine ends any still alive afterwards (pid + start time checked).
    #[serde(default)]
    pub helpers: Vec<ProcessIdentity>,
    /// Kind-specific data (paused pids, fill file path, nft table, qdisc dev/netns…), as
    /// the kind's own serde type; see [`RevertRecord::with_state`] and [`RevertRecord::state`].
    #[serde(default)]
    pub state: serde_json::Value,
}

impl RevertRecord {
    /// A record holding `state` (a kind's own serde type).
    pub fn with_state<T: Serialize>(state: &T) -> Result<Self, FaultError> {
        let state = serde_json::to_value(state)
            .map_err(|e| FaultError::Other(format!("cannot encode the revert record: {e}")))?;
        Ok(RevertRecord {
            helpers: Vec::new(),
            state,
        })
    }

    /// The kind-specific state, decoded as `T`.
    pub fn state<T: serde::de::DeserializeOwned>(&self) -> Result<T, FaultError> {
        serde_json::from_value(self.state.clone())
            .map_err(|e| FaultError::Other(format!("revert record does not match its kind: {e}")))
    }
}

/// Whether a fault is in effect.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EffectState {
    /// Fully in effect.
    InEffect,
    /// Some targets affected, some not (a paused process was resumed by someone else…).
    Partial,
    /// Not in effect (reverted, or the targets are gone).
    NotInEffect,
}

/// The answer of `check`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Effect {
    /// The state.
    pub state: EffectState,
    /// What was observed, human-readable.
    pub detail: String,
}

impl Effect {
    /// In effect, because `detail`.
    pub fn in_effect(detail: impl Into<String>) -> Self {
        Effect {
            state: EffectState::InEffect,
            detail: detail.into(),
        }
    }
    /// Partly in effect.
    pub fn partial(detail: impl Into<String>) -> Self {
        Effect {
            state: EffectState::Partial,
            detail: detail.into(),
        }
    }
    /// Not in effect.
    pub fn not_in_effect(detail: impl Into<String>) -> Self {
        Effect {
            state: EffectState::NotInEffect,
            detail: detail.into(),
        }
    }
}

/// Milliseconds since the Unix epoch (0 before 1970).
pub fn unix_millis(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The time `ms` milliseconds after the Unix epoch.
pub fn from_unix_millis(ms: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_millis(ms)
}
