//! Kernel support for a tc fault, found out before the target is touched: a qdisc or
//! filter kind is loaded or built in (`/sys/module`), or else the setup is tried on `lo` in a
//! throwaway network namespace; a missing module is [`FaultError::Unsupported`] naming the
//! module, what needs it and what works without it.

use super::super::cmd;
use super::super::nft::{Cidr, Protocol};
use super::super::unsupported_hint;
use super::filter::{Selection, setup_commands};
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

/// The fault kind a qdisc kind's error is reported under when the fault is not known.
fn fault_of(kind: &str) -> &'static str {
    if kind == "netem" {
        "netem"
    } else {
        "rate-limit"
    }
}

pub(super) fn unsupported(kind: &str, detail: &str) -> FaultError {
    unsupported_for(fault_of(kind), kind, detail, "")
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

/// Whether an error text from tc means "this filter kind does not exist in the kernel".
pub(super) fn is_unknown_filter(stderr: &str) -> bool {
    stderr.contains("Unknown filter") || stderr.contains("filter kind is unknown")
}

/// Whether an error text from tc means "this qdisc kind does not exist in the kernel".
pub(super) fn is_unknown_qdisc(stderr: &str) -> bool {
    stderr.contains("Specified qdisc kind is unknown")
        || stderr.contains("Unknown qdisc")
        || stderr.contains("qdisc kind is unknown")
}

fn module_loaded(module: &str) -> bool {
    std::path::Path::new("/sys/module").join(module).exists()
}

/// Check that the kernel can run qdisc `kind` (`netem`, `tbf`) before touching the target:
/// loaded or built in (`/sys/module/sch_KIND`), or else a trial `tc qdisc add` on `lo` in a
/// throwaway namespace (which lets the kernel autoload the module, as a real apply would).
pub(super) fn probe_qdisc(kind: &str, trial_args: &[&str]) -> Result<(), FaultError> {
    if module_loaded(&format!("sch_{kind}")) {
        return Ok(());
    }
    let probe = ProbeNetns::create()?;
    let mut args = vec!["qdisc", "add", "dev", "lo", "root"];
    args.extend_from_slice(trial_args);
    match cmd::run(Some(&probe.name), "tc", &args, None) {
        Ok(_) => Ok(()),
        Err(e) if is_unknown_qdisc(e.stderr()) => Err(unsupported(kind, e.stderr())),
        Err(e) => Err(FaultError::Other(format!(
            "probing kernel support for {kind}: {e}"
        ))),
    }
}

/// [`probe_qdisc`] for a fault on selected traffic: the whole setup — htb root, class, the
/// leaf `kind` with `trial_args`, a u32 filter — is tried on `lo` in a throwaway namespace
/// unless `sch_htb`, `sch_KIND` and `cls_u32` are all loaded. The error names the first
/// missing piece.
pub(super) fn probe_selected(
    fault: &'static str,
    kind: &str,
    trial_args: &[&str],
) -> Result<(), FaultError> {
    if module_loaded("sch_htb") && module_loaded(&format!("sch_{kind}")) && module_loaded("cls_u32")
    {
        return Ok(());
    }
    let probe = ProbeNetns::create()?;
    let leaf: Vec<String> = trial_args.iter().map(|s| (*s).to_owned()).collect();
    let dest = [Cidr {
        addr: std::net::IpAddr::from([127, 0, 0, 1]),
        prefix: 32,
    }];
    let sel = Selection {
        dest: &dest,
        port: &[],
        protocol: Protocol::All,
    };
    let cmds = setup_commands("lo", 1, &leaf, &sel).map_err(FaultError::Other)?;
    for (step, c) in cmds.iter().enumerate() {
        let args: Vec<&str> = c.iter().map(String::as_str).collect();
        if let Err(e) = cmd::run(Some(&probe.name), "tc", &args, None) {
            // Steps: 0 htb root, 1 htb class, 2 the leaf, 3 the filter.
            let missing = match step {
                0 | 1 => "htb",
                2 => kind,
                _ => "u32",
            };
            return Err(
                if is_unknown_qdisc(e.stderr()) || is_unknown_filter(e.stderr()) {
                    unsupported_for(fault, missing, e.stderr(), "")
                } else {
                    FaultError::Other(format!(
                        "probing kernel support for {fault} on selected traffic ({missing}): {e}"
                    ))
                },
            );
        }
    }
    Ok(())
}

/// A namespace that exists only for a support probe; deleted on drop.
#[derive(Debug)]
struct ProbeNetns {
    name: String,
}

impl ProbeNetns {
    fn create() -> Result<Self, FaultError> {
        let name = format!(
            "faultline-probe-{}-{:08x}",
            std::process::id(),
            rand::random::<u32>()
        );
        cmd::run(None, "ip", &["netns", "add", &name], None).map_err(|e| {
            FaultError::Other(format!(
                "cannot create a throwaway namespace to probe kernel support: {e}"
            ))
        })?;
        Ok(ProbeNetns { name })
    }
}

impl Drop for ProbeNetns {
    fn drop(&mut self) {
        if let Err(e) = cmd::run(None, "ip", &["netns", "del", &self.name], None) {
            tracing::warn!(netns = %self.name, error = %e, "could not delete the probe namespace");
        }
    }
}
