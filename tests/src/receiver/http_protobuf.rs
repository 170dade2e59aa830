//! The OTLP/HTTP transport with protobuf payloads: `POST /v1/metrics`, `/v1/traces` and
//! `/v1/logs`, `Content-Type: application/x-protobuf`, optional gzip; a failure is answered
//! with its HTTP status, a `google.rpc.Status` body and, when asked, `Retry-After`.

use std::io::Read;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;

use super::grpc::encode_rpc_status;
use super::store::{Shared, SignalRequest};
use super::tls::PeerCertificate;
use super::{Reply, Transport};

/// The HTTP/protobuf side: checks, decompresses, then decodes by path.
pub(super) async fn handle(
    shared: Arc<Shared>,
    req: Request<Incoming>,
) -> Response<tonic::body::Body> {
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
