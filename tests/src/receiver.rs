//! An in-process OTLP receiver for metrics, traces and logs: the "backend" the real agent
//! exports to.
//!
//! It speaks both OTLP transports from the official protobufs (`opentelemetry-proto`):
//! gRPC (the generated tonic `MetricsServiceServer`, `TraceServiceServer` and
//! `LogsServiceServer`, routed by service name, gzip accepted) and HTTP/protobuf
//! (`POST /v1/metrics`, `/v1/traces`, `/v1/logs`, `Content-Type: application/x-protobuf`,
//! optional `Content-Encoding: gzip`), each transport on its own ephemeral port on 127.0.0.1.
//! Both ports are served by the same hyper accept loop, so HTTP/1.1 and h2c (prior knowledge)
//! work on either. The three signals share one code path ([`Received`] is generic over the
//! request type); only the flattened views differ ([`Point`], [`SpanView`], [`LogView`]).
//!
//! Every decoded request is recorded ([`Received`]) with its arrival time, its headers, the
//! transport and the reply the receiver chose. What it replies is programmable per signal
//! while it runs ([`Behaviour`]): accept, fail a number of times (optionally asking for a
//! retry delay, as `Retry-After` or a `google.rpc.RetryInfo` status detail), answer slowly, or
//! report a partial success. [`OtlpReceiver::stop`] closes the listeners *and* every open connection, so the agent
//! sees a backend that is really gone; [`OtlpReceiver::restart`] brings it back on the same
//! ports.
//!
//! [`OtlpReceiver::start_tls`] serves both transports over TLS instead (rustls, ALPN `h2` and
//! `http/1.1`) and requires a client certificate issued by a given CA: every request records
//! the certificate the client presented ([`Received::client_cert`]), and every handshake the
//! receiver refused is kept with its reason ([`OtlpReceiver::refused_handshakes`]).
//!
//! Not here: assertions. Tests read [`OtlpReceiver::requests`] (metrics),
//! [`OtlpReceiver::trace_requests`], [`OtlpReceiver::log_requests`] or the flattened
//! [`OtlpReceiver::metric_points`], [`OtlpReceiver::spans`], [`OtlpReceiver::log_records`] and
//! decide for themselves.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::io::Read;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use opentelemetry_proto::tonic::collector::logs::v1::logs_service_server::{
    LogsService, LogsServiceServer,
};
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsPartialSuccess, ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsPartialSuccess, ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::{AggregationTemporality, metric, number_data_point};
use prost::Message;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio::task::{JoinHandle, JoinSet};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls;
use tokio_util::sync::CancellationToken;
use tonic::codec::CompressionEncoding;
use tonic::codegen::Service;
use tonic::server::NamedService;

/// Which OTLP transport a request came in on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    /// OTLP/gRPC.
    Grpc,
    /// OTLP/HTTP with protobuf payloads.
    Http,
}

/// The three OTLP signals.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Signal {
    /// `MetricsService`, `/v1/metrics`.
    Metrics,
    /// `TraceService`, `/v1/traces`.
    Traces,
    /// `LogsService`, `/v1/logs`.
    Logs,
}

impl Signal {
    fn index(self) -> usize {
        self as usize
    }
}

/// What the receiver answers, changeable at runtime with [`OtlpReceiver::set_behaviour`]
/// (metrics) and [`OtlpReceiver::set_signal_behaviour`] (any signal).
#[derive(Clone, Debug, PartialEq)]
pub enum Behaviour {
    /// Accept everything (the default).
    Accept,
    /// Fail the next `times` requests, then go back to [`Behaviour::Accept`].
    FailWith {
        /// The gRPC status code for gRPC requests.
        grpc: tonic::Code,
        /// The HTTP status for HTTP requests.
        http: StatusCode,
        /// A retry delay to ask for: `Retry-After` (whole seconds, rounded up) over HTTP, a
        /// `google.rpc.RetryInfo` status detail over gRPC.
        retry_after: Option<Duration>,
        /// How many requests to fail.
        times: usize,
    },
    /// Hold every request this long, then accept it.
    Delay(Duration),
    /// Accept, but report that `rejected` points (spans, log records) were rejected, with
    /// `message`.
    PartialSuccess {
        /// `rejected_data_points` (`rejected_spans`, `rejected_log_records`) in the response.
        rejected: i64,
        /// `error_message` in the response.
        message: String,
    },
}

/// The reply the receiver chose for one request.
#[derive(Clone, Debug, PartialEq)]
pub enum Reply {
    /// Accepted in full.
    Accepted,
    /// Failed with these status codes (the one matching the transport was sent).
    Failed {
        /// gRPC code (for gRPC requests).
        grpc: tonic::Code,
        /// HTTP status (for HTTP requests).
        http: StatusCode,
        /// The retry delay asked for, if any.
        retry_after: Option<Duration>,
    },
    /// Held this long before accepting (the client may have given up meanwhile).
    Delayed(Duration),
    /// Accepted with a partial-success report.
    PartialSuccess {
        /// Points reported as rejected.
        rejected: i64,
    },
}

/// One decoded export request, as it arrived: metrics by default,
/// `Received<ExportTraceServiceRequest>` and `Received<ExportLogsServiceRequest>` for the
/// other signals.
#[derive(Clone, Debug)]
pub struct Received<R = ExportMetricsServiceRequest> {
    /// Arrival (monotonic clock), for measuring retry delays.
    pub at: Instant,
    /// Arrival (wall clock).
    pub at_system: SystemTime,
    /// The transport it came in on.
    pub transport: Transport,
    /// Request headers (for gRPC: the metadata, which keeps `grpc-encoding`).
    pub headers: HeaderMap,
    /// The decoded payload.
    pub request: R,
    /// What the receiver answered.
    pub reply: Reply,
    /// The DER of the end-entity certificate the client presented in the TLS handshake
    /// (`None` on a plain receiver).
    pub client_cert: Option<Vec<u8>>,
}

impl<R> Received<R> {
    /// Whether the receiver accepted this request (fully, partially, or after a delay).
    pub fn accepted(&self) -> bool {
        !matches!(self.reply, Reply::Failed { .. })
    }

    /// A header's value as text, if present and printable.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

impl Received<ExportTraceServiceRequest> {
    /// Every span in the request, flattened.
    pub fn spans(&self) -> Vec<SpanView> {
        flatten_spans(&self.request)
    }
}

impl Received<ExportLogsServiceRequest> {
    /// Every log record in the request, flattened.
    pub fn log_records(&self) -> Vec<LogView> {
        flatten_logs(&self.request)
    }
}

impl Received {
    /// Every number data point in the request, flattened.
    pub fn points(&self) -> Vec<Point> {
        flatten(&self.request)
    }

    /// The distinct point timestamps (`time_unix_nano`) in the request, ascending. Points of one
    /// collection cycle share a timestamp, so this identifies the cycles a request carries.
    pub fn timestamps(&self) -> Vec<u64> {
        let mut ts: Vec<u64> = self.points().iter().map(|p| p.time_unix_nano).collect();
        ts.sort_unstable();
        ts.dedup();
        ts
    }
}

/// How a metric's points are aggregated, as they came over the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PointKind {
    /// A `Gauge`.
    Gauge,
    /// A `Sum`.
    Sum {
        /// `is_monotonic`.
        monotonic: bool,
        /// `aggregation_temporality` is cumulative.
        cumulative: bool,
    },
    /// Anything else (histograms, summaries): faultline sends none.
    Other,
}

/// One number data point with its metric's identity and its resource, flattened.
#[derive(Clone, Debug, PartialEq)]
pub struct Point {
    /// Metric name.
    pub name: String,
    /// Metric unit.
    pub unit: String,
    /// Gauge or sum.
    pub kind: PointKind,
    /// Point attributes, values rendered as text (strings as-is, numbers in decimal).
    pub attributes: BTreeMap<String, String>,
    /// Resource attributes, rendered the same way.
    pub resource: BTreeMap<String, String>,
    /// `start_time_unix_nano`.
    pub start_time_unix_nano: u64,
    /// `time_unix_nano`.
    pub time_unix_nano: u64,
    /// The value (integers widened to `f64`).
    pub value: f64,
}

impl Point {
    /// The identity of the series this point belongs to: name plus attributes.
    pub fn series(&self) -> String {
        let attrs: Vec<String> = self
            .attributes
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        format!("{}{{{}}}", self.name, attrs.join(","))
    }
}

/// Render an OTLP attribute value as text.
pub fn any_value_text(value: Option<&AnyValue>) -> String {
    match value.and_then(|v| v.value.as_ref()) {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::DoubleValue(d)) => d.to_string(),
        Some(any_value::Value::ArrayValue(a)) => {
            let items: Vec<String> = a.values.iter().map(|v| any_value_text(Some(v))).collect();
            format!("[{}]", items.join(", "))
        }
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}

/// Key-value list to a map with values rendered by [`any_value_text`].
pub fn attribute_map(kvs: &[KeyValue]) -> BTreeMap<String, String> {
    kvs.iter()
        .map(|kv| (kv.key.clone(), any_value_text(kv.value.as_ref())))
        .collect()
}

fn flatten(request: &ExportMetricsServiceRequest) -> Vec<Point> {
    let mut out = Vec::new();
    for rm in &request.resource_metrics {
        let resource = rm
            .resource
            .as_ref()
            .map(|r| attribute_map(&r.attributes))
            .unwrap_or_default();
        for sm in &rm.scope_metrics {
            for m in &sm.metrics {
                let (kind, points) = match &m.data {
                    Some(metric::Data::Gauge(g)) => (PointKind::Gauge, &g.data_points),
                    Some(metric::Data::Sum(s)) => (
                        PointKind::Sum {
                            monotonic: s.is_monotonic,
                            cumulative: s.aggregation_temporality
                                == AggregationTemporality::Cumulative as i32,
                        },
                        &s.data_points,
                    ),
                    _ => {
                        out.push(Point {
                            name: m.name.clone(),
                            unit: m.unit.clone(),
                            kind: PointKind::Other,
                            attributes: BTreeMap::new(),
                            resource: resource.clone(),
                            start_time_unix_nano: 0,
                            time_unix_nano: 0,
                            value: f64::NAN,
                        });
                        continue;
                    }
                };
                for p in points {
                    let value = match p.value {
                        Some(number_data_point::Value::AsDouble(d)) => d,
                        // Widening for comparisons; counters above 2^53 lose precision only in
                        // the last bits, far below any tolerance the tests use.
                        Some(number_data_point::Value::AsInt(i)) => i as f64,
                        None => f64::NAN,
                    };
                    out.push(Point {
                        name: m.name.clone(),
                        unit: m.unit.clone(),
                        kind,
                        attributes: attribute_map(&p.attributes),
                        resource: resource.clone(),
                        start_time_unix_nano: p.start_time_unix_nano,
                        time_unix_nano: p.time_unix_nano,
                        value,
                    });
                }
            }
        }
    }
    out
}

/// Bytes as lowercase hex (trace and span ids).
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// One span with its resource, flattened.
#[derive(Clone, Debug, PartialEq)]
pub struct SpanView {
    /// Trace id, hex.
    pub trace_id: String,
    /// Span id, hex.
    pub span_id: String,
    /// Parent span id, hex (empty for a root span).
    pub parent_span_id: String,
    /// Span name.
    pub name: String,
    /// `start_time_unix_nano`.
    pub start_time_unix_nano: u64,
    /// `end_time_unix_nano`.
    pub end_time_unix_nano: u64,
    /// Span attributes, rendered by [`any_value_text`].
    pub attributes: BTreeMap<String, String>,
    /// Resource attributes.
    pub resource: BTreeMap<String, String>,
    /// Status code (0 unset, 1 ok, 2 error).
    pub status_code: i32,
    /// Span events: name and attributes.
    pub events: Vec<(String, BTreeMap<String, String>)>,
}

/// One log record with its resource and scope, flattened.
#[derive(Clone, Debug, PartialEq)]
pub struct LogView {
    /// `time_unix_nano`.
    pub time_unix_nano: u64,
    /// `observed_time_unix_nano`.
    pub observed_time_unix_nano: u64,
    /// `severity_number`.
    pub severity_number: i32,
    /// `severity_text`.
    pub severity_text: String,
    /// `event_name`.
    pub event_name: String,
    /// The body, rendered by [`any_value_text`].
    pub body: String,
    /// Record attributes, rendered by [`any_value_text`].
    pub attributes: BTreeMap<String, String>,
    /// Resource attributes.
    pub resource: BTreeMap<String, String>,
    /// The instrumentation scope's name.
    pub scope: String,
    /// Trace id, hex (empty when the record is not tied to a trace).
    pub trace_id: String,
    /// Span id, hex.
    pub span_id: String,
}

impl LogView {
    /// An attribute's text, or `""`.
    pub fn attr(&self, key: &str) -> &str {
        self.attributes.get(key).map_or("", String::as_str)
    }
}

fn resource_map(
    r: Option<&opentelemetry_proto::tonic::resource::v1::Resource>,
) -> BTreeMap<String, String> {
    r.map(|r| attribute_map(&r.attributes)).unwrap_or_default()
}

fn flatten_spans(request: &ExportTraceServiceRequest) -> Vec<SpanView> {
    let mut out = Vec::new();
    for rs in &request.resource_spans {
        let resource = resource_map(rs.resource.as_ref());
        for ss in &rs.scope_spans {
            for sp in &ss.spans {
                out.push(SpanView {
                    trace_id: hex(&sp.trace_id),
                    span_id: hex(&sp.span_id),
                    parent_span_id: hex(&sp.parent_span_id),
                    name: sp.name.clone(),
                    start_time_unix_nano: sp.start_time_unix_nano,
                    end_time_unix_nano: sp.end_time_unix_nano,
                    attributes: attribute_map(&sp.attributes),
                    resource: resource.clone(),
                    status_code: sp.status.as_ref().map_or(0, |s| s.code),
                    events: sp
                        .events
                        .iter()
                        .map(|e| (e.name.clone(), attribute_map(&e.attributes)))
                        .collect(),
                });
            }
        }
    }
    out
}

fn flatten_logs(request: &ExportLogsServiceRequest) -> Vec<LogView> {
    let mut out = Vec::new();
    for rl in &request.resource_logs {
        let resource = resource_map(rl.resource.as_ref());
        for sl in &rl.scope_logs {
            let scope = sl
                .scope
                .as_ref()
                .map(|s| s.name.clone())
                .unwrap_or_default();
            for r in &sl.log_records {
                out.push(LogView {
                    time_unix_nano: r.time_unix_nano,
                    observed_time_unix_nano: r.observed_time_unix_nano,
                    severity_number: r.severity_number,
                    severity_text: r.severity_text.clone(),
                    event_name: r.event_name.clone(),
                    body: any_value_text(r.body.as_ref()),
                    attributes: attribute_map(&r.attributes),
                    resource: resource.clone(),
                    scope: scope.clone(),
                    trace_id: hex(&r.trace_id),
                    span_id: hex(&r.span_id),
                });
            }
        }
    }
    out
}

/// `google.rpc.Status`, hand-written (the only fields a receiver needs).
#[derive(Clone, PartialEq, Message)]
pub struct RpcStatus {
    /// `google.rpc.Code` value.
    #[prost(int32, tag = "1")]
    pub code: i32,
    /// Developer-facing message.
    #[prost(string, tag = "2")]
    pub message: String,
    /// Typed details.
    #[prost(message, repeated, tag = "3")]
    pub details: Vec<prost_types::Any>,
}

/// `google.rpc.RetryInfo`.
#[derive(Clone, PartialEq, Message)]
pub struct RetryInfo {
    /// How long the client should wait before retrying.
    #[prost(message, optional, tag = "1")]
    pub retry_delay: Option<prost_types::Duration>,
}

/// The `type_url` of [`RetryInfo`] inside a `google.protobuf.Any`.
pub const RETRY_INFO_TYPE_URL: &str = "type.googleapis.com/google.rpc.RetryInfo";

/// Encode a `google.rpc.Status` with an optional `RetryInfo` detail.
pub fn encode_rpc_status(code: i32, message: &str, retry_after: Option<Duration>) -> Bytes {
    let details = retry_after
        .map(|d| prost_types::Any {
            type_url: RETRY_INFO_TYPE_URL.to_owned(),
            value: RetryInfo {
                retry_delay: Some(prost_types::Duration {
                    seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
                    nanos: i32::try_from(d.subsec_nanos()).unwrap_or(0),
                }),
            }
            .encode_to_vec(),
        })
        .into_iter()
        .collect();
    Bytes::from(
        RpcStatus {
            code,
            message: message.to_owned(),
            details,
        }
        .encode_to_vec(),
    )
}

/// One signal's request type: where its requests are kept and how its answer looks.
trait SignalRequest: Message + Default + Clone + Send + Sync + 'static {
    const SIGNAL: Signal;
    const PATH: &'static str;
    type Response: Message + Default + Send + 'static;
    /// The answer, with an optional partial-success report.
    fn response(partial: Option<(i64, String)>) -> Self::Response;
    fn store(inner: &mut Inner) -> &mut Vec<Received<Self>>;
}

impl SignalRequest for ExportMetricsServiceRequest {
    const SIGNAL: Signal = Signal::Metrics;
    const PATH: &'static str = "/v1/metrics";
    type Response = ExportMetricsServiceResponse;
    fn response(partial: Option<(i64, String)>) -> Self::Response {
        ExportMetricsServiceResponse {
            partial_success: partial.map(|(rejected, error_message)| ExportMetricsPartialSuccess {
                rejected_data_points: rejected,
                error_message,
            }),
        }
    }
    fn store(inner: &mut Inner) -> &mut Vec<Received<Self>> {
        &mut inner.metrics
    }
}

impl SignalRequest for ExportTraceServiceRequest {
    const SIGNAL: Signal = Signal::Traces;
    const PATH: &'static str = "/v1/traces";
    type Response = ExportTraceServiceResponse;
    fn response(partial: Option<(i64, String)>) -> Self::Response {
        ExportTraceServiceResponse {
            partial_success: partial.map(|(rejected, error_message)| ExportTracePartialSuccess {
                rejected_spans: rejected,
                error_message,
            }),
        }
    }
    fn store(inner: &mut Inner) -> &mut Vec<Received<Self>> {
        &mut inner.traces
    }
}

impl SignalRequest for ExportLogsServiceRequest {
    const SIGNAL: Signal = Signal::Logs;
    const PATH: &'static str = "/v1/logs";
    type Response = ExportLogsServiceResponse;
    fn response(partial: Option<(i64, String)>) -> Self::Response {
        ExportLogsServiceResponse {
            partial_success: partial.map(|(rejected, error_message)| ExportLogsPartialSuccess {
                rejected_log_records: rejected,
                error_message,
            }),
        }
    }
    fn store(inner: &mut Inner) -> &mut Vec<Received<Self>> {
        &mut inner.logs
    }
}

/// State shared by both transports and the test.
#[derive(Debug)]
struct Shared {
    inner: Mutex<Inner>,
    changed: Notify,
}

#[derive(Debug)]
struct Inner {
    /// Per signal, indexed by [`Signal::index`].
    behaviour: [Behaviour; 3],
    metrics: Vec<Received<ExportMetricsServiceRequest>>,
    traces: Vec<Received<ExportTraceServiceRequest>>,
    logs: Vec<Received<ExportLogsServiceRequest>>,
    /// Why each refused TLS handshake failed, in order.
    refused_handshakes: Vec<String>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A poisoned lock means a test thread panicked while holding it; the data is still
        // the best diagnostic there is, so keep going.
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Record one request and decide the reply (consuming one failure of a `FailWith`).
    /// Returns the reply and, for a partial success, its message.
    fn record<R: SignalRequest>(
        &self,
        transport: Transport,
        headers: HeaderMap,
        client_cert: Option<&PeerCertificate>,
        request: R,
    ) -> (Reply, String) {
        let at = Instant::now();
        let at_system = SystemTime::now();
        let reply = {
            let mut inner = self.lock();
            let behaviour = &mut inner.behaviour[R::SIGNAL.index()];
            let mut message = String::new();
            let reply = match behaviour {
                Behaviour::Accept => Reply::Accepted,
                Behaviour::Delay(d) => Reply::Delayed(*d),
                Behaviour::PartialSuccess {
                    rejected,
                    message: m,
                } => {
                    message.clone_from(m);
                    Reply::PartialSuccess {
                        rejected: *rejected,
                    }
                }
                Behaviour::FailWith {
                    grpc,
                    http,
                    retry_after,
                    times,
                } => {
                    let reply = Reply::Failed {
                        grpc: *grpc,
                        http: *http,
                        retry_after: *retry_after,
                    };
                    *times = times.saturating_sub(1);
                    if *times == 0 {
                        *behaviour = Behaviour::Accept;
                    }
                    reply
                }
            };
            R::store(&mut inner).push(Received {
                at,
                at_system,
                transport,
                headers,
                request,
                reply: reply.clone(),
                client_cert: client_cert.map(|c| c.0.to_vec()),
            });
            (reply, message)
        };
        self.changed.notify_waiters();
        reply
    }
}

/// The gRPC side: the generated service traits over the shared state.
#[derive(Debug, Clone)]
struct GrpcHandler(Arc<Shared>);

impl GrpcHandler {
    async fn export<R: SignalRequest>(
        &self,
        request: tonic::Request<R>,
    ) -> Result<tonic::Response<R::Response>, tonic::Status> {
        let (metadata, extensions, message) = request.into_parts();
        match self.0.record(
            Transport::Grpc,
            metadata.into_headers(),
            extensions.get::<PeerCertificate>(),
            message,
        ) {
            (Reply::Accepted, _) => Ok(tonic::Response::new(R::response(None))),
            (Reply::Delayed(d), _) => {
                tokio::time::sleep(d).await;
                Ok(tonic::Response::new(R::response(None)))
            }
            (Reply::PartialSuccess { rejected }, message) => {
                Ok(tonic::Response::new(R::response(Some((rejected, message)))))
            }
            (
                Reply::Failed {
                    grpc, retry_after, ..
                },
                _,
            ) => {
                let message = format!("faultline test receiver: injected {grpc:?}");
                let details = encode_rpc_status(grpc as i32, &message, retry_after);
                Err(tonic::Status::with_details(grpc, message, details))
            }
        }
    }
}

#[tonic::async_trait]
impl MetricsService for GrpcHandler {
    async fn export(
        &self,
        request: tonic::Request<ExportMetricsServiceRequest>,
    ) -> Result<tonic::Response<ExportMetricsServiceResponse>, tonic::Status> {
        GrpcHandler::export(self, request).await
    }
}

#[tonic::async_trait]
impl TraceService for GrpcHandler {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        GrpcHandler::export(self, request).await
    }
}

#[tonic::async_trait]
impl LogsService for GrpcHandler {
    async fn export(
        &self,
        request: tonic::Request<ExportLogsServiceRequest>,
    ) -> Result<tonic::Response<ExportLogsServiceResponse>, tonic::Status> {
        GrpcHandler::export(self, request).await
    }
}

/// The HTTP/protobuf side: checks, decompresses, then decodes by path.
async fn handle_http(shared: Arc<Shared>, req: Request<Incoming>) -> Response<tonic::body::Body> {
    let path = req.uri().path().to_owned();
    let known = [
        ExportMetricsServiceRequest::PATH,
        ExportTraceServiceRequest::PATH,
        ExportLogsServiceRequest::PATH,
    ];
    if req.method() != Method::POST || !known.contains(&path.as_str()) {
        return plain(
            StatusCode::NOT_FOUND,
            "only POST /v1/metrics, /v1/traces and /v1/logs are served here",
        );
    }
    let headers = req.headers().clone();
    let client_cert = req.extensions().get::<PeerCertificate>().cloned();
    let content_type = headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    if content_type != Some("application/x-protobuf") {
        return plain(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            &format!("expected application/x-protobuf, got {content_type:?}"),
        );
    }
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => return plain(StatusCode::BAD_REQUEST, &format!("reading body: {e}")),
    };
    let encoding = headers
        .get(http::header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok());
    let body = match encoding {
        None | Some("identity") => body.to_vec(),
        Some("gzip") => {
            let mut out = Vec::new();
            if let Err(e) = flate2::read::GzDecoder::new(&body[..]).read_to_end(&mut out) {
                return plain(StatusCode::BAD_REQUEST, &format!("bad gzip body: {e}"));
            }
            out
        }
        Some(other) => {
            return plain(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                &format!("encoding {other}"),
            );
        }
    };
    match path.as_str() {
        ExportTraceServiceRequest::PATH => {
            export_http::<ExportTraceServiceRequest>(&shared, headers, client_cert.as_ref(), &body)
                .await
        }
        ExportLogsServiceRequest::PATH => {
            export_http::<ExportLogsServiceRequest>(&shared, headers, client_cert.as_ref(), &body)
                .await
        }
        _ => {
            export_http::<ExportMetricsServiceRequest>(
                &shared,
                headers,
                client_cert.as_ref(),
                &body,
            )
            .await
        }
    }
}

async fn export_http<R: SignalRequest>(
    shared: &Shared,
    headers: HeaderMap,
    client_cert: Option<&PeerCertificate>,
    body: &[u8],
) -> Response<tonic::body::Body> {
    let request = match R::decode(body) {
        Ok(r) => r,
        Err(e) => return plain(StatusCode::BAD_REQUEST, &format!("bad protobuf: {e}")),
    };
    let ok = |resp: R::Response| protobuf(StatusCode::OK, resp.encode_to_vec());
    match shared.record(Transport::Http, headers, client_cert, request) {
        (Reply::Accepted, _) => ok(R::response(None)),
        (Reply::Delayed(d), _) => {
            tokio::time::sleep(d).await;
            ok(R::response(None))
        }
        (Reply::PartialSuccess { rejected }, message) => ok(R::response(Some((rejected, message)))),
        (
            Reply::Failed {
                http,
                grpc,
                retry_after,
            },
            _,
        ) => {
            let message = format!("faultline test receiver: injected {http}");
            let body = encode_rpc_status(grpc as i32, &message, None).to_vec();
            let mut resp = protobuf(http, body);
            if let Some(d) = retry_after {
                let secs = d.as_secs() + u64::from(d.subsec_nanos() > 0);
                resp.headers_mut()
                    .insert(http::header::RETRY_AFTER, HeaderValue::from(secs));
            }
            resp
        }
    }
}

fn protobuf(status: StatusCode, body: Vec<u8>) -> Response<tonic::body::Body> {
    let mut resp = Response::new(tonic::body::Body::new(Full::new(Bytes::from(body))));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-protobuf"),
    );
    resp
}

fn plain(status: StatusCode, text: &str) -> Response<tonic::body::Body> {
    let mut resp = Response::new(tonic::body::Body::new(Full::new(Bytes::from(
        text.to_owned(),
    ))));
    *resp.status_mut() = status;
    resp
}

/// What the gRPC router returns for any of the three generated servers.
type GrpcFuture =
    std::pin::Pin<Box<dyn Future<Output = Result<Response<tonic::body::Body>, Infallible>> + Send>>;

/// One listening transport: its address and the task serving it.
#[derive(Debug)]
struct Server {
    cancel: CancellationToken,
    task: JoinHandle<()>,
}

/// The receiver. Dropping it stops both servers.
#[derive(Debug)]
pub struct OtlpReceiver {
    shared: Arc<Shared>,
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

    /// [`Self::start`], but both transports speak TLS only, with `server_cert_pem` (chain) and
    /// `server_key_pem` as the server's identity, and every client must present a certificate
    /// that chains to a CA in `client_ca_pem`; a handshake without one, or with one from
    /// another CA, is refused and recorded in [`Self::refused_handshakes`]. The endpoints are
    /// `https://127.0.0.1:<port>`.
    ///
    /// # Errors
    /// When the PEM does not parse, rustls rejects the material, or binding fails.
    pub async fn start_tls(
        server_cert_pem: &str,
        server_key_pem: &str,
        client_ca_pem: &str,
    ) -> std::io::Result<Self> {
        let config = tls_server_config(server_cert_pem, server_key_pem, client_ca_pem)
            .map_err(std::io::Error::other)?;
        Self::start_with(Some(Arc::new(config))).await
    }

    async fn start_with(tls: Option<Arc<rustls::ServerConfig>>) -> std::io::Result<Self> {
        let grpc = TcpListener::bind("127.0.0.1:0").await?;
        let http = TcpListener::bind("127.0.0.1:0").await?;
        let mut receiver = Self {
            shared: Arc::new(Shared {
                inner: Mutex::new(Inner {
                    behaviour: [Behaviour::Accept, Behaviour::Accept, Behaviour::Accept],
                    metrics: Vec::new(),
                    traces: Vec::new(),
                    logs: Vec::new(),
                    refused_handshakes: Vec::new(),
                }),
                changed: Notify::new(),
            }),
            grpc_addr: grpc.local_addr()?,
            http_addr: http.local_addr()?,
            tls,
            servers: Vec::new(),
        };
        receiver.serve(grpc, http);
        Ok(receiver)
    }

    fn serve(&mut self, grpc: TcpListener, http: TcpListener) {
        let handler = GrpcHandler(Arc::clone(&self.shared));
        let metrics =
            MetricsServiceServer::new(handler.clone()).accept_compressed(CompressionEncoding::Gzip);
        let traces =
            TraceServiceServer::new(handler.clone()).accept_compressed(CompressionEncoding::Gzip);
        let logs = LogsServiceServer::new(handler).accept_compressed(CompressionEncoding::Gzip);
        let grpc_handler = move |req: Request<Incoming>| -> GrpcFuture {
            // gRPC paths are `/<package>.<Service>/<Method>`: route on the service name. The
            // generated servers are always ready (`poll_ready` returns `Ready(Ok)`), so calling
            // them directly is within the tower contract. An unknown service gets the metrics
            // server's `Unimplemented`.
            let service = req.uri().path().trim_start_matches('/');
            let service = service.split('/').next().unwrap_or_default();
            if service == TraceServiceServer::<GrpcHandler>::NAME {
                Box::pin(traces.clone().call(req))
            } else if service == LogsServiceServer::<GrpcHandler>::NAME {
                Box::pin(logs.clone().call(req))
            } else {
                Box::pin(metrics.clone().call(req))
            }
        };
        let shared = Arc::clone(&self.shared);
        let http_handler = move |req: Request<Incoming>| {
            let shared = Arc::clone(&shared);
            async move { Ok::<_, Infallible>(handle_http(shared, req).await) }
        };
        let (shared, tls) = (&self.shared, &self.tls);
        self.servers
            .push(spawn_server(grpc, grpc_handler, shared, tls.clone()));
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

    /// Why each TLS handshake the receiver refused failed (rustls' error text), in order.
    pub fn refused_handshakes(&self) -> Vec<String> {
        self.shared.lock().refused_handshakes.clone()
    }

    /// Wait until at least `n` TLS handshakes have been refused; returns their reasons.
    ///
    /// # Panics
    /// When `timeout` passes first, with the number of requests that did arrive.
    pub async fn wait_for_refused_handshakes(&self, n: usize, timeout: Duration) -> Vec<String> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.shared.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let inner = self.shared.lock();
                if inner.refused_handshakes.len() >= n {
                    return inner.refused_handshakes.clone();
                }
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                let inner = self.shared.lock();
                panic!(
                    "receiver: {n} refused handshake(s) expected within {timeout:?}, got {:?}; \
                     {} metrics request(s) arrived",
                    inner.refused_handshakes,
                    inner.metrics.len()
                );
            }
        }
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

    /// Every metrics request received so far, in arrival order.
    pub fn requests(&self) -> Vec<Received> {
        self.shared.lock().metrics.clone()
    }

    /// Every trace request received so far, in arrival order.
    pub fn trace_requests(&self) -> Vec<Received<ExportTraceServiceRequest>> {
        self.shared.lock().traces.clone()
    }

    /// Every logs request received so far, in arrival order.
    pub fn log_requests(&self) -> Vec<Received<ExportLogsServiceRequest>> {
        self.shared.lock().logs.clone()
    }

    /// Every point of metric `name` in every request so far (accepted or not), in arrival
    /// order.
    pub fn metric_points(&self, name: &str) -> Vec<Point> {
        self.shared
            .lock()
            .metrics
            .iter()
            .flat_map(Received::points)
            .filter(|p| p.name == name)
            .collect()
    }

    /// Every span in every accepted trace request so far, in arrival order.
    pub fn spans(&self) -> Vec<SpanView> {
        accepted_spans(&self.shared.lock().traces)
    }

    /// Every log record in every accepted logs request so far, in arrival order.
    pub fn log_records(&self) -> Vec<LogView> {
        accepted_logs(&self.shared.lock().logs)
    }

    /// Wait until `pred` holds for the metrics requests received so far, re-checking on
    /// every new request (no fixed sleeps). Returns the requests it held for.
    ///
    /// # Panics
    /// When `timeout` passes first, with a summary of what did arrive.
    pub async fn wait_for<F>(&self, pred: F, timeout: Duration) -> Vec<Received>
    where
        F: FnMut(&[Received]) -> bool,
    {
        self.wait_on(pred, timeout, |r| format!("cycles={:?}", r.timestamps()))
            .await
    }

    /// Wait until `pred` holds for the spans of the accepted trace requests so far.
    ///
    /// # Panics
    /// When `timeout` passes first, with a summary of what did arrive.
    pub async fn wait_for_spans<F>(&self, mut pred: F, timeout: Duration) -> Vec<SpanView>
    where
        F: FnMut(&[SpanView]) -> bool,
    {
        let got = self
            .wait_on(
                |reqs: &[Received<ExportTraceServiceRequest>]| pred(&accepted_spans(reqs)),
                timeout,
                |r| {
                    format!(
                        "spans={:?}",
                        r.spans().iter().map(|s| &s.name).collect::<Vec<_>>()
                    )
                },
            )
            .await;
        accepted_spans(&got)
    }

    /// Wait until `pred` holds for the log records of the accepted logs requests so far.
    ///
    /// # Panics
    /// When `timeout` passes first, with a summary of what did arrive.
    pub async fn wait_for_logs<F>(&self, mut pred: F, timeout: Duration) -> Vec<LogView>
    where
        F: FnMut(&[LogView]) -> bool,
    {
        let got = self
            .wait_on(
                |reqs: &[Received<ExportLogsServiceRequest>]| pred(&accepted_logs(reqs)),
                timeout,
                |r| {
                    let bodies: Vec<String> = r.log_records().into_iter().map(|l| l.body).collect();
                    format!("records={bodies:?}")
                },
            )
            .await;
        accepted_logs(&got)
    }

    async fn wait_on<R, F, S>(&self, mut pred: F, timeout: Duration, summary: S) -> Vec<Received<R>>
    where
        R: SignalRequest,
        F: FnMut(&[Received<R>]) -> bool,
        S: Fn(&Received<R>) -> String,
    {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            // Register interest before checking, so a request landing in between wakes us.
            let notified = self.shared.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let mut inner = self.shared.lock();
                let received = R::store(&mut inner);
                if pred(received) {
                    return received.clone();
                }
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                let lines: Vec<String> = R::store(&mut self.shared.lock())
                    .iter()
                    .map(|r| format!("{:?} {:?} {}", r.transport, r.reply, summary(r)))
                    .collect();
                panic!(
                    "receiver: {:?} condition not met within {timeout:?}; {} request(s) arrived:\n{}",
                    R::SIGNAL,
                    lines.len(),
                    lines.join("\n")
                );
            }
        }
    }
}

fn accepted_spans(reqs: &[Received<ExportTraceServiceRequest>]) -> Vec<SpanView> {
    reqs.iter()
        .filter(|r| r.accepted())
        .flat_map(Received::spans)
        .collect()
}

fn accepted_logs(reqs: &[Received<ExportLogsServiceRequest>]) -> Vec<LogView> {
    reqs.iter()
        .filter(|r| r.accepted())
        .flat_map(Received::log_records)
        .collect()
}

impl Drop for OtlpReceiver {
    fn drop(&mut self) {
        for server in &self.servers {
            server.cancel.cancel();
            server.task.abort();
        }
    }
}

/// The DER of the end-entity certificate a TLS client presented, put into the extensions of
/// every request on that connection.
#[derive(Clone, Debug)]
struct PeerCertificate(Arc<[u8]>);

/// The rustls server configuration of [`OtlpReceiver::start_tls`]: `h2` and `http/1.1` by
/// ALPN (tonic's client insists on `h2`), client certificates required and verified against
/// `client_ca_pem`.
fn tls_server_config(
    server_cert_pem: &str,
    server_key_pem: &str,
    client_ca_pem: &str,
) -> Result<rustls::ServerConfig, String> {
    let certs = |pem: &str, what: &str| {
        rustls_pemfile::certs(&mut pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("{what}: {e}"))
    };
    let chain = certs(server_cert_pem, "server certificate")?;
    let key = rustls_pemfile::private_key(&mut server_key_pem.as_bytes())
        .map_err(|e| format!("server key: {e}"))?
        .ok_or("server key: no PEM private key")?;
    let mut roots = rustls::RootCertStore::empty();
    for ca in certs(client_ca_pem, "client CA")? {
        roots.add(ca).map_err(|e| format!("client CA: {e}"))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .map_err(|e| format!("client verifier: {e}"))?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(|e| format!("server identity: {e}"))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
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

#[cfg(test)]
mod tests {
    //! The receiver against real clients, so an agent test failure is never the harness's.
    use std::io::Write;

    use http_body_util::Full;
    use hyper_util::client::legacy::Client;
    use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_client::MetricsServiceClient;
    use opentelemetry_proto::tonic::metrics::v1::{
        Gauge, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics,
    };

    use super::*;

    fn request(ts: u64) -> ExportMetricsServiceRequest {
        let point = NumberDataPoint {
            time_unix_nano: ts,
            value: Some(number_data_point::Value::AsInt(7)),
            ..Default::default()
        };
        let metric = Metric {
            name: "system.uptime".into(),
            unit: "s".into(),
            data: Some(metric::Data::Gauge(Gauge {
                data_points: vec![point],
            })),
            ..Default::default()
        };
        ExportMetricsServiceRequest {
            resource_metrics: vec![ResourceMetrics {
                scope_metrics: vec![ScopeMetrics {
                    metrics: vec![metric],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        }
    }

    async fn post(
        url: &str,
        body: Vec<u8>,
        gzip: bool,
    ) -> Result<Response<Incoming>, hyper_util::client::legacy::Error> {
        post_to(url, "/v1/metrics", body, gzip).await
    }

    async fn post_to(
        url: &str,
        path: &str,
        body: Vec<u8>,
        gzip: bool,
    ) -> Result<Response<Incoming>, hyper_util::client::legacy::Error> {
        let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
        let body = if gzip {
            let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            enc.write_all(&body).unwrap();
            enc.finish().unwrap()
        } else {
            body
        };
        let mut req = Request::post(format!("{url}{path}"))
            .header("content-type", "application/x-protobuf")
            .body(Full::new(Bytes::from(body)))
            .unwrap();
        if gzip {
            req.headers_mut()
                .insert("content-encoding", HeaderValue::from_static("gzip"));
        }
        client.request(req).await
    }

    #[tokio::test]
    async fn grpc_records_requests_and_sends_retry_info() {
        let receiver = OtlpReceiver::start().await.unwrap();
        receiver.set_behaviour(Behaviour::FailWith {
            grpc: tonic::Code::Unavailable,
            http: StatusCode::SERVICE_UNAVAILABLE,
            retry_after: Some(Duration::from_millis(2500)),
            times: 1,
        });
        let mut client = MetricsServiceClient::connect(receiver.grpc_endpoint())
            .await
            .unwrap()
            .send_compressed(CompressionEncoding::Gzip);
        let status = client.export(request(1)).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::Unavailable);
        let details = RpcStatus::decode(status.details()).unwrap();
        assert_eq!(details.code, tonic::Code::Unavailable as i32);
        let info = RetryInfo::decode(details.details[0].value.as_slice()).unwrap();
        assert_eq!(
            info.retry_delay,
            Some(prost_types::Duration {
                seconds: 2,
                nanos: 500_000_000
            })
        );

        client.export(request(2)).await.unwrap();
        let got = receiver
            .wait_for(|r| r.len() == 2, Duration::from_secs(5))
            .await;
        assert!(!got[0].accepted() && got[1].accepted());
        assert_eq!(got[1].transport, Transport::Grpc);
        assert_eq!(got[1].header("grpc-encoding"), Some("gzip"));
        assert_eq!(receiver.metric_points("system.uptime")[1].time_unix_nano, 2);
    }

    #[tokio::test]
    async fn http_decodes_gzip_sends_retry_after_and_survives_restart() {
        let mut receiver = OtlpReceiver::start().await.unwrap();
        let url = receiver.http_endpoint();
        receiver.set_behaviour(Behaviour::FailWith {
            grpc: tonic::Code::Unavailable,
            http: StatusCode::SERVICE_UNAVAILABLE,
            retry_after: Some(Duration::from_secs(2)),
            times: 1,
        });
        let resp = post(&url, request(1).encode_to_vec(), true).await.unwrap();
        assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(resp.headers().get("retry-after").unwrap(), "2");

        receiver.stop().await;
        assert!(
            post(&url, request(2).encode_to_vec(), false).await.is_err(),
            "down means down"
        );
        receiver.restart().await.unwrap();

        receiver.set_behaviour(Behaviour::PartialSuccess {
            rejected: 3,
            message: "m".into(),
        });
        let resp = post(&url, request(3).encode_to_vec(), false).await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        let decoded = ExportMetricsServiceResponse::decode(body).unwrap();
        assert_eq!(decoded.partial_success.unwrap().rejected_data_points, 3);

        let got = receiver.requests();
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].header("content-encoding"), Some("gzip"));
        assert_eq!(got[0].timestamps(), vec![1]);
        assert_eq!(got[1].reply, Reply::PartialSuccess { rejected: 3 });
    }

    #[tokio::test]
    async fn tls_requires_a_client_certificate_of_its_ca_and_records_it() {
        use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};
        let dir = tempfile::tempdir().unwrap();
        let ca = crate::pki::TestCa::new(dir.path(), "ca");
        let server = ca.server(dir.path(), "server", &["127.0.0.1"]);
        let client = ca.client(dir.path(), "client");
        let receiver = OtlpReceiver::start_tls(&server.cert_pem(), &server.key_pem(), &ca.pem)
            .await
            .unwrap();
        let tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(&ca.pem));
        let client_for = |tls: ClientTlsConfig| {
            let channel = Channel::from_shared(receiver.grpc_endpoint())
                .unwrap()
                .tls_config(tls)
                .unwrap()
                .connect_lazy();
            MetricsServiceClient::new(channel)
        };
        let identity = Identity::from_pem(client.cert_pem(), client.key_pem());
        client_for(tls.clone().identity(identity))
            .export(request(1))
            .await
            .unwrap();
        client_for(tls).export(request(2)).await.unwrap_err();

        let refused = receiver
            .wait_for_refused_handshakes(1, Duration::from_secs(5))
            .await;
        assert!(refused[0].contains("no certificates"), "{refused:?}");
        let got = receiver.requests();
        assert_eq!(
            got.len(),
            1,
            "only the client with a certificate got through"
        );
        assert_eq!(got[0].client_cert.as_deref(), Some(client.der.as_slice()));
        assert_eq!(got[0].timestamps(), vec![1]);
    }

    fn trace_request() -> ExportTraceServiceRequest {
        use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
        ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                scope_spans: vec![ScopeSpans {
                    spans: vec![Span {
                        trace_id: vec![0xab; 16],
                        span_id: vec![1; 8],
                        parent_span_id: vec![2; 8],
                        name: "child".into(),
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        }
    }

    fn logs_request(body: &str) -> ExportLogsServiceRequest {
        use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
        ExportLogsServiceRequest {
            resource_logs: vec![ResourceLogs {
                scope_logs: vec![ScopeLogs {
                    log_records: vec![LogRecord {
                        event_name: "e".into(),
                        body: Some(AnyValue {
                            value: Some(any_value::Value::StringValue(body.into())),
                        }),
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        }
    }

    #[tokio::test]
    async fn traces_and_logs_arrive_over_both_transports_with_their_own_behaviour() {
        use opentelemetry_proto::tonic::collector::logs::v1::logs_service_client::LogsServiceClient;
        use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
        let receiver = OtlpReceiver::start().await.unwrap();
        // Logs fail once; metrics and traces are not affected.
        receiver.set_signal_behaviour(
            Signal::Logs,
            Behaviour::FailWith {
                grpc: tonic::Code::Unavailable,
                http: StatusCode::SERVICE_UNAVAILABLE,
                retry_after: None,
                times: 1,
            },
        );
        let mut traces = TraceServiceClient::connect(receiver.grpc_endpoint())
            .await
            .unwrap();
        traces.export(trace_request()).await.unwrap();
        let mut logs = LogsServiceClient::connect(receiver.grpc_endpoint())
            .await
            .unwrap()
            .send_compressed(CompressionEncoding::Gzip);
        assert_eq!(
            logs.export(logs_request("g1")).await.unwrap_err().code(),
            tonic::Code::Unavailable
        );
        logs.export(logs_request("g2")).await.unwrap();
        let url = receiver.http_endpoint();
        let resp = post_to(&url, "/v1/traces", trace_request().encode_to_vec(), true)
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        receiver.set_signal_behaviour(
            Signal::Logs,
            Behaviour::PartialSuccess {
                rejected: 1,
                message: "m".into(),
            },
        );
        let resp = post_to(&url, "/v1/logs", logs_request("h1").encode_to_vec(), false)
            .await
            .unwrap();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        let decoded = ExportLogsServiceResponse::decode(body).unwrap();
        assert_eq!(decoded.partial_success.unwrap().rejected_log_records, 1);

        let spans = receiver
            .wait_for_spans(|s| s.len() == 2, Duration::from_secs(5))
            .await;
        assert_eq!(spans[0].trace_id, "ab".repeat(16));
        assert_eq!(spans[0].parent_span_id, "0202020202020202");
        let records = receiver
            .wait_for_logs(|l| l.len() == 2, Duration::from_secs(5))
            .await;
        let bodies: Vec<&str> = records.iter().map(|r| r.body.as_str()).collect();
        assert_eq!(bodies, ["g2", "h1"], "the failed request is not counted");
        let reqs = receiver.log_requests();
        assert_eq!(reqs.len(), 3);
        assert_eq!(reqs[0].header("grpc-encoding"), Some("gzip"));
        assert_eq!(reqs[2].transport, Transport::Http);
        assert_eq!(
            receiver.trace_requests()[1].header("content-encoding"),
            Some("gzip")
        );
        assert!(receiver.requests().is_empty());
    }
}
