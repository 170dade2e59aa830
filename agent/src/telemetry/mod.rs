//! The agent's own telemetry plumbing, below the features that produce it: who reports
//! ([`resource`]: the OpenTelemetry resource), where it goes ([`export`]: the `export:`
//! config section and the `OTEL_EXPORTER_OTLP_*` settings it resolves to), and the events
//! that travel as OTLP logs and traces ([`events`]: fault audits, API requests, the log
//! pipeline of `faultline run` and of one-shot commands).

pub mod events;
pub mod export;
pub mod resource;
