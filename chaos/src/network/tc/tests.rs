use super::filter::filter_args;
use super::qdisc::{htb_class_options, nla, parse_rate, tbf_options};

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
    let ms = |v: Option<u64>| v.map(|ms| format!("{ms}ms"));
    serde_json::from_value(serde_json::json!({
        "dev": "veth0",
        "delay": ms(delay),
        "jitter": ms(jitter),
        "loss": loss.map(|l| format!("{l}%")),
        "duration": "1s",
    }))
    .unwrap()
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
    let e = unsupported_for("netem", "netem", "Specified qdisc kind is unknown", "").to_string();
    assert!(e.contains("sch_netem"), "{e}");
    assert!(e.contains("fault inject latency"), "{e}");
    let e = unsupported_for("rate-limit", "tbf", "x", "").to_string();
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
        "dev": "veth0", "netns": "t1", "qdisc": "tbf", "handle": 300
    }))
    .unwrap();
    assert_eq!(
        (rec.leaf, rec.ns, rec.snapshot, rec.netns.as_deref()),
        (None, None, None, Some("t1")),
        "records written before selections, inodes and snapshots existed still load"
    );
}

#[test]
fn tbf_options_are_what_tc_sends() {
    // tc qdisc add … tbf rate 8mbit burst 16384b latency 200ms: rate 1e6 B/s, buffer
    // 16384 B / 1e6 B/s = 16.384 ms = 256000 ticks of 64 ns, limit 1e6 × 0.2 + 16384.
    let o = tbf_options(8_000_000, 16384);
    let parms = &o[4..40];
    assert_eq!(&o[..4], &[40, 0, 1, 0], "TCA_TBF_PARMS, 36 bytes");
    assert_eq!(parms[1], 1, "ethernet link layer");
    assert_eq!(
        u32::from_ne_bytes(parms[8..12].try_into().unwrap()),
        1_000_000
    );
    assert_eq!(
        u32::from_ne_bytes(parms[24..28].try_into().unwrap()),
        216_384
    );
    assert_eq!(
        u32::from_ne_bytes(parms[28..32].try_into().unwrap()),
        256_000
    );
    assert_eq!(&o[40..], nla(6, &16384u32.to_ne_bytes()).as_slice());
    // Above 32 bits of bytes per second the 64-bit rate follows.
    assert_eq!(tbf_options(40_000_000_000, 1 << 20).len(), 40 + 8 + 12);
}

#[test]
fn netem_options_carry_the_delay_in_ticks_and_nanoseconds() {
    let leaf = Leaf::netem(&netem(Some(100), Some(10), Some(50.0))).unwrap();
    let o = leaf.options();
    let word = |i: usize| u32::from_ne_bytes(o[i * 4..i * 4 + 4].try_into().unwrap());
    assert_eq!(word(0), 100_000_000 / 64, "latency in ticks");
    assert_eq!(word(1), 1000, "limit");
    assert_eq!(word(2), u32::MAX / 2 + 1, "50 % loss");
    assert_eq!(word(5), 10_000_000 / 64, "jitter in ticks");
    assert_eq!(
        &o[24..36],
        nla(10, &100_000_000i64.to_ne_bytes()).as_slice()
    );
    assert_eq!(leaf.kind(), "netem");
}

#[test]
fn the_class_never_shapes_by_itself() {
    let o = htb_class_options();
    assert_eq!(&o[..4], &[48, 0, 1, 0], "TCA_HTB_PARMS, 44 bytes");
    assert_eq!(
        &o[4 + 8..4 + 12],
        &u32::MAX.to_ne_bytes(),
        "rate beyond 32 bits"
    );
    assert_eq!(
        &o[48..],
        [
            nla(6, &12_500_000_000u64.to_ne_bytes()),
            nla(7, &12_500_000_000u64.to_ne_bytes())
        ]
        .concat()
        .as_slice()
    );
}

#[test]
fn selected_traffic_is_one_htb_root_class_leaf_and_filter_per_match() {
    let dest = cidrs(&["10.0.0.0/23"]);
    let sel = Selection {
        dest: &dest,
        port: &[80],
        protocol: Protocol::Tcp,
    };
    let steps = setup_objects(0x1ab, &Leaf::tbf(Rate(8_000_000), None), &sel).unwrap();
    let shape: Vec<(&str, &str, u32, u32)> = steps
        .iter()
        .map(|s| {
            (
                s.what.name(),
                s.obj.kind.as_str(),
                s.obj.handle,
                s.obj.parent,
            )
        })
        .collect();
    assert_eq!(
        shape,
        [
            ("qdisc", "htb", 0x01ab_0000, 0xffff_ffff),
            ("class", "htb", 0x01ab_0001, 0x01ab_0000),
            ("qdisc", "tbf", 0, 0x01ab_0001),
            ("filter", "u32", 0, 0x01ab_0000),
        ]
    );
    assert_eq!(steps[3].obj.info, (1 << 16) | u32::from(0x0800u16.to_be()));
    let f = filters(&sel).unwrap()[0];
    let keys: Vec<(i32, u32, u32)> = f.keys().iter().map(|k| (k.off, k.val, k.mask)).collect();
    // As tc: dst 10.0.0.0/23 at 16, protocol 6 at 8, dport 80 at 20.
    assert_eq!(
        keys,
        [
            (16, 0x0a00_0000, 0xffff_fe00),
            (8, 0x0006_0000, 0x00ff_0000),
            (20, 80, 0xffff)
        ]
    );
    let v6 = super::filter::U32Filter {
        v6: true,
        prio: 1,
        dest: Some("fd00::/64".parse().unwrap()),
        proto: Some(17),
        port: Some(53),
    };
    let keys: Vec<(i32, u32, u32)> = v6.keys().iter().map(|k| (k.off, k.val, k.mask)).collect();
    assert_eq!(
        keys,
        [
            (24, 0xfd00_0000, u32::MAX),
            (28, 0, u32::MAX),
            (4, 17 << 8, 0xff00),
            (40, 53, 0xffff)
        ]
    );
}
