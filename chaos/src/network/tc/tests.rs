use super::filter::filter_args;
use super::probe::unsupported;
use super::qdisc::parse_rate;
use std::time::Duration;

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
