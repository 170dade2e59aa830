//! `faultline backup check`: run the backup checks once, print a table or JSON, and exit 0
//! when every check that ran is healthy, 1 when any is unhealthy, 2 on a configuration error
//! (unreadable or invalid config, no sources, unknown `--source`).
//!
//! Without `--check`, a source gets its freshness check, its integrity check when
//! `integrity.enabled` (the default) and its restore test when `restore:` is configured and
//! enabled; `--check` runs the named check even when its schedule is disabled. The same
//! `--state-dir` as the agent is used, so a restic read-data rotation advances here too, and
//! every result is appended to its history (`backup::history`) for the posture report.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Subcommand, ValueEnum};

use crate::backup::{CheckKind, CheckResult, Checker, Status, event, tool};
use crate::config;

/// `faultline backup …`
#[derive(Debug, Subcommand)]
pub enum BackupCommand {
    /// Run the backup checks once and print the results; exit 0 healthy, 1 unhealthy, 2 config error.
    Check(CheckArgs),
}

/// Arguments of `backup check`.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Config file; the embedded default (which has no backups) when omitted.
    #[arg(long, short, env = "FAULTLINE_CONFIG")]
    pub config: Option<PathBuf>,
    /// Only this source.
    #[arg(long)]
    pub source: Option<String>,
    /// Only this check.
    #[arg(long, value_enum)]
    pub check: Option<CheckArg>,
    /// Output format.
    #[arg(long, value_enum, default_value = "table")]
    pub format: FormatArg,
}

/// `--check`.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum CheckArg {
    /// Age of the newest backup against the RPO, and inventory.
    Freshness,
    /// The tool's integrity check.
    Integrity,
    /// The restore test.
    Restore,
}

/// `--format`.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum FormatArg {
    /// A readable table.
    Table,
    /// JSON: `{"healthy": bool, "results": [...]}`.
    Json,
}

/// Runs `faultline backup …`.
pub fn run(cmd: BackupCommand, state_dir: &Path) -> ExitCode {
    match cmd {
        BackupCommand::Check(args) => check(&args, state_dir),
    }
}

fn config_error(msg: &str) -> ExitCode {
    eprintln!("faultline: configuration error: {msg}");
    ExitCode::from(crate::cli::EXIT_CONFIG)
}

fn check(args: &CheckArgs, state_dir: &Path) -> ExitCode {
    // Warnings (an unsaved rotation position, say) go to stderr; stdout is the report.
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = crate::cli::stderr_logger(filter).try_init();
    let loaded = match config::load(args.config.as_deref()) {
        Ok(l) => l,
        Err(e) => return config_error(&e.to_string()),
    };
    let all = &loaded.config.backups;
    if all.is_empty() {
        return config_error(&format!(
            "{}: no backup sources configured (add a `backups:` list)",
            loaded.source
        ));
    }
    let chosen: Vec<_> = match &args.source {
        Some(name) => all.iter().filter(|s| &s.name == name).cloned().collect(),
        None => all.clone(),
    };
    if chosen.is_empty() {
        let names: Vec<&str> = all.iter().map(|s| s.name.as_str()).collect();
        return config_error(&format!(
            "no source named {:?} in {}; configured: {}",
            args.source.as_deref().unwrap_or(""),
            loaded.source,
            names.join(", ")
        ));
    }
    let rt = match crate::cli::command_runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    let checker = Checker::new(&chosen, state_dir);
    let wanted = args.check.map(|c| match c {
        CheckArg::Freshness => CheckKind::Freshness,
        CheckArg::Integrity => CheckKind::Integrity,
        CheckArg::Restore => CheckKind::Restore,
    });
    let results: Vec<CheckResult> = rt.block_on(async {
        let mut out = Vec::new();
        for e in checker.entries() {
            for check in CheckKind::ALL {
                let selected = match wanted {
                    Some(w) => w == check,
                    None => match check {
                        CheckKind::Freshness => true,
                        CheckKind::Integrity => e.cfg.integrity.enabled,
                        CheckKind::Restore => e.cfg.restore.as_ref().is_some_and(|r| r.enabled),
                    },
                };
                if selected {
                    out.push(checker.run(e, check).await);
                }
            }
        }
        out
    });
    record(&results, &chosen, state_dir);
    let healthy = results.iter().all(|r| r.status != Status::Unhealthy);
    let text = match args.format {
        FormatArg::Json => {
            let v = serde_json::json!({ "healthy": healthy, "results": results });
            serde_json::to_string_pretty(&v)
                .unwrap_or_else(|e| format!("{{\"error\": \"cannot encode JSON: {e}\"}}"))
        }
        FormatArg::Table => table(&results),
    };
    let mut stdout = std::io::stdout().lock();
    if writeln!(stdout, "{text}")
        .and_then(|()| stdout.flush())
        .is_err()
    {
        return ExitCode::FAILURE;
    }
    if healthy {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// Appends the results to the history the agent keeps too (`backup::history`); a failure
/// is a warning on stderr, the report on stdout stands.
fn record(
    results: &[CheckResult],
    sources: &[crate::backup::BackupSourceConfig],
    state_dir: &Path,
) {
    for r in results {
        let cfg = sources.iter().find(|s| s.name == r.source);
        let rec = crate::backup::history::CheckRecord::of(
            r,
            cfg.and_then(|c| c.service.as_deref()),
            cfg.and_then(|c| c.tier.as_deref()),
        );
        if let Some(rec) = rec
            && let Err(e) = crate::backup::history::append(state_dir, &rec)
        {
            tracing::warn!(error = %e, "cannot record the check in the history");
        }
    }
}

/// Renders results as a table, with the error, findings and stderr tail under each
/// unhealthy row.
pub fn table(results: &[CheckResult]) -> String {
    let rows: Vec<[String; 5]> = results
        .iter()
        .map(|r| {
            [
                r.source.clone(),
                r.kind.as_str().to_owned(),
                r.check.as_str().to_owned(),
                event::status_str(r.status).to_owned(),
                format!("{:.1}s", r.duration_seconds),
            ]
        })
        .collect();
    let head = ["SOURCE", "KIND", "CHECK", "STATUS", "TIME"];
    let mut w = head.map(str::len);
    for row in &rows {
        for (i, c) in row.iter().enumerate() {
            w[i] = w[i].max(c.len());
        }
    }
    let line = |cells: [&str; 5], rest: &str| {
        format!(
            "{:<a$}  {:<b$}  {:<c$}  {:<d$}  {:>e$}  {rest}",
            cells[0],
            cells[1],
            cells[2],
            cells[3],
            cells[4],
            a = w[0],
            b = w[1],
            c = w[2],
            d = w[3],
            e = w[4]
        )
    };
    let mut out = line(head, "SUMMARY").trim_end().to_owned();
    for (r, row) in results.iter().zip(&rows) {
        out.push('\n');
        out.push_str(line([&row[0], &row[1], &row[2], &row[3], &row[4]], &r.summary).trim_end());
        if r.status == Status::Unhealthy {
            let mut details: Vec<String> = Vec::new();
            if let Some(i) = &r.integrity {
                details.extend(i.findings.iter().take(10).cloned());
            }
            if let Some(d) = &r.restore {
                details.extend(d.problems.iter().cloned());
            }
            if let Some(s) = &r.stderr {
                details.extend(tool::tail(s, 600).lines().map(|l| format!("stderr: {l}")));
            }
            for d in details {
                out.push_str("\n    ");
                out.push_str(&d);
            }
        }
    }
    out
}
