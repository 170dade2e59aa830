//! faultline's fault injection: process, disk, CPU, memory, network and container faults
//! that always revert — at their deadline, on abort, on shutdown, on the kill switch, and
//! after the agent was killed (from the journal, at the next start).
//!
//! Usable on its own (the agent's CLI and, later, its HTTP API and drills are clients).
//!
//! # The model
//! - [`FaultSpec`] ([`spec`]): what is asked. A serde enum tagged by `"kind"`
//!   (`process-kill`, `process-pause`, `disk-fill`, `disk-io`, `cpu-stress`,
//!   `memory-stress`; network and container kinds are added in the same list), every kind
//!   with a required `duration`, unknown fields refused. It is also the clap subcommand of
//!   `faultline fault inject`, so CLI flags and JSON fields have the same names.
//! - [`Fault`] ([`fault`]): the one trait every kind implements —
//!   `plan(ctx) -> Plan` (validate, resolve targets, no side effects; printable for
//!   `--dry-run`), `apply(plan, ctx) -> RevertRecord`, `check(record, ctx) -> Effect`,
//!   `revert(record, ctx)` (from the record alone, idempotent). Each spec struct implements
//!   it; [`FaultSpec::fault`] dispatches.
//! - [`RevertRecord`]: serde data — helper processes (pid + start time) and the kind's own
//!   state (paused pids, fill file, nft table, qdisc dev/netns, proxy pid…).
//! - [`Journal`] ([`journal`]): `<state-dir>/faults/journal/<id>.json`, one file per fault,
//!   written and fsynced (file and directory) **before** apply, removed only after the
//!   revert is confirmed. [`recover`] reverts whatever it holds.
//! - [`Engine`] ([`engine`]): owns the active faults — deadlines, `abort`, `abort_all` (the
//!   kill switch: all reverts run concurrently), `shutdown`, the concurrency cap — and the
//!   [`guard`]s no request can bypass: every [`Target`] of a plan is checked before the
//!   journal is written. It checks each fault right after apply (one not in effect is
//!   reverted and the inject fails) and again when asked ([`Engine::check_all`]). Every
//!   plan/apply/check/revert is an [`AuditEvent`] ([`audit`]).
//! - Helper processes ([`helper`], [`worker`]): the agent binary itself in a hidden mode
//!   (`faultline __chaos-worker cpu --load 50 …`). Each sets `PR_SET_PDEATHSIG(SIGKILL)`
//!   and exits if its parent is already gone, so no stress survives a SIGKILL of the
//!   agent; the journal also ends leftovers by pid + start time.
//!
//! # Fault kinds here
//! - [`process`]: `process-kill` (any signal) and `process-pause` (SIGSTOP/SIGCONT) by pid,
//!   name, cmdline regex, cgroup path or container id; mode one|all|N|P%.
//! - [`disk`]: `disk-fill` (fallocate, falling back to writes; `.faultline-fill-<id>`) and
//!   `disk-io` (read or write at a rate).
//! - [`stress`]: `cpu-stress` (N workers at L% duty cycle) and `memory-stress` (allocate and
//!   touch N bytes).
//! - network (`network/`) and container (`container.rs`) kinds: see their modules.
//!
//! # Not here
//! The CLI (agent's `fault_cli.rs`), the HTTP API, drill scheduling, OTLP log export of
//! audit events (the agent subscribes to [`Audit`]).
#![forbid(unsafe_code)]

pub mod audit;
pub mod config;
pub mod container;
pub mod cri;
pub mod disk;
pub mod engine;
pub mod error;
pub mod fault;
pub mod guard;
pub mod helper;
pub mod journal;
pub mod network;
pub mod process;
pub mod procfs;
pub mod spec;
pub mod stress;
pub mod units;
pub mod worker;

pub use audit::{Audit, AuditAction, AuditEvent};
pub use config::{ChaosConfig, FreeFloor};
pub use engine::{
    ActiveFault, CheckReport, Engine, RecoveryOutcome, RecoveryReport, check_journaled, recover,
};
pub use error::{FaultError, Guard};
pub use fault::{
    Context, Effect, EffectState, Env, Fault, FaultId, Plan, Requester, RevertRecord, Target,
    WORKER_ARG, WorkerCommand,
};
pub use journal::{Journal, JournalEntry, JournalError};
pub use procfs::ProcessIdentity;
pub use spec::FaultSpec;
pub use units::{ByteSize, HumanDuration, Percent, SignalName};
