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
//! **Towards given addresses and ports** (`--dest`, `--port`, `--protocol`, spelled as for
//! `partition`): the root qdisc is then an `htb` (qdisc `sch_htb`) with no default class, so
//! traffic no filter selects leaves unshaped through htb's direct queue; one class
//! `HANDLE:1` (100gbit, so it never shapes itself) holds the netem or tbf qdisc as its leaf,
//! and `u32` filters (`cls_u32`) send the selected traffic there — one filter per destination,
//! port and protocol (IPv4 `match ip dst … match ip dport …`, IPv6 `match ip6 dst …`; ports
//! are read at the offset of a header without IP options or IPv6 extension headers, as `u32`
//! does). Support for htb, the leaf and u32 is probed together before the target is touched.
//! These are several `tc` commands rather than one: a failure after the root qdisc is added
//! deletes it again before the error is returned, and the journal's record (the root handle)
//! already covers a crash in between. Revert deletes the root qdisc, which takes the class,
//! the leaf and the filters with it.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use tracing::debug;

use super::cmd::{self, CmdError};
use super::nft::{Cidr, Protocol};
use super::{NetTarget, plan_with, unsupported_hint};
use crate::error::FaultError;
use crate::fault::{Context, Effect, Fault, Plan, RevertRecord};
use crate::units::{ByteSize, HumanDuration, Percent};

/// `netem`: delay/jitter/loss/duplication/corruption of what the interface sends (all of it,
/// or only the traffic to `dest`/`port`/`protocol`).
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
    /// Only traffic to these addresses or networks (repeatable); with neither --dest nor
    /// --port nor --protocol, all the interface's egress traffic.
    #[arg(long)]
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dest: Vec<Cidr>,
    /// Only traffic to these destination ports (repeatable; TCP and UDP unless --protocol).
    #[arg(long)]
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub port: Vec<u16>,
    /// Only this transport protocol.
    #[arg(long, value_enum, default_value_t = Protocol::All)]
    #[serde(default, skip_serializing_if = "is_all")]
    pub protocol: Protocol,
    /// How long the fault lasts.
    #[arg(long)]
    pub duration: HumanDuration,
}

/// `rate-limit`: a token bucket on what the interface sends (all of it, or only the traffic
/// to `dest`/`port`/`protocol`).
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
    /// Only traffic to these addresses or networks (repeatable); with neither --dest nor
    /// --port nor --protocol, all the interface's egress traffic.
    #[arg(long)]
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dest: Vec<Cidr>,
    /// Only traffic to these destination ports (repeatable; TCP and UDP unless --protocol).
    #[arg(long)]
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub port: Vec<u16>,
    /// Only this transport protocol.
    #[arg(long, value_enum, default_value_t = Protocol::All)]
    #[serde(default, skip_serializing_if = "is_all")]
    pub protocol: Protocol,
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
    /// The root qdisc: `netem` or `tbf`, or `htb` when only some traffic is selected.
    pub qdisc: String,
    /// The root qdisc's major handle (hex in tc's notation).
    pub handle: u16,
    /// Under an `htb` root: the qdisc of class `HANDLE:1` (`netem` or `tbf`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leaf: Option<String>,
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

fn is_all(p: &Protocol) -> bool {
    *p == Protocol::All
}

/// The most filters one fault may install (destinations × ports × protocols).
pub const MAX_FILTERS: usize = 256;

/// Which of an interface's egress traffic a qdisc fault impairs: everything when empty.
#[derive(Clone, Copy, Debug)]
pub struct Selection<'a> {
    /// Destination addresses or networks.
    pub dest: &'a [Cidr],
    /// Destination ports.
    pub port: &'a [u16],
    /// Transport protocol.
    pub protocol: Protocol,
}

impl Selection<'_> {
    /// Whether all traffic is selected (no htb, no filters).
    pub fn is_everything(&self) -> bool {
        self.dest.is_empty() && self.port.is_empty() && self.protocol == Protocol::All
    }

    /// As plans show it: `to 10.0.0.2/32 port 80,443 tcp`.
    fn describe(&self) -> String {
        if self.is_everything() {
            return "all traffic".into();
        }
        let mut d = Vec::new();
        if !self.dest.is_empty() {
            let list: Vec<String> = self.dest.iter().map(ToString::to_string).collect();
            d.push(format!("to {}", list.join(",")));
        }
        if !self.port.is_empty() {
            let list: Vec<String> = self.port.iter().map(ToString::to_string).collect();
            d.push(format!("port {}", list.join(",")));
        }
        match self.protocol {
            Protocol::Tcp => d.push("tcp".into()),
            Protocol::Udp => d.push("udp".into()),
            Protocol::All => {}
        }
        d.join(" ")
    }
}

/// The `u32` filters that send the selected traffic to class `HANDLE:1`: each entry is what
/// follows `tc filter add dev DEV` (parent, protocol, prio, matches, flowid). Pure.
pub fn filter_args(handle: u16, sel: &Selection<'_>) -> Result<Vec<Vec<String>>, String> {
    if sel.is_everything() {
        return Ok(Vec::new());
    }
    // Families: those of the destinations, else both.
    let v4: Vec<Option<&Cidr>> = sel
        .dest
        .iter()
        .filter(|c| c.addr.is_ipv4())
        .map(Some)
        .collect();
    let v6: Vec<Option<&Cidr>> = sel
        .dest
        .iter()
        .filter(|c| c.addr.is_ipv6())
        .map(Some)
        .collect();
    let (v4, v6) = if sel.dest.is_empty() {
        (vec![None], vec![None])
    } else {
        (v4, v6)
    };
    let ports: Vec<Option<u16>> = if sel.port.is_empty() {
        vec![None]
    } else {
        sel.port.iter().copied().map(Some).collect()
    };
    // With ports, "all" means TCP and UDP (a port match alone would also hit ICMP checksums).
    let protocols: Vec<Option<u8>> = match (sel.protocol, sel.port.is_empty()) {
        (Protocol::Tcp, _) => vec![Some(6)],
        (Protocol::Udp, _) => vec![Some(17)],
        (Protocol::All, false) => vec![Some(6), Some(17)],
        (Protocol::All, true) => vec![None],
    };
    let count = (v4.len() + v6.len()) * ports.len() * protocols.len();
    if count > MAX_FILTERS {
        return Err(format!(
            "{count} filters needed (destinations × ports × protocols); at most {MAX_FILTERS}: \
             give networks (10.0.0.0/24) instead of single addresses, or fewer ports"
        ));
    }
    let flowid = format!("{handle:x}:1");
    let mut out = Vec::with_capacity(count);
    for (family, word, dests) in [("ip", "ip", &v4), ("ipv6", "ip6", &v6)] {
        for dest in dests {
            for port in &ports {
                for proto in &protocols {
                    let mut a: Vec<String> = [
                        "parent",
                        &format!("{handle:x}:"),
                        "protocol",
                        family,
                        "prio",
                        &(out.len() + 1).to_string(),
                        "u32",
                    ]
                    .map(str::to_owned)
                    .to_vec();
                    if let Some(d) = dest {
                        a.extend(["match", word, "dst", &d.to_string()].map(str::to_owned));
                    }
                    if let Some(p) = proto {
                        a.extend(
                            ["match", word, "protocol", &p.to_string(), "0xff"].map(str::to_owned),
                        );
                    }
                    if let Some(p) = port {
                        a.extend(
                            ["match", word, "dport", &p.to_string(), "0xffff"].map(str::to_owned),
                        );
                    }
                    a.extend(["flowid".to_owned(), flowid.clone()]);
                    out.push(a);
                }
            }
        }
    }
    Ok(out)
}

/// Every `tc` command (its arguments) that installs a qdisc fault on `dev`, in order: one
/// root qdisc for all traffic, or an htb root, its class, the leaf and the filters. Pure.
pub fn setup_commands(
    dev: &str,
    handle: u16,
    leaf: &[String],
    sel: &Selection<'_>,
) -> Result<Vec<Vec<String>>, String> {
    let h = format!("{handle:x}:");
    let words = |w: &[&str]| w.iter().map(|s| (*s).to_owned()).collect::<Vec<String>>();
    if sel.is_everything() {
        let mut root = words(&["qdisc", "add", "dev", dev, "root", "handle", &h]);
        root.extend(leaf.iter().cloned());
        return Ok(vec![root]);
    }
    let class = format!("{handle:x}:1");
    let mut cmds = vec![
        words(&["qdisc", "add", "dev", dev, "root", "handle", &h, "htb"]),
        // The class must not shape by itself: 100gbit with a 1 MB burst passes what a veth
        // can carry; the leaf does the impairing.
        words(&[
            "class", "add", "dev", dev, "parent", &h, "classid", &class, "htb", "rate", "100gbit",
            "burst", "1mb", "cburst", "1mb", "quantum", "60000",
        ]),
    ];
    let mut leaf_cmd = words(&["qdisc", "add", "dev", dev, "parent", &class]);
    leaf_cmd.extend(leaf.iter().cloned());
    cmds.push(leaf_cmd);
    for f in filter_args(handle, sel)? {
        let mut c = words(&["filter", "add", "dev", dev]);
        c.extend(f);
        cmds.push(c);
    }
    Ok(cmds)
}

/// What a qdisc or filter kind is needed for, its module, and what works without it.
fn qdisc_needs(kind: &str) -> (&'static str, &'static str) {
    match kind {
        "netem" => (
            "sch_netem",
            "delay, jitter, loss, duplication and corruption (fault kind `netem`)",
        ),
        "htb" => (
            "sch_htb",
            "faults on only some traffic (--dest, --port, --protocol of `netem` and `rate-limit`)",
        ),
        "u32" => (
            "cls_u32",
            "faults on only some traffic (--dest, --port, --protocol of `netem` and `rate-limit`)",
        ),
        _ => ("sch_tbf", "rate limits (fault kind `rate-limit`)"),
    }
}

/// The fault kind a qdisc kind's error is reported under when the fault is not known.
fn fault_of(kind: &str) -> &'static str {
    if kind == "netem" {
        "netem"
    } else {
        "rate-limit"
    }
}

fn unsupported(kind: &str, detail: &str) -> FaultError {
    unsupported_for(fault_of(kind), kind, detail, "")
}

/// `fault` cannot run because qdisc or filter `kind` is missing; `after` ends the message.
fn unsupported_for(fault: &'static str, kind: &str, detail: &str, after: &str) -> FaultError {
    let (module, what) = qdisc_needs(kind);
    let without = if matches!(kind, "htb" | "u32") {
        "; without --dest, --port and --protocol the fault applies to all the interface's traffic and needs neither"
    } else {
        ""
    };
    FaultError::Unsupported {
        kind: fault,
        message: format!(
            "{what} need the kernel module {module}, which this kernel does not provide ({detail}); \
             load it with `modprobe {module}` if it is installed, or {}{without}{after}",
            unsupported_hint(fault)
        ),
    }
}

/// Whether an error text from tc means "this filter kind does not exist in the kernel".
pub fn is_unknown_filter(stderr: &str) -> bool {
    stderr.contains("Unknown filter") || stderr.contains("filter kind is unknown")
}

/// Whether an error text from tc means "this qdisc kind does not exist in the kernel".
pub fn is_unknown_qdisc(stderr: &str) -> bool {
    stderr.contains("Specified qdisc kind is unknown")
        || stderr.contains("Unknown qdisc")
        || stderr.contains("qdisc kind is unknown")
}

fn module_loaded(module: &str) -> bool {
    std::path::Path::new("/sys/module").join(module).exists()
}

/// Check that the kernel can run qdisc `kind` (`netem`, `tbf`) before touching the target:
/// loaded or built in (`/sys/module/sch_KIND`), or else a trial `tc qdisc add` on `lo` in a
/// throwaway namespace (which lets the kernel autoload the module, as a real apply would).
pub fn probe_qdisc(kind: &str, trial_args: &[&str]) -> Result<(), FaultError> {
    if module_loaded(&format!("sch_{kind}")) {
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

/// [`probe_qdisc`] for a fault on selected traffic: the whole setup — htb root, class, the
/// leaf `kind` with `trial_args`, a u32 filter — is tried on `lo` in a throwaway namespace
/// unless `sch_htb`, `sch_KIND` and `cls_u32` are all loaded. The error names the first
/// missing piece.
pub fn probe_selected(
    fault: &'static str,
    kind: &str,
    trial_args: &[&str],
) -> Result<(), FaultError> {
    if module_loaded("sch_htb") && module_loaded(&format!("sch_{kind}")) && module_loaded("cls_u32")
    {
        return Ok(());
    }
    let probe = ProbeNetns::create()?;
    let leaf: Vec<String> = trial_args.iter().map(|s| (*s).to_owned()).collect();
    let dest = [Cidr {
        addr: std::net::IpAddr::from([127, 0, 0, 1]),
        prefix: 32,
    }];
    let sel = Selection {
        dest: &dest,
        port: &[],
        protocol: Protocol::All,
    };
    let cmds = setup_commands("lo", 1, &leaf, &sel).map_err(FaultError::Other)?;
    for (step, c) in cmds.iter().enumerate() {
        let args: Vec<&str> = c.iter().map(String::as_str).collect();
        if let Err(e) = cmd::run(Some(&probe.name), "tc", &args, None) {
            // Steps: 0 htb root, 1 htb class, 2 the leaf, 3 the filter.
            let missing = match step {
                0 | 1 => "htb",
                2 => kind,
                _ => "u32",
            };
            return Err(
                if is_unknown_qdisc(e.stderr()) || is_unknown_filter(e.stderr()) {
                    unsupported_for(fault, missing, e.stderr(), "")
                } else {
                    FaultError::Other(format!(
                        "probing kernel support for {fault} on selected traffic ({missing}): {e}"
                    ))
                },
            );
        }
    }
    Ok(())
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
    sel: &Selection<'_>,
    duration: HumanDuration,
) -> Result<Plan, FaultError> {
    let (kind, qdisc) = (k.fault, k.qdisc);
    check_dev(kind, netns, dev)?;
    let handle = handle_for(ctx.id.as_str());
    let commands = setup_commands(dev, handle, args, sel)
        .map_err(|message| FaultError::Invalid { kind, message })?;
    let rec = if sel.is_everything() {
        probe_qdisc(qdisc, k.trial)?;
        QdiscRecord {
            netns: netns.map(str::to_owned),
            dev: dev.to_owned(),
            qdisc: qdisc.to_owned(),
            handle,
            leaf: None,
        }
    } else {
        probe_selected(kind, qdisc, k.trial)?;
        QdiscRecord {
            netns: netns.map(str::to_owned),
            dev: dev.to_owned(),
            qdisc: "htb".to_owned(),
            handle,
            leaf: Some(qdisc.to_owned()),
        }
    };
    let prefix = netns
        .map(|n| format!("ip netns exec {n} "))
        .unwrap_or_default();
    let actions = commands
        .iter()
        .map(|c| format!("{prefix}tc {}", c.join(" ")))
        .collect();
    let revert = format!(
        "{prefix}tc qdisc del dev {dev} root (only while it is {} {})",
        rec.qdisc,
        rec.handle_str()
    );
    let target = NetTarget {
        netns,
        dev: Some(dev),
        detail: format!("egress, {}: {}", sel.describe(), args.join(" ")),
    };
    plan_with(
        ctx,
        kind,
        duration,
        vec![target.into_target()],
        actions,
        vec![revert],
        &rec,
    )
}

fn apply_qdisc(
    kind: &'static str,
    plan: &Plan,
    args: &[String],
    sel: &Selection<'_>,
) -> Result<RevertRecord, FaultError> {
    let rec: QdiscRecord = plan.record.state()?;
    let commands = setup_commands(&rec.dev, rec.handle, args, sel)
        .map_err(|message| FaultError::Invalid { kind, message })?;
    let (root, rest) = commands
        .split_first()
        .ok_or_else(|| FaultError::Other(format!("{kind}: no tc command to run")))?;
    let argv: Vec<&str> = root.iter().map(String::as_str).collect();
    match cmd::run(rec.netns.as_deref(), "tc", &argv, None) {
        Ok(_) => {}
        Err(e) if is_unknown_qdisc(e.stderr()) => {
            return Err(unsupported_for(kind, &rec.qdisc, e.stderr(), ""));
        }
        Err(e) if e.stderr().contains("NLM_F_REPLACE") || e.stderr().contains("Exclusivity") => {
            let current = root_qdisc(&rec).ok().flatten();
            return Err(FaultError::Other(format!(
                "{kind}: {} already has a root qdisc{}{}; faultline adds its qdisc only where none was configured, \
                 so it never removes someone else's ({e})",
                rec.dev,
                current
                    .map(|r| format!(" ({} {:x}:)", r.kind, r.handle))
                    .unwrap_or_default(),
                in_netns(rec.netns.as_deref()),
            )));
        }
        Err(e) => return Err(FaultError::Other(format!("{kind}: {e}"))),
    }
    // The root is ours from here on: any later failure takes it away again (with whatever
    // class, leaf and filters were added under it) before the error is returned.
    for c in rest {
        let argv: Vec<&str> = c.iter().map(String::as_str).collect();
        if let Err(e) = cmd::run(rec.netns.as_deref(), "tc", &argv, None) {
            let undo = revert_qdisc_record(&rec).map_or_else(
                |u| format!("; removing the partial setup failed too: {u}"),
                |()| "; the partial setup was removed".to_owned(),
            );
            let missing = if c.first().map(String::as_str) == Some("filter") {
                "u32"
            } else {
                rec.leaf.as_deref().unwrap_or(&rec.qdisc)
            };
            return Err(
                if is_unknown_qdisc(e.stderr()) || is_unknown_filter(e.stderr()) {
                    unsupported_for(kind, missing, e.stderr(), &undo)
                } else {
                    FaultError::Other(format!("{kind}: `tc {}`: {e}{undo}", c.join(" ")))
                },
            );
        }
    }
    Ok(plan.record.clone())
}

/// Whether `tc qdisc show dev X` output lists qdisc `leaf` under class `HANDLE:1`
/// (`qdisc tbf 8001: parent 1ab:1 rate …`). Pure.
pub fn has_leaf(out: &str, handle: u16, leaf: &str) -> bool {
    let class = format!("{handle:x}:1");
    out.lines().any(|l| {
        let w: Vec<&str> = l.split_whitespace().take(5).collect();
        matches!(w.as_slice(), ["qdisc", kind, _, "parent", parent] if *kind == leaf && *parent == class)
    })
}

/// Whether the leaf is still under our class; `false` when the device or namespace is gone.
fn leaf_present(rec: &QdiscRecord, leaf: &str) -> Result<bool, FaultError> {
    match cmd::run(
        rec.netns.as_deref(),
        "tc",
        &["qdisc", "show", "dev", &rec.dev],
        None,
    ) {
        Ok(out) => Ok(has_leaf(&out, rec.handle, leaf)),
        Err(e) if e.stderr().contains("Cannot find device") => Ok(false),
        Err(e) => Err(FaultError::Other(e.to_string())),
    }
}

fn check_qdisc(record: &RevertRecord) -> Result<Effect, FaultError> {
    let rec: QdiscRecord = record.state()?;
    let root = root_qdisc(&rec)?;
    if !is_ours(&rec, root.as_ref()) {
        return Ok(Effect::not_in_effect(format!(
            "root qdisc of {}{} is {}",
            rec.dev,
            in_netns(rec.netns.as_deref()),
            root.map(|r| format!("{} {:x}:", r.kind, r.handle))
                .unwrap_or_else(|| "the default".into())
        )));
    }
    Ok(match rec.leaf.as_deref() {
        None => Effect::in_effect(format!(
            "root qdisc of {} is {} {}",
            rec.dev,
            rec.qdisc,
            rec.handle_str()
        )),
        Some(leaf) if leaf_present(&rec, leaf)? => Effect::in_effect(format!(
            "root qdisc of {} is htb {} with {leaf} under class {:x}:1",
            rec.dev,
            rec.handle_str(),
            rec.handle
        )),
        Some(leaf) => Effect::not_in_effect(format!(
            "root qdisc of {} is htb {} but the {leaf} under class {:x}:1 is gone",
            rec.dev,
            rec.handle_str(),
            rec.handle
        )),
    })
}

fn revert_qdisc(record: &RevertRecord) -> Result<(), FaultError> {
    revert_qdisc_record(&record.state()?)
}

/// Delete the root qdisc (and with it any class, leaf and filter under it) if it is ours.
fn revert_qdisc_record(rec: &QdiscRecord) -> Result<(), FaultError> {
    let root = root_qdisc(rec)?;
    if !is_ours(rec, root.as_ref()) {
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
    if is_ours(rec, root_qdisc(rec)?.as_ref()) {
        return Err(FaultError::Other(format!(
            "the {} qdisc {} on {} is still there after `tc qdisc del`",
            rec.qdisc,
            rec.handle_str(),
            rec.dev
        )));
    }
    Ok(())
}

impl NetemSpec {
    fn selection(&self) -> Selection<'_> {
        Selection {
            dest: &self.dest,
            port: &self.port,
            protocol: self.protocol,
        }
    }

    fn args(&self) -> Result<Vec<String>, FaultError> {
        netem_args(self).map_err(|message| FaultError::Invalid {
            kind: "netem",
            message,
        })
    }
}

impl RateLimitSpec {
    fn selection(&self) -> Selection<'_> {
        Selection {
            dest: &self.dest,
            port: &self.port,
            protocol: self.protocol,
        }
    }
}

impl Fault for NetemSpec {
    fn plan(&self, ctx: &Context) -> Result<Plan, FaultError> {
        plan_qdisc(
            ctx,
            &NETEM,
            self.netns.as_deref(),
            &self.dev,
            &self.args()?,
            &self.selection(),
            self.duration,
        )
    }

    fn apply(&self, plan: &Plan, _ctx: &Context) -> Result<RevertRecord, FaultError> {
        apply_qdisc("netem", plan, &self.args()?, &self.selection())
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
            &self.selection(),
            self.duration,
        )
    }

    fn apply(&self, plan: &Plan, _ctx: &Context) -> Result<RevertRecord, FaultError> {
        apply_qdisc(
            "rate-limit",
            plan,
            &tbf_args(self.rate, self.burst),
            &self.selection(),
        )
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
            dest: Vec::new(),
            port: Vec::new(),
            protocol: Protocol::All,
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

    fn cidrs(list: &[&str]) -> Vec<Cidr> {
        list.iter().map(|c| c.parse().unwrap()).collect()
    }

    fn joined(cmds: &[Vec<String>]) -> Vec<String> {
        cmds.iter().map(|c| c.join(" ")).collect()
    }

    #[test]
    fn all_traffic_is_one_root_qdisc() {
        let sel = Selection {
            dest: &[],
            port: &[],
            protocol: Protocol::All,
        };
        assert!(sel.is_everything());
        let leaf = tbf_args(Rate(8_000_000), None);
        assert_eq!(
            joined(&setup_commands("veth0", 0x1ab, &leaf, &sel).unwrap()),
            ["qdisc add dev veth0 root handle 1ab: tbf rate 8000000bit burst 16384b latency 200ms"]
        );
        assert!(filter_args(0x1ab, &sel).unwrap().is_empty());
    }

    #[test]
    fn selected_traffic_gets_htb_a_class_the_leaf_and_a_filter_per_match() {
        let dest = cidrs(&["10.0.0.2", "fd00::/64"]);
        let sel = Selection {
            dest: &dest,
            port: &[80],
            protocol: Protocol::Tcp,
        };
        let leaf = tbf_args(Rate(8_000_000), None);
        let cmds = joined(&setup_commands("veth0", 0x1ab, &leaf, &sel).unwrap());
        assert_eq!(
            cmds,
            [
                "qdisc add dev veth0 root handle 1ab: htb",
                "class add dev veth0 parent 1ab: classid 1ab:1 htb rate 100gbit burst 1mb cburst 1mb quantum 60000",
                "qdisc add dev veth0 parent 1ab:1 tbf rate 8000000bit burst 16384b latency 200ms",
                "filter add dev veth0 parent 1ab: protocol ip prio 1 u32 match ip dst 10.0.0.2/32 match ip protocol 6 0xff match ip dport 80 0xffff flowid 1ab:1",
                "filter add dev veth0 parent 1ab: protocol ipv6 prio 2 u32 match ip6 dst fd00::/64 match ip6 protocol 6 0xff match ip6 dport 80 0xffff flowid 1ab:1",
            ]
        );
        assert_eq!(sel.describe(), "to 10.0.0.2/32,fd00::/64 port 80 tcp");
    }

    #[test]
    fn ports_without_a_protocol_mean_tcp_and_udp_on_both_families() {
        let sel = Selection {
            dest: &[],
            port: &[53, 5353],
            protocol: Protocol::All,
        };
        let f = joined(&filter_args(0x200, &sel).unwrap());
        assert_eq!(f.len(), 8, "{f:#?}");
        assert_eq!(
            f[0],
            "parent 200: protocol ip prio 1 u32 match ip protocol 6 0xff match ip dport 53 0xffff flowid 200:1"
        );
        assert_eq!(
            f[7],
            "parent 200: protocol ipv6 prio 8 u32 match ip6 protocol 17 0xff match ip6 dport 5353 0xffff flowid 200:1"
        );
        // Only a destination: no protocol or port match at all.
        let dest = cidrs(&["192.168.1.0/24"]);
        let only_dest = Selection {
            dest: &dest,
            port: &[],
            protocol: Protocol::All,
        };
        assert_eq!(
            joined(&filter_args(0x200, &only_dest).unwrap()),
            ["parent 200: protocol ip prio 1 u32 match ip dst 192.168.1.0/24 flowid 200:1"]
        );
    }

    #[test]
    fn too_many_filters_are_refused_with_advice() {
        let dest: Vec<Cidr> = (1..=200u8)
            .map(|i| format!("10.0.0.{i}").parse().unwrap())
            .collect();
        let sel = Selection {
            dest: &dest,
            port: &[80],
            protocol: Protocol::All,
        };
        let e = filter_args(0x100, &sel).unwrap_err();
        assert!(
            e.contains("400 filters") && e.contains("10.0.0.0/24"),
            "{e}"
        );
    }

    #[test]
    fn leaves_are_found_under_our_class_only() {
        let out = "qdisc htb 1ab: root refcnt 3 r2q 10 default 0 direct_packets_stat 0\n\
                   qdisc tbf 8001: parent 1ab:1 rate 8Mbit burst 16Kb lat 200ms \n";
        assert!(has_leaf(out, 0x1ab, "tbf"));
        assert!(!has_leaf(out, 0x1ab, "netem"));
        assert!(!has_leaf(out, 0x1ac, "tbf"));
        assert!(!has_leaf(
            "qdisc tbf 8001: parent 1ab:10 rate 8Mbit",
            0x1ab,
            "tbf"
        ));
    }

    #[test]
    fn missing_htb_or_u32_names_the_module_and_the_way_without_them() {
        let e = unsupported_for(
            "rate-limit",
            "htb",
            "Error: Specified qdisc kind is unknown.",
            "",
        )
        .to_string();
        assert!(e.contains("sch_htb") && e.contains("--dest"), "{e}");
        assert!(e.contains("needs neither"), "{e}");
        let e = unsupported_for(
            "netem",
            "u32",
            "Unknown filter \"u32\"",
            "; the partial setup was removed",
        )
        .to_string();
        assert!(
            e.contains("cls_u32") && e.ends_with("the partial setup was removed"),
            "{e}"
        );
        assert!(is_unknown_filter(
            "Unknown filter \"u32\", hence option \"match\" is unparsable"
        ));
    }

    #[test]
    fn specs_without_a_selection_serialize_as_before() {
        let spec = netem(Some(10), None, None);
        let json = serde_json::to_value(&spec).unwrap();
        assert!(
            json.get("dest").is_none() && json.get("protocol").is_none(),
            "{json}"
        );
        let back: NetemSpec = serde_json::from_value(serde_json::json!({
            "dev": "veth0", "delay": "10ms", "dest": ["10.0.0.2"], "port": [80],
            "protocol": "tcp", "duration": "1s"
        }))
        .unwrap();
        assert_eq!(back.dest, cidrs(&["10.0.0.2"]));
        assert_eq!(back.protocol, Protocol::Tcp);
        let rec: QdiscRecord = serde_json::from_value(serde_json::json!({
            "dev": "veth0", "qdisc": "tbf", "handle": 300
        }))
        .unwrap();
        assert_eq!(
            rec.leaf, None,
            "records written before selections existed still load"
        );
    }
}
