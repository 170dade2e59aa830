//! The game engine: runs the plan's stages one after the other, each stage's drills
//! together (one per agent), through the agents' APIs; follows each drill by polling its
//! progress every `poll_interval` and reading its whole report when there is news
//! ([`Follow`]); declares an agent `unreachable` once it has answered nothing
//! for `unreachable_after` (its run ends there, the others go on; the agent's own fault
//! deadlines and journal still revert what it applied); and aborts the game — the kill
//! switch (`POST /v1/abort`) of every agent, then the aborted drills' final reports — on
//! the caller's cancellation (Ctrl-C), an `abort_when` condition, or `max_duration`.
//!
//! The preflight and the kill switch cover every agent, also those no step chose
//! (`not-selected` in the report): a game starts only when all its agents answer, and its
//! abort stops everything on all of them.
//!
//! ```text
//! preflight (GET /v1/drills on every agent; one failing: nothing starts)
//!   └─ stage 1 ── run(agent a) ─┐   POST /v1/drills → id; GET /v1/drills/{id}/progress every
//!               └ run(agent b) ─┤   poll_interval, GET /v1/drills/{id} when its events or
//!                               │   verdict changed; until a final verdict, or unreachable
//!   └─ stage 2 …                ┘
//! watchers: abort_when probes (every poll_interval), max_duration, the caller's token
//! abort: cancel every run → POST /v1/abort on every agent → read the drills' final reports
//! ```
//!
//! Everything runs as futures of the one task that calls [`run`]: nothing is spawned, so
//! nothing can outlive the game. Each agent's calls go over one kept-alive connection
//! ([`NodeClient`]).
//!
//! Why progress and not the report at every poll (docs/adr/0023): a running drill's report
//! grows by every probe round, so reading it every second costs the agent (building and
//! serialising it) and the runner (parsing it) in proportion to how long the drill has run,
//! times the number of agents; the progress is the same few bytes throughout. The report
//! read at the last news still holds every phase, fault and recovery event up to then, so a
//! run whose agent became unreachable keeps the evidence it had.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures::future::join_all;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::cast::Cast;
use super::client::{CallError, NodeClient};
use super::plan::{GameDay, ScenarioRef};
use super::report::{
    AgentResult, GAME_REPORT_VERSION, GameEvent, GameReport, GameVerdict, RunResult, RunStatus,
    judge,
};
use crate::drill::probe::{self, Clock};
use crate::drill::report::{DrillReport, Progress, Verdict};

/// How long the final reports of aborted drills are waited for after the kill switch.
const AFTER_ABORT: Duration = Duration::from_secs(15);

#[derive(Debug, Default)]
struct Reach {
    /// First failed call since the last answer (monotonic, Unix seconds).
    failing_since: Option<(Instant, f64)>,
    /// Declared unreachable at (Unix seconds).
    declared: Option<f64>,
    last_error: Option<String>,
}

struct Shared {
    clock: Clock,
    abort: CancellationToken,
    aborted_by: Mutex<Option<String>>,
    events: Mutex<Vec<GameEvent>>,
    reach: Mutex<BTreeMap<String, Reach>>,
    unreachable_after: Duration,
    poll: Duration,
    abort_verdicts: Vec<Verdict>,
    abort_on_unreachable: bool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Shared {
    fn event(&self, agent: Option<&str>, kind: &str, name: &str, ok: Option<bool>, detail: String) {
        lock(&self.events).push(GameEvent {
            at: self.clock.now(),
            agent: agent.map(str::to_owned),
            kind: kind.to_owned(),
            name: name.to_owned(),
            ok,
            detail,
        });
    }

    /// Aborts the game (the first reason wins).
    fn abort(&self, reason: String) {
        {
            let mut by = lock(&self.aborted_by);
            if by.is_some() {
                return;
            }
            tracing::warn!(reason = %reason, "game day aborted");
            *by = Some(reason.clone());
        }
        self.event(None, "abort", "game", Some(false), reason);
        self.abort.cancel();
    }

    fn answered(&self, agent: &str) {
        let mut r = lock(&self.reach);
        let e = r.entry(agent.to_owned()).or_default();
        if e.declared.is_none() {
            e.failing_since = None;
        }
    }

    /// Records a failed call; returns `Some(since)` once the agent is declared unreachable.
    fn failed(&self, agent: &str, err: &CallError) -> Option<f64> {
        let newly = {
            let mut r = lock(&self.reach);
            let e = r.entry(agent.to_owned()).or_default();
            e.last_error = Some(err.to_string());
            if let Some(d) = e.declared {
                return Some(e.failing_since.map_or(d, |(_, u)| u));
            }
            let (t, since) = *e
                .failing_since
                .get_or_insert((Instant::now(), self.clock.now()));
            if t.elapsed() < self.unreachable_after {
                return None;
            }
            e.declared = Some(self.clock.now());
            since
        };
        self.event(
            Some(agent),
            "unreachable",
            agent,
            Some(false),
            format!(
                "no answer since +{:.3} s (unreachable_after {}): {err}",
                self.clock.now() - newly,
                humantime::format_duration(self.unreachable_after)
            ),
        );
        if self.abort_on_unreachable {
            self.abort(format!(
                "agent {agent} is unreachable (abort_when.unreachable)"
            ));
        }
        Some(newly)
    }

    fn declared(&self, agent: &str) -> bool {
        lock(&self.reach)
            .get(agent)
            .is_some_and(|r| r.declared.is_some())
    }
}

/// Runs a resolved game day cast on `clients` (one per agent found or listed); `cancel` is
/// the caller's abort (Ctrl-C). Returns the judged report; the caller renders it and picks
/// the exit code.
pub async fn run(
    game: &GameDay,
    cast: &Cast,
    clients: &[NodeClient],
    cancel: CancellationToken,
) -> GameReport {
    let f = &game.file;
    let shared = Arc::new(Shared {
        clock: Clock::new(),
        abort: CancellationToken::new(),
        aborted_by: Mutex::new(None),
        events: Mutex::new(Vec::new()),
        reach: Mutex::new(BTreeMap::new()),
        unreachable_after: f.unreachable_after.0,
        poll: f.poll_interval.0,
        abort_verdicts: f.abort_when.verdicts.clone(),
        abort_on_unreachable: f.abort_when.unreachable,
    });
    let started_at = shared.clock.now();
    shared.event(
        None,
        "game-start",
        &f.name,
        None,
        format!("{} agents, {} stages", clients.len(), cast.stages.len()),
    );
    let by_name: BTreeMap<&str, &NodeClient> = clients.iter().map(|c| (c.name(), c)).collect();
    let mut runs: Vec<RunResult> = cast
        .stages
        .iter()
        .flat_map(|s| {
            s.steps.iter().flat_map(move |(sc, agents)| {
                agents
                    .iter()
                    .map(move |a| RunResult::new(&s.name, a, sc.name()))
            })
        })
        .collect();

    // Preflight: every agent answers and accepts the token, or nothing starts.
    let checks = join_all(
        clients
            .iter()
            .map(|c| async move { (c.name(), c.preflight().await) }),
    )
    .await;
    let failed: Vec<String> = checks
        .into_iter()
        .filter_map(|(n, r)| r.err().map(|e| format!("{n}: {e}")))
        .collect();
    let mut kill_switch: BTreeMap<String, String> = BTreeMap::new();
    if failed.is_empty() {
        let game_fut = stages(cast, &by_name, &shared, &mut runs);
        let watch = watchers(game, &shared, cancel.clone());
        tokio::select! {
            () = game_fut => {}
            () = watch => {}
        }
        if shared.abort.is_cancelled() {
            kill_switch = kill_all(clients, &shared).await;
            finish_aborted(&by_name, &shared, &mut runs).await;
        }
    } else {
        let reason = format!("agents did not pass the preflight: {}", failed.join("; "));
        shared.event(None, "preflight", &f.name, Some(false), reason.clone());
        for r in &mut runs {
            r.error = Some("not started: the preflight failed".into());
        }
        *lock(&shared.aborted_by) = Some(reason);
    }
    let finished_at = shared.clock.now();
    shared.event(None, "game-end", &f.name, None, String::new());
    let reach = std::mem::take(&mut *lock(&shared.reach));
    let agents = clients
        .iter()
        .map(|c| {
            let r = reach.get(c.name());
            AgentResult {
                name: c.name().to_owned(),
                url: c.url().to_owned(),
                outcome: String::new(),
                unreachable_since: r
                    .filter(|r| r.declared.is_some())
                    .and_then(|r| r.failing_since.map(|(_, u)| u)),
                declared_unreachable_at: r.and_then(|r| r.declared),
                rto_seconds: None,
                rpo_seconds: None,
                kill_switch: kill_switch.get(c.name()).cloned(),
            }
        })
        .collect();
    let mut report = GameReport {
        version: GAME_REPORT_VERSION,
        name: f.name.clone(),
        description: f.description.clone(),
        source: game.source.clone(),
        started_at,
        finished_at,
        verdict: GameVerdict::Failed,
        seed: cast.seed,
        discovery: None,
        selections: cast.selections.clone(),
        reason: String::new(),
        aborted_by: lock(&shared.aborted_by).clone(),
        rto_seconds: None,
        rpo_seconds: None,
        objectives: Vec::new(),
        agents,
        runs,
        timeline: std::mem::take(&mut *lock(&shared.events)),
    };
    report.merge_drill_events();
    judge(
        &mut report,
        f.objectives.rto.map(|d| d.0.as_secs_f64()),
        f.objectives.rpo.map(|d| d.0.as_secs_f64()),
    );
    report
}

/// The plan, stage by stage; returns when it is done or the game was aborted.
async fn stages(
    cast: &Cast,
    clients: &BTreeMap<&str, &NodeClient>,
    shared: &Arc<Shared>,
    runs: &mut [RunResult],
) {
    let mut idx = 0;
    for stage in &cast.stages {
        let n: usize = stage.steps.iter().map(|(_, a)| a.len()).sum();
        let slice = &mut runs[idx..idx + n];
        idx += n;
        if shared.abort.is_cancelled() {
            for r in slice.iter_mut() {
                r.error = Some("not started: the game was aborted".into());
            }
            continue;
        }
        shared.event(None, "stage-start", &stage.name, None, String::new());
        let scenarios: Vec<&ScenarioRef> = stage
            .steps
            .iter()
            .flat_map(|(sc, agents)| agents.iter().map(move |_| sc))
            .collect();
        join_all(slice.iter_mut().zip(scenarios).map(|(r, sc)| {
            let client = clients.get(r.agent.as_str()).copied();
            async move {
                match client {
                    Some(c) => one_run(c, sc, shared, r).await,
                    None => r.error = Some(format!("no agent {}", r.agent)),
                }
            }
        }))
        .await;
        shared.event(None, "stage-end", &stage.name, None, String::new());
    }
}

/// One drill on one agent, from start to a final verdict, unreachable, or the abort.
async fn one_run(c: &NodeClient, sc: &ScenarioRef, shared: &Shared, r: &mut RunResult) {
    let agent = c.name().to_owned();
    if shared.declared(&agent) {
        r.error = Some("not started: the agent was already unreachable".into());
        return;
    }
    // Start: an agent that does not answer is retried until it counts as unreachable.
    let id = loop {
        let attempt = tokio::select! {
            () = shared.abort.cancelled() => {
                r.error = Some("not started: the game was aborted".into());
                return;
            }
            a = c.start(sc) => a,
        };
        match attempt {
            Ok(id) => {
                shared.answered(&agent);
                break id;
            }
            Err(e) if e.is_unreachable() => {
                if let Some(since) = shared.failed(&agent, &e) {
                    r.status = RunStatus::Unreachable;
                    r.unreachable_since = Some(since);
                    r.error = Some(e.to_string());
                    return;
                }
            }
            Err(e) => {
                shared.answered(&agent);
                shared.event(
                    Some(&agent),
                    "drill-start",
                    sc.name(),
                    Some(false),
                    e.to_string(),
                );
                r.status = RunStatus::StartFailed;
                r.error = Some(e.to_string());
                return;
            }
        }
        if sleep_or_abort(shared, shared.poll).await {
            r.error = Some("not started: the game was aborted".into());
            return;
        }
    };
    shared.event(
        Some(&agent),
        "drill-start",
        sc.name(),
        Some(true),
        format!("drill {id}"),
    );
    r.drill_id = Some(id.clone());
    r.status = RunStatus::Running;
    let mut follow = Follow::default();
    loop {
        if sleep_or_abort(shared, shared.poll).await {
            return;
        }
        let got = tokio::select! {
            () = shared.abort.cancelled() => return,
            g = follow.poll(c, &id) => g,
        };
        match got {
            Ok(None) => shared.answered(&agent),
            Ok(Some(rep)) => {
                shared.answered(&agent);
                let verdict = rep.verdict;
                r.set_report(rep);
                if verdict != Verdict::Running {
                    r.status = RunStatus::Finished;
                    shared.event(
                        Some(&agent),
                        "drill-end",
                        sc.name(),
                        Some(verdict == Verdict::Passed),
                        format!("drill {id}: {}", verdict.as_str()),
                    );
                    if shared.abort_verdicts.contains(&verdict) {
                        shared.abort(format!(
                            "{} on {agent} ended {} (abort_when.verdicts)",
                            sc.name(),
                            verdict.as_str()
                        ));
                    }
                    return;
                }
            }
            Err(e) => {
                // An answer that is not the report (the agent lost the drill, a proxy's 502)
                // counts like silence, so a run never waits forever; the answer is the reason.
                let since = shared.failed(&agent, &e);
                if let Some(since) = since {
                    r.status = RunStatus::Unreachable;
                    r.unreachable_since = Some(since);
                    r.error = Some(e.to_string());
                    return;
                }
            }
        }
    }
}

/// How one drill is read back: its progress at every poll and its whole report only when
/// there is news — the first time, when the number of (non-routine) events changed, when
/// the verdict is final. From an agent older than the progress route (404), the whole
/// report every time.
#[derive(Debug, Default)]
struct Follow {
    /// The agent answered 404 to the progress route: read the whole report instead.
    reports_only: bool,
    /// `events` of the last report read.
    seen: Option<usize>,
}

impl Follow {
    /// One poll: `Ok(Some(report))` when there was news, `Ok(None)` when the drill runs on
    /// with nothing new.
    async fn poll(&mut self, c: &NodeClient, id: &str) -> Result<Option<DrillReport>, CallError> {
        if !self.reports_only {
            match c.progress(id).await {
                Ok(p) if p.verdict == Verdict::Running && self.seen == Some(p.events) => {
                    return Ok(None);
                }
                Ok(_) => {}
                Err(CallError::Status { status: 404, .. }) => self.reports_only = true,
                Err(e) => return Err(e),
            }
        }
        let rep = c.drill(id).await?;
        self.seen = Some(Progress::of(&rep).events);
        Ok(Some(rep))
    }
}

/// Sleeps `d`; true when the game was aborted meanwhile.
async fn sleep_or_abort(shared: &Shared, d: Duration) -> bool {
    tokio::select! {
        () = shared.abort.cancelled() => true,
        () = tokio::time::sleep(d) => false,
    }
}

/// The game-wide conditions: the caller's cancellation, `max_duration`, the abort probes.
/// Never returns before the game is aborted; after that, returns at once.
async fn watchers(game: &GameDay, shared: &Arc<Shared>, cancel: CancellationToken) {
    let f = &game.file;
    let probes: Vec<Box<dyn probe::Probe>> = f
        .abort_when
        .probes
        .iter()
        .map(|p| probe::build(p, None))
        .collect();
    let deadline = Instant::now() + f.max_duration.0;
    loop {
        tokio::select! {
            () = shared.abort.cancelled() => return,
            () = cancel.cancelled() => {
                shared.abort("interrupted (SIGINT/SIGTERM): every agent's kill switch is pulled".into());
                return;
            }
            () = tokio::time::sleep_until(deadline) => {
                shared.abort(format!("max_duration ({}) passed", f.max_duration));
                return;
            }
            () = tokio::time::sleep(shared.poll) => {}
        }
        for p in &probes {
            let out = tokio::select! {
                () = shared.abort.cancelled() => return,
                o = p.probe(&shared.clock) => o,
            };
            if !out.ok {
                shared.event(None, "probe", &out.probe, Some(false), out.detail.clone());
                shared.abort(format!(
                    "abort_when probe {} failed: {}",
                    out.probe, out.detail
                ));
                return;
            }
        }
    }
}

/// `POST /v1/abort` on every agent at once; what each answered.
async fn kill_all(clients: &[NodeClient], shared: &Shared) -> BTreeMap<String, String> {
    let answers = join_all(clients.iter().map(|c| async move {
        let res = c.abort_all().await;
        (c.name().to_owned(), res)
    }))
    .await;
    let mut out = BTreeMap::new();
    for (name, res) in answers {
        let (ok, text) = match res {
            Ok(v) => (
                true,
                format!(
                    "{} drills aborted, {} faults reverted",
                    v.get("drills_aborted").map_or(0, count),
                    v.get("faults_reverted").map_or(0, count)
                ),
            ),
            Err(e) => (false, format!("failed: {e}")),
        };
        shared.event(Some(&name), "kill-switch", &name, Some(ok), text.clone());
        out.insert(name, text);
    }
    out
}

fn count(v: &serde_json::Value) -> usize {
    match v {
        serde_json::Value::Array(a) => a.len(),
        serde_json::Value::Number(n) => n.as_u64().map_or(0, |n| usize::try_from(n).unwrap_or(0)),
        _ => 0,
    }
}

/// After the kill switch: reads the final report of every drill that was running, for a
/// bounded time.
async fn finish_aborted(
    clients: &BTreeMap<&str, &NodeClient>,
    shared: &Shared,
    runs: &mut [RunResult],
) {
    let deadline = Instant::now() + AFTER_ABORT;
    join_all(
        runs.iter_mut()
            .filter(|r| r.status == RunStatus::Running)
            .filter_map(|r| {
                let c = clients.get(r.agent.as_str()).copied()?;
                let id = r.drill_id.clone()?;
                Some(async move {
                    let mut follow = Follow::default();
                    while Instant::now() < deadline {
                        if let Ok(Some(rep)) = follow.poll(c, &id).await
                            && rep.verdict != Verdict::Running
                        {
                            let v = rep.verdict;
                            r.set_report(rep);
                            r.status = RunStatus::Finished;
                            shared.event(
                                Some(c.name()),
                                "drill-end",
                                &r.scenario,
                                Some(false),
                                format!("drill {id}: {} (after the kill switch)", v.as_str()),
                            );
                            return;
                        }
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                    r.error = Some(format!(
                        "no final report within {} of the kill switch",
                        humantime::format_duration(AFTER_ABORT)
                    ));
                })
            }),
    )
    .await;
}

#[cfg(test)]
mod tests;
