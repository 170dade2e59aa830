//! The faultline agent as a library: the `faultline` binary (`main.rs`) is a thin call of
//! [`cli::main`]; benchmarks, fuzz targets and integration tests use the same entry points.
//!
//! The modules form layers (docs/ARCHITECTURE.md, "Layers of the agent crate"; checked by
//! `tests/tests/architecture.rs`), top to bottom:
//! - [`cli`]: every subcommand;
//! - [`runtime`]: the services of `faultline run`, wired and owned;
//! - [`config`]: the configuration file, composed of the features' sections;
//! - the features: [`api`], [`gameday`], [`posture`] (the DR posture report over the
//!   history), [`drill`], [`backup`], `telemetry` (the agent's own
//!   OTLP events, export settings and resource), [`collectors`], `faults` (the fault engine,
//!   built and recovered in one place);
//! - shared homes: `agent_client`, `outcome`, `state_file`, `stop`, [`timefmt`], [`yaml`].
//!
//! Unsafe code is denied crate-wide; `runtime::residency` alone allows it, for one `madvise`
//! call that has no safe wrapper (its module docs give the reason and the safety argument).
#![deny(unsafe_code)]

mod agent_client;
pub mod api;
pub mod backup;
pub mod cli;
pub mod collectors;
pub mod config;
pub mod drill;
mod faults;
pub mod gameday;
mod outcome;
pub mod posture;
pub mod runtime;
mod state_file;
mod status;
mod stop;
mod telemetry;
pub mod timefmt;
pub mod yaml;

/// Helpers shared by the crate's unit tests.
#[cfg(test)]
pub(crate) mod test_support {
    use faultline_exporters::model::MetricDesc;

    /// Whether this run is under CI: `CI` set, non-empty and not `false` or `0` (the rule of
    /// `faultline_tests::in_ci`): a unit test missing what it needs skips outside CI and
    /// fails under it.
    pub(crate) fn in_ci() -> bool {
        std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0")
    }

    /// Fails unless `result` is a rejection whose message starts `file:LINE:` with a real
    /// (1-based) line of `input`, so a parser cannot accept garbage or reject it without saying where.
    pub(crate) fn assert_rejected_at_a_line<T: std::fmt::Debug>(
        result: Result<T, crate::yaml::ConfigError>,
        file: &str,
        input: &str,
    ) {
        let message = match result {
            Ok(v) => panic!("{input:?} was accepted as {v:?}"),
            Err(e) => e.to_string(),
        };
        let line = message
            .strip_prefix(file)
            .and_then(|rest| rest.strip_prefix(':'))
            .and_then(|rest| rest.split_once(':'))
            .and_then(|(line, _)| line.parse::<usize>().ok());
        assert!(
            // A parser reports unexpected end of input on the line after the last one.
            line.is_some_and(|l| (1..=input.lines().count() + 1).contains(&l)),
            "{input:?}: the error does not name {file} and a line of it: {message}"
        );
    }

    /// Fails unless docs/METRICS.md has a row naming each metric with its unit and instrument,
    /// so the metrics reference cannot fall behind the collectors.
    pub(crate) fn assert_in_metrics_reference<'a>(descs: impl IntoIterator<Item = &'a MetricDesc>) {
        let doc =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/METRICS.md"))
                .expect("docs/METRICS.md is readable");
        let missing: Vec<String> = descs
            .into_iter()
            .map(|d| {
                format!(
                    "| `{}` | `{}` | {} |",
                    d.name,
                    d.unit,
                    d.instrument.semconv_name()
                )
            })
            .filter(|row| !doc.contains(row.as_str()))
            .collect();
        assert!(
            missing.is_empty(),
            "docs/METRICS.md lacks (or disagrees on) these rows:\n{}",
            missing.join("\n")
        );
    }
}
