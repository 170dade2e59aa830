//! Kernel traffic-control faults on an interface: `netem` (delay, jitter, loss, duplication,
//! corruption — qdisc `sch_netem`) and `rate-limit` (a token bucket — qdisc `sch_tbf`), each
//! installed as the interface's root qdisc with a handle derived from the fault id.
//!
//! Safety properties:
//! - **Support is probed before anything is applied** ([`probe_qdisc`]): if the qdisc kind is
//!   not built in or loaded, `tc qdisc add dev lo root …` is tried on `lo` in a throwaway
//!   network namespace, which is deleted again. A missing module gives
//!   [`FaultError::Unsupported`] naming the module, what needs it and the alternative (the
//!   proxy can add latency and limit bandwidth without kernel support).
//! - **Never half-applied**: a fault is one `tc qdisc add`, which the kernel applies whole or
//!   not at all; and `add` (not `replace`) refuses to displace a root qdisc someone else
//!   configured, so revert can never remove another tool's setup.
//! - **Revert from the record alone** ([`QdiscRecord`]: netns, dev, kind, handle): the root
//!   qdisc is deleted only if it is still ours (same kind and handle); a vanished device or
//!   namespace means there is nothing left to revert.
//!
//! Not here: matching traffic by address or port (the qdisc applies to all egress traffic of
//! the interface; use `partition` for address/port selection).

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use tracing::debug;

use super::cmd::{self, CmdError};
use super::{NetTarget, plan_with, unsupported_hint};
use crate::error::FaultError;
use crate::fault::{Context, Effect, Fault, Plan, RevertRecord};
use crate::units::{ByteSize, HumanDuration, Percent};

/// `netem`: delay/jitter/loss/duplication/corruption of everything the interface sends.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, clap::Args)]
#[serde(deny_unknown_fields)]
pub struct NetemSpec {
    /// The interface whose egress is impaired.
    #[arg(long)]
    pub dev: String,
    /// The network namespace the interface is in (as listed by `ip netns`).
    #[arg(long)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub netns: Option<String>,
    /// Added delay (e.g. 100ms).
    #[arg(long)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay: Option<HumanDuration>,
    /// Spread of the delay (needs --delay).
    #[arg(long)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jitter: Option<HumanDuration>,
    /// Share of packets dropped (e.g. 5%).
    #[arg(long)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loss: Option<Percent>,
    /// Share of packets sent twice.
    #[arg(long)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duplicate: Option<Percent>,
    /// Share of packets with a flipped bit.
    #[arg(long)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub corrupt: Option<Percent>,
    /// How long the fault lasts.
    #[arg(long)]
    pub duration: HumanDuration,
}

/// `rate-limit`: a token bucket on everything the interface sends.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, clap::Args)]
#[serde(deny_unknown_fields)]
pub struct RateLimitSpec {
    /// The interface whose egress is limited.
    #[arg(long)]
    pub dev: String,
    /// The network namespace the interface is in.
    #[arg(long)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub netns: Option<String>,
    /// The rate, in tc's units: 1mbit, 500kbit, 2mbps (bytes), 100000bit.
    #[arg(long)]
    pub rate: Rate,
    /// Bucket size; default 10 ms worth of the rate, at least 16KiB.
    #[arg(long)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst: Option<ByteSize>,
    /// How long the fault lasts.
    #[arg(long)]
    pub duration: HumanDuration,
}

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
pub fn parse_rate(s: &str) -> Result<u64, String> {
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

/// What revert needs for a qdisc fault.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QdiscRecord {
    /// The namespace, if not the agent's own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub netns: Option<String>,
    /// The interface.
    pub dev: String,
    /// `netem` or `tbf`.
    pub qdisc: String,
    /// The root qdisc's major handle (hex in tc's notation).
    pub handle: u16,
}

impl QdiscRecord {
    fn handle_str(&self) -> String {
        format!("{:x}:", self.handle)
    }
}

/// The root qdisc of an interface as `tc qdisc show dev X root` prints it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RootQdisc {
    /// Kind (`netem`, `tbf`, `noqueue`, `fq_codel`…).
    pub kind: String,
    /// Major handle (0 for the kernel's default).
    pub handle: u16,
}

/// Parse `tc qdisc show dev X root`: the line `qdisc KIND HANDLE: root …`. An empty output
/// (the default `noqueue`) is `None`. Pure.
pub fn parse_root_qdisc(out: &str) -> Option<RootQdisc> {
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
pub fn handle_for(id: &str) -> u16 {
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
pub fn netem_args(spec: &NetemSpec) -> Result<Vec<String>, String> {
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
pub fn tbf_args(rate: Rate, burst: Option<ByteSize>) -> Vec<String> {
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

/// What a qdisc kind is needed for, its module, and what works without it.
fn qdisc_needs(kind: &str) -> (&'static str, &'static str, &'static str) {
    match kind {
        "netem" => (
            "netem",
            "sch_netem",
            "delay, jitter, loss, duplication and corruption (fault kind `netem`)",
        ),
        _ => (
            "rate-limit",
            "sch_tbf",
            "rate limits (fault kind `rate-limit`)",
        ),
    }
}

fn unsupported(kind: &str, detail: &str) -> FaultError {
    let (fault, module, what) = qdisc_needs(kind);
    FaultError::Unsupported {
        kind: fault,
        message: format!(
            "{what} need the kernel module {module}, which this kernel does not provide ({detail}); \
             load it with `modprobe {module}` if it is installed, or {}",
            unsupported_hint(fault)
        ),
    }
}

/// Whether an error text from tc means "this qdisc kind does not exist in the kernel".
pub fn is_unknown_qdisc(stderr: &str) -> bool {
    stderr.contains("Specified qdisc kind is unknown")
        || stderr.contains("Unknown qdisc")
        || stderr.contains("qdisc kind is unknown")
}

/// Check that the kernel can run qdisc `kind` (`netem`, `tbf`) before touching the target:
/// loaded or built in (`/sys/module/sch_KIND`), or else a trial `tc qdisc add` on `lo` in a
/// throwaway namespace (which lets the kernel autoload the module, as a real apply would).
pub fn probe_qdisc(kind: &str, trial_args: &[&str]) -> Result<(), FaultError> {
    if std::path::Path::new("/sys/module")
        .join(format!("sch_{kind}"))
        .exists()
    {
        return Ok(());
    }
    let probe = ProbeNetns::create()?;
    let mut args = vec!["qdisc", "add", "dev", "lo", "root"];
    args.extend_from_slice(trial_args);
    match cmd::run(Some(&probe.name), "tc", &args, None) {
        Ok(_) => Ok(()),
        Err(e) if is_unknown_qdisc(e.stderr()) => Err(unsupported(kind, e.stderr())),
        Err(e) => Err(FaultError::Other(format!(
            "probing kernel support for {kind}: {e}"
        ))),
    }
}

/// A namespace that exists only for a support probe; deleted on drop.
#[derive(Debug)]
struct ProbeNetns {
    name: String,
}

impl ProbeNetns {
    fn create() -> Result<Self, FaultError> {
        let name = format!(
            "faultline-probe-{}-{:08x}",
            std::process::id(),
            rand::random::<u32>()
        );
        cmd::run(None, "ip", &["netns", "add", &name], None).map_err(|e| {
            FaultError::Other(format!(
                "cannot create a throwaway namespace to probe kernel support: {e}"
            ))
        })?;
        Ok(ProbeNetns { name })
    }
}

impl Drop for ProbeNetns {
    fn drop(&mut self) {
        if let Err(e) = cmd::run(None, "ip", &["netns", "del", &self.name], None) {
            tracing::warn!(netns = %self.name, error = %e, "could not delete the probe namespace");
        }
    }
}

/// Check netns and device exist; the error names them.
fn check_dev(kind: &'static str, netns: Option<&str>, dev: &str) -> Result<(), FaultError> {
    super::check_netns(kind, netns)?;
    if !cmd::valid_dev_name(dev) {
        return Err(FaultError::Invalid {
            kind,
            message: format!("--dev {dev:?} is not an interface name"),
        });
    }
    match cmd::run(netns, "ip", &["link", "show", "dev", dev], None) {
        Ok(_) => Ok(()),
        Err(CmdError::Missing { .. }) => Err(FaultError::Unsupported {
            kind,
            message: "`ip` (iproute2) is not installed".into(),
        }),
        Err(e) => Err(FaultError::NoTarget {
            kind,
            message: format!("interface {dev} not found{}: {e}", in_netns(netns)),
        }),
    }
}

fn in_netns(netns: Option<&str>) -> String {
    netns.map(|n| format!(" in netns {n}")).unwrap_or_default()
}

/// Read the root qdisc; `Ok(None)` when the device or namespace is gone.
fn root_qdisc(rec: &QdiscRecord) -> Result<Option<RootQdisc>, FaultError> {
    if rec.netns.as_deref().is_some_and(|n| !cmd::netns_exists(n)) {
        return Ok(None);
    }
    match cmd::run(
        rec.netns.as_deref(),
        "tc",
        &["qdisc", "show", "dev", &rec.dev, "root"],
        None,
    ) {
        Ok(out) => Ok(parse_root_qdisc(&out)),
        Err(e) if e.stderr().contains("Cannot find device") => Ok(None),
        Err(e) => Err(FaultError::Other(e.to_string())),
    }
}

fn is_ours(rec: &QdiscRecord, root: Option<&RootQdisc>) -> bool {
    root.is_some_and(|r| r.kind == rec.qdisc && r.handle == rec.handle)
}

/// A qdisc fault kind: its fault name, the qdisc it installs and the probe's trial arguments.
#[derive(Debug)]
struct QdiscKind {
    fault: &'static str,
    qdisc: &'static str,
    trial: &'static [&'static str],
}

const NETEM: QdiscKind = QdiscKind {
    fault: "netem",
    qdisc: "netem",
    trial: &["netem", "delay", "1ms"],
};
const TBF: QdiscKind = QdiscKind {
    fault: "rate-limit",
    qdisc: "tbf",
    trial: &["tbf", "rate", "1mbit", "burst", "32kb", "latency", "50ms"],
};

fn plan_qdisc(
    ctx: &Context,
    k: &QdiscKind,
    netns: Option<&str>,
    dev: &str,
    args: &[String],
    duration: HumanDuration,
) -> Result<Plan, FaultError> {
    let (kind, qdisc) = (k.fault, k.qdisc);
    check_dev(kind, netns, dev)?;
    probe_qdisc(qdisc, k.trial)?;
    let rec = QdiscRecord {
        netns: netns.map(str::to_owned),
        dev: dev.to_owned(),
        qdisc: qdisc.to_owned(),
        handle: handle_for(ctx.id.as_str()),
    };
    let prefix = netns
        .map(|n| format!("ip netns exec {n} "))
        .unwrap_or_default();
    let action = format!(
        "{prefix}tc qdisc add dev {dev} root handle {} {}",
        rec.handle_str(),
        args.join(" ")
    );
    let revert = format!(
        "{prefix}tc qdisc del dev {dev} root (only while it is {qdisc} {})",
        rec.handle_str()
    );
    let target = NetTarget {
        netns,
        dev: Some(dev),
        detail: format!("egress: {}", args.join(" ")),
    };
    plan_with(
        ctx,
        kind,
        duration,
        vec![target.into_target()],
        vec![action],
        vec![revert],
        &rec,
    )
}

fn apply_qdisc(
    kind: &'static str,
    plan: &Plan,
    args: &[String],
) -> Result<RevertRecord, FaultError> {
    let rec: QdiscRecord = plan.record.state()?;
    let handle = rec.handle_str();
    let mut argv: Vec<&str> = vec!["qdisc", "add", "dev", &rec.dev, "root", "handle", &handle];
    argv.extend(args.iter().map(String::as_str));
    match cmd::run(rec.netns.as_deref(), "tc", &argv, None) {
        Ok(_) => Ok(plan.record.clone()),
        Err(e) if is_unknown_qdisc(e.stderr()) => Err(unsupported(&rec.qdisc, e.stderr())),
        Err(e) if e.stderr().contains("NLM_F_REPLACE") || e.stderr().contains("Exclusivity") => {
            let current = root_qdisc(&rec).ok().flatten();
            Err(FaultError::Other(format!(
                "{kind}: {} already has a root qdisc{}{}; faultline adds its qdisc only where none was configured, \
                 so it never removes someone else's ({e})",
                rec.dev,
                current
                    .map(|r| format!(" ({} {:x}:)", r.kind, r.handle))
                    .unwrap_or_default(),
                in_netns(rec.netns.as_deref()),
            )))
        }
        Err(e) => Err(FaultError::Other(format!("{kind}: {e}"))),
    }
}

fn check_qdisc(record: &RevertRecord) -> Result<Effect, FaultError> {
    let rec: QdiscRecord = record.state()?;
    let root = root_qdisc(&rec)?;
    Ok(if is_ours(&rec, root.as_ref()) {
        Effect::in_effect(format!(
            "root qdisc of {} is {} {}",
            rec.dev,
            rec.qdisc,
            rec.handle_str()
        ))
    } else {
        Effect::not_in_effect(format!(
            "root qdisc of {}{} is {}",
            rec.dev,
            in_netns(rec.netns.as_deref()),
            root.map(|r| format!("{} {:x}:", r.kind, r.handle))
                .unwrap_or_else(|| "the default".into())
        ))
    })
}

fn revert_qdisc(record: &RevertRecord) -> Result<(), FaultError> {
    let rec: QdiscRecord = record.state()?;
    let root = root_qdisc(&rec)?;
    if !is_ours(&rec, root.as_ref()) {
        debug!(dev = %rec.dev, "qdisc already gone; nothing to revert");
        return Ok(());
    }
    match cmd::run(
        rec.netns.as_deref(),
        "tc",
        &["qdisc", "del", "dev", &rec.dev, "root"],
        None,
    ) {
        Ok(_) => {}
        Err(e) if e.stderr().contains("Cannot find device") => return Ok(()),
        Err(e) => {
            return Err(FaultError::Other(format!(
                "cannot remove the {} qdisc: {e}",
                rec.qdisc
            )));
        }
    }
    if is_ours(&rec, root_qdisc(&rec)?.as_ref()) {
        return Err(FaultError::Other(format!(
            "the {} qdisc {} on {} is still there after `tc qdisc del`",
            rec.qdisc,
            rec.handle_str(),
            rec.dev
        )));
    }
    Ok(())
}

impl Fault for NetemSpec {
    fn plan(&self, ctx: &Context) -> Result<Plan, FaultError> {
        let args = netem_args(self).map_err(|message| FaultError::Invalid {
            kind: "netem",
            message,
        })?;
        plan_qdisc(
            ctx,
            &NETEM,
            self.netns.as_deref(),
            &self.dev,
            &args,
            self.duration,
        )
    }

    fn apply(&self, plan: &Plan, _ctx: &Context) -> Result<RevertRecord, FaultError> {
        let args = netem_args(self).map_err(|message| FaultError::Invalid {
            kind: "netem",
            message,
        })?;
        apply_qdisc("netem", plan, &args)
    }

    fn check(&self, record: &RevertRecord, _ctx: &Context) -> Result<Effect, FaultError> {
        check_qdisc(record)
    }

    fn revert(&self, record: &RevertRecord, _ctx: &Context) -> Result<(), FaultError> {
        revert_qdisc(record)
    }
}

impl Fault for RateLimitSpec {
    fn plan(&self, ctx: &Context) -> Result<Plan, FaultError> {
        let args = tbf_args(self.rate, self.burst);
        plan_qdisc(
            ctx,
            &TBF,
            self.netns.as_deref(),
            &self.dev,
            &args,
            self.duration,
        )
    }

    fn apply(&self, plan: &Plan, _ctx: &Context) -> Result<RevertRecord, FaultError> {
        apply_qdisc("rate-limit", plan, &tbf_args(self.rate, self.burst))
    }

    fn check(&self, record: &RevertRecord, _ctx: &Context) -> Result<Effect, FaultError> {
        check_qdisc(record)
    }

    fn revert(&self, record: &RevertRecord, _ctx: &Context) -> Result<(), FaultError> {
        revert_qdisc(record)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_parse_in_tc_units() {
        assert_eq!(parse_rate("1mbit"), Ok(1_000_000));
        assert_eq!(parse_rate("500kbit"), Ok(500_000));
        assert_eq!(parse_rate("2mbps"), Ok(16_000_000));
        assert_eq!(parse_rate("1.5Mbit"), Ok(1_500_000));
        assert_eq!(parse_rate("100000"), Ok(100_000));
        assert!(parse_rate("fast").unwrap_err().contains("invalid rate"));
        assert!(parse_rate("1furlong").unwrap_err().contains("unknown unit"));
        assert!(parse_rate("0bit").is_err());
    }

    #[test]
    fn root_qdisc_lines_parse() {
        let out = "qdisc tbf 1a2b: root refcnt 2 rate 8Mbit burst 32Kb lat 200ms \n";
        assert_eq!(
            parse_root_qdisc(out),
            Some(RootQdisc {
                kind: "tbf".into(),
                handle: 0x1a2b
            })
        );
        let out = "qdisc noqueue 0: root refcnt 2 \n";
        assert_eq!(
            parse_root_qdisc(out),
            Some(RootQdisc {
                kind: "noqueue".into(),
                handle: 0
            })
        );
        assert_eq!(parse_root_qdisc(""), None);
        assert_eq!(
            parse_root_qdisc("qdisc pfifo 10: parent 1:1 limit 1000p"),
            None
        );
    }

    #[test]
    fn handles_are_stable_and_in_range() {
        let h = handle_for("netem-0000abcd");
        assert_eq!(h, handle_for("netem-0000abcd"));
        assert_ne!(h, handle_for("netem-0000abce"));
        for id in ["a", "rate-limit-ffffffff", "netem-12345678", ""] {
            let h = handle_for(id);
            assert!((0x100..=0xfeff).contains(&h), "{h:x}");
        }
    }

    fn netem(delay: Option<u64>, jitter: Option<u64>, loss: Option<f64>) -> NetemSpec {
        NetemSpec {
            dev: "veth0".into(),
            netns: None,
            delay: delay.map(|ms| HumanDuration(Duration::from_millis(ms))),
            jitter: jitter.map(|ms| HumanDuration(Duration::from_millis(ms))),
            loss: loss.map(Percent),
            duplicate: None,
            corrupt: None,
            duration: HumanDuration(Duration::from_secs(1)),
        }
    }

    #[test]
    fn netem_arguments_follow_the_spec() {
        assert_eq!(
            netem_args(&netem(Some(100), Some(10), Some(5.0))).unwrap(),
            ["netem", "delay", "100000us", "10000us", "loss", "5%"]
        );
        assert!(
            netem_args(&netem(None, None, None))
                .unwrap_err()
                .contains("nothing to do")
        );
        assert!(
            netem_args(&netem(None, Some(1), None))
                .unwrap_err()
                .contains("needs --delay")
        );
        assert!(
            netem_args(&netem(Some(1), Some(2), None))
                .unwrap_err()
                .contains("must not exceed")
        );
    }

    #[test]
    fn tbf_burst_defaults_to_ten_milliseconds_or_16k() {
        assert_eq!(tbf_args(Rate(1_000_000), None)[4], "16384b");
        assert_eq!(tbf_args(Rate(8_000_000_000), None)[4], "10000000b");
        assert_eq!(tbf_args(Rate(1_000_000), Some(ByteSize(4096)))[4], "4096b");
    }

    #[test]
    fn unknown_qdisc_message_is_recognised_and_explained() {
        assert!(is_unknown_qdisc("Error: Specified qdisc kind is unknown."));
        let e = unsupported("netem", "Error: Specified qdisc kind is unknown.").to_string();
        assert!(e.contains("sch_netem"), "{e}");
        assert!(e.contains("fault inject latency"), "{e}");
        let e = unsupported("tbf", "x").to_string();
        assert!(
            e.contains("sch_tbf") && e.contains("fault inject bandwidth"),
            "{e}"
        );
    }
}
