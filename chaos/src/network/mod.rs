//! Network faults, two ways.
//!
//! - **The built-in TCP proxy** ([`proxy`], [`toxic`], kinds in [`proxy_fault`]): `latency`,
//!   `bandwidth` and `proxy` (any Toxiproxy-style toxic: latency with jitter, bandwidth,
//!   timeout, reset_peer, slicer, slow_close, limit_data). Needs no kernel feature; runs
//!   inside the agent's process, so it dies with it.
//! - **Kernel faults** on an interface or towards addresses, in the agent's network namespace
//!   or in one named by what users know — `--netns NAME`, `--pid PID`, `--container ID|NAME`
//!   ([`netns`]): `netem` and `rate-limit` as root qdiscs ([`tc`]; towards given addresses,
//!   ports and protocols through an htb root and u32 filters; someone else's root qdisc tree
//!   recorded and written back), `partition` as an nftables table of faultline's own
//!   ([`nft`]). All of it over netlink from the agent itself ([`netlink`]; ADR 0018): no
//!   `tc`, `nft` or `ip` binary, so it works from the `FROM scratch` image. Kernel support
//!   and the agent's capabilities are checked before anything is applied; a missing module is
//!   a clear [`FaultError::Unsupported`] naming the module and the proxy alternative. Their
//!   revert records (namespace by inode, dev, handle, snapshot, table) let the journal undo
//!   them after a SIGKILL of the agent.

/// Adds to a kernel network fault's spec the fields that name the network namespace it acts
/// in — `--netns NAME`, `--pid PID` or `--container ID|NAME` (with `--docker-socket`) — so
/// that every kernel kind takes the same flags and JSON fields ([`netns::Selector`]).
macro_rules! with_net_target {
    ($(#[$meta:meta])* pub struct $name:ident { $($body:tt)* }) => {
        $(#[$meta])*
        pub struct $name {
            $($body)*
            /// The network namespace to act in, by name (as `ip netns` lists it).
            #[arg(long, conflicts_with_all = ["pid", "container"], help_heading = "Where")]
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub netns: Option<String>,
            /// The process (host pid) whose network namespace to act in.
            #[arg(long, conflicts_with = "container", help_heading = "Where")]
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub pid: Option<i32>,
            /// The container (id or name) whose network namespace to act in, found through
            /// the Docker Engine API (Docker, or podman's compatible socket with
            /// --docker-socket).
            #[arg(long, help_heading = "Where")]
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub container: Option<String>,
            /// The Docker Engine socket (with --container).
            #[arg(long, default_value = crate::docker::DEFAULT_SOCKET, help_heading = "Where")]
            #[serde(
                default = "crate::container::default_socket",
                skip_serializing_if = "crate::container::is_default_socket"
            )]
            pub docker_socket: std::path::PathBuf,
        }
    };
}

mod netlink;
mod netns;
mod nft;
mod proxy;
mod proxy_fault;
mod tc;
pub mod toxic;

pub use netns::NsRecord;
pub use nft::PartitionSpec;
pub use proxy::{Proxy, ProxyError, ProxySpec};
pub use proxy_fault::{BandwidthSpec, LatencySpec, ProxyFaultSpec};
pub use tc::{NetemSpec, RateLimitSpec, Snapshot};
pub use toxic::{Stream, Toxic};

use serde::Serialize;

use crate::error::FaultError;
use crate::fault::{Context, Plan, RevertRecord, Target};
use crate::units::HumanDuration;

/// A network target as shown in plans and audit events.
#[derive(Debug)]
pub(crate) struct NetTarget<'a> {
    /// The namespace as [`NsRecord`] shows it (`netns t1`, `the netns of container web (…)`).
    pub(crate) netns: Option<String>,
    pub(crate) dev: Option<&'a str>,
    pub(crate) detail: String,
}

impl NetTarget<'_> {
    pub(crate) fn into_target(self) -> Target {
        let mut d = String::new();
        if let Some(dev) = self.dev {
            d.push_str(&format!("dev {dev} "));
        }
        if let Some(ns) = self.netns {
            d.push_str(&format!("in {ns} "));
        }
        d.push_str(&self.detail);
        Target::Network { description: d }
    }
}

/// A plan for a network fault whose provisional revert record is `record`.
pub(crate) fn plan_with<T: Serialize>(
    ctx: &Context,
    kind: &str,
    duration: HumanDuration,
    targets: Vec<Target>,
    actions: Vec<String>,
    reverts: Vec<String>,
    record: &T,
) -> Result<Plan, FaultError> {
    Ok(Plan {
        id: ctx.id.clone(),
        kind: kind.to_owned(),
        duration,
        targets,
        actions,
        reverts,
        instant: false,
        record: RevertRecord::with_state(record)?,
        selection: None,
    })
}

/// What to use instead when the kernel cannot do `fault`.
pub(crate) fn unsupported_hint(fault: &str) -> String {
    match fault {
        "rate-limit" => "limit a TCP service's throughput with the built-in proxy, which needs no kernel support: \
                         `faultline fault inject bandwidth --listen ADDR --upstream ADDR --rate KBPS`"
            .to_owned(),
        _ => "add latency to a TCP service with the built-in proxy, which needs no kernel support: \
              `faultline fault inject latency --listen ADDR --upstream ADDR --latency 50ms`"
            .to_owned(),
    }
}
