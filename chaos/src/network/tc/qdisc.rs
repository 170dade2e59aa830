//! The qdisc side of a tc fault, as tc spells it: the `netem` and `tbf` arguments of a spec,
//! rates in tc's units, the root handle derived from a fault id, and what `tc qdisc show`
//! prints back (the root qdisc, a leaf under our class). Pure, so fixtures test it.

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

/// The root qdisc of an interface as `tc qdisc show dev X root` prints it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct RootQdisc {
    /// Kind (`netem`, `tbf`, `noqueue`, `fq_codel`…).
    pub kind: String,
    /// Major handle (0 for the kernel's default).
    pub handle: u16,
}

/// Parse `tc qdisc show dev X root`: the line `qdisc KIND HANDLE: root …`. An empty output
/// (the default `noqueue`) is `None`. Pure.
pub(super) fn parse_root_qdisc(out: &str) -> Option<RootQdisc> {
    out.lines().find_map(|line| {
        let mut words = line.split_whitespace();
        if words.next()? != "qdisc" {
            return None;
        }
        let kind = words.next()?.to_owned();
        let handle = words.next()?.strip_suffix(':')?;
        let handle = u16::from_str_radix(handle, 16).ok()?;
        let rest: Vec<&str> = words.collect();
        rest.contains(&"root").then_some(RootQdisc { kind, handle })
    })
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

/// The `tbf …` arguments for a rate and optional burst. Pure.
pub(super) fn tbf_args(rate: Rate, burst: Option<ByteSize>) -> Vec<String> {
    // At least 10 ms worth of data, and never less than a few full-size (GSO) packets.
    let burst = burst
        .map(|b| b.0)
        .unwrap_or_else(|| (rate.0 / 8 / 100).max(16 * 1024));
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

/// Whether `tc qdisc show dev X` output lists qdisc `leaf` under class `HANDLE:1`
/// (`qdisc tbf 8001: parent 1ab:1 rate …`). Pure.
pub(super) fn has_leaf(out: &str, handle: u16, leaf: &str) -> bool {
    let class = format!("{handle:x}:1");
    out.lines().any(|l| {
        let w: Vec<&str> = l.split_whitespace().take(5).collect();
        matches!(w.as_slice(), ["qdisc", kind, _, "parent", parent] if *kind == leaf && *parent == class)
    })
}
