//! Pure parsers for what the backup tools print: one module per tool, each a set of functions
//! from `&str` to values, tested against captured real output in
//! `agent/tests/fixtures/backup/`. No I/O happens here; the sources run the tools and hand
//! their output over.
//!
//! Times are carried as Unix seconds (`f64`), parsed by [`crate::timefmt`] (see [`borg`] for
//! why faultline runs borg with `TZ=UTC`, so that its naive times' offset is zero).

pub mod borg;
pub mod command;
pub mod manifest;
pub mod pgbackrest;
pub mod restic;

/// Output that does not have the shape the tool documents.
#[derive(Debug, thiserror::Error)]
pub enum ParseError {
    /// Not valid JSON, or JSON of the wrong shape.
    #[error("{what}: not the JSON the tool documents: {source}")]
    Json {
        /// What was being parsed, e.g. `restic snapshots --json`.
        what: &'static str,
        /// The decoder's message.
        source: serde_json::Error,
    },
    /// A value inside is malformed.
    #[error("{what}: {reason}")]
    Invalid {
        /// What was being parsed.
        what: &'static str,
        /// What was wrong.
        reason: String,
    },
}

/// One backup (restic snapshot, borg archive, pgBackRest backup set, file, command entry).
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Snapshot {
    /// The tool's identifier (snapshot id, archive name, backup label, file name).
    pub id: String,
    /// When the backup finished (or, where the tool records only that, started), Unix seconds.
    pub time: f64,
    /// Size in bytes as the tool reports it (restored size where known), if known.
    pub size: Option<u64>,
}
