//! The agent's HTTP API (hyper 1; TLS with rustls when configured), served by `faultline
//! run` when `api.enabled`:
//!
//! | method | path | role | what |
//! | --- | --- | --- | --- |
//! | GET | `/healthz` | — | the process answers |
//! | GET | `/readyz` | — | the drill service is up |
//! | GET | `/v1/info` | viewer | who this agent is: `{"node", "version", "hostname"}` ([`AgentInfo`]; game days name agents by `node`) |
//! | GET | `/v1/drills` | viewer | running drills and the history |
//! | POST | `/v1/drills` | operator | start: `{"scenario": NAME}` (from `drills:`) or `{"inline": SCENARIO}` (object or YAML text), or a YAML body |
//! | GET | `/v1/drills/{id}` | viewer | the report (live while running) |
//! | GET | `/v1/drills/{id}/progress` | viewer | how far it is, in the same few bytes however long it runs: `{"id", "verdict", "phase", "events", "rounds"}` ([`crate::drill::report::Progress`]; game days poll this and read the report when `events` or the verdict change) |
//! | GET | `/v1/drills/{id}/junit` | viewer | the same report as JUnit XML (`application/xml`), one test case per objective |
//! | GET | `/v1/drills/{id}/html` | viewer | the same report as the self-contained HTML timeline page (`text/html`) |
//! | POST | `/v1/drills/{id}/abort` | operator | abort one drill (its faults are reverted) |
//! | POST | `/v1/abort` | operator | the kill switch: every drill aborted, every fault reverted |
//! | GET | `/v1/faults` | viewer | active faults, each checked on the system now (`check`: in effect or not, audited) |
//! | POST | `/v1/faults` | operator | inject a `FaultSpec` (JSON) through the agent's engine: 201 with the fault, 422 when a guard refuses, 409 when the check right after apply did not see it in effect (it was reverted; the body says why), 400 for a bad spec; `?dry_run=true` returns the plan and applies nothing |
//! | DELETE | `/v1/faults/{id}` | operator | revert one fault now |
//! | GET | `/v1/history?since=&after=&limit=` | viewer | the evidence the posture report reads: what the node is configured to prove and its drills and backup checks since `since` (Unix seconds, or a duration ago such as `90d`; default: all kept), oldest first, at most `limit` (default 500, at most 2000) per page; `next` is the `after` of the next page ([`crate::posture::history::HistoryPage`], docs/POSTURE.md) |
//! | GET | `/v1/status` | viewer | how the agent is: what `faultline status --format json` prints ([`crate::status::Status`], docs/STATUS.md) |
//!
//! Authentication: `Authorization: Bearer <token>` against the tokens file ([`auth`]).
//! Missing or unknown token → 401; a viewer on an operator route → 403; neither changes
//! anything. Every request that changes something (and every refused attempt to) is an
//! audit event (`faultline::audit` log target and, with OTLP on, a `faultline.api.request`
//! log record) with the token's name. The tokens file is reloaded when it changes and on
//! SIGHUP ([`auth::TokenStore`]).
//!
//! Limits against a misbehaving or hostile client: bodies are limited to
//! `api.max_body_bytes` (413 beyond; malformed bodies get 400 with the reason); at most
//! `api.max_connections` connections are open at once (the next one gets a plain-text 503
//! and is closed); a client has `api.read_timeout` to send the first bytes of a connection,
//! then again each request's headers, then again its body (408 for a body). Idle
//! keep-alive connections are closed after the same time.

use faultline_chaos::units::HumanDuration;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use faultline_chaos::{Engine, FaultError, FaultId, FaultSpec, Requester};
use faultline_exporters::model::{AttrValue, Resource};
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument as _;

use crate::drill::service::DrillService;
use crate::drill::{report, scenario};
use crate::outcome::Outcome;
use crate::status::Sources;

pub mod auth;
mod routes;

pub use routes::parse_start_body;
use routes::*;

use auth::{Identity, Role, TokenStore};

/// The `api:` config section.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiConfig {
    /// Serve the API.
    pub enabled: bool,
    /// Listen address (loopback by default).
    pub listen: SocketAddr,
    /// The tokens file (required when enabled).
    pub tokens_file: Option<PathBuf>,
    /// TLS certificate chain (PEM); with `key_file`, the API speaks HTTPS only.
    pub cert_file: Option<PathBuf>,
    /// TLS private key (PEM).
    pub key_file: Option<PathBuf>,
    /// Largest request body.
    pub max_body_bytes: usize,
    /// Most connections open at once; more are answered 503 and closed.
    pub max_connections: usize,
    /// Time a client has to send a connection's first bytes, a request's headers, its body.
    pub read_timeout: HumanDuration,
    /// How often the tokens file is checked for changes (`0s`: only on SIGHUP).
    pub tokens_reload_interval: HumanDuration,
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            listen: SocketAddr::from(([127, 0, 0, 1], 9465)),
            tokens_file: None,
            cert_file: None,
            key_file: None,
            max_body_bytes: 1 << 20,
            max_connections: 256,
            read_timeout: HumanDuration(Duration::from_secs(10)),
            tokens_reload_interval: HumanDuration(Duration::from_secs(5)),
        }
    }
}

impl ApiConfig {
    /// Checks what serde cannot: (field, message).
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if !self.enabled {
            return Ok(());
        }
        let Some(tokens) = &self.tokens_file else {
            return Err((
                "tokens_file",
                "the API needs a tokens file (name, role, token entries)".into(),
            ));
        };
        auth::Tokens::load(tokens).map_err(|e| ("tokens_file", e))?;
        if self.cert_file.is_some() != self.key_file.is_some() {
            return Err(("cert_file", "cert_file and key_file go together".into()));
        }
        if let (Some(c), Some(k)) = (&self.cert_file, &self.key_file) {
            tls_config(c, k).map_err(|e| ("cert_file", e))?;
        }
        if self.max_body_bytes < 1024 {
            return Err(("max_body_bytes", "must be at least 1024".into()));
        }
        if self.max_connections == 0 {
            return Err(("max_connections", "must be at least 1".into()));
        }
        if self.read_timeout.0 < Duration::from_millis(100) {
            return Err((
                "read_timeout",
                format!(
                    "{} is too short for any client; use at least 100ms",
                    self.read_timeout
                ),
            ));
        }
        Ok(())
    }
}

/// A rustls server config from PEM files.
pub fn tls_config(
    cert: &std::path::Path,
    key: &std::path::Path,
) -> Result<rustls::ServerConfig, String> {
    let certs = rustls_pemfile::certs(&mut std::io::BufReader::new(
        std::fs::File::open(cert).map_err(|e| format!("{}: {e}", cert.display()))?,
    ))
    .collect::<Result<Vec<_>, _>>()
    .map_err(|e| format!("{}: {e}", cert.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: no PEM certificate", cert.display()));
    }
    let key = rustls_pemfile::private_key(&mut std::io::BufReader::new(
        std::fs::File::open(key).map_err(|e| format!("{}: {e}", key.display()))?,
    ))
    .map_err(|e| format!("{}: {e}", key.display()))?
    .ok_or_else(|| format!("{}: no PEM private key", key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| format!("certificate/key: {e}"))?;
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(cfg)
}

/// Why the API could not start.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Bind failed.
    #[error("cannot listen on {addr} for the API (api.listen): {source}")]
    Bind {
        /// Address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// Tokens or TLS.
    #[error("api: {0}")]
    Config(String),
}

/// What `GET /v1/info` answers: which node this agent runs on. A game day that finds its
/// agents through DNS names each address by its `node` (docs/adr/0017).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentInfo {
    /// The node's name: `NODE_NAME`, else the resource's `k8s.node.name`, else the host name.
    pub node: String,
    /// The agent's version.
    pub version: String,
    /// The host name (the resource's `host.name`).
    pub hostname: String,
}

impl AgentInfo {
    /// The answer of an agent reporting `resource`, with `node_env` the value of `NODE_NAME`
    /// (the Kubernetes downward API's `spec.nodeName`).
    pub fn new(node_env: Option<&str>, resource: &Resource) -> Self {
        let attr = |key: &str| match resource.attributes.get(key) {
            Some(AttrValue::Str(s)) if !s.trim().is_empty() => Some(s.trim().to_owned()),
            _ => None,
        };
        let hostname = attr("host.name")
            .or_else(|| {
                nix::unistd::gethostname()
                    .ok()
                    .and_then(|h| h.into_string().ok())
            })
            .unwrap_or_default();
        let node = node_env
            .map(str::trim)
            .filter(|n| !n.is_empty())
            .map(str::to_owned)
            .or_else(|| attr("k8s.node.name"))
            .unwrap_or_else(|| hostname.clone());
        Self {
            node,
            version: env!("CARGO_PKG_VERSION").to_owned(),
            hostname,
        }
    }
}

struct State {
    /// Who this agent is (`GET /v1/info`).
    info: AgentInfo,
    /// The agent's fault engine (faults injected through the API).
    engine: Engine,
    /// The drills.
    svc: DrillService,
    /// What `GET /v1/status` answers from.
    status: Sources,
    tokens: Arc<TokenStore>,
    max_body: usize,
    read_timeout: Duration,
}

/// A bound API server.
pub struct Server {
    listener: TcpListener,
    addr: SocketAddr,
    tls: Option<tokio_rustls::TlsAcceptor>,
    tokens: Arc<TokenStore>,
    max_body: usize,
    max_connections: usize,
    read_timeout: Duration,
    reload_interval: Duration,
}

/// The answer to a connection over `api.max_connections` (plain TCP only: a TLS client
/// would not understand it before a handshake, so it is just closed).
const TOO_MANY_CONNECTIONS: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nConnection: close\r\nRetry-After: 1\r\nContent-Length: 71\r\n\r\n{\"error\":\"too many open connections to the API (api.max_connections)\"}\n";

/// Connections over the limit that get the 503 at the same time; more are closed unanswered.
const REFUSALS_AT_ONCE: usize = 32;

/// Writes the 503 to a connection over the limit and closes it gently: the client's request
/// is read and discarded (at most 64 KiB, for at most a second) so that closing does not
/// reset the connection before the client has read the answer.
async fn refuse(mut stream: tokio::net::TcpStream) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        stream.write_all(TOO_MANY_CONNECTIONS).await?;
        stream.shutdown().await?;
        let mut sink = [0u8; 4096];
        let mut left = 64usize << 10;
        while left > 0 {
            let n = stream.read(&mut sink).await?;
            if n == 0 {
                break;
            }
            left = left.saturating_sub(n);
        }
        Ok::<_, std::io::Error>(())
    })
    .await;
}

/// The HTTP/2 connection preface, which hyper's auto builder waits for in full before it
/// chooses a protocol.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Waits until a new plain-TCP connection has sent enough bytes for the protocol to be
/// known (or closed, or sent something that is not the HTTP/2 preface): hyper's version
/// detection has no timeout of its own, so without this a silent client holds a
/// connection slot forever. `Err` when `limit` passes first.
async fn first_bytes(stream: &tokio::net::TcpStream, limit: Duration) -> Result<(), ()> {
    let deadline = tokio::time::Instant::now() + limit;
    let mut buf = [0u8; 24];
    loop {
        let n = match tokio::time::timeout_at(deadline, stream.peek(&mut buf)).await {
            Ok(Ok(n)) => n,
            Ok(Err(_)) => return Ok(()), // hyper reports the error
            Err(_) => return Err(()),
        };
        if n == 0 || n >= H2_PREFACE.len() || !H2_PREFACE.starts_with(&buf[..n]) {
            return Ok(());
        }
        // A partial preface: `peek` would return at once again; wait a little for more.
        if tokio::time::Instant::now() >= deadline {
            return Err(());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("addr", &self.addr)
            .field("tls", &self.tls.is_some())
            .finish_non_exhaustive()
    }
}

impl Server {
    /// Binds and loads tokens and TLS material.
    pub async fn bind(cfg: &ApiConfig) -> Result<Self, ApiError> {
        let tokens = cfg
            .tokens_file
            .as_deref()
            .ok_or_else(|| ApiError::Config("api.tokens_file is required".into()))
            .and_then(|p| TokenStore::load(p).map_err(ApiError::Config))?;
        let tls = match (&cfg.cert_file, &cfg.key_file) {
            (Some(c), Some(k)) => Some(tokio_rustls::TlsAcceptor::from(Arc::new(
                tls_config(c, k).map_err(ApiError::Config)?,
            ))),
            _ => None,
        };
        let bind = |source| ApiError::Bind {
            addr: cfg.listen,
            source,
        };
        let listener = TcpListener::bind(cfg.listen).await.map_err(bind)?;
        let addr = listener.local_addr().map_err(bind)?;
        Ok(Self {
            listener,
            addr,
            tls,
            tokens: Arc::new(tokens),
            max_body: cfg.max_body_bytes,
            max_connections: cfg.max_connections,
            read_timeout: cfg.read_timeout.0,
            reload_interval: cfg.tokens_reload_interval.0,
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Serves until `cancel`; connections are owned by a tracker and drained (bounded).
    /// The tokens file is watched for changes meanwhile.
    pub async fn run(
        self,
        engine: Engine,
        svc: DrillService,
        info: AgentInfo,
        status: Sources,
        cancel: CancellationToken,
    ) {
        let connections = TaskTracker::new();
        connections.spawn(
            self.tokens
                .clone()
                .watch(self.reload_interval, cancel.clone())
                .instrument(tracing::info_span!("api_tokens_reload")),
        );
        let read_timeout = self.read_timeout;
        let state = Arc::new(State {
            info,
            engine,
            svc,
            status,
            tokens: self.tokens,
            max_body: self.max_body,
            read_timeout,
        });
        let slots = Arc::new(tokio::sync::Semaphore::new(self.max_connections));
        let refusals = Arc::new(tokio::sync::Semaphore::new(REFUSALS_AT_ONCE));
        let mut last_refusal_logged: Option<tokio::time::Instant> = None;
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(read_timeout);
        builder
            .http2()
            .timer(TokioTimer::new())
            .max_concurrent_streams(32)
            .keep_alive_interval(read_timeout)
            .keep_alive_timeout(read_timeout);
        tracing::info!(listen = %self.addr, tls = self.tls.is_some(), max_connections = self.max_connections, "API serving");
        loop {
            let accepted = tokio::select! {
                () = cancel.cancelled() => break,
                a = self.listener.accept() => a,
            };
            let (stream, peer) = match accepted {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "API accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let Ok(slot) = slots.clone().try_acquire_owned() else {
                // Answered by a small task of its own, itself bounded: past that, closed at once.
                if self.tls.is_none()
                    && let Ok(refusal) = refusals.clone().try_acquire_owned()
                {
                    connections.spawn(async move {
                        let _refusal = refusal;
                        refuse(stream).await;
                    });
                }
                let now = tokio::time::Instant::now();
                if last_refusal_logged.is_none_or(|t| now - t >= Duration::from_secs(10)) {
                    last_refusal_logged = Some(now);
                    tracing::warn!(%peer, max_connections = self.max_connections, "API connection refused: too many open connections (api.max_connections; logged at most every 10 s)");
                }
                continue;
            };
            let (state, cancel, builder, tls) = (
                state.clone(),
                cancel.clone(),
                builder.clone(),
                self.tls.clone(),
            );
            connections.spawn(
                async move {
                    let _slot = slot;
                    let service = service_fn(move |req| {
                        let state = state.clone();
                        async move { Ok::<_, Infallible>(handle(&state, req).await) }
                    });
                    let result = match tls {
                        Some(acceptor) => {
                            match tokio::time::timeout(read_timeout, acceptor.accept(stream)).await
                            {
                                Ok(Ok(s)) => {
                                    serve(&builder, TokioIo::new(s), service, &cancel).await
                                }
                                Ok(Err(e)) => {
                                    tracing::debug!(error = %e, "TLS handshake failed");
                                    Ok(())
                                }
                                Err(_) => Ok(()),
                            }
                        }
                        None => match first_bytes(&stream, read_timeout).await {
                            Ok(()) => serve(&builder, TokioIo::new(stream), service, &cancel).await,
                            Err(()) => {
                                tracing::debug!("client sent nothing within api.read_timeout");
                                Ok(())
                            }
                        },
                    };
                    if let Err(e) = result {
                        tracing::debug!(error = %e, "API connection ended with an error");
                    }
                }
                .instrument(tracing::debug_span!("api_connection", %peer)),
            );
        }
        drop(self.listener);
        connections.close();
        connections.wait().await;
        tracing::info!("API stopped");
    }
}

async fn serve<I, S>(
    builder: &auto::Builder<TokioExecutor>,
    io: I,
    service: S,
    cancel: &CancellationToken,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    S: hyper::service::Service<
            Request<Incoming>,
            Response = Response<Full<Bytes>>,
            Error = Infallible,
        > + Send
        + 'static,
    S::Future: Send + 'static,
{
    let conn = builder.serve_connection(io, service);
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => r,
        () = cancel.cancelled() => {
            conn.as_mut().graceful_shutdown();
            tokio::time::timeout(Duration::from_secs(5), conn).await.unwrap_or(Ok(()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn history_queries_are_bounded_and_bad_ones_named() {
        assert_eq!(
            routes::history_query(None, 1000.0).unwrap(),
            (0.0, None, 500)
        );
        let (since, after, limit) =
            routes::history_query(Some("since=1d&after=5.000%7Cdrill-1&limit=20"), 100_000.0)
                .unwrap();
        assert_eq!(
            (since, after.as_deref(), limit),
            (13_600.0, Some("5.000|drill-1"), 20)
        );
        assert_eq!(
            routes::history_query(Some("since=12.5"), 0.0).unwrap().0,
            12.5
        );
        for bad in ["limit=0", "limit=2001", "since=soon", "sort=asc"] {
            let e = routes::history_query(Some(bad), 0.0).unwrap_err();
            assert!(e.contains(bad.split('=').next().unwrap()), "{bad}: {e}");
        }
    }

    fn known() -> scenario::Known {
        scenario::Known {
            backup_sources: Vec::new(),
            max_fault_duration: Some(Duration::from_secs(3600)),
        }
    }

    #[test]
    fn info_names_the_node_from_node_name_then_the_resource_then_the_host_name() {
        let mut attributes = faultline_exporters::model::Attributes::new();
        attributes.push("host.name", "host-1");
        let host_only = Resource {
            attributes: attributes.clone(),
        };
        attributes.push("k8s.node.name", "node-from-resource");
        let with_node = Resource { attributes };
        let info = AgentInfo::new(Some("node-from-env"), &with_node);
        assert_eq!(info.node, "node-from-env");
        assert_eq!(info.hostname, "host-1");
        assert_eq!(info.version, env!("CARGO_PKG_VERSION"));
        assert_eq!(
            AgentInfo::new(Some(" "), &with_node).node,
            "node-from-resource"
        );
        assert_eq!(AgentInfo::new(None, &host_only).node, "host-1");
        let json = serde_json::to_value(&info).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"node": "node-from-env", "version": env!("CARGO_PKG_VERSION"), "hostname": "host-1"})
        );
    }

    #[test]
    fn start_bodies_get_the_status_their_fault_calls_for() {
        let status = |b: &[u8]| parse_start_body(b, &known(), |_| None).err().map(|e| e.0);
        assert_eq!(status(b""), Some(StatusCode::BAD_REQUEST));
        assert_eq!(status(b"\xff\xfe"), Some(StatusCode::BAD_REQUEST));
        assert_eq!(status(b"{\"scenario\":"), Some(StatusCode::BAD_REQUEST));
        assert_eq!(status(b"{\"scenario\":\"x\"}"), Some(StatusCode::NOT_FOUND));
        assert_eq!(
            status(b"{\"scenario\":\"x\",\"inline\":\"y\"}"),
            Some(StatusCode::BAD_REQUEST)
        );
        assert_eq!(status(b"name: [unclosed"), Some(StatusCode::BAD_REQUEST));
        assert_eq!(status(b"{\"other\": 1}"), Some(StatusCode::BAD_REQUEST));
    }
}
