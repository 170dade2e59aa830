//! The faultline agent as a library: configuration, collectors and the runtime that wires
//! them to the exporters. The `faultline` binary (`main.rs`) is a thin CLI over this crate;
//! benchmarks and integration tests use the same entry points.
//!
//! - [`config`]: the typed YAML configuration and its validation.
//! - [`collectors`]: the [`collectors::Collector`] trait and the host collectors.
//! - [`resource`]: the OpenTelemetry resource (who reports, from which host).
//! - [`export_settings`]: OTLP settings from config and `OTEL_EXPORTER_OTLP_*`.
//! - [`runtime`]: the collection cycle, export pipeline, endpoint and signal handling.
//! - [`prometheus_endpoint`]: the `/metrics` HTTP endpoint.
//! - [`backup`]: backup and restore health checks (freshness, integrity, restore tests).
//! - [`fault_cli`]: `faultline fault inject|list|revert` over the `faultline_chaos` engine.
//! - [`sd_notify`]: systemd readiness, watchdog and stopping notifications (`Type=notify`).
//! - [`drill`]: DR drills (scenarios, RTO/RPO measurement, reports, schedules).
//! - [`api`]: the agent's authenticated HTTP API (drills, faults, kill switch).
//! - [`gameday`]: game days — drills on many agents through their APIs, one report.
//! - [`residency`]: hands start-up code pages back to the kernel once the agent runs.
//! - [`cli`]: the command line.
//!
//! Unsafe code is denied crate-wide; [`residency`] alone allows it, for one `madvise` call
//! that has no safe wrapper (its module docs give the reason and the safety argument).
#![deny(unsafe_code)]

pub mod agent_client;
pub mod api;
pub mod backup;
pub mod cli;
pub mod collectors;
pub mod config;
pub mod drill;
pub mod faults;
pub mod gameday;
pub mod outcome;
pub mod runtime;
mod state_file;
pub mod stop;
pub mod telemetry;
pub mod timefmt;
pub mod yaml;

/// Helpers shared by the crate's unit tests.
#[cfg(test)]
pub(crate) mod test_support {
    use faultline_exporters::model::MetricDesc;

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
