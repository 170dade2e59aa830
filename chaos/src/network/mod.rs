//! Network faults, two ways.
//!
//! - **The built-in TCP proxy** ([`proxy`], [`toxic`], kinds in [`proxy_fault`]): `latency`,
//!   `bandwidth` and `proxy` (any Toxiproxy-style toxic: latency with jitter, bandwidth,
//!   timeout, reset_peer, slicer, slow_close, limit_data). Needs no kernel feature; runs
//!   inside the agent's process, so it dies with it.
//! - **Kernel faults** on an interface or towards addresses, in the agent's network namespace
//!   or in those named by what users know — `--netns NAME`, `--pid PID`, `--container
//!   ID|NAME`, or the pod selectors (`--namespace`, `--pod`, `--label`, `--container-name`,
//!   `--count`/`--percent`) ([`netns`]): `netem` and `rate-limit` as root qdiscs ([`tc`];
//!   towards given addresses, ports and protocols through an htb root and u32 filters;
//!   someone else's root qdisc tree recorded and written back), `partition` as an nftables
//!   table of faultline's own ([`nft`]). All of it over netlink from the agent itself
//!   ([`netlink`]; ADR 0018): no `tc`, `nft` or `ip` binary, so it works from the `FROM
//!   scratch` image. Kernel support and the agent's capabilities are checked before anything
//!   is applied; a missing module is a clear [`FaultError::Unsupported`] naming the module and
//!   the proxy alternative. Their revert records (namespace by inode, dev, handle, snapshot,
//!   table) let the journal undo them after a SIGKILL of the agent.
//!
//! A fault whose selectors pick several pods acts in each of their namespaces: its revert
//! record holds one record per namespace ([`record_of`], [`records`]: a single namespace's
//! record as it always was, several under `namespaces`); apply goes through them in order
//! (a failure reverts them all, from the plan's record), check says partial when only some
//! are in effect ([`combine`]), and revert reverts every one, even after one failed
//! ([`revert_each`]). A namespace that is gone counts as reverted.

/// Adds to a kernel network fault's spec the fields that name the network namespaces it acts
/// in — `--netns NAME`, `--pid PID`, `--container ID|NAME` and the pod selectors with their
/// runtime sockets ([`crate::select::with_pod_selectors`]) — so that every kernel kind takes
/// the same flags and JSON fields, and a `places(kind, ctx)` method that finds them
/// ([`netns::resolve`]).
macro_rules! with_net_target {
    ($(#[$meta:meta])* pub struct $name:ident { $($body:tt)* }) => {
        crate::select::with_pod_selectors! {
            $(#[$meta])*
            pub struct $name {
                $($body)*
                /// The network namespace to act in, by name (as `ip netns` lists it).
                #[arg(
                    long,
                    help_heading = "Where",
                    conflicts_with_all = ["pid", "container", "namespace", "pod", "label", "container_name"]
                )]
                #[serde(default, skip_serializing_if = "Option::is_none")]
                pub netns: Option<String>,
                /// The process (host pid) whose network namespace to act in.
                #[arg(
                    long,
                    help_heading = "Where",
                    conflicts_with_all = ["container", "namespace", "pod", "label", "container_name"]
                )]
                #[serde(default, skip_serializing_if = "Option::is_none")]
                pub pid: Option<i32>,
                /// The container whose network namespace to act in: its id (or a unique start
                /// of it) or, on the Docker Engine API, its name; found on the runtime as for
                /// container faults (--cri-socket, --docker-socket). Or pick pods with the pod
                /// selectors: each picked pod's namespace, once.
                #[arg(long, help_heading = "Where")]
                #[serde(default, skip_serializing_if = "Option::is_none")]
                pub container: Option<String>,
            }
        }

        impl $name {
            /// The namespaces the spec's target fields name, found and checked.
            fn places(
                &self,
                kind: &'static str,
                ctx: &crate::fault::Context,
            ) -> Result<super::netns::Places, crate::error::FaultError> {
                let sel = super::netns::Selector::from_flags(
                    kind,
                    self.netns.as_deref(),
                    self.pid,
                    self.container.as_deref(),
                    self.pod_query(kind)?,
                )?;
                super::netns::require_caps(kind, sel.is_other())?;
                super::netns::resolve(kind, sel, ctx)
            }
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

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::error::FaultError;
use crate::fault::{Context, Effect, EffectState, Plan, RevertRecord, Target};
use crate::select::Selection;
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

/// A plan for a network fault whose provisional revert record is `record` (from
/// [`record_of`]), with the pick of its pod selectors.
#[allow(clippy::too_many_arguments)]
pub(crate) fn plan_with(
    ctx: &Context,
    kind: &str,
    duration: HumanDuration,
    targets: Vec<Target>,
    actions: Vec<String>,
    reverts: Vec<String>,
    record: RevertRecord,
    selection: Option<Selection>,
) -> Plan {
    Plan {
        id: ctx.id.clone(),
        kind: kind.to_owned(),
        duration,
        targets,
        actions,
        reverts,
        instant: false,
        record,
        selection,
    }
}

/// The records of a fault acting in several namespaces, as journaled (`C`: a slice of them
/// to write, a `Vec` read back).
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct PerNamespace<C> {
    /// One record per namespace, in the order they are applied.
    namespaces: C,
}

/// The revert record of a fault acting in the namespaces `records` stand for: one record as
/// it is (as every record was before faults could act in several), several under
/// `namespaces`.
pub(crate) fn record_of<T: Serialize>(records: &[T]) -> Result<RevertRecord, FaultError> {
    match records {
        [one] => RevertRecord::with_state(one),
        several => RevertRecord::with_state(&PerNamespace {
            namespaces: several,
        }),
    }
}

/// The per-namespace records [`record_of`] wrote (either shape).
pub(crate) fn records<T: DeserializeOwned>(record: &RevertRecord) -> Result<Vec<T>, FaultError> {
    record.state::<T>().map(|one| vec![one]).or_else(|e| {
        record
            .state::<PerNamespace<Vec<T>>>()
            .map(|p| p.namespaces)
            .map_err(|_| e)
    })
}

/// The check of a fault from the checks of its namespaces: in effect where all are, not in
/// effect where none is, partial otherwise; the detail names each.
pub(crate) fn combine(mut effects: Vec<Effect>) -> Effect {
    if effects.len() == 1
        && let Some(one) = effects.pop()
    {
        return one;
    }
    let on = effects
        .iter()
        .filter(|e| e.state == EffectState::InEffect)
        .count();
    let off = effects
        .iter()
        .filter(|e| e.state == EffectState::NotInEffect)
        .count();
    let detail = effects
        .iter()
        .map(|e| e.detail.as_str())
        .collect::<Vec<_>>()
        .join("; ");
    if on == effects.len() {
        Effect::in_effect(detail)
    } else if off == effects.len() {
        Effect::not_in_effect(detail)
    } else {
        Effect::partial(detail)
    }
}

/// Reverts the fault in every namespace of `records`, also after one failed (its revert is
/// retried with the journal entry, and reverting the others again is a no-op); one failure
/// is returned as it is, several together.
pub(crate) fn revert_each<T>(
    records: &[T],
    mut revert: impl FnMut(&T) -> Result<(), FaultError>,
) -> Result<(), FaultError> {
    let mut failed: Vec<FaultError> = records.iter().filter_map(|r| revert(r).err()).collect();
    match failed.len() {
        0 => Ok(()),
        1 => Err(failed.remove(0)),
        n => Err(FaultError::Other(format!(
            "{n} of {} namespaces not reverted: {}",
            records.len(),
            failed
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; ")
        ))),
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Rec {
        table: String,
    }

    fn rec(t: &str) -> Rec {
        Rec { table: t.into() }
    }

    #[test]
    fn one_namespace_keeps_its_record_and_several_are_listed() {
        let one = record_of(&[rec("a")]).unwrap();
        assert_eq!(one.state, serde_json::json!({"table": "a"}));
        assert_eq!(records::<Rec>(&one).unwrap(), [rec("a")]);
        let two = record_of(&[rec("a"), rec("b")]).unwrap();
        assert_eq!(
            two.state,
            serde_json::json!({"namespaces": [{"table": "a"}, {"table": "b"}]})
        );
        assert_eq!(records::<Rec>(&two).unwrap(), [rec("a"), rec("b")]);
        let bad = RevertRecord::with_state(&serde_json::json!({"tables": []})).unwrap();
        assert!(records::<Rec>(&bad).is_err());
    }

    #[test]
    fn checks_combine_and_every_namespace_is_reverted_after_a_failure() {
        let on = Effect::in_effect("a on");
        let off = Effect::not_in_effect("b off");
        assert_eq!(combine(vec![off.clone()]), off);
        assert_eq!(
            combine(vec![on.clone(), on.clone()]).state,
            EffectState::InEffect
        );
        let mixed = combine(vec![on, off.clone()]);
        assert_eq!(mixed.state, EffectState::Partial);
        assert_eq!(mixed.detail, "a on; b off");
        assert_eq!(
            combine(vec![off.clone(), off]).state,
            EffectState::NotInEffect
        );

        let mut tried = Vec::new();
        let e = revert_each(&[rec("a"), rec("b"), rec("c")], |r| {
            tried.push(r.table.clone());
            match r.table.as_str() {
                "b" => Err(FaultError::Other("b failed".into())),
                _ => Ok(()),
            }
        })
        .unwrap_err();
        assert_eq!(tried, ["a", "b", "c"], "c is reverted although b failed");
        assert_eq!(
            e.to_string(),
            FaultError::Other("b failed".into()).to_string()
        );
        let e = revert_each(&[rec("a"), rec("b")], |r| {
            Err(FaultError::Other(format!("{} failed", r.table)))
        })
        .unwrap_err();
        assert!(
            e.to_string().contains("2 of 2 namespaces not reverted"),
            "{e}"
        );
    }
}
