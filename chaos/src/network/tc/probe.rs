//! Kernel support for a tc fault, found out before the target is touched: a qdisc or
//! filter kind is loaded (`/sys/module`), or else the fault's own setup is tried over netlink
//! on `lo` of a throwaway network namespace that only the probing thread is in (and that
//! disappears with it); a missing module is [`FaultError::Unsupported`] naming the module,
//! what needs it and what works without it. The same errors, met while applying, are
//! explained the same way ([`is_unknown_kind`]).

use nix::errno::Errno;

use super::super::netlink::NlError;
use super::super::netns::in_throwaway;
use super::super::nft::{Cidr, Protocol};
use super::super::unsupported_hint;
use super::filter::Selection;
use super::qdisc::Leaf;
use super::rtnl::{Object, Rtnl, TcObject, Write};
use super::{Setup, setup_objects};
use crate::error::FaultError;

/// What a qdisc or filter kind is needed for, its module, and what works without it.
fn qdisc_needs(kind: &str) -> (&'static str, &'static str) {
    match kind {
        "netem" => (
            "sch_netem",
            "delay, jitter, loss, duplication and corruption (fault kind `netem`)",
        ),
        "htb" => (
            "sch_htb",
            "faults on only some traffic (--dest, --port, --protocol of `netem` and `rate-limit`)",
        ),
        "u32" => (
            "cls_u32",
            "faults on only some traffic (--dest, --port, --protocol of `netem` and `rate-limit`)",
        ),
        _ => ("sch_tbf", "rate limits (fault kind `rate-limit`)"),
    }
}

/// `fault` cannot run because qdisc or filter `kind` is missing; `after` ends the message.
pub(super) fn unsupported_for(
    fault: &'static str,
    kind: &str,
    detail: &str,
    after: &str,
) -> FaultError {
    let (module, what) = qdisc_needs(kind);
    let without = if matches!(kind, "htb" | "u32") {
        "; without --dest, --port and --protocol the fault applies to all the interface's traffic and needs neither"
    } else {
        ""
    };
    FaultError::Unsupported {
        kind: fault,
        message: format!(
            "{what} need the kernel module {module}, which this kernel does not provide ({detail}); \
             load it with `modprobe {module}` if it is installed, or {}{without}{after}",
            unsupported_hint(fault)
        ),
    }
}

/// Whether the kernel refused a qdisc or filter because it does not know its kind
/// ("Specified qdisc kind is unknown", "TC classifier not found"): `ENOENT` on a create.
pub(super) fn is_unknown_kind(e: &NlError) -> bool {
    e.errno == Errno::ENOENT
}

fn module_loaded(module: &str) -> bool {
    std::path::Path::new("/sys/module").join(module).exists()
}

/// The interface index of `lo`, in every network namespace.
const LOOPBACK: i32 = 1;

/// Tries `steps` on `lo` of a throwaway namespace; the first refused for an unknown kind is
/// reported as the module `missing(step)` lacking. Where no throwaway namespace can be made
/// (no `CAP_SYS_ADMIN`), nothing is probed: applying reports the same errors.
fn try_on_loopback(
    fault: &'static str,
    steps: &[(Object, TcObject, &str)],
) -> Result<(), FaultError> {
    let tried = in_throwaway(|| {
        let mut rtnl = Rtnl::open(fault, None)?;
        for (what, obj, module_kind) in steps {
            if let Err(e) = rtnl.write(*what, Write::Add, LOOPBACK, obj) {
                return Err(if is_unknown_kind(&e) {
                    unsupported_for(fault, module_kind, &e.to_string(), "")
                } else {
                    FaultError::Other(format!(
                        "probing kernel support for {fault} ({module_kind}): {e}"
                    ))
                });
            }
        }
        Ok(())
    });
    match tried {
        Err(FaultError::Sys {
            errno: Errno::EPERM,
            ..
        }) => Ok(()),
        other => other,
    }
}

/// Checks that the kernel can run `leaf` as a root qdisc before touching the target: loaded
/// (`/sys/module/sch_KIND`), or else a trial on `lo` of a throwaway namespace (which lets the
/// kernel autoload the module, as a real apply would).
pub(super) fn probe_qdisc(fault: &'static str, leaf: &Leaf) -> Result<(), FaultError> {
    if module_loaded(&format!("sch_{}", leaf.kind())) {
        return Ok(());
    }
    let everything = Selection {
        dest: &[],
        port: &[],
        protocol: Protocol::All,
    };
    let steps = setup_objects(1, leaf, &everything).map_err(FaultError::Other)?;
    try_on_loopback(fault, &with_modules(&steps, leaf.kind()))
}

/// [`probe_qdisc`] for a fault on selected traffic: the whole setup — htb root, class, the
/// leaf, a u32 filter — is tried unless `sch_htb`, the leaf's module and `cls_u32` are all
/// loaded. The error names the first missing piece.
pub(super) fn probe_selected(fault: &'static str, leaf: &Leaf) -> Result<(), FaultError> {
    let kind = leaf.kind();
    if module_loaded("sch_htb") && module_loaded(&format!("sch_{kind}")) && module_loaded("cls_u32")
    {
        return Ok(());
    }
    let dest = [Cidr {
        addr: std::net::IpAddr::from([127, 0, 0, 1]),
        prefix: 32,
    }];
    let sel = Selection {
        dest: &dest,
        port: &[],
        protocol: Protocol::All,
    };
    let steps = setup_objects(1, leaf, &sel).map_err(FaultError::Other)?;
    try_on_loopback(fault, &with_modules(&steps, kind))
}

/// Each step with the kind whose module it needs (`htb`, the leaf's, `u32`).
fn with_modules<'a>(steps: &[Setup], leaf: &'a str) -> Vec<(Object, TcObject, &'a str)> {
    steps
        .iter()
        .map(|s| {
            let module = match (s.what, s.obj.kind.as_str()) {
                (Object::Filter, _) => "u32",
                (_, "htb") => "htb",
                _ => leaf,
            };
            (s.what, s.obj.clone(), module)
        })
        .collect()
}
