//! The logs signal: `LogsService` and `/v1/logs`, each log record flattened into a
//! [`LogView`], and the receiver's log queries.

use std::collections::BTreeMap;
use std::time::Duration;

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;

use super::OtlpReceiver;
use super::store::{Items, Received};
use super::values::{any_value_text, attribute_map, hex, resource_map};

impl Received<ExportLogsServiceRequest> {
    /// Every log record in the request, flattened.
    pub fn log_records(&self) -> Vec<LogView> {
        flatten_logs(&self.request)
    }
}

/// One log record with its resource and scope, flattened.
#[derive(Clone, Debug, PartialEq)]
pub struct LogView {
    /// `time_unix_nano`.
    pub time_unix_nano: u64,
    /// `observed_time_unix_nano`.
    pub observed_time_unix_nano: u64,
    /// `severity_number`.
    pub severity_number: i32,
    /// `severity_text`.
    pub severity_text: String,
    /// `event_name`.
    pub event_name: String,
    /// The body, rendered by [`any_value_text`].
    pub body: String,
    /// Record attributes, rendered by [`any_value_text`].
    pub attributes: BTreeMap<String, String>,
    /// Resource attributes.
    pub resource: BTreeMap<String, String>,
    /// The instrumentation scope's name.
    pub scope: String,
    /// Trace id, hex (empty when the record is not tied to a trace).
    pub trace_id: String,
    /// Span id, hex.
    pub span_id: String,
}

impl LogView {
    /// An attribute's text, or `""`.
    pub fn attr(&self, key: &str) -> &str {
        self.attributes.get(key).map_or("", String::as_str)
    }
}

fn flatten_logs(request: &ExportLogsServiceRequest) -> Vec<LogView> {
    let mut out = Vec::new();
    for rl in &request.resource_logs {
        let resource = resource_map(rl.resource.as_ref());
        for sl in &rl.scope_logs {
            let scope = sl
                .scope
                .as_ref()
                .map(|s| s.name.clone())
                .unwrap_or_default();
            for r in &sl.log_records {
                out.push(LogView {
                    time_unix_nano: r.time_unix_nano,
                    observed_time_unix_nano: r.observed_time_unix_nano,
                    severity_number: r.severity_number,
                    severity_text: r.severity_text.clone(),
                    event_name: r.event_name.clone(),
                    body: any_value_text(r.body.as_ref()),
                    attributes: attribute_map(&r.attributes),
                    resource: resource.clone(),
                    scope: scope.clone(),
                    trace_id: hex(&r.trace_id),
                    span_id: hex(&r.span_id),
                });
            }
        }
    }
    out
}

/// The log records of logs requests.
const RECORDS: Items<ExportLogsServiceRequest, LogView> = Items {
    name: "records",
    of: Received::log_records,
    key: |l| &l.body,
};

impl OtlpReceiver {
    /// Every logs request received so far, in arrival order.
    pub fn log_requests(&self) -> Vec<Received<ExportLogsServiceRequest>> {
        self.shared.lock().logs.clone()
    }

    /// Every log record in every accepted logs request so far, in arrival order.
    pub fn log_records(&self) -> Vec<LogView> {
        RECORDS.accepted(&self.shared.lock().logs)
    }

    /// Wait until `pred` holds for the log records of the accepted logs requests so far.
    ///
    /// # Panics
    /// When `timeout` passes first, with a summary of what did arrive.
    pub async fn wait_for_logs<F>(&self, pred: F, timeout: Duration) -> Vec<LogView>
    where
        F: FnMut(&[LogView]) -> bool,
    {
        self.wait_for_items(&RECORDS, pred, timeout).await
    }
}
