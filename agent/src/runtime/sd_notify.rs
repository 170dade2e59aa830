//! The systemd notification protocol (`sd_notify(3)`), for `Type=notify` units with a
//! watchdog: `READY=1` once the agent has started, `WATCHDOG=1` every half `WatchdogSec`,
//! `STOPPING=1` when shutdown begins.
//!
//! The protocol is one datagram per message, sent to the unix socket named by
//! `$NOTIFY_SOCKET` — a path, or an abstract name when it starts with `@` (the `@` stands for
//! the leading NUL byte). `$WATCHDOG_USEC` is the watchdog timeout in microseconds and
//! `$WATCHDOG_PID`, when set, names the one process that must feed it. Outside systemd the
//! variables are absent and [`Notifier::from_env`] returns `None`: every call site then does
//! nothing, so the agent behaves the same under a shell, a container runtime or systemd.
//!
//! Sends are non-blocking (a full socket queue is an error that is logged, never a stall on
//! an async worker). The watchdog pings come from a task on the agent's runtime
//! ([`watchdog`]): if the runtime wedges, the pings stop and systemd restarts the unit, which
//! is what the watchdog is for.
//!
//! Not here: anything systemd-specific beyond the notification socket (no D-Bus, no libsystemd).

use std::os::linux::net::SocketAddrExt as _;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// What can go wrong talking to the notification socket.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    /// `$NOTIFY_SOCKET` is set but is neither an absolute path nor an `@abstract` name.
    #[error(
        "NOTIFY_SOCKET={0:?} is neither an absolute path nor an @abstract socket name; readiness cannot be reported to systemd"
    )]
    BadAddress(String),
    /// The socket could not be created or the address could not be built.
    #[error("cannot prepare the notification socket NOTIFY_SOCKET={address:?}: {source}")]
    Socket {
        /// `$NOTIFY_SOCKET`.
        address: String,
        /// Why.
        source: std::io::Error,
    },
    /// The datagram could not be sent.
    #[error("cannot send {message:?} to NOTIFY_SOCKET={address:?}: {source}")]
    Send {
        /// The message.
        message: String,
        /// `$NOTIFY_SOCKET`.
        address: String,
        /// Why.
        source: std::io::Error,
    },
}

/// A connection-less sender to the service manager's notification socket.
#[derive(Debug)]
pub struct Notifier {
    socket: UnixDatagram,
    addr: SocketAddr,
    address: String,
}

impl Notifier {
    /// The notifier for `$NOTIFY_SOCKET`, or `None` when the variable is unset or empty (not
    /// started by systemd with `Type=notify`).
    ///
    /// # Errors
    /// When the variable is malformed or the socket cannot be created.
    pub fn from_env() -> Result<Option<Self>, NotifyError> {
        match std::env::var("NOTIFY_SOCKET") {
            Ok(v) if !v.is_empty() => Self::new(&v).map(Some),
            _ => Ok(None),
        }
    }

    /// A notifier for `address` (a path, or `@name` for an abstract socket).
    ///
    /// # Errors
    /// As [`Self::from_env`].
    pub fn new(address: &str) -> Result<Self, NotifyError> {
        let sock_err = |source| NotifyError::Socket {
            address: address.to_owned(),
            source,
        };
        let addr = if let Some(name) = address.strip_prefix('@') {
            SocketAddr::from_abstract_name(name.as_bytes()).map_err(sock_err)?
        } else if address.starts_with('/') {
            SocketAddr::from_pathname(address).map_err(sock_err)?
        } else {
            return Err(NotifyError::BadAddress(address.to_owned()));
        };
        let socket = UnixDatagram::unbound().map_err(sock_err)?;
        socket.set_nonblocking(true).map_err(sock_err)?;
        Ok(Self {
            socket,
            addr,
            address: address.to_owned(),
        })
    }

    /// Sends one message (`READY=1`, `WATCHDOG=1`, `STATUS=…`; several may be joined with
    /// newlines).
    ///
    /// # Errors
    /// When the datagram cannot be sent (no listener, queue full).
    pub fn notify(&self, message: &str) -> Result<(), NotifyError> {
        self.socket
            .send_to_addr(message.as_bytes(), &self.addr)
            .map(|_| ())
            .map_err(|source| NotifyError::Send {
                message: message.to_owned(),
                address: self.address.clone(),
                source,
            })
    }

    /// [`Self::notify`], logging a failure instead of returning it: a lost notification must
    /// not stop the agent (systemd's start timeout or watchdog then acts, as designed).
    pub fn notify_or_log(&self, message: &str) {
        if let Err(e) = self.notify(message) {
            tracing::warn!(error = %e, "systemd notification failed");
        }
    }
}

/// The watchdog timeout from `$WATCHDOG_USEC`, when the watchdog is on and meant for this
/// process (`$WATCHDOG_PID` unset or equal to our pid).
pub fn watchdog_timeout_from_env() -> Option<Duration> {
    watchdog_timeout(
        std::env::var("WATCHDOG_USEC").ok().as_deref(),
        std::env::var("WATCHDOG_PID").ok().as_deref(),
        std::process::id(),
    )
}

/// Pure part of [`watchdog_timeout_from_env`]: `usec` and `pid` are the variables' values.
pub fn watchdog_timeout(usec: Option<&str>, pid: Option<&str>, own_pid: u32) -> Option<Duration> {
    if let Some(pid) = pid.filter(|p| !p.is_empty())
        && pid.trim().parse::<u32>().ok() != Some(own_pid)
    {
        return None;
    }
    let usec: u64 = usec?.trim().parse().ok()?;
    (usec > 0).then(|| Duration::from_micros(usec))
}

/// Sends `WATCHDOG=1` at once and then every `timeout / 2` until `cancel` fires.
pub async fn watchdog(
    notifier: std::sync::Arc<Notifier>,
    timeout: Duration,
    cancel: CancellationToken,
) {
    let period = (timeout / 2).max(Duration::from_millis(1));
    let mut ticker = tokio::time::interval(period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = cancel.cancelled() => return,
            _ = ticker.tick() => notifier.notify_or_log("WATCHDOG=1"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn recv(sock: &UnixDatagram) -> String {
        let mut buf = [0u8; 256];
        let n = sock.recv(&mut buf).unwrap();
        String::from_utf8(buf[..n].to_vec()).unwrap()
    }

    #[test]
    fn sends_datagrams_to_a_path_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let listener = UnixDatagram::bind(&path).unwrap();
        let n = Notifier::new(path.to_str().unwrap()).unwrap();
        n.notify("READY=1").unwrap();
        n.notify("STOPPING=1").unwrap();
        assert_eq!(recv(&listener), "READY=1");
        assert_eq!(recv(&listener), "STOPPING=1");
    }

    #[test]
    fn sends_datagrams_to_an_abstract_socket() {
        let name = format!("faultline-sd-notify-test-{}", std::process::id());
        let addr = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let listener = UnixDatagram::bind_addr(&addr).unwrap();
        let n = Notifier::new(&format!("@{name}")).unwrap();
        n.notify("READY=1").unwrap();
        assert_eq!(recv(&listener), "READY=1");
    }

    #[test]
    fn bad_addresses_and_absent_listeners_are_errors_naming_the_socket() {
        let e = Notifier::new("relative/path").unwrap_err();
        assert!(matches!(e, NotifyError::BadAddress(_)), "{e}");
        assert!(e.to_string().contains("relative/path"));
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nobody-listens");
        let n = Notifier::new(missing.to_str().unwrap()).unwrap();
        let e = n.notify("READY=1").unwrap_err();
        assert!(e.to_string().contains("nobody-listens"), "{e}");
        // Logged, not returned: the agent goes on.
        n.notify_or_log("READY=1");
    }

    #[test]
    fn watchdog_timeout_honours_usec_and_pid() {
        assert_eq!(
            watchdog_timeout(Some("3000000"), None, 7),
            Some(Duration::from_secs(3))
        );
        assert_eq!(
            watchdog_timeout(Some("3000000"), Some("7"), 7),
            Some(Duration::from_secs(3))
        );
        assert_eq!(watchdog_timeout(Some("3000000"), Some("8"), 7), None);
        assert_eq!(watchdog_timeout(Some("0"), None, 7), None);
        assert_eq!(watchdog_timeout(Some("soon"), None, 7), None);
        assert_eq!(watchdog_timeout(None, None, 7), None);
    }

    #[tokio::test]
    async fn watchdog_pings_at_half_the_timeout_until_cancelled() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wd.sock");
        let listener = UnixDatagram::bind(&path).unwrap();
        listener
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let n = Arc::new(Notifier::new(path.to_str().unwrap()).unwrap());
        let cancel = CancellationToken::new();
        let task = tokio::spawn(watchdog(n, Duration::from_millis(200), cancel.clone()));
        let started = std::time::Instant::now();
        let listener = tokio::task::spawn_blocking(move || {
            for _ in 0..3 {
                assert_eq!(recv(&listener), "WATCHDOG=1");
            }
            listener
        })
        .await
        .unwrap();
        // Three pings: at 0, 100 ms and 200 ms (period = half of 200 ms); generous upper
        // bound for a loaded machine.
        let took = started.elapsed();
        assert!(took >= Duration::from_millis(180), "{took:?}");
        assert!(took < Duration::from_secs(3), "{took:?}");
        cancel.cancel();
        task.await.unwrap();
        listener.set_nonblocking(true).unwrap();
        // Drain what was in flight, then nothing more arrives after cancellation.
        let mut buf = [0u8; 64];
        while listener.recv(&mut buf).is_ok() {}
        tokio::time::sleep(Duration::from_millis(250)).await;
        assert!(listener.recv(&mut buf).is_err(), "pinged after cancel");
    }
}
