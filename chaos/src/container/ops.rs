//! Plan, apply, check and revert of the container faults, one container record at a time
//! (see the module docs of [`super`] for what each kind does on which runtime).

use std::time::Duration;

use nix::sys::signal::Signal;

use super::runtime::{Found, Runtime, RuntimeKind};
use super::targets::{guard_members, select};
use super::{ContainerAction, ContainerRecord, ContainersState, How, records};
use crate::error::FaultError;
use crate::fault::{Context, Effect, Plan, RevertRecord, Target};
use crate::freezer::{self, CgroupVersion, FreezeState, FreezerCgroup};
use crate::select::PodQuery;
use crate::units::HumanDuration;

/// What the plan, the check and the listing say of a fault the orchestrator reverts.
const KUBELET_REVERTS: &str = "irreversible by design: on Kubernetes the kubelet, not faultline, starts the container again (a new one, as the pod's restartPolicy says); that recovery is what a drill measures";

impl ContainerRecord {
    pub(super) fn runtime(&self) -> Runtime {
        Runtime {
            kind: self.runtime,
            socket: self.socket.clone(),
        }
    }

    /// `container app (0123…) of pod shop/web-1`.
    fn describe(&self) -> String {
        match &self.pod {
            Some(p) => format!("container {} ({}) of pod {p}", self.name, short(&self.id)),
            None => format!("container {} ({})", self.name, short(&self.id)),
        }
    }

    /// Whether the orchestrator, not faultline, undoes this (a stop or kill on a CRI runtime).
    fn irreversible(&self) -> bool {
        self.runtime == RuntimeKind::Cri
            && matches!(self.action, ContainerAction::Stop | ContainerAction::Kill)
    }
}

fn short(id: &str) -> &str {
    id.get(..12).unwrap_or(id)
}

fn freezer_file(c: &FreezerCgroup) -> String {
    match c.version {
        CgroupVersion::V1 => format!("{}/freezer.state", c.dir.display()),
        CgroupVersion::V2 => format!("{}/cgroup.freeze", c.dir.display()),
    }
}

/// Refuses what this runtime cannot do, before anything else is looked at.
pub(super) fn check_runtime(kind: &'static str, how: How, rt: &Runtime) -> Result<(), FaultError> {
    if rt.kind != RuntimeKind::Cri {
        return Ok(());
    }
    match how.action {
        ContainerAction::Restart => Err(FaultError::Unsupported {
            kind,
            message: format!(
                "{rt} cannot restart a container: a stopped CRI container is never started again (on Kubernetes the kubelet creates a new one). Use container-kill or container-stop, whose recovery the kubelet does"
            ),
        }),
        ContainerAction::Kill if how.signal.is_some_and(|s| s.0 != Signal::SIGKILL) => {
            Err(FaultError::Invalid {
                kind,
                message: format!(
                    "{rt} sends KILL only (StopContainer without grace), not {}: use container-stop for SIGTERM then SIGKILL after --grace, or process-kill with the same selectors for any signal",
                    how.signal.map(|s| s.to_string()).unwrap_or_default()
                ),
            })
        }
        _ => Ok(()),
    }
}

/// Refuses a container not in a state the fault can act on.
fn check_state(kind: &'static str, action: ContainerAction, f: &Found) -> Result<(), FaultError> {
    let s = &f.seen;
    let problem = match action {
        _ if !s.running => Some(format!("is {}, not running", s.status)),
        ContainerAction::Stop | ContainerAction::Kill if s.paused => {
            Some("is paused; unpause it first".to_owned())
        }
        ContainerAction::Pause if s.paused => Some("is already paused".to_owned()),
        _ => None,
    };
    match problem {
        Some(p) => Err(FaultError::NoTarget {
            kind,
            message: format!("container {} {p}", f.candidate.describe()),
        }),
        None => Ok(()),
    }
}

/// The freezer cgroup of a container to pause, through the guards; `Ok(Err(why))` when it
/// cannot be used here (no process of the container visible, no freezer mount, a read-only
/// mount).
fn freezer_of(
    ctx: &Context,
    kind: &'static str,
    f: &Found,
    members: &[i32],
) -> Result<Result<FreezerCgroup, String>, FaultError> {
    let located = f
        .main_pid
        .into_iter()
        .chain(members.iter().copied())
        .find_map(|pid| freezer::of_process(&ctx.env.proc_root, pid));
    let Some(located) = located else {
        return Ok(Err(format!(
            "no process of it in {}, or no freezer hierarchy mounted in this mount namespace",
            ctx.env.proc_root.display()
        )));
    };
    let cgroup = located.cgroup;
    if !located.writable {
        return Ok(Err(format!(
            "its cgroup {} is on a read-only mount",
            cgroup.dir.display()
        )));
    }
    crate::guard::check_freezer(&cgroup, &ctx.env).map_err(|e| match e {
        FaultError::Refused { guard, message } => {
            FaultError::refused(guard, format!("{kind}: {message}"))
        }
        other => other,
    })?;
    // Everything in the cgroup freezes, not only what /proc showed under the container's id.
    guard_members(ctx, kind, f, &cgroup.procs())?;
    let state = cgroup.state()?;
    if state != FreezeState::Thawed {
        return Err(FaultError::NoTarget {
            kind,
            message: format!(
                "container {} is already paused (its cgroup's freezer is {state})",
                f.candidate.describe()
            ),
        });
    }
    Ok(Ok(cgroup))
}

/// The steps apply will take on one container, and the steps of its revert.
pub(super) fn steps(how: How, rec: &ContainerRecord, rt: &Runtime) -> (String, String) {
    let id = &rec.id;
    let who = rec.describe();
    let grace = HumanDuration(how.grace);
    match (how.action, rt.kind, &rec.freezer) {
        (ContainerAction::Pause, _, Some(c)) => {
            let (freeze, thaw) = match c.version {
                CgroupVersion::V1 => ("FROZEN", "THAWED"),
                CgroupVersion::V2 => ("1", "0"),
            };
            (
                format!("freeze {who}: write {freeze} to {}", freezer_file(c)),
                format!("thaw {who}: write {thaw} to {}", freezer_file(c)),
            )
        }
        (ContainerAction::Pause, _, None) => (
            format!("POST /containers/{id}/pause on {rt} ({who})"),
            format!("POST /containers/{id}/unpause"),
        ),
        (ContainerAction::Stop, RuntimeKind::Cri, _) => (
            format!(
                "CRI StopContainer {id} with {grace} of grace (SIGTERM, then SIGKILL) on {rt} ({who})"
            ),
            format!("none for {who}: {KUBELET_REVERTS}"),
        ),
        (ContainerAction::Kill, RuntimeKind::Cri, _) => (
            format!("CRI StopContainer {id} without grace (SIGKILL) on {rt} ({who})"),
            format!("none for {who}: {KUBELET_REVERTS}"),
        ),
        (ContainerAction::Stop, _, _) => (
            format!(
                "POST /containers/{id}/stop?t={} on {rt} ({who})",
                how.grace.as_secs()
            ),
            format!("POST /containers/{id}/start"),
        ),
        (ContainerAction::Kill, _, _) => (
            format!(
                "POST /containers/{id}/kill?signal={} on {rt} ({who})",
                how.signal.map(|s| s.0.as_str()).unwrap_or("SIGKILL")
            ),
            format!("POST /containers/{id}/start"),
        ),
        (ContainerAction::Restart, _, _) => (
            format!(
                "POST /containers/{id}/restart?t={} on {rt} ({who})",
                how.grace.as_secs()
            ),
            format!("POST /containers/{id}/start if it is not running"),
        ),
    }
}

/// Resolves the containers, guards them, and plans one record per container.
pub(super) fn plan(
    ctx: &Context,
    how: How,
    container: Option<&str>,
    query: &PodQuery,
    duration: HumanDuration,
) -> Result<Plan, FaultError> {
    let kind = how.action.kind();
    let selected = select(ctx, kind, container, query, true)?;
    let mut containers = Vec::new();
    let (mut targets, mut actions, mut reverts) = (Vec::new(), Vec::new(), Vec::new());
    for f in &selected.found {
        check_runtime(kind, how, &f.runtime)?;
        check_state(kind, how.action, f)?;
        let members = selected
            .members
            .get(&f.candidate.id.to_ascii_lowercase())
            .map(Vec::as_slice)
            .unwrap_or_default();
        let freezer = match how.action {
            ContainerAction::Pause => match freezer_of(ctx, kind, f, members)? {
                Ok(cgroup) => Some(cgroup),
                Err(why) if f.runtime.kind == RuntimeKind::Cri => {
                    return Err(FaultError::Unsupported {
                        kind,
                        message: format!(
                            "cannot freeze container {}: {why}; and {} has no pause call",
                            f.candidate.describe(),
                            f.runtime
                        ),
                    });
                }
                // The Engine API pauses it itself.
                Err(why) => {
                    tracing::info!(container = %f.candidate.id, reason = %why, "cgroup freezer not usable; pausing through the Engine API");
                    None
                }
            },
            _ => None,
        };
        let c = &f.candidate;
        let rec = ContainerRecord {
            socket: f.runtime.socket.clone(),
            runtime: f.runtime.kind,
            id: c.id.clone(),
            name: c.name.clone(),
            pod: c.pod.clone(),
            action: how.action,
            started_at: f.seen.started_at.clone(),
            freezer,
        };
        let (act, rev) = steps(how, &rec, &f.runtime);
        actions.push(act);
        reverts.push(rev);
        targets.push(Target::Container {
            id: c.id.clone(),
            name: Some(c.name.clone()),
            pod: c.pod.clone(),
        });
        containers.push(rec);
    }
    // Over once applied: a restart, and what the orchestrator undoes.
    let instant = how.action == ContainerAction::Restart
        || (!containers.is_empty() && containers.iter().all(ContainerRecord::irreversible));
    Ok(Plan {
        id: ctx.id.clone(),
        kind: kind.to_owned(),
        duration,
        targets,
        actions,
        reverts,
        instant,
        selection: selected.selection,
        record: RevertRecord::with_state(&ContainersState { containers })?,
    })
}

/// Applies the plan to each container in turn; the first failure stops it (the engine then
/// reverts the plan's record, which is safe for containers not reached).
pub(super) fn apply(plan: &Plan, how: How) -> Result<RevertRecord, FaultError> {
    let kind = how.action.kind();
    for rec in records(&plan.record)? {
        let rt = rec.runtime();
        let id = rec.id.as_str();
        match (how.action, rt.kind, &rec.freezer) {
            (ContainerAction::Pause, _, Some(c)) => {
                c.freeze()?;
            }
            (ContainerAction::Pause, _, None) => {
                rt.engine_post(kind, id, "pause", "", Duration::ZERO)?
            }
            (ContainerAction::Stop, RuntimeKind::Cri, _) => rt.cri_stop(kind, id, how.grace)?,
            (ContainerAction::Kill, RuntimeKind::Cri, _) => {
                rt.cri_stop(kind, id, Duration::ZERO)?
            }
            (ContainerAction::Stop, _, _) => rt.engine_post(
                kind,
                id,
                "stop",
                &format!("?t={}", how.grace.as_secs()),
                how.grace,
            )?,
            (ContainerAction::Kill, _, _) => rt.engine_post(
                kind,
                id,
                "kill",
                &format!(
                    "?signal={}",
                    how.signal.map(|s| s.0.as_str()).unwrap_or("SIGKILL")
                ),
                Duration::ZERO,
            )?,
            (ContainerAction::Restart, _, _) => rt.engine_post(
                kind,
                id,
                "restart",
                &format!("?t={}", how.grace.as_secs()),
                how.grace,
            )?,
        }
    }
    Ok(plan.record.clone())
}

/// How far a fault holds on one container.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Holds {
    Yes,
    Partly,
    No,
}

/// Looks at one container on the system.
fn check_one(rec: &ContainerRecord) -> Result<(Holds, String), FaultError> {
    let kind = rec.action.kind();
    let who = rec.describe();
    if let Some(c) = &rec.freezer {
        if !c.exists() {
            return Ok((
                Holds::No,
                format!("{who} is gone (its cgroup {} was removed)", c.dir.display()),
            ));
        }
        let state = c.state()?;
        let holds = match state {
            FreezeState::Frozen => Holds::Yes,
            FreezeState::Freezing => Holds::Partly,
            FreezeState::Thawed => Holds::No,
        };
        return Ok((holds, format!("{who}: {} is {state}", freezer_file(c))));
    }
    let Some(seen) = rec.runtime().observe(kind, &rec.id)? else {
        let holds = if rec.irreversible() {
            Holds::Yes
        } else {
            Holds::No
        };
        let mut detail = format!("{who} no longer exists");
        if rec.irreversible() {
            detail.push_str(&format!(" (removed after it stopped); {KUBELET_REVERTS}"));
        }
        return Ok((holds, detail));
    };
    let holds = match rec.action {
        ContainerAction::Stop | ContainerAction::Kill => !seen.running,
        ContainerAction::Pause => seen.paused,
        ContainerAction::Restart => seen.running && seen.started_at != rec.started_at,
    };
    let mut detail = match rec.runtime {
        RuntimeKind::Cri => format!("{who} is {} (CRI ContainerStatus)", seen.status),
        RuntimeKind::Engine => format!("{who} is {} (started {})", seen.status, seen.started_at),
    };
    if rec.irreversible() {
        detail.push_str(&format!("; {KUBELET_REVERTS}"));
    }
    Ok((if holds { Holds::Yes } else { Holds::No }, detail))
}

/// Whether the fault holds on every container: in effect, partial, or not in effect.
pub(super) fn check(record: &RevertRecord) -> Result<Effect, FaultError> {
    let recs = records(record)?;
    let mut seen = Vec::new();
    for rec in &recs {
        seen.push(check_one(rec)?);
    }
    let detail = seen
        .iter()
        .map(|(_, d)| d.as_str())
        .collect::<Vec<_>>()
        .join("; ");
    Ok(if seen.iter().all(|(h, _)| *h == Holds::Yes) {
        Effect::in_effect(detail)
    } else if seen.iter().all(|(h, _)| *h == Holds::No) {
        Effect::not_in_effect(detail)
    } else {
        Effect::partial(detail)
    })
}

/// Undoes the fault on one container, if it still needs undoing.
fn revert_one(rec: &ContainerRecord) -> Result<(), FaultError> {
    let kind = rec.action.kind();
    if let Some(c) = &rec.freezer {
        if !c.thaw()? {
            tracing::info!(container = %rec.id, cgroup = %c.dir.display(), "cgroup removed; nothing to thaw");
        }
        return Ok(());
    }
    if rec.irreversible() {
        return Ok(());
    }
    let rt = rec.runtime();
    let Some(seen) = rt.observe(kind, &rec.id)? else {
        tracing::info!(container = %rec.id, "container removed; nothing to revert");
        return Ok(());
    };
    let step = match rec.action {
        ContainerAction::Pause if seen.paused => Some("unpause"),
        ContainerAction::Pause => None,
        _ if !seen.running => Some("start"),
        _ => None,
    };
    let Some(step) = step else {
        return Ok(());
    };
    rt.engine_post(kind, &rec.id, step, "", Duration::ZERO)
        .map_err(|e| FaultError::Other(format!("{kind} revert: {e}")))?;
    match rt.observe(kind, &rec.id)? {
        Some(after) if !after.running || after.paused => Err(FaultError::Other(format!(
            "{kind} revert: {} is still {} after {step}",
            rec.describe(),
            after.status
        ))),
        _ => Ok(()),
    }
}

/// Undoes the fault on every container; the first failure is returned once all were tried.
pub(super) fn revert(record: &RevertRecord) -> Result<(), FaultError> {
    let mut first = None;
    for rec in records(record)? {
        if let Err(e) = revert_one(&rec) {
            first.get_or_insert(e);
        }
    }
    first.map_or(Ok(()), Err)
}
