//! Tests of the game-day file format.

use super::*;

const GOOD: &str = "\
name: gd
agents:
  - name: node1
    url: http://127.0.0.1:9465
    token_env: GD_TOKEN
  - name: node2
    url: https://10.0.0.2:9465/
    token_file: token
plan:
  - scenario: web-restart
    agents: [node1]
  - name: together
    parallel:
      - scenario_file: s.yaml
        agents: [node2]
      - scenario: other
        agents: [node1]
objectives: { rto: 30s }
abort_when:
  verdicts: [aborted]
";

fn invalid_at(text: &str) -> (usize, String, String) {
    match parse(text, "g.yaml") {
        Err(ConfigError::Invalid {
            line,
            field,
            message,
            ..
        }) => (line, field, message),
        other => panic!("expected invalid, got {other:?}"),
    }
}

#[test]
fn a_good_file_parses_with_defaults_and_resolves() {
    let g = parse(GOOD, "g.yaml").unwrap();
    assert_eq!(g.poll_interval.0, Duration::from_secs(1));
    assert_eq!(g.unreachable_after.0, Duration::from_secs(15));
    assert_eq!(g.plan[1].parallel.len(), 2);
    assert_eq!(g.abort_when.verdicts, vec![Verdict::Aborted]);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("token"), "secret-token-0123456789\n").unwrap();
    std::fs::write(
            dir.path().join("s.yaml"),
            "name: lat\nsteady_state:\n  - name: up\n    tcp: { address: \"127.0.0.1:1\" }\nfaults:\n  - fault: { kind: process-kill, pid: 42, duration: 1s }\n",
        )
        .unwrap();
    let env = |k: &str| (k == "GD_TOKEN").then(|| "env-token-0123456789".to_owned());
    let r = resolve(g, GOOD, "g.yaml", dir.path(), &env).unwrap();
    let AgentSource::Inventory(agents) = &r.agents else {
        panic!("{:?}", r.agents)
    };
    assert_eq!(agents[0].token, "env-token-0123456789");
    assert_eq!(agents[1].token, "secret-token-0123456789");
    assert_eq!(agents[1].url, "https://10.0.0.2:9465");
    assert!(!format!("{:?}", agents[1]).contains("secret"));
    assert_eq!(r.stages[0].name, "stage-1");
    assert_eq!(r.stages[1].name, "together");
    assert_eq!(r.stages[1].steps[0].0.name(), "lat");
    assert_eq!(
        r.stages[1].steps[1].1,
        Targets::Named(vec!["node1".to_owned()])
    );
}

#[test]
fn unknown_fields_and_bad_values_are_located() {
    let (line, field, msg) = invalid_at(&GOOD.replace("    token_env:", "    token_envv:"));
    assert_eq!(line, 5, "{field} {msg}");
    assert!(field.contains("token_envv"), "{field}");
    let (line, field, _) = invalid_at(&GOOD.replace("agents: [node2]", "agents: [node9]"));
    assert_eq!((line, field.as_str()), (15, "plan[1].parallel[0].agents"));
    let (line, field, _) = invalid_at(&GOOD.replace("http://127.0.0.1:9465", "ftp://x"));
    assert_eq!((line, field.as_str()), (4, "agents[0].url"));
    let (line, field, msg) =
        invalid_at(&GOOD.replace("objectives: { rto: 30s }", "objectives: { rto: soon }"));
    assert_eq!(line, 18, "{field}: {msg}");
    let (_, field, _) = invalid_at(&GOOD.replace("    token_file: token\n", ""));
    assert_eq!(field, "agents[1].token_file");
    let (line, field, _) = invalid_at(&GOOD.replace(
        "agents: [node1]\n  - name",
        "agents: [node1, node1]\n  - name",
    ));
    assert_eq!((line, field.as_str()), (11, "plan[0].agents"));
    let text = GOOD.replace(
        "      - scenario: other\n        agents: [node1]\n",
        "      - scenario: other\n        agents: [node2]\n",
    );
    let (_, field, msg) = invalid_at(&text);
    assert_eq!(field, "plan[1].parallel[1].agents", "{msg}");
    let (_, field, _) = invalid_at(&GOOD.replace("verdicts: [aborted]", "verdicts: [running]"));
    assert_eq!(field, "abort_when.verdicts");
    let (_, field, _) = invalid_at(&GOOD.replace("name: gd", "name: g d"));
    assert_eq!(field, "name");
}

#[test]
fn resolve_names_missing_tokens_and_scenario_errors() {
    let g = parse(GOOD, "g.yaml").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let none = |_: &str| None;
    let e = resolve(g.clone(), GOOD, "g.yaml", dir.path(), &none).unwrap_err();
    assert!(e.to_string().contains("GD_TOKEN"), "{e}");
    let env = |_: &str| Some("t0123456789abcdef".to_owned());
    let e = resolve(g.clone(), GOOD, "g.yaml", dir.path(), &env).unwrap_err();
    assert!(e.to_string().contains("agents[1].token_file"), "{e}");
    std::fs::write(dir.path().join("token"), "x\n").unwrap();
    std::fs::write(
        dir.path().join("s.yaml"),
        "name: lat\nsteady_state: []\nfaults: []\n",
    )
    .unwrap();
    let e = resolve(g, GOOD, "g.yaml", dir.path(), &env).unwrap_err();
    let s = e.to_string();
    assert!(
        s.starts_with("g.yaml:14: plan[1].parallel[0].scenario_file:"),
        "{s}"
    );
    assert!(s.contains("steady_state"), "{s}");
}

#[test]
fn the_documented_example_parses_and_reads_back_from_json() {
    let text = include_str!("../../../../tests/fuzz/seeds/gameday/full.yaml");
    let g = parse(text, "full.yaml").unwrap();
    assert_eq!(g.abort_when.probes.len(), 2);
    let json = serde_json::to_string(&g).unwrap();
    assert_eq!(parse(&json, "full.json").unwrap(), g);
    let text = include_str!("../../../../tests/fuzz/seeds/gameday/dns.yaml");
    let g = parse(text, "dns.yaml").unwrap();
    assert!(matches!(g.agents, Agents::Dns(_)), "{:?}", g.agents);
    let json = serde_json::to_string(&g).unwrap();
    assert_eq!(parse(&json, "dns.json").unwrap(), g);
}

#[test]
fn garbage_is_rejected_naming_file_and_line() {
    for t in [
        "",
        "{",
        "name: [",
        "- a",
        "agents: 3",
        ":",
        "\t",
        "plan:\n  - parallel: []\n",
    ] {
        crate::test_support::assert_rejected_at_a_line(parse(t, "g.yaml"), "g.yaml", t);
    }
    if let Err(e) = parse(GOOD, "g.yaml") {
        panic!("the valid game day was rejected: {e}");
    }
}

const DNS: &str = "\
name: gd
agents:
  dns: faultline-api.faultline.svc.cluster.local
  port: 9465
  scheme: http
  token_file: token
  resolver: 127.0.0.1:5353
seed: 7
plan:
  - scenario: kill
    agents: {count: 2}
  - scenario: pause
    agents: all
  - parallel:
      - scenario: a
        agents: [node-a]
      - scenario: b
        agents: { count: 1 }
";

#[test]
fn the_dns_form_parses_resolves_and_keeps_node_names_for_run_time() {
    let g = parse(DNS, "g.yaml").unwrap();
    let Agents::Dns(d) = &g.agents else {
        panic!("{:?}", g.agents)
    };
    assert_eq!((d.port, d.scheme), (9465, Scheme::Http));
    assert_eq!(g.seed, Some(7));
    assert_eq!(g.plan[0].agents, Some(Targets::Count(2)));
    assert_eq!(g.plan[1].agents, Some(Targets::All));
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("token"), "dns-token-0123456789\n").unwrap();
    let r = resolve(g.clone(), DNS, "g.yaml", dir.path(), &|_| None).unwrap();
    let AgentSource::Dns(src) = &r.agents else {
        panic!("{:?}", r.agents)
    };
    assert_eq!(src.token, "dns-token-0123456789");
    assert_eq!(src.resolver, Some("127.0.0.1:5353".parse().unwrap()));
    assert!(!format!("{src:?}").contains("dns-token"));
    assert_eq!(r.stages[2].steps[1].1, Targets::Count(1));
    // JSON and back.
    let json = serde_json::to_string(&g).unwrap();
    assert_eq!(parse(&json, "g.json").unwrap(), g);
    // Without resolver and scheme: the system's resolver, https.
    let plain = DNS
        .replace("  resolver: 127.0.0.1:5353\n", "")
        .replace("  scheme: http\n", "");
    let g = parse(&plain, "g.yaml").unwrap();
    let Agents::Dns(d) = &g.agents else {
        panic!("{:?}", g.agents)
    };
    assert_eq!((d.scheme, d.resolver.as_deref()), (Scheme::Https, None));
}

#[test]
fn dns_form_and_target_mistakes_are_located() {
    let cases: [(String, usize, &str, &str); 9] = [
        (
            DNS.replace("  port: 9465", "  prot: 9465"),
            4,
            "agents.prot",
            "unknown field",
        ),
        (
            DNS.replace("svc.cluster.local", "svc cluster"),
            3,
            "agents.dns",
            "not a DNS name",
        ),
        (
            DNS.replace("port: 9465", "port: 0"),
            4,
            "agents.port",
            "1-65535",
        ),
        (
            DNS.replace("127.0.0.1:5353", "dns.local:53"),
            7,
            "agents.resolver",
            "IP:port",
        ),
        (
            DNS.replace(
                "  token_file: token\n",
                "  token_file: token\n  ca_file: ca.pem\n",
            ),
            7,
            "agents.ca_file",
            "scheme: https",
        ),
        (
            DNS.replace("{count: 2}", "{count: 0}"),
            11,
            "plan[0].agents",
            "at least 1",
        ),
        (
            DNS.replace("agents: all", "agents: every"),
            13,
            "plan[1].agents",
            "`all`",
        ),
        (
            DNS.replace("agents: [node-a]", "agents: all"),
            16,
            "plan[2].parallel[0].agents",
            "`all` takes every agent",
        ),
        (
            GOOD.replace("agents: [node1]\n  - name", "agents: {count: 3}\n  - name"),
            11,
            "plan[0].agents",
            "count 3 but agents: lists 2",
        ),
    ];
    for (text, line, field, message) in cases {
        let (l, f, m) = invalid_at(&text);
        assert_eq!((l, f.as_str()), (line, field), "{m}\n{text}");
        assert!(m.contains(message), "{f}: {m}");
    }
    // The DNS form's token is read like an inventory entry's.
    let g = parse(DNS, "g.yaml").unwrap();
    let e = resolve(g, DNS, "g.yaml", Path::new("/nonexistent"), &|_| None).unwrap_err();
    assert!(
        e.to_string()
            .starts_with("g.yaml:6: agents.token_file: cannot read /nonexistent/token"),
        "{e}"
    );
}
