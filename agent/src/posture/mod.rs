//! DR posture: the evidence of drills and backup checks over time, and the report a platform
//! team brings to a reliability review — per service, did every scenario meet its RTO and
//! RPO, what is each source's restore-test pass rate, are things getting worse, and what was
//! never proven.
//!
//! - [`retention`]: the `history:` config section and how long the history lasts (age, then
//!   size, oldest first).
//! - [`history`]: one node's evidence as the report reads it — what the node is configured
//!   to prove ([`history::Catalog`]) and its drills and checks, page by page (the local read
//!   and `GET /v1/history` alike).
//!
//! Not here: writing the evidence (drill reports: `crate::drill::history`; backup checks:
//! `crate::backup::history`), and `faultline report posture` itself (`crate::cli`).

pub mod history;
pub mod retention;

pub use retention::HistoryConfig;
