//! Errors of fault operations ([`FaultError`]) and the guards that refuse requests
//! ([`Guard`]).
//!
//! A refusal always names its guard (`refused by guard protected-process: …`), so a user
//! can tell a safety stop from a failure.

use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::journal::JournalError;

/// A safety guard that no request can bypass.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Guard {
    /// Never signal PID 1.
    Pid1,
    /// Never signal the agent itself.
    AgentItself,
    /// Never signal the agent's parent.
    AgentParent,
    /// Never signal kernel threads (children of kthreadd, PID 2).
    KernelThread,
    /// Never signal a process named in `chaos.protected_processes`.
    ProtectedProcess,
    /// At most `chaos.max_concurrent` faults at once.
    MaxConcurrent,
    /// No fault lasts longer than `chaos.max_duration`.
    MaxDuration,
    /// Disk fill never leaves less than `chaos.disk_free_floor` free.
    DiskFreeFloor,
    /// Memory stress never takes more than `chaos.memory_max_share` of MemAvailable.
    MemoryShare,
    /// A revert deletes only the file the fault created (name, directory, regular file).
    OwnedFile,
    /// Never touch a pod in a namespace named in `chaos.protected_namespaces`.
    ProtectedNamespace,
    /// Never touch the pod the agent runs in.
    AgentPod,
}

impl Guard {
    /// The guard's name as printed in errors and audit events.
    pub fn name(self) -> &'static str {
        match self {
            Guard::Pid1 => "pid-1",
            Guard::AgentItself => "agent-itself",
            Guard::AgentParent => "agent-parent",
            Guard::KernelThread => "kernel-thread",
            Guard::ProtectedProcess => "protected-process",
            Guard::MaxConcurrent => "max-concurrent",
            Guard::MaxDuration => "max-duration",
            Guard::DiskFreeFloor => "disk-free-floor",
            Guard::MemoryShare => "memory-share",
            Guard::OwnedFile => "owned-file",
            Guard::ProtectedNamespace => "protected-namespace",
            Guard::AgentPod => "agent-pod",
        }
    }
}

impl fmt::Display for Guard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What can go wrong planning, applying, checking or reverting a fault.
#[derive(Debug, thiserror::Error)]
pub enum FaultError {
    /// The spec itself is wrong (missing selector, bad regex, …).
    #[error("invalid {kind} fault: {message}")]
    Invalid {
        /// The fault kind.
        kind: &'static str,
        /// What is wrong and what to do.
        message: String,
    },
    /// A guard refused the request.
    #[error("refused by guard {guard}: {message}")]
    Refused {
        /// The guard.
        guard: Guard,
        /// Why, naming the target.
        message: String,
    },
    /// The selector matched nothing (or nothing that may be touched).
    #[error("{kind}: no target: {message}")]
    NoTarget {
        /// The fault kind.
        kind: &'static str,
        /// What was searched.
        message: String,
    },
    /// The host lacks something the fault needs (a kernel module, a tool, a socket).
    #[error("{kind} is not supported here: {message}")]
    Unsupported {
        /// The fault kind.
        kind: &'static str,
        /// What is missing, and the alternative if there is one.
        message: String,
    },
    /// A file operation failed.
    #[error("{action} {path}: {source}")]
    Io {
        /// What was being done ("cannot create fill file").
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A system call failed.
    #[error("{action}: {errno}")]
    Sys {
        /// What was being done, naming the target.
        action: String,
        /// Why.
        errno: nix::errno::Errno,
    },
    /// A helper process (stress worker, fill writer) could not be started or ended.
    #[error("helper process: {0}")]
    Helper(String),
    /// Another operation failed (a peer such as the Docker API); the message says which.
    #[error("{0}")]
    Other(String),
    /// The journal could not record the fault; nothing was applied.
    #[error(transparent)]
    Journal(#[from] JournalError),
    /// No active fault has this id.
    #[error("no active fault with id {0:?}")]
    UnknownId(String),
    /// Applied, but the check right after apply did not see it in effect (or could not
    /// look); the fault was reverted.
    #[error(
        "fault {id} ({kind}) was applied but its check did not find it in effect, so it was reverted: {detail}"
    )]
    NotInEffect {
        /// The fault's id.
        id: String,
        /// Its kind.
        kind: String,
        /// What the check saw (or why it could not look).
        detail: String,
    },
}

impl FaultError {
    /// A refusal by `guard`.
    pub fn refused(guard: Guard, message: impl Into<String>) -> Self {
        FaultError::Refused {
            guard,
            message: message.into(),
        }
    }

    /// The guard that refused, if this is a refusal.
    pub fn guard(&self) -> Option<Guard> {
        match self {
            FaultError::Refused { guard, .. } => Some(*guard),
            _ => None,
        }
    }
}
