//! `partition`: drop traffic to and/or from given addresses (and ports) with nftables rules in
//! a table of faultline's own, `table inet faultline_<id>`.
//!
//! The whole table — chains on the `output`, `input` and `forward` hooks and their rules — is
//! created by one `nft -f -` transaction, so the kernel applies it whole or not at all; revert
//! deletes the table, which removes every rule with it and touches nothing of anyone else's
//! (other tables, iptables-nft rules). The revert record holds only the namespace and the
//! table name, which is derived from the fault id and therefore known before apply.
//!
//! Semantics: `egress` drops packets *to* a destination (`daddr`, and `dport` when ports are
//! given); `ingress` drops packets *from* it (`saddr`, `sport`: the destination's replies);
//! `both` (the default) does both, so a connection across the partition times out rather
//! than being refused. The `forward` hook covers containers and pods routed through this
//! host.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::cmd::{self, CmdError};
use super::{NetTarget, plan_with};
use crate::error::FaultError;
use crate::fault::{Context, Effect, Fault, Plan, RevertRecord};
use crate::units::HumanDuration;

/// `partition`: traffic to/from the destinations is dropped.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, clap::Args)]
#[serde(deny_unknown_fields)]
pub struct PartitionSpec {
    /// The network namespace whose traffic is cut (as listed by `ip netns`); the agent's own
    /// when omitted.
    #[arg(long)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub netns: Option<String>,
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
    /// The namespace, if not the agent's own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub netns: Option<String>,
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

fn unsupported(detail: &str) -> FaultError {
    FaultError::Unsupported {
        kind: "partition",
        message: format!(
            "partitions need nftables in the kernel (module nf_tables) and the `nft` tool \
             (package nftables): {detail}"
        ),
    }
}

/// Check nftables works in the namespace before applying (`nft list tables`).
fn probe(netns: Option<&str>) -> Result<(), FaultError> {
    match cmd::run(netns, "nft", &["list", "tables"], None) {
        Ok(_) => Ok(()),
        Err(e @ CmdError::Missing { .. }) => Err(unsupported(&e.to_string())),
        Err(e) if e.stderr().contains("not supported") => Err(unsupported(e.stderr())),
        Err(e) => Err(FaultError::Other(format!("partition: {e}"))),
    }
}

fn table_exists(rec: &TableRecord) -> Result<bool, FaultError> {
    if rec.netns.as_deref().is_some_and(|n| !cmd::netns_exists(n)) {
        return Ok(false);
    }
    match cmd::run(
        rec.netns.as_deref(),
        "nft",
        &["list", "table", "inet", &rec.table],
        None,
    ) {
        Ok(_) => Ok(true),
        Err(e) if e.stderr().contains("No such file or directory") => Ok(false),
        Err(e) => Err(FaultError::Other(format!("partition: {e}"))),
    }
}

impl Fault for PartitionSpec {
    fn plan(&self, ctx: &Context) -> Result<Plan, FaultError> {
        super::check_netns("partition", self.netns.as_deref())?;
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
        probe(self.netns.as_deref())?;
        let rec = TableRecord {
            netns: self.netns.clone(),
            table: table_name(&ctx.id),
        };
        let prefix = self
            .netns
            .as_ref()
            .map(|n| format!("ip netns exec {n} "))
            .unwrap_or_default();
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
        let target = NetTarget {
            netns: self.netns.as_deref(),
            dev: None,
            detail: format!("{:?} {dests}{ports} ({:?})", self.direction, self.protocol)
                .to_lowercase(),
        };
        let action = format!(
            "{prefix}nft -f - <<< '{}'",
            ruleset(&rec.table, self).replace(['\n', '\t'], " ")
        );
        let revert = format!("{prefix}nft delete table inet {}", rec.table);
        plan_with(
            ctx,
            "partition",
            self.duration,
            vec![target.into_target()],
            vec![action],
            vec![revert],
            &rec,
        )
    }

    fn apply(&self, plan: &Plan, _ctx: &Context) -> Result<RevertRecord, FaultError> {
        let rec: TableRecord = plan.record.state()?;
        if table_exists(&rec)? {
            return Err(FaultError::Other(format!(
                "partition: table inet {} already exists; refusing to merge into it",
                rec.table
            )));
        }
        let script = ruleset(&rec.table, self);
        cmd::run(rec.netns.as_deref(), "nft", &["-f", "-"], Some(&script)).map_err(|e| {
            if e.stderr().contains("not supported") {
                unsupported(e.stderr())
            } else {
                FaultError::Other(format!("partition: {e}"))
            }
        })?;
        Ok(plan.record.clone())
    }

    fn check(&self, record: &RevertRecord, _ctx: &Context) -> Result<Effect, FaultError> {
        let rec: TableRecord = record.state()?;
        Ok(if table_exists(&rec)? {
            Effect::in_effect(format!("nft table inet {} present", rec.table))
        } else {
            Effect::not_in_effect(format!("nft table inet {} absent", rec.table))
        })
    }

    fn revert(&self, record: &RevertRecord, _ctx: &Context) -> Result<(), FaultError> {
        revert_table(record)
    }
}

/// Delete the table named in the record; gone already (or namespace gone) is success.
pub fn revert_table(record: &RevertRecord) -> Result<(), FaultError> {
    let rec: TableRecord = record.state()?;
    if !table_exists(&rec)? {
        return Ok(());
    }
    match cmd::run(
        rec.netns.as_deref(),
        "nft",
        &["delete", "table", "inet", &rec.table],
        None,
    ) {
        Ok(_) => {}
        Err(e) if e.stderr().contains("No such file or directory") => {}
        Err(e) => return Err(FaultError::Other(format!("partition revert: {e}"))),
    }
    if table_exists(&rec)? {
        return Err(FaultError::Other(format!(
            "partition revert: table inet {} is still there after `nft delete table`",
            rec.table
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn spec(dest: &[&str], port: &[u16], protocol: Protocol, direction: Way) -> PartitionSpec {
        PartitionSpec {
            netns: None,
            dest: dest.iter().map(|d| d.parse().unwrap()).collect(),
            port: port.to_vec(),
            protocol,
            direction,
            duration: HumanDuration(Duration::from_secs(1)),
        }
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
}
