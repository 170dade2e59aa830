//! One log event per check ([`check_event`]): an OpenTelemetry-shaped [`LogEvent`] (time,
//! severity, body, `faultline.backup.*` attributes). [`emit`] writes it through `tracing`
//! under the target `faultline::backup::event` (source, kind, check and status as fields,
//! every attribute as a JSON object in `attributes`) and, inside `faultline run` with OTLP
//! on, queues it on the shared OTLP log pipeline ([`faultline_exporters::otlp::logs`]).

use faultline_exporters::model::AttrValue;
use faultline_exporters::otlp::{LogEvent, LogHandle, Severity};

use super::{CheckResult, Status};

/// The `event_name` of a check's log record.
pub const EVENT_NAME: &str = "faultline.backup.check";

/// The event for a check result.
pub fn check_event(r: &CheckResult) -> LogEvent {
    let mut a: Vec<(String, AttrValue)> = Vec::new();
    let mut put = |k: &str, v: AttrValue| a.push((k.to_owned(), v));
    put("faultline.backup.source", r.source.clone().into());
    put("faultline.backup.kind", r.kind.as_str().into());
    put("faultline.backup.check", r.check.as_str().into());
    put("faultline.backup.status", status_str(r.status).into());
    put("faultline.backup.check.duration", r.duration_seconds.into());
    if let Some(e) = &r.error {
        put("faultline.backup.error", e.clone().into());
    }
    if let Some(s) = &r.stderr {
        put("faultline.backup.stderr", super::tool::tail(s, 4000).into());
    }
    if let Some(i) = &r.inventory {
        put(
            "faultline.backup.count",
            AttrValue::Int(i64::try_from(i.count).unwrap_or(i64::MAX)),
        );
        if let Some(id) = &i.newest_id {
            put("faultline.backup.newest.id", id.clone().into());
        }
        if let Some(t) = &i.newest_time_utc {
            put("faultline.backup.newest.time", t.clone().into());
        }
        if let Some(age) = i.age_seconds {
            put("faultline.backup.age", age.into());
        }
        if let Some(s) = i.newest_size {
            put(
                "faultline.backup.size",
                AttrValue::Int(i64::try_from(s).unwrap_or(i64::MAX)),
            );
        }
        put("faultline.backup.size.anomaly", i.size_anomaly.into());
    }
    if let Some(i) = &r.integrity {
        put("faultline.backup.command", i.command.clone().into());
        if let Some(s) = &i.subset {
            put("faultline.backup.integrity.subset", s.clone().into());
        }
        if !i.findings.is_empty() {
            put(
                "faultline.backup.integrity.findings",
                AttrValue::StrArray(i.findings.clone()),
            );
        }
    }
    if let Some(d) = &r.restore {
        if let Some(c) = &d.command {
            put("faultline.backup.command", c.clone().into());
        }
        if let Some(id) = &d.backup_id {
            put("faultline.backup.restore.backup_id", id.clone().into());
        }
        if let Some(s) = d.restore_seconds {
            put("faultline.backup.restore.duration", s.into());
        }
        if let Some(s) = d.verify_seconds {
            put("faultline.backup.restore.verify.duration", s.into());
        }
        if let Some(n) = d.restored_files {
            put(
                "faultline.backup.restore.files",
                AttrValue::Int(i64::try_from(n).unwrap_or(i64::MAX)),
            );
        }
        if let Some(n) = d.restored_bytes {
            put(
                "faultline.backup.restore.bytes",
                AttrValue::Int(i64::try_from(n).unwrap_or(i64::MAX)),
            );
        }
        if let Some(rto) = d.rto_seconds {
            put("faultline.backup.rto", rto.into());
            put(
                "faultline.backup.restore.rto_exceeded",
                d.rto_exceeded.into(),
            );
        }
        put(
            "faultline.backup.restore.verified",
            AttrValue::StrArray(d.verified.clone()),
        );
        if !d.problems.is_empty() {
            put(
                "faultline.backup.restore.problems",
                AttrValue::StrArray(d.problems.clone()),
            );
        }
        put(
            "faultline.backup.restore.scratch_cleaned",
            d.scratch_cleaned.into(),
        );
    }
    let anomaly = r.inventory.as_ref().is_some_and(|i| i.size_anomaly);
    let severity = match r.status {
        Status::Unhealthy => Severity::Error,
        _ if anomaly => Severity::Warn,
        _ => Severity::Info,
    };
    let end = r.started + r.duration_seconds;
    LogEvent {
        time_unix_nanos: (end.max(0.0) * 1e9) as u64,
        severity,
        event_name: EVENT_NAME,
        body: format!("{} {}: {}", r.source, r.check.as_str(), r.summary),
        attributes: a,
    }
}

/// Emits `ev` (made by [`check_event`] from `r`) through `tracing` and, inside `faultline run`
/// with OTLP on, as an OTLP log record.
pub fn emit(ev: &LogEvent, r: &CheckResult, logs: Option<&LogHandle>) {
    let attributes = ev.attributes_json();
    let (source, kind, check, status) = (
        r.source.as_str(),
        r.kind.as_str(),
        r.check.as_str(),
        status_str(r.status),
    );
    match ev.severity {
        Severity::Info => {
            tracing::info!(target: "faultline::backup::event", source, kind, check, status, attributes, "{}", ev.body)
        }
        Severity::Warn => {
            tracing::warn!(target: "faultline::backup::event", source, kind, check, status, attributes, "{}", ev.body)
        }
        Severity::Error => {
            tracing::error!(target: "faultline::backup::event", source, kind, check, status, attributes, "{}", ev.body)
        }
    }
    if let Some(h) = logs {
        h.emit(ev);
    }
}

/// `healthy` / `unhealthy` / `skipped`.
pub fn status_str(s: Status) -> &'static str {
    match s {
        Status::Healthy => "healthy",
        Status::Unhealthy => "unhealthy",
        Status::Skipped => "skipped",
    }
}
