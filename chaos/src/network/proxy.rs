//! The built-in TCP proxy: a Toxiproxy-style man in the middle that needs no kernel feature.
//!
//! [`Proxy::start`] binds the listen address, and for every accepted client connects to the
//! upstream and runs two pumps: upstream (client → server) and downstream (server → client),
//! each through the chain of [`Toxic`]s that covers its direction. A direction without toxics
//! is a plain copy loop (this is what the benchmark's "zero toxics" figure measures); a
//! direction with toxics becomes reader → stage → … → stage → writer, joined by small bounded
//! channels so that a slow stage pushes back on the sender instead of buffering without limit.
//!
//! Toxics that end a connection (`timeout`, `reset_peer`, `limit_data`, or an I/O error) do so
//! through one per-connection [`CancellationToken`]; `reset_peer` also sets SO_LINGER 0 on both
//! sockets before they are dropped, so the peers see a TCP RST ("connection reset by peer").
//!
//! Ownership: every task (the accept loop and one per connection) is spawned on the proxy's
//! [`TaskTracker`] and stops when the proxy's token is cancelled — by [`Proxy::stop`], by
//! dropping the [`Proxy`], or by the parent token it was started under (the fault engine's kill
//! switch). The listener lives inside the accept task, so once [`Proxy::stop`] returns nothing
//! listens on the address any more.
//!
//! Crash safety: the proxy lives in the agent's process, so a SIGKILL takes the listener and
//! every connection with it; there is nothing to undo afterwards (reverting from a journal
//! record is [`super::proxy_fault`]'s).

use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures::future::join_all;
use nix::sys::socket::Shutdown;
use serde::{Deserialize, Serialize};
use thiserror::Error;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::{Instant, sleep, sleep_until};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, debug, info_span, warn};

use super::toxic::{
    Direction, Toxic, ToxicError, bandwidth_piece, jittered, slice_len, transmit_time,
};

/// What a proxy fault asks for.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProxySpec {
    /// Where clients connect (e.g. `127.0.0.1:15432`); port 0 picks a free port.
    pub listen: SocketAddr,
    /// Where the proxy connects for each client (`host:port`).
    pub upstream: String,
    /// Toxics, applied per direction in the order given.
    #[serde(default)]
    pub toxics: Vec<Toxic>,
}

/// Why a proxy could not start.
#[derive(Debug, Error)]
pub enum ProxyError {
    /// A toxic's values are wrong.
    #[error("proxy: {0}")]
    Toxic(#[from] ToxicError),
    /// The listen address could not be bound.
    #[error("proxy: cannot listen on {addr}: {source}")]
    Bind {
        /// The listen address.
        addr: SocketAddr,
        /// The OS error (address in use, permission denied, …).
        source: io::Error,
    },
    /// The upstream is not a resolvable `host:port`.
    #[error("proxy: upstream `{upstream}` does not resolve to an address: {reason}")]
    Upstream {
        /// The upstream as given.
        upstream: String,
        /// Why it does not resolve.
        reason: String,
    },
    /// The upstream is the proxy itself.
    #[error("proxy: upstream {upstream} is the proxy's own listen address; that would loop")]
    Loop {
        /// The upstream address.
        upstream: SocketAddr,
    },
}

impl ProxySpec {
    /// Validate the toxics and resolve the upstream (the plan step).
    pub async fn resolve_upstream(&self) -> Result<Vec<SocketAddr>, ProxyError> {
        for t in &self.toxics {
            t.validate()?;
        }
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host(&self.upstream)
            .await
            .map_err(|e| ProxyError::Upstream {
                upstream: self.upstream.clone(),
                reason: e.to_string(),
            })?
            .collect();
        if addrs.is_empty() {
            return Err(ProxyError::Upstream {
                upstream: self.upstream.clone(),
                reason: "no addresses".into(),
            });
        }
        if let Some(a) = addrs.iter().find(|a| **a == self.listen) {
            return Err(ProxyError::Loop { upstream: *a });
        }
        Ok(addrs)
    }
}

/// Counters of a running proxy.
#[derive(Debug, Default)]
pub struct ProxyStats {
    /// Client connections accepted.
    pub accepted: AtomicU64,
    /// Bytes written to upstream servers.
    pub bytes_upstream: AtomicU64,
    /// Bytes written to clients.
    pub bytes_downstream: AtomicU64,
}

/// A running proxy. Dropping it stops it (without waiting); [`Proxy::stop`] stops and waits.
#[derive(Debug)]
pub struct Proxy {
    local_addr: SocketAddr,
    token: CancellationToken,
    tracker: TaskTracker,
    stats: Arc<ProxyStats>,
}

/// The toxic chains of both directions.
#[derive(Debug)]
struct Chains {
    upstream: Vec<Toxic>,
    downstream: Vec<Toxic>,
}

impl Proxy {
    /// Validate `spec`, bind its listen address and start accepting. Stops when `parent` is
    /// cancelled, when [`Proxy::stop`] is called or when the `Proxy` is dropped.
    pub async fn start(spec: &ProxySpec, parent: &CancellationToken) -> Result<Proxy, ProxyError> {
        spec.resolve_upstream().await?;
        let listener = TcpListener::bind(spec.listen)
            .await
            .map_err(|source| ProxyError::Bind {
                addr: spec.listen,
                source,
            })?;
        let local_addr = listener.local_addr().map_err(|source| ProxyError::Bind {
            addr: spec.listen,
            source,
        })?;
        let chains = Arc::new(Chains {
            upstream: chain_for(&spec.toxics, Direction::Upstream),
            downstream: chain_for(&spec.toxics, Direction::Downstream),
        });
        let token = parent.child_token();
        let tracker = TaskTracker::new();
        let stats = Arc::new(ProxyStats::default());
        let upstream: Arc<str> = Arc::from(spec.upstream.as_str());
        let span = info_span!("proxy", listen = %local_addr, upstream = %spec.upstream);
        tracker.spawn(
            accept_loop(
                listener,
                upstream,
                chains,
                token.clone(),
                tracker.clone(),
                stats.clone(),
            )
            .instrument(span),
        );
        tracker.close();
        Ok(Proxy {
            local_addr,
            token,
            tracker,
            stats,
        })
    }

    /// The bound listen address (with the real port when 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Counters.
    pub fn stats(&self) -> &ProxyStats {
        &self.stats
    }

    /// Whether the proxy still accepts connections.
    pub fn is_running(&self) -> bool {
        !self.token.is_cancelled() && !self.tracker.is_empty()
    }

    /// Stop accepting, close every proxied connection and wait until all tasks have ended
    /// (the listener is closed when this returns).
    pub async fn stop(&self) {
        self.token.cancel();
        self.tracker.wait().await;
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.token.cancel();
    }
}

/// The toxics of `all` that act on `dir`, in order.
fn chain_for(all: &[Toxic], dir: Direction) -> Vec<Toxic> {
    all.iter()
        .filter(|t| t.stream().covers(dir))
        .cloned()
        .collect()
}

async fn accept_loop(
    listener: TcpListener,
    upstream: Arc<str>,
    chains: Arc<Chains>,
    token: CancellationToken,
    tracker: TaskTracker,
    stats: Arc<ProxyStats>,
) {
    loop {
        let accepted = tokio::select! {
            biased;
            () = token.cancelled() => break,
            r = listener.accept() => r,
        };
        match accepted {
            Ok((client, peer)) => {
                stats.accepted.fetch_add(1, Ordering::Relaxed);
                let span = info_span!("proxy_conn", %peer);
                tracker.spawn(
                    serve(
                        client,
                        upstream.clone(),
                        chains.clone(),
                        token.clone(),
                        stats.clone(),
                    )
                    .instrument(span),
                );
            }
            Err(e) => {
                // EMFILE and friends: back off briefly instead of spinning.
                warn!(error = %e, "proxy accept failed");
                tokio::select! {
                    () = token.cancelled() => break,
                    () = sleep(Duration::from_millis(50)) => {}
                }
            }
        }
    }
    debug!("proxy listener closed");
}

/// Why a connection was ended by the proxy rather than by its peers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
enum Close {
    Reset = 1,
    Timeout = 2,
    LimitData = 3,
    Error = 4,
}

/// Per-connection control: one token that ends both pumps and the first reason given.
#[derive(Debug)]
struct ConnCtl {
    token: CancellationToken,
    reason: AtomicU8,
}

impl ConnCtl {
    fn close(&self, why: Close) {
        let _ = self
            .reason
            .compare_exchange(0, why as u8, Ordering::AcqRel, Ordering::Acquire);
        self.token.cancel();
    }

    fn reason(&self) -> Option<Close> {
        match self.reason.load(Ordering::Acquire) {
            1 => Some(Close::Reset),
            2 => Some(Close::Timeout),
            3 => Some(Close::LimitData),
            4 => Some(Close::Error),
            _ => None,
        }
    }
}

async fn serve(
    client: TcpStream,
    upstream: Arc<str>,
    chains: Arc<Chains>,
    token: CancellationToken,
    stats: Arc<ProxyStats>,
) {
    let server = tokio::select! {
        () = token.cancelled() => return,
        r = TcpStream::connect(&*upstream) => match r {
            Ok(s) => s,
            Err(e) => {
                warn!(error = %e, %upstream, "proxy cannot reach upstream; closing client");
                return;
            }
        },
    };
    // Small request/response exchanges are the common case; never hold bytes back.
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let ctl = ConnCtl {
        token: token.child_token(),
        reason: AtomicU8::new(0),
    };
    let up = pump(
        &client,
        &server,
        &chains.upstream,
        &ctl,
        &stats.bytes_upstream,
        Direction::Upstream,
    );
    let down = pump(
        &server,
        &client,
        &chains.downstream,
        &ctl,
        &stats.bytes_downstream,
        Direction::Downstream,
    );
    tokio::join!(up, down);
    match ctl.reason() {
        Some(Close::Reset) => {
            // SO_LINGER 0: closing sends RST instead of FIN. Best effort: a socket whose peer
            // is already gone cannot be reset any more.
            let _ = client.set_zero_linger();
            let _ = server.set_zero_linger();
            debug!("connection reset by reset_peer toxic");
        }
        Some(other) => debug!(reason = ?other, "connection closed by proxy"),
        None => debug!("connection finished"),
    }
}

/// One unit of data travelling through a chain.
#[derive(Debug)]
struct Chunk {
    data: Bytes,
    /// When it was read (or left the previous latency stage).
    arrived: Instant,
}

#[derive(Debug)]
enum Msg {
    Data(Chunk),
    /// Close the connection once everything before this has been written.
    Close(Close),
}

/// Chunks in flight between two stages; small so back-pressure reaches the sender quickly.
const STAGE_QUEUE: usize = 16;
/// Read size of the pumps.
const READ_BUF: usize = 64 * 1024;

/// Move one direction until EOF (then half-close `dst`), an error, or the connection's end.
async fn pump(
    src: &TcpStream,
    dst: &TcpStream,
    chain: &[Toxic],
    ctl: &ConnCtl,
    counter: &AtomicU64,
    dir: Direction,
) {
    let work = async {
        if chain.is_empty() {
            copy(src, dst, counter).await
        } else {
            through_chain(src, dst, chain, ctl, counter).await
        }
    };
    let result = tokio::select! {
        biased;
        () = ctl.token.cancelled() => return,
        r = work => r,
    };
    match result {
        Ok(()) => half_close(dst),
        Err(e) => {
            debug!(direction = dir.as_str(), error = %e, "pump ended with an error; closing connection");
            ctl.close(Close::Error);
        }
    }
}

/// The zero-toxic path: read into one reused buffer, write it out, repeat.
async fn copy(src: &TcpStream, dst: &TcpStream, counter: &AtomicU64) -> io::Result<()> {
    let mut buf = vec![0u8; READ_BUF];
    loop {
        let n = read(src, &mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        write_all(dst, &buf[..n]).await?;
        counter.fetch_add(n as u64, Ordering::Relaxed);
    }
}

/// The toxic path: reader → stages → writer over bounded channels, all polled by this task.
async fn through_chain(
    src: &TcpStream,
    dst: &TcpStream,
    chain: &[Toxic],
    ctl: &ConnCtl,
    counter: &AtomicU64,
) -> io::Result<()> {
    let (first_tx, mut rx) = mpsc::channel::<Msg>(STAGE_QUEUE);
    let mut stages: Vec<Pin<Box<dyn Future<Output = ()> + Send + '_>>> = Vec::new();
    for toxic in chain {
        let (tx, next_rx) = mpsc::channel::<Msg>(STAGE_QUEUE);
        stages.push(Box::pin(run_stage(toxic, rx, tx, ctl)));
        rx = next_rx;
    }
    let reader = async move {
        let mut buf = BytesMut::with_capacity(READ_BUF);
        loop {
            buf.reserve(READ_BUF);
            let n = read_buf(src, &mut buf).await?;
            if n == 0 {
                return Ok::<(), io::Error>(());
            }
            let chunk = Chunk {
                data: buf.split().freeze(),
                arrived: Instant::now(),
            };
            if first_tx.send(Msg::Data(chunk)).await.is_err() {
                // A stage ended the stream (limit_data); stop reading.
                return Ok(());
            }
        }
    };
    let writer = async move {
        while let Some(msg) = rx.recv().await {
            match msg {
                Msg::Data(chunk) => {
                    write_all(dst, &chunk.data).await?;
                    counter.fetch_add(chunk.data.len() as u64, Ordering::Relaxed);
                }
                Msg::Close(why) => {
                    ctl.close(why);
                    return Ok(());
                }
            }
        }
        Ok::<(), io::Error>(())
    };
    let (r, w, _) = tokio::join!(reader, writer, join_all(stages));
    r.and(w)
}

/// One toxic between `rx` and `tx`. Returning drops `tx`, which the next stage sees as EOF.
async fn run_stage(
    toxic: &Toxic,
    mut rx: mpsc::Receiver<Msg>,
    tx: mpsc::Sender<Msg>,
    ctl: &ConnCtl,
) {
    let started = Instant::now();
    match *toxic {
        Toxic::Latency {
            latency, jitter, ..
        } => {
            while let Some(msg) = rx.recv().await {
                let msg = match msg {
                    Msg::Data(mut c) => {
                        let u = if jitter.is_zero() {
                            0.5
                        } else {
                            rand::random::<f64>()
                        };
                        sleep_precise(c.arrived + jittered(latency, jitter, u)).await;
                        c.arrived = Instant::now();
                        Msg::Data(c)
                    }
                    other => other,
                };
                if tx.send(msg).await.is_err() {
                    return;
                }
            }
        }
        Toxic::Bandwidth { rate, .. } => {
            let piece = bandwidth_piece(rate);
            let mut next = Instant::now();
            while let Some(msg) = rx.recv().await {
                match msg {
                    Msg::Data(c) => {
                        let mut data = c.data;
                        while !data.is_empty() {
                            let part = data.split_to(piece.min(data.len()));
                            next = next.max(Instant::now()) + transmit_time(part.len(), rate);
                            sleep_until(next).await;
                            let chunk = Chunk {
                                data: part,
                                arrived: c.arrived,
                            };
                            if tx.send(Msg::Data(chunk)).await.is_err() {
                                return;
                            }
                        }
                    }
                    other => {
                        if tx.send(other).await.is_err() {
                            return;
                        }
                    }
                }
            }
        }
        Toxic::Timeout { timeout, .. } => {
            let deadline = (!timeout.is_zero()).then(|| started + timeout);
            let mut input_open = true;
            loop {
                tokio::select! {
                    msg = rx.recv(), if input_open => {
                        // Blackhole: data and the sender's close are both swallowed.
                        input_open = msg.is_some();
                    }
                    () = sleep_until(deadline.unwrap_or(started)), if deadline.is_some() => {
                        ctl.close(Close::Timeout);
                        return;
                    }
                    () = ctl.token.cancelled() => return,
                }
            }
        }
        Toxic::ResetPeer { timeout, .. } => {
            let deadline = started + timeout;
            loop {
                tokio::select! {
                    biased;
                    () = sleep_until(deadline) => {
                        ctl.close(Close::Reset);
                        return;
                    }
                    msg = rx.recv() => match msg {
                        Some(m) => if tx.send(m).await.is_err() { return },
                        // The sender closed before the reset: reset anyway, at the deadline.
                        None => {
                            sleep_until(deadline).await;
                            ctl.close(Close::Reset);
                            return;
                        }
                    },
                }
            }
        }
        Toxic::Slicer {
            average_size,
            size_variation,
            delay,
            ..
        } => {
            while let Some(msg) = rx.recv().await {
                match msg {
                    Msg::Data(c) => {
                        let mut data = c.data;
                        while !data.is_empty() {
                            let n = slice_len(
                                average_size,
                                size_variation,
                                rand::random::<f64>(),
                                data.len(),
                            );
                            let part = data.split_to(n);
                            let last = data.is_empty();
                            if tx
                                .send(Msg::Data(Chunk {
                                    data: part,
                                    arrived: c.arrived,
                                }))
                                .await
                                .is_err()
                            {
                                return;
                            }
                            if !last && !delay.is_zero() {
                                sleep(delay).await;
                            }
                        }
                    }
                    other => {
                        if tx.send(other).await.is_err() {
                            return;
                        }
                    }
                }
            }
        }
        Toxic::SlowClose { delay, .. } => {
            while let Some(msg) = rx.recv().await {
                if tx.send(msg).await.is_err() {
                    return;
                }
            }
            sleep(delay).await;
        }
        Toxic::LimitData { bytes, .. } => {
            let mut left = bytes;
            while let Some(msg) = rx.recv().await {
                match msg {
                    Msg::Data(mut c) => {
                        let len = c.data.len() as u64;
                        if len >= left {
                            // `left` < len fits in usize because len came from a usize.
                            c.data
                                .truncate(usize::try_from(left).unwrap_or(c.data.len()));
                            if !c.data.is_empty() {
                                let _ = tx.send(Msg::Data(c)).await;
                            }
                            let _ = tx.send(Msg::Close(Close::LimitData)).await;
                            return;
                        }
                        left -= len;
                        if tx.send(Msg::Data(c)).await.is_err() {
                            return;
                        }
                    }
                    other => {
                        if tx.send(other).await.is_err() {
                            return;
                        }
                    }
                }
            }
        }
    }
}

/// How early the latency toxic wakes before a chunk is due.
const TIMER_SLACK: Duration = Duration::from_millis(1);

/// Wait until `due`, never earlier, and late by scheduling only. tokio's timer rounds a
/// deadline up to its next 1 ms tick (and the epoll wait rounds again), so a plain
/// `sleep_until` lands 1–1.5 ms late — most of the 2 ms budget. So: sleep until 1 ms
/// before, then yield to other tasks until the deadline has passed (at most ~1 ms of yielding
/// per chunk, on the latency toxic only).
async fn sleep_precise(due: Instant) {
    if let Some(early) = due.checked_sub(TIMER_SLACK) {
        sleep_until(early).await;
    }
    while Instant::now() < due {
        tokio::task::yield_now().await;
    }
}

async fn read(s: &TcpStream, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        match s.try_read(buf) {
            Ok(n) => return Ok(n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => s.readable().await?,
            Err(e) => return Err(e),
        }
    }
}

async fn read_buf(s: &TcpStream, buf: &mut BytesMut) -> io::Result<usize> {
    loop {
        match s.try_read_buf(buf) {
            Ok(n) => return Ok(n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => s.readable().await?,
            Err(e) => return Err(e),
        }
    }
}

async fn write_all(s: &TcpStream, mut buf: &[u8]) -> io::Result<()> {
    while !buf.is_empty() {
        match s.try_write(buf) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => buf = &buf[n..],
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => s.writable().await?,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Pass the sender's EOF on: shut down the write side of `dst` (the socket stays open for the
/// other direction). An already-disconnected peer is not an error here.
fn half_close(dst: &TcpStream) {
    if let Err(e) = nix::sys::socket::shutdown(dst.as_raw_fd(), Shutdown::Write) {
        debug!(error = %e, "half-close failed (peer already gone)");
    }
}

#[cfg(test)]
mod tests;
