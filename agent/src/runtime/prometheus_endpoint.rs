//! The Prometheus scrape endpoint: `GET /metrics` on `export.prometheus.listen`.
//!
//! The runtime publishes each finished cycle's [`Batch`] on a `watch` channel; a scrape renders
//! the latest one on request with [`faultline_exporters::prometheus::render`], so the endpoint
//! holds no state of its own and a scrape never waits for a collection cycle. Before the first
//! cycle has finished, `/metrics` answers 503 so the scraper records a failed scrape rather
//! than an empty target. Other paths answer 404, other methods 405.
//!
//! The server is hyper 1 (HTTP/1.1 only: Prometheus scrapes over HTTP/1.1). Binding is a step
//! of its own ([`Endpoint::bind`]) so the runtime can fail at start-up with an error naming the
//! address when the port is taken, before it starts collecting. Every connection task is owned
//! by a [`TaskTracker`]; on cancellation the listener closes, open connections finish their
//! in-flight request (bounded by [`CONNECTION_DRAIN`]) and [`Endpoint::run`] returns once all
//! of them have ended.
//!
//! Not here: the naming rules of the text format (see `faultline_exporters::prometheus`) and
//! the decision whether to serve at all (the runtime reads `export.prometheus.enabled`).
//! A scrape that accepts gzip (Prometheus sends `Accept-Encoding: gzip`) gets the text
//! gzip-compressed at a fast level: a 1000-container page shrinks about tenfold.

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use faultline_exporters::model::Batch;
use faultline_exporters::prometheus;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument as _;

/// The path Prometheus scrapes.
pub const METRICS_PATH: &str = "/metrics";

/// How long an open connection may take to finish its in-flight request after cancellation
/// before it is dropped.
pub const CONNECTION_DRAIN: Duration = Duration::from_secs(5);

/// How long a client may take to send a request's headers (guards against connections that
/// open and then stall).
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Pause after a failed `accept` (for example when the process is out of file descriptors),
/// so a persistent failure does not spin a worker.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// What the runtime publishes after each cycle: the latest batch, `None` before the first.
pub type LatestBatch = watch::Receiver<Option<Arc<Batch>>>;

/// Why the endpoint could not be started.
#[derive(Debug, thiserror::Error)]
pub enum EndpointError {
    /// The listen address could not be bound (in use, not local, or not permitted).
    #[error(
        "cannot listen on {addr} for the Prometheus endpoint (export.prometheus.listen): {source}; \
         choose a free address or stop the process that holds it"
    )]
    Bind {
        /// The configured address.
        addr: SocketAddr,
        /// The OS error.
        source: io::Error,
    },
}

/// A bound, not yet serving, endpoint.
#[derive(Debug)]
pub struct Endpoint {
    listener: TcpListener,
    local_addr: SocketAddr,
}

impl Endpoint {
    /// Binds `listen`. Port 0 picks a free port; [`Endpoint::local_addr`] tells which.
    pub async fn bind(listen: SocketAddr) -> Result<Self, EndpointError> {
        let bind_error = |source| EndpointError::Bind {
            addr: listen,
            source,
        };
        let listener = TcpListener::bind(listen).await.map_err(bind_error)?;
        let local_addr = listener.local_addr().map_err(bind_error)?;
        Ok(Self {
            listener,
            local_addr,
        })
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Serves scrapes until `cancel` fires, then drains open connections and returns.
    pub async fn run(self, latest: LatestBatch, cancel: CancellationToken) {
        let connections = TaskTracker::new();
        let mut builder = auto::Builder::new(TokioExecutor::new()).http1_only();
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(HEADER_READ_TIMEOUT);
        tracing::info!(listen = %self.local_addr, path = METRICS_PATH, "Prometheus endpoint serving");

        loop {
            let accepted = tokio::select! {
                () = cancel.cancelled() => break,
                accepted = self.listener.accept() => accepted,
            };
            let (stream, peer) = match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    tracing::warn!(listen = %self.local_addr, error = %e, "accepting a scrape connection failed");
                    tokio::select! {
                        () = cancel.cancelled() => break,
                        () = tokio::time::sleep(ACCEPT_ERROR_PAUSE) => continue,
                    }
                }
            };
            let latest = latest.clone();
            let cancel = cancel.clone();
            let builder = builder.clone();
            let span = tracing::debug_span!("prometheus_connection", %peer);
            connections.spawn(
                async move {
                    let service = service_fn(move |req| {
                        let response = respond(&req, &latest);
                        async move { Ok::<_, Infallible>(response) }
                    });
                    let conn = builder.serve_connection(TokioIo::new(stream), service);
                    tokio::pin!(conn);
                    let result = tokio::select! {
                        result = conn.as_mut() => result,
                        () = cancel.cancelled() => {
                            conn.as_mut().graceful_shutdown();
                            match tokio::time::timeout(CONNECTION_DRAIN, conn).await {
                                Ok(result) => result,
                                Err(_) => {
                                    tracing::debug!("connection did not drain in time; dropped");
                                    Ok(())
                                }
                            }
                        }
                    };
                    if let Err(e) = result {
                        tracing::debug!(error = %e, "scrape connection ended with an error");
                    }
                }
                .instrument(span),
            );
        }

        drop(self.listener);
        connections.close();
        connections.wait().await;
        tracing::info!(listen = %self.local_addr, "Prometheus endpoint stopped");
    }
}

/// Binds `listen` and serves scrapes of the latest batch until `cancel` fires.
pub async fn serve(
    listen: SocketAddr,
    latest: LatestBatch,
    cancel: CancellationToken,
) -> Result<(), EndpointError> {
    Endpoint::bind(listen).await?.run(latest, cancel).await;
    Ok(())
}

/// The response to one request.
fn respond<B>(req: &Request<B>, latest: &LatestBatch) -> Response<Full<Bytes>> {
    if req.uri().path() != METRICS_PATH {
        return plain(
            StatusCode::NOT_FOUND,
            "not found; the metrics are at /metrics\n",
        );
    }
    if req.method() != Method::GET {
        let mut response = plain(
            StatusCode::METHOD_NOT_ALLOWED,
            "method not allowed; use GET /metrics\n",
        );
        response
            .headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET"));
        return response;
    }
    // Clone the Arc out so the watch channel is not borrowed while rendering.
    let Some(batch) = latest.borrow().clone() else {
        return plain(
            StatusCode::SERVICE_UNAVAILABLE,
            "no collection cycle has finished yet; retry after the first interval\n",
        );
    };
    let mut body = String::with_capacity(64 * 1024);
    prometheus::render(&batch, &mut body);
    let gzipped = accepts_gzip(req).then(|| gzip(body.as_bytes())).flatten();
    let mut response = match gzipped {
        Some(z) => {
            let mut r = Response::new(Full::new(Bytes::from(z)));
            r.headers_mut()
                .insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
            r
        }
        None => Response::new(Full::new(Bytes::from(body))),
    };
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(prometheus::CONTENT_TYPE),
    );
    headers.insert(header::VARY, HeaderValue::from_static("Accept-Encoding"));
    response
}

/// Whether the request's `Accept-Encoding` lists gzip with a non-zero quality.
fn accepts_gzip<B>(req: &Request<B>) -> bool {
    req.headers()
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|coding| {
            let mut parts = coding.split(';').map(str::trim);
            let name = parts.next().unwrap_or("");
            let zero = parts.any(|p| {
                p.strip_prefix("q=")
                    .and_then(|q| q.parse::<f32>().ok())
                    .is_some_and(|q| q == 0.0)
            });
            name.eq_ignore_ascii_case("gzip") && !zero
        })
}

/// `text` gzip-compressed, or `None` if compression failed (then the plain text is sent).
fn gzip(text: &[u8]) -> Option<Vec<u8>> {
    use std::io::Write as _;
    let mut z = flate2::write::GzEncoder::new(
        Vec::with_capacity(text.len() / 8),
        flate2::Compression::fast(),
    );
    z.write_all(text).ok()?;
    z.finish().ok()
}

fn plain(status: StatusCode, message: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(message.as_bytes())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

#[cfg(test)]
mod tests {
    use faultline_exporters::model::{Attributes, MetricDesc, Resource};
    use http_body_util::{BodyExt as _, Empty};
    use hyper_util::client::legacy::Client;
    use hyper_util::client::legacy::connect::HttpConnector;

    use super::*;

    const MEM_USAGE: MetricDesc = MetricDesc::updown(
        "system.memory.usage",
        "By",
        "Reports memory in use by state.",
    );

    /// Generous bound for a local round trip on a loaded CI machine; only reached on failure.
    const TIMEOUT: Duration = Duration::from_secs(10);

    type TestClient = Client<HttpConnector, Empty<Bytes>>;

    fn handmade_batch() -> Arc<Batch> {
        let host = Resource {
            attributes: Attributes::new()
                .with("service.name", "faultline")
                .with("service.instance.id", "test-1")
                .with("host.name", "node-1"),
        };
        let mut batch = Batch::new(1, Arc::new(host), 0);
        batch.host().record(
            &MEM_USAGE,
            Attributes::new().with("system.memory.state", "used"),
            4096u64,
        );
        Arc::new(batch)
    }

    async fn fetch(
        client: &TestClient,
        method: Method,
        url: &str,
    ) -> (StatusCode, http::HeaderMap, String) {
        let req = Request::builder()
            .method(method)
            .uri(url)
            .body(Empty::new())
            .unwrap();
        let response = tokio::time::timeout(TIMEOUT, client.request(req))
            .await
            .unwrap()
            .unwrap();
        let (parts, body) = response.into_parts();
        let body = body.collect().await.unwrap().to_bytes();
        (
            parts.status,
            parts.headers,
            String::from_utf8(body.to_vec()).unwrap(),
        )
    }

    #[tokio::test]
    async fn serves_503_before_the_first_cycle_then_the_rendered_batch_and_stops_on_cancel() {
        let endpoint = Endpoint::bind("127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        let base = format!("http://{}", endpoint.local_addr());
        let (tx, rx) = watch::channel(None);
        let cancel = CancellationToken::new();
        let server = tokio::spawn(endpoint.run(rx, cancel.clone()));
        let client: TestClient = Client::builder(TokioExecutor::new()).build_http();
        let metrics = format!("{base}/metrics");

        let (status, _, body) = fetch(&client, Method::GET, &metrics).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(body.contains("no collection cycle"), "{body}");

        tx.send_replace(Some(handmade_batch()));
        let (status, headers, body) = fetch(&client, Method::GET, &metrics).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            headers[header::CONTENT_TYPE],
            "text/plain; version=0.0.4; charset=utf-8"
        );
        assert!(
            body.contains("# TYPE system_memory_usage_bytes gauge\n"),
            "{body}"
        );
        assert!(
            body.contains(
                r#"system_memory_usage_bytes{instance="test-1",job="faultline",system_memory_state="used"} 4096"#
            ),
            "{body}"
        );
        assert!(body.contains(r#"target_info{host_name="node-1""#), "{body}");

        // The client keeps its connection alive in its pool: cancelling must still end the
        // server, because idle keep-alive connections close on graceful shutdown.
        cancel.cancel();
        tokio::time::timeout(TIMEOUT, server)
            .await
            .unwrap()
            .unwrap();
    }

    #[tokio::test]
    async fn a_scrape_that_accepts_gzip_gets_the_same_text_gzipped() {
        use std::io::Read as _;
        let endpoint = Endpoint::bind("127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        let url = format!("http://{}/metrics", endpoint.local_addr());
        let (tx, rx) = watch::channel(Some(handmade_batch()));
        let cancel = CancellationToken::new();
        let server = tokio::spawn(endpoint.run(rx, cancel.clone()));
        let client: TestClient = Client::builder(TokioExecutor::new()).build_http();
        let get = |accept: &'static str| {
            let req = Request::builder()
                .uri(&url)
                .header(header::ACCEPT_ENCODING, accept)
                .body(Empty::new())
                .unwrap();
            let f = client.request(req);
            async move {
                let (parts, body) = tokio::time::timeout(TIMEOUT, f)
                    .await
                    .unwrap()
                    .unwrap()
                    .into_parts();
                (parts.headers, body.collect().await.unwrap().to_bytes())
            }
        };
        let (plain_headers, plain) = get("identity").await;
        assert!(plain_headers.get(header::CONTENT_ENCODING).is_none());
        let (headers, zipped) = get("deflate, gzip;q=0.8").await;
        assert_eq!(headers[header::CONTENT_ENCODING], "gzip");
        let mut text = Vec::new();
        flate2::read::GzDecoder::new(&zipped[..])
            .read_to_end(&mut text)
            .unwrap();
        assert_eq!(text, plain.to_vec(), "the gzipped body is the same page");
        let (refused, _) = get("gzip;q=0").await;
        assert!(
            refused.get(header::CONTENT_ENCODING).is_none(),
            "q=0 refuses gzip"
        );
        drop(tx);
        cancel.cancel();
        tokio::time::timeout(TIMEOUT, server)
            .await
            .unwrap()
            .unwrap();
    }

    #[tokio::test]
    async fn other_paths_are_404_and_other_methods_405() {
        let endpoint = Endpoint::bind("127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        let base = format!("http://{}", endpoint.local_addr());
        let (_tx, rx) = watch::channel(Some(handmade_batch()));
        let cancel = CancellationToken::new();
        let server = tokio::spawn(endpoint.run(rx, cancel.clone()));
        let client: TestClient = Client::builder(TokioExecutor::new()).build_http();

        let (status, _, _) = fetch(&client, Method::GET, &format!("{base}/")).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        let (status, _, _) = fetch(&client, Method::GET, &format!("{base}/metrics/x")).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        let (status, headers, _) = fetch(&client, Method::POST, &format!("{base}/metrics")).await;
        assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(headers[header::ALLOW], "GET");

        cancel.cancel();
        tokio::time::timeout(TIMEOUT, server)
            .await
            .unwrap()
            .unwrap();
    }

    #[tokio::test]
    async fn binding_a_taken_port_fails_with_an_error_naming_the_address() {
        let holder = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let taken = holder.local_addr().unwrap();
        let err = Endpoint::bind(taken).await.unwrap_err();
        let message = err.to_string();
        assert!(message.contains(&taken.to_string()), "{message}");
        assert!(message.contains("export.prometheus.listen"), "{message}");
    }

    #[tokio::test]
    async fn serve_returns_the_bind_error() {
        let holder = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let taken = holder.local_addr().unwrap();
        let (_tx, rx) = watch::channel(None);
        let result = serve(taken, rx, CancellationToken::new()).await;
        assert!(matches!(result, Err(EndpointError::Bind { addr, .. }) if addr == taken));
    }
}
