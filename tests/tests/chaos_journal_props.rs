//! Property test of the fault journal and engine: **any sequence of apply, crash, restart
//! and revert leaves no fault behind.**
//!
//! The world is real and owned by the test: three `sleep` children that `process-pause`
//! stops (SIGSTOP) and a small tmpfs the test mounted that `disk-fill` fills with tiny
//! files. Nothing is faked: the faults are the chaos crate's own, applied through its
//! [`Engine`] and journal, observed through `/proc/<pid>/stat` and the tmpfs directory.
//!
//! An *incarnation* of the agent is a tokio runtime, an [`Engine`] over the shared journal
//! directory, and a stand-in process whose identity (pid + start time) the engine records as
//! the owner of its journal entries (the test process itself cannot die, so a `sleep` child
//! plays the agent process). The operations:
//! - `Pause`/`Fill`: inject through the engine (short faults expire by themselves, long ones
//!   do not);
//! - `Revert`: abort one active fault; `KillSwitch`: abort them all;
//! - `Crash`: SIGKILL the stand-in and drop the runtime without reverting anything — the
//!   deadline tasks die with it, the faults stay applied, the journal keeps them;
//! - `CrashMidApply`: what the engine does before its crash point — write the journal entry
//!   with the plan's provisional record, optionally apply, then crash (no final write);
//! - `Restart`: graceful shutdown (if up) and a new incarnation that runs recovery;
//! - `Wait`: let short faults reach their deadlines.
//!
//! After each restart, and at the end (crash + restart + recovery), the journal must be
//! empty, every child running (state not `T`), and no fill file left in the tmpfs.
//!
//! Needs root (tmpfs mount); skips without it unless under CI. The number of cases comes
//! from `PROPTEST_CASES` (default 12 here: each case runs real processes and fsyncs).
#![allow(clippy::disallowed_methods)] // std::thread::sleep: the test thread waits for deadlines

use std::cell::Cell;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use faultline_chaos::journal::{JOURNAL_VERSION, Phase};
use faultline_chaos::{
    Audit, ChaosConfig, Context, Engine, Env, FaultSpec, Journal, JournalEntry, RecoveryOutcome,
    Requester, RuntimeSockets, WorkerCommand, procfs,
};
use faultline_tests::chaos::{Tmpfs, Victim, is_root, require, state, wait_until};
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;

/// Faults this short expire during a sequence; long ones outlive it.
const SHORT: &str = "150ms";
const LONG: &str = "60s";

#[derive(Clone, Debug)]
enum What {
    Pause { victim: usize },
    Fill { kib: u32 },
}

#[derive(Clone, Debug)]
enum Op {
    Apply { what: What, short: bool },
    Revert { nth: usize },
    KillSwitch,
    Crash,
    CrashMidApply { what: What, applied: bool },
    Restart,
    Wait,
}

fn what() -> impl Strategy<Value = What> {
    prop_oneof![
        (0usize..3).prop_map(|victim| What::Pause { victim }),
        (4u32..64).prop_map(|kib| What::Fill { kib }),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (what(), any::<bool>()).prop_map(|(what, short)| Op::Apply { what, short }),
        2 => any::<usize>().prop_map(|nth| Op::Revert { nth }),
        1 => Just(Op::KillSwitch),
        2 => Just(Op::Crash),
        2 => (what(), any::<bool>()).prop_map(|(what, applied)| Op::CrashMidApply { what, applied }),
        2 => Just(Op::Restart),
        1 => Just(Op::Wait),
    ]
}

/// The things faults act on, shared by all cases.
struct World {
    victims: Vec<Victim>,
    tmpfs: Tmpfs,
    /// Faults applied, and faults recovery reverted, over all cases: the property must not
    /// hold vacuously.
    applied: Cell<usize>,
    recovered: Cell<usize>,
}

impl World {
    fn spec(&self, what: &What, duration: &str) -> FaultSpec {
        let json = match what {
            What::Pause { victim } => format!(
                r#"{{"kind":"process-pause","pid":{},"duration":"{duration}"}}"#,
                self.victims[*victim].pid()
            ),
            What::Fill { kib } => format!(
                r#"{{"kind":"disk-fill","path":{:?},"bytes":"{kib}KiB","duration":"{duration}"}}"#,
                self.tmpfs.path()
            ),
        };
        serde_json::from_str(&json).unwrap_or_else(|e| panic!("{json}: {e}"))
    }

    /// What is still faulted: stopped children and fill files.
    fn leftovers(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .victims
            .iter()
            .filter(|v| !matches!(state(v.pid()), Some('S' | 'R' | 'D')))
            .map(|v| format!("child {} is in state {:?}", v.pid(), state(v.pid())))
            .collect();
        out.extend(
            self.tmpfs
                .files()
                .into_iter()
                .filter(|f| f.starts_with(".faultline-fill-"))
                .map(|f| format!("fill file {f} remains")),
        );
        out
    }

    /// Puts the world back by hand between cases (a failed case must not poison the next).
    fn scrub(&self) {
        for v in &self.victims {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(v.pid()),
                nix::sys::signal::Signal::SIGCONT,
            );
        }
        for f in self.tmpfs.files() {
            let _ = std::fs::remove_file(self.tmpfs.path().join(f));
        }
    }
}

/// One run of the "agent": runtime, engine, and the process standing in for the agent.
struct Incarnation {
    rt: tokio::runtime::Runtime,
    engine: Engine,
    env: Arc<Env>,
    stand_in: Victim,
}

impl Incarnation {
    /// Starts an engine over `state_dir`'s journal and runs recovery, returning what it did.
    fn start(state_dir: &Path) -> (Self, Vec<RecoveryOutcome>) {
        let stand_in = Victim::sleep();
        let boot_id = procfs::boot_id(Path::new("/proc"));
        let agent = procfs::identity(Path::new("/proc"), stand_in.pid(), &boot_id)
            .unwrap_or_else(|| panic!("identity of the stand-in {}", stand_in.pid()));
        let env = Env {
            proc_root: PathBuf::from("/proc"),
            // No kind used here starts helpers.
            worker: WorkerCommand {
                program: PathBuf::from("/bin/false"),
                args: Vec::new(),
            },
            agent,
            parent_pid: i32::try_from(std::process::id()).unwrap_or(i32::MAX),
            boot_id,
            pod: None,
            sockets: RuntimeSockets::default(),
        };
        let journal = Journal::open(state_dir).unwrap_or_else(|e| panic!("journal: {e}"));
        let engine = Engine::new(
            ChaosConfig::default(),
            env.clone(),
            journal,
            Audit::default(),
        );
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap_or_else(|e| panic!("runtime: {e}"));
        let reports = rt.block_on(engine.recover());
        let inc = Incarnation {
            rt,
            engine,
            env: Arc::new(env),
            stand_in,
        };
        (inc, reports.into_iter().map(|r| r.outcome).collect())
    }

    /// SIGKILL: the stand-in dies, the runtime (and every deadline task) is dropped, nothing
    /// is reverted.
    fn crash(self) {
        let Incarnation {
            rt,
            engine,
            stand_in,
            ..
        } = self;
        drop(stand_in); // SIGKILL + reap: the owner is now dead.
        drop(engine);
        rt.shutdown_background();
    }

    /// Clean stop: reverts everything active.
    fn stop(self) {
        let outcomes = self.rt.block_on(self.engine.shutdown());
        for (id, r) in outcomes {
            assert!(r.is_ok(), "shutdown revert of {id}: {r:?}");
        }
        drop(self.engine);
        drop(self.stand_in);
    }

    /// The engine's steps up to its crash point: journal the plan, maybe apply, no final
    /// write. Returns false if the plan was refused (nothing journaled then).
    fn journal_then_abandon(&self, spec: FaultSpec, applied: bool) -> bool {
        let id = faultline_chaos::FaultId::new(spec.kind());
        let ctx = Context {
            id: id.clone(),
            requester: Requester::cli(),
            deadline: SystemTime::now() + spec.duration(),
            config: Arc::new(self.engine.config().clone()),
            env: self.env.clone(),
        };
        let fault = spec.fault();
        let Ok(plan) = fault.plan(&ctx) else {
            return false;
        };
        let entry = JournalEntry {
            version: JOURNAL_VERSION,
            id,
            spec: spec.clone(),
            requester: ctx.requester.clone(),
            owner: self.env.agent.clone(),
            created_unix_ms: faultline_chaos::fault::unix_millis(SystemTime::now()),
            deadline_unix_ms: faultline_chaos::fault::unix_millis(ctx.deadline),
            phase: Phase::Planned,
            targets: plan.targets.clone(),
            selection: None,
            record: plan.record.clone(),
        };
        self.engine
            .journal()
            .write(&entry)
            .unwrap_or_else(|e| panic!("journal write: {e}"));
        if applied {
            // A failed apply (e.g. the disk-free floor) leaves the planned entry: still
            // something recovery must clean.
            let _ = fault.apply(&plan, &ctx);
        }
        true
    }
}

fn journal_files(state_dir: &Path) -> Vec<String> {
    std::fs::read_dir(state_dir.join("faults/journal"))
        .map(|rd| {
            rd.filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// After a restart's recovery: nothing is journaled, nothing is faulted, nothing failed.
fn check_clean(
    world: &World,
    state_dir: &Path,
    outcomes: &[RecoveryOutcome],
    when: &str,
) -> Result<(), TestCaseError> {
    world.recovered.set(world.recovered.get() + outcomes.len());
    for o in outcomes {
        prop_assert!(
            matches!(o, RecoveryOutcome::Reverted),
            "{when}: recovery outcome {o:?}"
        );
    }
    let files = journal_files(state_dir);
    prop_assert!(files.is_empty(), "{when}: journal still holds {files:?}");
    // SIGCONT is delivered asynchronously: give the kernel a moment to report it.
    let mut left = Vec::new();
    wait_until(Duration::from_secs(2), || {
        left = world.leftovers();
        left.is_empty()
    });
    prop_assert!(left.is_empty(), "{when}: {left:?}");
    Ok(())
}

fn run_case(world: &World, ops: &[Op]) -> Result<(), TestCaseError> {
    let state_dir = tempfile::Builder::new()
        .prefix("faultline-journal-props-")
        .tempdir()
        .unwrap_or_else(|e| panic!("tempdir: {e}"));
    let (first, outcomes) = Incarnation::start(state_dir.path());
    prop_assert!(outcomes.is_empty());
    let mut up = Some(first);
    for (step, op) in ops.iter().enumerate() {
        let when = format!("step {step} ({op:?})");
        // An agent that crashed serves nothing until it starts again (with recovery).
        if up.is_none() && !matches!(op, Op::Restart | Op::Crash) {
            let (inc, outcomes) = Incarnation::start(state_dir.path());
            check_clean(world, state_dir.path(), &outcomes, &when)?;
            up = Some(inc);
        }
        match op {
            Op::Apply { what, short } => {
                let inc = up.as_ref().unwrap_or_else(|| unreachable!());
                let spec = world.spec(what, if *short { SHORT } else { LONG });
                // Refusals (cap, disk floor, pausing a stopped child) are allowed outcomes;
                // a refused fault must leave no entry.
                let before = journal_files(state_dir.path()).len();
                if inc
                    .rt
                    .block_on(inc.engine.inject(spec, Requester::cli()))
                    .is_ok()
                {
                    world.applied.set(world.applied.get() + 1);
                } else {
                    prop_assert_eq!(journal_files(state_dir.path()).len(), before, "{}", when);
                }
            }
            Op::Revert { nth } => {
                let inc = up.as_ref().unwrap_or_else(|| unreachable!());
                let active = inc.engine.list();
                if !active.is_empty() {
                    let id = active[nth % active.len()].id.clone();
                    // It may have expired in between (UnknownId); anything else is a bug.
                    if let Err(e) = inc.rt.block_on(inc.engine.abort(&id, Requester::cli())) {
                        prop_assert!(
                            matches!(e, faultline_chaos::FaultError::UnknownId(_)),
                            "{when}: abort {id}: {e}"
                        );
                    }
                }
            }
            Op::KillSwitch => {
                let inc = up.as_ref().unwrap_or_else(|| unreachable!());
                for (id, r) in inc.rt.block_on(inc.engine.abort_all(Requester::cli())) {
                    if let Err(e) = r {
                        prop_assert!(
                            matches!(e, faultline_chaos::FaultError::UnknownId(_)),
                            "{when}: kill switch on {id}: {e}"
                        );
                    }
                }
                prop_assert!(inc.engine.list().is_empty(), "{when}: still active");
            }
            Op::Crash => {
                if let Some(inc) = up.take() {
                    inc.crash();
                }
            }
            Op::CrashMidApply { what, applied } => {
                let inc = up.take().unwrap_or_else(|| unreachable!());
                inc.journal_then_abandon(world.spec(what, LONG), *applied);
                inc.crash();
            }
            Op::Restart => {
                if let Some(inc) = up.take() {
                    inc.stop();
                }
                let (inc, outcomes) = Incarnation::start(state_dir.path());
                check_clean(world, state_dir.path(), &outcomes, &when)?;
                up = Some(inc);
            }
            Op::Wait => std::thread::sleep(Duration::from_millis(400)),
        }
    }
    // The end: whatever state it is in, the agent is killed and starts again.
    if let Some(inc) = up.take() {
        inc.crash();
    }
    let (last, outcomes) = Incarnation::start(state_dir.path());
    let r = check_clean(world, state_dir.path(), &outcomes, "final recovery");
    last.stop();
    r
}

#[test]
fn any_sequence_of_apply_crash_restart_revert_leaves_no_fault_behind() {
    if !require(is_root(), "root (to mount a tmpfs for disk-fill)") {
        return;
    }
    let world = World {
        victims: (0..3).map(|_| Victim::sleep()).collect(),
        tmpfs: Tmpfs::mount("4m"),
        applied: Cell::new(0),
        recovered: Cell::new(0),
    };
    // A fixed seed: the same sequences on every run, so the non-vacuity check below is
    // stable; PROPTEST_CASES explores further.
    let (mut runner, cases) = faultline_tests::props::runner(12, 64);
    let result = runner.run(&prop::collection::vec(op(), 1..10), |ops| {
        let r = run_case(&world, &ops);
        world.scrub();
        r
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    eprintln!(
        "{cases} sequences: {} faults applied, {} reverted by recovery after a crash",
        world.applied.get(),
        world.recovered.get()
    );
    assert!(world.applied.get() > 0 && world.recovered.get() > 0);
    // The world itself is intact: every child still alive and running.
    for v in &world.victims {
        assert!(
            matches!(state(v.pid()), Some('S' | 'R')),
            "child {}",
            v.pid()
        );
    }
}

/// The stand-in really is what recovery keys on: a journal entry of a live owner is left
/// alone (so the property above is not vacuous about "dead owner").
#[test]
fn recovery_leaves_faults_of_a_live_agent_alone() {
    if !require(is_root(), "root (to mount a tmpfs for disk-fill)") {
        return;
    }
    let world = World {
        victims: vec![Victim::sleep()],
        tmpfs: Tmpfs::mount("4m"),
        applied: Cell::new(0),
        recovered: Cell::new(0),
    };
    let state_dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let (live, _) = Incarnation::start(state_dir.path());
    let spec = world.spec(&What::Pause { victim: 0 }, LONG);
    live.rt
        .block_on(live.engine.inject(spec, Requester::cli()))
        .unwrap_or_else(|e| panic!("inject: {e}"));
    assert!(wait_until(Duration::from_secs(2), || state(
        world.victims[0].pid()
    ) == Some('T')));
    // A second "agent" starting while the first lives must not revert its fault.
    let (other, outcomes) = Incarnation::start(state_dir.path());
    assert!(
        matches!(
            outcomes.as_slice(),
            [RecoveryOutcome::HeldByLiveAgent { .. }]
        ),
        "{outcomes:?}"
    );
    assert_eq!(state(world.victims[0].pid()), Some('T'));
    other.stop();
    live.stop();
    assert!(wait_until(Duration::from_secs(2), || world
        .leftovers()
        .is_empty()));
}
