//! Game days: many agents, one plan. A game-day file names the agents (an inventory of API
//! endpoints with tokens) and a plan — which scenario runs on which agents, in what order or
//! together — with objectives for the whole game and conditions that abort it.
//! `faultline gameday run GAMEDAY.yaml` starts the drills through each agent's API, follows
//! them, pulls every agent's kill switch on Ctrl-C or when an abort condition fires, and
//! writes one combined report.
//!
//! - [`file`]: the game-day file, strict, with file/line/field errors.
//! - [`client`]: the HTTP client for one agent's API (hyper + rustls, bearer token).
//! - [`runner`]: stages, polling, `unreachable` agents, abort conditions, the kill switch.
//! - [`report`]: the combined report (JSON, HTML) and how the game is judged.
//! - [`cli`]: `faultline gameday run|validate`.
//!
//! Not here: the drills themselves, which run inside each agent ([`crate::drill`]), and
//! discovery of agents through the Kubernetes API (docs/adr/0007, not built: the inventory
//! is the primitive discovery will produce).

pub mod client;
pub mod plan;
pub mod play;
pub mod report;
