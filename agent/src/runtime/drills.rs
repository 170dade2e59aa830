//! Drills, the fault engine's shutdown and the API inside `faultline run`, wired when the API
//! is enabled or drills are configured: the drill service (and its schedules) on the
//! agent's one fault engine, the API server holding that engine and the service, the
//! engine's audit events forwarded as OTLP log records, and every fault reverted when the
//! runtime's token fires.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context as _;
use faultline_chaos::Engine;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, error, info};

use crate::api::AgentInfo;
use crate::config::Config;
use crate::drill::metrics::DrillCollector;
use crate::drill::probe::WatchSource;
use crate::drill::schedule;
use crate::drill::service::{DrillService, ServiceParts};
use crate::status::Sources;
use crate::telemetry::events::Signals;

/// What the rest of the runtime hands the drills and the API.
pub struct Inputs {
    /// The latest collected batch (metric probes read it).
    pub latest: tokio::sync::watch::Receiver<Option<Arc<faultline_exporters::model::Batch>>>,
    /// Who this agent is (`GET /v1/info`).
    pub info: AgentInfo,
    /// The OTLP traces and logs pipeline, when on.
    pub signals: Option<Signals>,
}

/// Starts drills and the API on `engine`; returns the metrics collector to add to the cycle,
/// `None` when neither is configured. The engine and the drill service are added to
/// `status` before the API (which answers `GET /v1/status` from it) starts.
pub async fn spawn(
    config: &Config,
    engine: Result<Engine, String>,
    state_dir: &Path,
    Inputs {
        latest,
        info,
        signals,
    }: Inputs,
    status: &mut Sources,
    cancel: &CancellationToken,
    tracker: &TaskTracker,
) -> anyhow::Result<Option<DrillCollector>> {
    if !config.api.enabled && config.drills.is_empty() {
        return Ok(None);
    }
    let known = config.drill_known();
    let text_less = schedule::load(&config.drills, "", "<config>", &known)
        .context("drills (scenario files)")?;
    let engine = engine.map_err(anyhow::Error::msg)?;
    // Forwarded until the engine's shutdown below is done, so its reverts are sent too.
    let engine_done = CancellationToken::new();
    if let Some(s) = &signals {
        crate::telemetry::events::forward_audit(
            engine.audit(),
            s.logs.clone(),
            engine_done.clone(),
            tracker,
        );
    }
    let svc = DrillService::start_service(
        ServiceParts {
            engine: engine.clone(),
            state_dir: state_dir.to_path_buf(),
            backups: config.backups.clone(),
            known,
            drills: text_less,
            exporter: signals,
        },
        Some(Arc::new(WatchSource(latest))),
        cancel,
        tracker,
    )
    .context("drill history")?;
    let collector = DrillCollector::new(svc.stats());
    status.engine = Some(engine.clone());
    status.drills = Some(svc.clone());
    if config.api.enabled {
        let server = crate::api::Server::bind(&config.api).await?;
        info!(listen = %server.local_addr(), "API listening");
        tracker.spawn(
            server
                .run(engine.clone(), svc, info, status.clone(), cancel.clone())
                .instrument(tracing::info_span!("api")),
        );
    }
    let c = cancel.clone();
    tracker.spawn(
        async move {
            c.cancelled().await;
            for (id, r) in engine.shutdown().await {
                if let Err(e) = r {
                    error!(fault_id = %id, error = %e, "fault revert at shutdown failed; it stays in the journal");
                }
            }
            engine_done.cancel();
        }
        .instrument(tracing::info_span!("fault_engine_shutdown")),
    );
    Ok(Some(collector))
}
