//! Process faults: `process-kill` (any signal) and `process-pause` (SIGSTOP, reverted by
//! SIGCONT), selecting processes by pid, name, command-line regex, cgroup path or container
//! id — or by pod selectors (`--namespace`, `--pod`, `--label`, `--container-name`, with
//! `--count`/`--percent` picking among the containers; see [`crate::select`]), which resolve
//! to the processes of the picked containers, optionally narrowed by `--name` or
//! `--cmdline` — then one, all, a count or a percentage of the matches at random.
//!
//! Targets are resolved at plan time as identities (pid + start time); apply and revert
//! signal only a process whose start time still matches, so a pid reused in between is
//! never touched. Every target passes the process guards (see [`crate::guard`]); the agent
//! itself is never a candidate (a `--cmdline` pattern always matches the agent's own
//! command line).

use std::fmt;
use std::str::FromStr;

use nix::sys::signal::Signal;
use rand::SeedableRng;
use rand::seq::SliceRandom;
use serde::{Deserialize, Serialize};

use crate::error::FaultError;
use crate::fault::{ContainerRef, Context, Effect, Fault, Plan, RevertRecord, Target};
use crate::guard;
use crate::procfs::{self, ProcessIdentity};
use crate::select::{PodQuery, Selection, with_pod_selectors};
use crate::units::{HumanDuration, SignalName};

/// Which of the matching processes are affected.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub enum Mode {
    /// One, at random.
    #[default]
    One,
    /// All of them.
    All,
    /// This many, at random (all if fewer match).
    Count(usize),
    /// This percentage, rounded up, at random.
    Percent(f64),
}

impl Mode {
    /// How many of `n` matches are picked.
    pub fn pick_count(self, n: usize) -> usize {
        match self {
            Mode::One => n.min(1),
            Mode::All => n,
            Mode::Count(c) => c.min(n),
            Mode::Percent(p) => ((n as f64 * p / 100.0).ceil() as usize).min(n),
        }
    }
}

impl FromStr for Mode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let t = s.trim().to_ascii_lowercase();
        let err = || {
            format!(
                "invalid mode {s:?}: expected one, all, a count (3 or count:3) or a percentage (50% or percent:50)"
            )
        };
        match t.as_str() {
            "one" => Ok(Mode::One),
            "all" => Ok(Mode::All),
            _ => {
                if let Some(p) = t.strip_suffix('%').or_else(|| t.strip_prefix("percent:")) {
                    match p.trim().parse::<f64>() {
                        Ok(v) if v > 0.0 && v <= 100.0 => Ok(Mode::Percent(v)),
                        _ => Err(err()),
                    }
                } else {
                    match t
                        .strip_prefix("count:")
                        .unwrap_or(&t)
                        .trim()
                        .parse::<usize>()
                    {
                        Ok(c) if c > 0 => Ok(Mode::Count(c)),
                        _ => Err(err()),
                    }
                }
            }
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Mode::One => f.write_str("one"),
            Mode::All => f.write_str("all"),
            Mode::Count(c) => write!(f, "count:{c}"),
            Mode::Percent(p) => write!(f, "{p}%"),
        }
    }
}

impl Serialize for Mode {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Mode {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = serde_json::Value::deserialize(d)?;
        let s = match v {
            serde_json::Value::String(s) => s,
            serde_json::Value::Number(n) => n.to_string(),
            other => return Err(serde::de::Error::custom(format!("invalid mode {other}"))),
        };
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// How processes are selected: exactly one of `pid`, `name`, `cmdline`, `cgroup`,
/// `container`; or `pods`, optionally narrowed by `name` or `cmdline`.
#[derive(Clone, Debug, Default)]
pub struct Selector {
    /// A pid.
    pub pid: Option<i32>,
    /// A process name (comm, executable or argv[0] file name).
    pub name: Option<String>,
    /// A regex over the command line (arguments joined by spaces).
    pub cmdline: Option<regex::Regex>,
    /// A cgroup path; processes in it or below it match.
    pub cgroup: Option<String>,
    /// A container id (at least 12 hex digits); processes whose cgroup path names it match.
    pub container: Option<String>,
    /// Pod selectors: the processes of the containers they pick.
    pub pods: Option<PodQuery>,
}

macro_rules! process_spec {
    ($(#[$meta:meta])* $name:ident { $($(#[$fmeta:meta])* $vis:vis $field:ident : $ty:ty,)* }) => {
        with_pod_selectors! {
        $(#[$meta])*
        #[derive(Clone, Debug, PartialEq, Serialize, Deserialize, clap::Args)]
        #[serde(deny_unknown_fields)]
        pub struct $name {
            /// Select the process with this pid.
            #[arg(long)]
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub pid: Option<i32>,
            /// Select processes by name (comm, executable or argv[0] file name); with pod
            /// selectors, only the processes so named in the picked containers.
            #[arg(long)]
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub name: Option<String>,
            /// Select processes whose command line matches this regex; with pod selectors,
            /// only those in the picked containers.
            #[arg(long)]
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub cmdline: Option<String>,
            /// Select processes in this cgroup (or below it): the path `/proc/<pid>/cgroup`
            /// shows (`/batch/job-1`) or its directory under a cgroup mount
            /// (`/sys/fs/cgroup/pids/batch/job-1`).
            #[arg(long)]
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub cgroup: Option<String>,
            /// Select the processes of this container id (12+ hex digits).
            #[arg(long)]
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub container: Option<String>,
            /// one | all | a count (3) | a percentage (50%) of the matching processes, at
            /// random. Default: one; with pod selectors, all (every process of the picked
            /// containers).
            #[arg(long)]
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub mode: Option<Mode>,
            $($(#[$fmeta])* $vis $field: $ty,)*
            /// How long the fault lasts (required; capped by chaos.max_duration).
            #[arg(long)]
            pub duration: HumanDuration,
        }
        }

        impl $name {
            fn selector(&self, kind: &'static str) -> Result<Selector, FaultError> {
                let pods = self.pod_query(kind)?;
                let by_pod = !pods.selector.is_empty();
                let invalid = |message: String| FaultError::Invalid { kind, message };
                if by_pod {
                    if self.pid.is_some() || self.cgroup.is_some() || self.container.is_some() {
                        return Err(invalid("pod selectors pick containers: give no --pid, --cgroup or --container with them (--name or --cmdline narrow the processes in the picked containers)".into()));
                    }
                    if self.name.is_some() && self.cmdline.is_some() {
                        return Err(invalid("give at most one of --name and --cmdline with pod selectors".into()));
                    }
                } else {
                    let set = [self.pid.is_some(), self.name.is_some(), self.cmdline.is_some(), self.cgroup.is_some(), self.container.is_some()]
                        .iter()
                        .filter(|b| **b)
                        .count();
                    if set != 1 {
                        return Err(invalid("give exactly one of --pid, --name, --cmdline, --cgroup, --container, or pod selectors (--namespace, --pod, --label, --container-name)".into()));
                    }
                }
                let cmdline = match &self.cmdline {
                    Some(re) => Some(regex::Regex::new(re).map_err(|e| {
                        invalid(format!("--cmdline {re:?} is not a valid regex: {e}"))
                    })?),
                    None => None,
                };
                if let Some(c) = &self.container {
                    if c.len() < 12 || !c.bytes().all(|b| b.is_ascii_hexdigit()) {
                        return Err(invalid(format!("--container {c:?}: expected a container id of at least 12 hex digits")));
                    }
                }
                Ok(Selector {
                    pid: self.pid,
                    name: self.name.clone(),
                    cmdline,
                    cgroup: self.cgroup.clone(),
                    container: self.container.as_ref().map(|c| c.to_ascii_lowercase()),
                    pods: by_pod.then_some(pods),
                })
            }

            /// The mode asked for, or the default for this selector.
            fn mode_for(&self, sel: &Selector) -> Mode {
                self.mode.unwrap_or(if sel.pods.is_some() { Mode::All } else { Mode::One })
            }
        }
    };
}

process_spec! {
    /// `process-kill`: send a signal (default KILL) to the selected processes. Instant: the
    /// fault is over once the signal is delivered (the duration is still validated).
    ProcessKillSpec {
        /// The signal: KILL, TERM, INT, HUP, 9… (STOP-like signals: use process-pause).
        #[arg(long, default_value = "KILL")]
        #[serde(default)]
        pub signal: SignalName,
    }
}

process_spec! {
    /// `process-pause`: SIGSTOP the selected processes for the duration, SIGCONT on revert.
    ProcessPauseSpec {}
}

/// What a process fault journals.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProcessState {
    /// The signal sent (kill) or STOP (pause).
    pub signal: SignalName,
    /// The processes.
    pub targets: Vec<ProcessIdentity>,
}

/// The processes a selector resolved to, each with the container it was found through (pod
/// selectors), and how the selectors picked those containers.
#[derive(Debug)]
pub struct Resolved {
    /// The processes, by pid.
    pub targets: Vec<(ProcessIdentity, Option<ContainerRef>)>,
    /// The pick of the pod selectors, if they were used.
    pub selection: Option<Selection>,
}

impl Resolved {
    fn identities(&self) -> Vec<ProcessIdentity> {
        self.targets.iter().map(|(p, _)| p.clone()).collect()
    }

    fn plan_targets(&self) -> Vec<Target> {
        self.targets
            .iter()
            .map(|(process, container)| Target::Process {
                process: process.clone(),
                container: container.clone(),
            })
            .collect()
    }
}

/// Pids to look at, each with the container it was found through (pod selectors).
type Candidates = Vec<(i32, Option<ContainerRef>)>;

/// The candidate pids of `sel`, and the pick of its pod selectors when it has them.
fn candidates(
    sel: &Selector,
    kind: &'static str,
    ctx: &Context,
) -> Result<(Candidates, Option<Selection>), FaultError> {
    let proc_root = &ctx.env.proc_root;
    if let Some(query) = &sel.pods {
        let picked = crate::container::select(ctx, kind, None, query, false)?;
        let mut out = Vec::new();
        for f in &picked.found {
            let c = &f.candidate;
            let via = ContainerRef {
                id: c.id.clone(),
                name: c.name.clone(),
                pod: c.pod.clone(),
            };
            for pid in picked
                .members
                .get(&c.id.to_ascii_lowercase())
                .into_iter()
                .flatten()
            {
                out.push((*pid, Some(via.clone())));
            }
        }
        return Ok((out, picked.selection));
    }
    let pids = match sel.pid {
        Some(pid) => vec![pid],
        None => procfs::pids(proc_root).map_err(|source| FaultError::Io {
            action: "cannot list processes in",
            path: proc_root.clone(),
            source,
        })?,
    };
    Ok((pids.into_iter().map(|p| (p, None)).collect(), None))
}

/// What `sel` found nothing of, for the error.
fn nothing_matched(sel: &Selector, selection: Option<&Selection>) -> String {
    if let Some(s) = selection {
        let narrow = match (&sel.name, &sel.cmdline) {
            (Some(n), _) => format!("named {n:?} "),
            (None, Some(r)) => format!("whose command line matches {:?} ", r.as_str()),
            _ => String::new(),
        };
        return format!(
            "no process {narrow}in the containers the selector [{}] picked: {}",
            s.selector,
            s.picked.join(", ")
        );
    }
    match sel {
        Selector { pid: Some(p), .. } => format!("no live process with pid {p}"),
        Selector { name: Some(n), .. } => format!("no process named {n:?}"),
        Selector {
            cmdline: Some(r), ..
        } => format!("no process whose command line matches {:?}", r.as_str()),
        Selector {
            cgroup: Some(c), ..
        } => format!("no process in cgroup {c:?}"),
        Selector {
            container: Some(c), ..
        } => format!("no process of container {c}"),
        _ => "empty selector".into(),
    }
}

/// Resolves `sel` in `/proc` (through the container runtime for pod selectors), excluding
/// the agent itself, then picks per `mode` (with the selectors' seed when they were used).
pub fn resolve(
    sel: &Selector,
    mode: Mode,
    kind: &'static str,
    ctx: &Context,
) -> Result<Resolved, FaultError> {
    let env = &ctx.env;
    let proc_root = &env.proc_root;
    let (candidates, selection) = candidates(sel, kind, ctx)?;
    // A cgroup given as a filesystem path is matched as the hierarchy path /proc shows.
    let cgroup_want = sel.cgroup.as_ref().map(|cg| {
        std::fs::read_to_string(proc_root.join("self").join("mountinfo"))
            .ok()
            .and_then(|mi| procfs::cgroup_from_fs_path(&mi, cg))
            .unwrap_or_else(|| cg.trim_end_matches('/').to_owned())
    });
    let mut matched = Vec::new();
    for (pid, via) in candidates {
        if pid == env.agent.pid && sel.pid.is_none() {
            continue;
        }
        let Some(st) = procfs::read_stat(proc_root, pid) else {
            continue;
        };
        if st.state == 'Z' || st.state == 'X' {
            continue;
        }
        let ok = if sel.pid.is_some() {
            true
        } else if let Some(name) = &sel.name {
            procfs::name_matches(&procfs::names(proc_root, pid, &st.comm), name)
        } else if let Some(re) = &sel.cmdline {
            let cl = procfs::cmdline(proc_root, pid);
            !cl.is_empty() && re.is_match(&cl)
        } else if let Some(want) = &cgroup_want {
            let want = want.trim_end_matches('/');
            procfs::cgroups(proc_root, pid).iter().any(|p| {
                p == want || p.starts_with(&format!("{want}/")) || (want.is_empty() && p == "/")
            })
        } else if let Some(id) = &sel.container {
            procfs::in_container(proc_root, pid, id)
        } else {
            // Pod selectors without --name/--cmdline: every process of the picked containers.
            sel.pods.is_some()
        };
        if ok {
            matched.push((
                ProcessIdentity {
                    pid,
                    start_time: st.start_time,
                    boot_id: env.boot_id.clone(),
                    name: st.comm,
                },
                via,
            ));
        }
    }
    if matched.is_empty() {
        return Err(FaultError::NoTarget {
            kind,
            message: nothing_matched(sel, selection.as_ref()),
        });
    }
    // Guards before picking: a selector that reaches a protected process is refused as a
    // whole rather than silently narrowed.
    for (p, _) in &matched {
        guard::check_process(p, &ctx.config, env)?;
    }
    let n = mode.pick_count(matched.len());
    match &selection {
        Some(s) => matched.shuffle(&mut rand::rngs::StdRng::seed_from_u64(s.seed)),
        None => matched.shuffle(&mut rand::rng()),
    }
    matched.truncate(n);
    matched.sort_by_key(|(p, _)| p.pid);
    Ok(Resolved {
        targets: matched,
        selection,
    })
}

fn is_stop_like(sig: Signal) -> bool {
    matches!(
        sig,
        Signal::SIGSTOP | Signal::SIGTSTP | Signal::SIGTTIN | Signal::SIGTTOU
    )
}

impl Fault for ProcessKillSpec {
    fn plan(&self, ctx: &Context) -> Result<Plan, FaultError> {
        const KIND: &str = "process-kill";
        if is_stop_like(self.signal.0) {
            return Err(FaultError::Invalid {
                kind: KIND,
                message: format!(
                    "signal {} stops processes without a revert; use process-pause",
                    self.signal
                ),
            });
        }
        let sel = self.selector(KIND)?;
        let resolved = resolve(&sel, self.mode_for(&sel), KIND, ctx)?;
        let state = ProcessState {
            signal: self.signal,
            targets: resolved.identities(),
        };
        Ok(Plan {
            id: ctx.id.clone(),
            kind: KIND.into(),
            duration: self.duration,
            actions: state
                .targets
                .iter()
                .map(|p| format!("send SIG{} to {p}", self.signal))
                .collect(),
            reverts: Vec::new(),
            targets: resolved.plan_targets(),
            instant: true,
            record: RevertRecord::with_state(&state)?,
            selection: resolved.selection,
        })
    }

    fn apply(&self, plan: &Plan, ctx: &Context) -> Result<RevertRecord, FaultError> {
        let state: ProcessState = plan.record.state()?;
        let mut delivered = 0;
        for p in &state.targets {
            if guard::signal(p, state.signal.0, ctx)? {
                delivered += 1;
            }
        }
        if delivered == 0 {
            return Err(FaultError::NoTarget {
                kind: "process-kill",
                message: "every target exited before the signal".into(),
            });
        }
        Ok(plan.record.clone())
    }

    fn check(&self, record: &RevertRecord, ctx: &Context) -> Result<Effect, FaultError> {
        let state: ProcessState = record.state()?;
        let alive = state
            .targets
            .iter()
            .filter(|p| procfs::is_alive(&ctx.env.proc_root, p, &ctx.env.boot_id))
            .count();
        let n = state.targets.len();
        Ok(if alive == 0 {
            Effect::in_effect(format!("all {n} target(s) gone after SIG{}", state.signal))
        } else {
            Effect::partial(format!(
                "SIG{} delivered; {alive} of {n} target(s) still running",
                state.signal
            ))
        })
    }

    fn revert(&self, _record: &RevertRecord, _ctx: &Context) -> Result<(), FaultError> {
        Ok(())
    }
}

impl Fault for ProcessPauseSpec {
    fn plan(&self, ctx: &Context) -> Result<Plan, FaultError> {
        const KIND: &str = "process-pause";
        let sel = self.selector(KIND)?;
        let resolved = resolve(&sel, self.mode_for(&sel), KIND, ctx)?;
        let state = ProcessState {
            signal: SignalName(Signal::SIGSTOP),
            targets: resolved.identities(),
        };
        Ok(Plan {
            id: ctx.id.clone(),
            kind: KIND.into(),
            duration: self.duration,
            actions: state
                .targets
                .iter()
                .map(|p| format!("send SIGSTOP to {p}"))
                .collect(),
            reverts: state
                .targets
                .iter()
                .map(|p| format!("send SIGCONT to {p} (if it is still the same process)"))
                .collect(),
            targets: resolved.plan_targets(),
            instant: false,
            record: RevertRecord::with_state(&state)?,
            selection: resolved.selection,
        })
    }

    fn apply(&self, plan: &Plan, ctx: &Context) -> Result<RevertRecord, FaultError> {
        let state: ProcessState = plan.record.state()?;
        let mut stopped = 0;
        for p in &state.targets {
            if guard::signal(p, Signal::SIGSTOP, ctx)? {
                stopped += 1;
            }
        }
        if stopped == 0 {
            return Err(FaultError::NoTarget {
                kind: "process-pause",
                message: "every target exited before SIGSTOP".into(),
            });
        }
        wait_until_stopped(&state.targets, ctx);
        Ok(plan.record.clone())
    }

    fn check(&self, record: &RevertRecord, ctx: &Context) -> Result<Effect, FaultError> {
        let state: ProcessState = record.state()?;
        let env = &ctx.env;
        let mut stopped = 0;
        let mut alive = 0;
        for p in &state.targets {
            if procfs::is_alive(&env.proc_root, p, &env.boot_id) {
                alive += 1;
                if procfs::read_stat(&env.proc_root, p.pid).is_some_and(|s| s.state == 'T') {
                    stopped += 1;
                }
            }
        }
        let n = state.targets.len();
        Ok(if stopped == n {
            Effect::in_effect(format!("all {n} target(s) stopped (state T)"))
        } else if stopped > 0 {
            Effect::partial(format!("{stopped} of {n} target(s) stopped; {alive} alive"))
        } else {
            Effect::not_in_effect(format!("no target stopped; {alive} of {n} alive"))
        })
    }

    fn revert(&self, record: &RevertRecord, ctx: &Context) -> Result<(), FaultError> {
        let state: ProcessState = record.state()?;
        let mut first = None;
        for p in &state.targets {
            // No process guards here: resuming a process we stopped is always allowed.
            if let Err(e) = guard::signal_if_alive(p, Signal::SIGCONT, &ctx.env) {
                first.get_or_insert(e);
            }
        }
        first.map_or(Ok(()), Err)
    }
}

/// How long a pause waits for its targets to stop: SIGSTOP takes effect when a target next
/// runs (a sleeping one is woken for it), which on a loaded node can take a scheduler tick or
/// a few. A target stuck in uninterruptible sleep or a frozen cgroup stops later or never;
/// the engine's check after apply tells which.
const STOP_SETTLE: std::time::Duration = std::time::Duration::from_secs(1);

/// Waits until every target still alive shows state `T` in /proc, at most [`STOP_SETTLE`],
/// so that "applied" means "stopped" for whoever looks next.
fn wait_until_stopped(targets: &[ProcessIdentity], ctx: &Context) {
    let env = &ctx.env;
    let until = std::time::Instant::now() + STOP_SETTLE;
    loop {
        let pending = targets.iter().any(|p| {
            procfs::is_alive(&env.proc_root, p, &env.boot_id)
                && procfs::read_stat(&env.proc_root, p.pid).is_some_and(|s| s.state != 'T')
        });
        if !pending || std::time::Instant::now() >= until {
            return;
        }
        // `Fault::apply` runs off the async workers (the engine calls it on the blocking
        // pool; the CLI on its own thread), and this wait is bounded by STOP_SETTLE.
        #[allow(clippy::disallowed_methods)]
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes() {
        assert_eq!("one".parse::<Mode>().unwrap(), Mode::One);
        assert_eq!("ALL".parse::<Mode>().unwrap(), Mode::All);
        assert_eq!("3".parse::<Mode>().unwrap(), Mode::Count(3));
        assert_eq!("count:2".parse::<Mode>().unwrap(), Mode::Count(2));
        assert_eq!("50%".parse::<Mode>().unwrap(), Mode::Percent(50.0));
        assert_eq!("percent:10".parse::<Mode>().unwrap(), Mode::Percent(10.0));
        assert!("0".parse::<Mode>().is_err());
        assert!("120%".parse::<Mode>().is_err());
        assert!("some".parse::<Mode>().is_err());
        assert_eq!(Mode::Percent(50.0).pick_count(3), 2);
        assert_eq!(Mode::Count(5).pick_count(3), 3);
        assert_eq!(Mode::One.pick_count(0), 0);
    }
}
