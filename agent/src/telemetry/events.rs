//! The agent's events as OTLP logs (and the drill traces) inside `faultline run`.
//!
//! One [`Signals`] per agent: a [`SignalSender`] on the metrics' endpoint settings and one
//! shared log pipeline ([`faultline_exporters::otlp::logs`]: bounded queue, drop-oldest
//! counted, batched, retried with the metrics' backoff, never blocking a producer). Its
//! producers:
//!
//! - fault audit events ([`fault_audit`]): every plan, refusal, apply, check, revert and
//!   recovery of the chaos engine, forwarded from [`faultline_chaos::Audit::subscribe`] by
//!   [`forward_audit`];
//! - API request audits ([`api_request`]), next to their `faultline::audit` tracing line;
//! - backup check events (`crate::backup::event`);
//! - drill timelines (`crate::drill::report::otlp::log_records`), which also carry the drill's
//!   trace id; the drill's trace itself goes through [`Signals::sender`].
//!
//! The one-shot commands (`faultline fault inject|list|revert`, `faultline drill run`) run
//! the same pipeline for their own life ([`OneShot`]): their engine's audit events are sent
//! while they run, and what is left before the process exits.
//!
//! Every producer also writes a tracing line, the record of last resort when no backend is
//! reachable. The event names and attributes are listed in `docs/METRICS.md`.

use anyhow::Context as _;
use faultline_chaos::{AuditAction, AuditEvent};
use faultline_exporters::model::{AttrValue, Resource};
use faultline_exporters::otlp::encode::key_values;
use faultline_exporters::otlp::traces_logs::SignalSender;
use faultline_exporters::otlp::{LogEvent, LogHandle, LogSettings, Severity, log_pipeline};
use opentelemetry_proto::tonic::common::v1::KeyValue;
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, warn};

use crate::telemetry::export::OtlpConfig;

/// `event_name` of a fault audit record.
pub const FAULT_AUDIT_EVENT: &str = "faultline.fault.audit";
/// `event_name` of an API request audit record.
pub const API_REQUEST_EVENT: &str = "faultline.api.request";

/// Traces and logs to the OTLP backend.
#[derive(Clone, Debug)]
pub struct Signals {
    /// For one-request signals (a drill's trace).
    pub sender: SignalSender,
    /// The shared log pipeline.
    pub logs: LogHandle,
    /// The agent's resource, as OTLP attributes (the same as the metrics').
    pub resource: Vec<KeyValue>,
}

/// Builds the sender and the log pipeline from the OTLP config and spawns the forwarder on
/// `tracker`; it stops on `stop` and then drains for `grace`. `None` when OTLP export is off.
pub fn start(
    otlp: &OtlpConfig,
    grace: std::time::Duration,
    resource: &Resource,
    stop: &CancellationToken,
    tracker: &TaskTracker,
) -> anyhow::Result<Option<Signals>> {
    if !otlp.enabled {
        return Ok(None);
    }
    let settings =
        crate::telemetry::export::resolve(otlp).context("OTLP settings for traces and logs")?;
    let sender = SignalSender::new(&settings.transport).context("OTLP trace/log sender")?;
    let (logs, forwarder) = log_pipeline(
        sender.clone(),
        LogSettings {
            retry: settings.retry,
            ..LogSettings::default()
        },
        resource,
        env!("CARGO_PKG_VERSION"),
    );
    tracker.spawn(
        forwarder
            .run(stop.clone(), grace)
            .instrument(tracing::info_span!("otlp_logs")),
    );
    Ok(Some(Signals {
        sender,
        logs,
        resource: key_values(&resource.attributes),
    }))
}

/// The OTLP logs and traces of a one-shot command (`faultline fault inject|list|revert`,
/// `faultline drill run`): the pipeline of [`start`] with its forwarder owned here, the
/// command's fault audits forwarded as they happen ([`OneShot::forward_audit`], so a fault
/// held for minutes is on the backend while it is held), and everything sent before the
/// command exits ([`OneShot::finish`]).
#[derive(Debug)]
pub struct OneShot {
    /// The command's signals (a drill run sends its report through them).
    pub signals: Signals,
    audits_done: CancellationToken,
    audits: TaskTracker,
    logs_stop: CancellationToken,
    logs: TaskTracker,
}

impl OneShot {
    /// The signals for `o`, when OTLP export is on and an endpoint is named (config or
    /// `OTEL_EXPORTER_OTLP_*`): a one-shot CLI run never talks to a default endpoint nobody
    /// asked for. `resource` says who reports; it is detected only when needed. `what` names
    /// the command in the warning when the settings are unusable. Needs a runtime (the
    /// forwarder is spawned).
    pub fn start(
        o: &OtlpConfig,
        grace: std::time::Duration,
        resource: impl FnOnce() -> Resource,
        what: &str,
    ) -> Option<Self> {
        let named = o.endpoint.is_some()
            || o.metrics_endpoint.is_some()
            || std::env::var_os("OTEL_EXPORTER_OTLP_ENDPOINT").is_some()
            || std::env::var_os("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT").is_some();
        if !o.enabled || !named {
            return None;
        }
        let res = resource();
        let (logs_stop, logs) = (CancellationToken::new(), TaskTracker::new());
        match start(o, grace, &res, &logs_stop, &logs) {
            Ok(Some(signals)) => Some(OneShot {
                signals,
                audits_done: CancellationToken::new(),
                audits: TaskTracker::new(),
                logs_stop,
                logs,
            }),
            Ok(None) => None,
            Err(e) => {
                warn!(
                    error = format!("{e:#}"),
                    "{what}: events are not exported over OTLP"
                );
                None
            }
        }
    }

    /// Forwards every event of `audit` from now on ([`forward_audit`]). Needs a runtime.
    pub fn forward_audit(&self, audit: &faultline_chaos::Audit) {
        forward_audit(
            audit,
            self.signals.logs.clone(),
            self.audits_done.clone(),
            &self.audits,
        );
    }

    /// Queues the audit events still in their channels, then stops the forwarder, which
    /// sends what is left within `shutdown_grace`.
    pub async fn finish(self) {
        self.audits_done.cancel();
        self.audits.close();
        self.audits.wait().await;
        self.logs_stop.cancel();
        self.logs.close();
        self.logs.wait().await;
    }
}

fn rfc3339_ms(unix_ms: u64) -> Option<String> {
    let ms = i64::try_from(unix_ms).ok()?;
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
}

/// A fault audit event as a log record: INFO when it went well, WARN for a refusal, ERROR
/// when an operation failed; timestamped when the event happened.
pub fn fault_audit(e: &AuditEvent) -> LogEvent {
    let action = e.action.as_str();
    let mut a: Vec<(String, AttrValue)> = vec![
        ("faultline.fault.id".into(), e.fault_id.to_string().into()),
        ("faultline.fault.kind".into(), e.kind.clone().into()),
        ("faultline.fault.action".into(), action.into()),
        (
            "faultline.fault.requester".into(),
            e.requester.to_string().into(),
        ),
        (
            "faultline.fault.targets".into(),
            AttrValue::StrArray(e.targets.clone()),
        ),
    ];
    if let Some(d) = (e.deadline_unix_ms > 0)
        .then(|| rfc3339_ms(e.deadline_unix_ms))
        .flatten()
    {
        a.push(("faultline.fault.deadline".into(), d.into()));
    }
    if let Some(s) = &e.selection {
        a.push(("faultline.fault.selector".into(), s.selector.clone().into()));
        a.push((
            "faultline.fault.seed".into(),
            // The OTLP int is signed: the seed's bits, as a string to stay exact.
            s.seed.to_string().into(),
        ));
        a.push((
            "faultline.fault.matched".into(),
            AttrValue::StrArray(s.matched.clone()),
        ));
        a.push((
            "faultline.fault.picked".into(),
            AttrValue::StrArray(s.picked.clone()),
        ));
    }
    let (severity, outcome, detail) = match &e.outcome {
        Ok(d) if e.action == AuditAction::Refuse => (Severity::Warn, "refused", d),
        Ok(d) => (Severity::Info, "ok", d),
        Err(err) if e.action == AuditAction::Refuse => (Severity::Warn, "refused", err),
        Err(err) => (Severity::Error, "error", err),
    };
    a.push(("faultline.fault.outcome".into(), outcome.into()));
    if !detail.is_empty() {
        let key = if e.outcome.is_ok() {
            "faultline.fault.detail"
        } else {
            "faultline.fault.error"
        };
        a.push((key.into(), detail.clone().into()));
    }
    let on = if e.targets.is_empty() {
        String::new()
    } else {
        format!(" on {}", e.targets.join(", "))
    };
    LogEvent {
        time_unix_nanos: e.at_unix_ms.saturating_mul(1_000_000),
        severity,
        event_name: FAULT_AUDIT_EVENT,
        body: format!(
            "{action} {} {} by {}{on}: {detail}",
            e.kind, e.fault_id, e.requester
        ),
        attributes: a,
    }
}

/// An API request audit as a log record (mutating requests and refusals): WARN for 4xx,
/// ERROR for 5xx.
pub fn api_request(token: &str, method: &str, path: &str, status: u16, detail: &str) -> LogEvent {
    let severity = match status {
        500.. => Severity::Error,
        400.. => Severity::Warn,
        _ => Severity::Info,
    };
    let mut a: Vec<(String, AttrValue)> = vec![
        ("faultline.api.token".into(), token.to_owned().into()),
        ("http.request.method".into(), method.to_owned().into()),
        ("url.path".into(), path.to_owned().into()),
        ("http.response.status_code".into(), i64::from(status).into()),
    ];
    if !detail.is_empty() {
        a.push(("faultline.api.detail".into(), detail.to_owned().into()));
    }
    LogEvent {
        time_unix_nanos: faultline_exporters::model::now_unix_nanos(),
        severity,
        event_name: API_REQUEST_EVENT,
        body: format!("{method} {path} by {token}: {status}"),
        attributes: a,
    }
}

/// Forwards every audit event of `audit` to `logs` until `done` fires (then what is already
/// in the channel, so the reverts of the engine's shutdown are sent too). A lagging channel
/// (more than its capacity behind) loses the oldest events; they are counted as dropped.
pub fn forward_audit(
    audit: &faultline_chaos::Audit,
    logs: LogHandle,
    done: CancellationToken,
    tracker: &TaskTracker,
) {
    let mut rx = audit.subscribe();
    tracker.spawn(
        async move {
            loop {
                let next = tokio::select! {
                    biased;
                    r = rx.recv() => r,
                    () = done.cancelled() => break,
                };
                match next {
                    Ok(e) => logs.emit(&fault_audit(&e)),
                    Err(RecvError::Lagged(n)) => {
                        logs.count_dropped(n);
                        warn!(
                            lost = n,
                            "audit events arrived faster than they were queued for OTLP; the oldest were dropped (their tracing lines were written)"
                        );
                    }
                    Err(RecvError::Closed) => return,
                }
            }
            while let Ok(e) = rx.try_recv() {
                logs.emit(&fault_audit(&e));
            }
        }
        .instrument(tracing::info_span!("audit_to_otlp")),
    );
}

#[cfg(test)]
mod tests {
    use faultline_chaos::{FaultId, Requester};

    use super::*;

    fn attr<'a>(e: &'a LogEvent, k: &str) -> Option<&'a AttrValue> {
        e.attributes
            .iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v)
    }

    #[test]
    fn a_fault_audit_event_carries_who_what_where_and_when() {
        let e = AuditEvent {
            at_unix_ms: 1_700_000_000_123,
            action: AuditAction::Apply,
            fault_id: FaultId::new("process-pause"),
            kind: "process-pause".into(),
            requester: Requester::Api {
                token: "ops".into(),
            },
            targets: vec!["pid 42 (sleep)".into()],
            deadline_unix_ms: 1_700_000_060_000,
            outcome: Ok("applied".into()),
            selection: None,
        };
        let ev = fault_audit(&e);
        assert!(attr(&ev, "faultline.fault.seed").is_none());
        let picked = fault_audit(&AuditEvent {
            selection: Some(faultline_chaos::Selection {
                selector: "namespace=shop label app=web count=1".into(),
                matched: vec![
                    "shop/web-0/app (0123)".into(),
                    "shop/web-1/app (4567)".into(),
                ],
                picked: vec!["shop/web-1/app (4567)".into()],
                seed: u64::MAX,
            }),
            ..e.clone()
        });
        assert_eq!(
            attr(&picked, "faultline.fault.seed"),
            Some(&AttrValue::from(u64::MAX.to_string()))
        );
        assert_eq!(
            attr(&picked, "faultline.fault.picked"),
            Some(&AttrValue::StrArray(vec!["shop/web-1/app (4567)".into()]))
        );
        assert_eq!(
            attr(&picked, "faultline.fault.selector"),
            Some(&AttrValue::from("namespace=shop label app=web count=1"))
        );
        assert_eq!(ev.time_unix_nanos, 1_700_000_000_123_000_000);
        assert_eq!(ev.severity, Severity::Info);
        assert_eq!(ev.event_name, "faultline.fault.audit");
        assert_eq!(
            attr(&ev, "faultline.fault.requester"),
            Some(&AttrValue::from("api:ops"))
        );
        assert_eq!(
            attr(&ev, "faultline.fault.targets"),
            Some(&AttrValue::StrArray(vec!["pid 42 (sleep)".into()]))
        );
        assert_eq!(
            attr(&ev, "faultline.fault.deadline"),
            Some(&AttrValue::from("2023-11-14T22:14:20.000Z"))
        );
        assert!(ev.body.starts_with("apply process-pause "), "{}", ev.body);

        let failed = fault_audit(&AuditEvent {
            action: AuditAction::Revert,
            outcome: Err("no such process".into()),
            ..e.clone()
        });
        assert_eq!(failed.severity, Severity::Error);
        assert_eq!(
            attr(&failed, "faultline.fault.error"),
            Some(&AttrValue::from("no such process"))
        );
        let refused = fault_audit(&AuditEvent {
            action: AuditAction::Refuse,
            outcome: Err("guard".into()),
            deadline_unix_ms: 0,
            ..e
        });
        assert_eq!(refused.severity, Severity::Warn);
        assert!(attr(&refused, "faultline.fault.deadline").is_none());
    }

    #[test]
    fn api_request_severity_follows_the_status() {
        assert_eq!(
            api_request("ops", "POST", "/v1/faults", 201, "").severity,
            Severity::Info
        );
        assert_eq!(
            api_request("-", "POST", "/v1/abort", 401, "no token").severity,
            Severity::Warn
        );
    }
}
