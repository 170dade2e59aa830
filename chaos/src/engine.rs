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
//! [`Engine::check_all`] (`GET /v1/faults`) and [`crate::check::check_journaled`]
//! (`faultline fault list`) check again later. Each check is an audit event (`Check`: ok when in effect,
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
//! Not here: reverting what the journal holds after the agent died ([`crate::recovery`];
//! [`Engine::recover`] runs it on the blocking pool).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, warn};

use crate::audit::{Audit, AuditAction, AuditEvent};
use crate::check::{CheckReport, check_entry};
use crate::config::ChaosConfig;
use crate::error::{FaultError, Guard};
use crate::fault::{
    Context, Env, FaultId, Plan, Requester, RevertRecord, from_unix_millis, unix_millis,
};
use crate::guard;
use crate::helper;
use crate::journal::{JOURNAL_VERSION, Journal, JournalEntry, Phase};
use crate::recovery::{RecoveryReport, recover};
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
    /// How pod selectors picked the targets (seed and picks), when they did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selection: Option<crate::select::Selection>,
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
            selection: e.selection.clone(),
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
        crate::recovery::owner_alive(entry, &self.inner.env)
    }

    /// Checks a journaled fault on the system, as `requester` (`faultline fault list` in a
    /// process that does not hold the fault). Blocking.
    pub fn check_journaled(&self, entry: &JournalEntry, requester: Requester) -> CheckReport {
        crate::check::check_journaled(
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
        crate::recovery::recover_matching(
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

    /// Reverts what the journal holds from dead agents; see [`crate::recovery`].
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
    let (action, targets, outcome, selection) = match r {
        Ok(p) => (
            AuditAction::Plan,
            p.targets.iter().map(ToString::to_string).collect(),
            Ok("planned".to_owned()),
            p.selection.clone(),
        ),
        Err(e) => (AuditAction::Refuse, Vec::new(), Err(e.to_string()), None),
    };
    audit.emit(
        AuditEvent::now(
            action,
            &ctx.id,
            spec.kind(),
            &ctx.requester,
            targets,
            unix_millis(ctx.deadline),
            outcome,
        )
        .with_selection(selection),
    );
}

/// The `Apply` audit event of `entry` (its selection included).
fn audit_apply(
    audit: &Audit,
    entry: &JournalEntry,
    ctx: &Context,
    outcome: Result<String, String>,
) {
    audit.emit(
        AuditEvent::now(
            AuditAction::Apply,
            &ctx.id,
            entry.spec.kind(),
            &ctx.requester,
            entry.targets.iter().map(ToString::to_string).collect(),
            entry.deadline_unix_ms,
            outcome,
        )
        .with_selection(entry.selection.clone()),
    );
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
        selection: plan.selection.clone(),
        record: plan.record.clone(),
    };
    // Write-ahead: nothing is touched before the revert record is on disk.
    if let Err(e) = inner.journal.write(&entry) {
        let e = FaultError::from(e);
        audit_apply(audit, &entry, &ctx, Err(e.to_string()));
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
            audit_apply(audit, &entry, &ctx, Err(e.to_string()));
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
    audit_apply(audit, &entry, &ctx, Ok("applied".into()));
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
pub(crate) fn revert_entry(
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

#[cfg(test)]
mod tests;
