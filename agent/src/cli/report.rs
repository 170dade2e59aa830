//! `faultline report posture`: the DR posture report of this node, from its history under
//! `--state-dir` (and the config's `drills:` and `backups:`, for what it is meant to prove),
//! or of a fleet with `--agents GAMEDAY.yaml`: every agent of a game-day file (listed, or
//! found through DNS) asked for its history through `GET /v1/history`.
//!
//! Exit codes: 0 the report was written (an unreachable agent is listed in it, and named on
//! stderr); 1 it could not be written; 2 a configuration, game-day file or usage error.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand, ValueEnum};
use faultline_chaos::units::HumanDuration;

use crate::cli::{EXIT_CONFIG, LogFormatArg, init_logging};
use crate::config::LoggingConfig;
use crate::drill::schedule;
use crate::gameday::client::NodeClient;
use crate::gameday::discover;
use crate::gameday::plan::{self, AgentSource};
use crate::posture::history::{self, Catalog};
use crate::posture::report::{self, NodeEvidence, Options};
use crate::posture::{fleet, render};

/// `faultline report …`
#[derive(Debug, Subcommand)]
pub enum ReportCommand {
    /// DR posture over a period: drills against their objectives, backup freshness and
    /// restore tests, trends and gaps, by service.
    Posture(PostureArgs),
}

/// Arguments of `report posture`.
#[derive(Debug, Args)]
pub struct PostureArgs {
    /// Config file (its `drills:` and `backups:` say what the node should prove); the
    /// embedded default when omitted.
    #[arg(long, short, env = "FAULTLINE_CONFIG")]
    pub config: Option<PathBuf>,
    /// The fleet: every agent of this game-day file, through its API.
    #[arg(long, value_name = "GAMEDAY.yaml")]
    pub agents: Option<PathBuf>,
    /// The period: from this long ago until now.
    #[arg(long, default_value = "90d")]
    pub since: HumanDuration,
    /// Only this service.
    #[arg(long)]
    pub service: Option<String>,
    /// Output format.
    #[arg(long, value_enum, default_value = "html")]
    pub format: Format,
    /// Write here instead of stdout.
    #[arg(long, short)]
    pub output: Option<PathBuf>,
}

/// `--format`.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Format {
    /// A self-contained page with plots (prints to PDF).
    Html,
    /// The documented JSON (docs/POSTURE.md).
    Json,
    /// JUnit XML: one case per objective over the period.
    Junit,
    /// Markdown tables.
    Md,
}

/// Runs `faultline report …`.
pub fn run(cmd: ReportCommand, state_dir: &Path, log_format: Option<LogFormatArg>) -> ExitCode {
    init_logging(log_format, &LoggingConfig::default());
    match cmd {
        ReportCommand::Posture(args) => posture(&args, state_dir),
    }
}

fn config_error(msg: &str) -> ExitCode {
    eprintln!("faultline: configuration error: {msg}");
    ExitCode::from(EXIT_CONFIG)
}

fn posture(args: &PostureArgs, state_dir: &Path) -> ExitCode {
    let until = crate::backup::now_unix();
    let opt = Options {
        since: until - args.since.0.as_secs_f64(),
        until,
        service: args.service.clone(),
    };
    let evidence = match &args.agents {
        Some(file) => match fleet_evidence(file, opt.since) {
            Ok(e) => e,
            Err(code) => return code,
        },
        None => match local_evidence(args.config.as_deref(), state_dir, opt.since) {
            Ok(e) => vec![e],
            Err(code) => return code,
        },
    };
    for n in &evidence {
        if let Err(e) = &n.history {
            eprintln!("faultline: agent {} is unreachable: {e}", n.node);
        }
    }
    let p = report::build(&evidence, &opt);
    let text = match args.format {
        Format::Html => render::html(&p),
        Format::Junit => render::junit(&p),
        Format::Md => render::markdown(&p),
        Format::Json => match serde_json::to_string_pretty(&p) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("faultline: cannot encode the report: {e}");
                return ExitCode::FAILURE;
            }
        },
    };
    let written = match &args.output {
        Some(path) => std::fs::write(path, text.as_bytes())
            .map_err(|e| format!("cannot write {}: {e}", path.display())),
        None => {
            use std::io::Write as _;
            let mut out = std::io::stdout().lock();
            out.write_all(text.as_bytes())
                .and_then(|()| out.flush())
                .map_err(|e| format!("cannot write the report: {e}"))
        }
    };
    match written {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("faultline: {e}");
            ExitCode::FAILURE
        }
    }
}

/// This node: its history, and what its config says it should prove.
fn local_evidence(
    config: Option<&Path>,
    state_dir: &Path,
    since: f64,
) -> Result<NodeEvidence, ExitCode> {
    let loaded = crate::config::load(config).map_err(|e| config_error(&e.to_string()))?;
    let c = &loaded.config;
    let drills = schedule::load(&c.drills, "", &loaded.source, &c.drill_known())
        .map_err(|e| config_error(&e.to_string()))?;
    let catalog = Catalog::new(&drills, &c.backups);
    let node = crate::api::AgentInfo::new(
        std::env::var("NODE_NAME").ok().as_deref(),
        &c.detect_resource(),
    )
    .node;
    let dir = std::fs::canonicalize(state_dir).unwrap_or_else(|_| state_dir.to_path_buf());
    Ok(NodeEvidence {
        node,
        drill_href: format!("file://{}/drills/{{id}}.json", dir.display()),
        history: history::read_all(state_dir, &catalog, since).map_err(|e| e.to_string()),
    })
}

/// The agents of a game-day file, each asked for its history.
fn fleet_evidence(file: &Path, since: f64) -> Result<Vec<NodeEvidence>, ExitCode> {
    let game = plan::load(file).map_err(|e| {
        eprintln!("faultline: game-day file error: {e}");
        ExitCode::from(EXIT_CONFIG)
    })?;
    let rt = crate::cli::command_runtime()?;
    let timeout = game.file.request_timeout.0.max(Duration::from_secs(1));
    rt.block_on(async {
        let agents = match &game.agents {
            AgentSource::Inventory(list) => list.clone(),
            AgentSource::Dns(d) => match discover::discover(d, timeout).await {
                Ok((agents, _)) => agents,
                Err(e) => {
                    eprintln!("faultline: {}: {e}", game.source);
                    return Err(ExitCode::FAILURE);
                }
            },
        };
        let mut clients = Vec::new();
        for a in agents {
            let name = a.name.clone();
            match NodeClient::new(a, timeout) {
                Ok(c) => clients.push(c.api().clone()),
                Err(e) => return Err(config_error(&format!("agent {name}: {e}"))),
            }
        }
        Ok(fleet::gather(&clients, since).await)
    })
}
