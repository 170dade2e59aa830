//! The collection loop on a thread of its own, which owns its timer.
//!
//! A cycle is synchronous file reading, encoding, (with the persistent queue) a write to the
//! disk queue and, on a plain-HTTP endpoint with nothing else queued, the export itself
//! (blocking, at most half an interval: ADR 0025), so it must not run on the async thread. The
//! thread sleeps until its next deadline in [`mpsc::Receiver::recv_timeout`], which also
//! delivers the stop request: one wake-up per cycle, and the async thread is woken only by the
//! export queue's notify when something is left for it (ADR 0013 gives the measurement against
//! a tokio interval and the blocking pool).
//!
//! Missed deadlines are not caught up: a cycle that overran starts the next interval from its
//! end (as tokio's `MissedTickBehavior::Delay` does).

use std::sync::Arc;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use faultline_exporters::model::Batch;
use faultline_exporters::otlp::{self, ExportHandle};
use tokio::sync::{oneshot, watch};

use super::{Cycle, RELEASE_STARTUP_PAGES_AFTER, release_startup_pages};

/// The running collection thread.
#[derive(Debug)]
pub(crate) struct CollectLoop {
    stop: mpsc::Sender<()>,
    /// Resolves (with an error: nothing is ever sent) when the thread's closure is dropped,
    /// that is when the thread ends for any reason, a panic included.
    ended: oneshot::Receiver<()>,
    thread: JoinHandle<()>,
}

/// What a cycle hands on besides the collectors: the exporter and the latest-batch channel.
pub(crate) struct Outputs {
    pub(crate) export: Option<ExportHandle>,
    pub(crate) latest: watch::Sender<Option<Arc<Batch>>>,
}

impl CollectLoop {
    /// Starts collecting at once and then every `interval`.
    pub(crate) fn start(
        cycle: Cycle,
        interval: Duration,
        outputs: Outputs,
    ) -> std::io::Result<Self> {
        let (stop, stop_rx) = mpsc::channel::<()>();
        let (ended_tx, ended) = oneshot::channel::<()>();
        let span = tracing::info_span!("collect");
        let thread = std::thread::Builder::new()
            .name("faultline-collect".into())
            .spawn(move || {
                // Declared first, so dropped last: `ended` fires only once the cycle and its
                // collectors are gone (the container collector's metadata worker may take
                // seconds to stop), and the async thread's `join` then does not block.
                let _ended = ended_tx;
                let (mut cycle, outputs, stop_rx) = (cycle, outputs, stop_rx);
                let _span = span.entered();
                // The encoder's table of message lengths, kept between cycles.
                let mut lens = Vec::new();
                let mut next = Instant::now();
                let mut cycles = 0u64;
                // Sleeps until the deadline; a stop request (or the sender's drop) ends it.
                while let Err(RecvTimeoutError::Timeout) =
                    stop_rx.recv_timeout(next.saturating_duration_since(Instant::now()))
                {
                    cycles += 1;
                    run_cycle(&mut cycle, &mut lens, &outputs, interval / 2);
                    if cycles == RELEASE_STARTUP_PAGES_AFTER {
                        release_startup_pages();
                    }
                    next = next_deadline(next, interval, Instant::now());
                }
            })?;
        Ok(Self {
            stop,
            ended,
            thread,
        })
    }

    /// Resolves when the thread has ended without being asked to (a collector panicked).
    pub(crate) async fn ended(&mut self) {
        // A finished receiver must not be polled again.
        if !self.ended.is_terminated() {
            let _ = (&mut self.ended).await;
        }
    }

    /// Asks the thread to stop after the cycle it may be running and waits, without blocking
    /// the async thread, at most `grace` for it to end. Returns the panic message when the
    /// thread panicked, and an error when it did not end in time (it is then left to finish
    /// on its own).
    pub(crate) async fn stop(self, grace: Duration) -> Result<(), StopError> {
        drop(self.stop);
        if !self.ended.is_terminated() && tokio::time::timeout(grace, self.ended).await.is_err() {
            return Err(StopError::Timeout(grace));
        }
        // The thread has dropped everything it held: this join returns at once.
        self.thread
            .join()
            .map_err(|payload| StopError::Panicked(panic_message(payload.as_ref())))
    }
}

/// Why the collection thread did not stop cleanly.
#[derive(Debug, thiserror::Error)]
pub(crate) enum StopError {
    /// A collector (or the encoder) panicked.
    #[error("the collection thread panicked: {0}")]
    Panicked(String),
    /// A cycle was still running when the grace period ended.
    #[error("the collection thread did not stop within {0:?} (a cycle is stuck)")]
    Timeout(Duration),
}

/// The message of a panic payload (`panic!` gives a `&str` or a `String`).
fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_owned())
}

/// The deadline after one at `previous`, finished at `now`: one interval on, or one interval
/// from now when the cycle overran (no burst of catch-up cycles).
fn next_deadline(previous: Instant, interval: Duration, now: Instant) -> Instant {
    let next = previous + interval;
    if next < now { now + interval } else { next }
}

/// One cycle: collect, encode, queue for export (and send at once when nothing else waits,
/// waiting at most `send_budget` for the answer: [`ExportHandle::submit_and_send`]), publish.
/// `lens` is the encoder's scratch table (the payload itself is allocated at its exact size
/// by the encoder).
fn run_cycle(cycle: &mut Cycle, lens: &mut Vec<usize>, outputs: &Outputs, send_budget: Duration) {
    let batch = cycle.collect(outputs.export.as_ref().map(|e| &**e.stats()));
    if let Some(export) = &outputs.export {
        // Straight to protobuf bytes; the buffer goes to the queue, so it is new each cycle.
        // Queuing may write the batch to the disk queue and send it: this thread is the place
        // for that.
        let mut payload = Vec::new();
        otlp::encode_batch_into(&batch, env!("CARGO_PKG_VERSION"), &mut payload, lens);
        export.submit_and_send(
            bytes::Bytes::from(payload),
            batch.point_count(),
            batch.time_unix_nanos,
            send_budget,
        );
    }
    outputs.latest.send_replace(Some(Arc::new(batch)));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collectors::{CollectError, Collector, Context};
    use crate::config::Config;

    fn started(
        cycle: Cycle,
        interval: Duration,
    ) -> (CollectLoop, watch::Receiver<Option<Arc<Batch>>>) {
        let (latest, rx) = watch::channel(None);
        let outputs = Outputs {
            export: None,
            latest,
        };
        (CollectLoop::start(cycle, interval, outputs).unwrap(), rx)
    }

    const GRACE: Duration = Duration::from_secs(5);

    #[tokio::test]
    async fn batches_come_at_the_interval_and_stop_does_not_wait_for_the_next_deadline() {
        let cycle = Cycle::new(&Config::default()).unwrap();
        // Before the thread starts, so that its deadlines all come after this.
        let t0 = Instant::now();
        let (l, mut rx) = started(cycle, Duration::from_millis(40));
        for _ in 0..3 {
            tokio::time::timeout(Duration::from_secs(10), rx.changed())
                .await
                .unwrap()
                .unwrap();
        }
        // Three batches: at once, then two intervals later.
        assert!(
            t0.elapsed() >= Duration::from_millis(80),
            "{:?}",
            t0.elapsed()
        );
        let b = rx.borrow().clone().unwrap();
        assert!(b.host_metric("system.cpu.time").is_some());
        l.stop(GRACE).await.unwrap();

        // An hour's interval: the first cycle runs at once, and stopping ends the wait.
        let cycle = Cycle::new(&Config::default()).unwrap();
        let (l, mut rx) = started(cycle, Duration::from_secs(3600));
        tokio::time::timeout(Duration::from_secs(10), rx.changed())
            .await
            .unwrap()
            .unwrap();
        let t = Instant::now();
        l.stop(GRACE).await.unwrap();
        assert!(
            t.elapsed() < Duration::from_secs(2),
            "stop waited for the next deadline"
        );
    }

    #[derive(Debug)]
    struct Panicking;
    impl Collector for Panicking {
        fn name(&self) -> &'static str {
            "test.panicking"
        }
        fn collect(&mut self, _: &Context, _: &mut Batch) -> Result<(), CollectError> {
            panic!("a collector bug");
        }
    }

    #[tokio::test]
    async fn a_panicking_collector_ends_the_thread_and_ended_reports_it() {
        let mut cycle = Cycle::new(&Config::default()).unwrap();
        cycle.add_collector(Box::new(Panicking));
        let (mut l, _rx) = started(cycle, Duration::from_secs(3600));
        tokio::time::timeout(Duration::from_secs(10), l.ended())
            .await
            .expect("the thread's end was not reported");
        match l.stop(GRACE).await {
            Err(StopError::Panicked(m)) => assert_eq!(m, "a collector bug"),
            other => panic!("expected the panic's message, got {other:?}"),
        }
    }

    #[test]
    fn deadlines_follow_the_interval_and_an_overrun_restarts_it() {
        let t0 = Instant::now();
        let i = Duration::from_secs(10);
        // On time: exactly one interval on, whatever the cycle took.
        assert_eq!(next_deadline(t0, i, t0 + Duration::from_millis(3)), t0 + i);
        // Overran: one interval from the end, not a catch-up burst.
        let late = t0 + Duration::from_secs(25);
        assert_eq!(next_deadline(t0, i, late), late + i);
    }
}
