//! The engine: owns the active faults and is the only way to start one.
//!
//! ## Inject
//! cap check (`max_concurrent`) → `plan` → every target through the guards
//! ([`crate::guard::check_plan`]) → journal write + fsync (`planned`) → `apply` → journal
//! write (`applied`, final record) → `check` → a deadline task (owned by the engine's
//! [`TaskTracker`]) reverts it when its time is up. If `apply` fails, the plan's record is
//! reverted and the entry removed: nothing stays half-applied. If the final journal write
//! fails, the fault is reverted at once (it could not be recovered after a crash).
//!
//! ## Check
//! Right after apply the engine asks the kind's [`crate::Fault::check`] whether the fault
//! is in effect, looking at the system. A fault the check does not see in effect (or
//! cannot look at) is reverted and the inject fails with [`FaultError::NotInEffect`]; a
//! partial effect (some targets gone already) is kept and reported. [`Engine::check`],
//! [`Engine::check_all`] (`GET /v1/faults`) and [`check_journaled`] (`faultline fault
//! list`) check again later. Each check is an audit event (`Check`: ok when in effect,
//! an error otherwise) and its [`CheckReport`] is listed with the fault.
//!
//! ## Revert
//! Whoever removes a fault from the active map reverts it — the deadline task, [`Engine::abort`],
//! [`Engine::abort_all`] or [`Engine::shutdown`] — so a fault is reverted once. Revert runs
//! the kind's `revert`, then ends any helper still alive, then removes the journal entry. A
//! failed revert keeps the entry: `faultline fault revert` or the next start retries it.
//!
//! ## Kill switch
//! [`Engine::abort_all`] reverts every active fault concurrently (one blocking task each)
//! and bumps an epoch: an inject whose apply was in flight when the switch was pulled
//! reverts itself instead of becoming active, and the switch waits for those too, so that
//! nothing it could see is still in effect when it returns.
//!
//! ## Recovery
//! [`recover`] (also [`Engine::recover`]) reverts whatever the journal holds whose owning
//! agent process is dead (pid + start time), and reports each entry.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, info, warn};

use crate::audit::{Audit, AuditAction};
use crate::config::ChaosConfig;
use crate::error::{FaultError, Guard};
use crate::fault::{
    Context, Effect, EffectState, Env, FaultId, Plan, Requester, RevertRecord, from_unix_millis,
    unix_millis,
};
use crate::guard;
use crate::helper;
use crate::journal::{JOURNAL_VERSION, Journal, JournalEntry, Phase};
use crate::procfs::{self, ProcessIdentity};
use crate::spec::FaultSpec;

/// An active (or just finished, for instant kinds) fault, as listed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ActiveFault {
    /// Its id.
    pub id: FaultId,
    /// Its kind.
    pub kind: String,
    /// What was asked.
    pub spec: FaultSpec,
    /// Who asked.
    pub requester: Requester,
    /// Resolved targets.
    pub targets: Vec<String>,
    /// When it reverts, ms since the epoch.
    pub deadline_unix_ms: u64,
    /// True when the fault was over once applied (nothing held, nothing to revert).
    pub instant: bool,
    /// The revert record.
    pub record: RevertRecord,
    /// The latest check: whether the fault was seen in effect, and when.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub check: Option<CheckReport>,
}

/// The outcome of one [`crate::Fault::check`], as listed and audited.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CheckReport {
    /// When the fault was checked, ms since the epoch.
    pub at_unix_ms: u64,
    /// What the check saw; absent when it could not look.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub effect: Option<Effect>,
    /// Why the check could not look.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl CheckReport {
    fn of(r: &Result<Effect, FaultError>) -> Self {
        let (effect, error) = match r {
            Ok(e) => (Some(e.clone()), None),
            Err(e) => (None, Some(e.to_string())),
        };
        CheckReport {
            at_unix_ms: unix_millis(SystemTime::now()),
            effect,
            error,
        }
    }

    /// Whether the check saw the fault in effect, fully or partly.
    pub fn in_effect(&self) -> bool {
        self.effect
            .as_ref()
            .is_some_and(|e| e.state != EffectState::NotInEffect)
    }
}

impl std::fmt::Display for CheckReport {
    /// `in-effect: <what was seen>`, `partial: …`, `not-in-effect: …` or `check failed: …`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (&self.effect, &self.error) {
            (Some(e), _) => {
                let state = match e.state {
                    EffectState::InEffect => "in-effect",
                    EffectState::Partial => "partial",
                    EffectState::NotInEffect => "not-in-effect",
                };
                write!(f, "{state}: {}", e.detail)
            }
            (None, Some(err)) => write!(f, "check failed: {err}"),
            (None, None) => f.write_str("not checked"),
        }
    }
}

impl ActiveFault {
    fn from_entry(e: &JournalEntry, instant: bool, check: Option<CheckReport>) -> Self {
        ActiveFault {
            id: e.id.clone(),
            kind: e.spec.kind().to_owned(),
            spec: e.spec.clone(),
            requester: e.requester.clone(),
            targets: e.targets.iter().map(ToString::to_string).collect(),
            deadline_unix_ms: e.deadline_unix_ms,
            instant,
            record: e.record.clone(),
            check,
        }
    }
}

struct Active {
    entry: JournalEntry,
    stop_deadline: CancellationToken,
    last_check: Option<CheckReport>,
}

#[derive(Default)]
struct State {
    active: BTreeMap<FaultId, Active>,
    /// Faults taken out of `active` whose revert is still running.
    reverting: BTreeSet<FaultId>,
    pending: usize,
    /// Injects not finished yet, by the epoch they started in (the kill switch waits for
    /// those of earlier epochs: they revert themselves instead of becoming active).
    in_flight: BTreeMap<u64, usize>,
    epoch: u64,
    closed: bool,
}

struct Inner {
    config: Arc<ChaosConfig>,
    env: Arc<Env>,
    journal: Journal,
    audit: Audit,
    state: Mutex<State>,
    tracker: TaskTracker,
    changed: watch::Sender<u64>,
}

/// The fault engine. Cheap to clone (shared state).
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("journal", &self.inner.journal.dir())
            .finish_non_exhaustive()
    }
}

/// Releases a reserved slot of the concurrency cap, and the inject's place among those in
/// flight in its epoch (then tells the waiters).
struct Slot<'a>(&'a Inner, u64);

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        {
            let mut st = lock(&self.0.state);
            st.pending = st.pending.saturating_sub(1);
            if let Some(n) = st.in_flight.get_mut(&self.1) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    st.in_flight.remove(&self.1);
                }
            }
        }
        self.0.changed.send_modify(|n| *n += 1);
    }
}

fn lock(m: &Mutex<State>) -> MutexGuard<'_, State> {
    // A panic while holding the lock cannot leave the map inconsistent (single inserts and
    // removes), so recover the guard rather than give up on reverting.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn join_error(e: tokio::task::JoinError) -> FaultError {
    FaultError::Other(format!("fault operation task failed: {e}"))
}

impl Engine {
    /// An engine journaling in `journal`, checking against `config`, in `env`.
    pub fn new(config: ChaosConfig, env: Env, journal: Journal, audit: Audit) -> Self {
        let (changed, _) = watch::channel(0);
        Engine {
            inner: Arc::new(Inner {
                config: Arc::new(config),
                env: Arc::new(env),
                journal,
                audit,
                state: Mutex::new(State::default()),
                tracker: TaskTracker::new(),
                changed,
            }),
        }
    }

    /// The audit sink (subscribe to it for OTLP export).
    pub fn audit(&self) -> &Audit {
        &self.inner.audit
    }

    /// The journal.
    pub fn journal(&self) -> &Journal {
        &self.inner.journal
    }

    /// The guard configuration.
    pub fn config(&self) -> &ChaosConfig {
        &self.inner.config
    }

    /// Whether the process that journaled `entry` still runs (pid + start time + boot).
    pub fn owner_alive(&self, entry: &JournalEntry) -> bool {
        entry.owner.pid != 0
            && procfs::is_alive(
                &self.inner.env.proc_root,
                &entry.owner,
                &self.inner.env.boot_id,
            )
    }

    /// Checks a journaled fault on the system, as `requester` (`faultline fault list` in a
    /// process that does not hold the fault). Blocking.
    pub fn check_journaled(&self, entry: &JournalEntry, requester: Requester) -> CheckReport {
        check_journaled(
            entry,
            &self.inner.config,
            &self.inner.env,
            &self.inner.audit,
            requester,
        )
    }

    /// Reverts the journaled faults `select` picks, also those a live process holds
    /// (`faultline fault revert`, the kill switch of a process that holds none). Blocking.
    pub fn revert_journaled(&self, select: impl Fn(&FaultId) -> bool) -> Vec<RecoveryReport> {
        recover_matching(
            &self.inner.journal,
            &self.inner.config,
            &self.inner.env,
            &self.inner.audit,
            true,
            select,
        )
    }

    fn context(&self, id: FaultId, requester: Requester, deadline: SystemTime) -> Context {
        Context {
            id,
            requester,
            deadline,
            config: self.inner.config.clone(),
            env: self.inner.env.clone(),
        }
    }

    /// Reverts what the journal holds from dead agents; see [`recover`].
    pub async fn recover(&self) -> Vec<RecoveryReport> {
        let (journal, config, env, audit) = (
            self.inner.journal.clone(),
            self.inner.config.clone(),
            self.inner.env.clone(),
            self.inner.audit.clone(),
        );
        tokio::task::spawn_blocking(move || recover(&journal, &config, &env, &audit, false))
            .await
            .unwrap_or_else(|e| vec![RecoveryReport::failed_task(&e)])
    }

    /// Plans `spec` and checks it against the guards, without applying anything
    /// (`--dry-run`).
    pub async fn plan(&self, spec: FaultSpec, requester: Requester) -> Result<Plan, FaultError> {
        let id = FaultId::new(spec.kind());
        let ctx = self.context(id, requester, SystemTime::now() + spec.duration());
        let audit = self.inner.audit.clone();
        tokio::task::spawn_blocking(move || {
            let r = plan_checked(&spec, &ctx);
            audit_plan(&audit, &spec, &ctx, &r);
            r
        })
        .await
        .map_err(join_error)?
    }

    /// Plans, guards, journals and applies `spec`; the fault reverts at its deadline unless
    /// aborted first.
    pub async fn inject(
        &self,
        spec: FaultSpec,
        requester: Requester,
    ) -> Result<ActiveFault, FaultError> {
        let kind = spec.kind();
        let id = FaultId::new(kind);
        let epoch = {
            let mut st = lock(&self.inner.state);
            let refuse = if st.closed {
                Some(FaultError::Other(
                    "the fault engine is shutting down; no new faults".into(),
                ))
            } else if st.active.len() + st.pending >= self.inner.config.max_concurrent {
                Some(FaultError::refused(
                    Guard::MaxConcurrent,
                    format!(
                        "{} faults are active or starting; chaos.max_concurrent is {}",
                        st.active.len() + st.pending,
                        self.inner.config.max_concurrent
                    ),
                ))
            } else {
                None
            };
            if let Some(e) = refuse {
                drop(st);
                self.inner.audit.record(
                    AuditAction::Refuse,
                    &id,
                    kind,
                    &requester,
                    Vec::new(),
                    0,
                    Err(e.to_string()),
                );
                return Err(e);
            }
            st.pending += 1;
            let epoch = st.epoch;
            *st.in_flight.entry(epoch).or_default() += 1;
            epoch
        };
        let _slot = Slot(&self.inner, epoch);
        let duration = spec.duration();
        let ctx = self.context(id.clone(), requester.clone(), SystemTime::now() + duration);
        let inner = self.inner.clone();
        let started =
            tokio::task::spawn_blocking(move || inject_blocking(&inner, spec, ctx, epoch))
                .await
                .map_err(join_error)??;
        let Some((entry, instant, check)) = started else {
            return Err(FaultError::Other(format!(
                "fault {id} was reverted at once: the kill switch was pulled while it was being applied"
            )));
        };
        let info = ActiveFault::from_entry(&entry, instant, Some(check));
        if !instant {
            self.spawn_deadline(&entry, duration);
        }
        Ok(info)
    }

    fn spawn_deadline(&self, entry: &JournalEntry, duration: Duration) {
        let stop = lock(&self.inner.state)
            .active
            .get(&entry.id)
            .map(|a| a.stop_deadline.clone());
        let Some(stop) = stop else { return };
        let engine = self.clone();
        let id = entry.id.clone();
        let watch_every = entry.spec.fault().watch_every();
        let span = tracing::info_span!("fault_deadline", fault_id = %id);
        self.inner.tracker.spawn(
            async move {
                let deadline = tokio::time::sleep(duration);
                tokio::pin!(deadline);
                let mut last_error = None;
                loop {
                    let tick = async {
                        match watch_every {
                            Some(every) => tokio::time::sleep(every).await,
                            None => std::future::pending().await,
                        }
                    };
                    tokio::select! {
                        () = &mut deadline => {
                            if let Err(e) = engine.revert_active(&id, Requester::agent("deadline")).await {
                                warn!(fault_id = %id, error = %e, "deadline revert failed; the journal keeps the fault for `faultline fault revert` and the next start");
                            }
                            return;
                        }
                        () = stop.cancelled() => return,
                        () = tick => engine.watch_active(&id, &mut last_error).await,
                    }
                }
            }
            .instrument(span),
        );
    }

    /// One [`Fault::watch`] of an active fault; a change is audited (`Adjust`), and so is a
    /// failed check — once per distinct error (`last_error`), not on every tick.
    async fn watch_active(&self, id: &FaultId, last_error: &mut Option<String>) {
        let Some(entry) = lock(&self.inner.state)
            .active
            .get(id)
            .map(|a| a.entry.clone())
        else {
            return;
        };
        let requester = Requester::agent("guard-watch");
        let ctx = self.context(
            id.clone(),
            requester.clone(),
            from_unix_millis(entry.deadline_unix_ms),
        );
        let e2 = entry.clone();
        let r = tokio::task::spawn_blocking(move || e2.spec.fault().watch(&e2.record, &ctx))
            .await
            .map_err(join_error)
            .and_then(|r| r);
        let outcome = match r {
            Ok(None) => {
                *last_error = None;
                return;
            }
            Ok(Some(change)) => {
                *last_error = None;
                warn!(fault_id = %id, change = %change, "active fault adjusted to hold its guard");
                Ok(change)
            }
            Err(e) => {
                let e = e.to_string();
                if last_error.as_deref() == Some(e.as_str()) {
                    return;
                }
                *last_error = Some(e.clone());
                warn!(fault_id = %id, error = %e, "cannot check the active fault against its guards");
                Err(e)
            }
        };
        self.inner.audit.record(
            AuditAction::Adjust,
            id,
            entry.spec.kind(),
            &requester,
            entry.targets.iter().map(ToString::to_string).collect(),
            entry.deadline_unix_ms,
            outcome,
        );
    }

    /// Reverts active fault `id` now.
    pub async fn abort(&self, id: &FaultId, requester: Requester) -> Result<(), FaultError> {
        self.revert_active(id, requester).await
    }

    /// The kill switch: reverts every active fault concurrently; returns each outcome.
    pub async fn abort_all(&self, requester: Requester) -> Vec<(FaultId, Result<(), FaultError>)> {
        let mut rx = self.inner.changed.subscribe();
        let (ids, in_flight, pulled): (Vec<FaultId>, Vec<FaultId>, u64) = {
            let mut st = lock(&self.inner.state);
            let pulled = st.epoch;
            st.epoch += 1;
            (
                st.active.keys().cloned().collect(),
                st.reverting.iter().cloned().collect(),
                pulled,
            )
        };
        let mut set = JoinSet::new();
        // A revert already under way (deadline, a drill's own abort) is waited for, so that
        // every fault is back to normal when the kill switch answers.
        for id in in_flight {
            let engine = self.clone();
            set.spawn(async move {
                engine.wait(&id).await;
                (id, Ok(()))
            });
        }
        for id in ids {
            let engine = self.clone();
            let requester = requester.clone();
            set.spawn(async move {
                let r = match engine.revert_active(&id, requester).await {
                    // Active when the kill switch looked, gone now: another caller (a
                    // drill's own abort, its deadline) reverted it in between.
                    Err(FaultError::UnknownId(_)) => Ok(()),
                    r => r,
                };
                (id, r)
            });
        }
        let mut out = Vec::new();
        while let Some(joined) = set.join_next().await {
            match joined {
                Ok(v) => out.push(v),
                Err(e) => warn!(error = %e, "a kill-switch revert task failed"),
            }
        }
        // An inject whose apply was under way when the switch was pulled reverts itself
        // when it sees the new epoch: wait for it too, so that nothing is left in effect
        // when the kill switch answers.
        loop {
            if lock(&self.inner.state)
                .in_flight
                .range(..=pulled)
                .next()
                .is_none()
            {
                break;
            }
            if rx.changed().await.is_err() {
                break;
            }
        }
        out
    }

    /// Refuses new faults, reverts all active ones and waits for the engine's tasks.
    pub async fn shutdown(&self) -> Vec<(FaultId, Result<(), FaultError>)> {
        lock(&self.inner.state).closed = true;
        let out = self.abort_all(Requester::agent("shutdown")).await;
        self.inner.tracker.close();
        self.inner.tracker.wait().await;
        out
    }

    /// Checks active fault `id` now (on the system, not in memory), audits the check and
    /// keeps it as the fault's latest.
    pub async fn check(
        &self,
        id: &FaultId,
        requester: Requester,
    ) -> Result<CheckReport, FaultError> {
        let entry = lock(&self.inner.state)
            .active
            .get(id)
            .map(|a| a.entry.clone());
        let entry = entry.ok_or_else(|| FaultError::UnknownId(id.to_string()))?;
        let ctx = self.context(
            entry.id.clone(),
            requester,
            from_unix_millis(entry.deadline_unix_ms),
        );
        let audit = self.inner.audit.clone();
        let report = tokio::task::spawn_blocking(move || check_entry(&entry, &ctx, &audit))
            .await
            .map_err(join_error)?;
        if let Some(a) = lock(&self.inner.state).active.get_mut(id) {
            a.last_check = Some(report.clone());
        }
        Ok(report)
    }

    /// Checks every active fault now (see [`Engine::check`]) and lists them with the
    /// result: what `GET /v1/faults` answers. A fault reverted in between is left out.
    pub async fn check_all(&self, requester: Requester) -> Vec<ActiveFault> {
        let ids: Vec<FaultId> = lock(&self.inner.state).active.keys().cloned().collect();
        for id in ids {
            if let Err(e) = self.check(&id, requester.clone()).await
                && !matches!(e, FaultError::UnknownId(_))
            {
                warn!(fault_id = %id, error = %e, "cannot check the active fault");
            }
        }
        self.list()
    }

    /// The active faults, each with its latest check.
    pub fn list(&self) -> Vec<ActiveFault> {
        lock(&self.inner.state)
            .active
            .values()
            .map(|a| ActiveFault::from_entry(&a.entry, false, a.last_check.clone()))
            .collect()
    }

    /// Waits until fault `id` is no longer active (reverted by deadline, abort or shutdown).
    pub async fn wait(&self, id: &FaultId) {
        let mut rx = self.inner.changed.subscribe();
        loop {
            {
                let st = lock(&self.inner.state);
                if !st.active.contains_key(id) && !st.reverting.contains(id) {
                    return;
                }
            }
            if rx.changed().await.is_err() {
                return;
            }
        }
    }

    async fn revert_active(&self, id: &FaultId, requester: Requester) -> Result<(), FaultError> {
        let active = {
            let mut st = lock(&self.inner.state);
            let active = st.active.remove(id);
            if active.is_some() {
                st.reverting.insert(id.clone());
            }
            active
        };
        let Some(active) = active else {
            // Another caller (deadline, drill abort) is reverting it: wait for that revert.
            if lock(&self.inner.state).reverting.contains(id) {
                self.wait(id).await;
                return Ok(());
            }
            return Err(FaultError::UnknownId(id.to_string()));
        };
        active.stop_deadline.cancel();
        let ctx = self.context(
            id.clone(),
            requester,
            from_unix_millis(active.entry.deadline_unix_ms),
        );
        let inner = self.inner.clone();
        let entry = active.entry;
        let r = tokio::task::spawn_blocking(move || {
            revert_entry(
                &inner.journal,
                &inner.audit,
                &entry,
                &ctx,
                AuditAction::Revert,
            )
        })
        .await
        .map_err(join_error)
        .and_then(|r| r);
        lock(&self.inner.state).reverting.remove(id);
        self.inner.changed.send_modify(|n| *n += 1);
        r
    }
}

/// Plans `spec` and runs the guards over the plan.
fn plan_checked(spec: &FaultSpec, ctx: &Context) -> Result<Plan, FaultError> {
    guard::check_duration(spec.kind(), spec.duration(), &ctx.config)?;
    let plan = spec.fault().plan(ctx)?;
    guard::check_plan(&plan, ctx)?;
    Ok(plan)
}

fn audit_plan(audit: &Audit, spec: &FaultSpec, ctx: &Context, r: &Result<Plan, FaultError>) {
    let (action, targets, outcome) = match r {
        Ok(p) => (
            AuditAction::Plan,
            p.targets.iter().map(ToString::to_string).collect(),
            Ok("planned".to_owned()),
        ),
        Err(e) => (AuditAction::Refuse, Vec::new(), Err(e.to_string())),
    };
    audit.record(
        action,
        &ctx.id,
        spec.kind(),
        &ctx.requester,
        targets,
        unix_millis(ctx.deadline),
        outcome,
    );
}

/// Checks a journaled fault on the system ([`crate::Fault::check`]) and audits the check
/// (`Check` by `ctx.requester`: ok when seen in effect, an error otherwise).
fn check_entry(entry: &JournalEntry, ctx: &Context, audit: &Audit) -> CheckReport {
    let report = CheckReport::of(&entry.spec.fault().check(&entry.record, ctx));
    let summary = report.to_string();
    audit.record(
        AuditAction::Check,
        &entry.id,
        entry.spec.kind(),
        &ctx.requester,
        entry.targets.iter().map(ToString::to_string).collect(),
        entry.deadline_unix_ms,
        if report.in_effect() {
            Ok(summary)
        } else {
            Err(summary)
        },
    );
    report
}

/// [`check_entry`] for a journal entry outside an engine (`faultline fault list`), as
/// `requester`. Blocking.
pub fn check_journaled(
    entry: &JournalEntry,
    config: &Arc<ChaosConfig>,
    env: &Arc<Env>,
    audit: &Audit,
    requester: Requester,
) -> CheckReport {
    let ctx = Context {
        id: entry.id.clone(),
        requester,
        deadline: from_unix_millis(entry.deadline_unix_ms),
        config: config.clone(),
        env: env.clone(),
    };
    check_entry(entry, &ctx, audit)
}

/// The check right after apply: a fault not seen in effect is reverted (audited) and
/// becomes [`FaultError::NotInEffect`].
fn check_applied(
    inner: &Inner,
    entry: &JournalEntry,
    ctx: &Context,
) -> Result<CheckReport, FaultError> {
    let report = check_entry(entry, ctx, &inner.audit);
    if report.in_effect() {
        return Ok(report);
    }
    warn!(fault_id = %ctx.id, check = %report, "the fault is not in effect after apply; reverting it");
    if let Err(e) = revert_entry(
        &inner.journal,
        &inner.audit,
        entry,
        ctx,
        AuditAction::Revert,
    ) {
        warn!(fault_id = %ctx.id, error = %e, "reverting a fault that is not in effect failed; the journal keeps it");
    }
    Err(FaultError::NotInEffect {
        id: ctx.id.to_string(),
        kind: entry.spec.kind().to_owned(),
        detail: report.to_string(),
    })
}

/// The blocking part of inject. `Ok(None)`: applied but reverted at once (kill switch).
/// Otherwise the entry, whether the fault was instant, and the check after apply.
fn inject_blocking(
    inner: &Inner,
    spec: FaultSpec,
    mut ctx: Context,
    epoch: u64,
) -> Result<Option<(JournalEntry, bool, CheckReport)>, FaultError> {
    let audit = &inner.audit;
    let planned = plan_checked(&spec, &ctx);
    audit_plan(audit, &spec, &ctx, &planned);
    let plan = planned?;
    let targets: Vec<String> = plan.targets.iter().map(ToString::to_string).collect();
    let mut entry = JournalEntry {
        version: JOURNAL_VERSION,
        id: ctx.id.clone(),
        spec: spec.clone(),
        requester: ctx.requester.clone(),
        owner: inner.env.agent.clone(),
        created_unix_ms: unix_millis(SystemTime::now()),
        deadline_unix_ms: unix_millis(ctx.deadline),
        phase: Phase::Planned,
        targets: plan.targets.clone(),
        record: plan.record.clone(),
    };
    // Write-ahead: nothing is touched before the revert record is on disk.
    if let Err(e) = inner.journal.write(&entry) {
        let e = FaultError::from(e);
        audit.record(
            AuditAction::Apply,
            &ctx.id,
            spec.kind(),
            &ctx.requester,
            targets,
            entry.deadline_unix_ms,
            Err(e.to_string()),
        );
        return Err(e);
    }
    let fault = spec.fault();
    let applied = fault.apply(&plan, &ctx);
    // The deadline counts from the moment the fault is in effect.
    ctx.deadline = SystemTime::now() + spec.duration();
    entry.deadline_unix_ms = unix_millis(ctx.deadline);
    let record = match applied {
        Ok(r) => r,
        Err(e) => {
            audit.record(
                AuditAction::Apply,
                &ctx.id,
                spec.kind(),
                &ctx.requester,
                targets,
                entry.deadline_unix_ms,
                Err(e.to_string()),
            );
            // Undo whatever part was applied, from the provisional record.
            if let Err(re) = revert_entry(&inner.journal, audit, &entry, &ctx, AuditAction::Revert)
            {
                warn!(fault_id = %ctx.id, error = %re, "reverting a failed apply failed; the journal keeps it");
            }
            return Err(e);
        }
    };
    entry.record = record;
    entry.phase = Phase::Applied;
    audit.record(
        AuditAction::Apply,
        &ctx.id,
        spec.kind(),
        &ctx.requester,
        targets,
        entry.deadline_unix_ms,
        Ok("applied".into()),
    );
    if plan.instant {
        let check = check_applied(inner, &entry, &ctx)?;
        if let Err(e) = revert_entry(&inner.journal, audit, &entry, &ctx, AuditAction::Revert) {
            warn!(fault_id = %ctx.id, error = %e, "cannot close an instant fault's journal entry");
        }
        return Ok(Some((entry, true, check)));
    }
    if let Err(e) = inner.journal.write(&entry) {
        // Without the final record a crash could not be recovered: do not keep the fault.
        let e = FaultError::from(e);
        warn!(fault_id = %ctx.id, error = %e, "cannot journal the applied fault; reverting it now");
        let _ = revert_entry(&inner.journal, audit, &entry, &ctx, AuditAction::Revert);
        return Err(e);
    }
    // Journaled first, so a crash during the check is recovered like any applied fault.
    let check = check_applied(inner, &entry, &ctx)?;
    let mut st = lock(&inner.state);
    if st.epoch != epoch || st.closed {
        drop(st);
        let _ = revert_entry(&inner.journal, audit, &entry, &ctx, AuditAction::Revert);
        return Ok(None);
    }
    st.active.insert(
        entry.id.clone(),
        Active {
            entry: entry.clone(),
            stop_deadline: CancellationToken::new(),
            last_check: Some(check.clone()),
        },
    );
    Ok(Some((entry, false, check)))
}

/// Reverts one journaled fault: the kind's revert, then any helper still alive, then the
/// journal entry. Audited as `action`.
fn revert_entry(
    journal: &Journal,
    audit: &Audit,
    entry: &JournalEntry,
    ctx: &Context,
    action: AuditAction,
) -> Result<(), FaultError> {
    let r = entry
        .spec
        .fault()
        .revert(&entry.record, ctx)
        .and_then(|()| helper::end_all(&entry.record.helpers, &ctx.env))
        .and_then(|()| journal.remove(&entry.id).map_err(FaultError::from));
    audit.record(
        action,
        &entry.id,
        entry.spec.kind(),
        &ctx.requester,
        entry.targets.iter().map(ToString::to_string).collect(),
        entry.deadline_unix_ms,
        r.as_ref()
            .map(|()| "reverted".to_owned())
            .map_err(ToString::to_string),
    );
    r
}

/// What recovery did with one journal entry.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "kebab-case")]
pub enum RecoveryOutcome {
    /// Reverted and removed from the journal.
    Reverted,
    /// Revert failed; the entry stays for the next attempt.
    Failed {
        /// Why.
        error: String,
    },
    /// Unreadable: its helpers (if named) were ended and the file moved aside.
    Corrupt {
        /// Why it could not be read.
        error: String,
        /// Where the file went.
        moved_to: Option<String>,
    },
    /// Left alone: the agent process that applied it is alive and holds it.
    HeldByLiveAgent {
        /// That process.
        owner: ProcessIdentity,
    },
}

/// One entry's recovery.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RecoveryReport {
    /// The fault id (absent for an unreadable entry).
    pub id: Option<FaultId>,
    /// The kind, if known.
    pub kind: Option<String>,
    /// The journal file.
    pub path: String,
    /// Resolved targets, if known.
    pub targets: Vec<String>,
    /// What happened.
    pub outcome: RecoveryOutcome,
}

impl RecoveryReport {
    fn failed_task(e: &tokio::task::JoinError) -> Self {
        RecoveryReport {
            id: None,
            kind: None,
            path: String::new(),
            targets: Vec::new(),
            outcome: RecoveryOutcome::Failed {
                error: format!("recovery task failed: {e}"),
            },
        }
    }
}

/// Reverts every journaled fault whose owning agent is dead (all of them with `force`,
/// which `faultline fault revert --all` uses), reporting each entry. Never panics on a bad
/// entry.
pub fn recover(
    journal: &Journal,
    config: &Arc<ChaosConfig>,
    env: &Arc<Env>,
    audit: &Audit,
    force: bool,
) -> Vec<RecoveryReport> {
    recover_matching(journal, config, env, audit, force, |_| true)
}

/// [`recover`] restricted to the entries `select` accepts (`faultline fault revert ID`).
pub fn recover_matching(
    journal: &Journal,
    config: &Arc<ChaosConfig>,
    env: &Arc<Env>,
    audit: &Audit,
    force: bool,
    select: impl Fn(&FaultId) -> bool,
) -> Vec<RecoveryReport> {
    let entries = match journal.entries() {
        Ok(e) => e,
        Err(e) => {
            return vec![RecoveryReport {
                id: None,
                kind: None,
                path: journal.dir().display().to_string(),
                targets: Vec::new(),
                outcome: RecoveryOutcome::Failed {
                    error: e.to_string(),
                },
            }];
        }
    };
    let mut out = Vec::new();
    for item in entries {
        match item {
            Ok(entry) => {
                if !select(&entry.id) {
                    continue;
                }
                let path = journal.path(&entry.id).display().to_string();
                let targets: Vec<String> = entry.targets.iter().map(ToString::to_string).collect();
                let owner_alive = entry.owner.pid != 0
                    && procfs::is_alive(&env.proc_root, &entry.owner, &env.boot_id);
                if owner_alive && !force {
                    out.push(RecoveryReport {
                        id: Some(entry.id.clone()),
                        kind: Some(entry.spec.kind().to_owned()),
                        path,
                        targets,
                        outcome: RecoveryOutcome::HeldByLiveAgent {
                            owner: entry.owner.clone(),
                        },
                    });
                    continue;
                }
                let ctx = Context {
                    id: entry.id.clone(),
                    requester: Requester::agent("recovery"),
                    deadline: from_unix_millis(entry.deadline_unix_ms),
                    config: config.clone(),
                    env: env.clone(),
                };
                let outcome = match revert_entry(journal, audit, &entry, &ctx, AuditAction::Recover)
                {
                    Ok(()) => {
                        info!(fault_id = %entry.id, kind = entry.spec.kind(), targets = %targets.join(", "), "recovered a fault from the journal: reverted");
                        RecoveryOutcome::Reverted
                    }
                    Err(e) => {
                        warn!(fault_id = %entry.id, kind = entry.spec.kind(), error = %e, "could not revert a journaled fault; it stays in the journal");
                        RecoveryOutcome::Failed {
                            error: e.to_string(),
                        }
                    }
                };
                out.push(RecoveryReport {
                    id: Some(entry.id.clone()),
                    kind: Some(entry.spec.kind().to_owned()),
                    path,
                    targets,
                    outcome,
                });
            }
            Err(corrupt) => {
                let _ = helper::end_all(&corrupt.helpers, env);
                let moved_to = journal
                    .quarantine(&corrupt)
                    .ok()
                    .map(|p| p.display().to_string());
                warn!(path = %corrupt.path.display(), error = %corrupt.error, moved_to = ?moved_to, helpers_ended = corrupt.helpers.len(), "unreadable fault journal entry: its helpers were ended; check what it names by hand");
                out.push(RecoveryReport {
                    id: None,
                    kind: None,
                    path: corrupt.path.display().to_string(),
                    targets: Vec::new(),
                    outcome: RecoveryOutcome::Corrupt {
                        error: corrupt.error,
                        moved_to,
                    },
                });
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fault::WorkerCommand;

    fn env() -> Arc<Env> {
        Arc::new(Env::detect(
            "/proc".into(),
            WorkerCommand {
                program: "/bin/false".into(),
                args: vec![],
            },
        ))
    }

    fn state(pid: u32) -> Option<char> {
        procfs::read_stat(std::path::Path::new("/proc"), pid as i32).map(|s| s.state)
    }

    #[test]
    fn recovery_reverts_dead_owners_faults_once_and_leaves_live_ones() {
        let dir = tempfile::tempdir().unwrap();
        let journal = Journal::open(dir.path()).unwrap();
        let env = env();
        let config = Arc::new(ChaosConfig::default());
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let target = procfs::identity(&env.proc_root, child.id() as i32, &env.boot_id).unwrap();
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(target.pid),
            nix::sys::signal::Signal::SIGSTOP,
        )
        .unwrap();
        assert!(crate::helper::alive(std::slice::from_ref(&target), &env) == 1);
        let spec: FaultSpec = serde_json::from_str(&format!(
            r#"{{"kind":"process-pause","pid":{},"duration":"60s"}}"#,
            target.pid
        ))
        .unwrap();
        let record = RevertRecord::with_state(&crate::process::ProcessState {
            signal: crate::units::SignalName(nix::sys::signal::Signal::SIGSTOP),
            targets: vec![target.clone()],
        })
        .unwrap();
        let dead_owner = ProcessIdentity {
            start_time: env.agent.start_time + 1,
            ..env.agent.clone()
        };
        let entry = |id: &str, owner: ProcessIdentity| JournalEntry {
            version: JOURNAL_VERSION,
            id: id.parse().unwrap(),
            spec: spec.clone(),
            requester: Requester::cli(),
            owner,
            created_unix_ms: 1,
            deadline_unix_ms: 2,
            phase: Phase::Applied,
            targets: Vec::new(),
            record: record.clone(),
        };
        journal
            .write(&entry("process-pause-0000000a", dead_owner))
            .unwrap();
        journal
            .write(&entry("process-pause-0000000b", env.agent.clone()))
            .unwrap();
        std::fs::write(journal.dir().join("torn-2.json"), b"{\"version\":1,\"id\":").unwrap();
        let audit = Audit::default();
        let first = recover(&journal, &config, &env, &audit, false);
        assert_eq!(first.len(), 3, "{first:?}");
        assert!(first.iter().any(|r| r.outcome == RecoveryOutcome::Reverted));
        assert!(
            first
                .iter()
                .any(|r| matches!(r.outcome, RecoveryOutcome::HeldByLiveAgent { .. }))
        );
        assert!(
            first
                .iter()
                .any(|r| matches!(r.outcome, RecoveryOutcome::Corrupt { .. }))
        );
        assert!(
            matches!(state(child.id()), Some('S' | 'R')),
            "SIGCONT was sent"
        );
        // Idempotent: the reverted and corrupt entries are gone, the live one is still left.
        let second = recover(&journal, &config, &env, &audit, false);
        assert_eq!(second.len(), 1, "{second:?}");
        assert!(matches!(
            second[0].outcome,
            RecoveryOutcome::HeldByLiveAgent { .. }
        ));
        // Forced (revert --all): reverting an already resumed process is fine.
        let forced = recover(&journal, &config, &env, &audit, true);
        assert_eq!(forced.len(), 1);
        assert_eq!(forced[0].outcome, RecoveryOutcome::Reverted);
        assert!(recover(&journal, &config, &env, &audit, true).is_empty());
        child.kill().unwrap();
        child.wait().unwrap();
    }

    /// `sleep 300` children, resumed, killed and reaped on drop even when the test fails.
    struct Sleepers(Vec<std::process::Child>);

    impl Sleepers {
        fn start(n: usize) -> Self {
            Sleepers(
                (0..n)
                    .map(|_| {
                        std::process::Command::new("sleep")
                            .arg("300")
                            .spawn()
                            .unwrap()
                    })
                    .collect(),
            )
        }
        fn pause_spec(&self, i: usize) -> FaultSpec {
            serde_json::from_str(&format!(
                r#"{{"kind":"process-pause","pid":{},"duration":"60s"}}"#,
                self.0[i].id()
            ))
            .unwrap()
        }
        fn state(&self, i: usize) -> Option<char> {
            state(self.0[i].id())
        }
    }

    impl Drop for Sleepers {
        fn drop(&mut self) {
            for c in &mut self.0 {
                let pid = nix::unistd::Pid::from_raw(c.id() as i32);
                let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGCONT);
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn fault_past_the_cap_is_refused_naming_max_concurrent_and_nothing_is_applied() {
        const CAP: usize = 2;
        let dir = tempfile::tempdir().unwrap();
        let engine = Engine::new(
            ChaosConfig {
                max_concurrent: CAP,
                ..ChaosConfig::default()
            },
            (*env()).clone(),
            Journal::open(dir.path()).unwrap(),
            Audit::default(),
        );
        let mut audit = engine.audit().subscribe();
        let victims = Sleepers::start(CAP + 1);
        for i in 0..CAP {
            engine
                .inject(victims.pause_spec(i), Requester::cli())
                .await
                .unwrap();
            assert_eq!(victims.state(i), Some('T'), "victim {i} paused");
        }
        let e = engine
            .inject(victims.pause_spec(CAP), Requester::cli())
            .await
            .unwrap_err();
        assert_eq!(e.guard(), Some(Guard::MaxConcurrent), "{e}");
        assert!(
            e.to_string().contains("refused by guard max-concurrent"),
            "{e}"
        );
        // Nothing of the refused fault: the victim runs, no third entry or active fault.
        assert!(
            matches!(victims.state(CAP), Some('S' | 'R')),
            "{:?}",
            victims.state(CAP)
        );
        assert_eq!(engine.list().len(), CAP);
        assert_eq!(journal_files(dir.path()), CAP);
        let mut actions = Vec::new();
        while let Ok(ev) = audit.try_recv() {
            actions.push(ev.action);
        }
        assert_eq!(actions.last(), Some(&AuditAction::Refuse), "{actions:?}");
        assert_eq!(
            actions.iter().filter(|a| **a == AuditAction::Apply).count(),
            CAP,
            "{actions:?}"
        );
        // A freed slot is usable again: the cap counts active faults, not history.
        let first = engine.list()[0].id.clone();
        engine.abort(&first, Requester::cli()).await.unwrap();
        engine
            .inject(victims.pause_spec(CAP), Requester::cli())
            .await
            .unwrap();
        assert_eq!(victims.state(CAP), Some('T'));
        for (id, r) in engine.shutdown().await {
            r.unwrap_or_else(|e| panic!("{id}: {e}"));
        }
        assert_eq!(journal_files(dir.path()), 0);
    }

    fn journal_files(dir: &std::path::Path) -> usize {
        std::fs::read_dir(dir.join("faults/journal"))
            .map(|rd| rd.filter_map(Result::ok).count())
            .unwrap_or(0)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_inject_is_checked_after_apply_and_listed_with_the_check() {
        let dir = tempfile::tempdir().unwrap();
        let engine = Engine::new(
            ChaosConfig::default(),
            (*env()).clone(),
            Journal::open(dir.path()).unwrap(),
            Audit::default(),
        );
        let mut audit = engine.audit().subscribe();
        let victims = Sleepers::start(1);
        let f = engine
            .inject(victims.pause_spec(0), Requester::cli())
            .await
            .unwrap();
        let check = f.check.expect("checked after apply");
        assert_eq!(
            check.effect.as_ref().map(|e| e.state),
            Some(EffectState::InEffect),
            "{check}"
        );
        assert_eq!(engine.list()[0].check.as_ref(), Some(&check));
        // Resumed behind the engine's back: the next check sees it, audited as an error.
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(victims.0[0].id() as i32),
            nix::sys::signal::Signal::SIGCONT,
        )
        .unwrap();
        let listed = engine.check_all(Requester::agent("test")).await;
        let again = listed[0].check.clone().unwrap();
        assert_eq!(
            again.effect.as_ref().map(|e| e.state),
            Some(EffectState::NotInEffect),
            "{again}"
        );
        let mut checks = Vec::new();
        while let Ok(ev) = audit.try_recv() {
            if ev.action == AuditAction::Check {
                checks.push(ev.outcome);
            }
        }
        assert_eq!(checks.len(), 2, "{checks:?}");
        assert!(
            checks[0].as_ref().is_ok_and(|d| d.starts_with("in-effect")),
            "{checks:?}"
        );
        assert!(
            checks[1]
                .as_ref()
                .is_err_and(|d| d.starts_with("not-in-effect")),
            "{checks:?}"
        );
        engine.shutdown().await;
    }
}
