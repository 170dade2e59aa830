//! faultline's fault injection: process, disk, CPU, memory, network and container faults
//! that always revert — at their deadline, on abort, on shutdown, on the kill switch, and
//! after the agent was killed (from the journal, at the next start).
//!
//! Usable on its own; the agent's CLI, HTTP API and drills are its clients.
//!
//! # The model
//! - [`FaultSpec`] (`spec.rs`): what is asked. A serde enum tagged by `"kind"`
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
//!   revert is confirmed. [`recover`] (`recovery.rs`) reverts whatever it holds from dead
//!   agents, and reports each entry ([`RecoveryReport`]).
//! - [`Engine`] (`engine.rs`): owns the active faults — deadlines, `abort`, `abort_all` (the
//!   kill switch: all reverts run concurrently), `shutdown`, the concurrency cap — and the
//!   guards (`guard.rs`) no request can bypass: every [`Target`] of a plan is checked before
//!   the journal is written. It checks each fault right after apply (one not in effect is
//!   reverted and the inject fails) and again when asked ([`Engine::check_all`];
//!   [`CheckReport`], `check.rs`). Every plan/apply/check/revert is an [`AuditEvent`].
//! - Helper processes ([`helper`]: the parent side in the agent, the child side in the
//!   helper): the agent binary itself in a hidden mode (`faultline __chaos-worker cpu --load
//!   50 …`). Each sets `PR_SET_PDEATHSIG(SIGKILL)` and exits if its parent is already gone,
//!   so no stress survives a SIGKILL of the agent; the journal also ends leftovers by pid +
//!   start time.
//!
//! # Fault kinds here
//! - `process.rs`: `process-kill` (any signal) and `process-pause` (SIGSTOP/SIGCONT) by pid,
//!   name, cmdline regex, cgroup path, container id or pod selectors; mode one|all|N|P%.
//! - `disk.rs`: `disk-fill` (fallocate, falling back to writes; `.faultline-fill-<id>`) and
//!   `disk-io` (read or write at a rate).
//! - `stress.rs`: `cpu-stress` (N workers at L% duty cycle) and `memory-stress` (allocate and
//!   touch N bytes).
//! - [`network`] and container (`container/`) kinds: see their modules. Containers are
//!   reached through [`cri`] (containerd, CRI-O) or [`docker`] (Docker, podman), the crate's
//!   one client of each, which the agent's container collector and drills use too;
//!   `container-pause` freezes the container's cgroup ([`freezer`]) on any runtime.
//! - Pod and label selectors (`select.rs`): `--namespace`, `--pod`, `--label`,
//!   `--container-name`, `--count`/`--percent`/`--seed`, the same on every container and
//!   process fault; the seed and picks are a [`Selection`] in the plan, the audit events and
//!   the fault's listing.
//!
//! # What other crates see
//! The types above, re-exported here, and the modules other crates reach into: [`cri`] (the
//! Kubernetes Container Runtime Interface client), [`docker`],
//! [`fault`], [`helper`] (its child side is the binary's hidden mode), [`journal`],
//! [`network`] (the proxy, for benchmarks and tests), [`freezer`], [`procfs`] and [`units`]
//! (parsers the fuzz targets and tests call). Everything else is private to the crate.
//!
//! # Not here
//! The CLI (agent's `fault_cli`), the HTTP API, drill scheduling, OTLP log export of
//! audit events (the agent subscribes to [`Audit`]).
#![forbid(unsafe_code)]

mod audit;
mod check;
mod config;
mod container;
pub mod cri;
mod disk;
pub mod docker;
mod engine;
mod error;
pub mod fault;
pub mod freezer;
mod guard;
pub mod helper;
pub mod journal;
pub mod network;
mod process;
pub mod procfs;
mod recovery;
mod select;
mod spec;
mod stress;
pub mod units;

pub use audit::{Audit, AuditAction, AuditEvent};
pub use check::CheckReport;
pub use config::{ChaosConfig, FreeFloor};
pub use engine::{ActiveFault, Engine};
pub use error::{FaultError, Guard};
pub use fault::{
    ContainerRef, Context, Effect, EffectState, Env, Fault, FaultId, Plan, PodRef, Requester,
    RevertRecord, Target, WORKER_ARG, WorkerCommand,
};
pub use journal::{Journal, JournalEntry, JournalError};
pub use procfs::ProcessIdentity;
pub use recovery::{RecoveryOutcome, RecoveryReport};
pub use select::{LabelMatch, RuntimeSockets, Selection};
pub use spec::FaultSpec;
pub use units::{ByteSize, HumanDuration, Percent, SignalName};
