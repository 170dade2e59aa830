//! Finding a game's agents through DNS (`agents: {dns: …}`, docs/adr/0017): every A and
//! AAAA record of the name is one agent — in Kubernetes the name of the headless Service in
//! front of the DaemonSet's pods, which has one record per ready pod and needs no API-server
//! access — and each is named by the node its `GET /v1/info` reports, which is what a plan's
//! node names match.
//!
//! The name is resolved by hickory-resolver, from `/etc/resolv.conf` (its name servers,
//! search domains and `ndots`, as a pod's resolver would) or from the one server `resolver:`
//! names. A name with no address, a resolver that does not answer, an agent that does not
//! say its node and two addresses naming the same node are errors: the game does not start
//! on a half-known set of agents.
//!
//! Not here: which agents each step takes ([`super::cast`]).

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use futures::StreamExt as _;
use hickory_resolver::TokioResolver;
use hickory_resolver::config::{
    LookupIpStrategy, NameServerConfig, ResolveHosts, ResolverConfig, ResolverOpts,
};
use hickory_resolver::net::runtime::TokioRuntimeProvider;

use super::client::{CallError, NodeClient};
use super::plan::{Agent, DnsSource};
use super::report::{DiscoveredAgent, Discovery};

/// Agents asked for their node at once.
const INFO_AT_ONCE: usize = 32;

/// Why the agents could not be found.
#[derive(Debug, thiserror::Error)]
pub enum DiscoverError {
    /// The system's resolver configuration could not be read.
    #[error(
        "cannot read the system's DNS configuration to resolve {name}: {reason} (or set agents.resolver)"
    )]
    SystemConfig {
        /// The name.
        name: String,
        /// Why.
        reason: String,
    },
    /// The name has no address.
    #[error("{name} has no A or AAAA record (asked {resolver}): {reason}")]
    NoAddresses {
        /// The name.
        name: String,
        /// The server(s) asked.
        resolver: String,
        /// What the resolver said.
        reason: String,
    },
    /// The resolver gave no usable answer (it did not answer, or failed).
    #[error("the DNS resolver {resolver} gave no answer for {name}: {reason}")]
    Resolver {
        /// The name.
        name: String,
        /// The server(s) asked.
        resolver: String,
        /// Why.
        reason: String,
    },
    /// An agent did not say which node it is on.
    #[error("the agent at {address} ({name}) did not say which node it is on: {source}")]
    Info {
        /// Its address.
        address: IpAddr,
        /// The DNS name it came from.
        name: String,
        /// The failed `GET /v1/info`.
        source: CallError,
    },
    /// An agent reported a node name no plan could use.
    #[error(
        "the agent at {address} reports the node name {node:?}: use 1-253 of [A-Za-z0-9._-] (NODE_NAME)"
    )]
    BadNode {
        /// Its address.
        address: IpAddr,
        /// What it reported.
        node: String,
    },
    /// Two addresses said the same node.
    #[error("the agents at {first} and {second} both report node {node}: one agent per node")]
    SameNode {
        /// The node.
        node: String,
        /// One address.
        first: IpAddr,
        /// The other.
        second: IpAddr,
    },
    /// The CA file could not be used.
    #[error("agents.ca_file: {0}")]
    Tls(String),
}

/// Resolves `src.name` and asks every address which node it is on. Returns the agents named
/// by node, sorted by name, and the record of it for the report. `timeout` bounds each DNS
/// query and each call.
pub async fn discover(
    src: &DnsSource,
    timeout: Duration,
) -> Result<(Vec<Agent>, Discovery), DiscoverError> {
    let (resolver, asked) = resolver(src, timeout).await?;
    let addresses = resolve(&resolver, &src.name, &asked).await?;
    let answers: Vec<Result<(IpAddr, String, String), DiscoverError>> =
        futures::stream::iter(addresses)
            .map(|ip| async move {
                let client = NodeClient::new(agent(src, ip, ip.to_string()), timeout)
                    .map_err(DiscoverError::Tls)?;
                let info = client.info().await.map_err(|source| DiscoverError::Info {
                    address: ip,
                    name: src.name.clone(),
                    source,
                })?;
                Ok((ip, info.node, info.version))
            })
            .buffer_unordered(INFO_AT_ONCE)
            .collect()
            .await;
    let mut by_node: BTreeMap<String, (IpAddr, String)> = BTreeMap::new();
    for answer in answers {
        let (ip, node, version) = answer?;
        if !valid_node(&node) {
            return Err(DiscoverError::BadNode { address: ip, node });
        }
        if let Some((first, _)) = by_node.get(&node) {
            let (first, second) = (*first.min(&ip), *first.max(&ip));
            return Err(DiscoverError::SameNode {
                node,
                first,
                second,
            });
        }
        by_node.insert(node, (ip, version));
    }
    let agents = by_node
        .iter()
        .map(|(node, (ip, _))| agent(src, *ip, node.clone()))
        .collect();
    let record = Discovery {
        dns: src.name.clone(),
        resolver: asked,
        agents: by_node
            .into_iter()
            .map(|(node, (ip, version))| DiscoveredAgent {
                address: ip.to_string(),
                node,
                version,
            })
            .collect(),
    };
    Ok((agents, record))
}

/// The agent at `ip`, called `name`.
fn agent(src: &DnsSource, ip: IpAddr, name: String) -> Agent {
    Agent {
        name,
        url: format!(
            "{}://{}",
            src.scheme.as_str(),
            SocketAddr::new(ip, src.port)
        ),
        token: src.token.clone(),
        ca_file: src.ca_file.clone(),
    }
}

/// A node name a plan can name: what Kubernetes allows (a DNS subdomain) and host names.
fn valid_node(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 253
        && n.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// The resolver and how to name it in messages: the one server of `src.resolver`, or the
/// system's configuration.
async fn resolver(
    src: &DnsSource,
    timeout: Duration,
) -> Result<(TokioResolver, String), DiscoverError> {
    let (config, mut opts, asked) = match src.resolver {
        Some(addr) => {
            let mut ns = NameServerConfig::udp_and_tcp(addr.ip());
            for c in &mut ns.connections {
                c.port = addr.port();
            }
            let mut opts = ResolverOpts::default();
            // The server named is the only source of answers: not /etc/hosts.
            opts.use_hosts_file = ResolveHosts::Never;
            (
                ResolverConfig::from_name_servers(vec![ns]),
                opts,
                addr.to_string(),
            )
        }
        None => {
            // A small file, read once; off the async workers all the same.
            let read = tokio::task::spawn_blocking(hickory_resolver::system_conf::read_system_conf)
                .await
                .map_err(|e| e.to_string())
                .and_then(|r| r.map_err(|e| e.to_string()));
            let (config, opts) = read.map_err(|reason| DiscoverError::SystemConfig {
                name: src.name.clone(),
                reason,
            })?;
            let servers: Vec<String> = config
                .name_servers()
                .iter()
                .map(|n| n.ip.to_string())
                .collect();
            let asked = format!("the system resolver ({})", servers.join(", "));
            (config, opts, asked)
        }
    };
    opts.ip_strategy = LookupIpStrategy::Ipv4AndIpv6;
    opts.timeout = timeout;
    // Every game looks the name up once: nothing to cache, nothing stale to serve.
    opts.cache_size = 0;
    let resolver = TokioResolver::builder_with_config(config, TokioRuntimeProvider::default())
        .with_options(opts)
        .build()
        .map_err(|e| DiscoverError::Resolver {
            name: src.name.clone(),
            resolver: asked.clone(),
            reason: e.to_string(),
        })?;
    Ok((resolver, asked))
}

/// Every A and AAAA address of `name`, sorted, each once.
async fn resolve(
    resolver: &TokioResolver,
    name: &str,
    asked: &str,
) -> Result<Vec<IpAddr>, DiscoverError> {
    let found = resolver.lookup_ip(name).await.map_err(|e| {
        if e.is_no_records_found() {
            DiscoverError::NoAddresses {
                name: name.to_owned(),
                resolver: asked.to_owned(),
                reason: e.to_string(),
            }
        } else {
            DiscoverError::Resolver {
                name: name.to_owned(),
                resolver: asked.to_owned(),
                reason: e.to_string(),
            }
        }
    })?;
    let mut ips: Vec<IpAddr> = found.iter().collect();
    ips.sort_unstable();
    ips.dedup();
    if ips.is_empty() {
        return Err(DiscoverError::NoAddresses {
            name: name.to_owned(),
            resolver: asked.to_owned(),
            reason: "the answer holds no address".into(),
        });
    }
    Ok(ips)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_names_are_dns_like() {
        assert!(valid_node("ip-10-0-0-11.eu-west-1.compute.internal"));
        assert!(valid_node("node_a"));
        assert!(!valid_node(""));
        assert!(!valid_node("node a"));
        assert!(!valid_node(&"n".repeat(254)));
    }

    #[test]
    fn an_agent_url_brackets_ipv6() {
        let src = DnsSource {
            name: "agents".into(),
            port: 9465,
            scheme: super::super::plan::Scheme::Https,
            token: "t".into(),
            ca_file: None,
            resolver: None,
        };
        assert_eq!(
            agent(&src, "fd00::7".parse().unwrap(), "n".into()).url,
            "https://[fd00::7]:9465"
        );
        assert_eq!(
            agent(&src, "10.0.0.7".parse().unwrap(), "n".into()).url,
            "https://10.0.0.7:9465"
        );
    }
}
