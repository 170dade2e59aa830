//! The local status socket, `<state-dir>/agent.sock`: `faultline status` on the node asks
//! the running agent through it, with no API token. Access is the file's: the socket is
//! created with mode 0600, so only the agent's user (and root) can connect.
//!
//! The protocol is one JSON document ([`crate::status::Status`]): the agent writes it to
//! each connection and closes it; nothing is read. The socket is removed at shutdown; one a
//! killed agent left behind (nobody answers on it) is replaced at start, while one a
//! running agent answers on is left alone (that agent keeps serving it).

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::AsyncWriteExt as _;
use tokio::net::UnixListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument as _, debug, info, warn};

use crate::status::{SOCKET_NAME, Sources};

/// How long one answer may take to write (a client that does not read is dropped).
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);

/// The socket being served; [`Self::remove`] at shutdown.
#[derive(Debug)]
pub struct Serving {
    path: PathBuf,
}

impl Serving {
    /// Removes the socket file (after the serving task stopped).
    pub fn remove(self) {
        if let Err(e) = std::fs::remove_file(&self.path)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            warn!(socket = %self.path.display(), error = %e, "cannot remove the status socket");
        }
    }
}

/// Binds `<state_dir>/agent.sock` and serves `sources` on it until `cancel`; `None` (with
/// a warning: the agent runs on, only `faultline status` cannot reach it) when it cannot.
pub async fn start(
    state_dir: &Path,
    sources: Sources,
    cancel: &CancellationToken,
    tracker: &TaskTracker,
) -> Option<Serving> {
    let path = state_dir.join(SOCKET_NAME);
    let listener = match bind(&path).await {
        Ok(l) => l,
        Err(reason) => {
            warn!(socket = %path.display(), "no status socket ({reason}); `faultline status` cannot reach this agent (GET /v1/status still answers when the API is on)");
            return None;
        }
    };
    info!(socket = %path.display(), "status socket listening (`faultline status`)");
    let cancel = cancel.clone();
    tracker
        .spawn(serve(listener, sources, cancel).instrument(tracing::info_span!("status_socket")));
    Some(Serving { path })
}

/// Binds the socket with mode 0600, replacing a stale one.
async fn bind(path: &Path) -> Result<UnixListener, String> {
    if tokio::fs::symlink_metadata(path).await.is_ok() {
        if tokio::net::UnixStream::connect(path).await.is_ok() {
            return Err("another agent answers on it".to_owned());
        }
        tokio::fs::remove_file(path)
            .await
            .map_err(|e| format!("cannot remove the stale socket: {e}"))?;
        info!(socket = %path.display(), "replaced a stale status socket (an agent that did not stop cleanly)");
    }
    let listener = UnixListener::bind(path).map_err(|e| format!("cannot bind: {e}"))?;
    // Bound with the umask's mode; narrowed before the first accept, so no connection is
    // served under the wider one.
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| format!("cannot set its mode to 0600: {e}"))?;
    Ok(listener)
}

async fn serve(listener: UnixListener, sources: Sources, cancel: CancellationToken) {
    loop {
        let accepted = tokio::select! {
            () = cancel.cancelled() => return,
            a = listener.accept() => a,
        };
        let mut stream = match accepted {
            Ok((s, _)) => s,
            Err(e) => {
                debug!(error = %e, "status socket accept failed");
                continue;
            }
        };
        let status = sources.gather().await;
        let mut body = match serde_json::to_vec(&status) {
            Ok(b) => b,
            Err(e) => {
                warn!(error = %e, "cannot encode the status");
                continue;
            }
        };
        body.push(b'\n');
        let write = async {
            stream.write_all(&body).await?;
            stream.shutdown().await
        };
        if let Err(e) = tokio::time::timeout(WRITE_TIMEOUT, write)
            .await
            .unwrap_or_else(|_| Err(std::io::ErrorKind::TimedOut.into()))
        {
            debug!(error = %e, "status not delivered");
        }
    }
}
