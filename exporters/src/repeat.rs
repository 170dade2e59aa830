//! Logging a failure that repeats: once in full, then a summary at most once a minute while
//! it lasts, then one line when it ends. The export sender, the log forwarder and the agent's
//! collectors all fail the same way (a backend, socket or file that stays away for minutes),
//! and a line per attempt hides everything else in the log; [`Repeated`] decides which
//! attempt deserves a line, the caller writes it.
//!
//! [`human`] rounds a duration to what a person reads (`674ms`, `5.6s`, `2m10s`); every
//! duration the agent logs goes through it, as sizes go through [`human_bytes`].

use std::time::{Duration, Instant};

/// How often a lasting failure is summarised.
pub const SUMMARY_EVERY: Duration = Duration::from_secs(60);

/// `d` rounded for people: `0ms`…`999ms`, `1.0s`…`59.9s`, `1m0s`…`59m59s`, `1h0m`… .
pub fn human(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let tenths = (ms + 50) / 100;
    if tenths < 600 {
        return format!("{}.{}s", tenths / 10, tenths % 10);
    }
    let s = (ms + 500) / 1000;
    if s < 3600 {
        return format!("{}m{}s", s / 60, s % 60);
    }
    let m = (s + 30) / 60;
    format!("{}h{}m", m / 60, m % 60)
}

/// `n` bytes for people: `512 B`, `2.8 MiB`, `1.0 GiB`.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    match UNITS.get(unit) {
        Some(u) if unit > 0 => format!("{v:.1} {u}"),
        _ => format!("{n} B"),
    }
}

/// What to log for one failed attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    /// The first failure of an outage: log it in full (WARN).
    First,
    /// A minute has passed since the last line: log a summary (WARN) of `attempts` failed
    /// attempts over `lasting`.
    Summary {
        /// Failed attempts since the outage began.
        attempts: u64,
        /// Since the outage began.
        lasting: Duration,
    },
    /// Nothing above debug level.
    Quiet,
}

/// An outage that ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Recovered {
    /// Failed attempts during the outage.
    pub attempts: u64,
    /// How long it lasted.
    pub lasted: Duration,
}

/// The state of one repeating failure.
#[derive(Debug, Default)]
pub struct Repeated {
    outage: Option<Outage>,
}

#[derive(Debug)]
struct Outage {
    began: Instant,
    last_line: Instant,
    attempts: u64,
}

impl Repeated {
    /// A failed attempt now.
    pub fn failed(&mut self) -> Failure {
        self.failed_at(Instant::now())
    }

    /// A successful attempt now: `Some` when it ends an outage (log it at INFO).
    pub fn succeeded(&mut self) -> Option<Recovered> {
        self.succeeded_at(Instant::now())
    }

    /// Whether an outage is going on.
    pub fn failing(&self) -> bool {
        self.outage.is_some()
    }

    fn failed_at(&mut self, now: Instant) -> Failure {
        let Some(o) = &mut self.outage else {
            self.outage = Some(Outage {
                began: now,
                last_line: now,
                attempts: 1,
            });
            return Failure::First;
        };
        o.attempts += 1;
        if now.saturating_duration_since(o.last_line) >= SUMMARY_EVERY {
            o.last_line = now;
            return Failure::Summary {
                attempts: o.attempts,
                lasting: now.saturating_duration_since(o.began),
            };
        }
        Failure::Quiet
    }

    fn succeeded_at(&mut self, now: Instant) -> Option<Recovered> {
        self.outage.take().map(|o| Recovered {
            attempts: o.attempts,
            lasted: now.saturating_duration_since(o.began),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_are_rounded_for_people() {
        let cases = [
            (Duration::from_nanos(674_549_661), "674ms"),
            (Duration::ZERO, "0ms"),
            (Duration::from_millis(999), "999ms"),
            (Duration::from_millis(1000), "1.0s"),
            (Duration::from_millis(5_649), "5.6s"),
            (Duration::from_millis(59_940), "59.9s"),
            (Duration::from_millis(59_960), "1m0s"),
            (Duration::from_secs(130), "2m10s"),
            (Duration::from_secs(3 * 3600 + 125), "3h2m"),
        ];
        for (d, want) in cases {
            assert_eq!(human(d), want, "{d:?}");
        }
    }

    #[test]
    fn sizes_are_rounded_for_people() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(480_000), "468.8 KiB");
        assert_eq!(human_bytes(2_890_084), "2.8 MiB");
        assert_eq!(human_bytes(u64::MAX), "16777216.0 TiB");
    }

    #[test]
    fn one_line_first_then_one_a_minute_then_one_on_recovery() {
        let t0 = Instant::now();
        let mut r = Repeated::default();
        assert_eq!(r.succeeded_at(t0), None);
        assert_eq!(r.failed_at(t0), Failure::First);
        let mut lines = 0;
        // An attempt a second for three minutes: three summaries.
        for s in 1..=180 {
            match r.failed_at(t0 + Duration::from_secs(s)) {
                Failure::Summary { attempts, lasting } => {
                    lines += 1;
                    assert_eq!(attempts, s + 1);
                    assert_eq!(lasting, Duration::from_secs(s));
                }
                Failure::Quiet => {}
                Failure::First => panic!("a second first line at {s}s"),
            }
        }
        assert_eq!(lines, 3);
        assert!(r.failing());
        let rec = r.succeeded_at(t0 + Duration::from_secs(200)).unwrap();
        assert_eq!(rec.attempts, 181);
        assert_eq!(rec.lasted, Duration::from_secs(200));
        assert_eq!(r.succeeded_at(t0 + Duration::from_secs(201)), None);
        assert_eq!(r.failed_at(t0 + Duration::from_secs(202)), Failure::First);
    }
}
