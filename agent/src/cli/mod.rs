//! The command line: `faultline run`, `status`, `collect --once`, `config validate|default`,
//! and the `fault`, `backup`, `drill`, `gameday` and `report` subcommands.
//!
//! Exit codes are part of the contract with users' scripts: 0 success, 1 a runtime failure,
//! 2 a configuration or usage error, 3 refused or (`status`) no agent running.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

use crate::config::{self, DEFAULT_CONFIG_YAML, LogFormat};
use crate::runtime::{self, Cycle};
use crate::yaml::ConfigError;

pub use crate::outcome::EXIT_CONFIG;

mod backup;
mod drill;
mod fault;
mod gameday;
mod report;
mod status;

/// faultline watches a node and tests that it recovers: it exports host and container
/// metrics over OpenTelemetry, checks that backups are fresh and restorable, and runs
/// disaster-recovery drills that inject faults and measure how long recovery took (RTO)
/// and how much data was lost (RPO).
#[derive(Debug, Parser)]
#[command(
    name = "faultline",
    version,
    about = "faultline watches a node and tests that it recovers: metrics over OpenTelemetry, backup checks, and drills that break things on purpose and measure RTO and RPO."
)]
pub struct Cli {
    /// Where state that must survive a restart is kept.
    #[arg(
        long,
        global = true,
        env = "FAULTLINE_STATE_DIR",
        default_value = "/var/lib/faultline"
    )]
    pub state_dir: PathBuf,
    /// Log format (overrides the config's logging.format).
    #[arg(long, global = true, value_enum)]
    pub log_format: Option<LogFormatArg>,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Log format flag.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum LogFormatArg {
    /// Human-readable.
    Text,
    /// JSON lines.
    Json,
}

/// Output format of `collect --once`.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum CollectFormat {
    /// The batch as JSON.
    Json,
    /// Prometheus text exposition.
    Prometheus,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the agent until SIGTERM/SIGINT.
    Run {
        /// Config file; the embedded default when omitted.
        #[arg(long, short, env = "FAULTLINE_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Show how the running agent is: export, backlog, collectors, faults, drills, backups.
    Status {
        /// Output format.
        #[arg(long, value_enum, default_value = "table")]
        format: status::StatusFormat,
    },
    /// Collect one cycle and print it.
    Collect {
        /// Collect once and exit (the only mode; `run` collects continuously).
        #[arg(long, required = true)]
        once: bool,
        /// Config file; the embedded default when omitted.
        #[arg(long, short, env = "FAULTLINE_CONFIG")]
        config: Option<PathBuf>,
        /// Output format.
        #[arg(long, value_enum, default_value = "json")]
        format: CollectFormat,
    },
    /// Configuration helpers.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Fault injection (`fault inject|list|revert`).
    #[command(subcommand)]
    Fault(fault::FaultCommand),
    /// Backup checks (`backup check`).
    #[command(subcommand)]
    Backup(backup::BackupCommand),
    /// DR drills (`drill run SCENARIO.yaml`, `drill validate`).
    #[command(subcommand)]
    Drill(drill::DrillCommand),
    /// Game days: drills on many agents through their APIs (`gameday run GAMEDAY.yaml`).
    #[command(subcommand)]
    Gameday(gameday::GameDayCommand),
    /// Reports over the history (`report posture`: DR posture by service, node or fleet).
    #[command(subcommand)]
    Report(report::ReportCommand),
}

/// `faultline config …`
#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Check a config file; exit 2 with the file, line and field on error.
    Validate {
        /// The file.
        file: PathBuf,
    },
    /// Print the embedded default config, commented.
    Default,
}

/// Parses the arguments and runs; returns the process exit code.
pub fn main() -> ExitCode {
    // Fault helper processes are this binary in a hidden mode (see faultline_chaos::helper).
    if let Some(code) = fault::worker_mode() {
        return code;
    }
    let cli = Cli::parse();
    match cli.command {
        Command::Config(ConfigCommand::Default) => {
            print!("{DEFAULT_CONFIG_YAML}");
            ExitCode::SUCCESS
        }
        Command::Config(ConfigCommand::Validate { ref file }) => match config::load(Some(file)) {
            Ok(_) => {
                println!("{}: ok", file.display());
                ExitCode::SUCCESS
            }
            Err(e) => config_failure(&e),
        },
        Command::Collect { config, format, .. } => {
            let loaded = match config::load(config.as_deref()) {
                Ok(l) => l,
                Err(e) => return config_failure(&e),
            };
            init_logging(cli.log_format, &loaded.config.logging);
            collect_once(&loaded.config, format)
        }
        Command::Status { format } => status::run(&cli.state_dir, format),
        Command::Backup(cmd) => backup::run(cmd, &cli.state_dir),
        Command::Fault(cmd) => fault::run(cmd, &cli.state_dir, cli.log_format),
        Command::Drill(cmd) => drill::run(cmd, &cli.state_dir, cli.log_format),
        Command::Gameday(cmd) => gameday::run(cmd, cli.log_format),
        Command::Report(cmd) => report::run(cmd, &cli.state_dir, cli.log_format),
        Command::Run { config } => {
            let loaded = match config::load(config.as_deref()) {
                Ok(l) => l,
                Err(e) => return config_failure(&e),
            };
            init_logging(cli.log_format, &loaded.config.logging);
            tracing::info!(config = %loaded.source, state_dir = %cli.state_dir.display(), "configuration loaded");
            run_agent(loaded.config, &cli.state_dir, &loaded.source)
        }
    }
}

fn config_failure(e: &ConfigError) -> ExitCode {
    eprintln!("faultline: configuration error: {e}");
    ExitCode::from(EXIT_CONFIG)
}

/// Loads the configuration of a one-shot command and sets up its logging; on a bad file the
/// error is printed and the exit code (2) is handed back.
pub(crate) fn load_for_command(
    path: Option<&Path>,
    log_format: Option<LogFormatArg>,
) -> Result<config::Loaded, ExitCode> {
    let loaded = config::load(path).map_err(|e| config_failure(&e))?;
    init_logging(log_format, &loaded.config.logging);
    Ok(loaded)
}

/// The runtime of a one-shot command (`fault`, `drill run`, `backup check`, `gameday run`):
/// two workers, so a command's own work never starves its signal handling. On failure the
/// error is printed and the exit code to return is handed back.
pub(crate) fn command_runtime() -> Result<tokio::runtime::Runtime, ExitCode> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| {
            eprintln!("faultline: cannot start the async runtime: {e}");
            ExitCode::FAILURE
        })
}

pub(crate) fn init_logging(flag: Option<LogFormatArg>, cfg: &config::LoggingConfig) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&cfg.level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let json = match flag {
        Some(LogFormatArg::Json) => true,
        Some(LogFormatArg::Text) => false,
        None => cfg.format == LogFormat::Json,
    };
    let builder = stderr_logger(filter);
    // A second initialisation (tests calling main twice) is harmless: keep the first.
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}

/// A log formatter writing to stderr, with colour codes only when stderr is a terminal and
/// `NO_COLOR` is unset: a journal, a file or a pipe gets plain text.
pub(crate) fn stderr_logger(
    filter: tracing_subscriber::EnvFilter,
) -> tracing_subscriber::fmt::SubscriberBuilder<
    tracing_subscriber::fmt::format::DefaultFields,
    tracing_subscriber::fmt::format::Format,
    tracing_subscriber::EnvFilter,
    fn() -> std::io::Stderr,
> {
    use std::io::IsTerminal as _;
    let colour = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr as fn() -> std::io::Stderr)
        .with_ansi(colour)
}

fn collect_once(config: &config::Config, format: CollectFormat) -> ExitCode {
    let mut cycle = match Cycle::new(config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("faultline: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    let batch = cycle.collect(None);
    let mut out = String::new();
    match format {
        CollectFormat::Json => match serde_json::to_string_pretty(&batch) {
            Ok(s) => out = s,
            Err(e) => {
                eprintln!("faultline: cannot encode JSON: {e}");
                return ExitCode::FAILURE;
            }
        },
        CollectFormat::Prometheus => faultline_exporters::prometheus::render(&batch, &mut out),
    }
    let mut stdout = std::io::stdout().lock();
    if writeln!(stdout, "{out}")
        .and_then(|()| stdout.flush())
        .is_err()
    {
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

/// How long an idle blocking-pool thread waits for more work before it exits. Collection has
/// a thread of its own (`runtime::collect_loop`); the pool serves sporadic blocking work: drill
/// probes and recovery checks, backup checks' file I/O, the disk queue's slow paths. A thread
/// kept idle this long serves the next such piece of work instead of a new thread being
/// created (and its stack faulted in) for it; work that comes less often (the default backup
/// freshness check, every 5 min) gets a new thread each time.
const BLOCKING_KEEP_ALIVE: std::time::Duration = std::time::Duration::from_secs(120);

fn run_agent(config: config::Config, state_dir: &Path, config_file: &str) -> ExitCode {
    // One async thread: the agent's async work (export sends, the API, drills, timers) is
    // light and mostly waiting; collection runs on its own thread, other file I/O on the
    // blocking pool. A multi-threaded scheduler cost more than it saved here: cross-thread
    // wake-ups on every cycle, and one more malloc arena and stack per worker (measured in
    // docs/PERFORMANCE.md, "Overhead versus node_exporter").
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .thread_keep_alive(BLOCKING_KEEP_ALIVE)
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("faultline: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(runtime::run(config, state_dir, config_file)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "faultline failed");
            eprintln!("faultline: {e:#}");
            ExitCode::FAILURE
        }
    }
}
