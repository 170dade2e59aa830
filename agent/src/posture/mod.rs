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
//! - [`report`]: the report itself, pure arithmetic over many nodes' evidence (pass rates,
//!   compliance, worst, median, trend, gaps), its JSON form; renderings in [`render`]
//!   (HTML with inline SVG plots, Markdown, JUnit).
//! - [`fleet`]: many agents' histories through their APIs (`GET /v1/history`), an agent
//!   that does not answer listed as unreachable.
//!
//! Not here: writing the evidence (drill reports: `crate::drill::history`; backup checks:
//! `crate::backup::history`), and `faultline report posture` itself (`crate::cli`).

pub mod fleet;
pub mod history;
pub mod render;
pub mod report;
pub mod retention;

pub use retention::HistoryConfig;
