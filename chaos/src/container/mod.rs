//! Container faults on any runtime: `container-stop`, `container-kill`, `container-pause`
//! and `container-restart`, on one container (`--container ID|NAME`) or on the containers
//! pod selectors pick (`--namespace`, `--pod`, `--label`, `--container-name`, `--count`,
//! `--percent`; see [`crate::select`]).
//!
//! The containers live on a CRI runtime (containerd, CRI-O) or behind a Docker Engine API
//! (Docker, podman's compat socket); `runtime.rs` finds them and makes the calls.
//!
//! What each fault does:
//! - **pause** freezes the container's cgroup (`freezer.rs`: v1 `freezer.state`, v2
//!   `cgroup.freeze`), the same way on every runtime; the revert thaws that directory, taken
//!   from the journal. Where the cgroup cannot be found, an Engine API container is paused
//!   through `POST /pause` instead; a CRI runtime has no pause call, so there the fault is
//!   refused. Docker does not learn of a freeze (`docker ps` still says `Up`).
//! - **stop** and **kill**: CRI `StopContainer` (kill: no grace, so SIGKILL at once; stop:
//!   SIGTERM, then SIGKILL after `--grace`) on a CRI runtime; `POST /stop`, `POST /kill` on
//!   the Engine API. On a CRI runtime — a Kubernetes node — the kubelet, not faultline,
//!   brings the container back (a new container of the pod, as its `restartPolicy` says):
//!   such a fault is irreversible by design, over once applied (`instant`), and its plan,
//!   check and listing say so. Its recovery is what a drill measures. On the Engine API the
//!   revert starts the container again (one with a restart policy may already run, which
//!   the revert accepts).
//! - **restart**: `POST /restart` on the Engine API, over once applied; its revert only
//!   starts the container if it is not running. A CRI runtime cannot restart a container (a
//!   stopped one is never started again), so there the fault is refused.
//!
//! Targets are resolved to full container ids at plan time, and the revert record holds,
//! per container, the runtime and its socket, the id and the freezer directory. Each revert
//! looks first and does nothing when the container is already as it was (or is gone), so
//! reverting twice, or after a crash, is safe.
//!
//! Guards (`targets.rs`): a container holding the agent itself is refused (`agent-itself`),
//! and so are the agent's own pod (`agent-pod`) and pods in `chaos.protected_namespaces`
//! (`protected-namespace`, `kube-system` by default). Stopping, killing or pausing a
//! container reaches every process in it, so each of them goes through the process guards
//! too ([`crate::guard::check_process`]); one hit refuses the whole container, naming the
//! guard and the process. With selectors, every match is checked before the pick: a
//! selector that reaches a protected target is refused as a whole, not silently narrowed.

mod ops;
mod runtime;
mod targets;

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub(crate) use targets::select;

use crate::error::FaultError;
use crate::fault::{Context, Effect, Fault, Plan, PodRef, RevertRecord};
use crate::freezer::FreezerCgroup;
use crate::select::with_pod_selectors;
use crate::units::{HumanDuration, SignalName};
use runtime::RuntimeKind;

/// Which container fault.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ContainerAction {
    /// Stop (grace period, then SIGKILL).
    Stop,
    /// A signal to the main process (CRI: SIGKILL only).
    Kill,
    /// Freeze.
    Pause,
    /// Restart (Engine API only).
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

/// What revert needs for one container.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContainerRecord {
    /// The runtime's socket.
    pub socket: PathBuf,
    /// Which API it speaks.
    #[serde(default)]
    pub runtime: RuntimeKind,
    /// Full container id.
    pub id: String,
    /// Its name at plan time.
    pub name: String,
    /// Its pod, when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<PodRef>,
    /// What was done.
    pub action: ContainerAction,
    /// `StartedAt` before the fault (a restart's check compares it; Engine API only).
    pub started_at: String,
    /// The frozen cgroup (a pause through the freezer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub freezer: Option<FreezerCgroup>,
}

/// What a container fault journals: one record per container.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContainersState {
    /// The containers, in the order they are applied.
    pub containers: Vec<ContainerRecord>,
}

/// The records of a container fault (also a one-container record journaled by an older
/// faultline).
fn records(record: &RevertRecord) -> Result<Vec<ContainerRecord>, FaultError> {
    record
        .state::<ContainersState>()
        .map(|s| s.containers)
        .or_else(|e| {
            record
                .state::<ContainerRecord>()
                .map(|c| vec![c])
                .map_err(|_| e)
        })
}

/// How one kind acts: its action and its options.
#[derive(Clone, Copy, Debug)]
struct How {
    action: ContainerAction,
    grace: Duration,
    signal: Option<SignalName>,
}

/// A container spec: `--container` or the pod selectors, the kind's own options, and the
/// duration.
macro_rules! container_spec {
    ($(#[$meta:meta])* $name:ident { $($(#[$fmeta:meta])* $vis:vis $field:ident : $ty:ty,)* }) => {
        with_pod_selectors! {
            $(#[$meta])*
            #[derive(Clone, Debug, PartialEq, Serialize, Deserialize, clap::Args)]
            #[serde(deny_unknown_fields)]
            pub struct $name {
                /// Container id (or a unique start of it) or, on the Engine API, name; or use
                /// the pod selectors.
                #[arg(long)]
                #[serde(default, skip_serializing_if = "Option::is_none")]
                pub container: Option<String>,
                $($(#[$fmeta])* $vis $field: $ty,)*
                /// How long the fault lasts (required; capped by chaos.max_duration). A
                /// restart, and a stop or kill on a CRI runtime, are over once applied.
                #[arg(long)]
                pub duration: HumanDuration,
            }
        }
    };
}

container_spec! {
    /// `container-stop`: stop running containers (SIGTERM, then SIGKILL after the grace
    /// period). Engine API: the revert starts them again. CRI: irreversible by design (the
    /// kubelet brings them back).
    ContainerStopSpec {
        /// Grace period before the runtime kills it.
        #[arg(long, default_value = "10s")]
        #[serde(default = "default_grace")]
        pub grace: HumanDuration,
    }
}

container_spec! {
    /// `container-kill`: send a signal to containers' main processes (CRI: SIGKILL only,
    /// irreversible by design). Engine API: the revert starts them if they stopped.
    ContainerKillSpec {
        /// The signal (KILL, TERM, 9…). A CRI runtime sends KILL only.
        #[arg(long, default_value = "KILL")]
        #[serde(default = "default_signal")]
        pub signal: SignalName,
    }
}

container_spec! {
    /// `container-pause`: freeze containers' cgroups (any runtime); the revert thaws them.
    ContainerPauseSpec {}
}

container_spec! {
    /// `container-restart`: restart containers through the Engine API (over once applied).
    /// A CRI runtime cannot: refused there.
    ContainerRestartSpec {
        /// Grace period before the runtime kills it.
        #[arg(long, default_value = "10s")]
        #[serde(default = "default_grace")]
        pub grace: HumanDuration,
    }
}

fn default_grace() -> HumanDuration {
    HumanDuration(Duration::from_secs(10))
}

fn default_signal() -> SignalName {
    SignalName(nix::sys::signal::Signal::SIGKILL)
}

/// The [`Fault`] impl of a container spec: every kind plans, applies, checks and reverts
/// through `ops.rs` with its own [`How`].
macro_rules! container_fault {
    ($spec:ty, $how:expr) => {
        impl Fault for $spec {
            fn plan(&self, ctx: &Context) -> Result<Plan, FaultError> {
                let how: fn(&$spec) -> How = $how;
                let how = how(self);
                let query = self.pod_query(how.action.kind())?;
                ops::plan(ctx, how, self.container.as_deref(), &query, self.duration)
            }
            fn apply(&self, plan: &Plan, _ctx: &Context) -> Result<RevertRecord, FaultError> {
                let how: fn(&$spec) -> How = $how;
                ops::apply(plan, how(self))
            }
            fn check(&self, record: &RevertRecord, _ctx: &Context) -> Result<Effect, FaultError> {
                ops::check(record)
            }
            fn revert(&self, record: &RevertRecord, _ctx: &Context) -> Result<(), FaultError> {
                ops::revert(record)
            }
        }
    };
}

container_fault!(ContainerStopSpec, |s| How {
    action: ContainerAction::Stop,
    grace: s.grace.0,
    signal: None,
});
container_fault!(ContainerKillSpec, |s| How {
    action: ContainerAction::Kill,
    grace: Duration::ZERO,
    signal: Some(s.signal),
});
container_fault!(ContainerPauseSpec, |_| How {
    action: ContainerAction::Pause,
    grace: Duration::ZERO,
    signal: None,
});
container_fault!(ContainerRestartSpec, |s| How {
    action: ContainerAction::Restart,
    grace: s.grace.0,
    signal: None,
});

#[cfg(test)]
mod tests;
