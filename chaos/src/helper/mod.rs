//! Helper processes: the agent binary started again in a hidden mode
//! (`faultline __chaos-worker --parent PID cpu|memory|io …`, [`crate::WORKER_ARG`]) to do the
//! work a fault holds for its duration — CPU and memory stress, disk I/O.
//!
//! Two sides, one file each:
//! - [`parent`], in the agent: start a helper, wait for its ready line, end it (also one a
//!   previous agent left, from its journaled pid + start time).
//! - [`child`], inside the helper process: parse the hidden mode's arguments, tie its life to
//!   the parent's, say it is ready, and work until it is killed.
//!
//! What the two share is that command line and [`READY_LINE`].

pub mod child;
mod parent;

pub(crate) use parent::{alive, end_all, end_orphans, spawn};

/// The line a helper prints on stdout once it is doing its job.
const READY_LINE: &str = "faultline-worker-ready";
