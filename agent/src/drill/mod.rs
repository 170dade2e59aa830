//! DR drills: scenarios that inject faults through the chaos engine and measure, from
//! evidence, the RTO and RPO a system really achieved — with their precision — against its
//! objectives; reported as JSON, JUnit, an HTML timeline and OTLP traces, logs and metrics.
//!
//! - [`scenario`]: the YAML scenario, strict, validated with file/line/field errors.
//! - [`probe`]: the [`probe::Probe`] trait (http, tcp, command, metric threshold).
//! - [`measure`]: pure RTO/RPO/detection arithmetic.
//! - [`execute`]: running one drill, the state machine, one file a step (steady state →
//!   faults → detection → recovery → verification; every fault reverted on abort, timeout
//!   and finish).
//! - [`canary`], [`recovery`]: the RPO marker writer/reader; recovery actions.
//! - [`report`]: the report and its renderings.
//! - [`history`]: reports kept under `<state-dir>/drills/`.
//! - [`locks`]: per-target `flock`s shared by the agent's drills and `faultline drill run`.
//! - [`schedule`]: the `drills:` config section and cron schedules.
//! - [`service`]: the drills inside `faultline run` (shared by the API and the scheduler).
//! - [`metrics`]: `faultline.drill.*` metrics for the collection cycle.
//! - `faultline drill run|validate` lives with the other subcommands in `crate::cli`.
//!
//! Not here: the HTTP API ([`crate::api`]) and the faults themselves (`faultline_chaos`).

pub mod canary;
pub mod execute;
pub mod history;
pub mod locks;
pub mod measure;
pub mod metrics;
pub mod probe;
pub mod recovery;
#[cfg(test)]
mod reference_tests;
pub mod report;
pub mod scenario;
pub mod schedule;
pub mod service;
