//! The OTLP/gRPC transport: the generated tonic servers of the three signals, routed by
//! service name, gzip accepted, answering with the reply [`Shared::record`] chose; and the
//! `google.rpc.Status` / `RetryInfo` messages a failure carries (over HTTP too).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use hyper::body::Incoming;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::logs::v1::logs_service_server::{
    LogsService, LogsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use prost::Message;
use tonic::codec::CompressionEncoding;
use tonic::codegen::Service;
use tonic::server::NamedService;

use super::store::{Shared, SignalRequest};
use super::tls::PeerCertificate;
use super::{Reply, Transport};

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

/// The generated service traits, each answered by [`GrpcHandler::export`].
macro_rules! export_through_handler {
    ($($service:ident: $request:ty;)*) => {$(
        #[tonic::async_trait]
        impl $service for GrpcHandler {
            async fn export(
                &self,
                request: tonic::Request<$request>,
            ) -> Result<tonic::Response<<$request as SignalRequest>::Response>, tonic::Status> {
                GrpcHandler::export(self, request).await
            }
        }
    )*};
}

export_through_handler! {
    MetricsService: ExportMetricsServiceRequest;
    TraceService: ExportTraceServiceRequest;
    LogsService: ExportLogsServiceRequest;
}

/// What the gRPC router returns for any of the three generated servers.
type GrpcFuture =
    std::pin::Pin<Box<dyn Future<Output = Result<Response<tonic::body::Body>, Infallible>> + Send>>;

/// The handler of the gRPC listener: the three generated servers over `shared`.
pub(super) fn router(
    shared: &Arc<Shared>,
) -> impl Fn(Request<Incoming>) -> GrpcFuture + Clone + Send + Sync + 'static {
    let handler = GrpcHandler(Arc::clone(shared));
    let metrics =
        MetricsServiceServer::new(handler.clone()).accept_compressed(CompressionEncoding::Gzip);
    let traces =
        TraceServiceServer::new(handler.clone()).accept_compressed(CompressionEncoding::Gzip);
    let logs = LogsServiceServer::new(handler).accept_compressed(CompressionEncoding::Gzip);
    move |req: Request<Incoming>| -> GrpcFuture {
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
    }
}
