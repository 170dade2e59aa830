//! Toxics of the built-in TCP proxy: what each one does to a stream, as serde types, plus
//! the pure arithmetic behind them (jitter sampling, slicing, pacing).
//!
//! The names and semantics follow Toxiproxy so that people who know it can read a spec:
//! a toxic acts on one direction of every proxied connection — `upstream` is client → server,
//! `downstream` (the default, as in Toxiproxy) is server → client, so a request-response round
//! trip crosses a downstream latency toxic once. Several toxics on one direction form a chain
//! in the order given.
//!
//! Not here: the sockets and tasks that run the chain ([`super::proxy`]).

use std::time::Duration;

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Which direction of a proxied connection a toxic acts on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Stream {
    /// Client → server (requests).
    Upstream,
    /// Server → client (responses); the default, as in Toxiproxy.
    #[default]
    Downstream,
    /// Both directions: the toxic is instantiated once per direction.
    Both,
}

impl Stream {
    /// Whether a toxic with this stream setting acts on `dir`.
    pub fn covers(self, dir: Direction) -> bool {
        matches!(
            (self, dir),
            (Stream::Both, _)
                | (Stream::Upstream, Direction::Upstream)
                | (Stream::Downstream, Direction::Downstream)
        )
    }
}

/// One of the two directions of a proxied connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// Client → server.
    Upstream,
    /// Server → client.
    Downstream,
}

impl Direction {
    /// `upstream` or `downstream`, for logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Upstream => "upstream",
            Direction::Downstream => "downstream",
        }
    }
}

/// A toxic and the direction(s) it acts on.
///
/// YAML/JSON form: `{type: latency, stream: downstream, latency: 50ms, jitter: 5ms}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Toxic {
    /// Delay every chunk by `latency` ± a uniformly drawn `jitter`. Chunks keep their order
    /// and are pipelined: the delay is counted from when a chunk was read, so throughput is not
    /// divided by the latency.
    Latency {
        /// Direction(s).
        #[serde(default)]
        stream: Stream,
        /// The added delay.
        #[serde(with = "duration_serde")]
        latency: Duration,
        /// Half-width of the uniform spread around `latency`.
        #[serde(default, with = "duration_serde")]
        jitter: Duration,
    },
    /// Limit the rate to `rate` kilobytes (1000 bytes) per second.
    Bandwidth {
        /// Direction(s).
        #[serde(default)]
        stream: Stream,
        /// KB/s; must be > 0.
        rate: u64,
    },
    /// Stop forwarding (data is dropped); when `timeout` > 0, close the connection that long
    /// after it was opened. A blackhole.
    Timeout {
        /// Direction(s).
        #[serde(default)]
        stream: Stream,
        /// 0: never close, only drop.
        #[serde(default, with = "duration_serde")]
        timeout: Duration,
    },
    /// Reset the connection (TCP RST, via SO_LINGER 0) `timeout` after it was opened.
    ResetPeer {
        /// Direction(s).
        #[serde(default)]
        stream: Stream,
        /// 0: reset at once.
        #[serde(default, with = "duration_serde")]
        timeout: Duration,
    },
    /// Cut data into chunks of `average_size` ± `size_variation` bytes with `delay` between.
    Slicer {
        /// Direction(s).
        #[serde(default)]
        stream: Stream,
        /// Bytes per slice on average; must be > 0.
        average_size: usize,
        /// Half-width of the uniform spread of the slice size; must be < `average_size`.
        #[serde(default)]
        size_variation: usize,
        /// Pause between slices.
        #[serde(default, with = "duration_serde")]
        delay: Duration,
    },
    /// Delay the close (FIN) of the connection by `delay` after the sender closed.
    SlowClose {
        /// Direction(s).
        #[serde(default)]
        stream: Stream,
        /// How long the close is held back.
        #[serde(with = "duration_serde")]
        delay: Duration,
    },
    /// Close the connection once `bytes` bytes have gone through in this direction.
    LimitData {
        /// Direction(s).
        #[serde(default)]
        stream: Stream,
        /// Bytes let through before the close; must be > 0.
        bytes: u64,
    },
}

/// A toxic that makes no sense.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ToxicError {
    /// A value outside its range, with the reason.
    #[error("toxic `{toxic}`: {problem}")]
    Invalid {
        /// The toxic's type name.
        toxic: &'static str,
        /// What is wrong and what is allowed.
        problem: String,
    },
}

/// The longest delay any toxic accepts: beyond this a fault's own duration is the better tool.
pub const MAX_TOXIC_DELAY: Duration = Duration::from_secs(3600);

impl Toxic {
    /// The toxic's type name as written in specs.
    pub fn name(&self) -> &'static str {
        match self {
            Toxic::Latency { .. } => "latency",
            Toxic::Bandwidth { .. } => "bandwidth",
            Toxic::Timeout { .. } => "timeout",
            Toxic::ResetPeer { .. } => "reset_peer",
            Toxic::Slicer { .. } => "slicer",
            Toxic::SlowClose { .. } => "slow_close",
            Toxic::LimitData { .. } => "limit_data",
        }
    }

    /// The direction(s) the toxic acts on.
    pub fn stream(&self) -> Stream {
        match self {
            Toxic::Latency { stream, .. }
            | Toxic::Bandwidth { stream, .. }
            | Toxic::Timeout { stream, .. }
            | Toxic::ResetPeer { stream, .. }
            | Toxic::Slicer { stream, .. }
            | Toxic::SlowClose { stream, .. }
            | Toxic::LimitData { stream, .. } => *stream,
        }
    }

    /// Check the values; the error names the toxic and the field.
    pub fn validate(&self) -> Result<(), ToxicError> {
        let name = self.name();
        let invalid = |problem: String| ToxicError::Invalid {
            toxic: name,
            problem,
        };
        let delays: Vec<(&str, Duration)> = match self {
            Toxic::Latency {
                latency, jitter, ..
            } => {
                if jitter > latency {
                    return Err(invalid(format!(
                        "jitter ({}) must not exceed latency ({}): a chunk cannot leave before it arrived",
                        humantime::format_duration(*jitter),
                        humantime::format_duration(*latency)
                    )));
                }
                vec![("latency", *latency)]
            }
            Toxic::Bandwidth { rate, .. } => {
                if *rate == 0 {
                    return Err(invalid(
                        "rate must be > 0 KB/s (use `timeout` to stop data)".into(),
                    ));
                }
                vec![]
            }
            Toxic::Timeout { timeout, .. } | Toxic::ResetPeer { timeout, .. } => {
                vec![("timeout", *timeout)]
            }
            Toxic::Slicer {
                average_size,
                size_variation,
                delay,
                ..
            } => {
                if *average_size == 0 {
                    return Err(invalid("average_size must be > 0 bytes".into()));
                }
                if size_variation >= average_size {
                    return Err(invalid(format!(
                        "size_variation ({size_variation}) must be smaller than average_size ({average_size})"
                    )));
                }
                vec![("delay", *delay)]
            }
            Toxic::SlowClose { delay, .. } => vec![("delay", *delay)],
            Toxic::LimitData { bytes, .. } => {
                if *bytes == 0 {
                    return Err(invalid(
                        "bytes must be > 0 (use `timeout` to stop data)".into(),
                    ));
                }
                vec![]
            }
        };
        for (field, d) in delays {
            if d > MAX_TOXIC_DELAY {
                return Err(invalid(format!(
                    "{field} {} exceeds the maximum of {}",
                    humantime::format_duration(d),
                    humantime::format_duration(MAX_TOXIC_DELAY)
                )));
            }
        }
        Ok(())
    }
}

/// `latency ± jitter` for a uniform draw `u` in `[0, 1]`: `latency - jitter + 2·jitter·u`.
/// Pure so the spread can be tested without randomness.
pub fn jittered(latency: Duration, jitter: Duration, u: f64) -> Duration {
    let u = u.clamp(0.0, 1.0);
    let low = latency.saturating_sub(jitter);
    low + (jitter * 2).mul_f64(u)
}

/// The size of the next slice for the slicer: `average ± variation` for a uniform draw `u` in
/// `[0, 1]`, at least 1 byte and at most `remaining`.
pub fn slice_len(average: usize, variation: usize, u: f64, remaining: usize) -> usize {
    let u = u.clamp(0.0, 1.0);
    let low = average.saturating_sub(variation);
    // Rounding a value in [0, 2·variation] cannot overflow usize for validated inputs.
    let spread = ((2 * variation) as f64 * u).round() as usize;
    (low + spread).clamp(1, remaining.max(1))
}

/// How long `bytes` take at `rate_kbps` KB/s (1 KB = 1000 bytes).
pub fn transmit_time(bytes: usize, rate_kbps: u64) -> Duration {
    if rate_kbps == 0 {
        return Duration::MAX;
    }
    Duration::from_secs_f64(bytes as f64 / (rate_kbps as f64 * 1000.0))
}

/// The largest piece a bandwidth toxic sends at once: 100 ms worth of data (Toxiproxy's
/// granularity), at least 1 byte, so a big chunk is paced rather than sent in one burst.
pub fn bandwidth_piece(rate_kbps: u64) -> usize {
    usize::try_from(rate_kbps.saturating_mul(100))
        .unwrap_or(usize::MAX)
        .max(1)
}

/// `Duration` fields written as [`HumanDuration`] strings (`50ms`, `1m30s`), so toxics read
/// like every other duration in a spec.
pub mod duration_serde {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use crate::units::HumanDuration;

    /// Write as a humantime string.
    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        HumanDuration(*d).serialize(s)
    }

    /// Read a humantime string (`50ms`, `2s`).
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        HumanDuration::deserialize(d).map(|h| h.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_spans_latency_plus_minus_jitter() {
        let l = Duration::from_millis(50);
        let j = Duration::from_millis(5);
        assert_eq!(jittered(l, j, 0.0), Duration::from_millis(45));
        assert_eq!(jittered(l, j, 0.5), Duration::from_millis(50));
        assert_eq!(jittered(l, j, 1.0), Duration::from_millis(55));
        assert_eq!(jittered(l, Duration::ZERO, 0.7), l);
    }

    #[test]
    fn slices_stay_within_variation_and_remaining() {
        assert_eq!(slice_len(10, 2, 0.0, 100), 8);
        assert_eq!(slice_len(10, 2, 1.0, 100), 12);
        assert_eq!(slice_len(10, 2, 1.0, 5), 5);
        assert_eq!(slice_len(1, 0, 0.3, 0), 1);
    }

    #[test]
    fn transmit_time_is_bytes_over_rate() {
        assert_eq!(transmit_time(1000, 1), Duration::from_secs(1));
        assert_eq!(transmit_time(500_000, 1000), Duration::from_millis(500));
        assert_eq!(bandwidth_piece(1000), 100_000);
    }

    #[test]
    fn toxics_parse_from_yaml_like_json_with_downstream_default() {
        let t: Toxic =
            serde_json::from_str(r#"{"type":"latency","latency":"50ms","jitter":"5ms"}"#).unwrap();
        assert_eq!(
            t,
            Toxic::Latency {
                stream: Stream::Downstream,
                latency: Duration::from_millis(50),
                jitter: Duration::from_millis(5)
            }
        );
        let bad = serde_json::from_str::<Toxic>(r#"{"type":"latency","latency":"50ms","x":1}"#);
        assert!(bad.is_err());
        let bad = serde_json::from_str::<Toxic>(r#"{"type":"latency","latency":"fast"}"#);
        assert!(
            bad.unwrap_err()
                .to_string()
                .contains("invalid duration \"fast\"")
        );
    }

    #[test]
    fn validation_names_the_problem() {
        let t = Toxic::Latency {
            stream: Stream::Both,
            latency: Duration::from_millis(5),
            jitter: Duration::from_millis(6),
        };
        assert!(
            t.validate()
                .unwrap_err()
                .to_string()
                .contains("jitter (6ms) must not exceed")
        );
        let t = Toxic::Bandwidth {
            stream: Stream::Upstream,
            rate: 0,
        };
        assert!(
            t.validate()
                .unwrap_err()
                .to_string()
                .starts_with("toxic `bandwidth`")
        );
        let t = Toxic::Slicer {
            stream: Stream::Downstream,
            average_size: 4,
            size_variation: 4,
            delay: Duration::ZERO,
        };
        assert!(t.validate().is_err());
        assert!(
            Toxic::LimitData {
                stream: Stream::Both,
                bytes: 1
            }
            .validate()
            .is_ok()
        );
    }

    #[test]
    fn stream_covers_directions() {
        assert!(Stream::Both.covers(Direction::Upstream));
        assert!(Stream::Downstream.covers(Direction::Downstream));
        assert!(!Stream::Downstream.covers(Direction::Upstream));
    }
}
