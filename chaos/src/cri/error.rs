//! What connecting to a CRI runtime ([`ConnectError`]) and calling it ([`CallError`]) can
//! fail with. Every message names the socket; a call's error also names the CRI method and
//! the pod or container it was about, so a log line alone says where to look.

use std::path::PathBuf;
use std::time::Duration;

/// Why [`CriClient::connect`](super::CriClient::connect) failed.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// Nothing accepts connections at the path (missing socket, no permission, refused).
    #[error(
        "CRI socket {}: cannot connect: {reason} (is the runtime running, is the socket \
         mounted, is containers.cri.socket right?)",
        socket.display()
    )]
    Connect {
        /// The socket.
        socket: PathBuf,
        /// The innermost cause, e.g. `No such file or directory (os error 2)`.
        reason: String,
        /// The transport error.
        #[source]
        source: tonic::transport::Error,
    },
    /// The socket accepted the connection but `Version` failed: not a CRI `runtime.v1`
    /// server (containerd with its CRI plugin disabled, Docker's socket, an old runtime).
    #[error(
        "CRI socket {}: connected, but runtime.v1 Version failed ({code}: {message}); is this \
         containerd with its CRI plugin enabled, or CRI-O?",
        socket.display()
    )]
    NotCri {
        /// The socket.
        socket: PathBuf,
        /// The gRPC status code.
        code: tonic::Code,
        /// The runtime's message.
        message: String,
    },
    /// `Version` got no answer in time.
    #[error("CRI socket {}: the runtime did not answer Version within {timeout:?}", socket.display())]
    Timeout {
        /// The socket.
        socket: PathBuf,
        /// The deadline that passed.
        timeout: Duration,
    },
}

/// Why a call on a connected [`CriClient`](super::CriClient) failed.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// The runtime knows no such pod or container (gone, or never there).
    #[error("CRI {method} on {}: {target} not found: {message}", socket.display())]
    NotFound {
        /// The socket.
        socket: PathBuf,
        /// The CRI method, e.g. `ContainerStatus`.
        method: &'static str,
        /// What the call was about, e.g. `container 3f2a…`.
        target: String,
        /// The runtime's message.
        message: String,
    },
    /// The runtime refused or failed the call.
    #[error("CRI {method} on {} ({target}): {code}: {message}", socket.display())]
    Rpc {
        /// The socket.
        socket: PathBuf,
        /// The CRI method.
        method: &'static str,
        /// What the call was about.
        target: String,
        /// The gRPC status code.
        code: tonic::Code,
        /// The runtime's message.
        message: String,
    },
    /// No answer before the call's deadline.
    #[error("CRI {method} on {} ({target}): no answer within {timeout:?}", socket.display())]
    Timeout {
        /// The socket.
        socket: PathBuf,
        /// The CRI method.
        method: &'static str,
        /// What the call was about.
        target: String,
        /// The deadline that passed.
        timeout: Duration,
    },
    /// The runtime answered without a field the CRI requires (e.g. a status response with no
    /// status).
    #[error("CRI {method} on {} ({target}): the reply has no {field}", socket.display())]
    Incomplete {
        /// The socket.
        socket: PathBuf,
        /// The CRI method.
        method: &'static str,
        /// What the call was about.
        target: String,
        /// The missing field.
        field: &'static str,
    },
}

impl CallError {
    /// Whether the runtime said the pod or container does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(self, CallError::NotFound { .. })
    }
}

/// The innermost message of an error chain: tonic's transport errors print only
/// `transport error`, while the cause a user can act on (`No such file or directory`) is at
/// the bottom.
pub(super) fn innermost(error: &(dyn std::error::Error + 'static)) -> String {
    let mut current = error;
    while let Some(next) = current.source() {
        current = next;
    }
    current.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn call_errors_name_socket_method_and_target() {
        let error = CallError::NotFound {
            socket: PathBuf::from("/run/containerd/containerd.sock"),
            method: "ContainerStatus",
            target: "container abc".into(),
            message: "not found".into(),
        };
        let text = error.to_string();
        assert!(text.contains("/run/containerd/containerd.sock"), "{text}");
        assert!(text.contains("ContainerStatus"), "{text}");
        assert!(text.contains("container abc"), "{text}");
        assert!(error.is_not_found());
    }

    #[test]
    fn innermost_reaches_the_bottom_of_the_chain() {
        #[derive(Debug, thiserror::Error)]
        #[error("outer")]
        struct Outer(#[source] std::io::Error);
        let error = Outer(std::io::Error::from_raw_os_error(2));
        assert!(innermost(&error).contains("No such file or directory"));
    }
}
