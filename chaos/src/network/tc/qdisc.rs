//! The qdisc side of a tc fault: a spec's leaf qdisc ([`Leaf`]: `netem` or `tbf`) both as tc
//! would spell it (for plans and logs, which operators can replay by hand) and as the kernel
//! takes it over netlink (`TCA_OPTIONS` bytes: `struct tc_netem_qopt`, `tc_tbf_qopt`,
//! `tc_htb_glob`, `tc_htb_opt` and their attributes, from `linux/pkt_sched.h`); rates in tc's
//! units; the root handle derived from a fault id. Pure, so fixtures test it.
//!
//! Times go to the kernel in its scheduler ticks (64 ns: `PSCHED_SHIFT` 6, what
//! `/proc/net/psched` advertises), and rates are tagged as Ethernet link layer so the kernel
//! needs no rate table (the way tc sends them).

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::NetemSpec;
use crate::units::{ByteSize, Percent};

/// A rate in bits per second, written as tc writes it (`1mbit`, `500kbit`, `2mbps`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Rate(pub u64);

impl FromStr for Rate {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        parse_rate(s).map(Rate)
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}bit", self.0)
    }
}

impl Serialize for Rate {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Rate {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Parse a tc rate into bits per second: `bit kbit mbit gbit tbit` (×1000 steps) and the byte
/// forms `bps kbps mbps gbps` (×8). A bare number is bits per second. Pure.
pub(super) fn parse_rate(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let mult: f64 = match unit.to_ascii_lowercase().as_str() {
        "" | "bit" => 1.0,
        "kbit" => 1e3,
        "mbit" => 1e6,
        "gbit" => 1e9,
        "tbit" => 1e12,
        "bps" => 8.0,
        "kbps" => 8e3,
        "mbps" => 8e6,
        "gbps" => 8e9,
        other => {
            return Err(format!(
                "invalid rate {s:?}: unknown unit {other:?}; write it like 1mbit, 500kbit or 2mbps (bytes)"
            ));
        }
    };
    let value: f64 = num
        .parse()
        .map_err(|_| format!("invalid rate {s:?}; write it like 1mbit or 500kbit"))?;
    let bits = value * mult;
    if !bits.is_finite() || !(8.0..=1e13).contains(&bits) {
        return Err(format!(
            "invalid rate {s:?}: must be between 8bit and 10tbit"
        ));
    }
    Ok(bits.round() as u64)
}

/// A stable root-qdisc handle for a fault id, in `0x100..=0xfeff` (clear of the kernel's
/// `8001:`-style automatic handles and of 0/ffff). Pure.
pub(super) fn handle_for(id: &str) -> u16 {
    // FNV-1a, folded to 16 bits.
    let mut h: u32 = 0x811c_9dc5;
    for b in id.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    let folded = ((h >> 16) ^ (h & 0xffff)) as u16;
    0x100 + folded % (0xfeff - 0x100 + 1)
}

/// tc's spelling of a duration in microseconds (`1500us`).
fn us(d: Duration) -> String {
    format!("{}us", d.as_micros())
}

/// tc's spelling of a percentage.
fn pct(p: Percent) -> String {
    format!("{}%", p.0)
}

/// The `netem …` arguments for a spec, or why there are none. Pure.
pub(super) fn netem_args(spec: &NetemSpec) -> Result<Vec<String>, String> {
    let mut a = vec!["netem".to_owned()];
    match (spec.delay, spec.jitter) {
        (Some(d), j) => {
            a.extend(["delay".to_owned(), us(d.0)]);
            if let Some(j) = j.filter(|j| !j.0.is_zero()) {
                if j.0 > d.0 {
                    return Err(format!("--jitter {j} must not exceed --delay {d}"));
                }
                a.push(us(j.0));
            }
        }
        (None, Some(_)) => return Err("--jitter needs --delay".into()),
        (None, None) => {}
    }
    for (word, p) in [
        ("loss", spec.loss),
        ("duplicate", spec.duplicate),
        ("corrupt", spec.corrupt),
    ] {
        if let Some(p) = p {
            a.extend([word.to_owned(), pct(p)]);
        }
    }
    if a.len() == 1 {
        return Err(
            "nothing to do: give at least one of --delay, --loss, --duplicate, --corrupt".into(),
        );
    }
    Ok(a)
}

/// The bucket size of a rate limit: as given, else 10 ms worth of data and never less than a
/// few full-size (GSO) packets. Pure.
pub(super) fn tbf_burst(rate: Rate, burst: Option<ByteSize>) -> u64 {
    burst
        .map(|b| b.0)
        .unwrap_or_else(|| (rate.0 / 8 / 100).max(16 * 1024))
}

/// The `tbf …` arguments for a rate and optional burst. Pure.
pub(super) fn tbf_args(rate: Rate, burst: Option<ByteSize>) -> Vec<String> {
    let burst = tbf_burst(rate, burst);
    vec![
        "tbf".into(),
        "rate".into(),
        format!("{}bit", rate.0),
        "burst".into(),
        format!("{burst}b"),
        "latency".into(),
        "200ms".into(),
    ]
}

/// A queue's limit in packets, as tc defaults it for netem.
const NETEM_LIMIT: u32 = 1000;
/// How long a tbf queue may hold a packet (tc's `latency 200ms`).
const TBF_LATENCY: Duration = Duration::from_millis(200);

/// The leaf qdisc of a fault: what impairs the traffic.
#[derive(Clone, Debug, PartialEq)]
pub(super) enum Leaf {
    /// `netem`: delay ± jitter, loss, duplication, corruption.
    Netem {
        /// Added delay.
        delay: Duration,
        /// Its spread.
        jitter: Duration,
        /// Shares in percent.
        loss: f64,
        /// Shares in percent.
        duplicate: f64,
        /// Shares in percent.
        corrupt: f64,
    },
    /// `tbf`: a token bucket.
    Tbf {
        /// Bits per second.
        rate: u64,
        /// Bucket size in bytes.
        burst: u64,
    },
}

impl Leaf {
    /// The leaf of a `netem` spec, or why it has none. Pure.
    pub(super) fn netem(spec: &NetemSpec) -> Result<Leaf, String> {
        // One validation for both spellings: the tc arguments are what the plan shows.
        netem_args(spec)?;
        let p = |v: Option<Percent>| v.map_or(0.0, |p| p.0);
        Ok(Leaf::Netem {
            delay: spec.delay.map_or(Duration::ZERO, |d| d.0),
            jitter: spec.jitter.map_or(Duration::ZERO, |d| d.0),
            loss: p(spec.loss),
            duplicate: p(spec.duplicate),
            corrupt: p(spec.corrupt),
        })
    }

    /// The leaf of a rate limit. Pure.
    pub(super) fn tbf(rate: Rate, burst: Option<ByteSize>) -> Leaf {
        Leaf::Tbf {
            rate: rate.0,
            burst: tbf_burst(rate, burst),
        }
    }

    /// The qdisc kind.
    pub(super) fn kind(&self) -> &'static str {
        match self {
            Leaf::Netem { .. } => "netem",
            Leaf::Tbf { .. } => "tbf",
        }
    }

    /// `TCA_OPTIONS` for this leaf. Pure.
    pub(super) fn options(&self) -> Vec<u8> {
        match self {
            Leaf::Netem {
                delay,
                jitter,
                loss,
                duplicate,
                corrupt,
            } => netem_options(*delay, *jitter, *loss, *duplicate, *corrupt),
            Leaf::Tbf { rate, burst } => tbf_options(*rate, *burst),
        }
    }
}

/// A netlink attribute: length, type, value, padded to 4 bytes. Pure.
pub(super) fn nla(kind: u16, value: &[u8]) -> Vec<u8> {
    let len = 4 + value.len();
    let mut out = Vec::with_capacity((len + 3) & !3);
    out.extend_from_slice(&(len as u16).to_ne_bytes());
    out.extend_from_slice(&kind.to_ne_bytes());
    out.extend_from_slice(value);
    out.resize((len + 3) & !3, 0);
    out
}

/// Kernel scheduler ticks (64 ns) for a duration, as `tc` computes them. Pure.
fn ticks(d: Duration) -> u32 {
    u32::try_from(d.as_nanos() >> 6).unwrap_or(u32::MAX)
}

/// How long `bytes` take at `rate_bytes` per second, in ticks. Pure.
fn xmit_ticks(rate_bytes: u64, bytes: u64) -> u32 {
    if rate_bytes == 0 {
        return u32::MAX;
    }
    let ns = u128::from(bytes) * 1_000_000_000 / u128::from(rate_bytes);
    u32::try_from(ns >> 6).unwrap_or(u32::MAX)
}

/// A probability in the kernel's scale (`u32::MAX` is 100 %). Pure.
fn probability(percent: f64) -> u32 {
    (percent / 100.0 * f64::from(u32::MAX)).round() as u32
}

/// `struct tc_ratespec` for `rate_bytes` per second (Ethernet link layer; the 32-bit field
/// saturates, the 64-bit attribute carries the rest). Pure.
fn ratespec(rate_bytes: u64) -> [u8; 12] {
    let mut r = [0u8; 12];
    r[1] = 1; // linklayer: TC_LINKLAYER_ETHERNET
    r[8..12].copy_from_slice(&u32::try_from(rate_bytes).unwrap_or(u32::MAX).to_ne_bytes());
    r
}

// linux/pkt_sched.h
const TCA_TBF_PARMS: u16 = 1;
const TCA_TBF_RATE64: u16 = 4;
const TCA_TBF_BURST: u16 = 6;
const TCA_HTB_PARMS: u16 = 1;
const TCA_HTB_INIT: u16 = 2;
const TCA_HTB_RATE64: u16 = 6;
const TCA_HTB_CEIL64: u16 = 7;
const TCA_NETEM_CORRUPT: u16 = 4;
const TCA_NETEM_LATENCY64: u16 = 10;
const TCA_NETEM_JITTER64: u16 = 11;

/// `tbf rate R burst B latency 200ms`: `TCA_TBF_PARMS` (`struct tc_tbf_qopt`: rate,
/// peakrate, limit, buffer, mtu), `TCA_TBF_BURST`, and `TCA_TBF_RATE64` above 32 bits. Pure.
pub(super) fn tbf_options(rate_bits: u64, burst: u64) -> Vec<u8> {
    let rate = rate_bits / 8;
    // tc: limit = rate × latency + burst.
    let limit = (u128::from(rate) * TBF_LATENCY.as_micros() / 1_000_000) as u64 + burst;
    let mut qopt = Vec::with_capacity(36);
    qopt.extend_from_slice(&ratespec(rate));
    qopt.extend_from_slice(&[0u8; 12]); // no peak rate
    qopt.extend_from_slice(&u32::try_from(limit).unwrap_or(u32::MAX).to_ne_bytes());
    qopt.extend_from_slice(&xmit_ticks(rate, burst).to_ne_bytes());
    qopt.extend_from_slice(&0u32.to_ne_bytes()); // mtu
    let mut out = nla(TCA_TBF_PARMS, &qopt);
    out.extend(nla(
        TCA_TBF_BURST,
        &u32::try_from(burst).unwrap_or(u32::MAX).to_ne_bytes(),
    ));
    if rate > u64::from(u32::MAX) {
        out.extend(nla(TCA_TBF_RATE64, &rate.to_ne_bytes()));
    }
    out
}

/// `netem delay D J loss L duplicate U corrupt C`: `struct tc_netem_qopt` (latency, limit,
/// loss, gap, duplicate, jitter) followed by attributes: the corruption share and the 64-bit
/// nanosecond delay and jitter. Pure.
pub(super) fn netem_options(
    delay: Duration,
    jitter: Duration,
    loss: f64,
    duplicate: f64,
    corrupt: f64,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    for v in [
        ticks(delay),
        NETEM_LIMIT,
        probability(loss),
        0,
        probability(duplicate),
        ticks(jitter),
    ] {
        out.extend_from_slice(&v.to_ne_bytes());
    }
    if corrupt > 0.0 {
        let mut c = probability(corrupt).to_ne_bytes().to_vec();
        c.extend_from_slice(&0u32.to_ne_bytes());
        out.extend(nla(TCA_NETEM_CORRUPT, &c));
    }
    let ns = |d: Duration| {
        i64::try_from(d.as_nanos())
            .unwrap_or(i64::MAX)
            .to_ne_bytes()
    };
    out.extend(nla(TCA_NETEM_LATENCY64, &ns(delay)));
    out.extend(nla(TCA_NETEM_JITTER64, &ns(jitter)));
    out
}

/// `htb` with no default class (unselected traffic leaves through htb's direct queue):
/// `TCA_HTB_INIT` (`struct tc_htb_glob`: version 3, r2q 10, default 0). Pure.
pub(super) fn htb_root_options() -> Vec<u8> {
    let mut glob = Vec::with_capacity(20);
    for v in [3u32, 10, 0, 0, 0] {
        glob.extend_from_slice(&v.to_ne_bytes());
    }
    nla(TCA_HTB_INIT, &glob)
}

/// The class that holds the leaf: `htb rate 100gbit burst 1mb cburst 1mb quantum 60000`, so
/// it never shapes by itself (`TCA_HTB_PARMS`: `struct tc_htb_opt`, with the 64-bit rate and
/// ceiling attributes). Pure.
pub(super) fn htb_class_options() -> Vec<u8> {
    const RATE_BYTES: u64 = 100_000_000_000 / 8;
    const BURST: u64 = 1024 * 1024;
    let mut opt = Vec::with_capacity(44);
    opt.extend_from_slice(&ratespec(RATE_BYTES));
    opt.extend_from_slice(&ratespec(RATE_BYTES));
    let buffer = xmit_ticks(RATE_BYTES, BURST);
    for v in [buffer, buffer, 60_000, 0, 0] {
        opt.extend_from_slice(&v.to_ne_bytes());
    }
    let mut out = nla(TCA_HTB_PARMS, &opt);
    out.extend(nla(TCA_HTB_RATE64, &RATE_BYTES.to_ne_bytes()));
    out.extend(nla(TCA_HTB_CEIL64, &RATE_BYTES.to_ne_bytes()));
    out
}
