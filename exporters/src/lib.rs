//! faultline's telemetry model and its outputs.
//!
//! - [`model`]: the plain-data model a collection cycle fills ([`model::Batch`]).
//! - [`otlp`]: encoding to the official OTLP protobufs and sending them over gRPC or
//!   HTTP/protobuf, with the retry rules of the OpenTelemetry exporter specification and a
//!   bounded queue that keeps the newest data while the backend is away.
//! - [`prometheus`]: the text exposition format, named per the OpenTelemetry Prometheus
//!   compatibility specification.
//!
//! - [`https`]: the one builder of outbound HTTP(S) clients (every crate's).
//! - [`repeat`]: logging a failure that repeats (once, a summary a minute, one line when it
//!   ends) and durations rounded for people; every crate's.
//!
//! Not here: collection (the agent's collectors) and scheduling (the agent's runtime).
#![forbid(unsafe_code)]

pub mod https;
pub mod model;
pub mod otlp;
pub mod prometheus;
pub mod repeat;
