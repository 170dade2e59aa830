//! The agent's events as OTLP log records: one bounded queue and one forwarder task shared by
//! every producer inside `faultline run` (fault audit events, backup check events, drill
//! timelines, API request audits).
//!
//! Producers call [`LogHandle::emit`] (or [`LogHandle::emit_record`] for a record that is
//! already OTLP, such as a drill timeline entry carrying its trace id). That never waits on
//! the backend: it pushes onto a bounded in-memory queue and, when the bound is reached, drops
//! the *oldest* record and counts it ([`LogStats::dropped`]). The [`LogForwarder`] task takes
//! what has gathered (after a short linger, so a burst of events becomes one request), sends it
//! as one `ExportLogsServiceRequest` under the agent's resource through the
//! [`SignalSender`], and applies the metrics pipeline's rules: a retryable error keeps the
//! batch and waits the server's requested delay or the same [`Backoff`]; a permanent error
//! or a partial-success rejection drops (and counts) it. On shutdown it drains for the
//! grace period; what is left is dropped and counted (log events are not kept on disk: the
//! tracing log line every producer also writes is the record of last resort).
//!
//! Not here: what the events say (the producers build their [`LogEvent`]s).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::resource::v1::Resource as PbResource;
use serde::Serialize;
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::encode::{SCOPE_NAME, any_value, key_values};
use super::pipeline::{Backoff, RetrySettings};
use super::traces_logs::SignalSender;
use super::transport::{SendError, SendOk};
use crate::model::{AttrValue, Resource, now_unix_nanos};
use crate::repeat::{self, Failure, Repeated};

/// Severity, with the OpenTelemetry log data model's numbers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Severity {
    /// Normal operation.
    Info,
    /// Worth a look (an anomaly, a refusal).
    Warn,
    /// Something failed.
    Error,
}

impl Severity {
    /// `SeverityNumber` of the OpenTelemetry log data model.
    pub fn number(self) -> i32 {
        match self {
            Severity::Info => 9,
            Severity::Warn => 13,
            Severity::Error => 17,
        }
    }

    /// `SeverityText`.
    pub fn text(self) -> &'static str {
        match self {
            Severity::Info => "INFO",
            Severity::Warn => "WARN",
            Severity::Error => "ERROR",
        }
    }
}

/// One event, shaped like an OpenTelemetry log record.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LogEvent {
    /// When it happened, Unix nanoseconds.
    pub time_unix_nanos: u64,
    /// Severity.
    pub severity: Severity,
    /// The record's `event_name` (`faultline.fault.audit`, `faultline.backup.check`, …).
    pub event_name: &'static str,
    /// The one-line summary (the record's body).
    pub body: String,
    /// Details.
    pub attributes: Vec<(String, AttrValue)>,
}

impl LogEvent {
    /// The attributes as one JSON object (for the tracing line beside the record).
    pub fn attributes_json(&self) -> String {
        let map: serde_json::Map<String, serde_json::Value> = self
            .attributes
            .iter()
            .map(|(k, v)| {
                (
                    k.clone(),
                    serde_json::to_value(v).unwrap_or(serde_json::Value::Null),
                )
            })
            .collect();
        serde_json::Value::Object(map).to_string()
    }

    /// The OTLP record, observed at `observed_unix_nanos`.
    pub fn to_record(&self, observed_unix_nanos: u64) -> LogRecord {
        LogRecord {
            time_unix_nano: self.time_unix_nanos,
            observed_time_unix_nano: observed_unix_nanos,
            severity_number: self.severity.number(),
            severity_text: self.severity.text().to_owned(),
            event_name: self.event_name.to_owned(),
            body: Some(AnyValue {
                value: Some(any_value::Value::StringValue(self.body.clone())),
            }),
            attributes: self
                .attributes
                .iter()
                .map(|(k, v)| KeyValue {
                    key: k.clone(),
                    value: Some(any_value(v)),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }
    }
}

/// Counters about the log path, for the agent's self telemetry.
#[derive(Debug, Default)]
pub struct LogStats {
    /// Records the backend accepted.
    pub sent: AtomicU64,
    /// Records dropped: queue overflow, permanent errors, partial-success rejections, left
    /// over at shutdown, or lost by a lagging producer channel ([`LogHandle::count_dropped`]).
    pub dropped: AtomicU64,
    /// Export requests that failed (retryable or not).
    pub failures: AtomicU64,
}

#[derive(Debug)]
struct Shared {
    queue: Mutex<VecDeque<LogRecord>>,
    notify: Notify,
    max_records: usize,
    stats: Arc<LogStats>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, VecDeque<LogRecord>> {
        self.queue
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Producer side: cheap to clone, never blocks.
#[derive(Clone, Debug)]
pub struct LogHandle {
    shared: Arc<Shared>,
}

impl LogHandle {
    /// Queues `event`.
    pub fn emit(&self, event: &LogEvent) {
        self.emit_record(event.to_record(now_unix_nanos()));
    }

    /// Queues a ready OTLP record (for example one that carries a trace and span id).
    pub fn emit_record(&self, record: LogRecord) {
        let dropped = {
            let mut q = self.shared.lock();
            q.push_back(record);
            let over = q.len().saturating_sub(self.shared.max_records);
            q.drain(..over);
            over
        };
        if dropped > 0 {
            self.count_dropped(dropped as u64);
            warn!(
                dropped_records = dropped,
                max_records = self.shared.max_records,
                "OTLP log queue full: dropped the oldest log records"
            );
        }
        self.shared.notify.notify_one();
    }

    /// Counts records lost before they reached the queue (a lagging event channel).
    pub fn count_dropped(&self, n: u64) {
        self.shared.stats.dropped.fetch_add(n, Ordering::Relaxed);
    }

    /// Records waiting now.
    pub fn queued(&self) -> usize {
        self.shared.lock().len()
    }

    /// The shared counters.
    pub fn stats(&self) -> &Arc<LogStats> {
        &self.shared.stats
    }
}

/// How the forwarder batches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LogSettings {
    /// Queue bound (records); the oldest are dropped past it.
    pub max_records: usize,
    /// At most this many records per request.
    pub max_batch: usize,
    /// How long to wait for more records after the first one arrives.
    pub linger: Duration,
    /// Retry backoff.
    pub retry: RetrySettings,
}

impl Default for LogSettings {
    fn default() -> Self {
        Self {
            max_records: 4096,
            max_batch: 512,
            linger: Duration::from_millis(200),
            retry: RetrySettings::default(),
        }
    }
}

/// Consumer side: the task that sends.
#[derive(Debug)]
pub struct LogForwarder {
    shared: Arc<Shared>,
    /// The current outage, for logging it quietly ([`repeat`]).
    outage: Mutex<Repeated>,
    /// Records accepted since the outage began, for the recovery line.
    sent_in_outage: AtomicU64,
    sender: SignalSender,
    settings: LogSettings,
    resource: Vec<KeyValue>,
    scope: InstrumentationScope,
}

/// Creates the queue and its forwarder; records are sent under `resource`, with the
/// instrumentation scope `faultline` at `scope_version`.
pub fn log_pipeline(
    sender: SignalSender,
    settings: LogSettings,
    resource: &Resource,
    scope_version: &str,
) -> (LogHandle, LogForwarder) {
    let shared = Arc::new(Shared {
        queue: Mutex::new(VecDeque::new()),
        notify: Notify::new(),
        max_records: settings.max_records.max(1),
        stats: Arc::new(LogStats::default()),
    });
    (
        LogHandle {
            shared: shared.clone(),
        },
        LogForwarder {
            shared,
            outage: Mutex::new(Repeated::default()),
            sent_in_outage: AtomicU64::new(0),
            sender,
            settings: LogSettings {
                max_batch: settings.max_batch.max(1),
                ..settings
            },
            resource: key_values(&resource.attributes),
            scope: InstrumentationScope {
                name: SCOPE_NAME.to_owned(),
                version: scope_version.to_owned(),
                ..Default::default()
            },
        },
    )
}

enum Outcome {
    Done,
    Retry(Duration),
}

impl LogForwarder {
    /// Runs until `cancel` fires, then drains for at most `grace`.
    pub async fn run(self, cancel: CancellationToken, grace: Duration) {
        let mut backoff = Backoff::new(self.settings.retry);
        let mut batch: Vec<LogRecord> = Vec::new();
        loop {
            if batch.is_empty() {
                // `notify_one` keeps a permit when nobody waits: an emit between the check
                // and the wait is not missed.
                if self.shared.lock().is_empty() {
                    tokio::select! {
                        () = cancel.cancelled() => break,
                        () = self.shared.notify.notified() => {}
                    }
                }
                if self.shared.lock().len() < self.settings.max_batch {
                    tokio::select! {
                        () = cancel.cancelled() => break,
                        () = tokio::time::sleep(self.settings.linger) => {}
                    }
                }
                batch = self.take();
                if batch.is_empty() {
                    continue;
                }
            }
            let outcome = tokio::select! {
                () = cancel.cancelled() => break,
                o = self.attempt(&batch, &mut backoff) => o,
            };
            match outcome {
                Outcome::Done => batch.clear(),
                Outcome::Retry(delay) => {
                    debug!(delay = %repeat::human(delay), "waiting before retrying the log export");
                    tokio::select! {
                        () = cancel.cancelled() => break,
                        () = tokio::time::sleep(delay) => {}
                    }
                }
            }
        }
        self.drain(batch, grace).await;
    }

    fn take(&self) -> Vec<LogRecord> {
        let mut q = self.shared.lock();
        let n = q.len().min(self.settings.max_batch);
        q.drain(..n).collect()
    }

    fn request(&self, records: &[LogRecord]) -> ExportLogsServiceRequest {
        ExportLogsServiceRequest {
            resource_logs: vec![ResourceLogs {
                resource: Some(PbResource {
                    attributes: self.resource.clone(),
                    ..Default::default()
                }),
                scope_logs: vec![ScopeLogs {
                    scope: Some(self.scope.clone()),
                    log_records: records.to_vec(),
                    schema_url: String::new(),
                }],
                schema_url: String::new(),
            }],
        }
    }

    async fn attempt(&self, batch: &[LogRecord], backoff: &mut Backoff) -> Outcome {
        let stats = &self.shared.stats;
        let n = batch.len() as u64;
        match self.sender.send_logs(&self.request(batch)).await {
            Ok(SendOk::Accepted) => {
                stats.sent.fetch_add(n, Ordering::Relaxed);
                self.after_recovery(n);
                backoff.reset();
                Outcome::Done
            }
            Ok(SendOk::PartialSuccess { rejected, message }) => {
                let rejected = u64::try_from(rejected).unwrap_or(0).min(n);
                stats.sent.fetch_add(n - rejected, Ordering::Relaxed);
                stats.dropped.fetch_add(rejected, Ordering::Relaxed);
                warn!(rejected_records = rejected, backend_message = %message, "backend accepted the log export partially; not retrying");
                backoff.reset();
                Outcome::Done
            }
            Err(SendError::Permanent { reason }) => {
                stats.failures.fetch_add(1, Ordering::Relaxed);
                stats.dropped.fetch_add(n, Ordering::Relaxed);
                warn!(dropped_records = n, error = %reason, "backend refused the log export; dropping these records, not retrying");
                Outcome::Done
            }
            Err(SendError::Retryable {
                reason,
                retry_after,
            }) => {
                stats.failures.fetch_add(1, Ordering::Relaxed);
                let delay = retry_after.unwrap_or_else(|| backoff.next_delay());
                self.failed(&reason, n, delay);
                Outcome::Retry(delay)
            }
        }
    }

    fn lock_outage(&self) -> std::sync::MutexGuard<'_, Repeated> {
        self.outage
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A retryable failure: per attempt at debug, the first of an outage in full, then a
    /// summary a minute ([`repeat`]).
    fn failed(&self, reason: &str, records: u64, delay: Duration) {
        let waiting = self.shared.lock().len() as u64 + records;
        debug!(error = %reason, records, retry_in = %repeat::human(delay), "log export attempt failed");
        match self.lock_outage().failed() {
            Failure::First => warn!(
                "cannot export OTLP log records to {endpoint}: {reason}. They are kept in \
                 memory (at most {max} records) until the backend answers; a summary follows \
                 at most once a minute. To send elsewhere, set export.otlp.endpoint or \
                 OTEL_EXPORTER_OTLP_ENDPOINT.",
                endpoint = self.sender.endpoint(),
                max = self.shared.max_records,
            ),
            Failure::Summary { attempts, lasting } => warn!(
                "OTLP log export to {endpoint} still failing after {lasting}: {attempts} \
                 attempts, {waiting} records waiting in memory; last error: {reason}",
                endpoint = self.sender.endpoint(),
                lasting = repeat::human(lasting),
            ),
            Failure::Quiet => {}
        }
    }

    /// After `records` were accepted: one INFO line when that ended an outage and nothing
    /// waits any more.
    fn after_recovery(&self, records: u64) {
        let mut outage = self.lock_outage();
        if !outage.failing() {
            return;
        }
        let sent = self.sent_in_outage.fetch_add(records, Ordering::Relaxed) + records;
        if !self.shared.lock().is_empty() {
            return;
        }
        if let Some(r) = outage.succeeded() {
            self.sent_in_outage.store(0, Ordering::Relaxed);
            info!(
                "OTLP log export to {endpoint} recovered after {lasted} ({attempts} failed \
                 attempts); {sent} records sent",
                endpoint = self.sender.endpoint(),
                lasted = repeat::human(r.lasted),
                attempts = r.attempts,
            );
        }
    }

    /// Sends what is pending (the current batch first) until the queue is empty or `grace`
    /// has passed; what is left is counted as dropped.
    async fn drain(&self, mut batch: Vec<LogRecord>, grace: Duration) {
        let deadline = Instant::now() + grace;
        let mut backoff = Backoff::new(self.settings.retry);
        loop {
            if batch.is_empty() {
                batch = self.take();
                if batch.is_empty() {
                    return;
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, self.attempt(&batch, &mut backoff)).await {
                Ok(Outcome::Done) => batch.clear(),
                Ok(Outcome::Retry(delay)) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if delay >= left {
                        break;
                    }
                    tokio::time::sleep(delay).await;
                }
                Err(_) => break,
            }
        }
        let lost = batch.len() + self.shared.lock().drain(..).count();
        if lost > 0 {
            self.shared
                .stats
                .dropped
                .fetch_add(lost as u64, Ordering::Relaxed);
            warn!(
                dropped_records = lost,
                "shutdown grace period over: OTLP log records left unsent"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(n: i64) -> LogEvent {
        LogEvent {
            time_unix_nanos: 7,
            severity: Severity::Warn,
            event_name: "faultline.test",
            body: format!("event {n}"),
            attributes: vec![("n".to_owned(), AttrValue::Int(n))],
        }
    }

    fn handle(max_records: usize) -> LogHandle {
        let settings = crate::otlp::TransportSettings {
            url: "http://127.0.0.1:9/v1/metrics".into(),
            protocol: crate::otlp::Protocol::HttpProtobuf,
            headers: Vec::new(),
            compression: crate::otlp::Compression::None,
            timeout: Duration::from_secs(1),
            tls: crate::otlp::TlsMaterial::default(),
        };
        let sender = SignalSender::new(&settings).unwrap();
        log_pipeline(
            sender,
            LogSettings {
                max_records,
                ..LogSettings::default()
            },
            &Resource::default(),
            "0",
        )
        .0
    }

    #[test]
    fn an_event_becomes_a_record_with_its_time_severity_name_and_attributes() {
        let r = event(3).to_record(9);
        assert_eq!((r.time_unix_nano, r.observed_time_unix_nano), (7, 9));
        assert_eq!((r.severity_number, r.severity_text.as_str()), (13, "WARN"));
        assert_eq!(r.event_name, "faultline.test");
        assert_eq!(r.attributes[0].key, "n");
        assert_eq!(
            r.attributes[0].value.as_ref().unwrap().value,
            Some(any_value::Value::IntValue(3))
        );
        assert_eq!(event(3).attributes_json(), r#"{"n":3}"#);
    }

    #[tokio::test]
    async fn a_full_queue_drops_the_oldest_and_counts_them() {
        let h = handle(2);
        for n in 0..5 {
            h.emit(&event(n));
        }
        assert_eq!(h.queued(), 2);
        assert_eq!(h.stats().dropped.load(Ordering::Relaxed), 3);
        let left: Vec<String> = h
            .shared
            .lock()
            .iter()
            .map(|r| format!("{:?}", r.body.as_ref().unwrap().value))
            .collect();
        assert!(left[0].contains("event 3") && left[1].contains("event 4"));
    }
}
