//! The runtime: a collection cycle on a timer, the export pipeline, the Prometheus endpoint
//! and signal handling. The async tasks are owned by one cancellation token and one task
//! tracker; the collection thread ([`collect_loop`]) is stopped and waited for when the token
//! is cancelled, before the tasks are.
//!
//! [`Cycle`] is one collection pass over every collector, independent of timers, so
//! `faultline collect --once`, the benchmarks and `faultline run` share it. Collectors are
//! synchronous file readers; in `faultline run` cycles run on a thread of their own that
//! owns the timer ([`collect_loop`]), never on the async thread.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use faultline_exporters::model::{Attributes, Batch, Metric, MetricDesc, Resource, now_unix_nanos};
use faultline_exporters::otlp::{self, ExportHandle, ExportStats, LogStats, Transport};
use faultline_exporters::repeat::{self, Failure, Repeated};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, debug, error, info, warn};

use crate::collectors::{self, Collector, Context};
use crate::config::Config;
use crate::status::{CollectorStatus, SharedCollectors, Sources};
use crate::telemetry::export;
use crate::telemetry::resource::{self, ResourceInputs};

mod collect_loop;
mod drills;
pub mod prometheus_endpoint;
pub mod residency;
pub mod sd_notify;
mod status_socket;

/// Duration of the last collection cycle.
pub const CYCLE_DURATION: MetricDesc = MetricDesc::gauge(
    "faultline.cycle.duration",
    "s",
    "Wall-clock duration of the previous collection cycle.",
);
/// Collector errors.
pub const COLLECTOR_ERRORS: MetricDesc = MetricDesc::counter(
    "faultline.collector.errors",
    "{error}",
    "Errors per collector since the agent started.",
);
/// Export requests attempted.
pub const EXPORT_ATTEMPTS: MetricDesc = MetricDesc::counter(
    "faultline.export.attempts",
    "{request}",
    "OTLP export requests attempted.",
);
/// Export requests failed.
pub const EXPORT_FAILURES: MetricDesc = MetricDesc::counter(
    "faultline.export.failures",
    "{request}",
    "OTLP export requests that failed (retryable or not).",
);
/// Points accepted by the backend.
pub const EXPORT_SENT: MetricDesc = MetricDesc::counter(
    "faultline.export.sent",
    "{point}",
    "Data points the OTLP backend accepted.",
);
/// Points dropped.
pub const EXPORT_DROPPED: MetricDesc = MetricDesc::counter(
    "faultline.export.dropped",
    "{point}",
    "Data points dropped: queue overflow, permanent backend errors, partial-success rejections.",
);
/// Queue length.
pub const EXPORT_QUEUE_LENGTH: MetricDesc = MetricDesc::updown(
    "faultline.export.queue.length",
    "{batch}",
    "Batches waiting in the OTLP send queue.",
);

/// Log records accepted.
pub const EXPORT_LOG_RECORDS_SENT: MetricDesc = MetricDesc::counter(
    "faultline.export.log_records.sent",
    "{log_record}",
    "OTLP log records (fault audit, API audit, backup check and drill timeline events) the backend accepted.",
);
/// Log records dropped.
pub const EXPORT_LOG_RECORDS_DROPPED: MetricDesc = MetricDesc::counter(
    "faultline.export.log_records.dropped",
    "{log_record}",
    "OTLP log records dropped: queue overflow, permanent backend errors, partial-success rejections, unsent at shutdown.",
);

/// The agent's own resident memory.
pub const AGENT_MEMORY_RSS: MetricDesc = MetricDesc::updown(
    "faultline.agent.memory.rss",
    "By",
    "Resident memory of the faultline process.",
);
/// The agent's own CPU time.
pub const AGENT_CPU_TIME: MetricDesc = MetricDesc::counter(
    "faultline.agent.cpu.time",
    "s",
    "CPU time the faultline process has used (user + system).",
);

/// Every self-telemetry metric, for the metrics reference.
pub const SELF_METRICS: &[&MetricDesc] = &[
    &CYCLE_DURATION,
    &COLLECTOR_ERRORS,
    &EXPORT_ATTEMPTS,
    &EXPORT_FAILURES,
    &EXPORT_SENT,
    &EXPORT_DROPPED,
    &EXPORT_QUEUE_LENGTH,
    &EXPORT_LOG_RECORDS_SENT,
    &EXPORT_LOG_RECORDS_DROPPED,
    &AGENT_MEMORY_RSS,
    &AGENT_CPU_TIME,
];

/// The agent's own process figures from its own `/proc/self/stat` (the agent's procfs, not
/// the configured host root): one small read per cycle through a descriptor kept open.
struct SelfProcess {
    ticks_per_second: f64,
    page_bytes: u64,
    file: crate::collectors::file::KeptFile,
}

impl SelfProcess {
    fn new() -> Option<Self> {
        use nix::unistd::{SysconfVar, sysconf};
        let tick = sysconf(SysconfVar::CLK_TCK).ok()??;
        let page = sysconf(SysconfVar::PAGE_SIZE).ok()??;
        Some(Self {
            ticks_per_second: u32::try_from(tick).ok().filter(|t| *t > 0)?.into(),
            page_bytes: u64::try_from(page).ok()?,
            file: crate::collectors::file::KeptFile::default(),
        })
    }

    /// (resident bytes, CPU seconds) now.
    fn sample(&mut self) -> Option<(u64, f64)> {
        let text = self.file.read(Path::new("/proc/self/stat")).ok()?;
        let st = faultline_chaos::procfs::parse_stat(text)?;
        let cpu = st.utime.saturating_add(st.stime) as f64 / self.ticks_per_second;
        Some((st.rss_pages.saturating_mul(self.page_bytes), cpu))
    }
}

/// A collector's failures (counted for `faultline.collector.errors`; logged once, then a
/// summary a minute, then on recovery) and its last run as `faultline status` shows it.
struct Health {
    errors: u64,
    failing: Repeated,
    run: CollectorStatus,
}

impl Health {
    fn of(c: &dyn Collector) -> Self {
        Self {
            errors: 0,
            failing: Repeated::default(),
            run: CollectorStatus {
                name: c.name().to_owned(),
                last_duration_seconds: None,
                errors: 0,
                last_error: None,
            },
        }
    }
}

/// One collection pass over all collectors, with the state that spans cycles.
pub struct Cycle {
    collectors: Vec<Box<dyn Collector>>,
    ctx: Context,
    resource: Arc<Resource>,
    /// Beside each collector (same index): its failed runs and outage.
    health: Vec<Health>,
    /// Each collector's last run, for `faultline status`, updated in place every cycle.
    status: SharedCollectors,
    agent_start_unix_nanos: u64,
    last_duration: Option<Duration>,
    self_process: Option<SelfProcess>,
    log_stats: Option<Arc<LogStats>>,
    /// The host resource's metrics of the last cycle and their number of points: the next
    /// cycle lays them out first
    /// ([`faultline_exporters::model::ResourceMetrics::lay_out`]), so that its point vectors
    /// are sized from the last cycle instead of growing 1 → 4 → 8 → 16 → 32.
    host_shape: Vec<(Metric, usize)>,
}

impl std::fmt::Debug for Cycle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cycle")
            .field(
                "collectors",
                &self.collectors.iter().map(|c| c.name()).collect::<Vec<_>>(),
            )
            .field("ctx", &self.ctx)
            .finish_non_exhaustive()
    }
}

impl Cycle {
    /// Builds the collectors and detects the resource.
    pub fn new(config: &Config) -> anyhow::Result<Self> {
        let roots = config.roots();
        let boot_time_unix_nanos =
            collectors::host::boot_time_unix_nanos(&roots).with_context(|| {
                format!(
                    "cannot read the host boot time under {}",
                    roots.proc.display()
                )
            })?;
        let mut collectors = if config.host.enabled {
            collectors::host::collectors(&config.host).context("host collectors")?
        } else {
            Vec::new()
        };
        let resource = Arc::new(resource::detect(
            &roots,
            &ResourceInputs::from_env(config.resource.attributes.clone()),
        ));
        if config.containers.enabled
            && let Some(c) = collectors::container::ContainerCollector::start(
                &config.containers,
                &roots,
                resource.clone(),
            )
            .context("container collector")?
        {
            collectors.push(Box::new(c));
        }
        Ok(Self {
            health: collectors.iter().map(|c| Health::of(c.as_ref())).collect(),
            collectors,
            ctx: Context {
                roots,
                boot_time_unix_nanos,
            },
            resource,
            status: SharedCollectors::default(),
            agent_start_unix_nanos: now_unix_nanos(),
            last_duration: None,
            self_process: SelfProcess::new(),
            log_stats: None,
            host_shape: Vec::new(),
        })
    }

    /// Adds a collector that runs after the built-in ones (backup results, for example).
    pub fn add_collector(&mut self, c: Box<dyn Collector>) {
        self.health.push(Health::of(c.as_ref()));
        self.collectors.push(c);
    }

    /// Reports the OTLP log pipeline's counters from now on.
    pub fn set_log_stats(&mut self, stats: Arc<LogStats>) {
        self.log_stats = Some(stats);
    }

    /// Each collector's last run, updated every cycle.
    pub fn status(&self) -> &SharedCollectors {
        &self.status
    }

    /// The host resource.
    pub fn resource(&self) -> &Arc<Resource> {
        &self.resource
    }

    /// Runs every collector once and adds the agent's own telemetry.
    pub fn collect(&mut self, export: Option<&ExportStats>) -> Batch {
        let started = Instant::now();
        let mut batch = Batch::new(
            now_unix_nanos(),
            self.resource.clone(),
            self.ctx.boot_time_unix_nanos,
        );
        batch.host().lay_out(&self.host_shape);
        for (c, health) in self.collectors.iter_mut().zip(&mut self.health) {
            let began = Instant::now();
            let result = c.collect(&self.ctx, &mut batch);
            let took = began.elapsed();
            let name = c.name();
            health.run.last_error = match result {
                Ok(()) => {
                    if let Some(r) = health.failing.succeeded() {
                        info!(
                            collector = name,
                            "collector {name} works again after {} ({} failed runs)",
                            repeat::human(r.lasted),
                            r.attempts
                        );
                    }
                    None
                }
                Err(e) => {
                    health.errors += 1;
                    debug!(collector = name, error = %e, "collector failed");
                    match health.failing.failed() {
                        Failure::First => {
                            warn!(collector = name, error = %e, "collector {name} failed; the rest of the cycle goes on (counted in faultline.collector.errors; a summary follows at most once a minute while it fails)")
                        }
                        Failure::Summary { attempts, lasting } => {
                            warn!(collector = name, error = %e, "collector {name} still failing after {}: {attempts} failed runs", repeat::human(lasting))
                        }
                        Failure::Quiet => {}
                    }
                    Some(e.to_string())
                }
            };
            health.run.last_duration_seconds = Some(took.as_secs_f64());
            health.run.errors = health.errors;
        }
        // Copied under the lock reusing the shared list's allocations: the lock is held for
        // the copy only, not while the collectors run.
        let mut status = self
            .status
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        status.resize_with(self.health.len(), || self.health[0].run.clone());
        for (shared, health) in status.iter_mut().zip(&self.health) {
            // Field by field: a derived `clone_from` would allocate the strings anew.
            shared.name.clone_from(&health.run.name);
            shared.last_duration_seconds = health.run.last_duration_seconds;
            shared.errors = health.run.errors;
            shared.last_error.clone_from(&health.run.last_error);
        }
        drop(status);
        self.record_self(&mut batch, export);
        let host = batch.host();
        host.drop_empty();
        host.shape_into(&mut self.host_shape);
        self.last_duration = Some(started.elapsed());
        batch
    }

    fn record_self(&mut self, batch: &mut Batch, export: Option<&ExportStats>) {
        let start = self.agent_start_unix_nanos;
        let host = batch.host();
        if let Some((rss, cpu)) = self.self_process.as_mut().and_then(SelfProcess::sample) {
            host.record(&AGENT_MEMORY_RSS, Attributes::new(), rss);
            host.record_since(&AGENT_CPU_TIME, Attributes::new(), cpu, start);
        }
        if let Some(d) = self.last_duration {
            host.record(&CYCLE_DURATION, Attributes::new(), d.as_secs_f64());
        }
        for (c, health) in self.collectors.iter().zip(&self.health) {
            let n = health.errors;
            host.record_since(
                &COLLECTOR_ERRORS,
                Attributes::new().with("faultline.collector", c.name()),
                n,
                start,
            );
        }
        if let Some(s) = export {
            let get = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
            host.record_since(&EXPORT_ATTEMPTS, Attributes::new(), get(&s.attempts), start);
            host.record_since(&EXPORT_FAILURES, Attributes::new(), get(&s.failures), start);
            host.record_since(&EXPORT_SENT, Attributes::new(), get(&s.sent_points), start);
            host.record_since(
                &EXPORT_DROPPED,
                Attributes::new(),
                get(&s.dropped_points),
                start,
            );
            host.record_since(
                &EXPORT_QUEUE_LENGTH,
                Attributes::new(),
                get(&s.queued_batches),
                start,
            );
        }
        if let Some(s) = &self.log_stats {
            let get = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
            host.record_since(
                &EXPORT_LOG_RECORDS_SENT,
                Attributes::new(),
                get(&s.sent),
                start,
            );
            host.record_since(
                &EXPORT_LOG_RECORDS_DROPPED,
                Attributes::new(),
                get(&s.dropped),
                start,
            );
        }
    }
}

/// Runs the agent until SIGTERM or SIGINT, then drains within the grace period.
pub async fn run(config: Config, state_dir: &Path, config_file: &str) -> anyhow::Result<()> {
    let started = Instant::now();
    if let Err(e) = std::fs::create_dir_all(state_dir) {
        warn!(state_dir = %state_dir.display(), error = %e, "cannot create the state directory; state that must survive a restart cannot be kept (use --state-dir)");
    }
    // Revert faults a previous run left behind (killed agent) before anything else starts.
    // Its audit events wait in the channel until the OTLP log pipeline exists.
    let audit = faultline_chaos::Audit::default();
    let mut recovered = audit.subscribe();
    let engine = crate::faults::open_engine(&config.fault_settings(), state_dir, audit);
    match &engine {
        Ok(engine) => crate::faults::recover_at_start(engine).await,
        Err(e) => error!(error = %e, "fault journal recovery skipped"),
    }
    let cancel = CancellationToken::new();
    let tracker = TaskTracker::new();
    let grace = config.shutdown_grace.0;

    let mut cycle = Cycle::new(&config)?;
    // Traces and logs. Their forwarder has its own token and tracker: it stops only after
    // every producer has, so the events of the shutdown itself (fault reverts) are sent too.
    let logs_stop = CancellationToken::new();
    let logs_tracker = TaskTracker::new();
    let signals = crate::telemetry::events::start(
        &config.export.otlp,
        grace,
        &cycle.resource().clone(),
        &logs_stop,
        &logs_tracker,
    )?;
    if let Some(s) = &signals {
        cycle.set_log_stats(s.logs.stats().clone());
        while let Ok(e) = recovered.try_recv() {
            s.logs.emit(&crate::telemetry::events::fault_audit(&e));
        }
    }
    let mut backup_results = None;
    if !config.backups.is_empty() {
        let backups = crate::backup::scheduler::spawn(
            &config.backups,
            state_dir,
            config.history.pass_rate_window.0,
            signals.as_ref().map(|s| &s.logs),
            &cancel,
            &tracker,
        );
        backup_results = Some(backups.latest().clone());
        cycle.add_collector(Box::new(backups));
    }

    let export: Option<ExportHandle> = if config.export.otlp.enabled {
        let settings = export::resolve(&config.export.otlp).context("OTLP exporter settings")?;
        let url = settings.transport.url.clone();
        let protocol = settings.transport.protocol;
        let transport = Transport::new(settings.transport).context("OTLP exporter")?;
        let stats = Arc::new(ExportStats::new(url.clone()));
        let (handle, sender) = match open_disk_queue(&config, state_dir).await {
            Some(disk) => {
                otlp::pipeline_on_disk(transport, settings.retry, settings.max_batches, disk, stats)
            }
            None => otlp::pipeline(transport, settings.retry, settings.max_batches, stats),
        };
        tracker.spawn(
            sender
                .run(cancel.clone(), grace)
                .instrument(tracing::info_span!("otlp_sender")),
        );
        info!(%url, ?protocol, "exporting metrics over OTLP");
        Some(handle)
    } else {
        None
    };

    spawn_retention(state_dir, &config.history, &cancel, &tracker);
    let (latest_tx, latest_rx) = watch::channel::<Option<Arc<Batch>>>(None);
    // Drills, the fault engine and the API (when configured), owned by the same token/tracker.
    drop(recovered);
    let mut status = Sources {
        started,
        config_file: config_file.to_owned(),
        state_dir: state_dir.to_path_buf(),
        interval: config.interval.0,
        collectors: cycle.status().clone(),
        export: export.clone(),
        engine: None,
        drills: None,
        backups: backup_results,
    };
    let spawned = drills::spawn(
        &config,
        engine,
        state_dir,
        drills::Inputs {
            latest: latest_rx.clone(),
            info: crate::api::AgentInfo::new(
                std::env::var("NODE_NAME").ok().as_deref(),
                cycle.resource(),
            ),
            signals,
        },
        &mut status,
        &cancel,
        &tracker,
    )
    .await?;
    let status_socket = status_socket::start(state_dir, status, &cancel, &tracker).await;
    if let Some(drills) = spawned {
        cycle.add_collector(Box::new(drills));
    }
    if config.export.prometheus.enabled {
        let listen = config.export.prometheus.listen;
        let endpoint = prometheus_endpoint::Endpoint::bind(listen).await?;
        tracker.spawn(
            endpoint
                .run(latest_rx, cancel.clone())
                .instrument(tracing::info_span!("prometheus_endpoint")),
        );
    }

    tracker.spawn(wait_for_stop(cancel.clone()).instrument(tracing::info_span!("stop_requests")));

    // systemd Type=notify: ready once everything above is up; feed the watchdog from an
    // owned task (absent NOTIFY_SOCKET, nothing happens).
    let notifier = start_notifications(&cancel, &tracker);

    info!(interval = %config.interval, collectors = ?cycle.collectors.iter().map(|c| c.name()).collect::<Vec<_>>(), "faultline started");
    let collecting = collect_loop::CollectLoop::start(
        cycle,
        config.interval.0,
        collect_loop::Outputs {
            export,
            latest: latest_tx,
        },
    );
    // Set when collection failed: the agent then stops, flushes as usual and exits non-zero.
    let mut failure: Option<anyhow::Error> = None;
    match collecting {
        Ok(mut collecting) => {
            let ended = tokio::select! {
                () = cancel.cancelled() => false,
                () = collecting.ended() => true,
            };
            if ended {
                cancel.cancel();
            }
            match collecting.stop(grace).await {
                Ok(()) if ended => {
                    failure = Some(anyhow::anyhow!("the collection thread ended on its own"));
                }
                Ok(()) => {}
                Err(e) => {
                    error!(error = %e, "collection stopped");
                    failure = Some(e.into());
                }
            }
        }
        Err(e) => {
            error!(error = %e, "cannot start the collection thread; stopping");
            cancel.cancel();
            failure = Some(anyhow::Error::new(e).context("cannot start the collection thread"));
        }
    }

    if let Some(n) = &notifier {
        n.notify_or_log("STOPPING=1");
    }
    info!(grace = %repeat::human(grace), "stopping: collection stopped, flushing the export queue");
    let stopping = Instant::now();
    tracker.close();
    if tokio::time::timeout(grace + Duration::from_secs(1), tracker.wait())
        .await
        .is_err()
    {
        warn!("some tasks did not stop within the grace period");
    }
    // Every producer of log records has stopped: send what is left (at least one second
    // even when the other tasks used the grace period up).
    logs_stop.cancel();
    logs_tracker.close();
    let left = grace
        .saturating_sub(stopping.elapsed())
        .max(Duration::from_secs(1));
    if tokio::time::timeout(left, logs_tracker.wait())
        .await
        .is_err()
    {
        warn!("OTLP log records were left unsent at shutdown");
    }
    if let Some(s) = status_socket {
        s.remove();
    }
    info!("faultline stopped");
    match failure {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// The cycle after which the start-up code's pages are handed back ([`residency`]):
/// by then every collector, the exporter and its first sends have run.
const RELEASE_STARTUP_PAGES_AFTER: u64 = 3;

/// How often the history's retention runs.
const RETENTION_EVERY: Duration = Duration::from_secs(600);

/// Applies `history:` retention at start and every [`RETENTION_EVERY`], on the blocking pool.
fn spawn_retention(
    state_dir: &Path,
    cfg: &crate::posture::HistoryConfig,
    cancel: &CancellationToken,
    tracker: &TaskTracker,
) {
    let (dir, cfg, cancel) = (state_dir.to_path_buf(), cfg.clone(), cancel.clone());
    tracker.spawn(
        async move {
            loop {
                let (d, c) = (dir.clone(), cfg.clone());
                let now = crate::backup::now_unix();
                if let Err(e) = tokio::task::spawn_blocking(move || {
                    crate::posture::retention::apply(&d, &c, now)
                })
                .await
                {
                    warn!(error = %e, "history retention did not finish");
                }
                tokio::select! {
                    () = cancel.cancelled() => return,
                    () = tokio::time::sleep(RETENTION_EVERY) => {}
                }
            }
        }
        .instrument(tracing::info_span!("history_retention")),
    );
}

fn release_startup_pages() {
    match residency::release_startup_pages() {
        Ok(r) => debug!(
            mappings = r.mappings,
            resident_kib = r.resident_kib,
            "start-up code pages handed back to the kernel"
        ),
        Err(e) => debug!(error = %e, "start-up code pages stay resident"),
    }
}

/// Opens the persistent export queue in `<state-dir>/queue` when configured; `None` (with a
/// warning) when it is off or unusable, so the agent exports from memory instead of not at all.
async fn open_disk_queue(
    config: &Config,
    state_dir: &Path,
) -> Option<(otlp::DiskQueue, Vec<otlp::disk_queue::Stored>)> {
    let queue = &config.export.otlp.queue;
    if !queue.persistent {
        return None;
    }
    let dir = state_dir.join("queue");
    let max_bytes = queue.max_bytes.0;
    let opened = tokio::task::spawn_blocking(move || otlp::DiskQueue::open(&dir, max_bytes)).await;
    match opened {
        Ok(Ok(disk)) => {
            info!(dir = %disk.0.dir().display(), max_bytes = %queue.max_bytes, "export queue on disk");
            Some(disk)
        }
        Ok(Err(e)) => {
            warn!(error = %e, "cannot use the disk export queue; queuing in memory (unsent data is lost on restart; set export.otlp.queue.persistent: false to silence this)");
            None
        }
        Err(e) => {
            warn!(error = %e, "opening the disk export queue failed; queuing in memory");
            None
        }
    }
}

/// Sends `READY=1` and starts the watchdog task when systemd asked for notifications.
fn start_notifications(
    cancel: &CancellationToken,
    tracker: &TaskTracker,
) -> Option<Arc<sd_notify::Notifier>> {
    let notifier = match sd_notify::Notifier::from_env() {
        Ok(Some(n)) => Arc::new(n),
        Ok(None) => return None,
        Err(e) => {
            warn!(error = %e, "systemd notifications disabled");
            return None;
        }
    };
    notifier.notify_or_log("READY=1");
    if let Some(timeout) = sd_notify::watchdog_timeout_from_env() {
        info!(timeout = %repeat::human(timeout), "feeding the systemd watchdog every half timeout");
        tracker.spawn(
            sd_notify::watchdog(notifier.clone(), timeout, cancel.clone())
                .instrument(tracing::info_span!("sd_watchdog")),
        );
    }
    Some(notifier)
}

async fn wait_for_stop(cancel: CancellationToken) {
    let mut stops = match crate::stop::StopRequests::install() {
        Ok(s) => s,
        Err(e) => {
            error!(error = %e, "cannot install signal handlers");
            return;
        }
    };
    tokio::select! {
        () = cancel.cancelled() => return,
        sig = stops.recv() => info!("{sig} received"),
    }
    cancel.cancel();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collectors::CollectError;

    #[test]
    fn every_host_and_self_metric_is_in_the_metrics_reference() {
        crate::test_support::assert_in_metrics_reference(
            collectors::host::all_metric_descs()
                .into_iter()
                .chain(SELF_METRICS.iter().copied()),
        );
    }

    #[test]
    fn self_sample_matches_the_process_status() {
        let mut p = SelfProcess::new().unwrap();
        let (rss, cpu) = p.sample().unwrap();
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let vm_rss_kib: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap();
        // The two are read a moment apart by a process that may allocate in between.
        let diff = (rss / 1024).abs_diff(vm_rss_kib);
        assert!(diff < 8 * 1024, "rss {rss} B vs VmRSS {vm_rss_kib} KiB");
        assert!(cpu >= 0.0);
    }

    /// A collector that always fails, counting its calls.
    struct Failing;
    impl Collector for Failing {
        fn name(&self) -> &'static str {
            "test.failing"
        }
        fn collect(&mut self, _: &Context, _: &mut Batch) -> Result<(), CollectError> {
            Err(CollectError::Sys {
                what: "test",
                subject: String::new(),
                reason: "always fails".into(),
            })
        }
    }

    /// Copies a directory tree (the fixtures hold only files and directories).
    fn copy_tree(from: &std::path::Path, to: &std::path::Path) {
        std::fs::create_dir_all(to).unwrap();
        for e in std::fs::read_dir(from).unwrap() {
            let e = e.unwrap();
            let dest = to.join(e.file_name());
            if e.file_type().unwrap().is_dir() {
                copy_tree(&e.path(), &dest);
            } else {
                std::fs::copy(e.path(), dest).unwrap();
            }
        }
    }

    #[test]
    fn failing_collectors_are_counted_and_the_rest_of_the_cycle_still_records() {
        use crate::collectors::host::test_support::{fixture_dir, value};
        // A host tree whose meminfo is gone: the memory collector fails every cycle, a
        // collector added after the built-ins fails too; everything else must still arrive.
        let dir = tempfile::tempdir().unwrap();
        copy_tree(&fixture_dir("real").join("proc"), &dir.path().join("proc"));
        std::fs::remove_file(dir.path().join("proc/meminfo")).unwrap();
        let config = Config {
            proc_root: Some(dir.path().join("proc")),
            ..Config::default()
        };
        let mut cycle = Cycle::new(&config).unwrap();
        cycle.add_collector(Box::new(Failing));
        cycle.collect(None);
        let b = cycle.collect(None);
        assert!(b.host_metric("system.memory.usage").is_none());
        for name in [
            "system.cpu.time",
            "system.cpu.load_average.1m",
            "system.paging.operations",
            "faultline.agent.memory.rss",
        ] {
            assert!(b.host_metric(name).is_some(), "{name} missing");
        }
        let errors = |c: &str| {
            value(
                &b,
                "faultline.collector.errors",
                &[("faultline.collector", c)],
            )
        };
        assert_eq!(errors("host.memory"), 2.0);
        assert_eq!(errors("test.failing"), 2.0);
        assert_eq!(errors("host.cpu"), 0.0);
        // Each failing collector is in an outage (logged once, then summarised), and its
        // last run is in the status.
        let failing = |name: &str| {
            let i = cycle
                .collectors
                .iter()
                .position(|c| c.name() == name)
                .unwrap();
            cycle.health[i].failing.failing()
        };
        assert!(failing("host.memory"));
        assert!(failing("test.failing"));
        assert!(!failing("host.cpu"));
        let status = cycle.status().lock().unwrap().clone();
        let failing = status.iter().find(|c| c.name == "test.failing").unwrap();
        assert_eq!(failing.errors, 2);
        assert!(
            failing
                .last_error
                .as_deref()
                .unwrap()
                .contains("always fails")
        );
        let cpu = status.iter().find(|c| c.name == "host.cpu").unwrap();
        assert_eq!((cpu.errors, cpu.last_error.as_deref()), (0, None));
        assert!(cpu.last_duration_seconds.is_some());
    }

    #[test]
    fn one_cycle_on_this_host_records_host_and_self_metrics() {
        let mut cycle = Cycle::new(&Config::default()).unwrap();
        let first = cycle.collect(None);
        assert!(first.host_metric("system.cpu.time").is_some());
        assert!(first.host_metric("faultline.collector.errors").is_some());
        // The cycle duration is that of the previous cycle: absent first, present after.
        assert!(first.host_metric("faultline.cycle.duration").is_none());
        let second = cycle.collect(Some(&ExportStats::default()));
        assert!(second.host_metric("faultline.cycle.duration").is_some());
        assert!(
            second
                .host_metric("faultline.export.queue.length")
                .is_some()
        );
    }
}
