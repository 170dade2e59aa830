//! Stop requests: SIGTERM (a supervisor: systemd, the kubelet) and SIGINT (Ctrl-C), the two
//! Unix signals that ask faultline to stop. Every command installs them the same way, before
//! it applies anything, so that a stop request reverts or aborts what it holds instead of
//! killing the process with the default action.

use tokio::signal::unix::{Signal, SignalKind, signal};

/// Installed handlers for both signals.
#[derive(Debug)]
pub struct StopRequests {
    term: Signal,
    int: Signal,
}

impl StopRequests {
    /// Installs the handlers (needs a runtime).
    pub fn install() -> std::io::Result<Self> {
        Ok(Self {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
        })
    }

    /// Waits for the next stop request; the signal's name (`SIGTERM` or `SIGINT`).
    pub async fn recv(&mut self) -> &'static str {
        tokio::select! {
            _ = self.term.recv() => "SIGTERM",
            _ = self.int.recv() => "SIGINT",
        }
    }
}
