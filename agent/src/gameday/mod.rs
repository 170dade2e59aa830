//! Game days: many agents, one plan. A game-day file names the agents (an inventory of API
//! endpoints with tokens, or the DNS name of their headless Service) and a plan — which
//! scenario runs on which agents (by node name, `{count: N}` at random, or `all`), in what
//! order or together — with objectives for the whole game and conditions that abort it.
//! `faultline gameday run GAMEDAY.yaml` finds the agents, casts the plan on them, starts
//! the drills through each agent's API, follows them, pulls every agent's kill switch on
//! Ctrl-C or when an abort condition fires, and writes one combined report.
//!
//! - [`plan`]: the game-day file, strict, with file/line/field errors.
//! - [`discover`]: the agents of a DNS name, each named by the node it reports.
//! - [`cast`]: which agents each step takes (seeded draws for `count:`).
//! - [`client`]: the calls to one agent's API (hyper + rustls, bearer token).
//! - [`play`]: stages, polling, `unreachable` agents, abort conditions, the kill switch.
//! - [`report`]: the combined report (JSON, HTML) and how the game is judged.
//! - `faultline gameday run|validate`: `cli/gameday.rs`.
//!
//! Not here: the drills themselves, which run inside each agent ([`crate::drill`]).

pub mod cast;
pub mod client;
pub mod discover;
pub mod plan;
pub mod play;
pub mod report;
