//! Network faults, two ways.
//!
//! - **The built-in TCP proxy** ([`proxy`], [`toxic`], kinds in [`proxy_fault`]): `latency`,
//!   `bandwidth` and `proxy` (any Toxiproxy-style toxic: latency with jitter, bandwidth,
//!   timeout, reset_peer, slicer, slow_close, limit_data). Needs no kernel feature; runs
//!   inside the agent's process, so it dies with it.
//! - **Kernel faults** on an interface or towards addresses, optionally in a named network
//!   namespace: `netem` and `rate-limit` as root qdiscs ([`tc`]; towards given addresses,
//!   ports and protocols through an htb root and u32 filters), `partition` as an nftables
//!   table of faultline's own ([`nft`]). Kernel support is probed before anything is applied;
//!   a missing module is a clear [`FaultError::Unsupported`] naming the module and the
//!   proxy alternative. Their revert records (dev, netns, handle, table) let the journal undo
//!   them after a SIGKILL of the agent.
//!
//! [`cmd`] runs `tc`/`nft`/`ip` (in a namespace via `ip netns exec`).

mod cmd;
mod nft;
mod proxy;
mod proxy_fault;
mod tc;
pub mod toxic;

pub use nft::PartitionSpec;
pub use proxy::{Proxy, ProxyError, ProxySpec};
pub use proxy_fault::{BandwidthSpec, LatencySpec, ProxyFaultSpec};
pub use tc::{NetemSpec, RateLimitSpec};
pub use toxic::{Stream, Toxic};

use serde::Serialize;

use crate::error::FaultError;
use crate::fault::{Context, Plan, RevertRecord, Target};
use crate::units::HumanDuration;

/// A network target as shown in plans and audit events.
#[derive(Debug)]
pub(crate) struct NetTarget<'a> {
    pub(crate) netns: Option<&'a str>,
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
            d.push_str(&format!("in netns {ns} "));
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

/// The named namespace must be a valid name and exist.
pub(crate) fn check_netns(kind: &'static str, netns: Option<&str>) -> Result<(), FaultError> {
    let Some(ns) = netns else { return Ok(()) };
    if !cmd::valid_netns_name(ns) {
        return Err(FaultError::Invalid {
            kind,
            message: format!("--netns {ns:?} is not a namespace name"),
        });
    }
    if !cmd::netns_exists(ns) {
        return Err(FaultError::NoTarget {
            kind,
            message: format!("network namespace {ns} does not exist (see `ip netns list`)"),
        });
    }
    Ok(())
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
