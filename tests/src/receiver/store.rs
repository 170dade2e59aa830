//! What the receiver keeps: every decoded request ([`Received`]) per signal, the behaviour
//! programmed per signal, and the refused TLS handshakes, behind one lock that both
//! transports and the test share. [`Shared::record`] is where a request's reply is chosen;
//! [`OtlpReceiver::wait_on`] is the notifying wait every `wait_for*` query is built on.
//!
//! Not here: decoding (`grpc`, `http_protobuf`) and the signals' flattened views.

use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use http::HeaderMap;
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsPartialSuccess, ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsPartialSuccess, ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use prost::Message;
use tokio::sync::Notify;

use super::tls::PeerCertificate;
use super::{Behaviour, OtlpReceiver, Reply, Signal, Transport};

/// One decoded export request, as it arrived: metrics by default,
/// `Received<ExportTraceServiceRequest>` and `Received<ExportLogsServiceRequest>` for the
/// other signals.
#[derive(Clone, Debug)]
pub struct Received<R = ExportMetricsServiceRequest> {
    /// Arrival (monotonic clock), for measuring retry delays.
    pub at: Instant,
    /// Arrival (wall clock).
    pub at_system: SystemTime,
    /// The transport it came in on.
    pub transport: Transport,
    /// Request headers (for gRPC: the metadata, which keeps `grpc-encoding`).
    pub headers: HeaderMap,
    /// The decoded payload.
    pub request: R,
    /// What the receiver answered.
    pub reply: Reply,
    /// The DER of the end-entity certificate the client presented in the TLS handshake
    /// (`None` on a plain receiver).
    pub client_cert: Option<Vec<u8>>,
}

impl<R> Received<R> {
    /// Whether the receiver accepted this request (fully, partially, or after a delay).
    pub fn accepted(&self) -> bool {
        !matches!(self.reply, Reply::Failed { .. })
    }

    /// A header's value as text, if present and printable.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// One signal's request type: where its requests are kept and how its answer looks.
pub(super) trait SignalRequest: Message + Default + Clone + Send + Sync + 'static {
    const SIGNAL: Signal;
    const PATH: &'static str;
    type Response: Message + Default + Send + 'static;
    /// The answer, with an optional partial-success report.
    fn response(partial: Option<(i64, String)>) -> Self::Response;
    fn store(inner: &mut Inner) -> &mut Vec<Received<Self>>;
}

/// [`SignalRequest`] for each signal, one line a signal: the request type, its [`Signal`],
/// where [`Inner`] keeps it, its HTTP path, and its response with the partial-success type
/// and that type's count field.
macro_rules! signal_requests {
    ($($request:ident: $signal:ident, $store:ident, $path:literal,
        $response:ident($partial:ident.$rejected:ident);)*) => {$(
        impl SignalRequest for $request {
            const SIGNAL: Signal = Signal::$signal;
            const PATH: &'static str = $path;
            type Response = $response;
            fn response(partial: Option<(i64, String)>) -> Self::Response {
                $response {
                    partial_success: partial.map(|(rejected, error_message)| $partial {
                        $rejected: rejected,
                        error_message,
                    }),
                }
            }
            fn store(inner: &mut Inner) -> &mut Vec<Received<Self>> {
                &mut inner.$store
            }
        }
    )*};
}

signal_requests! {
    ExportMetricsServiceRequest: Metrics, metrics, "/v1/metrics",
        ExportMetricsServiceResponse(ExportMetricsPartialSuccess.rejected_data_points);
    ExportTraceServiceRequest: Traces, traces, "/v1/traces",
        ExportTraceServiceResponse(ExportTracePartialSuccess.rejected_spans);
    ExportLogsServiceRequest: Logs, logs, "/v1/logs",
        ExportLogsServiceResponse(ExportLogsPartialSuccess.rejected_log_records);
}

/// How a signal's requests flatten into the items its tests read (spans, log records).
#[derive(Debug)]
pub(super) struct Items<R, T> {
    /// What the items are called in a timeout's summary.
    pub(super) name: &'static str,
    /// Every item of one request.
    pub(super) of: fn(&Received<R>) -> Vec<T>,
    /// What stands for one item in a timeout's summary.
    pub(super) key: fn(&T) -> &str,
}

impl<R, T> Items<R, T> {
    /// Every item of the accepted requests among `reqs`, in arrival order.
    pub(super) fn accepted(&self, reqs: &[Received<R>]) -> Vec<T> {
        reqs.iter()
            .filter(|r| r.accepted())
            .flat_map(self.of)
            .collect()
    }
}

/// State shared by both transports and the test.
#[derive(Debug)]
pub(super) struct Shared {
    inner: Mutex<Inner>,
    pub(super) changed: Notify,
}

#[derive(Debug)]
pub(super) struct Inner {
    /// Per signal, indexed by [`Signal::index`].
    pub(super) behaviour: [Behaviour; 3],
    pub(super) metrics: Vec<Received<ExportMetricsServiceRequest>>,
    pub(super) traces: Vec<Received<ExportTraceServiceRequest>>,
    pub(super) logs: Vec<Received<ExportLogsServiceRequest>>,
    /// Why each refused TLS handshake failed, in order.
    pub(super) refused_handshakes: Vec<String>,
}

impl Shared {
    /// Nothing recorded, every signal accepted.
    pub(super) fn new() -> Self {
        Shared {
            inner: Mutex::new(Inner {
                behaviour: [Behaviour::Accept, Behaviour::Accept, Behaviour::Accept],
                metrics: Vec::new(),
                traces: Vec::new(),
                logs: Vec::new(),
                refused_handshakes: Vec::new(),
            }),
            changed: Notify::new(),
        }
    }

    pub(super) fn lock(&self) -> MutexGuard<'_, Inner> {
        // A poisoned lock means a test thread panicked while holding it; the data is still
        // the best diagnostic there is, so keep going.
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Record one request and decide the reply (consuming one failure of a `FailWith`).
    /// Returns the reply and, for a partial success, its message.
    pub(super) fn record<R: SignalRequest>(
        &self,
        transport: Transport,
        headers: HeaderMap,
        client_cert: Option<&PeerCertificate>,
        request: R,
    ) -> (Reply, String) {
        let at = Instant::now();
        let at_system = SystemTime::now();
        let reply = {
            let mut inner = self.lock();
            let behaviour = &mut inner.behaviour[R::SIGNAL.index()];
            let mut message = String::new();
            let reply = match behaviour {
                Behaviour::Accept => Reply::Accepted,
                Behaviour::Delay(d) => Reply::Delayed(*d),
                Behaviour::PartialSuccess {
                    rejected,
                    message: m,
                } => {
                    message.clone_from(m);
                    Reply::PartialSuccess {
                        rejected: *rejected,
                    }
                }
                Behaviour::FailWith {
                    grpc,
                    http,
                    retry_after,
                    times,
                } => {
                    let reply = Reply::Failed {
                        grpc: *grpc,
                        http: *http,
                        retry_after: *retry_after,
                    };
                    *times = times.saturating_sub(1);
                    if *times == 0 {
                        *behaviour = Behaviour::Accept;
                    }
                    reply
                }
            };
            R::store(&mut inner).push(Received {
                at,
                at_system,
                transport,
                headers,
                request,
                reply: reply.clone(),
                client_cert: client_cert.map(|c| c.0.to_vec()),
            });
            (reply, message)
        };
        self.changed.notify_waiters();
        reply
    }
}

impl OtlpReceiver {
    /// Wait until `pred` holds for the requests of signal `R` received so far, re-checking on
    /// every new request (no fixed sleeps). Returns the requests it held for.
    ///
    /// # Panics
    /// When `timeout` passes first, listing what did arrive with `summary`.
    pub(super) async fn wait_on<R, F, S>(
        &self,
        mut pred: F,
        timeout: Duration,
        summary: S,
    ) -> Vec<Received<R>>
    where
        R: SignalRequest,
        F: FnMut(&[Received<R>]) -> bool,
        S: Fn(&Received<R>) -> String,
    {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            // Register interest before checking, so a request landing in between wakes us.
            let notified = self.shared.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let mut inner = self.shared.lock();
                let received = R::store(&mut inner);
                if pred(received) {
                    return received.clone();
                }
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                let lines: Vec<String> = R::store(&mut self.shared.lock())
                    .iter()
                    .map(|r| format!("{:?} {:?} {}", r.transport, r.reply, summary(r)))
                    .collect();
                panic!(
                    "receiver: {:?} condition not met within {timeout:?}; {} request(s) arrived:\n{}",
                    R::SIGNAL,
                    lines.len(),
                    lines.join("\n")
                );
            }
        }
    }

    /// Wait until `pred` holds for the `items` of the accepted requests of signal `R` so far.
    ///
    /// # Panics
    /// When `timeout` passes first, with each request's items by their key.
    pub(super) async fn wait_for_items<R, T, F>(
        &self,
        items: &Items<R, T>,
        mut pred: F,
        timeout: Duration,
    ) -> Vec<T>
    where
        R: SignalRequest,
        F: FnMut(&[T]) -> bool,
    {
        let got = self
            .wait_on(
                |reqs: &[Received<R>]| pred(&items.accepted(reqs)),
                timeout,
                |r| {
                    let of = (items.of)(r);
                    let keys: Vec<&str> = of.iter().map(items.key).collect();
                    format!("{}={keys:?}", items.name)
                },
            )
            .await;
        items.accepted(&got)
    }
}
