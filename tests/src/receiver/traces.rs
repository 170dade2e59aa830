//! The traces signal: `TraceService` and `/v1/traces`, each span flattened into a
//! [`SpanView`], and the receiver's trace queries.

use std::collections::BTreeMap;
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;

use super::OtlpReceiver;
use super::store::{Items, Received};
use super::values::{attribute_map, hex, resource_map};

impl Received<ExportTraceServiceRequest> {
    /// Every span in the request, flattened.
    pub fn spans(&self) -> Vec<SpanView> {
        flatten_spans(&self.request)
    }
}

/// One span with its resource, flattened.
#[derive(Clone, Debug, PartialEq)]
pub struct SpanView {
    /// Trace id, hex.
    pub trace_id: String,
    /// Span id, hex.
    pub span_id: String,
    /// Parent span id, hex (empty for a root span).
    pub parent_span_id: String,
    /// Span name.
    pub name: String,
    /// `start_time_unix_nano`.
    pub start_time_unix_nano: u64,
    /// `end_time_unix_nano`.
    pub end_time_unix_nano: u64,
    /// Span attributes, rendered by [`any_value_text`].
    pub attributes: BTreeMap<String, String>,
    /// Resource attributes.
    pub resource: BTreeMap<String, String>,
    /// Status code (0 unset, 1 ok, 2 error).
    pub status_code: i32,
    /// Span events: name and attributes.
    pub events: Vec<(String, BTreeMap<String, String>)>,
}

fn flatten_spans(request: &ExportTraceServiceRequest) -> Vec<SpanView> {
    let mut out = Vec::new();
    for rs in &request.resource_spans {
        let resource = resource_map(rs.resource.as_ref());
        for ss in &rs.scope_spans {
            for sp in &ss.spans {
                out.push(SpanView {
                    trace_id: hex(&sp.trace_id),
                    span_id: hex(&sp.span_id),
                    parent_span_id: hex(&sp.parent_span_id),
                    name: sp.name.clone(),
                    start_time_unix_nano: sp.start_time_unix_nano,
                    end_time_unix_nano: sp.end_time_unix_nano,
                    attributes: attribute_map(&sp.attributes),
                    resource: resource.clone(),
                    status_code: sp.status.as_ref().map_or(0, |s| s.code),
                    events: sp
                        .events
                        .iter()
                        .map(|e| (e.name.clone(), attribute_map(&e.attributes)))
                        .collect(),
                });
            }
        }
    }
    out
}

/// The spans of trace requests.
const SPANS: Items<ExportTraceServiceRequest, SpanView> = Items {
    name: "spans",
    of: Received::spans,
    key: |s| &s.name,
};

impl OtlpReceiver {
    /// Every trace request received so far, in arrival order.
    pub fn trace_requests(&self) -> Vec<Received<ExportTraceServiceRequest>> {
        self.shared.lock().traces.clone()
    }

    /// Every span in every accepted trace request so far, in arrival order.
    pub fn spans(&self) -> Vec<SpanView> {
        SPANS.accepted(&self.shared.lock().traces)
    }

    /// Wait until `pred` holds for the spans of the accepted trace requests so far.
    ///
    /// # Panics
    /// When `timeout` passes first, with a summary of what did arrive.
    pub async fn wait_for_spans<F>(&self, pred: F, timeout: Duration) -> Vec<SpanView>
    where
        F: FnMut(&[SpanView]) -> bool,
    {
        self.wait_for_items(&SPANS, pred, timeout).await
    }
}
