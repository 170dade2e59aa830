//! OTLP metrics export: encoding ([`encode`] to the generated messages, [`wire`] straight to
//! bytes for the export path), transports ([`transport`]), the bounded
//! queue with its sender task ([`pipeline`]) and the collection thread's own blocking sender
//! for the steady state (`direct`), the on-disk queue that keeps unsent batches
//! across restarts ([`disk_queue`]); traces and logs ([`signals`]); the
//! shared queue and forwarder that turn the agent's events into OTLP log records ([`logs`]).

mod direct;
pub mod disk_queue;
pub mod encode;
pub mod logs;
pub mod pipeline;
#[cfg(test)]
mod test_server;
pub mod traces_logs;
pub mod transport;
pub mod wire;

pub use disk_queue::DiskQueue;
pub use encode::{encode_batch, point_count};
pub use logs::{LogEvent, LogForwarder, LogHandle, LogSettings, LogStats, Severity, log_pipeline};
pub use pipeline::{
    Backlog, ExportHandle, ExportStats, RetrySettings, Sender, pipeline, pipeline_on_disk,
};
pub use transport::{
    Compression, Protocol, SendError, SendOk, TlsMaterial, Transport, TransportSettings,
};
pub use wire::encode_batch_into;
