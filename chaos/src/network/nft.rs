//! `partition`: drop traffic to and/or from given addresses (and ports) with nftables rules in
//! a table of faultline's own, `table inet faultline_<id>`, in the network namespaces the user
//! names (`--netns`, `--pid`, `--container`, pod selectors: one table in each picked pod's
//! namespace, one [`TableRecord`] each; [`super::netns`]), programmed over netlink with
//! `netlink-packet-netfilter`'s messages — no `nft` binary.
//!
//! The whole table — chains on the `output`, `input` and `forward` hooks and their rules — is
//! created by one nftables batch (one transaction), so the kernel applies it whole or not at
//! all; revert deletes the table, which removes every rule with it and touches nothing of
//! anyone else's (other tables, iptables-nft rules). The revert record holds only the
//! namespace and the table name, which is derived from the fault id and therefore known
//! before apply.
//!
//! Semantics: `egress` drops packets *to* a destination (`daddr`, and `dport` when ports are
//! given); `ingress` drops packets *from* it (`saddr`, `sport`: the destination's replies);
//! `both` (the default) does both, so a connection across the partition times out rather
//! than being refused. The `forward` hook covers containers and pods routed through this
//! host. Each rule matches one network and, with ports, one protocol and port ([`rules`]);
//! plans show the same table as `nft` would list it ([`ruleset`]).

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use std::fs::File;

use netlink_packet_core::{
    NLM_F_APPEND, NLM_F_CREATE, NLM_F_EXCL, NetlinkHeader, NetlinkMessage, NetlinkPayload,
};
use netlink_packet_netfilter::nftables::{
    Bitwise, ChainAttribute, ChainMessage, Cmp, DataAttribute, Expressions, Hook, Immediate,
    InetHookNumber, Meta, MetaKey, NfTablesMessage, Operator, Payload, Register, RuleAttribute,
    RuleMessage, TableAttribute, TableMessage, Verdict, VerdictAttribute,
};
use netlink_packet_netfilter::none::ControlMessage;
use netlink_packet_netfilter::{NetfilterHeader, NetfilterMessage, NetfilterProtoFamily};

use super::netlink::{NETLINK_NETFILTER, NlError, NlSocket};
use super::netns::{self, NsRecord, Place};
use super::{NetTarget, combine, plan_with, record_of, records, revert_each};
use crate::error::FaultError;
use crate::fault::{Context, Effect, Fault, Plan, RevertRecord};
use crate::units::HumanDuration;

with_net_target! {
/// `partition`: traffic to/from the destinations is dropped, in the agent's own network
/// namespace when no --netns, --pid, --container or pod selector is given.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, clap::Args)]
#[serde(deny_unknown_fields)]
pub struct PartitionSpec {
    /// Destination address or network (10.0.0.2, 10.0.0.0/24, fd00::1); repeatable.
    #[arg(long, required = true)]
    pub dest: Vec<Cidr>,
    /// Only these destination ports (repeatable); every port when omitted.
    #[arg(long)]
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub port: Vec<u16>,
    /// Which transport protocols.
    #[arg(long, value_enum, default_value_t = Protocol::All)]
    #[serde(default)]
    pub protocol: Protocol,
    /// Which way traffic is dropped.
    #[arg(long, value_enum, default_value_t = Way::Both)]
    #[serde(default)]
    pub direction: Way,
    /// How long the fault lasts.
    #[arg(long)]
    pub duration: HumanDuration,
}
}

/// Transport protocols a partition applies to.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// TCP only.
    Tcp,
    /// UDP only.
    Udp,
    /// Everything (with ports: TCP and UDP).
    #[default]
    All,
}

/// Which way a partition drops traffic.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Way {
    /// Packets to the destination.
    Egress,
    /// Packets from the destination.
    Ingress,
    /// Both.
    #[default]
    Both,
}

/// An address with a prefix length (`10.0.0.0/24`; a bare address is a host route).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    /// The address.
    pub addr: IpAddr,
    /// Prefix length (≤ 32 for IPv4, ≤ 128 for IPv6).
    pub prefix: u8,
}

impl FromStr for Cidr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let t = s.trim();
        let (a, p) = match t.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (t, None),
        };
        let addr: IpAddr = a.parse().map_err(|_| {
            format!(
                "invalid destination {s:?}: expected an IP address such as 10.0.0.2 or 10.0.0.0/24"
            )
        })?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match p {
            None => max,
            Some(p) => match p.parse::<u8>() {
                Ok(v) if v <= max => v,
                _ => {
                    return Err(format!(
                        "invalid destination {s:?}: prefix must be 0..={max}"
                    ));
                }
            },
        };
        Ok(Cidr { addr, prefix })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl Serialize for Cidr {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Cidr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// What revert needs: the namespace and the table.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TableRecord {
    /// The namespace by name only, as records written before namespaces were recorded by
    /// inode hold it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub netns: Option<String>,
    /// The namespace, if not the agent's own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ns: Option<NsRecord>,
    /// The table's name (family `inet`).
    pub table: String,
}

/// The table name for a fault id: `faultline_<id with _ for ->`.
pub fn table_name(id: &crate::fault::FaultId) -> String {
    format!("faultline_{}", id.underscored())
}

/// One match expression per address family and direction: `ip daddr { … }` etc.
fn addr_match(dests: &[Cidr], v6: bool, side: &str) -> Option<String> {
    let list: Vec<String> = dests
        .iter()
        .filter(|d| d.addr.is_ipv6() == v6)
        .map(ToString::to_string)
        .collect();
    if list.is_empty() {
        return None;
    }
    let fam = if v6 { "ip6" } else { "ip" };
    Some(format!("{fam} {side}addr {{ {} }}", list.join(", ")))
}

fn port_match(ports: &[u16], protocol: Protocol, side: &str) -> String {
    let list = ports
        .iter()
        .map(u16::to_string)
        .collect::<Vec<_>>()
        .join(", ");
    match (ports.is_empty(), protocol) {
        (true, Protocol::All) => String::new(),
        (true, Protocol::Tcp) => " meta l4proto tcp".into(),
        (true, Protocol::Udp) => " meta l4proto udp".into(),
        (false, Protocol::Tcp) => format!(" tcp {side}port {{ {list} }}"),
        (false, Protocol::Udp) => format!(" udp {side}port {{ {list} }}"),
        (false, Protocol::All) => {
            format!(" meta l4proto {{ tcp, udp }} th {side}port {{ {list} }}")
        }
    }
}

/// The complete `nft -f` script that creates the partition table. Pure.
pub fn ruleset(table: &str, spec: &PartitionSpec) -> String {
    let mut egress = Vec::new();
    let mut ingress = Vec::new();
    for v6 in [false, true] {
        if let Some(m) = addr_match(&spec.dest, v6, "d") {
            egress.push(format!(
                "{m}{} drop",
                port_match(&spec.port, spec.protocol, "d")
            ));
        }
        if let Some(m) = addr_match(&spec.dest, v6, "s") {
            ingress.push(format!(
                "{m}{} drop",
                port_match(&spec.port, spec.protocol, "s")
            ));
        }
    }
    let (out, inp): (&[String], &[String]) = match spec.direction {
        Way::Egress => (&egress, &[]),
        Way::Ingress => (&[], &ingress),
        Way::Both => (&egress, &ingress),
    };
    let chain = |name: &str, rules: &[&String]| {
        let mut s = format!(
            "\tchain {name} {{\n\t\ttype filter hook {name} priority -10; policy accept;\n"
        );
        for r in rules {
            s.push_str(&format!("\t\t{r}\n"));
        }
        s.push_str("\t}\n");
        s
    };
    let mut script = format!("table inet {table} {{\n");
    script.push_str(&chain("output", &out.iter().collect::<Vec<_>>()));
    script.push_str(&chain("input", &inp.iter().collect::<Vec<_>>()));
    script.push_str(&chain(
        "forward",
        &out.iter().chain(inp).collect::<Vec<_>>(),
    ));
    script.push_str("}\n");
    script
}

/// The most rules one partition may install (networks × ports × protocols × directions).
const MAX_RULES: usize = 1024;

/// Which side of a packet a rule matches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Side {
    /// Packets to the destination (`daddr`, `dport`).
    To,
    /// Packets from it (`saddr`, `sport`).
    From,
}

/// One drop rule: a network, and optionally a protocol and port, on one side. Pure data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Rule {
    side: Side,
    net: Cidr,
    proto: Option<u8>,
    port: Option<u16>,
}

/// Every rule of a partition, and the chains they go in (`output` takes `To` rules, `input`
/// takes `From` rules, `forward` both). Pure.
fn rules(spec: &PartitionSpec) -> Result<Vec<Rule>, String> {
    let sides: &[Side] = match spec.direction {
        Way::Egress => &[Side::To],
        Way::Ingress => &[Side::From],
        Way::Both => &[Side::To, Side::From],
    };
    let protos: Vec<Option<u8>> = match (spec.protocol, spec.port.is_empty()) {
        (Protocol::Tcp, _) => vec![Some(6)],
        (Protocol::Udp, _) => vec![Some(17)],
        (Protocol::All, false) => vec![Some(6), Some(17)],
        (Protocol::All, true) => vec![None],
    };
    let ports: Vec<Option<u16>> = if spec.port.is_empty() {
        vec![None]
    } else {
        spec.port.iter().copied().map(Some).collect()
    };
    let count = sides.len() * spec.dest.len() * protos.len() * ports.len();
    if count > MAX_RULES {
        return Err(format!(
            "{count} rules needed (destinations × ports × protocols × directions); at most \
             {MAX_RULES}: give networks (10.0.0.0/24) instead of single addresses, or fewer ports"
        ));
    }
    let mut out = Vec::with_capacity(count);
    for side in sides {
        for net in &spec.dest {
            for proto in &protos {
                for port in &ports {
                    out.push(Rule {
                        side: *side,
                        net: *net,
                        proto: *proto,
                        port: *port,
                    });
                }
            }
        }
    }
    Ok(out)
}

fn reg1() -> Register {
    Register::Reg1
}

fn cmp_eq(data: Vec<u8>) -> Expressions {
    Expressions::Cmp(vec![
        Cmp::SourceRegister(reg1()),
        Cmp::Op(Operator::Equal),
        Cmp::Data(DataAttribute::Value(data)),
    ])
}

/// The expressions of a rule, as nft compiles `ip daddr 10.0.0.0/24 tcp dport 80 drop`:
/// the family, the (masked) address, the protocol, the port, the verdict. Pure.
fn expressions(r: &Rule) -> Vec<Expressions> {
    const NFPROTO_IPV4: u8 = 2;
    const NFPROTO_IPV6: u8 = 10;
    let (family, addr, off): (u8, Vec<u8>, u32) = match r.net.addr {
        IpAddr::V4(a) => (
            NFPROTO_IPV4,
            a.octets().to_vec(),
            if r.side == Side::To { 16 } else { 12 },
        ),
        IpAddr::V6(a) => (
            NFPROTO_IPV6,
            a.octets().to_vec(),
            if r.side == Side::To { 24 } else { 8 },
        ),
    };
    let mut e = vec![
        Expressions::Meta(vec![
            Meta::Key(MetaKey::Nfproto),
            Meta::DestinationRegister(reg1()),
        ]),
        cmp_eq(vec![family]),
    ];
    if r.net.prefix > 0 {
        let len = addr.len();
        e.push(Expressions::Payload(vec![
            Payload::DestinationRegister(reg1()),
            Payload::Base(1), // network header
            Payload::Offset(off),
            Payload::Len(len as u32),
        ]));
        let mask: Vec<u8> = (0..len)
            .map(|i| {
                let bits = (usize::from(r.net.prefix)).saturating_sub(i * 8).min(8);
                if bits == 0 { 0 } else { 0xffu8 << (8 - bits) }
            })
            .collect();
        if usize::from(r.net.prefix) < len * 8 {
            e.push(Expressions::Bitwise(vec![
                Bitwise::SourceRegister(reg1()),
                Bitwise::DestinationRegister(reg1()),
                Bitwise::Length(len as u32),
                Bitwise::Mask(DataAttribute::Value(mask.clone())),
                Bitwise::Xor(DataAttribute::Value(vec![0; len])),
            ]));
        }
        e.push(cmp_eq(addr.iter().zip(&mask).map(|(a, m)| a & m).collect()));
    }
    if let Some(p) = r.proto {
        e.push(Expressions::Meta(vec![
            Meta::Key(MetaKey::L4Proto),
            Meta::DestinationRegister(reg1()),
        ]));
        e.push(cmp_eq(vec![p]));
    }
    if let Some(port) = r.port {
        e.push(Expressions::Payload(vec![
            Payload::DestinationRegister(reg1()),
            Payload::Base(2), // transport header
            Payload::Offset(if r.side == Side::To { 2 } else { 0 }),
            Payload::Len(2),
        ]));
        e.push(cmp_eq(port.to_be_bytes().to_vec()));
    }
    e.push(Expressions::Immediate(vec![
        Immediate::DestinationRegister(Register::Verdict),
        Immediate::Data(DataAttribute::Verdict(vec![VerdictAttribute::Code(
            Verdict::Other(0), // NF_DROP
        )])),
    ]));
    e
}

fn nf(
    family: NetfilterProtoFamily,
    msg: NfTablesMessage,
    flags: u16,
) -> NetlinkMessage<NetfilterMessage> {
    let mut header = NetlinkHeader::default();
    header.flags = flags;
    NetlinkMessage::new(
        header,
        NetlinkPayload::InnerMessage(NetfilterMessage::new(
            NetfilterHeader::new(family, 0, 0),
            msg,
        )),
    )
}

fn control(msg: ControlMessage) -> NetlinkMessage<NetfilterMessage> {
    const NFNL_SUBSYS_NFTABLES: u16 = 10;
    NetlinkMessage::new(
        NetlinkHeader::default(),
        NetlinkPayload::InnerMessage(NetfilterMessage::new(
            NetfilterHeader::new(NetfilterProtoFamily::Unspec, 0, NFNL_SUBSYS_NFTABLES),
            msg,
        )),
    )
}

/// One transaction: begin, the changes (each acknowledged), end.
fn transaction(
    changes: Vec<NetlinkMessage<NetfilterMessage>>,
) -> Vec<(NetlinkMessage<NetfilterMessage>, bool)> {
    let mut out = vec![(control(ControlMessage::BatchBegin), false)];
    out.extend(changes.into_iter().map(|m| (m, true)));
    out.push((control(ControlMessage::BatchEnd), false));
    out
}

fn table_name_attr(table: &str) -> TableMessage {
    TableMessage {
        attributes: vec![TableAttribute::Name(table.to_owned())],
    }
}

/// The messages that create the partition table: the table (only if there is none of that
/// name), its three base chains, the rules. Pure.
fn create_messages(
    table: &str,
    spec: &PartitionSpec,
) -> Result<Vec<NetlinkMessage<NetfilterMessage>>, String> {
    let inet = NetfilterProtoFamily::Inet;
    let mut msgs = vec![nf(
        inet,
        NfTablesMessage::NewTable(table_name_attr(table)),
        NLM_F_CREATE | NLM_F_EXCL,
    )];
    let chains = [
        ("output", InetHookNumber::LocalOut),
        ("input", InetHookNumber::LocalIn),
        ("forward", InetHookNumber::Forward),
    ];
    for (name, hook) in chains {
        msgs.push(nf(
            inet,
            NfTablesMessage::NewChain(ChainMessage {
                attributes: vec![
                    ChainAttribute::Table(table.to_owned()),
                    ChainAttribute::Name(name.to_owned()),
                    ChainAttribute::Hook(vec![
                        Hook::Number(hook.into()),
                        Hook::Priority((-10i32) as u32),
                    ]),
                    ChainAttribute::Policy(1), // accept
                    ChainAttribute::Type("filter".to_owned()),
                ],
            }),
            NLM_F_CREATE,
        ));
    }
    for r in rules(spec)? {
        let in_chains: &[&str] = match r.side {
            Side::To => &["output", "forward"],
            Side::From => &["input", "forward"],
        };
        for chain in in_chains {
            msgs.push(nf(
                inet,
                NfTablesMessage::NewRule(RuleMessage {
                    attributes: vec![
                        RuleAttribute::Table(table.to_owned()),
                        RuleAttribute::Chain((*chain).to_owned()),
                        RuleAttribute::Expressions(
                            expressions(&r).into_iter().map(Into::into).collect(),
                        ),
                    ],
                }),
                NLM_F_CREATE | NLM_F_APPEND,
            ));
        }
    }
    Ok(msgs)
}

fn unsupported(detail: &str) -> FaultError {
    FaultError::Unsupported {
        kind: "partition",
        message: format!("partitions need nftables in the kernel (module nf_tables): {detail}"),
    }
}

fn nl_error(doing: &str, e: &NlError) -> FaultError {
    match e.errno {
        nix::errno::Errno::EPERM => FaultError::Unsupported {
            kind: "partition",
            message: format!("{doing}: {e}; nftables changes need CAP_NET_ADMIN"),
        },
        nix::errno::Errno::EOPNOTSUPP | nix::errno::Errno::EPROTONOSUPPORT => {
            unsupported(&format!("{doing}: {e}"))
        }
        _ => FaultError::Other(format!("partition: {doing}: {e}")),
    }
}

/// A netfilter socket in `ns` (the agent's own when `None`); a kernel without nfnetlink is
/// reported as missing nf_tables.
fn socket(ns: Option<&File>) -> Result<NlSocket, FaultError> {
    netns::socket_in("partition", ns, || NlSocket::new(NETLINK_NETFILTER)).map_err(|e| match e {
        FaultError::Other(m) if m.contains("Protocol not supported") => unsupported(&m),
        e => e,
    })
}

/// Check nftables answers in the namespace before applying (lists the tables).
fn probe(sock: &mut NlSocket) -> Result<(), FaultError> {
    sock.dump(nf(
        NetfilterProtoFamily::Unspec,
        NfTablesMessage::GetTable(TableMessage {
            attributes: Vec::new(),
        }),
        0,
    ))
    .map(drop)
    .map_err(|e| match e.errno {
        nix::errno::Errno::EPERM => nl_error("listing the nftables tables", &e),
        _ => unsupported(&format!("listing the tables: {e}")),
    })
}

fn table_exists(sock: &mut NlSocket, table: &str) -> Result<bool, FaultError> {
    match sock.request(nf(
        NetfilterProtoFamily::Inet,
        NfTablesMessage::GetTable(table_name_attr(table)),
        0,
    )) {
        Ok(()) => Ok(true),
        Err(e) if e.errno == nix::errno::Errno::ENOENT => Ok(false),
        Err(e) => Err(nl_error(&format!("looking for table inet {table}"), &e)),
    }
}

/// The record's namespace with a socket in it; `None` when the namespace is gone.
fn connect(rec: &TableRecord, ctx: &Context) -> Result<Option<NlSocket>, FaultError> {
    match netns::reopen(
        "partition",
        rec.ns.as_ref(),
        rec.netns.as_deref(),
        &ctx.env.proc_root,
    )? {
        Place::Gone => Ok(None),
        Place::Own => socket(None).map(Some),
        Place::In(f) => socket(Some(&f)).map(Some),
    }
}

impl Fault for PartitionSpec {
    fn plan(&self, ctx: &Context) -> Result<Plan, FaultError> {
        if self.dest.is_empty() {
            return Err(FaultError::Invalid {
                kind: "partition",
                message: "give at least one --dest".into(),
            });
        }
        if self.port.contains(&0) {
            return Err(FaultError::Invalid {
                kind: "partition",
                message: "--port 0 is not a port".into(),
            });
        }
        rules(self).map_err(|message| FaultError::Invalid {
            kind: "partition",
            message,
        })?;
        let places = self.places("partition", ctx)?;
        let table = table_name(&ctx.id);
        let dests = self
            .dest
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ");
        let ports = if self.port.is_empty() {
            String::new()
        } else {
            format!(
                " port {}",
                self.port
                    .iter()
                    .map(u16::to_string)
                    .collect::<Vec<_>>()
                    .join(",")
            )
        };
        let detail =
            format!("{:?} {dests}{ports} ({:?})", self.direction, self.protocol).to_lowercase();
        let script = ruleset(&table, self).replace(['\n', '\t'], " ");
        let (mut recs, mut targets, mut actions, mut reverts) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for ns in places.namespaces {
            let rec = TableRecord {
                netns: None,
                ns,
                table: table.clone(),
            };
            let mut sock = connect(&rec, ctx)?.ok_or_else(|| FaultError::NoTarget {
                kind: "partition",
                message: "the network namespace disappeared while the fault was planned".into(),
            })?;
            probe(&mut sock)?;
            let place = rec.where_();
            targets.push(
                NetTarget {
                    netns: rec.ns.as_ref().map(ToString::to_string),
                    dev: None,
                    detail: detail.clone(),
                }
                .into_target(),
            );
            actions.push(format!(
                "create, in one nftables transaction over netlink{place}: {script}"
            ));
            reverts.push(format!("delete table inet {table}{place}"));
            recs.push(rec);
        }
        Ok(plan_with(
            ctx,
            "partition",
            self.duration,
            targets,
            actions,
            reverts,
            record_of(&recs)?,
            places.selection,
        ))
    }

    fn apply(&self, plan: &Plan, ctx: &Context) -> Result<RevertRecord, FaultError> {
        // In order; the first failure is returned and the engine reverts them all.
        for rec in records::<TableRecord>(&plan.record)? {
            apply_in(self, &rec, ctx)?;
        }
        Ok(plan.record.clone())
    }

    fn check(&self, record: &RevertRecord, ctx: &Context) -> Result<Effect, FaultError> {
        let effects = records::<TableRecord>(record)?
            .iter()
            .map(|rec| check_in(rec, ctx))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(combine(effects))
    }

    fn revert(&self, record: &RevertRecord, ctx: &Context) -> Result<(), FaultError> {
        revert_each(&records::<TableRecord>(record)?, |rec| {
            revert_table(rec, ctx)
        })
    }
}

impl TableRecord {
    /// ` in <namespace>`, or nothing for the agent's own.
    fn where_(&self) -> String {
        match (&self.ns, &self.netns) {
            (Some(ns), _) => format!(" in {ns}"),
            (None, Some(n)) => format!(" in netns {n}"),
            (None, None) => String::new(),
        }
    }
}

/// Creates the partition's table in the namespace of `rec`, in one transaction.
fn apply_in(spec: &PartitionSpec, rec: &TableRecord, ctx: &Context) -> Result<(), FaultError> {
    let mut sock = connect(rec, ctx)?.ok_or_else(|| FaultError::NoTarget {
        kind: "partition",
        message: format!("the network namespace is gone{}", rec.where_()),
    })?;
    if table_exists(&mut sock, &rec.table)? {
        return Err(FaultError::Other(format!(
            "partition: table inet {}{} already exists; refusing to merge into it",
            rec.table,
            rec.where_()
        )));
    }
    let msgs = create_messages(&rec.table, spec).map_err(|message| FaultError::Invalid {
        kind: "partition",
        message,
    })?;
    sock.batch(transaction(msgs)).map_err(|e| {
        nl_error(
            &format!("creating table inet {}{}", rec.table, rec.where_()),
            &e,
        )
    })
}

/// Whether the partition's table is in the namespace of `rec`.
fn check_in(rec: &TableRecord, ctx: &Context) -> Result<Effect, FaultError> {
    let place = rec.where_();
    let Some(mut sock) = connect(rec, ctx)? else {
        return Ok(Effect::not_in_effect(format!(
            "its network namespace is gone{place}"
        )));
    };
    Ok(if table_exists(&mut sock, &rec.table)? {
        Effect::in_effect(format!("nft table inet {} present{place}", rec.table))
    } else {
        Effect::not_in_effect(format!("nft table inet {} absent{place}", rec.table))
    })
}

/// Delete the table named in the record; gone already (or namespace gone) is success.
fn revert_table(rec: &TableRecord, ctx: &Context) -> Result<(), FaultError> {
    let Some(mut sock) = connect(rec, ctx)? else {
        tracing::info!(
            table = %rec.table,
            place = %rec.where_(),
            "the network namespace is gone, and the table with it: counted as reverted"
        );
        return Ok(());
    };
    if !table_exists(&mut sock, &rec.table)? {
        return Ok(());
    }
    let delete = nf(
        NetfilterProtoFamily::Inet,
        NfTablesMessage::DeleteTable(table_name_attr(&rec.table)),
        0,
    );
    match sock.batch(transaction(vec![delete])) {
        Ok(()) => {}
        Err(e) if e.errno == nix::errno::Errno::ENOENT => {}
        Err(e) => {
            return Err(nl_error(
                &format!("deleting table inet {}{}", rec.table, rec.where_()),
                &e,
            ));
        }
    }
    if table_exists(&mut sock, &rec.table)? {
        return Err(FaultError::Other(format!(
            "partition revert: table inet {}{} is still there after deleting it",
            rec.table,
            rec.where_()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(dest: &[&str], port: &[u16], protocol: Protocol, direction: Way) -> PartitionSpec {
        serde_json::from_value(serde_json::json!({
            "dest": dest,
            "port": port,
            "protocol": protocol,
            "direction": direction,
            "duration": "1s",
        }))
        .unwrap()
    }

    #[test]
    fn cidrs_parse_with_clear_errors() {
        assert_eq!(
            "10.0.0.2".parse::<Cidr>().unwrap().to_string(),
            "10.0.0.2/32"
        );
        assert_eq!("10.0.0.0/24".parse::<Cidr>().unwrap().prefix, 24);
        assert_eq!("fd00::1".parse::<Cidr>().unwrap().prefix, 128);
        assert!(
            "10.0.0.0/33"
                .parse::<Cidr>()
                .unwrap_err()
                .contains("0..=32")
        );
        assert!(
            "db.local"
                .parse::<Cidr>()
                .unwrap_err()
                .contains("expected an IP address")
        );
    }

    #[test]
    fn ruleset_drops_both_ways_for_a_port() {
        let s = ruleset(
            "faultline_t",
            &spec(&["10.0.0.2"], &[80], Protocol::Tcp, Way::Both),
        );
        assert!(s.starts_with("table inet faultline_t {"), "{s}");
        assert!(s.contains("hook output priority -10; policy accept;\n\t\tip daddr { 10.0.0.2/32 } tcp dport { 80 } drop"), "{s}");
        assert!(s.contains("hook input priority -10; policy accept;\n\t\tip saddr { 10.0.0.2/32 } tcp sport { 80 } drop"), "{s}");
        assert_eq!(s.matches(" drop").count(), 4, "{s}");
    }

    #[test]
    fn ruleset_splits_families_and_directions() {
        let s = ruleset(
            "t",
            &spec(
                &["10.0.0.0/8", "fd00::/64"],
                &[],
                Protocol::All,
                Way::Egress,
            ),
        );
        assert!(s.contains("ip daddr { 10.0.0.0/8 } drop"), "{s}");
        assert!(s.contains("ip6 daddr { fd00::/64 } drop"), "{s}");
        assert!(!s.contains("saddr"), "{s}");
        let s = ruleset(
            "t",
            &spec(&["10.0.0.1"], &[53, 5353], Protocol::All, Way::Ingress),
        );
        assert!(
            s.contains(
                "ip saddr { 10.0.0.1/32 } meta l4proto { tcp, udp } th sport { 53, 5353 } drop"
            ),
            "{s}"
        );
        assert!(!s.contains("daddr"), "{s}");
    }

    #[test]
    fn table_names_come_from_the_id() {
        let id: crate::fault::FaultId = "partition-0a1b2c3d".parse().unwrap();
        assert_eq!(table_name(&id), "faultline_partition_0a1b2c3d");
    }

    #[test]
    fn rules_cover_every_network_port_and_side_and_are_capped() {
        let r = rules(&spec(
            &["10.0.0.2", "fd00::/64"],
            &[80, 443],
            Protocol::All,
            Way::Both,
        ))
        .unwrap();
        // 2 sides × 2 networks × 2 protocols × 2 ports.
        assert_eq!(r.len(), 16);
        assert!(
            r.iter()
                .any(|x| x.side == Side::From && x.proto == Some(17) && x.port == Some(443))
        );
        let many: Vec<String> = (1..=200).map(|i| format!("10.0.{}.1", i)).collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        let e = rules(&spec(&many, &[1, 2, 3], Protocol::All, Way::Both)).unwrap_err();
        assert!(e.contains("2400 rules"), "{e}");
    }

    #[test]
    fn a_rule_compiles_as_nft_compiles_it() {
        let r = Rule {
            side: Side::To,
            net: "10.0.0.0/23".parse().unwrap(),
            proto: Some(6),
            port: Some(7001),
        };
        let e = expressions(&r);
        // meta nfproto, cmp ipv4, payload daddr, bitwise /23, cmp, meta l4proto, cmp tcp,
        // payload dport, cmp 7001, immediate drop.
        assert_eq!(e.len(), 10, "{e:#?}");
        assert_eq!(e[1], cmp_eq(vec![2]));
        assert_eq!(
            e[2],
            Expressions::Payload(vec![
                Payload::DestinationRegister(Register::Reg1),
                Payload::Base(1),
                Payload::Offset(16),
                Payload::Len(4),
            ])
        );
        assert_eq!(e[4], cmp_eq(vec![10, 0, 0, 0]));
        assert_eq!(e[8], cmp_eq(vec![0x1b, 0x59]));
        // A host address needs no mask; a reply (from) side matches the source.
        let host = Rule {
            side: Side::From,
            net: "fd00::1".parse().unwrap(),
            proto: None,
            port: None,
        };
        let e = expressions(&host);
        assert_eq!(e.len(), 5, "{e:#?}");
        assert!(matches!(&e[2], Expressions::Payload(p) if p.contains(&Payload::Offset(8))));
    }
}
