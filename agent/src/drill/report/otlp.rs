//! A drill report as OTLP: one trace per drill (a root span `drill <scenario>` and child
//! spans for each phase and each fault) and one log record per timeline event (probe rounds
//! are summarised, not sent one by one). Pure conversion; sending is
//! `faultline_exporters::otlp::traces_logs` (the trace) and the shared log pipeline
//! (`crate::telemetry::events`).
//!
//! Attribute names reuse the semantic conventions' test registry where they fit:
//! `test.suite.name` (scenario), `test.suite.run.status` (`success`, `failure`, `aborted`,
//! `timed_out`, `skipped`), and on each objective's span event `test.case.name` and
//! `test.case.result.status` (`pass` / `fail`). faultline's own are `faultline.drill.*`.

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, SeverityNumber};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::span::{Event as SpanEvent, SpanKind};
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};

use super::{DrillReport, EventKind, Verdict};

fn kv(k: &str, v: any_value::Value) -> KeyValue {
    KeyValue {
        key: k.to_owned(),
        value: Some(AnyValue { value: Some(v) }),
        ..Default::default()
    }
}

fn s(k: &str, v: impl Into<String>) -> KeyValue {
    kv(k, any_value::Value::StringValue(v.into()))
}

fn d(k: &str, v: f64) -> KeyValue {
    kv(k, any_value::Value::DoubleValue(v))
}

fn ns(t: f64) -> u64 {
    (t.max(0.0) * 1e9) as u64
}

/// Trace id: 16 bytes derived from the drill id and start time (stable for one report, so
/// a re-send is the same trace).
pub fn trace_id(r: &DrillReport) -> Vec<u8> {
    let mut h = ring::digest::Context::new(&ring::digest::SHA256);
    h.update(r.id.as_bytes());
    h.update(&r.started_at.to_le_bytes());
    h.finish().as_ref()[..16].to_vec()
}

fn span_id(r: &DrillReport, n: u64) -> Vec<u8> {
    let mut h = ring::digest::Context::new(&ring::digest::SHA256);
    h.update(r.id.as_bytes());
    h.update(&n.to_le_bytes());
    h.finish().as_ref()[..8].to_vec()
}

fn scope() -> InstrumentationScope {
    InstrumentationScope {
        name: faultline_exporters::otlp::encode::SCOPE_NAME.to_owned(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        ..Default::default()
    }
}

fn common(r: &DrillReport) -> Vec<KeyValue> {
    vec![
        s("test.suite.name", r.scenario.clone()),
        s("faultline.drill.id", r.id.clone()),
        s("faultline.drill.scenario", r.scenario.clone()),
    ]
}

/// The trace.
pub fn traces(r: &DrillReport, resource: &[KeyValue]) -> ExportTraceServiceRequest {
    let trace = trace_id(r);
    let root_id = span_id(r, 0);
    let ok = r.verdict == Verdict::Passed;
    let mut root_attrs = common(r);
    root_attrs.extend([
        s("test.suite.run.status", r.verdict.suite_status()),
        s("faultline.drill.verdict", r.verdict.as_str()),
        s("faultline.drill.requester", r.requester.clone()),
        d("faultline.drill.probe_interval", r.probe_interval_seconds),
    ]);
    if let Some(m) = &r.rto {
        root_attrs.push(d("faultline.drill.rto", m.seconds));
        root_attrs.push(d("faultline.drill.rto.precision", m.precision_seconds));
    }
    if let Some(m) = &r.rpo {
        root_attrs.push(d("faultline.drill.rpo", m.seconds));
        root_attrs.push(d("faultline.drill.rpo.precision", m.precision_seconds));
        root_attrs.push(kv(
            "faultline.drill.rpo.lost_markers",
            any_value::Value::IntValue(i64::try_from(m.lost).unwrap_or(i64::MAX)),
        ));
    }
    if let Some(b) = r.backup_rpo_seconds {
        root_attrs.push(d("faultline.drill.rpo.backup", b));
    }
    let events: Vec<SpanEvent> = r
        .objectives
        .iter()
        .map(|o| {
            let mut attributes = vec![
                s("test.case.name", o.name.clone()),
                s(
                    "test.case.result.status",
                    if o.met { "pass" } else { "fail" },
                ),
                d("faultline.drill.objective.target", o.target_seconds),
            ];
            if let Some(m) = o.measured_seconds {
                attributes.push(d("faultline.drill.objective.measured", m));
            }
            if let Some(p) = o.precision_seconds {
                attributes.push(d("faultline.drill.objective.precision", p));
            }
            root_attrs.push(d(
                &format!("faultline.drill.objective.{}", o.name),
                o.target_seconds,
            ));
            SpanEvent {
                time_unix_nano: ns(r.finished_at),
                name: format!("objective {}", o.name),
                attributes,
                dropped_attributes_count: 0,
            }
        })
        .collect();
    let status = |ok: bool, msg: &str| {
        Some(Status {
            message: if ok { String::new() } else { msg.to_owned() },
            code: if ok {
                StatusCode::Ok
            } else {
                StatusCode::Error
            } as i32,
        })
    };
    let mut spans = vec![Span {
        trace_id: trace.clone(),
        span_id: root_id.clone(),
        name: format!("drill {}", r.scenario),
        kind: SpanKind::Internal as i32,
        start_time_unix_nano: ns(r.started_at),
        end_time_unix_nano: ns(r.finished_at),
        attributes: root_attrs,
        events,
        status: status(ok, &r.reason),
        ..Default::default()
    }];
    let mut n = 1u64;
    for p in &r.phases {
        let mut attributes = common(r);
        attributes.push(s("faultline.drill.phase", p.name.clone()));
        if !p.detail.is_empty() {
            attributes.push(s("faultline.drill.detail", p.detail.clone()));
        }
        spans.push(Span {
            trace_id: trace.clone(),
            span_id: span_id(r, n),
            parent_span_id: root_id.clone(),
            name: p.name.clone(),
            kind: SpanKind::Internal as i32,
            start_time_unix_nano: ns(p.start),
            end_time_unix_nano: ns(p.end),
            attributes,
            status: status(p.ok, &p.detail),
            ..Default::default()
        });
        n += 1;
    }
    for f in &r.faults {
        let mut attributes = common(r);
        attributes.extend([
            s("faultline.fault.id", f.id.clone()),
            s("faultline.fault.kind", f.kind.clone()),
            s("faultline.fault.targets", f.targets.join(", ")),
        ]);
        spans.push(Span {
            trace_id: trace.clone(),
            span_id: span_id(r, n),
            parent_span_id: root_id.clone(),
            name: format!("fault {}", f.kind),
            kind: SpanKind::Internal as i32,
            start_time_unix_nano: ns(f.applied_at),
            end_time_unix_nano: ns(f.reverted_at.unwrap_or(r.finished_at)),
            attributes,
            status: status(
                f.revert_error.is_none(),
                f.revert_error.as_deref().unwrap_or(""),
            ),
            ..Default::default()
        });
        n += 1;
    }
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: resource.to_vec(),
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                scope: Some(scope()),
                spans,
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        }],
    }
}

/// The timeline as log records (probe events left out: the trace and the report carry the
/// rounds; failing guard rails are kept), each with the drill's trace id and its root span
/// id. They are queued on the agent's shared log pipeline, which adds the resource.
pub fn log_records(r: &DrillReport) -> Vec<LogRecord> {
    let trace = trace_id(r);
    let root = span_id(r, 0);
    r.timeline
        .iter()
        .filter(|e| e.kind != EventKind::Probe)
        .map(|e| {
            let failed = e.ok == Some(false);
            let (sev, text) = if failed {
                (SeverityNumber::Warn, "WARN")
            } else {
                (SeverityNumber::Info, "INFO")
            };
            let kind = serde_json::to_value(e.kind)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default();
            let mut attributes = common(r);
            attributes.push(s("faultline.drill.event", kind.clone()));
            attributes.push(s("faultline.drill.event.name", e.name.clone()));
            if let Some(ok) = e.ok {
                attributes.push(kv(
                    "faultline.drill.event.ok",
                    any_value::Value::BoolValue(ok),
                ));
            }
            if let Some(l) = e.latency {
                attributes.push(d("faultline.drill.event.latency", l));
            }
            if let Some(q) = e.seq {
                attributes.push(kv(
                    "faultline.drill.marker.seq",
                    any_value::Value::IntValue(i64::try_from(q).unwrap_or(i64::MAX)),
                ));
            }
            LogRecord {
                time_unix_nano: ns(e.at),
                observed_time_unix_nano: ns(e.at),
                severity_number: sev as i32,
                severity_text: text.into(),
                event_name: format!("faultline.drill.{kind}"),
                body: Some(AnyValue {
                    value: Some(any_value::Value::StringValue(format!(
                        "{kind} {}{}",
                        e.name,
                        if e.detail.is_empty() {
                            String::new()
                        } else {
                            format!(": {}", e.detail)
                        }
                    ))),
                }),
                attributes,
                trace_id: trace.clone(),
                span_id: root.clone(),
                ..Default::default()
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::super::fixture;
    use super::*;

    fn attr<'a>(kvs: &'a [KeyValue], k: &str) -> Option<&'a any_value::Value> {
        kvs.iter()
            .find(|a| a.key == k)
            .and_then(|a| a.value.as_ref())
            .and_then(|v| v.value.as_ref())
    }

    #[test]
    fn one_trace_with_a_root_and_children() {
        let r = fixture::report();
        let req = traces(&r, &[s("service.name", "faultline")]);
        let spans = &req.resource_spans[0].scope_spans[0].spans;
        // root + 4 phases + 1 fault
        assert_eq!(spans.len(), 6);
        let root = &spans[0];
        assert!(root.parent_span_id.is_empty());
        assert!(spans[1..].iter().all(|s| s.parent_span_id == root.span_id));
        assert!(
            spans
                .iter()
                .all(|s| s.trace_id == root.trace_id && s.trace_id.len() == 16)
        );
        assert_eq!(
            attr(&root.attributes, "test.suite.run.status"),
            Some(&any_value::Value::StringValue("failure".into()))
        );
        assert_eq!(
            attr(&root.attributes, "faultline.drill.rto"),
            Some(&any_value::Value::DoubleValue(1.05))
        );
        let rpo = root
            .events
            .iter()
            .find(|e| e.name == "objective rpo")
            .unwrap();
        assert_eq!(
            attr(&rpo.attributes, "test.case.result.status"),
            Some(&any_value::Value::StringValue("fail".into()))
        );
        let recs = log_records(&r);
        assert_eq!(recs.len(), 1);
        assert_eq!(recs[0].trace_id, root.trace_id);
    }
}
