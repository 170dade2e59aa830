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
//!
//! Here: the two kinds and their plan → apply → check → revert. The arguments tc is given and
//! what it prints back are in [`qdisc`], the setup for selected traffic in [`filter`], the
//! support probes in [`probe`].

mod filter;
mod probe;
mod qdisc;

pub use qdisc::Rate;

use serde::{Deserialize, Serialize};
use tracing::debug;

use self::filter::{Selection, setup_commands};
use self::probe::{
    is_unknown_filter, is_unknown_qdisc, probe_qdisc, probe_selected, unsupported_for,
};
use self::qdisc::{RootQdisc, handle_for, has_leaf, netem_args, parse_root_qdisc, tbf_args};
use super::cmd::{self, CmdError};
use super::nft::{Cidr, Protocol};
use super::{NetTarget, plan_with};
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

fn is_all(p: &Protocol) -> bool {
    *p == Protocol::All
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
mod tests;
