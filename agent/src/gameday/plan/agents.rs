//! The two forms `agents:` takes — an inventory list, or the DNS name of the agents'
//! headless Service — and the three forms a step's `agents:` takes: node names, `{count: N}`
//! or `all`. Each form is told apart by its YAML shape (a list, a map, a string), so a typo
//! inside one still gets that form's own strict error (`unknown field`), which an untagged
//! enum would swallow.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use serde::de::value::{MapAccessDeserializer, SeqAccessDeserializer};
use serde::de::{self, MapAccess, SeqAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::AgentEntry;

/// The DNS server port when `resolver:` gives an address only.
const DNS_PORT: u16 = 53;

/// `agents:`.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Agents {
    /// A list of API endpoints, each with its name.
    Inventory(Vec<AgentEntry>),
    /// Every A/AAAA record of a DNS name, each agent named by the node it reports.
    Dns(DnsAgents),
}

impl<'de> Deserialize<'de> for Agents {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Forms;
        impl<'de> Visitor<'de> for Forms {
            type Value = Agents;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(
                    "a list of agents ({name, url, token_file}) or {dns: NAME, port: PORT, token_file: FILE}",
                )
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Agents, A::Error> {
                Vec::deserialize(SeqAccessDeserializer::new(seq)).map(Agents::Inventory)
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Agents, A::Error> {
                DnsAgents::deserialize(MapAccessDeserializer::new(map)).map(Agents::Dns)
            }
        }
        d.deserialize_any(Forms)
    }
}

/// `agents: {dns: …}`: the agents are the addresses of a DNS name — in Kubernetes, the
/// headless Service in front of the DaemonSet's pods (`clusterIP: None`: one A/AAAA record
/// per ready pod, and no API-server access needed).
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DnsAgents {
    /// The name, e.g. `faultline-api.faultline.svc.cluster.local`.
    pub dns: String,
    /// The agents' API port.
    pub port: u16,
    /// `https` (the default) or `http`.
    #[serde(default)]
    pub scheme: Scheme,
    /// A file holding the bearer token every agent accepts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_file: Option<PathBuf>,
    /// An environment variable holding the token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_env: Option<String>,
    /// PEM CA certificates to trust (the system roots otherwise).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// The DNS server to ask (`IP:port`, or `IP` for port 53); the system's resolver
    /// (`/etc/resolv.conf`) when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolver: Option<String>,
}

/// How the agents' API is spoken.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Scheme {
    /// TLS (the agents' certificates must be valid for their IP addresses).
    #[default]
    Https,
    /// Plain HTTP.
    Http,
}

impl Scheme {
    /// `https` or `http`.
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Https => "https",
            Scheme::Http => "http",
        }
    }
}

/// A step's `agents:`: which agents run its scenario (one drill each, together).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Targets {
    /// `[node1, node2]`: these agents, by name.
    Named(Vec<String>),
    /// `{count: N}`: N agents drawn at random (seeded; the seed is in the report).
    Count(usize),
    /// `all`: every agent.
    All,
}

impl fmt::Display for Targets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Targets::Named(n) => write!(f, "[{}]", n.join(", ")),
            Targets::Count(n) => write!(f, "count {n}"),
            Targets::All => f.write_str("all"),
        }
    }
}

impl Serialize for Targets {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Targets::Named(n) => n.serialize(s),
            Targets::Count(n) => {
                let mut m = s.serialize_map(Some(1))?;
                m.serialize_entry("count", n)?;
                m.end()
            }
            Targets::All => s.serialize_str("all"),
        }
    }
}

/// `{count: N}`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CountForm {
    count: usize,
}

impl<'de> Deserialize<'de> for Targets {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Forms;
        impl<'de> Visitor<'de> for Forms {
            type Value = Targets;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a list of agent names, {count: N} or `all`")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Targets, A::Error> {
                Vec::deserialize(SeqAccessDeserializer::new(seq)).map(Targets::Named)
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Targets, A::Error> {
                CountForm::deserialize(MapAccessDeserializer::new(map))
                    .map(|c| Targets::Count(c.count))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Targets, E> {
                if v == "all" {
                    Ok(Targets::All)
                } else {
                    Err(E::invalid_value(de::Unexpected::Str(v), &self))
                }
            }
        }
        d.deserialize_any(Forms)
    }
}

/// `resolver:`: `IP:port`, `[IPv6]:port`, or an address alone (port 53).
pub fn parse_resolver(text: &str) -> Result<SocketAddr, String> {
    let t = text.trim();
    t.parse::<SocketAddr>()
        .or_else(|_| t.parse::<IpAddr>().map(|ip| SocketAddr::new(ip, DNS_PORT)))
        .map_err(|_| {
            format!("{text:?} is not a DNS server address: use IP:port (127.0.0.1:5353) or an IP (port 53)")
        })
}

/// A DNS name as `agents.dns` takes it: dot-separated labels of letters, digits, `-` and
/// `_`, each 1-63 long, at most 253 in all; a final dot (fully qualified) is allowed.
pub fn valid_dns_name(name: &str) -> bool {
    let n = name.strip_suffix('.').unwrap_or(name);
    !n.is_empty()
        && n.len() <= 253
        && n.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_take_three_shapes_and_read_back() {
        let t: Vec<Targets> =
            serde_yaml_ng::from_str("- [node1, node2]\n- {count: 2}\n- all\n").unwrap();
        assert_eq!(
            t,
            vec![
                Targets::Named(vec!["node1".into(), "node2".into()]),
                Targets::Count(2),
                Targets::All
            ]
        );
        let json = serde_json::to_string(&t).unwrap();
        assert_eq!(json, r#"[["node1","node2"],{"count":2},"all"]"#);
        assert_eq!(serde_json::from_str::<Vec<Targets>>(&json).unwrap(), t);
        let e = serde_yaml_ng::from_str::<Targets>("some").unwrap_err();
        assert!(e.to_string().contains("{count: N} or `all`"), "{e}");
        let e = serde_yaml_ng::from_str::<Targets>("{cuont: 2}").unwrap_err();
        assert!(e.to_string().contains("unknown field `cuont`"), "{e}");
    }

    #[test]
    fn resolver_addresses_default_to_port_53() {
        assert_eq!(
            parse_resolver("127.0.0.1:5353"),
            Ok("127.0.0.1:5353".parse().unwrap())
        );
        assert_eq!(
            parse_resolver("10.96.0.10"),
            Ok("10.96.0.10:53".parse().unwrap())
        );
        assert_eq!(parse_resolver("[::1]:53"), Ok("[::1]:53".parse().unwrap()));
        assert!(
            parse_resolver("dns.example:53")
                .unwrap_err()
                .contains("IP:port")
        );
    }

    #[test]
    fn dns_names_are_labels() {
        for good in [
            "faultline-api.faultline.svc.cluster.local",
            "faultline-api.faultline.svc.cluster.local.",
            "agents",
            "_api._tcp.example",
        ] {
            assert!(valid_dns_name(good), "{good}");
        }
        for bad in ["", ".", "a..b", "-a.b", "a b", "a/b", &"x".repeat(64)] {
            assert!(!valid_dns_name(bad), "{bad}");
        }
    }
}
