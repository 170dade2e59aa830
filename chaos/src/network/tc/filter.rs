//! Faults on selected traffic: which of an interface's egress traffic a fault impairs
//! ([`Selection`]), the `u32` filters that send it to our class ([`U32Filter`]: as tc spells
//! them, and as the kernel takes them), and every step of a setup in tc's words, in order
//! (one root qdisc, or an htb root, its class, the leaf and the filters) for plans. Pure.

use netlink_packet_core::Emitable;
use netlink_packet_route::tc::{
    TcFilterU32Option, TcHandle, TcU32Key, TcU32Selector, TcU32SelectorFlags,
};

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

/// One `u32` filter that sends matching traffic to class `HANDLE:1`: IPv4 or IPv6, its
/// priority, and at most one destination network, protocol and destination port.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct U32Filter {
    /// IPv6 (else IPv4).
    pub v6: bool,
    /// Its priority (`prio`), from 1 in order.
    pub prio: u16,
    /// Destination network.
    pub dest: Option<Cidr>,
    /// Transport protocol number (6 TCP, 17 UDP).
    pub proto: Option<u8>,
    /// Destination port.
    pub port: Option<u16>,
}

impl U32Filter {
    /// As tc spells it after `tc filter add dev DEV`. Pure.
    pub(super) fn args(&self, handle: u16) -> Vec<String> {
        let (family, word) = if self.v6 {
            ("ipv6", "ip6")
        } else {
            ("ip", "ip")
        };
        let mut a: Vec<String> = [
            "parent",
            &format!("{handle:x}:"),
            "protocol",
            family,
            "prio",
            &self.prio.to_string(),
            "u32",
        ]
        .map(str::to_owned)
        .to_vec();
        if let Some(d) = self.dest {
            a.extend(["match", word, "dst", &d.to_string()].map(str::to_owned));
        }
        if let Some(p) = self.proto {
            a.extend(["match", word, "protocol", &p.to_string(), "0xff"].map(str::to_owned));
        }
        if let Some(p) = self.port {
            a.extend(["match", word, "dport", &p.to_string(), "0xffff"].map(str::to_owned));
        }
        a.extend(["flowid".to_owned(), format!("{handle:x}:1")]);
        a
    }

    /// The ethertype the filter is attached for (`ETH_P_IP`, `ETH_P_IPV6`).
    pub(super) fn ethertype(&self) -> u16 {
        if self.v6 { 0x86dd } else { 0x0800 }
    }

    /// The 32-bit words `u32` compares, as tc computes them for the matches above (offsets
    /// from the network header; ports at the offset of a header without IP options or IPv6
    /// extension headers). Pure.
    pub(super) fn keys(&self) -> Vec<TcU32Key> {
        let mut keys = Vec::new();
        let key = |off: i32, val: u32, mask: u32| {
            let mut k = TcU32Key::default();
            k.off = off;
            k.val = val & mask;
            k.mask = mask;
            k
        };
        if let Some(d) = self.dest {
            let bytes: Vec<u8> = match d.addr {
                std::net::IpAddr::V4(a) => a.octets().to_vec(),
                std::net::IpAddr::V6(a) => a.octets().to_vec(),
            };
            let base = if self.v6 { 24 } else { 16 };
            let mut left = u32::from(d.prefix);
            for (i, word) in bytes.chunks(4).enumerate() {
                if left == 0 {
                    break;
                }
                let bits = left.min(32);
                left -= bits;
                let mask = if bits == 32 {
                    u32::MAX
                } else {
                    !(u32::MAX >> bits)
                };
                let val = u32::from_be_bytes([word[0], word[1], word[2], word[3]]);
                keys.push(key(base + 4 * i as i32, val, mask));
            }
        }
        if let Some(p) = self.proto {
            keys.push(if self.v6 {
                key(4, u32::from(p) << 8, 0x0000_ff00)
            } else {
                key(8, u32::from(p) << 16, 0x00ff_0000)
            });
        }
        if let Some(p) = self.port {
            keys.push(key(
                if self.v6 { 40 } else { 20 },
                u32::from(p),
                0x0000_ffff,
            ));
        }
        keys
    }

    /// `TCA_OPTIONS` of the filter: class `HANDLE:1` and the selector (terminal, so a match
    /// ends classification). Pure.
    pub(super) fn options(&self, handle: u16) -> Vec<u8> {
        let mut sel = TcU32Selector::default();
        sel.flags = TcU32SelectorFlags::Terminal;
        sel.keys = self.keys();
        sel.nkeys = sel.keys.len() as u8;
        let opts = [
            TcFilterU32Option::ClassId(TcHandle {
                major: handle,
                minor: 1,
            }),
            TcFilterU32Option::Selector(sel),
        ];
        let mut out = vec![0u8; opts.as_slice().buffer_len()];
        opts.as_slice().emit(&mut out);
        out
    }
}

/// The `u32` filters that send the selected traffic to class `HANDLE:1`: one per
/// destination, port and protocol. Pure.
pub(super) fn filters(sel: &Selection<'_>) -> Result<Vec<U32Filter>, String> {
    if sel.is_everything() {
        return Ok(Vec::new());
    }
    // Families: those of the destinations, else both.
    let v4: Vec<Option<Cidr>> = sel
        .dest
        .iter()
        .filter(|c| c.addr.is_ipv4())
        .map(|c| Some(*c))
        .collect();
    let v6: Vec<Option<Cidr>> = sel
        .dest
        .iter()
        .filter(|c| c.addr.is_ipv6())
        .map(|c| Some(*c))
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
    let mut out = Vec::with_capacity(count);
    for (v6, dests) in [(false, &v4), (true, &v6)] {
        for dest in dests {
            for port in &ports {
                for proto in &protocols {
                    out.push(U32Filter {
                        v6,
                        prio: (out.len() + 1) as u16,
                        dest: *dest,
                        proto: *proto,
                        port: *port,
                    });
                }
            }
        }
    }
    Ok(out)
}

/// [`filters`] as tc spells them after `tc filter add dev DEV`. Pure.
pub(super) fn filter_args(handle: u16, sel: &Selection<'_>) -> Result<Vec<Vec<String>>, String> {
    Ok(filters(sel)?.iter().map(|f| f.args(handle)).collect())
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
