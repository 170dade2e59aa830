//! The receiver against real clients, so an agent test failure is never the harness's.
use std::io::Write;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_client::MetricsServiceClient;
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::{
    Gauge, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, metric, number_data_point,
};
use prost::Message;
use tonic::codec::CompressionEncoding;

use super::{Behaviour, OtlpReceiver, Reply, RetryInfo, RpcStatus, Signal, Transport};

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
