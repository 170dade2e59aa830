//! `faultline drill run SCENARIO.yaml [--report-json F] [--junit F] [--html F]`: runs one drill
//! in this process (its own fault engine on the state directory's journal, recovered
//! first), prints a readable summary, writes the requested reports, keeps the report in the
//! history (`<state-dir>/drills/`) and, when the config names an OTLP endpoint, exports the
//! trace, the timeline and every fault audit event ([`crate::telemetry::events::OneShot`]).
//!
//! Exit codes: 0 every objective met; 1 an objective missed, no recovery, the steady state
//! failed, or the drill was aborted; 2 a scenario or configuration error (nothing ran); 3
//! refused because another drill — in the agent or another `drill run` on the same
//! `--state-dir` — holds one of its targets (nothing ran; see [`crate::drill::locks`]).
//! SIGINT/SIGTERM abort the drill: every fault is reverted before the process exits.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use clap::Subcommand;
use faultline_chaos::Requester;
use tokio_util::sync::CancellationToken;

use crate::cli::LogFormatArg;
use crate::config::Config;
use crate::drill::execute::{self, Live, RunCtx};
use crate::drill::history::History;
use crate::drill::probe::MetricSource;
use crate::drill::report::{self, DrillReport, Verdict};
use crate::drill::scenario;
use crate::outcome::EXIT_CONFIG;

/// `faultline drill …`
#[derive(Debug, Subcommand)]
pub enum DrillCommand {
    /// Run a scenario now, in this process.
    Run {
        /// The scenario file (YAML or JSON).
        scenario: PathBuf,
        /// Agent config (chaos limits, backup sources, OTLP); the embedded default when omitted.
        #[arg(long, short, env = "FAULTLINE_CONFIG")]
        config: Option<PathBuf>,
        /// Write the JSON report here.
        #[arg(long)]
        report_json: Option<PathBuf>,
        /// Write a JUnit XML file here (one test case per objective).
        #[arg(long)]
        junit: Option<PathBuf>,
        /// Write the HTML timeline here.
        #[arg(long)]
        html: Option<PathBuf>,
    },
    /// Check a scenario file without running it.
    Validate {
        /// The scenario file.
        scenario: PathBuf,
        /// Agent config (backup sources, chaos limits).
        #[arg(long, short, env = "FAULTLINE_CONFIG")]
        config: Option<PathBuf>,
    },
}

/// Writes the JSON, JUnit and HTML renderings where asked.
pub fn write_reports(
    r: &DrillReport,
    json: Option<&Path>,
    junit: Option<&Path>,
    html: Option<&Path>,
) -> Result<(), String> {
    let write = |p: &Path, text: String| {
        std::fs::write(p, text).map_err(|e| format!("cannot write {}: {e}", p.display()))
    };
    if let Some(p) = json {
        let text = serde_json::to_string_pretty(r).map_err(|e| format!("JSON: {e}"))?;
        write(p, text)?;
    }
    if let Some(p) = junit {
        write(p, report::junit::render(r))?;
    }
    if let Some(p) = html {
        write(p, report::html::render(r))?;
    }
    Ok(())
}

/// Runs a `drill` subcommand.
pub fn run(cmd: DrillCommand, state_dir: &Path, log_format: Option<LogFormatArg>) -> ExitCode {
    let config_path = match &cmd {
        DrillCommand::Run { config, .. } | DrillCommand::Validate { config, .. } => config.clone(),
    };
    let loaded = match crate::cli::load_for_command(config_path.as_deref(), log_format) {
        Ok(l) => l,
        Err(code) => return code,
    };
    let known = loaded.config.drill_known();
    match cmd {
        DrillCommand::Validate { scenario, .. } => match scenario::load(&scenario, &known) {
            Ok(s) => {
                println!("{}: ok (scenario {})", scenario.display(), s.name);
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("faultline: scenario file error: {e}");
                ExitCode::from(EXIT_CONFIG)
            }
        },
        DrillCommand::Run {
            scenario,
            report_json,
            junit,
            html,
            ..
        } => {
            let sc = match scenario::load(&scenario, &known) {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("faultline: scenario file error: {e}");
                    return ExitCode::from(EXIT_CONFIG);
                }
            };
            let rt = match crate::cli::command_runtime() {
                Ok(rt) => rt,
                Err(code) => return code,
            };
            rt.block_on(run_one(
                loaded.config,
                sc,
                state_dir,
                Outputs {
                    json: report_json,
                    junit,
                    html,
                },
            ))
        }
    }
}

struct Outputs {
    json: Option<PathBuf>,
    junit: Option<PathBuf>,
    html: Option<PathBuf>,
}

async fn run_one(
    config: Config,
    mut sc: scenario::Scenario,
    state_dir: &Path,
    out: Outputs,
) -> ExitCode {
    let mut stops = match crate::stop::StopRequests::install() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("faultline: cannot install signal handlers: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Err(e) = std::fs::create_dir_all(state_dir) {
        eprintln!(
            "faultline: cannot create the state directory {}: {e}",
            state_dir.display()
        );
        return ExitCode::FAILURE;
    }
    let engine = match crate::faults::open_engine(
        &config.fault_settings(),
        state_dir,
        faultline_chaos::Audit::default(),
    ) {
        Ok(e) => e,
        Err(e) => {
            eprintln!("faultline: {e}");
            return ExitCode::FAILURE;
        }
    };
    // Every fault audit of this run (recovery included) goes to the backend as it happens.
    let otlp = config.one_shot_signals("drill run");
    if let Some(o) = &otlp {
        o.forward_audit(engine.audit());
    }
    crate::faults::recover_at_start(&engine).await;
    let requester = Requester::cli();
    let mut targets = match execute::targets(&mut sc, &engine, &requester).await {
        Ok(t) => t,
        Err(e) => {
            eprintln!("faultline: scenario error: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    targets.push(format!("scenario:{}", sc.name));
    let id = crate::drill::service::new_id();
    // The same target locks the agent's drills take: never two drills on one target.
    let holder = format!(
        "drill {id} ({}) in `faultline drill run` pid {}",
        sc.name,
        std::process::id()
    );
    let dir = state_dir.to_path_buf();
    let _locks = match tokio::task::spawn_blocking(move || {
        crate::drill::locks::acquire(&dir, &targets, &holder)
    })
    .await
    {
        Ok(Ok(l)) => l,
        Ok(Err(e)) => {
            eprintln!("faultline: drill refused, nothing ran: {e}");
            return ExitCode::from(crate::outcome::Outcome::Busy.exit_code());
        }
        Err(e) => {
            eprintln!("faultline: target lock task failed: {e}");
            return ExitCode::FAILURE;
        }
    };
    let needs_metrics = sc
        .steady_state
        .iter()
        .chain(&sc.abort_when)
        .any(|p| p.metric.is_some());
    let metrics: Option<Arc<dyn MetricSource>> = if needs_metrics {
        match crate::runtime::Cycle::new(&config) {
            Ok(c) => Some(Arc::new(CollectSource(Arc::new(std::sync::Mutex::new(c))))),
            Err(e) => {
                eprintln!("faultline: metric probes need the collectors: {e:#}");
                return ExitCode::FAILURE;
            }
        }
    } else {
        None
    };
    let abort = CancellationToken::new();
    let live = Arc::new(Live::default());
    let ctx = RunCtx {
        engine: engine.clone(),
        metrics,
        backups: Arc::new(config.backups.clone()),
        state_dir: state_dir.to_path_buf(),
        requester,
        abort: abort.clone(),
        live: live.clone(),
    };
    println!("drill {id} ({}) started", sc.name);
    let drill = execute::run(&id, &sc, ctx);
    tokio::pin!(drill);
    let report = loop {
        tokio::select! {
            r = &mut drill => break r,
            sig = stops.recv() => { live.set_abort_reason(sig.into()); abort.cancel(); }
        }
    };
    // Nothing of this drill may outlive the process.
    for (fid, r) in engine.shutdown().await {
        if let Err(e) = r {
            eprintln!("faultline: revert of {fid} failed: {e}; run `faultline fault revert {fid}`");
        }
    }
    print!("{}", report.summary());
    let mut failed_write = false;
    if let Err(e) = write_reports(
        &report,
        out.json.as_deref(),
        out.junit.as_deref(),
        out.html.as_deref(),
    ) {
        eprintln!("faultline: {e}");
        failed_write = true;
    }
    let history = History::open(state_dir).and_then(|h| h.save(&report));
    if let Err(e) = history {
        eprintln!("faultline: cannot keep the report in the history: {e}");
    }
    if let Some(o) = otlp {
        crate::drill::service::send_otlp(&o.signals, &report).await;
        o.finish().await;
    }
    if report.verdict == Verdict::Passed && !failed_write {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Collects a fresh cycle on each call (`faultline drill run`, with no agent running).
struct CollectSource(pub Arc<std::sync::Mutex<crate::runtime::Cycle>>);

impl std::fmt::Debug for CollectSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CollectSource")
    }
}

impl crate::drill::probe::MetricSource for CollectSource {
    fn latest(
        &self,
    ) -> futures::future::BoxFuture<'_, Result<Arc<faultline_exporters::model::Batch>, String>>
    {
        let cycle = self.0.clone();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || {
                let mut c = cycle
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                Arc::new(c.collect(None))
            })
            .await
            .map_err(|e| format!("collection failed: {e}"))
        })
    }
}
