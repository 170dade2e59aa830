//! Sending OTLP traces and logs (the drills' reports) over the same endpoint settings as
//! the metrics: gRPC (`TraceService`/`LogsService` on the same channel settings) or
//! HTTP/protobuf (`/v1/traces`, `/v1/logs` next to the metrics URL).
//!
//! One request at a time, no queue: a drill report is sent once when the drill ends (the
//! JSON report in the state directory is the durable copy). Answers are classified like the
//! metrics' ([`super::transport::classify_grpc`], [`super::transport::classify_http`]; the
//! partial-success messages of the three signals share one wire layout).

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Request};
use http_body_util::{BodyExt, Full};
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::logs::v1::logs_service_client::LogsServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use prost::Message;
use tonic::codec::CompressionEncoding;
use tonic::transport::Channel;

use super::transport::{
    BuildError, Compression, GrpcHeaders, Protocol, SendError, SendOk, TransportSettings,
    classify_grpc, classify_http, grpc_endpoint, grpc_headers, gzip, http_headers,
    rustls_client_config,
};

/// Sends traces and logs.
#[derive(Clone, Debug)]
pub struct SignalSender {
    inner: Inner,
    timeout: Duration,
    /// The metrics endpoint the signals' URLs derive from, for logs.
    endpoint: String,
}

#[derive(Clone, Debug)]
enum Inner {
    Grpc {
        traces: TraceServiceClient<Channel>,
        logs: LogsServiceClient<Channel>,
        headers: GrpcHeaders,
    },
    Http {
        client: crate::https::HttpsClient<Full<Bytes>>,
        traces: http::Uri,
        logs: http::Uri,
        headers: Vec<(HeaderName, HeaderValue)>,
        compression: Compression,
    },
}

/// The URL of `signal` (`traces`, `logs`) next to a metrics URL: `…/v1/metrics` becomes
/// `…/v1/<signal>`; any other URL gets `/v1/<signal>` appended.
pub fn signal_url(metrics_url: &str, signal: &str) -> String {
    match metrics_url.strip_suffix("/v1/metrics") {
        Some(base) => format!("{base}/v1/{signal}"),
        None => format!("{}/v1/{signal}", metrics_url.trim_end_matches('/')),
    }
}

impl SignalSender {
    /// Builds from the metrics transport's settings; connects lazily.
    pub fn new(s: &TransportSettings) -> Result<Self, BuildError> {
        let inner = match s.protocol {
            Protocol::Grpc => {
                let channel = grpc_endpoint(s)?.connect_lazy();
                let mut traces = TraceServiceClient::new(channel.clone());
                let mut logs = LogsServiceClient::new(channel);
                if s.compression == Compression::Gzip {
                    traces = traces.send_compressed(CompressionEncoding::Gzip);
                    logs = logs.send_compressed(CompressionEncoding::Gzip);
                }
                Inner::Grpc {
                    traces,
                    logs,
                    headers: grpc_headers(s)?,
                }
            }
            Protocol::HttpProtobuf => {
                let uri = |signal: &str| {
                    let url = signal_url(&s.url, signal);
                    url.parse::<http::Uri>().map_err(|e| BuildError::Url {
                        url: url.clone(),
                        reason: e.to_string(),
                    })
                };
                let headers = http_headers(s)?;
                Inner::Http {
                    client: crate::https::client(
                        rustls_client_config(&s.url, &s.tls)?,
                        crate::https::ConnectOptions {
                            connect_timeout: Some(s.timeout),
                            ..Default::default()
                        },
                    ),
                    traces: uri("traces")?,
                    logs: uri("logs")?,
                    headers,
                    compression: s.compression,
                }
            }
        };
        Ok(Self {
            inner,
            timeout: s.timeout,
            endpoint: s.url.clone(),
        })
    }

    /// The endpoint (as configured for metrics), for logs.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Sends one trace request.
    pub async fn send_traces(&self, req: &ExportTraceServiceRequest) -> Result<SendOk, SendError> {
        match &self.inner {
            Inner::Grpc {
                traces, headers, ..
            } => {
                let mut request = tonic::Request::new(req.clone());
                add_metadata(&mut request, headers, self.timeout);
                let mut client = traces.clone();
                self.grpc(client.export(request)).await
            }
            Inner::Http {
                client,
                traces,
                headers,
                compression,
                ..
            } => {
                self.http(client, traces, headers, *compression, req.encode_to_vec())
                    .await
            }
        }
    }

    /// Sends one logs request.
    pub async fn send_logs(&self, req: &ExportLogsServiceRequest) -> Result<SendOk, SendError> {
        match &self.inner {
            Inner::Grpc { logs, headers, .. } => {
                let mut request = tonic::Request::new(req.clone());
                add_metadata(&mut request, headers, self.timeout);
                let mut client = logs.clone();
                self.grpc(client.export(request)).await
            }
            Inner::Http {
                client,
                logs,
                headers,
                compression,
                ..
            } => {
                self.http(client, logs, headers, *compression, req.encode_to_vec())
                    .await
            }
        }
    }

    async fn grpc<T>(
        &self,
        call: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    ) -> Result<SendOk, SendError> {
        match tokio::time::timeout(self.timeout, call).await {
            Err(_) => Err(SendError::Retryable {
                reason: format!(
                    "gRPC export timed out after {}",
                    crate::repeat::human(self.timeout)
                ),
                retry_after: None,
            }),
            Ok(Ok(_)) => Ok(SendOk::Accepted),
            Ok(Err(status)) => Err(classify_grpc(&status)),
        }
    }

    async fn http(
        &self,
        client: &crate::https::HttpsClient<Full<Bytes>>,
        uri: &http::Uri,
        headers: &[(HeaderName, HeaderValue)],
        compression: Compression,
        mut body: Vec<u8>,
    ) -> Result<SendOk, SendError> {
        let mut builder =
            Request::post(uri.clone()).header(http::header::CONTENT_TYPE, "application/x-protobuf");
        if compression == Compression::Gzip {
            body = gzip(&body).map_err(|e| SendError::Permanent {
                reason: format!("gzip: {e}"),
            })?;
            builder = builder.header(http::header::CONTENT_ENCODING, "gzip");
        }
        for (k, v) in headers {
            builder = builder.header(k, v);
        }
        let request =
            builder
                .body(Full::new(Bytes::from(body)))
                .map_err(|e| SendError::Permanent {
                    reason: format!("cannot build HTTP request: {e}"),
                })?;
        let exchange = async {
            let resp = client
                .request(request)
                .await
                .map_err(|e| SendError::Retryable {
                    reason: format!(
                        "HTTP export to {uri} failed: {}",
                        crate::https::error_chain(&e)
                    ),
                    retry_after: None,
                })?;
            let status = resp.status();
            let body = resp
                .into_body()
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            Ok::<_, SendError>((status, body))
        };
        match tokio::time::timeout(self.timeout, exchange).await {
            Err(_) => Err(SendError::Retryable {
                reason: format!(
                    "HTTP export to {uri} timed out after {}",
                    crate::repeat::human(self.timeout)
                ),
                retry_after: None,
            }),
            Ok(r) => {
                let (status, body) = r?;
                classify_http(status, None, &body)
            }
        }
    }
}

fn add_metadata<T>(request: &mut tonic::Request<T>, headers: &GrpcHeaders, timeout: Duration) {
    request.set_timeout(timeout);
    for (k, v) in headers {
        request.metadata_mut().insert(k.clone(), v.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signal_urls_sit_next_to_the_metrics_url() {
        assert_eq!(
            signal_url("http://h:4318/v1/metrics", "traces"),
            "http://h:4318/v1/traces"
        );
        assert_eq!(
            signal_url("https://h/otlp/v1/metrics", "logs"),
            "https://h/otlp/v1/logs"
        );
        assert_eq!(
            signal_url("http://h:4318/custom/", "logs"),
            "http://h:4318/custom/v1/logs"
        );
    }
}
