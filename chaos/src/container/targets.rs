//! Which containers a fault touches — the one `--container` names, or those the pod
//! selectors match and pick — each through the guards first. Process faults with pod
//! selectors resolve their containers here too, then signal the processes in them.

use std::collections::HashMap;

use super::runtime::{self, Found};
use crate::error::FaultError;
use crate::fault::Context;
use crate::guard;
use crate::procfs::{self, ProcessIdentity};
use crate::select::{self, PodQuery, Selection};

/// The containers a fault touches and what is known about them.
#[derive(Debug)]
pub(crate) struct Selected {
    /// The picked containers, sorted by namespace, pod, name and id.
    pub found: Vec<Found>,
    /// How selectors picked them (`None` for `--container`).
    pub selection: Option<Selection>,
    /// The live processes of each picked container, by id (from `/proc/<pid>/cgroup`).
    pub members: HashMap<String, Vec<i32>>,
}

/// Resolves `--container` or the pod selectors of `query` to running containers, refusing a
/// selection that reaches a guarded container. With `signals_all` (container faults, which
/// reach every process of a container) each container's processes go through the process
/// guards as well; process faults check the processes they signal themselves.
///
/// # Errors
/// [`FaultError::Invalid`] for both or neither of `--container` and selectors;
/// [`FaultError::NoTarget`] naming the selector when nothing matches; a guard's refusal.
pub(crate) fn select(
    ctx: &Context,
    kind: &'static str,
    container: Option<&str>,
    query: &PodQuery,
    signals_all: bool,
) -> Result<Selected, FaultError> {
    let invalid = |message: &str| FaultError::Invalid {
        kind,
        message: message.to_owned(),
    };
    let matches = match (container, query.selector.is_empty()) {
        (Some(_), false) => {
            return Err(invalid(
                "give --container or pod selectors (--namespace, --pod, --label, --container-name), not both",
            ));
        }
        (None, true) => {
            return Err(invalid(
                "give --container ID, or pod selectors: --namespace, --pod, --label KEY=VALUE, --container-name",
            ));
        }
        (Some(reference), true) => vec![runtime::find(
            kind,
            &query.sockets,
            &ctx.env.sockets,
            reference,
        )?],
        (None, false) => {
            let (rt, running) = runtime::list_running(kind, &query.sockets, &ctx.env.sockets)?;
            let seen = running.len();
            let matches: Vec<Found> = running
                .into_iter()
                .filter(|f| query.selector.matches(&f.candidate))
                .collect();
            if matches.is_empty() {
                return Err(FaultError::NoTarget {
                    kind,
                    message: format!(
                        "no running container matches the selector [{}] on {rt} ({seen} running)",
                        query.selector
                    ),
                });
            }
            matches
        }
    };
    for f in &matches {
        let c = &f.candidate;
        guard::check_container(&c.id, &c.name, c.pod.as_ref(), &ctx.config, &ctx.env)
            .map_err(|e| in_kind(kind, e))?;
    }
    let ids: Vec<String> = matches
        .iter()
        .map(|f| f.candidate.id.to_ascii_lowercase())
        .filter(|id| id.len() >= 12)
        .collect();
    let id_refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    let mut members =
        procfs::container_members(&ctx.env.proc_root, &id_refs).map_err(|source| {
            FaultError::Io {
                action: "cannot list processes in",
                path: ctx.env.proc_root.clone(),
                source,
            }
        })?;
    if signals_all {
        for f in &matches {
            let pids = members
                .get(&f.candidate.id.to_ascii_lowercase())
                .map(Vec::as_slice)
                .unwrap_or_default();
            guard_members(ctx, kind, f, pids)?;
        }
    }
    let (found, selection) = if container.is_some() {
        (matches, None)
    } else {
        let (picked, selection) = select::pick(query, matches);
        (picked, Some(selection))
    };
    members.retain(|id, _| {
        found
            .iter()
            .any(|f| f.candidate.id.eq_ignore_ascii_case(id))
    });
    Ok(Selected {
        found,
        selection,
        members,
    })
}

/// A guard's refusal with the fault kind in front.
fn in_kind(kind: &str, e: FaultError) -> FaultError {
    match e {
        FaultError::Refused { guard, message } => {
            FaultError::refused(guard, format!("{kind}: {message}"))
        }
        other => other,
    }
}

/// Runs the process guards over `f`'s main process and `pids`; one refusal refuses the
/// container, naming the guard, the container and the process.
pub(crate) fn guard_members(
    ctx: &Context,
    kind: &str,
    f: &Found,
    pids: &[i32],
) -> Result<(), FaultError> {
    let env = &ctx.env;
    let main = f.main_pid;
    for pid in main
        .into_iter()
        .chain(pids.iter().copied().filter(|p| Some(*p) != main))
    {
        let p = procfs::identity(&env.proc_root, pid, &env.boot_id).unwrap_or(ProcessIdentity {
            pid,
            start_time: 0,
            boot_id: env.boot_id.clone(),
            name: String::new(),
        });
        if let Err(FaultError::Refused { guard, message }) =
            guard::check_process(&p, &ctx.config, env)
        {
            return Err(FaultError::refused(
                guard,
                format!(
                    "{kind}: container {} ({}) holds a protected process, and {kind} reaches all of them: {message}",
                    f.candidate.describe(),
                    f.candidate.id
                ),
            ));
        }
    }
    Ok(())
}
