//! The receiver itself: both listeners on ephemeral ports of 127.0.0.1, each served by one
//! hyper accept loop (HTTP/1.1 and h2c on either), stopped by closing the listener *and*
//! every open connection so the agent sees a backend that is really gone.
//!
//! Not here: what a request is answered (`grpc`, `http_protobuf`, `store`) and the queries
//! (per signal).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls;
use tokio_util::sync::CancellationToken;

use super::store::Shared;
use super::tls::PeerCertificate;
use super::{Behaviour, Signal, Transport, grpc, http_protobuf};

/// One listening transport: its address and the task serving it.
#[derive(Debug)]
struct Server {
    cancel: CancellationToken,
    task: JoinHandle<()>,
}

/// The receiver. Dropping it stops both servers.
#[derive(Debug)]
pub struct OtlpReceiver {
    pub(super) shared: Arc<Shared>,
    grpc_addr: SocketAddr,
    http_addr: SocketAddr,
    /// The TLS configuration of a [`OtlpReceiver::start_tls`] receiver.
    tls: Option<Arc<rustls::ServerConfig>>,
    servers: Vec<Server>,
}

impl OtlpReceiver {
    /// Start both transports on ephemeral ports of 127.0.0.1, accepting everything.
    pub async fn start() -> std::io::Result<Self> {
        Self::start_with(None).await
    }

    /// Binds both listeners and starts serving them, with `tls` when given.
    pub(super) async fn start_with(
        tls: Option<Arc<rustls::ServerConfig>>,
    ) -> std::io::Result<Self> {
        let grpc = TcpListener::bind("127.0.0.1:0").await?;
        let http = TcpListener::bind("127.0.0.1:0").await?;
        let mut receiver = Self {
            shared: Arc::new(Shared::new()),
            grpc_addr: grpc.local_addr()?,
            http_addr: http.local_addr()?,
            tls,
            servers: Vec::new(),
        };
        receiver.serve(grpc, http);
        Ok(receiver)
    }

    fn serve(&mut self, grpc: TcpListener, http: TcpListener) {
        let shared = Arc::clone(&self.shared);
        let http_handler = move |req: Request<Incoming>| {
            let shared = Arc::clone(&shared);
            async move { Ok::<_, Infallible>(http_protobuf::handle(shared, req).await) }
        };
        let (shared, tls) = (&self.shared, &self.tls);
        self.servers.push(spawn_server(
            grpc,
            grpc::router(shared),
            shared,
            tls.clone(),
        ));
        self.servers
            .push(spawn_server(http, http_handler, shared, tls.clone()));
    }

    fn scheme(&self) -> &'static str {
        if self.tls.is_some() { "https" } else { "http" }
    }

    /// The gRPC endpoint, e.g. `http://127.0.0.1:41234` (`https://` for [`Self::start_tls`]).
    pub fn grpc_endpoint(&self) -> String {
        format!("{}://{}", self.scheme(), self.grpc_addr)
    }

    /// The HTTP base endpoint (the agent appends `/v1/metrics`), e.g. `http://127.0.0.1:41235`
    /// (`https://` for [`Self::start_tls`]).
    pub fn http_endpoint(&self) -> String {
        format!("{}://{}", self.scheme(), self.http_addr)
    }

    /// The base endpoint for `transport`.
    pub fn endpoint(&self, transport: Transport) -> String {
        match transport {
            Transport::Grpc => self.grpc_endpoint(),
            Transport::Http => self.http_endpoint(),
        }
    }

    /// Change what the receiver answers to metrics requests from the next one on.
    pub fn set_behaviour(&self, behaviour: Behaviour) {
        self.set_signal_behaviour(Signal::Metrics, behaviour);
    }

    /// Change what the receiver answers to `signal`'s requests from the next one on.
    pub fn set_signal_behaviour(&self, signal: Signal, behaviour: Behaviour) {
        self.shared.lock().behaviour[signal.index()] = behaviour;
    }

    /// Close both listeners and every open connection: the backend is down. Returns once the
    /// ports are closed.
    pub async fn stop(&mut self) {
        for server in self.servers.drain(..) {
            server.cancel.cancel();
            // The task only ends by cancellation; a panic in it would already have failed the
            // test's expectations, so its result carries nothing more.
            let _ = server.task.await;
        }
    }

    /// Listen again on the same ports after [`Self::stop`]. Recorded requests are kept.
    pub async fn restart(&mut self) -> std::io::Result<()> {
        self.stop().await;
        let grpc = TcpListener::bind(self.grpc_addr).await?;
        let http = TcpListener::bind(self.http_addr).await?;
        self.serve(grpc, http);
        Ok(())
    }
}

impl Drop for OtlpReceiver {
    fn drop(&mut self) {
        for server in &self.servers {
            server.cancel.cancel();
            server.task.abort();
        }
    }
}

/// Serve `listener` with `handler` until cancelled; on cancellation drop the listener and
/// abort every connection (no graceful drain: the point is to look like a dead backend). With
/// `tls`, each connection first completes a TLS handshake (in its own task); a refused one is
/// recorded in `shared` and closed.
fn spawn_server<H, F>(
    listener: TcpListener,
    handler: H,
    shared: &Arc<Shared>,
    tls: Option<Arc<rustls::ServerConfig>>,
) -> Server
where
    H: Fn(Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Result<Response<tonic::body::Body>, Infallible>> + Send + 'static,
{
    let cancel = CancellationToken::new();
    let token = cancel.clone();
    let shared = Arc::clone(shared);
    let tls = tls.map(TlsAcceptor::from);
    let task = tokio::spawn(async move {
        let mut connections = JoinSet::new();
        loop {
            tokio::select! {
                () = token.cancelled() => break,
                accepted = listener.accept() => {
                    let Ok((stream, _)) = accepted else { continue };
                    let handler = handler.clone();
                    let (tls, shared) = (tls.clone(), Arc::clone(&shared));
                    connections.spawn(async move {
                        let Some(acceptor) = tls else {
                            return serve_connection(stream, None, handler).await;
                        };
                        match acceptor.accept(stream).await {
                            Ok(stream) => {
                                let peer = stream
                                    .get_ref()
                                    .1
                                    .peer_certificates()
                                    .and_then(<[_]>::first)
                                    .map(|c| PeerCertificate(Arc::from(c.as_ref())));
                                serve_connection(stream, peer, handler).await;
                            }
                            Err(e) => {
                                shared.lock().refused_handshakes.push(e.to_string());
                                shared.changed.notify_waiters();
                            }
                        }
                    });
                }
                Some(_) = connections.join_next(), if !connections.is_empty() => {}
            }
        }
        connections.abort_all();
        while connections.join_next().await.is_some() {}
        drop(listener);
    });
    Server { cancel, task }
}

/// Serve one connection (HTTP/1.1 or h2) with `handler`, tagging each request with `peer`.
async fn serve_connection<I, H, F>(io: I, peer: Option<PeerCertificate>, handler: H)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    H: Fn(Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Result<Response<tonic::body::Body>, Infallible>> + Send + 'static,
{
    let service = hyper::service::service_fn(move |mut req: Request<Incoming>| {
        if let Some(peer) = &peer {
            req.extensions_mut().insert(peer.clone());
        }
        handler(req)
    });
    let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    // A connection error (client reset, timeout) ends that connection only.
    let _ = builder.serve_connection(TokioIo::new(io), service).await;
}
