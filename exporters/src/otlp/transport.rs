//! Sending one OTLP metrics request over gRPC (tonic) or HTTP/protobuf (hyper), and
//! classifying the answer the way the OpenTelemetry exporter specification says.
//!
//! The classification is the contract with the queue in [`super::pipeline`]: `Ok` means the
//! request is done with (fully or partially accepted), [`SendError::Retryable`] means keep it
//! and try again later (with the server's requested delay when it gave one), and
//! [`SendError::Permanent`] means drop it and never send it again.

use std::io::Write;
use std::str::FromStr;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceResponse;
use prost::Message;
use tonic::codec::CompressionEncoding;
use tonic::metadata::{MetadataKey, MetadataValue};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

/// Wire protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    /// OTLP/gRPC.
    Grpc,
    /// OTLP/HTTP with binary protobuf bodies.
    HttpProtobuf,
}

/// Request body compression.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    /// No compression.
    None,
    /// gzip.
    Gzip,
}

/// TLS material, already read from files by the caller (so file errors name the file).
#[derive(Clone, Debug, Default)]
pub struct TlsMaterial {
    /// PEM of extra CA certificates to trust (in addition to the system's roots).
    pub ca_pem: Option<Vec<u8>>,
    /// PEM client certificate chain (mTLS), with `client_key_pem`.
    pub client_cert_pem: Option<Vec<u8>>,
    /// PEM client private key.
    pub client_key_pem: Option<Vec<u8>>,
}

/// Everything a transport needs, resolved from config and environment.
#[derive(Clone, Debug)]
pub struct TransportSettings {
    /// gRPC: the endpoint URL (`http://host:4317`); HTTP: the full metrics URL
    /// (`http://host:4318/v1/metrics`).
    pub url: String,
    /// Protocol.
    pub protocol: Protocol,
    /// Extra request headers (`authorization`, tenant IDs, …).
    pub headers: Vec<(String, String)>,
    /// Body compression.
    pub compression: Compression,
    /// Per-request timeout (connect + send + answer).
    pub timeout: Duration,
    /// TLS material for `https` URLs.
    pub tls: TlsMaterial,
}

/// A request was accepted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SendOk {
    /// Fully accepted.
    Accepted,
    /// The backend accepted the request but rejected some points; never retried.
    PartialSuccess {
        /// Points the backend rejected.
        rejected: i64,
        /// The backend's explanation.
        message: String,
    },
}

/// A request was not accepted.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// Transient: keep the data, wait, send again.
    #[error("{reason} (will retry{})", retry_after.map(|d| format!(" after {}", crate::repeat::human(d))).unwrap_or_default())]
    Retryable {
        /// What happened.
        reason: String,
        /// The delay the server asked for (HTTP `Retry-After`, gRPC `RetryInfo`).
        retry_after: Option<Duration>,
    },
    /// The backend refused this data for good (for example HTTP 400): drop it.
    #[error("{reason} (not retryable; data dropped)")]
    Permanent {
        /// What happened.
        reason: String,
    },
}

/// A transport could not be built from its settings.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The URL is not usable.
    #[error("invalid OTLP endpoint {url:?}: {reason}")]
    Url {
        /// The URL.
        url: String,
        /// Why.
        reason: String,
    },
    /// A header name or value is not valid.
    #[error("invalid OTLP header {name:?}: {reason}")]
    Header {
        /// The header.
        name: String,
        /// Why.
        reason: String,
    },
    /// TLS material is not usable.
    #[error("invalid TLS settings: {0}")]
    Tls(String),
}

/// One OTLP metrics transport.
#[derive(Clone, Debug)]
pub enum Transport {
    /// gRPC (boxed, like its sibling: both clients are a few hundred bytes).
    Grpc(Box<GrpcTransport>),
    /// HTTP/protobuf.
    Http(Box<HttpTransport>),
}

impl Transport {
    /// Builds the transport. No connection is made here: the first send connects, so an
    /// unreachable backend at start is a retryable send error, not a start-up failure.
    pub fn new(settings: TransportSettings) -> Result<Self, BuildError> {
        match settings.protocol {
            Protocol::Grpc => GrpcTransport::new(settings).map(|t| Transport::Grpc(Box::new(t))),
            Protocol::HttpProtobuf => {
                HttpTransport::new(settings).map(|t| Transport::Http(Box::new(t)))
            }
        }
    }

    /// Sends one encoded `ExportMetricsServiceRequest` and classifies the outcome.
    pub async fn send(&self, payload: &Bytes) -> Result<SendOk, SendError> {
        match self {
            Transport::Grpc(t) => t.send(payload).await,
            Transport::Http(t) => t.send(payload).await,
        }
    }
}

fn partial(resp: &ExportMetricsServiceResponse) -> SendOk {
    match &resp.partial_success {
        Some(p) if p.rejected_data_points > 0 || !p.error_message.is_empty() => {
            SendOk::PartialSuccess {
                rejected: p.rejected_data_points,
                message: p.error_message.clone(),
            }
        }
        _ => SendOk::Accepted,
    }
}

/// The OTLP metrics service's export method.
const EXPORT_METRICS_PATH: &str = "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export";

/// A gRPC codec whose requests are already-encoded messages (the queue's bytes, written as
/// they are) and whose responses are `ExportMetricsServiceResponse`s: the generated client
/// would take a decoded request, clone it and encode it again on every attempt.
#[derive(Clone, Copy, Debug, Default)]
struct EncodedCodec;

impl tonic::codec::Codec for EncodedCodec {
    type Encode = Bytes;
    type Decode = ExportMetricsServiceResponse;
    type Encoder = EncodedCodec;
    type Decoder = EncodedCodec;

    fn encoder(&mut self) -> Self::Encoder {
        EncodedCodec
    }

    fn decoder(&mut self) -> Self::Decoder {
        EncodedCodec
    }
}

impl tonic::codec::Encoder for EncodedCodec {
    type Item = Bytes;
    type Error = tonic::Status;

    fn encode(
        &mut self,
        item: Bytes,
        dst: &mut tonic::codec::EncodeBuf<'_>,
    ) -> Result<(), Self::Error> {
        use bytes::BufMut as _;
        dst.put(item);
        Ok(())
    }
}

impl tonic::codec::Decoder for EncodedCodec {
    type Item = ExportMetricsServiceResponse;
    type Error = tonic::Status;

    fn decode(
        &mut self,
        src: &mut tonic::codec::DecodeBuf<'_>,
    ) -> Result<Option<Self::Item>, Self::Error> {
        ExportMetricsServiceResponse::decode(src)
            .map(Some)
            .map_err(|e| tonic::Status::internal(format!("undecodable export response: {e}")))
    }
}

/// OTLP/gRPC over a lazily connected tonic channel.
#[derive(Clone, Debug)]
pub struct GrpcTransport {
    client: tonic::client::Grpc<Channel>,
    headers: Vec<(
        MetadataKey<tonic::metadata::Ascii>,
        MetadataValue<tonic::metadata::Ascii>,
    )>,
    timeout: Duration,
}

/// The tonic endpoint (URL, timeouts, TLS) for `s`; shared with the trace/log sender.
pub(crate) fn grpc_endpoint(s: &TransportSettings) -> Result<Endpoint, BuildError> {
    let url_err = |reason: String| BuildError::Url {
        url: s.url.clone(),
        reason,
    };
    let mut endpoint = Endpoint::from_str(&s.url)
        .map_err(|e| url_err(e.to_string()))?
        .timeout(s.timeout)
        .connect_timeout(s.timeout);
    if s.url.starts_with("https://") {
        let mut tls = ClientTlsConfig::new().with_native_roots();
        if let Some(ca) = &s.tls.ca_pem {
            tls = tls.ca_certificate(Certificate::from_pem(ca));
        }
        match (&s.tls.client_cert_pem, &s.tls.client_key_pem) {
            (Some(c), Some(k)) => tls = tls.identity(Identity::from_pem(c, k)),
            (None, None) => {}
            _ => {
                return Err(BuildError::Tls(
                    "client certificate and key must be set together".into(),
                ));
            }
        }
        endpoint = endpoint
            .tls_config(tls)
            .map_err(|e| BuildError::Tls(e.to_string()))?;
    } else if !s.url.starts_with("http://") {
        return Err(url_err("scheme must be http or https".into()));
    }
    Ok(endpoint)
}

/// gRPC metadata from the configured headers; shared with the trace/log sender.
pub(crate) type GrpcHeaders = Vec<(
    MetadataKey<tonic::metadata::Ascii>,
    MetadataValue<tonic::metadata::Ascii>,
)>;

/// Builds [`GrpcHeaders`] from `s.headers`.
pub(crate) fn grpc_headers(s: &TransportSettings) -> Result<GrpcHeaders, BuildError> {
    s.headers
        .iter()
        .map(|(k, v)| {
            let key = MetadataKey::from_bytes(k.to_ascii_lowercase().as_bytes()).map_err(|e| {
                BuildError::Header {
                    name: k.clone(),
                    reason: e.to_string(),
                }
            })?;
            let val = MetadataValue::try_from(v.as_str()).map_err(|e| BuildError::Header {
                name: k.clone(),
                reason: e.to_string(),
            })?;
            Ok((key, val))
        })
        .collect::<Result<_, BuildError>>()
}

impl GrpcTransport {
    fn new(s: TransportSettings) -> Result<Self, BuildError> {
        let mut client = tonic::client::Grpc::new(grpc_endpoint(&s)?.connect_lazy());
        if s.compression == Compression::Gzip {
            client = client.send_compressed(CompressionEncoding::Gzip);
        }
        client = client.accept_compressed(CompressionEncoding::Gzip);
        Ok(Self {
            client,
            headers: grpc_headers(&s)?,
            timeout: s.timeout,
        })
    }

    async fn send(&self, payload: &Bytes) -> Result<SendOk, SendError> {
        let mut request = tonic::Request::new(payload.clone());
        request.set_timeout(self.timeout);
        for (k, v) in &self.headers {
            request.metadata_mut().insert(k.clone(), v.clone());
        }
        let mut client = self.client.clone();
        let export = async move {
            client
                .ready()
                .await
                .map_err(|e| tonic::Status::unavailable(format!("gRPC channel not ready: {e}")))?;
            client
                .unary(
                    request,
                    http::uri::PathAndQuery::from_static(EXPORT_METRICS_PATH),
                    EncodedCodec,
                )
                .await
        };
        match tokio::time::timeout(self.timeout, export).await {
            Err(_) => Err(SendError::Retryable {
                reason: format!(
                    "gRPC export timed out after {}",
                    crate::repeat::human(self.timeout)
                ),
                retry_after: None,
            }),
            Ok(Ok(resp)) => Ok(partial(resp.get_ref())),
            Ok(Err(status)) => Err(classify_grpc(&status)),
        }
    }
}

/// Classifies a gRPC status per the OTLP specification's retryable codes.
///
/// A status tonic made on the client side from a transport error (it carries the error as
/// its `source`; a status the server sent never does) is not an answer from the backend:
/// tonic reports a failed connection, such as a TLS handshake the server refused, as
/// `Unknown: transport error`. That one is retryable, as a connection error is over HTTP,
/// and its reason carries the error chain (the TLS alert, the refused connect), which the
/// bare status message loses.
pub fn classify_grpc(status: &tonic::Status) -> SendError {
    use tonic::Code;
    let retry_after = retry_info_delay(status.details());
    let mut reason = format!(
        "gRPC export failed: {:?}: {}",
        status.code(),
        status.message()
    );
    let transport_failure = std::error::Error::source(status).is_some();
    let mut cause = std::error::Error::source(status);
    while let Some(e) = cause {
        let text = e.to_string();
        // tonic's message is often the source's own text; say each thing once.
        if !reason.ends_with(&text) {
            reason.push_str(": ");
            reason.push_str(&text);
        }
        cause = e.source();
    }
    let retryable = match status.code() {
        Code::Unknown => transport_failure,
        Code::Cancelled
        | Code::DeadlineExceeded
        | Code::Aborted
        | Code::OutOfRange
        | Code::Unavailable
        | Code::DataLoss => true,
        // Only when the server says when to come back (the spec: "RetryInfo present").
        Code::ResourceExhausted => retry_after.is_some(),
        _ => false,
    };
    if retryable {
        SendError::Retryable {
            reason,
            retry_after,
        }
    } else {
        SendError::Permanent { reason }
    }
}

/// `google.rpc.Status`, just the fields we read.
#[derive(Clone, PartialEq, prost::Message)]
struct RpcStatus {
    #[prost(int32, tag = "1")]
    code: i32,
    #[prost(string, tag = "2")]
    message: String,
    #[prost(message, repeated, tag = "3")]
    details: Vec<prost_types::Any>,
}

/// `google.rpc.RetryInfo`.
#[derive(Clone, PartialEq, prost::Message)]
struct RetryInfo {
    #[prost(message, optional, tag = "1")]
    retry_delay: Option<prost_types::Duration>,
}

const RETRY_INFO_TYPE: &str = "type.googleapis.com/google.rpc.RetryInfo";

/// The `RetryInfo.retry_delay` carried in a gRPC status's details, if any.
pub fn retry_info_delay(details: &[u8]) -> Option<Duration> {
    if details.is_empty() {
        return None;
    }
    let status = RpcStatus::decode(details).ok()?;
    status
        .details
        .iter()
        .filter(|a| a.type_url == RETRY_INFO_TYPE)
        .find_map(|a| {
            let d = RetryInfo::decode(a.value.as_slice()).ok()?.retry_delay?;
            let secs = u64::try_from(d.seconds).ok()?;
            let nanos = u32::try_from(d.nanos).ok()?;
            Some(Duration::new(secs, nanos))
        })
}

/// Encodes a `google.rpc.Status` carrying a `RetryInfo` (used by the tests' receiver).
pub fn encode_retry_info_status(code: i32, message: &str, delay: Duration) -> Vec<u8> {
    let info = RetryInfo {
        retry_delay: Some(prost_types::Duration {
            seconds: i64::try_from(delay.as_secs()).unwrap_or(i64::MAX),
            nanos: i32::try_from(delay.subsec_nanos()).unwrap_or(0),
        }),
    };
    RpcStatus {
        code,
        message: message.to_owned(),
        details: vec![prost_types::Any {
            type_url: RETRY_INFO_TYPE.to_owned(),
            value: info.encode_to_vec(),
        }],
    }
    .encode_to_vec()
}

type HttpsClient = crate::https::HttpsClient<Full<Bytes>>;

/// OTLP/HTTP with protobuf bodies over hyper (rustls for `https`).
#[derive(Clone, Debug)]
pub struct HttpTransport {
    client: HttpsClient,
    uri: http::Uri,
    headers: Vec<(HeaderName, HeaderValue)>,
    compression: Compression,
    timeout: Duration,
}

impl HttpTransport {
    fn new(s: TransportSettings) -> Result<Self, BuildError> {
        let uri: http::Uri = s
            .url
            .parse()
            .map_err(|e: http::uri::InvalidUri| BuildError::Url {
                url: s.url.clone(),
                reason: e.to_string(),
            })?;
        match uri.scheme_str() {
            Some("http") | Some("https") => {}
            _ => {
                return Err(BuildError::Url {
                    url: s.url.clone(),
                    reason: "scheme must be http or https".into(),
                });
            }
        }
        let client = crate::https::client(
            rustls_client_config(&s.url, &s.tls)?,
            crate::https::ConnectOptions {
                connect_timeout: Some(s.timeout),
                ..Default::default()
            },
        );
        let headers = http_headers(&s)?;
        Ok(Self {
            client,
            uri,
            headers,
            compression: s.compression,
            timeout: s.timeout,
        })
    }

    /// The metrics URL.
    pub(crate) fn uri(&self) -> &http::Uri {
        &self.uri
    }

    /// The configured extra headers.
    pub(crate) fn headers(&self) -> &[(HeaderName, HeaderValue)] {
        &self.headers
    }

    /// The body compression.
    pub(crate) fn compression(&self) -> Compression {
        self.compression
    }

    /// The per-request timeout.
    pub(crate) fn timeout(&self) -> Duration {
        self.timeout
    }

    async fn send(&self, payload: &Bytes) -> Result<SendOk, SendError> {
        let mut body = payload.clone();
        let mut builder = Request::post(self.uri.clone())
            .header(http::header::CONTENT_TYPE, "application/x-protobuf");
        if self.compression == Compression::Gzip {
            body = gzip(&body)
                .map(Bytes::from)
                .map_err(|e| SendError::Permanent {
                    reason: format!("gzip: {e}"),
                })?;
            builder = builder.header(http::header::CONTENT_ENCODING, "gzip");
        }
        for (k, v) in &self.headers {
            builder = builder.header(k, v);
        }
        let request = builder
            .body(Full::new(body))
            .map_err(|e| SendError::Permanent {
                reason: format!("cannot build HTTP request: {e}"),
            })?;
        let exchange = async {
            let resp = self
                .client
                .request(request)
                .await
                .map_err(|e| SendError::Retryable {
                    reason: format!(
                        "HTTP export to {} failed: {}",
                        self.uri,
                        crate::https::error_chain(&e)
                    ),
                    retry_after: None,
                })?;
            let status = resp.status();
            let retry_after = resp
                .headers()
                .get(http::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| parse_retry_after(v, SystemTime::now()));
            let body = resp
                .into_body()
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            Ok::<_, SendError>((status, retry_after, body))
        };
        let (status, retry_after, body) = match tokio::time::timeout(self.timeout, exchange).await {
            Err(_) => {
                return Err(SendError::Retryable {
                    reason: format!(
                        "HTTP export to {} timed out after {}",
                        self.uri,
                        crate::repeat::human(self.timeout)
                    ),
                    retry_after: None,
                });
            }
            Ok(r) => r?,
        };
        classify_http(status, retry_after, &body)
    }
}

/// Classifies an OTLP/HTTP answer: 2xx accepted (partial success decoded from the body),
/// 429/502/503/504 retryable, everything else permanent.
pub fn classify_http(
    status: StatusCode,
    retry_after: Option<Duration>,
    body: &[u8],
) -> Result<SendOk, SendError> {
    if status.is_success() {
        return Ok(ExportMetricsServiceResponse::decode(body)
            .map(|r| partial(&r))
            .unwrap_or(SendOk::Accepted));
    }
    let detail = RpcStatus::decode(body)
        .ok()
        .filter(|s| !s.message.is_empty())
        .map(|s| s.message)
        .unwrap_or_else(|| String::from_utf8_lossy(&body[..body.len().min(256)]).into_owned());
    let reason = format!("HTTP export failed: {status}: {detail}");
    match status.as_u16() {
        429 | 502 | 503 | 504 => Err(SendError::Retryable {
            reason,
            retry_after,
        }),
        _ => Err(SendError::Permanent { reason }),
    }
}

/// Parses `Retry-After`: delay-seconds or an HTTP-date (relative to `now`).
pub fn parse_retry_after(v: &str, now: SystemTime) -> Option<Duration> {
    let v = v.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = httpdate::parse_http_date(v).ok()?;
    Some(when.duration_since(now).unwrap_or(Duration::ZERO))
}

/// The configured extra headers as HTTP headers; a bad name or value is named in the error.
pub(crate) fn http_headers(
    s: &TransportSettings,
) -> Result<Vec<(HeaderName, HeaderValue)>, BuildError> {
    s.headers
        .iter()
        .map(|(k, v)| {
            let bad = |e: &dyn std::error::Error| BuildError::Header {
                name: k.clone(),
                reason: e.to_string(),
            };
            let name = HeaderName::from_bytes(k.as_bytes()).map_err(|e| bad(&e))?;
            let value = HeaderValue::from_str(v).map_err(|e| bad(&e))?;
            Ok((name, value))
        })
        .collect()
}

pub(crate) fn gzip(data: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut enc = flate2::write::GzEncoder::new(
        Vec::with_capacity(data.len() / 4),
        flate2::Compression::fast(),
    );
    enc.write_all(data)?;
    enc.finish()
}

/// The rustls client configuration for `url` ([`crate::https::tls_config`]): the system's
/// root certificates (read only for an `https://` URL — a plain-HTTP exporter never uses
/// them, and parsing the system store costs start-up time and a few hundred KiB that stay
/// resident), the extra CA, the client identity.
pub(crate) fn rustls_client_config(
    url: &str,
    tls: &TlsMaterial,
) -> Result<rustls::ClientConfig, BuildError> {
    let identity = match (&tls.client_cert_pem, &tls.client_key_pem) {
        (Some(c), Some(k)) => Some((c.as_slice(), k.as_slice())),
        (None, None) => None,
        _ => {
            return Err(BuildError::Tls(
                "client certificate and key must be set together".into(),
            ));
        }
    };
    crate::https::tls_config(&crate::https::TlsOptions {
        system_roots: url.starts_with("https://"),
        ca_pem: tls.ca_pem.as_deref(),
        identity,
    })
    .map_err(|e| BuildError::Tls(e.to_string()))
}

#[cfg(test)]
mod tests;
