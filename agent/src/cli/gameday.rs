//! `faultline gameday run GAMEDAY.yaml [--report-json F] [--html F]` and
//! `faultline gameday validate GAMEDAY.yaml`.
//!
//! Exit codes, as `drill run`: 0 every drill passed and every game objective was met; 1 a
//! drill did not pass, an agent was unreachable, an objective was missed, or the game was
//! aborted; 2 the game-day file (or a token or scenario file it names) is wrong and nothing
//! ran. SIGINT/SIGTERM abort the game: every agent's kill switch is pulled before the
//! report is written.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Subcommand;
use tokio_util::sync::CancellationToken;

use crate::cli::{EXIT_CONFIG, LogFormatArg, init_logging};
use crate::config::LoggingConfig;
use crate::gameday::client::NodeClient;
use crate::gameday::plan;
use crate::gameday::report::{self, GameReport, GameVerdict};

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
        println!(
            "{}: ok (game day {}: {} agents, {} stages)",
            path.display(),
            game.file.name,
            game.agents.len(),
            game.stages.len()
        );
        return ExitCode::SUCCESS;
    };
    let mut clients = Vec::new();
    for a in &game.agents {
        match NodeClient::new(a.clone(), game.file.request_timeout.0) {
            Ok(c) => clients.push(c),
            Err(e) => {
                eprintln!("faultline: game-day file error: agent {}: {e}", a.name);
                return ExitCode::from(EXIT_CONFIG);
            }
        }
    }
    let rt = match crate::cli::command_runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    let report = match rt.block_on(play(&game, &clients)) {
        Ok(r) => r,
        Err(e) => {
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

async fn play(game: &plan::GameDay, clients: &[NodeClient]) -> Result<GameReport, String> {
    let mut stops = match crate::stop::StopRequests::install() {
        Ok(s) => s,
        Err(e) => return Err(format!("cannot install signal handlers: {e}")),
    };
    let cancel = CancellationToken::new();
    println!(
        "game day {} started: {} agents, {} stages",
        game.file.name,
        clients.len(),
        game.stages.len()
    );
    let runner = crate::gameday::play::run(game, clients, cancel.clone());
    tokio::pin!(runner);
    loop {
        tokio::select! {
            r = &mut runner => return Ok(r),
            _ = stops.recv() => cancel.cancel(),
        }
    }
}

/// Writes the JSON and HTML renderings where asked.
pub fn write_reports(
    r: &GameReport,
    json: Option<&Path>,
    html: Option<&Path>,
) -> Result<(), String> {
    let write = |p: &Path, text: String| {
        std::fs::write(p, text).map_err(|e| format!("cannot write {}: {e}", p.display()))
    };
    if let Some(p) = json {
        write(
            p,
            serde_json::to_string_pretty(r).map_err(|e| format!("JSON: {e}"))?,
        )?;
    }
    if let Some(p) = html {
        write(p, report::html(r))?;
    }
    Ok(())
}
