//! Faults on selected traffic: which of an interface's egress traffic a fault impairs
//! ([`Selection`]), the `u32` filters that send it to our class, and every `tc` command of a
//! setup in order (one root qdisc, or an htb root, its class, the leaf and the filters).
//! Pure: the commands are built here and run by the fault ([`super`]) and the probe.

use super::super::nft::{Cidr, Protocol};

/// The most filters one fault may install (destinations × ports × protocols).
pub(super) const MAX_FILTERS: usize = 256;

/// Which of an interface's egress traffic a qdisc fault impairs: everything when empty.
#[derive(Clone, Copy, Debug)]
pub(super) struct Selection<'a> {
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
    pub(super) fn describe(&self) -> String {
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
pub(super) fn filter_args(handle: u16, sel: &Selection<'_>) -> Result<Vec<Vec<String>>, String> {
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
pub(super) fn setup_commands(
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
