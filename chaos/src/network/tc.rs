//! Kernel traffic-control faults on an interface: `netem` (delay, jitter, loss, duplication,
//! corruption — qdisc `sch_netem`) and `rate-limit` (a token bucket — qdisc `sch_tbf`), each
//! installed as the interface's root qdisc with a handle derived from the fault id, in the
//! network namespaces the user names (`--netns`, `--pid`, `--container`, pod selectors;
//! [`super::netns`]; in each picked pod's namespace on its own interface, one
//! [`QdiscRecord`] per namespace), programmed over netlink ([`rtnl`]) — no `tc` binary.
//!
//! Safety properties:
//! - **Support is probed before anything is applied** ([`probe`]): a missing qdisc or filter
//!   kind gives [`FaultError::Unsupported`] naming the module, what needs it and the
//!   alternative (the proxy can add latency and limit bandwidth without kernel support).
//! - **Someone else's root qdisc is restored exactly** ([`snapshot`]): when the interface has
//!   a configured root (not the kernel's default), its whole tree — qdiscs, classes, filters
//!   — is recorded at plan time into the revert record, which the journal holds before
//!   anything is touched; the fault then replaces the root, and revert writes the recorded
//!   tree back (after a SIGKILL too). A tree that cannot be recorded faithfully is refused,
//!   as every configured root was before snapshots existed. With the kernel's default root
//!   the fault is added only where none was configured (`NLM_F_EXCL`), and revert deletes it.
//! - **Revert from the record alone** ([`QdiscRecord`]: namespace by inode, dev, kind,
//!   handle, snapshot): the root qdisc is touched only while it is still ours (same kind and
//!   handle); a vanished namespace or device means there is nothing left to revert.
//!
//! **Towards given addresses and ports** (`--dest`, `--port`, `--protocol`, spelled as for
//! `partition`): the root qdisc is then an `htb` (qdisc `sch_htb`) with no default class, so
//! traffic no filter selects leaves unshaped through htb's direct queue; one class
//! `HANDLE:1` (100gbit, so it never shapes itself) holds the netem or tbf qdisc as its leaf,
//! and `u32` filters (`cls_u32`) send the selected traffic there ([`filter`]). A failure after
//! the root is in place reverts it before the error is returned, and the journal's record
//! already covers a crash in between. Revert replaces or deletes the root qdisc, which takes
//! the class, the leaf and the filters with it.
//!
//! Here: the two kinds and their plan → apply → check → revert. The leaf qdiscs' options are
//! in [`qdisc`], the filters in [`filter`], the probes in [`probe`].

mod filter;
mod probe;
mod qdisc;
mod rtnl;
mod snapshot;

pub use qdisc::Rate;
pub use snapshot::Snapshot;

use std::fs::File;

use serde::{Deserialize, Serialize};
use tracing::{debug, info};

use self::filter::{Selection, filters, setup_commands};
use self::probe::{is_unknown_kind, probe_qdisc, probe_selected, unsupported_for};
use self::qdisc::{Leaf, handle_for, htb_class_options, htb_root_options, netem_args, tbf_args};
use self::rtnl::{Object, Rtnl, TC_H_ROOT, TcObject, Write};
use super::netlink::NlError;
use super::netns::{self, NsRecord, Place, Places};
use super::nft::{Cidr, Protocol};
use super::{NetTarget, combine, plan_with, record_of, records, revert_each};
use crate::error::FaultError;
use crate::fault::{Context, Effect, Fault, Plan, RevertRecord, Target};
use crate::units::{ByteSize, HumanDuration, Percent};

with_net_target! {
/// `netem`: delay/jitter/loss/duplication/corruption of what the interface sends (all of it,
/// or only the traffic to `dest`/`port`/`protocol`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, clap::Args)]
#[serde(deny_unknown_fields)]
pub struct NetemSpec {
    /// The interface whose egress is impaired; default: the namespace's default-route
    /// interface.
    #[arg(long)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dev: Option<String>,
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
}

with_net_target! {
/// `rate-limit`: a token bucket on what the interface sends (all of it, or only the traffic
/// to `dest`/`port`/`protocol`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, clap::Args)]
#[serde(deny_unknown_fields)]
pub struct RateLimitSpec {
    /// The interface whose egress is limited; default: the namespace's default-route
    /// interface.
    #[arg(long)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dev: Option<String>,
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
}

fn is_all(p: &Protocol) -> bool {
    *p == Protocol::All
}

/// What revert needs for a qdisc fault.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QdiscRecord {
    /// The namespace by name only, as records written before namespaces were recorded by
    /// inode hold it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub netns: Option<String>,
    /// The namespace, if not the agent's own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ns: Option<NsRecord>,
    /// The interface.
    pub dev: String,
    /// The root qdisc: `netem` or `tbf`, or `htb` when only some traffic is selected.
    pub qdisc: String,
    /// The root qdisc's major handle (hex in tc's notation).
    pub handle: u16,
    /// Under an `htb` root: the qdisc of class `HANDLE:1` (`netem` or `tbf`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leaf: Option<String>,
    /// The configured root qdisc tree the fault replaced, written back on revert.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<Snapshot>,
}

impl QdiscRecord {
    /// The fault kind the record is of, for messages.
    fn fault(&self) -> &'static str {
        if self.leaf.as_deref().unwrap_or(&self.qdisc) == "netem" {
            "netem"
        } else {
            "rate-limit"
        }
    }

    fn handle_str(&self) -> String {
        format!("{:x}:", self.handle)
    }

    /// ` in <namespace>`, or nothing for the agent's own.
    fn where_(&self) -> String {
        match (&self.ns, &self.netns) {
            (Some(ns), _) => format!(" in {ns}"),
            (None, Some(n)) => format!(" in netns {n}"),
            (None, None) => String::new(),
        }
    }

    fn root_object(&self) -> TcObject {
        TcObject {
            handle: u32::from(self.handle) << 16,
            parent: TC_H_ROOT,
            info: 0,
            kind: self.qdisc.clone(),
            attrs: Vec::new(),
        }
    }
}

/// One step of a fault's setup.
#[derive(Clone, Debug)]
pub(super) struct Setup {
    what: Object,
    obj: TcObject,
}

/// Every object that installs a qdisc fault, in order: one root qdisc for all traffic, or an
/// htb root, its class, the leaf and the filters. Pure.
fn setup_objects(handle: u16, leaf: &Leaf, sel: &Selection<'_>) -> Result<Vec<Setup>, String> {
    let root = u32::from(handle) << 16;
    if sel.is_everything() {
        return Ok(vec![Setup {
            what: Object::Qdisc,
            obj: TcObject::new(root, TC_H_ROOT, 0, leaf.kind(), leaf.options()),
        }]);
    }
    let class = root | 1;
    let mut steps = vec![
        Setup {
            what: Object::Qdisc,
            obj: TcObject::new(root, TC_H_ROOT, 0, "htb", htb_root_options()),
        },
        Setup {
            what: Object::Class,
            obj: TcObject::new(class, root, 0, "htb", htb_class_options()),
        },
        Setup {
            what: Object::Qdisc,
            obj: TcObject::new(0, class, 0, leaf.kind(), leaf.options()),
        },
    ];
    for f in filters(sel)? {
        let info = (u32::from(f.prio) << 16) | u32::from(f.ethertype().to_be());
        steps.push(Setup {
            what: Object::Filter,
            obj: TcObject::new(0, root, info, "u32", f.options(handle)),
        });
    }
    Ok(steps)
}

/// The record's namespace and an rtnetlink socket in it, with the interface's index; `None`
/// when the namespace or the interface is gone.
fn connect(
    kind: &'static str,
    rec: &QdiscRecord,
    ctx: &Context,
) -> Result<Option<(Rtnl, i32)>, FaultError> {
    let file = match netns::reopen(
        kind,
        rec.ns.as_ref(),
        rec.netns.as_deref(),
        &ctx.env.proc_root,
    )? {
        Place::Gone => return Ok(None),
        Place::Own => None,
        Place::In(f) => Some(f),
    };
    let mut rtnl = Rtnl::open(kind, file.as_ref())?;
    let links = rtnl
        .links()
        .map_err(|e| nl_error(kind, "listing interfaces", &e))?;
    Ok(links
        .into_iter()
        .find(|(_, name)| *name == rec.dev)
        .map(|(index, _)| (rtnl, index)))
}

fn nl_error(kind: &'static str, doing: &str, e: &NlError) -> FaultError {
    if e.errno == nix::errno::Errno::EPERM {
        return FaultError::Unsupported {
            kind,
            message: format!("{doing}: {e}; tc changes need CAP_NET_ADMIN"),
        };
    }
    FaultError::Other(format!("{kind}: {doing}: {e}"))
}

/// A qdisc fault kind: its fault name and the qdisc its leaf is.
#[derive(Debug)]
struct QdiscKind {
    fault: &'static str,
}

const NETEM: QdiscKind = QdiscKind { fault: "netem" };
const TBF: QdiscKind = QdiscKind {
    fault: "rate-limit",
};

/// The namespace `ns` (the agent's own for `None`), opened, with a socket in it; the
/// interface (`dev`, or the default route's) and its index.
fn locate(
    kind: &'static str,
    ns: Option<&NsRecord>,
    dev: Option<&str>,
    ctx: &Context,
) -> Result<(Rtnl, String, i32), FaultError> {
    let file: Option<File> = match ns {
        None => None,
        Some(rec) => match netns::reopen(kind, Some(rec), None, &ctx.env.proc_root)? {
            Place::In(f) => Some(f),
            Place::Own | Place::Gone => {
                return Err(FaultError::NoTarget {
                    kind,
                    message: format!("{rec} disappeared while the fault was planned"),
                });
            }
        },
    };
    let mut rtnl = Rtnl::open(kind, file.as_ref())?;
    let in_ns = ns.map(|n| format!(" in {n}")).unwrap_or_default();
    let links = rtnl
        .links()
        .map_err(|e| nl_error(kind, "listing interfaces", &e))?;
    let (index, dev) = match dev {
        Some(dev) => {
            if !netns::valid_dev_name(dev) {
                return Err(FaultError::Invalid {
                    kind,
                    message: format!("--dev {dev:?} is not an interface name"),
                });
            }
            let index = links
                .iter()
                .find(|(_, n)| n == dev)
                .map(|(i, _)| *i)
                .ok_or_else(|| FaultError::NoTarget {
                    kind,
                    message: format!("interface {dev} not found{in_ns}"),
                })?;
            (index, dev.to_owned())
        }
        None => {
            let index = rtnl
                .default_route_ifindex()
                .map_err(|e| nl_error(kind, "reading the routes", &e))?
                .ok_or_else(|| FaultError::NoTarget {
                    kind,
                    message: format!("no --dev given and there is no default route{in_ns} to take the interface from"),
                })?;
            let name = links
                .iter()
                .find(|(i, _)| *i == index)
                .map(|(_, n)| n.clone())
                .ok_or_else(|| FaultError::NoTarget {
                    kind,
                    message: format!("the default route's interface {index}{in_ns} is not listed"),
                })?;
            (index, name)
        }
    };
    Ok((rtnl, dev, index))
}

/// What one namespace adds to a qdisc fault's plan.
struct NsPlan {
    rec: QdiscRecord,
    actions: Vec<String>,
    revert: String,
    target: Target,
}

#[allow(clippy::too_many_arguments)]
fn plan_qdisc(
    ctx: &Context,
    k: &QdiscKind,
    places: Places,
    dev: Option<&str>,
    leaf: &Leaf,
    args: &[String],
    sel: &Selection<'_>,
    duration: HumanDuration,
) -> Result<Plan, FaultError> {
    let kind = k.fault;
    // The filters are counted before anything is looked at.
    filters(sel).map_err(|message| FaultError::Invalid { kind, message })?;
    if sel.is_everything() {
        probe_qdisc(kind, leaf)?;
    } else {
        probe_selected(kind, leaf)?;
    }
    let mut planned = Vec::with_capacity(places.namespaces.len());
    for ns in places.namespaces {
        planned.push(plan_in(ctx, kind, ns, dev, leaf, args, sel)?);
    }
    let recs: Vec<&QdiscRecord> = planned.iter().map(|p| &p.rec).collect();
    let record = record_of(&recs)?;
    let (mut targets, mut actions, mut reverts) = (Vec::new(), Vec::new(), Vec::new());
    for p in planned {
        targets.push(p.target);
        actions.extend(p.actions);
        reverts.push(p.revert);
    }
    Ok(plan_with(
        ctx,
        kind,
        duration,
        targets,
        actions,
        reverts,
        record,
        places.selection,
    ))
}

/// The plan of a qdisc fault in one namespace: its interface, the root it finds there (a
/// configured tree recorded), the record, the steps and the revert.
fn plan_in(
    ctx: &Context,
    kind: &'static str,
    ns: Option<NsRecord>,
    dev: Option<&str>,
    leaf: &Leaf,
    args: &[String],
    sel: &Selection<'_>,
) -> Result<NsPlan, FaultError> {
    let handle = handle_for(ctx.id.as_str());
    let (mut rtnl, dev, index) = locate(kind, ns.as_ref(), dev, ctx)?;
    let commands = setup_commands(&dev, handle, args, sel)
        .map_err(|message| FaultError::Invalid { kind, message })?;
    let root = rtnl
        .root(index)
        .map_err(|e| nl_error(kind, "reading the root qdisc", &e))?;
    let in_ns = ns.as_ref().map(|n| format!(" in {n}")).unwrap_or_default();
    let snapshot = match root.filter(|r| r.handle != 0) {
        None => None,
        Some(r) => match snapshot::take(&mut rtnl, index)
            .map_err(|e| nl_error(kind, "recording the root qdisc tree", &e))?
        {
            Ok(s) => Some(s),
            Err(why) => {
                return Err(FaultError::Other(format!(
                    "{kind}: {dev}{in_ns} already has a root qdisc ({} {:x}:) configured by someone else, \
                     and its tree cannot be recorded to be written back afterwards ({why}); \
                     faultline never replaces a root it cannot restore",
                    r.kind,
                    r.major()
                )));
            }
        },
    };
    let rec = QdiscRecord {
        netns: None,
        ns,
        dev: dev.clone(),
        qdisc: if sel.is_everything() {
            leaf.kind()
        } else {
            "htb"
        }
        .to_owned(),
        handle,
        leaf: (!sel.is_everything()).then(|| leaf.kind().to_owned()),
        snapshot,
    };
    let place = rec.where_();
    let mut actions: Vec<String> = commands
        .iter()
        .map(|c| format!("{} (netlink{place})", c.join(" ")))
        .collect();
    let revert = match &rec.snapshot {
        Some(s) => {
            let (rk, rh) = s.root().unwrap_or(("?", 0));
            if let Some(first) = actions.first_mut() {
                *first = first.replacen("qdisc add", "qdisc replace", 1);
            }
            actions.insert(
                0,
                format!(
                    "record the root qdisc tree of {dev}{place} ({rk} {rh:x}: with {} qdisc(s), {} class(es), {} filter(s)) in the journal",
                    s.qdiscs.len(),
                    s.classes.len(),
                    s.filters.len()
                ),
            );
            format!(
                "write the recorded tree ({rk} {rh:x}: …) back on {dev}{place} (only while the root is {} {})",
                rec.qdisc,
                rec.handle_str()
            )
        }
        None => format!(
            "qdisc del dev {dev} root{place} (only while it is {} {})",
            rec.qdisc,
            rec.handle_str()
        ),
    };
    let target = NetTarget {
        netns: rec.ns.as_ref().map(ToString::to_string),
        dev: Some(&dev),
        detail: format!("egress, {}: {}", sel.describe(), args.join(" ")),
    }
    .into_target();
    Ok(NsPlan {
        rec,
        actions,
        revert,
        target,
    })
}

/// Applies the fault in every namespace of the plan's record, in order; the first failure
/// is returned (the engine then reverts them all from the plan's record).
fn apply_qdisc(
    kind: &'static str,
    plan: &Plan,
    leaf: &Leaf,
    sel: &Selection<'_>,
    ctx: &Context,
) -> Result<RevertRecord, FaultError> {
    for rec in records::<QdiscRecord>(&plan.record)? {
        apply_in(kind, &rec, leaf, sel, ctx)?;
    }
    Ok(plan.record.clone())
}

/// Applies the fault in the namespace of `rec`.
fn apply_in(
    kind: &'static str,
    rec: &QdiscRecord,
    leaf: &Leaf,
    sel: &Selection<'_>,
    ctx: &Context,
) -> Result<(), FaultError> {
    let steps = setup_objects(rec.handle, leaf, sel)
        .map_err(|message| FaultError::Invalid { kind, message })?;
    let (root, rest) = steps
        .split_first()
        .ok_or_else(|| FaultError::Other(format!("{kind}: nothing to apply")))?;
    let (mut rtnl, index) = connect(kind, rec, ctx)?.ok_or_else(|| FaultError::NoTarget {
        kind,
        message: format!("interface {}{} is gone", rec.dev, rec.where_()),
    })?;
    let how = match &rec.snapshot {
        Some(s) => {
            // The root must still be the one recorded: anything else was not snapshotted.
            let now = rtnl
                .root(index)
                .map_err(|e| nl_error(kind, "reading the root qdisc", &e))?;
            let same = now.as_ref().map(|r| (r.kind.as_str(), r.major())) == s.root();
            if !same {
                return Err(FaultError::Other(format!(
                    "{kind}: the root qdisc of {}{} changed since it was recorded; nothing was applied",
                    rec.dev,
                    rec.where_()
                )));
            }
            Write::Replace
        }
        None => Write::Add,
    };
    match rtnl.write(root.what, how, index, &root.obj) {
        Ok(()) => {}
        Err(e) if is_unknown_kind(&e) => {
            return Err(unsupported_for(kind, &root.obj.kind, &e.to_string(), ""));
        }
        Err(e) if e.errno == nix::errno::Errno::EEXIST => {
            let current = rtnl.root(index).ok().flatten();
            return Err(FaultError::Other(format!(
                "{kind}: {} already has a root qdisc{}{}; faultline adds its qdisc only where none was configured \
                 or where it recorded the configured tree to write it back ({e})",
                rec.dev,
                current
                    .map(|r| format!(" ({} {:x}:)", r.kind, r.major()))
                    .unwrap_or_default(),
                rec.where_(),
            )));
        }
        Err(e) => return Err(nl_error(kind, "adding the root qdisc", &e)),
    }
    // The root is ours from here on: any later failure takes it away again (with whatever
    // class, leaf and filters were added under it) before the error is returned.
    for step in rest {
        if let Err(e) = rtnl.write(step.what, Write::Add, index, &step.obj) {
            let undo = revert_record(rec, ctx).map_or_else(
                |u| format!("; removing the partial setup failed too: {u}"),
                |()| "; the partial setup was removed".to_owned(),
            );
            let missing = match step.what {
                Object::Filter => "u32",
                _ => step.obj.kind.as_str(),
            };
            return Err(if is_unknown_kind(&e) {
                unsupported_for(kind, missing, &e.to_string(), &undo)
            } else {
                FaultError::Other(format!(
                    "{kind}: adding the {} {missing}: {e}{undo}",
                    step.what.name()
                ))
            });
        }
    }
    Ok(())
}

fn check_qdisc(record: &RevertRecord, ctx: &Context) -> Result<Effect, FaultError> {
    let effects = records::<QdiscRecord>(record)?
        .iter()
        .map(|rec| check_in(rec, ctx))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(combine(effects))
}

/// Whether the fault is in effect in the namespace of `rec`.
fn check_in(rec: &QdiscRecord, ctx: &Context) -> Result<Effect, FaultError> {
    let kind = rec.fault();
    let Some((mut rtnl, index)) = connect(kind, rec, ctx)? else {
        return Ok(Effect::not_in_effect(format!(
            "interface {}{} or its namespace is gone",
            rec.dev,
            rec.where_()
        )));
    };
    let qdiscs = rtnl
        .dump(Object::Qdisc, index, 0)
        .map_err(|e| nl_error(kind, "reading the qdiscs", &e))?;
    let root = qdiscs.iter().find(|q| q.parent == TC_H_ROOT);
    if !root.is_some_and(|r| is_ours(rec, r)) {
        return Ok(Effect::not_in_effect(format!(
            "root qdisc of {}{} is {}",
            rec.dev,
            rec.where_(),
            root.map(|r| format!("{} {:x}:", r.kind, r.major()))
                .unwrap_or_else(|| "the default".into())
        )));
    }
    let class = (u32::from(rec.handle) << 16) | 1;
    Ok(match rec.leaf.as_deref() {
        None => Effect::in_effect(format!(
            "root qdisc of {}{} is {} {}",
            rec.dev,
            rec.where_(),
            rec.qdisc,
            rec.handle_str()
        )),
        Some(leaf) if qdiscs.iter().any(|q| q.parent == class && q.kind == leaf) => {
            Effect::in_effect(format!(
                "root qdisc of {}{} is htb {} with {leaf} under class {:x}:1",
                rec.dev,
                rec.where_(),
                rec.handle_str(),
                rec.handle
            ))
        }
        Some(leaf) => Effect::not_in_effect(format!(
            "root qdisc of {}{} is htb {} but the {leaf} under class {:x}:1 is gone",
            rec.dev,
            rec.where_(),
            rec.handle_str(),
            rec.handle
        )),
    })
}

fn is_ours(rec: &QdiscRecord, root: &TcObject) -> bool {
    root.kind == rec.qdisc && root.major() == rec.handle
}

fn revert_qdisc(record: &RevertRecord, ctx: &Context) -> Result<(), FaultError> {
    revert_each(&records::<QdiscRecord>(record)?, |rec| {
        revert_record(rec, ctx)
    })
}

/// Takes the fault's root qdisc away (with any class, leaf and filter under it) if it is
/// ours — writing back the recorded tree where there was one — and checks the result.
fn revert_record(rec: &QdiscRecord, ctx: &Context) -> Result<(), FaultError> {
    let kind = rec.fault();
    let Some((mut rtnl, index)) = connect(kind, rec, ctx)? else {
        info!(
            dev = %rec.dev,
            place = %rec.where_(),
            "the interface or its network namespace is gone, and the qdisc with it: counted as reverted"
        );
        return Ok(());
    };
    let root = rtnl
        .root(index)
        .map_err(|e| nl_error(kind, "reading the root qdisc", &e))?;
    let ours = root.as_ref().is_some_and(|r| is_ours(rec, r));
    match &rec.snapshot {
        Some(snap) => {
            // Ours: replace it with the recorded tree. The recorded root (or the default,
            // ours having been deleted by someone) with the tree incomplete: a restore was
            // interrupted, so finish it. Anyone else's root: leave it.
            let recorded_root = root
                .as_ref()
                .is_some_and(|r| Some((r.kind.as_str(), r.major())) == snap.root());
            let default_root = root.as_ref().is_none_or(|r| r.handle == 0);
            let restored = |rtnl: &mut Rtnl| {
                snapshot::is_restored(rtnl, index, snap)
                    .map_err(|e| nl_error(kind, "reading the restored tree", &e))
            };
            if !(ours || default_root || (recorded_root && !restored(&mut rtnl)?)) {
                debug!(dev = %rec.dev, "root qdisc is not ours; nothing to revert");
                return Ok(());
            }
            snapshot::restore(&mut rtnl, index, snap).map_err(|e| {
                FaultError::Other(format!(
                    "cannot write back the recorded qdisc tree of {}{}: {e}",
                    rec.dev,
                    rec.where_()
                ))
            })?;
            if !restored(&mut rtnl)? {
                return Err(FaultError::Other(format!(
                    "the qdisc tree of {}{} differs from the recorded one after writing it back",
                    rec.dev,
                    rec.where_()
                )));
            }
        }
        None => {
            if !ours {
                debug!(dev = %rec.dev, "qdisc already gone; nothing to revert");
                return Ok(());
            }
            match rtnl.write(Object::Qdisc, Write::Delete, index, &rec.root_object()) {
                Ok(()) => {}
                Err(e) if e.errno == nix::errno::Errno::ENODEV => return Ok(()),
                Err(e) => {
                    return Err(nl_error(
                        kind,
                        &format!("removing the {} qdisc", rec.qdisc),
                        &e,
                    ));
                }
            }
            let after = rtnl
                .root(index)
                .map_err(|e| nl_error(kind, "reading the root qdisc", &e))?;
            if after.is_some_and(|r| is_ours(rec, &r)) {
                return Err(FaultError::Other(format!(
                    "the {} qdisc {} on {}{} is still there after deleting it",
                    rec.qdisc,
                    rec.handle_str(),
                    rec.dev,
                    rec.where_()
                )));
            }
        }
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

    fn leaf(&self) -> Result<Leaf, FaultError> {
        Leaf::netem(self).map_err(|message| FaultError::Invalid {
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
        let args = self.args()?;
        let leaf = self.leaf()?;
        plan_qdisc(
            ctx,
            &NETEM,
            self.places(NETEM.fault, ctx)?,
            self.dev.as_deref(),
            &leaf,
            &args,
            &self.selection(),
            self.duration,
        )
    }

    fn apply(&self, plan: &Plan, ctx: &Context) -> Result<RevertRecord, FaultError> {
        apply_qdisc("netem", plan, &self.leaf()?, &self.selection(), ctx)
    }

    fn check(&self, record: &RevertRecord, ctx: &Context) -> Result<Effect, FaultError> {
        check_qdisc(record, ctx)
    }

    fn revert(&self, record: &RevertRecord, ctx: &Context) -> Result<(), FaultError> {
        revert_qdisc(record, ctx)
    }
}

impl Fault for RateLimitSpec {
    fn plan(&self, ctx: &Context) -> Result<Plan, FaultError> {
        plan_qdisc(
            ctx,
            &TBF,
            self.places(TBF.fault, ctx)?,
            self.dev.as_deref(),
            &Leaf::tbf(self.rate, self.burst),
            &tbf_args(self.rate, self.burst),
            &self.selection(),
            self.duration,
        )
    }

    fn apply(&self, plan: &Plan, ctx: &Context) -> Result<RevertRecord, FaultError> {
        apply_qdisc(
            "rate-limit",
            plan,
            &Leaf::tbf(self.rate, self.burst),
            &self.selection(),
            ctx,
        )
    }

    fn check(&self, record: &RevertRecord, ctx: &Context) -> Result<Effect, FaultError> {
        check_qdisc(record, ctx)
    }

    fn revert(&self, record: &RevertRecord, ctx: &Context) -> Result<(), FaultError> {
        revert_qdisc(record, ctx)
    }
}

#[cfg(test)]
mod tests;
