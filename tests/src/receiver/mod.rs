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
//!
//! Laid out by transport and by signal: `server` owns the listeners and the receiver's
//! lifecycle and `tls` its TLS variant; `grpc` and `http_protobuf` decode a request and send
//! the reply; `store` records it and picks that reply; `metrics`, `traces` and `logs` hold
//! each signal's flattened view and queries; `values` renders attribute values.

mod grpc;
mod http_protobuf;
mod logs;
mod metrics;
mod server;
mod store;
mod tls;
mod traces;
mod values;

#[cfg(test)]
mod tests;

use std::time::Duration;

use http::StatusCode;

pub use grpc::{RETRY_INFO_TYPE_URL, RetryInfo, RpcStatus, encode_rpc_status};
pub use logs::LogView;
pub use metrics::{Point, PointKind};
pub use server::OtlpReceiver;
pub use store::Received;
pub use traces::SpanView;
pub use values::{any_value_text, attribute_map, hex};

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
