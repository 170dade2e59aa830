//! The bounded send queue and the task that drains it.
//!
//! Collection never waits for the backend: [`ExportHandle::submit`] only queues. When a bound
//! is reached the *oldest* batch is dropped (its points are counted), so an outage keeps the
//! newest data up to the bound. One sender task sends the oldest batch, keeps it on retryable
//! errors (waiting the server's requested delay, or an exponential backoff with jitter), drops
//! it on permanent errors, and catches up in order once the backend answers again. On shutdown
//! it drains what it can within a grace period.
//!
//! Two queues share that logic:
//! - in memory ([`pipeline`]): at most `max_batches` batches; what is unsent at exit is lost.
//! - on disk ([`pipeline_on_disk`], over a [`DiskQueue`]): every batch is written *before* it is
//!   first sent (and synced once it has to wait: see [`super::disk_queue`]) and removed only
//!   once the backend accepted it (or refused it for good); the bound is in bytes; what is
//!   unsent at exit — SIGTERM past the grace period, SIGKILL, a crash — is sent first, in order
//!   and with its original timestamps, by the next start. Only the few newest batches stay in
//!   memory; older ones are read back when their turn comes, so a long outage costs disk, not
//!   memory.
//!
//! A batch is encoded once, when it is submitted: the queue holds, writes and sends those bytes
//! (the in-memory queue too, so an outage costs ~40 KB per batch, not its decoded form).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use rand::RngExt;
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use bytes::Bytes;
use prost::Message;

use super::direct::{Answer, DirectHttp};
use super::disk_queue::{DiskQueue, HEADER_LEN, RecordRef, Stored};
use super::encode::point_count;
use super::transport::{SendError, SendOk, Transport};
use crate::repeat::{self, Failure, Repeated};

/// Backoff settings (OTLP exporter spec: exponential with jitter).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetrySettings {
    /// First delay.
    pub initial_backoff: Duration,
    /// Largest delay.
    pub max_backoff: Duration,
}

impl Default for RetrySettings {
    fn default() -> Self {
        Self {
            initial_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(30),
        }
    }
}

/// Exponential backoff with "equal jitter": half the nominal delay plus a random half.
#[derive(Debug)]
pub struct Backoff {
    settings: RetrySettings,
    attempt: u32,
}

impl Backoff {
    /// A fresh backoff.
    pub fn new(settings: RetrySettings) -> Self {
        Self {
            settings,
            attempt: 0,
        }
    }
    /// The next delay; grows ×2 per call up to `max_backoff`.
    pub fn next_delay(&mut self) -> Duration {
        let factor = 2u32.saturating_pow(self.attempt.min(16));
        self.attempt = self.attempt.saturating_add(1);
        let nominal = self
            .settings
            .initial_backoff
            .saturating_mul(factor)
            .min(self.settings.max_backoff);
        let half = nominal / 2;
        let jitter_ns =
            rand::rng().random_range(0..=u64::try_from(half.as_nanos()).unwrap_or(u64::MAX));
        half + Duration::from_nanos(jitter_ns)
    }
    /// Back to the initial delay (after a success).
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

/// Counters the agent exports about its own export path.
#[derive(Debug, Default)]
pub struct ExportStats {
    /// Requests attempted.
    pub attempts: AtomicU64,
    /// Requests that failed (retryable or not).
    pub failures: AtomicU64,
    /// Points accepted by the backend.
    pub sent_points: AtomicU64,
    /// Points dropped: queue overflow, permanent errors, rejected in partial success, or
    /// left in memory when the shutdown grace period ran out (batches in the disk queue are
    /// kept for the next start instead).
    pub dropped_points: AtomicU64,
    /// Batches waiting in the queue now.
    pub queued_batches: AtomicU64,
    /// Where batches are sent (the OTLP endpoint URL), for logs and `faultline status`.
    pub endpoint: String,
    /// When the backend last accepted a batch, Unix nanoseconds (0: not yet).
    pub last_success_unix_nanos: AtomicU64,
    /// Failed attempts in a row since the last accepted batch (0: healthy).
    pub failing_attempts: AtomicU64,
    /// Why the last attempt failed, while the export fails.
    pub last_error: Mutex<Option<String>>,
}

impl ExportStats {
    /// Counters for an export to `endpoint`.
    pub fn new(endpoint: impl Into<String>) -> Self {
        Self {
            endpoint: endpoint.into(),
            ..Self::default()
        }
    }

    /// Why the last attempt failed, while the export fails.
    pub fn last_error(&self) -> Option<String> {
        self.last_error
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    fn set_last_error(&self, e: Option<String>) {
        *self
            .last_error
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = e;
    }
}

/// What waits in the queue: for `faultline status` and the outage summaries.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Backlog {
    /// Batches waiting.
    pub batches: u64,
    /// Their size (on disk when the queue is persistent: record headers included).
    pub bytes: u64,
    /// When the oldest was collected, Unix nanoseconds (unknown for batches a previous run
    /// left on disk: then the oldest this run queued).
    pub oldest_unix_nanos: Option<u64>,
    /// The disk queue's directory; `None` when the queue is in memory.
    pub dir: Option<std::path::PathBuf>,
}

impl Backlog {
    /// Where the queue is, for people: `the queue on disk at DIR` or `memory`.
    pub fn place(&self) -> String {
        match &self.dir {
            Some(d) => format!("the queue on disk at {}", d.display()),
            None => "memory (lost if the agent stops)".to_owned(),
        }
    }

    /// Age of the oldest batch at `now_unix_nanos`.
    pub fn oldest_age(&self, now_unix_nanos: u64) -> Option<Duration> {
        self.oldest_unix_nanos
            .map(|t| Duration::from_nanos(now_unix_nanos.saturating_sub(t)))
    }
}

/// Stored batches also kept in memory (the newest ones): in the steady state the batch just
/// written is sent from memory without reading it back; during an outage only these few stay
/// in memory, the rest wait on disk.
const CACHED_BATCHES: usize = 2;

/// The oldest batch, as the sender gets it.
#[derive(Debug)]
struct Front {
    id: u64,
    points: usize,
    payload: Bytes,
    /// What the backend answered to the collection thread's direct attempt, to be acted on
    /// instead of sending again.
    answered: Option<Result<SendOk, SendError>>,
}

/// Where a batch stands with the collection thread's direct send ([`super::direct`]).
#[derive(Debug, Default)]
enum Direct {
    /// Not being sent directly: the sender's to send.
    #[default]
    Idle,
    /// The collection thread is sending it: the sender leaves it alone.
    InFlight,
    /// The backend answered the direct attempt with something other than "accepted": the
    /// sender acts on this answer (logs, backoff, drop) without sending again.
    Answered(Result<SendOk, SendError>),
}

/// One queued batch.
#[derive(Debug)]
struct Entry {
    /// Identity within this process (the sender removes "its" entry only if still the front).
    id: u64,
    points: usize,
    /// When its points were collected, Unix nanoseconds (unknown for stored batches read
    /// back at start).
    time_unix_nano: Option<u64>,
    /// The encoded request (what is sent and what the disk holds), while kept in memory.
    payload: Option<Bytes>,
    /// Where it is stored, when it was written to the disk queue.
    disk: Option<RecordRef>,
    direct: Direct,
}

#[derive(Debug)]
struct State {
    entries: VecDeque<Entry>,
    disk: Option<DiskQueue>,
    next_id: u64,
    /// The last disk write failed (logged once until one succeeds again).
    disk_failing: bool,
    /// The last `fdatasync` of the disk queue failed (logged once until one succeeds again).
    sync_failing: bool,
}

/// Syncs the disk queue; a failure leaves the records written (they survive the agent, not a
/// power loss) and is logged once until a sync succeeds again.
fn sync_logged(disk: &mut DiskQueue, failing: &mut bool) {
    match disk.sync() {
        Ok(()) => {
            if std::mem::take(failing) {
                info!(dir = %disk.dir().display(), "disk queue syncs again");
            }
        }
        Err(e) => {
            if !std::mem::replace(failing, true) {
                warn!(dir = %disk.dir().display(), error = %e, "cannot sync the disk queue; queued batches survive a restart of the agent but not a power loss");
            }
        }
    }
}

/// The cursor of the disk queue: the oldest queued record's sequence number, or the next one
/// to be written when none is queued.
fn disk_cursor(entries: &VecDeque<Entry>, disk: &DiskQueue) -> u64 {
    entries
        .iter()
        .find_map(|e| e.disk.map(|d| d.seq))
        .unwrap_or_else(|| disk.next_seq())
}

/// The timestamp of a request's first data point (one cycle shares one), for logs.
fn first_timestamp(req: &ExportMetricsServiceRequest) -> u64 {
    use opentelemetry_proto::tonic::metrics::v1::metric::Data;
    req.resource_metrics
        .iter()
        .flat_map(|rm| &rm.scope_metrics)
        .flat_map(|sm| &sm.metrics)
        .find_map(|m| match &m.data {
            Some(Data::Gauge(g)) => g.data_points.first().map(|p| p.time_unix_nano),
            Some(Data::Sum(s)) => s.data_points.first().map(|p| p.time_unix_nano),
            _ => None,
        })
        .unwrap_or(0)
}

/// What a bound dropped, for one log line and the counter.
#[derive(Default)]
struct Dropped {
    batches: usize,
    points: usize,
}

impl State {
    /// Writes `payload` (an encoded request whose points are stamped `time_unix_nano`) to
    /// the disk queue (dropping the oldest stored batches until it fits). `None` when there is
    /// no disk queue or the write failed (the batch then stays in memory).
    fn persist(
        &mut self,
        payload: &[u8],
        points: usize,
        time_unix_nano: u64,
        dropped: &mut Dropped,
    ) -> Option<RecordRef> {
        let State {
            entries,
            disk,
            disk_failing,
            sync_failing,
            ..
        } = self;
        let disk = disk.as_mut()?;
        // A cursor move the sender deferred is written first (this runs on a blocking thread),
        // so acknowledged records no longer count against the bound below.
        disk.consume_until(disk_cursor(entries, disk), false);
        let len = (HEADER_LEN + payload.len()) as u64;
        if len <= disk.max_bytes() {
            while !disk.fits(len) {
                let Some(pos) = entries.iter().position(|e| e.disk.is_some()) else {
                    break;
                };
                if let Some(old) = entries.remove(pos) {
                    dropped.batches += 1;
                    dropped.points += old.points;
                }
                disk.consume_until(disk_cursor(entries, disk), true);
            }
        }
        let appended = disk.append(payload, u32::try_from(points).unwrap_or(u32::MAX));
        // Behind a backlog the batch will wait: it is made durable now. On the happy path it is
        // sent within milliseconds, unsynced (see the disk queue's docs).
        if appended.is_ok() && !entries.is_empty() {
            sync_logged(disk, sync_failing);
        }
        match appended {
            Ok(r) => {
                if std::mem::take(disk_failing) {
                    info!(dir = %disk.dir().display(), "disk queue writable again");
                }
                debug!(
                    seq = r.seq,
                    time_unix_nano,
                    bytes = r.len,
                    "batch written to the disk queue"
                );
                Some(r)
            }
            Err(e) => {
                if !std::mem::replace(disk_failing, true) {
                    warn!(error = %e, "cannot write the batch to the disk queue; keeping it in memory only (lost if the agent stops before it is sent)");
                }
                None
            }
        }
    }

    /// Applies the in-memory bounds: at most `max_batches` batches held only in memory
    /// (oldest dropped), and at most [`CACHED_BATCHES`] in-memory copies of stored batches.
    fn trim_memory(&mut self, max_batches: usize, dropped: &mut Dropped) {
        loop {
            let memory_only = self.entries.iter().filter(|e| e.disk.is_none()).count();
            if memory_only <= max_batches {
                break;
            }
            if let Some(pos) = self.entries.iter().position(|e| e.disk.is_none())
                && let Some(old) = self.entries.remove(pos)
            {
                dropped.batches += 1;
                dropped.points += old.points;
            }
        }
        let mut cached = 0;
        for e in self.entries.iter_mut().rev() {
            if e.disk.is_some() && e.payload.is_some() {
                cached += 1;
                if cached > CACHED_BATCHES {
                    e.payload = None;
                }
            }
        }
    }

    /// The oldest batch (read back from disk if needed). A stored batch that can no longer be
    /// read, or does not decode as a request, is dropped with a warning and the next one is
    /// tried.
    fn front(&mut self, stats: &ExportStats) -> Option<Front> {
        loop {
            let e = self.entries.front_mut()?;
            if matches!(e.direct, Direct::InFlight) {
                return None;
            }
            let answered = match std::mem::take(&mut e.direct) {
                Direct::Answered(a) => Some(a),
                Direct::Idle | Direct::InFlight => None,
            };
            let (id, points) = (e.id, e.points);
            if let Some(payload) = &e.payload {
                return Some(Front {
                    id,
                    points,
                    payload: payload.clone(),
                    answered,
                });
            }
            let read = match (e.disk, self.disk.as_ref()) {
                (Some(r), Some(disk)) => disk.read(&r).map_err(|e| e.to_string()).and_then(|b| {
                    // Checked once on the way back: what is sent must be a request.
                    ExportMetricsServiceRequest::decode(b.as_slice())
                        .map(|_| b)
                        .map_err(|e| format!("stored batch {} does not decode: {e}", r.seq))
                }),
                _ => Err("batch has neither a memory nor a disk copy".to_owned()),
            };
            match read {
                Ok(b) => {
                    return Some(Front {
                        id,
                        points,
                        payload: Bytes::from(b),
                        answered,
                    });
                }
                Err(reason) => {
                    warn!(error = %reason, dropped_points = points, "dropping an unreadable batch from the disk queue");
                    stats
                        .dropped_points
                        .fetch_add(points as u64, Ordering::Relaxed);
                    self.remove_front(id);
                }
            }
        }
    }

    /// Removes the batch `id` if it is still the oldest (a bound may have dropped it
    /// meanwhile) and moves the disk queue's cursor past it.
    fn remove_front(&mut self, id: u64) {
        self.forget_front(id);
        self.write_cursor();
    }

    /// [`Self::remove_front`] without the cursor write (no file I/O): the cursor follows at
    /// the next [`Self::write_cursor`] — the next submit, any blocking queue operation, or the
    /// shutdown. A SIGKILL in between resends the batches accepted since (duplicates, at most
    /// one cycle's worth in the steady state), never loses any.
    fn forget_front(&mut self, id: u64) {
        if self.entries.front().is_some_and(|f| f.id == id) {
            self.entries.pop_front();
        }
    }

    /// Writes the cursor and syncs the disk queue (after a failed send, at shutdown).
    fn make_durable(&mut self) {
        self.write_cursor();
        let State {
            disk, sync_failing, ..
        } = self;
        if let Some(disk) = disk.as_mut() {
            sync_logged(disk, sync_failing);
        }
    }

    /// Writes the disk queue's cursor if the front moved (a 16-byte write, not synced).
    fn write_cursor(&mut self) {
        if let Some(disk) = self.disk.as_mut() {
            disk.consume_until(disk_cursor(&self.entries, disk), false);
        }
    }

    /// Whether [`Self::front`] can answer without file I/O.
    fn front_in_memory(&self) -> bool {
        self.entries.front().is_none_or(|e| e.payload.is_some())
    }

    /// Whether the oldest batch is being sent by the collection thread.
    fn front_in_flight(&self) -> bool {
        self.entries
            .front()
            .is_some_and(|e| matches!(e.direct, Direct::InFlight))
    }

    /// Hands batch `id` back to the sender after a direct attempt, with the backend's answer
    /// when there was one.
    fn hand_over(&mut self, id: u64, answered: Option<Result<SendOk, SendError>>) {
        if let Some(e) = self.entries.iter_mut().find(|e| e.id == id) {
            e.direct = answered.map_or(Direct::Idle, Direct::Answered);
        }
    }
}

#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    notify: Notify,
    max_batches: usize,
    /// A full queue drops the oldest batch on every submit: logged once, then a summary a
    /// minute ([`repeat`]).
    overflow: Mutex<Repeated>,
    stats: Arc<ExportStats>,
    /// Whether there is a disk queue: its operations that do file I/O run on the blocking
    /// pool (taking or dropping a batch still in memory is done inline, see `Sender::front`).
    persistent: bool,
    /// The collection thread's sender for a plain-HTTP endpoint ([`super::direct`]).
    direct: Option<Mutex<DirectSender>>,
    /// The current outage, for logging it quietly ([`repeat`]).
    outage: Mutex<Repeated>,
    /// Points accepted since the last recovery line, for the next one.
    sent_in_outage: AtomicU64,
}

/// The direct sender and how long it rests.
#[derive(Debug)]
struct DirectSender {
    http: DirectHttp,
    /// Submits left before the next direct attempt: after an attempt without an answer (the
    /// backend unreachable or slower than the cycle allows) the sender keeps the batches for a
    /// while, with its own timeout and backoff.
    resting: u32,
}

/// Submits without a direct attempt after one that got no answer.
const DIRECT_REST: u32 = 30;

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // Every update under this lock leaves the state consistent at each step (entries are
        // pushed or popped whole; the disk queue's own fields are updated after its I/O
        // succeeds), so recovering the guard after a panic elsewhere is sound.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
    fn backlog(&self) -> Backlog {
        let st = self.lock();
        Backlog {
            batches: st.entries.len() as u64,
            bytes: st
                .entries
                .iter()
                .map(|e| match (&e.disk, &e.payload) {
                    (Some(r), _) => r.len,
                    (None, Some(p)) => p.len() as u64,
                    (None, None) => 0,
                })
                .sum(),
            oldest_unix_nanos: st.entries.iter().find_map(|e| e.time_unix_nano),
            dir: st.disk.as_ref().map(|d| d.dir().to_path_buf()),
        }
    }
    fn set_len(&self, len: usize) {
        self.stats
            .queued_batches
            .store(len as u64, Ordering::Relaxed);
    }

    fn lock_outage(&self) -> std::sync::MutexGuard<'_, Repeated> {
        self.outage
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A retryable failure: per-attempt detail at debug; the first of an outage in full, then
    /// a summary a minute ([`repeat`]).
    fn failed(&self, reason: &str, delay: Duration) {
        let stats = &self.stats;
        stats.failing_attempts.fetch_add(1, Ordering::Relaxed);
        stats.set_last_error(Some(reason.to_owned()));
        let backlog = self.backlog();
        debug!(endpoint = %stats.endpoint, error = %reason, retry_in = %repeat::human(delay), queued = backlog.batches, "export attempt failed");
        let report = self.lock_outage().failed();
        let oldest = backlog
            .oldest_age(crate::model::now_unix_nanos())
            .map_or_else(|| "unknown".to_owned(), repeat::human);
        match report {
            Failure::First => warn!(
                "cannot export metrics to {endpoint}: {reason}. Collection goes on and the data \
                 is kept in {place} until the backend answers (retrying, next in {retry}; a \
                 summary follows at most once a minute). To send elsewhere, set \
                 export.otlp.endpoint in the config or OTEL_EXPORTER_OTLP_ENDPOINT; to stop \
                 exporting, export.otlp.enabled: false.",
                endpoint = stats.endpoint,
                place = backlog.place(),
                retry = repeat::human(delay),
            ),
            Failure::Summary { attempts, lasting } => warn!(
                "export to {endpoint} still failing after {lasting}: {attempts} attempts, \
                 {batches} batches ({bytes}) waiting in {place}, oldest {oldest} old; \
                 last error: {reason}",
                endpoint = stats.endpoint,
                lasting = repeat::human(lasting),
                batches = backlog.batches,
                bytes = repeat::human_bytes(backlog.bytes),
                place = backlog.place(),
            ),
            Failure::Quiet => {}
        }
    }

    /// The backend accepted a batch: the export is healthy.
    fn accepted(&self) {
        let stats = &self.stats;
        stats
            .last_success_unix_nanos
            .store(crate::model::now_unix_nanos(), Ordering::Relaxed);
        stats.failing_attempts.store(0, Ordering::Relaxed);
        stats.set_last_error(None);
    }

    /// After an accepted batch of `points`: when it ended an outage, the backlog it left is
    /// sent before one INFO line says so.
    fn after_recovery(&self, points: u64) {
        let mut outage = self.lock_outage();
        if !outage.failing() {
            return;
        }
        let sent = self.sent_in_outage.fetch_add(points, Ordering::Relaxed) + points;
        let batches = self.stats.queued_batches.load(Ordering::Relaxed);
        if batches > 0 {
            return;
        }
        if let Some(r) = outage.succeeded() {
            self.sent_in_outage.store(0, Ordering::Relaxed);
            info!(
                "export to {endpoint} recovered after {lasted} ({attempts} failed attempts); \
                 the backlog is sent: {sent} points",
                endpoint = self.stats.endpoint,
                lasted = repeat::human(r.lasted),
                attempts = r.attempts,
            );
        }
    }
}

/// Producer side of the export pipeline: cheap to clone.
#[derive(Clone, Debug)]
pub struct ExportHandle {
    shared: Arc<Shared>,
}

impl ExportHandle {
    /// Queues a request for sending; drops (and counts) the oldest when a bound is reached.
    ///
    /// Without a disk queue this never blocks. With one, it writes the batch before returning
    /// (one write, plus an `fdatasync` when earlier batches are still unsent, and the cursor
    /// write the sender deferred), so call it from a blocking context (the agent's collection
    /// thread, `spawn_blocking`), never on an async worker.
    pub fn submit(&self, req: ExportMetricsServiceRequest) {
        let points = point_count(&req);
        let time_unix_nano = first_timestamp(&req);
        self.submit_encoded(Bytes::from(req.encode_to_vec()), points, time_unix_nano);
    }

    /// [`Self::submit`] for a request already encoded ([`super::wire::encode_batch_into`]):
    /// `points` data points, stamped `time_unix_nano` (for the logs). The disk copy and every
    /// send use these bytes as they are.
    pub fn submit_encoded(&self, payload: Bytes, points: usize, time_unix_nano: u64) {
        self.queue(payload, points, time_unix_nano, false);
        self.shared.notify.notify_one();
    }

    /// [`Self::submit_encoded`], and then, when this batch is the only one queued and the
    /// endpoint is plain `http://`, sends it on this thread at once and waits for the answer,
    /// for at most `budget` ([`super::direct`]): the async sender is woken only when something
    /// is left for it (a refusal, no answer, a backlog). Blocks: call it from the collection
    /// thread, never on an async worker.
    pub fn submit_and_send(
        &self,
        payload: Bytes,
        points: usize,
        time_unix_nano: u64,
        budget: Duration,
    ) {
        let Some(direct) = &self.shared.direct else {
            self.submit_encoded(payload, points, time_unix_nano);
            return;
        };
        // Held through the attempt: only submits take it.
        let mut d = direct
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let ready = d.resting == 0;
        d.resting = d.resting.saturating_sub(1);
        let Some((id, payload)) = self.queue(payload, points, time_unix_nano, ready) else {
            self.shared.notify.notify_one();
            return;
        };
        self.shared.stats.attempts.fetch_add(1, Ordering::Relaxed);
        let answer = d.http.send(&payload, budget);
        if matches!(answer, Answer::None(_)) {
            d.resting = DIRECT_REST;
        }
        drop(d);
        self.settle_direct(id, points, answer);
    }

    /// Settles the claimed batch `id` after its direct attempt: removed when accepted, else
    /// handed to the sender with the answer (or without one).
    fn settle_direct(&self, id: u64, points: usize, answer: Answer) {
        let stats = &self.shared.stats;
        match answer {
            Answer::Verdict(Ok(SendOk::Accepted)) => {
                self.shared.accepted();
                stats
                    .sent_points
                    .fetch_add(points as u64, Ordering::Relaxed);
                let len = {
                    let mut st = self.shared.lock();
                    st.forget_front(id);
                    st.entries.len()
                };
                self.shared.set_len(len);
                self.shared.after_recovery(points as u64);
                if len > 0 {
                    self.shared.notify.notify_one();
                }
            }
            Answer::Verdict(answered) => {
                self.shared.lock().hand_over(id, Some(answered));
                self.shared.notify.notify_one();
            }
            Answer::None(why) => {
                debug!(error = %why, "direct export got no answer; the sender takes the batch over");
                self.shared.lock().hand_over(id, None);
                self.shared.notify.notify_one();
            }
        }
    }

    /// Queues a batch; with `claim`, marks it for a direct send when it is the only one queued,
    /// and returns its id and bytes. Does not notify.
    fn queue(
        &self,
        payload: Bytes,
        points: usize,
        time_unix_nano: u64,
        claim: bool,
    ) -> Option<(u64, Bytes)> {
        let mut dropped = Dropped::default();
        let (len, claimed) = {
            let mut st = self.shared.lock();
            let disk = st.persist(&payload, points, time_unix_nano, &mut dropped);
            let id = st.next_id;
            st.next_id += 1;
            let claimed = (claim && st.entries.is_empty()).then(|| (id, payload.clone()));
            st.entries.push_back(Entry {
                id,
                points,
                time_unix_nano: (time_unix_nano > 0).then_some(time_unix_nano),
                payload: Some(payload),
                disk,
                direct: if claimed.is_some() {
                    Direct::InFlight
                } else {
                    Direct::Idle
                },
            });
            st.trim_memory(self.shared.max_batches, &mut dropped);
            (st.entries.len(), claimed)
        };
        self.shared.set_len(len);
        let mut overflow = self
            .shared
            .overflow
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if dropped.points == 0 && dropped.batches == 0 {
            overflow.succeeded();
        } else {
            let stats = &self.shared.stats;
            stats
                .dropped_points
                .fetch_add(dropped.points as u64, Ordering::Relaxed);
            let bound = if self.shared.persistent {
                "export disk queue full (export.otlp.queue.max_bytes)".to_owned()
            } else {
                format!(
                    "export queue full ({} batches, export.otlp.queue.max_batches)",
                    self.shared.max_batches
                )
            };
            match overflow.failed() {
                Failure::First => warn!(
                    dropped_points = dropped.points,
                    dropped_batches = dropped.batches,
                    "{bound}: dropped the oldest batches to keep the newest (a summary follows at most once a minute while it stays full)"
                ),
                Failure::Summary { attempts, lasting } => warn!(
                    "{bound} for {}: the oldest batches dropped {attempts} times; {} points dropped since the start (faultline.export.dropped)",
                    repeat::human(lasting),
                    stats.dropped_points.load(Ordering::Relaxed)
                ),
                Failure::Quiet => debug!(
                    dropped_points = dropped.points,
                    dropped_batches = dropped.batches,
                    "{bound}: dropped the oldest batches"
                ),
            }
        }
        drop(overflow);
        claimed
    }

    /// Batches waiting now.
    pub fn queued(&self) -> usize {
        self.shared.lock().entries.len()
    }

    /// The shared counters.
    pub fn stats(&self) -> &Arc<ExportStats> {
        &self.shared.stats
    }

    /// What waits in the queue now.
    pub fn backlog(&self) -> Backlog {
        self.shared.backlog()
    }
}

/// Consumer side: the sender loop.
#[derive(Debug)]
pub struct Sender {
    shared: Arc<Shared>,
    transport: Transport,
    retry: RetrySettings,
}

/// Creates an in-memory pipeline: the handle for producers and the sender to run as a task.
/// At most `max_batches` batches are kept; nothing survives the process.
pub fn pipeline(
    transport: Transport,
    retry: RetrySettings,
    max_batches: usize,
    stats: Arc<ExportStats>,
) -> (ExportHandle, Sender) {
    build(transport, retry, max_batches, None, stats)
}

/// Creates a pipeline over an opened disk queue (see [`DiskQueue::open`]): the stored
/// batches are queued first, in order, and every new batch is written to disk before it is
/// first sent and removed only once the backend accepted it (or refused it for good). The
/// disk queue's size bound replaces `max_batches`, which then only bounds batches that could
/// not be written (disk errors) and stay in memory.
pub fn pipeline_on_disk(
    transport: Transport,
    retry: RetrySettings,
    max_batches: usize,
    disk: (DiskQueue, Vec<Stored>),
    stats: Arc<ExportStats>,
) -> (ExportHandle, Sender) {
    build(transport, retry, max_batches, Some(disk), stats)
}

fn build(
    transport: Transport,
    retry: RetrySettings,
    max_batches: usize,
    disk: Option<(DiskQueue, Vec<Stored>)>,
    stats: Arc<ExportStats>,
) -> (ExportHandle, Sender) {
    let persistent = disk.is_some();
    let (disk, stored) = match disk {
        Some((d, s)) => (Some(d), s),
        None => (None, Vec::new()),
    };
    let entries: VecDeque<Entry> = stored
        .into_iter()
        .zip(0..)
        .map(|(r, id)| Entry {
            id,
            points: r.points as usize,
            time_unix_nano: None,
            payload: None,
            disk: Some(r),
            direct: Direct::Idle,
        })
        .collect();
    stats
        .queued_batches
        .store(entries.len() as u64, Ordering::Relaxed);
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            next_id: entries.len() as u64,
            entries,
            disk,
            disk_failing: false,
            sync_failing: false,
        }),
        notify: Notify::new(),
        max_batches: max_batches.max(1),
        overflow: Mutex::new(Repeated::default()),
        stats,
        persistent,
        direct: match &transport {
            Transport::Http(t) => DirectHttp::for_transport(t)
                .map(|http| Mutex::new(DirectSender { http, resting: 0 })),
            Transport::Grpc(_) => None,
        },
        outage: Mutex::new(Repeated::default()),
        sent_in_outage: AtomicU64::new(0),
    });
    (
        ExportHandle {
            shared: shared.clone(),
        },
        Sender {
            shared,
            transport,
            retry,
        },
    )
}

enum Attempt {
    Done,
    RetryAfter(Duration),
}

impl Sender {
    /// Runs until `cancel` fires, then drains the queue for at most `grace`.
    pub async fn run(self, cancel: CancellationToken, grace: Duration) {
        let mut backoff = Backoff::new(self.retry);
        loop {
            // `notify_one` keeps a permit when nobody waits, so a submit between `front` and
            // `notified` is not missed.
            let Some(item) = self.front().await else {
                tokio::select! {
                    () = cancel.cancelled() => break,
                    () = self.shared.notify.notified() => continue,
                }
            };
            let attempt = tokio::select! {
                () = cancel.cancelled() => break,
                a = self.attempt(&item, &mut backoff) => a,
            };
            if let Attempt::RetryAfter(delay) = attempt {
                debug!(delay = %repeat::human(delay), "waiting before retrying export");
                tokio::select! {
                    () = cancel.cancelled() => break,
                    () = tokio::time::sleep(delay) => {}
                }
            }
        }
        self.drain(grace).await;
    }

    /// Runs `f` on the state: on the blocking pool when a disk queue is involved (its
    /// operations do file I/O, and a submit may hold the lock across an `fdatasync`), inline
    /// otherwise. `None` only if the blocking task could not run (runtime shutting down).
    async fn with_state<R, F>(&self, f: F) -> Option<R>
    where
        F: FnOnce(&mut State, &ExportStats) -> R + Send + 'static,
        R: Send + 'static,
    {
        if self.shared.persistent {
            let shared = self.shared.clone();
            tokio::task::spawn_blocking(move || f(&mut shared.lock(), &shared.stats))
                .await
                .ok()
        } else {
            Some(f(&mut self.shared.lock(), &self.shared.stats))
        }
    }

    /// The state, if it can be had at once (no other thread holds it, e.g. across a sync).
    fn try_lock(&self) -> Option<std::sync::MutexGuard<'_, State>> {
        match self.shared.state.try_lock() {
            Ok(g) => Some(g),
            Err(std::sync::TryLockError::Poisoned(p)) => Some(p.into_inner()),
            Err(std::sync::TryLockError::WouldBlock) => None,
        }
    }

    async fn front(&self) -> Option<Front> {
        // The steady state: the batch just queued is still in memory, so no trip to
        // the blocking pool (two thread hand-offs) is needed to pick it up.
        if let Some(mut st) = self.try_lock()
            && st.front_in_memory()
        {
            let front = st.front(&self.shared.stats);
            let len = st.entries.len();
            drop(st);
            self.shared.set_len(len);
            return front;
        }
        self.with_state(|st, stats| {
            st.write_cursor();
            let front = st.front(stats);
            (front, st.entries.len())
        })
        .await
        .and_then(|(front, len)| {
            self.shared.set_len(len);
            front
        })
    }

    /// Removes `id` if it is still the oldest (overflow may have dropped it meanwhile).
    async fn pop_if_front(&self, id: u64) {
        // In memory at once when the state is free; the cursor write follows later on a
        // blocking thread (see `State::forget_front`).
        if self.shared.persistent
            && let Some(mut st) = self.try_lock()
        {
            st.forget_front(id);
            let len = st.entries.len();
            drop(st);
            self.shared.set_len(len);
            return;
        }
        if let Some(len) = self
            .with_state(move |st, _| {
                st.remove_front(id);
                st.entries.len()
            })
            .await
        {
            self.shared.set_len(len);
        }
    }

    /// After a failed attempt the queued batches will wait: they are made durable (the cursor
    /// is written with them).
    async fn sync_queue(&self) {
        if self.shared.persistent {
            self.with_state(|st, _| st.make_durable()).await;
        }
    }

    async fn attempt(&self, item: &Front, backoff: &mut Backoff) -> Attempt {
        let stats = &self.shared.stats;
        let (id, points) = (&item.id, item.points as u64);
        let sent = match &item.answered {
            Some(answered) => answered.clone(),
            None => {
                stats.attempts.fetch_add(1, Ordering::Relaxed);
                self.transport.send(&item.payload).await
            }
        };
        if sent.is_ok() {
            self.shared.accepted();
        }
        match sent {
            Ok(SendOk::Accepted) => {
                stats.sent_points.fetch_add(points, Ordering::Relaxed);
                self.pop_if_front(*id).await;
                self.shared.after_recovery(points);
                backoff.reset();
                Attempt::Done
            }
            Ok(SendOk::PartialSuccess { rejected, message }) => {
                let rejected = u64::try_from(rejected).unwrap_or(0).min(points);
                stats
                    .sent_points
                    .fetch_add(points - rejected, Ordering::Relaxed);
                stats.dropped_points.fetch_add(rejected, Ordering::Relaxed);
                warn!(rejected_points = rejected, backend_message = %message, "backend accepted the export partially; not retrying");
                self.pop_if_front(*id).await;
                backoff.reset();
                Attempt::Done
            }
            Err(SendError::Permanent { reason }) => {
                stats.failures.fetch_add(1, Ordering::Relaxed);
                stats.dropped_points.fetch_add(points, Ordering::Relaxed);
                warn!(dropped_points = points, error = %reason, "backend refused the export; dropping this batch, not retrying");
                self.pop_if_front(*id).await;
                Attempt::Done
            }
            Err(SendError::Retryable {
                reason,
                retry_after,
            }) => {
                stats.failures.fetch_add(1, Ordering::Relaxed);
                let delay = retry_after.unwrap_or_else(|| backoff.next_delay());
                self.sync_queue().await;
                self.shared.failed(&reason, delay);
                Attempt::RetryAfter(delay)
            }
        }
    }

    async fn drain(&self, grace: Duration) {
        let deadline = Instant::now() + grace;
        let mut backoff = Backoff::new(self.retry);
        loop {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            let item = match tokio::time::timeout(deadline - now, self.front()).await {
                Ok(Some(item)) => item,
                // The collection thread is sending the oldest batch: its answer is awaited.
                Ok(None) if self.shared.lock().front_in_flight() => {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
                _ => break,
            };
            let now = Instant::now();
            match tokio::time::timeout(
                deadline.saturating_duration_since(now),
                self.attempt(&item, &mut backoff),
            )
            .await
            {
                Err(_) => break,
                Ok(Attempt::Done) => {}
                Ok(Attempt::RetryAfter(delay)) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if delay >= left {
                        break;
                    }
                    tokio::time::sleep(delay).await;
                }
            }
        }
        // Batches in the disk queue stay there for the next start; the rest is lost.
        let left = self
            .with_state(|st, _| {
                st.make_durable();
                let kept: Vec<usize> = st
                    .entries
                    .iter()
                    .filter(|e| e.disk.is_some())
                    .map(|e| e.points)
                    .collect();
                let lost: Vec<usize> = st
                    .entries
                    .iter()
                    .filter(|e| e.disk.is_none())
                    .map(|e| e.points)
                    .collect();
                // The stored ones stay listed: a cycle still running during shutdown may submit
                // after this, and its cursor update must not pass them.
                st.entries.retain(|e| e.disk.is_some());
                (kept, lost)
            })
            .await;
        self.shared.set_len(0);
        let (kept, lost) = left.unwrap_or_default();
        if kept.is_empty() && lost.is_empty() {
            info!("export queue flushed");
        }
        if !kept.is_empty() {
            info!(
                batches = kept.len(),
                points = kept.iter().sum::<usize>(),
                "unsent batches kept in the disk queue; they are sent first at the next start"
            );
        }
        if !lost.is_empty() {
            let points: usize = lost.iter().sum();
            self.shared
                .stats
                .dropped_points
                .fetch_add(points as u64, Ordering::Relaxed);
            warn!(batches = lost.len(), points, grace = %repeat::human(grace), "shutdown grace period over: unsent batches dropped");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::otlp::test_server;
    use crate::otlp::transport::{Compression, Protocol, TlsMaterial, TransportSettings};

    fn req(n: usize) -> ExportMetricsServiceRequest {
        req_at(n, 0)
    }

    /// `n` points stamped `ts` (tells batches apart after a round trip through the disk).
    fn req_at(n: usize, ts: u64) -> ExportMetricsServiceRequest {
        use opentelemetry_proto::tonic::metrics::v1::*;
        let points = (0..n)
            .map(|_| NumberDataPoint {
                time_unix_nano: ts,
                ..Default::default()
            })
            .collect();
        ExportMetricsServiceRequest {
            resource_metrics: vec![ResourceMetrics {
                scope_metrics: vec![ScopeMetrics {
                    metrics: vec![Metric {
                        data: Some(metric::Data::Gauge(Gauge {
                            data_points: points,
                        })),
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        }
    }

    /// An OTLP/HTTP transport to `url`.
    fn http_transport(url: &str, timeout: Duration) -> Transport {
        Transport::new(TransportSettings {
            url: url.into(),
            protocol: Protocol::HttpProtobuf,
            headers: vec![],
            compression: Compression::None,
            timeout,
            tls: TlsMaterial::default(),
        })
        .unwrap()
    }

    fn unreachable_transport() -> Transport {
        http_transport("http://127.0.0.1:9/v1/metrics", Duration::from_millis(200))
    }

    #[test]
    fn full_queue_drops_oldest_and_counts_points() {
        let stats = Arc::new(ExportStats::default());
        let (h, _s) = pipeline(
            unreachable_transport(),
            RetrySettings::default(),
            2,
            stats.clone(),
        );
        h.submit(req(1));
        h.submit(req(2));
        h.submit(req(3));
        assert_eq!(h.queued(), 2);
        assert_eq!(stats.dropped_points.load(Ordering::Relaxed), 1);
        assert_eq!(stats.queued_batches.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn backoff_grows_to_its_cap_with_jitter_in_range() {
        let mut b = Backoff::new(RetrySettings {
            initial_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(8),
        });
        let bounds = [
            (500, 1000),
            (1000, 2000),
            (2000, 4000),
            (4000, 8000),
            (4000, 8000),
        ];
        for (lo, hi) in bounds {
            let d = b.next_delay().as_millis();
            assert!(d >= lo && d <= hi, "{d} not in {lo}..={hi}");
        }
        b.reset();
        assert!(b.next_delay() <= Duration::from_secs(1));
    }

    #[tokio::test]
    async fn shutdown_with_unreachable_backend_ends_within_grace_and_counts_loss() {
        let stats = Arc::new(ExportStats::default());
        let (h, s) = pipeline(
            unreachable_transport(),
            RetrySettings::default(),
            10,
            stats.clone(),
        );
        h.submit(req(4));
        let cancel = CancellationToken::new();
        cancel.cancel();
        let started = std::time::Instant::now();
        s.run(cancel, Duration::from_millis(300)).await;
        assert!(started.elapsed() < Duration::from_secs(3));
        assert_eq!(stats.dropped_points.load(Ordering::Relaxed), 4);
        assert_eq!(h.queued(), 0);
    }

    fn on_disk(
        dir: &std::path::Path,
        max_bytes: u64,
        stats: &Arc<ExportStats>,
    ) -> (ExportHandle, Sender) {
        on_disk_over(dir, max_bytes, unreachable_transport(), stats)
    }

    fn on_disk_over(
        dir: &std::path::Path,
        max_bytes: u64,
        transport: Transport,
        stats: &Arc<ExportStats>,
    ) -> (ExportHandle, Sender) {
        let opened = DiskQueue::open(dir, max_bytes).unwrap();
        pipeline_on_disk(
            transport,
            RetrySettings::default(),
            10,
            opened,
            stats.clone(),
        )
    }

    fn stamps(h: &ExportHandle) -> Vec<u64> {
        let st = h.shared.lock();
        st.entries
            .iter()
            .map(|e| e.disk.map(|d| d.seq).unwrap_or(u64::MAX))
            .collect()
    }

    /// The decoded front batch's timestamp, read the way the sender reads it.
    fn front_ts(h: &ExportHandle) -> Option<u64> {
        let mut st = h.shared.lock();
        st.front(&ExportStats::default())
            .map(|f| first_timestamp(&ExportMetricsServiceRequest::decode(f.payload).unwrap()))
    }

    #[test]
    fn disk_bound_drops_the_oldest_stored_batches_and_counts_their_points() {
        let dir = tempfile::tempdir().unwrap();
        let stats = Arc::new(ExportStats::default());
        // 128 KiB bound: 64 KiB segments (the minimum), so a drop frees one segment at once.
        let max = 128u64 << 10;
        let record = (HEADER_LEN + req_at(500, 1).encoded_len()) as u64;
        let (h, _s) = on_disk(dir.path(), max, &stats);
        for ts in 1..=40u64 {
            h.submit(req_at(500, ts));
            let st = h.shared.lock();
            let disk = st.disk.as_ref().unwrap();
            assert!(disk.disk_bytes() <= max, "{}", disk.disk_bytes());
        }
        let kept = h.queued();
        let kept_bytes = kept as u64 * record;
        assert!(
            kept_bytes <= max && kept_bytes + (64 << 10) + record > max,
            "kept {kept} batches of {record} bytes under a {max}-byte bound"
        );
        // Exactly the oldest went, and each dropped point was counted.
        assert_eq!(
            stats.dropped_points.load(Ordering::Relaxed),
            (40 - kept as u64) * 500
        );
        assert_eq!(front_ts(&h), Some(40 - kept as u64 + 1));
        assert_eq!(h.shared.lock().entries.back().unwrap().points, 500);
    }

    #[test]
    fn batches_leave_the_disk_only_when_acknowledged_and_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let stats = Arc::new(ExportStats::default());
        {
            let (h, _s) = on_disk(dir.path(), 1 << 20, &stats);
            for ts in 1..=3 {
                h.submit(req_at(2, ts));
            }
            // Looking at the front (what a send does) removes nothing.
            assert_eq!(front_ts(&h), Some(1));
            assert_eq!(front_ts(&h), Some(1));
            // The first is acknowledged.
            let id = h.shared.lock().entries.front().unwrap().id;
            h.shared.lock().remove_front(id);
            // A stale acknowledgement (not the front any more) removes nothing.
            h.shared.lock().remove_front(id);
            assert_eq!(h.queued(), 2);
        }
        // A restart sees the two unacknowledged batches, oldest first, decoded from disk.
        let (h, _s) = on_disk(dir.path(), 1 << 20, &stats);
        assert_eq!(stamps(&h).len(), 2);
        assert!(h.shared.lock().entries.iter().all(|e| e.payload.is_none()));
        assert_eq!(front_ts(&h), Some(2));
        h.submit(req_at(2, 4));
        let seqs = stamps(&h);
        assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
    }

    #[test]
    fn only_the_newest_stored_batches_stay_in_memory() {
        let dir = tempfile::tempdir().unwrap();
        let stats = Arc::new(ExportStats::default());
        let (h, _s) = on_disk(dir.path(), 1 << 20, &stats);
        for ts in 1..=6 {
            h.submit(req_at(3, ts));
        }
        let cached: Vec<bool> = h
            .shared
            .lock()
            .entries
            .iter()
            .map(|e| e.payload.is_some())
            .collect();
        assert_eq!(cached, vec![false, false, false, false, true, true]);
        assert_eq!(front_ts(&h), Some(1));
    }

    fn unsynced(h: &ExportHandle) -> bool {
        h.shared
            .lock()
            .disk
            .as_ref()
            .is_some_and(DiskQueue::has_unsynced)
    }

    #[test]
    fn a_batch_is_synced_when_it_has_to_wait_and_not_on_the_happy_path() {
        let dir = tempfile::tempdir().unwrap();
        let stats = Arc::new(ExportStats::default());
        let (h, _s) = on_disk(dir.path(), 1 << 20, &stats);
        // Nothing queued before it: written, not synced (it is sent at once).
        h.submit(req_at(2, 1));
        assert!(unsynced(&h));
        // Behind the unsent first one: both made durable.
        h.submit(req_at(2, 2));
        assert!(!unsynced(&h));
        // The backlog is sent; the next batch again goes out unsynced.
        for _ in 0..2 {
            let id = h.shared.lock().entries.front().unwrap().id;
            h.shared.lock().remove_front(id);
        }
        h.submit(req_at(2, 3));
        assert!(unsynced(&h));
    }

    #[tokio::test]
    async fn a_failed_attempt_syncs_the_queue() {
        let dir = tempfile::tempdir().unwrap();
        let stats = Arc::new(ExportStats::default());
        let (h, s) = on_disk(dir.path(), 1 << 20, &stats);
        h.submit(req_at(2, 1));
        assert!(unsynced(&h));
        let item = s.front().await.unwrap();
        let mut backoff = Backoff::new(RetrySettings::default());
        let attempt = s.attempt(&item, &mut backoff).await;
        assert!(matches!(attempt, Attempt::RetryAfter(_)), "port 9 refuses");
        assert!(
            !unsynced(&h),
            "a batch left waiting by a failed send is synced"
        );
    }

    #[tokio::test]
    async fn an_acknowledged_batch_leaves_memory_at_once_and_the_cursor_follows() {
        let dir = tempfile::tempdir().unwrap();
        let stats = Arc::new(ExportStats::default());
        let (h, s) = on_disk(dir.path(), 1 << 20, &stats);
        h.submit(req_at(2, 1));
        h.submit(req_at(2, 2));
        let id = s.front().await.unwrap().id;
        // The in-memory fast path: the entry is gone, the cursor not yet written.
        s.pop_if_front(id).await;
        assert_eq!(h.queued(), 1);
        drop((h, s));
        // Killed now, a restart would resend the acknowledged batch (a duplicate, never a
        // loss); here the next queue operation on a blocking thread writes the cursor.
        let (h, s) = on_disk(dir.path(), 1 << 20, &stats);
        assert_eq!(
            stamps(&h).len(),
            2,
            "cursor deferred: both batches still queued"
        );
        let id = s.front().await.unwrap().id;
        s.pop_if_front(id).await;
        h.submit(req_at(2, 3));
        drop((h, s));
        let (h, _s) = on_disk(dir.path(), 1 << 20, &stats);
        assert_eq!(
            stamps(&h).len(),
            2,
            "the submit wrote the cursor past batch 1"
        );
        assert_eq!(front_ts(&h), Some(2));
    }

    /// A disk pipeline holding batches stamped 11 and 12, after a shutdown whose drain could
    /// send nothing (the backend is unreachable).
    async fn shut_down_with_two_unsent(
        dir: &std::path::Path,
        stats: &Arc<ExportStats>,
    ) -> ExportHandle {
        let (h, s) = on_disk(dir, 1 << 20, stats);
        h.submit(req_at(4, 11));
        h.submit(req_at(4, 12));
        let cancel = CancellationToken::new();
        cancel.cancel();
        s.run(cancel, Duration::from_millis(300)).await;
        h
    }

    #[tokio::test]
    async fn a_submit_after_the_shutdown_drain_keeps_the_stored_batches() {
        let dir = tempfile::tempdir().unwrap();
        let stats = Arc::new(ExportStats::default());
        let h = shut_down_with_two_unsent(dir.path(), &stats).await;
        // A cycle that was running during the shutdown submits late: its cursor update must
        // not pass the two batches the drain left on disk.
        h.submit(req_at(4, 13));
        drop(h);
        let (h, _s) = on_disk(dir.path(), 1 << 20, &stats);
        assert_eq!(h.queued(), 3);
        assert_eq!(front_ts(&h), Some(11));
    }

    /// A disk pipeline whose endpoint is `url` (plain HTTP: the direct path applies).
    fn on_disk_to(
        dir: &std::path::Path,
        url: &str,
        stats: &Arc<ExportStats>,
    ) -> (ExportHandle, Sender) {
        on_disk_over(
            dir,
            1 << 20,
            http_transport(url, Duration::from_secs(5)),
            stats,
        )
    }

    const BUDGET: Duration = Duration::from_secs(5);

    fn encoded(points: usize, ts: u64) -> Bytes {
        Bytes::from(req_at(points, ts).encode_to_vec())
    }

    #[test]
    fn a_lone_batch_is_sent_by_the_submitting_thread_without_the_sender() {
        let (url, seen, server) =
            test_server::server(vec![test_server::Reply::Keep(test_server::ok_empty())]);
        let dir = tempfile::tempdir().unwrap();
        let stats = Arc::new(ExportStats::default());
        // The sender task is never run: only the submitting thread can deliver the batch.
        let (h, _s) = on_disk_to(dir.path(), &url, &stats);
        let payload = encoded(3, 7);
        h.submit_and_send(payload.clone(), 3, 7, BUDGET);
        assert_eq!(seen.try_recv().unwrap().body, payload);
        assert_eq!(h.queued(), 0);
        assert_eq!(stats.sent_points.load(Ordering::Relaxed), 3);
        assert_eq!(stats.attempts.load(Ordering::Relaxed), 1);
        assert!(stats.last_success_unix_nanos.load(Ordering::Relaxed) > 0);
        drop((h, _s));
        server.join().unwrap();
    }

    #[tokio::test]
    async fn a_refusal_answered_to_the_submitting_thread_is_acted_on_without_sending_again() {
        let (url, seen, server) = test_server::server(vec![test_server::Reply::Keep(
            b"HTTP/1.1 400 Bad Request\r\ncontent-length: 3\r\n\r\nbad".to_vec(),
        )]);
        let dir = tempfile::tempdir().unwrap();
        let stats = Arc::new(ExportStats::default());
        let (h, s) = on_disk_to(dir.path(), &url, &stats);
        h.submit_and_send(encoded(3, 7), 3, 7, BUDGET);
        assert_eq!(h.queued(), 1, "the refused batch waits for the sender");
        let item = s.front().await.unwrap();
        assert!(
            matches!(item.answered, Some(Err(SendError::Permanent { .. }))),
            "{item:?}"
        );
        let mut backoff = Backoff::new(RetrySettings::default());
        assert!(matches!(
            s.attempt(&item, &mut backoff).await,
            Attempt::Done
        ));
        assert_eq!(h.queued(), 0);
        assert_eq!(stats.dropped_points.load(Ordering::Relaxed), 3);
        assert_eq!(stats.attempts.load(Ordering::Relaxed), 1);
        assert_eq!(seen.try_iter().count(), 1, "the backend was asked once");
        drop((h, s));
        server.join().unwrap();
    }

    #[tokio::test]
    async fn a_batch_in_flight_is_not_the_senders_until_handed_over() {
        let dir = tempfile::tempdir().unwrap();
        let stats = Arc::new(ExportStats::default());
        let (h, s) = on_disk(dir.path(), 1 << 20, &stats);
        let (id, _) = h
            .queue(encoded(2, 1), 2, 1, true)
            .expect("claimed: the only batch");
        assert!(
            s.front().await.is_none(),
            "the sender must not send a batch in flight"
        );
        h.shared.lock().hand_over(id, None);
        assert_eq!(s.front().await.map(|f| f.id), Some(id));
    }

    #[test]
    fn a_batch_queued_behind_another_is_not_sent_directly() {
        let (url, seen, _server) =
            test_server::server(vec![test_server::Reply::Keep(test_server::ok_empty())]);
        let dir = tempfile::tempdir().unwrap();
        let stats = Arc::new(ExportStats::default());
        let (h, _s) = on_disk_to(dir.path(), &url, &stats);
        h.submit(req_at(2, 1));
        h.submit_and_send(encoded(2, 2), 2, 2, BUDGET);
        assert_eq!(h.queued(), 2);
        assert!(
            seen.try_recv().is_err(),
            "the backlog goes first, in order, by the sender"
        );
        // The server thread waits on for its one request; the test process ends it.
    }

    #[tokio::test]
    async fn no_answer_hands_the_batch_over_and_the_direct_path_rests() {
        let dir = tempfile::tempdir().unwrap();
        let stats = Arc::new(ExportStats::default());
        // Port 9 refuses: the direct attempt gets no answer.
        let (h, s) = on_disk(dir.path(), 1 << 20, &stats);
        h.submit_and_send(encoded(2, 1), 2, 1, BUDGET);
        let item = s.front().await.unwrap();
        assert!(
            item.answered.is_none(),
            "no verdict: the sender sends it again itself"
        );
        let resting = |h: &ExportHandle| h.shared.direct.as_ref().unwrap().lock().unwrap().resting;
        assert_eq!(resting(&h), DIRECT_REST);
        // While it rests no batch is claimed (this one is behind the first as well), and the
        // rest counts down.
        h.submit_and_send(encoded(2, 2), 2, 2, BUDGET);
        assert_eq!(resting(&h), DIRECT_REST - 1);
        assert_eq!(h.queued(), 2);
        assert_eq!(stats.attempts.load(Ordering::Relaxed), 1);
        let in_flight = h
            .shared
            .lock()
            .entries
            .iter()
            .filter(|e| !matches!(e.direct, Direct::Idle))
            .count();
        assert_eq!(in_flight, 0);
    }

    #[tokio::test]
    async fn shutdown_keeps_unsent_batches_on_disk_for_the_next_start() {
        let dir = tempfile::tempdir().unwrap();
        let stats = Arc::new(ExportStats::default());
        let h = shut_down_with_two_unsent(dir.path(), &stats).await;
        assert_eq!(stats.dropped_points.load(Ordering::Relaxed), 0);
        drop(h);
        let (h, _s) = on_disk(dir.path(), 1 << 20, &stats);
        assert_eq!(h.queued(), 2);
        assert_eq!(stats.queued_batches.load(Ordering::Relaxed), 2);
        assert_eq!(front_ts(&h), Some(11));
    }
}
