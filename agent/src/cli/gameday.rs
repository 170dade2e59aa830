//! `faultline gameday run GAMEDAY.yaml [--report-json F] [--html F]` and
//! `faultline gameday validate GAMEDAY.yaml`.
//!
//! Exit codes, as `drill run`: 0 every drill passed and every game objective was met; 1 a
//! drill did not pass, an agent was unreachable, an objective was missed, the game was
//! aborted, or the agents could not be found through DNS (nothing ran, no report); 2 the
//! game-day file (or a token or scenario file it names) is wrong, or its plan does not fit
//! the agents found (a node name not among them, a count above their number), and nothing
//! ran. SIGINT/SIGTERM abort the game: every agent's kill switch is pulled before the report
//! is written.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Subcommand;
use tokio_util::sync::CancellationToken;

use crate::cli::{EXIT_CONFIG, LogFormatArg, init_logging};
use crate::config::LoggingConfig;
use crate::gameday::client::NodeClient;
use crate::gameday::plan::{self, AgentSource};
use crate::gameday::report::{self, GameReport, GameVerdict};
use crate::gameday::{cast, discover};

/// `faultline gameday …`
#[derive(Debug, Subcommand)]
pub enum GameDayCommand {
    /// Run a game day: drills on many agents through their APIs, one combined report.
    Run {
        /// The game-day file.
        file: PathBuf,
        /// Write the combined JSON report here.
        #[arg(long)]
        report_json: Option<PathBuf>,
        /// Write the combined HTML report here.
        #[arg(long)]
        html: Option<PathBuf>,
    },
    /// Check a game-day file (and the token and scenario files it names) without running it.
    Validate {
        /// The game-day file.
        file: PathBuf,
    },
}

/// Runs a `gameday` subcommand.
pub fn run(cmd: GameDayCommand, log_format: Option<LogFormatArg>) -> ExitCode {
    init_logging(log_format, &LoggingConfig::default());
    let path = match &cmd {
        GameDayCommand::Run { file, .. } | GameDayCommand::Validate { file } => file.clone(),
    };
    let game = match plan::load(&path) {
        Ok(g) => g,
        Err(e) => {
            eprintln!("faultline: game-day file error: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let GameDayCommand::Run {
        report_json, html, ..
    } = cmd
    else {
        return validated(&path, &game);
    };
    let rt = match crate::cli::command_runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    let report = match rt.block_on(play(&game)) {
        Ok(r) => r,
        Err(Refused::Plan(e)) => {
            eprintln!("faultline: game-day file error: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
        Err(Refused::Other(e)) => {
            eprintln!("faultline: {e}");
            return ExitCode::FAILURE;
        }
    };
    print!("{}", report.summary());
    let wrote = write_reports(&report, report_json.as_deref(), html.as_deref());
    if let Err(e) = &wrote {
        eprintln!("faultline: {e}");
    }
    if report.verdict == GameVerdict::Passed && wrote.is_ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// `gameday validate`: an inventory's plan is also cast (its names and counts checked);
/// agents found through DNS are only known when the game runs.
fn validated(path: &Path, game: &plan::GameDay) -> ExitCode {
    let agents = match &game.agents {
        AgentSource::Inventory(list) => {
            let names: Vec<String> = list.iter().map(|a| a.name.clone()).collect();
            if let Err(e) = cast::cast(&game.stages, &names, game.file.seed.unwrap_or(0)) {
                eprintln!("faultline: game-day file error: {}: {e}", path.display());
                return ExitCode::from(EXIT_CONFIG);
            }
            format!("{} agents", list.len())
        }
        AgentSource::Dns(d) => format!("agents found at run time through DNS: {}", d.name),
    };
    println!(
        "{}: ok (game day {}: {agents}, {} stages)",
        path.display(),
        game.file.name,
        game.stages.len()
    );
    ExitCode::SUCCESS
}

/// Why a game did not start.
enum Refused {
    /// The plan does not fit the agents, or a client cannot be built from the file's settings.
    Plan(String),
    /// The agents could not be found, or signals could not be installed.
    Other(String),
}

/// Finds the agents, casts the plan on them, plays it; Ctrl-C aborts the game.
async fn play(game: &plan::GameDay) -> Result<GameReport, Refused> {
    let timeout = game.file.request_timeout.0;
    let (agents, discovery) = match &game.agents {
        AgentSource::Inventory(list) => (list.clone(), None),
        AgentSource::Dns(d) => {
            let (agents, found) = discover::discover(d, timeout)
                .await
                .map_err(|e| Refused::Other(format!("game day {}: {e}", game.file.name)))?;
            (agents, Some(found))
        }
    };
    let seed = game
        .file
        .seed
        .unwrap_or_else(|| u64::from(rand::random::<u32>()));
    let names: Vec<String> = agents.iter().map(|a| a.name.clone()).collect();
    let cast = cast::cast(&game.stages, &names, seed)
        .map_err(|e| Refused::Plan(format!("{}: {e}", game.source)))?;
    let mut clients = Vec::new();
    for a in agents {
        let name = a.name.clone();
        clients.push(
            NodeClient::new(a, timeout).map_err(|e| Refused::Plan(format!("agent {name}: {e}")))?,
        );
    }
    let mut stops = crate::stop::StopRequests::install()
        .map_err(|e| Refused::Other(format!("cannot install signal handlers: {e}")))?;
    let cancel = CancellationToken::new();
    println!(
        "game day {} started: {} agents, {} stages, seed {seed}",
        game.file.name,
        clients.len(),
        cast.stages.len()
    );
    let runner = crate::gameday::play::run(game, &cast, &clients, cancel.clone());
    tokio::pin!(runner);
    let mut report = loop {
        tokio::select! {
            r = &mut runner => break r,
            _ = stops.recv() => cancel.cancel(),
        }
    };
    report.discovery = discovery;
    Ok(report)
}

/// Writes the JSON and HTML renderings where asked, and logs their sizes and how long each
/// took (`game-day reports written`). The JSON goes to the file as it is serialised: a game
/// of a hundred agents' long drills makes tens of MiB of it, which need not sit in memory
/// beside the report.
pub fn write_reports(
    r: &GameReport,
    json: Option<&Path>,
    html: Option<&Path>,
) -> Result<(), String> {
    use std::io::Write as _;
    let cannot = |p: &Path, e: &dyn std::fmt::Display| format!("cannot write {}: {e}", p.display());
    let (mut json_bytes, mut json_ms, mut html_bytes, mut html_ms) = (0u64, 0.0, 0usize, 0.0);
    if let Some(p) = json {
        let t = std::time::Instant::now();
        let file = std::fs::File::create(p).map_err(|e| cannot(p, &e))?;
        let mut out = std::io::BufWriter::with_capacity(256 << 10, file);
        serde_json::to_writer_pretty(&mut out, r).map_err(|e| cannot(p, &e))?;
        let file = out.into_inner().map_err(|e| cannot(p, &e.error()))?;
        json_bytes = file.metadata().map(|m| m.len()).unwrap_or(0);
        json_ms = t.elapsed().as_secs_f64() * 1e3;
    }
    if let Some(p) = html {
        let t = std::time::Instant::now();
        let page = report::html(r);
        html_bytes = page.len();
        std::fs::File::create(p)
            .and_then(|mut f| f.write_all(page.as_bytes()))
            .map_err(|e| cannot(p, &e))?;
        html_ms = t.elapsed().as_secs_f64() * 1e3;
    }
    if json.is_some() || html.is_some() {
        tracing::info!(
            json_bytes,
            json_ms,
            html_bytes,
            html_ms,
            runs = r.runs.len(),
            "game-day reports written"
        );
    }
    Ok(())
}
