//! The test's own stopwatch of a service's outages, seen from outside: a thread that probes
//! the service (a TCP connect, a PostgreSQL start-up handshake, any check) back to back, about
//! every millisecond, and brackets each outage by the attempts around its two edges. A drill
//! report's fault time, recovery point and RTO are then checked against it
//! ([`assert_rto_matches`]), not against anything faultline says about itself.
//!
//! Every time is Unix seconds, read from one monotonic clock anchored to the wall clock once
//! per process (as faultline's own drill clock is), so a wall-clock step during a test moves
//! neither side.
//!
//! Brackets, not points: an attempt that ran from `start` to `end` and connected proves the
//! service was up at some moment in between, one that failed that it was down. So the service
//! went away after the last good attempt started and before the first bad one ended, and came
//! back after the last bad one started and before the first good one ended. A loaded machine
//! that delays the probing thread widens the brackets (and the tests' tolerances with them)
//! instead of making a check fail.
#![allow(clippy::disallowed_methods)] // std::thread::sleep: the prober is a plain thread

use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime};

/// Now, Unix seconds, on a monotonic clock anchored to the wall clock at its first use.
pub fn unix_now() -> f64 {
    static ANCHOR: OnceLock<(f64, Instant)> = OnceLock::new();
    let (unix0, t0) = ANCHOR.get_or_init(|| {
        let unix = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        (unix, Instant::now())
    });
    unix0 + t0.elapsed().as_secs_f64()
}

/// One probe attempt: when it started and ended (Unix seconds) and whether it passed.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Attempt {
    /// Start, Unix seconds.
    pub start: f64,
    /// End, Unix seconds.
    pub end: f64,
    /// The service answered.
    pub ok: bool,
}

/// One outage as the stopwatch saw it: the four attempts around its edges.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Downtime {
    /// The last passing attempt before it.
    pub last_up: Attempt,
    /// The first failing attempt.
    pub first_down: Attempt,
    /// The last failing attempt.
    pub last_down: Attempt,
    /// The first passing attempt after it.
    pub first_up: Attempt,
}

impl Downtime {
    /// The service went away within this interval (Unix seconds).
    pub fn went_down(&self) -> (f64, f64) {
        (self.last_up.start, self.first_down.end)
    }

    /// The service came back within this interval (Unix seconds).
    pub fn came_back(&self) -> (f64, f64) {
        (self.last_down.start, self.first_up.end)
    }

    /// The outage's length: the shortest and the longest the attempts allow, seconds.
    pub fn seconds(&self) -> (f64, f64) {
        let (d0, d1) = self.went_down();
        let (u0, u1) = self.came_back();
        ((u0 - d1).max(0.0), u1 - d0)
    }
}

/// How far `x` lies outside `[lo, hi]` (0 inside).
pub fn distance(x: f64, (lo, hi): (f64, f64)) -> f64 {
    if x < lo {
        lo - x
    } else if x > hi {
        x - hi
    } else {
        0.0
    }
}

#[derive(Debug, Default)]
struct Seen {
    outages: Vec<Downtime>,
    /// The service was down when the stopwatch started, or an outage is under way.
    open: Option<(Option<Attempt>, Attempt, Attempt)>,
    last: Option<Attempt>,
    attempts: u64,
}

impl Seen {
    fn record(&mut self, a: Attempt) {
        self.attempts += 1;
        let prev = self.last.replace(a);
        match (prev, a.ok, self.open.take()) {
            // Still down: extend the outage.
            (_, false, Some((up, first, _))) => self.open = Some((up, first, a)),
            // Goes down (or was down from the start).
            (p, false, None) => self.open = Some((p.filter(|p| p.ok), a, a)),
            // Back up: an outage is complete when it began after a passing attempt.
            (_, true, Some((Some(last_up), first_down, last_down))) => {
                self.outages.push(Downtime {
                    last_up,
                    first_down,
                    last_down,
                    first_up: a,
                });
            }
            (_, true, _) => {}
        }
    }
}

/// A thread probing a service back to back (a short pause between attempts, 1 ms unless
/// told) until dropped, keeping every outage it saw.
#[derive(Debug)]
pub struct Stopwatch {
    seen: Arc<Mutex<Seen>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Stopwatch {
    /// Starts probing with `probe` (true: the service answered), about every millisecond.
    pub fn start(probe: impl FnMut() -> bool + Send + 'static) -> Self {
        Self::start_every(Duration::from_millis(1), probe)
    }

    /// Starts probing with `probe`, pausing `pause` between attempts: for a service where each
    /// attempt costs (PostgreSQL forks a backend per connection).
    pub fn start_every(pause: Duration, mut probe: impl FnMut() -> bool + Send + 'static) -> Self {
        let seen = Arc::new(Mutex::new(Seen::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let (s, st) = (seen.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            while !st.load(Ordering::Relaxed) {
                let start = unix_now();
                let ok = probe();
                let end = unix_now();
                s.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .record(Attempt { start, end, ok });
                std::thread::sleep(pause);
            }
        });
        Self {
            seen,
            stop,
            thread: Some(thread),
        }
    }

    /// Probes with a TCP connect to `addr` (200 ms timeout).
    ///
    /// # Panics
    /// When `addr` is not a socket address.
    pub fn tcp(addr: &str) -> Self {
        let addr: SocketAddr = addr
            .parse()
            .unwrap_or_else(|e| panic!("stopwatch address {addr}: {e}"));
        Self::start(move || TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok())
    }

    /// The complete outages seen so far (down after a passing attempt, then up again).
    pub fn outages(&self) -> Vec<Downtime> {
        self.seen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .outages
            .clone()
    }

    /// How many attempts it made.
    pub fn attempts(&self) -> u64 {
        self.seen.lock().unwrap_or_else(|e| e.into_inner()).attempts
    }

    /// The longest complete outage that began after `after` (Unix seconds), once the
    /// stopwatch has caught up with now (an attempt begun since this call passed), waiting up
    /// to `timeout`. The longest, not the first: a single probe that fails on a loaded machine
    /// (a connect timing out, a server out of connection slots) is a blip of a few
    /// milliseconds beside the outage a drill causes.
    pub fn outage_after(&self, after: f64, timeout: Duration) -> Option<Downtime> {
        let now = unix_now();
        crate::drill::poll_for(timeout, || {
            let seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
            if !seen.last.is_some_and(|a| a.ok && a.start >= now) {
                return None;
            }
            seen.outages
                .iter()
                .filter(|o| o.first_down.end >= after)
                .max_by(|a, b| a.seconds().0.total_cmp(&b.seconds().0))
                .copied()
        })
    }
}

impl Drop for Stopwatch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// How late after the apply stamp the service may be seen gone, seconds: the killed process
/// still has to be scheduled to exit (its listening socket closes then), which the drill's
/// inject call does not wait for. Seen here within 2 ms of the stamp in every run, on a
/// 2-core machine at a load average of 9 to 12; 50 ms leaves room for a scheduler that keeps
/// the dying process waiting, and is still half the error of a fault time stamped one
/// 100 ms step early.
pub const EXIT_MARGIN: f64 = 0.050;

/// Checks a drill report (JSON) against an outage the test saw itself, and returns a line of
/// the figures:
///
/// - the fault time: the first fault's apply stamp lies within the inject call, as the kill
///   does, and the service goes away at most [`EXIT_MARGIN`] after the kill; so `fault_at`
///   lies between the moment the stopwatch saw the service go minus the call's latency (the
///   `fault-apply` event's, in the timeline) and [`EXIT_MARGIN`], and that moment plus the
///   call's latency;
/// - the recovery point (`rto.recovered_at`) is where the stopwatch saw the service come
///   back, within the precision the report states (`rto.precision_seconds`);
/// - the RTO is within that precision, plus the fault time's own slack, of the outage's
///   length on the stopwatch.
///
/// # Panics
/// When the report lacks the figures or one check fails.
pub fn assert_rto_matches(report: &serde_json::Value, outage: &Downtime) -> String {
    let f = |v: &serde_json::Value, what: &str| {
        v.as_f64()
            .unwrap_or_else(|| panic!("the report has no {what}: {report:#}"))
    };
    let fault_at = f(&report["fault_at"], "fault_at");
    let rto = f(&report["rto"]["seconds"], "rto.seconds");
    let recovered_at = f(&report["rto"]["recovered_at"], "rto.recovered_at");
    let precision = f(&report["rto"]["precision_seconds"], "rto.precision_seconds");
    let apply_latency = report["timeline"]
        .as_array()
        .and_then(|t| {
            t.iter()
                .find(|e| e["kind"] == "fault-apply")
                .and_then(|e| e["latency"].as_f64())
        })
        .unwrap_or_else(|| panic!("no fault-apply event with a latency: {report:#}"));
    let (down, up, length) = (outage.went_down(), outage.came_back(), outage.seconds());
    let line = format!(
        "fault_at {fault_at:.4} (inject call {apply_latency:.4} s), stopwatch: down in [{:.4}, {:.4}]; \
         recovered_at {recovered_at:.4} ± {precision:.4}, stopwatch: up in [{:.4}, {:.4}]; \
         RTO {rto:.4} s, stopwatch outage [{:.4}, {:.4}] s",
        down.0, down.1, up.0, up.1, length.0, length.1
    );
    let early = distance(
        fault_at,
        (down.0 - apply_latency - EXIT_MARGIN, down.1 + apply_latency),
    );
    assert!(
        early == 0.0,
        "the report's fault time is {early:.4} s off the outage the test saw: {line}"
    );
    let off = distance(recovered_at, up);
    assert!(
        off <= precision,
        "the report's recovery point is {off:.4} s off the test's stopwatch, more than its stated precision {precision:.4} s: {line}"
    );
    let slack = precision + apply_latency + EXIT_MARGIN;
    let off = distance(rto, length);
    assert!(
        off <= slack,
        "the report's RTO is {off:.4} s off the outage on the test's stopwatch, more than {slack:.4} s \
         (precision + inject call + exit margin): {line}"
    );
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(start: f64, ok: bool) -> Attempt {
        Attempt {
            start,
            end: start + 0.001,
            ok,
        }
    }

    #[test]
    fn an_outage_is_bracketed_by_the_attempts_around_its_edges() {
        let mut s = Seen::default();
        for (t, ok) in [
            (0.0, false), // down from the start: no complete outage
            (1.0, true),
            (2.0, true),
            (3.0, false),
            (4.0, false),
            (5.0, true),
            (6.0, true),
        ] {
            s.record(at(t, ok));
        }
        assert_eq!(s.outages.len(), 1, "{s:?}");
        let o = s.outages[0];
        assert_eq!(o.went_down(), (2.0, 3.001));
        assert_eq!(o.came_back(), (4.0, 5.001));
        let (lo, hi) = o.seconds();
        assert!(
            (lo - 0.999).abs() < 1e-9 && (hi - 3.001).abs() < 1e-9,
            "{lo} {hi}"
        );
        assert_eq!(distance(1.0, (2.0, 3.0)), 1.0);
        assert_eq!(distance(2.5, (2.0, 3.0)), 0.0);
        assert_eq!(distance(3.5, (2.0, 3.0)), 0.5);
    }
}
