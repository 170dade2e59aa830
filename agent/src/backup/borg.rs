//! borg repositories: `list --json` for the archives, `info --json --last 2` for the newest
//! two's end times and sizes, `check` for integrity, `extract` for restore tests.
//!
//! Every borg call runs with `TZ=UTC` so the zone-less times borg prints are UTC (see
//! [`super::parse::borg`] for what borg does with time zones). The passphrase, from
//! `password_file` or `password_env`, is handed over as `BORG_PASSPHRASE` in the child's
//! environment. borg's exit code 1 is a warning: fine for `list`/`info`, a failure for
//! `extract`, and for `check` it means problems were found.
//!
//! Integrity: a full `borg check` (plus `--verify-data` when configured), or, with
//! `integrity.max_duration`, borg's own resumable partial check
//! (`--repository-only --max-duration`), which remembers in the repository where it stopped.

use std::path::Path;

use futures::future::BoxFuture;

use super::config::BackupSourceConfig;
use super::tool::{Outcome, Tool, ToolCommand};
use super::{
    BackupSource, Ctx, IntegrityOutcome, Snapshot, SourceError, parse, resolve_user, run_ok, tool,
};

/// A borg source.
#[derive(Debug)]
pub struct Borg {
    cfg: BackupSourceConfig,
}

impl Borg {
    /// From a validated config.
    pub fn new(cfg: BackupSourceConfig) -> Self {
        Self { cfg }
    }

    fn repo(&self) -> String {
        self.cfg.repository.clone().unwrap_or_default()
    }

    async fn base(&self, ctx: &Ctx) -> Result<ToolCommand, SourceError> {
        let c = &self.cfg;
        let bin = c.binary.clone().unwrap_or_else(|| "borg".into());
        let mut cmd = ToolCommand::new(Tool::Borg, bin, ctx.timeout).env("TZ", "UTC");
        if let Some(pw) =
            super::read_password(c.password_file.as_deref(), c.password_env.as_deref()).await?
        {
            cmd = cmd.env("BORG_PASSPHRASE", pw);
        }
        for (k, v) in &c.env {
            cmd = cmd.env(k, v);
        }
        cmd.run_as = resolve_user(c.user.as_deref()).await?;
        Ok(cmd)
    }
}

impl BackupSource for Borg {
    fn list<'a>(&'a self, ctx: &'a Ctx) -> BoxFuture<'a, Result<Vec<Snapshot>, SourceError>> {
        Box::pin(async move {
            let cmd = self
                .base(ctx)
                .await?
                .args(["list", "--json"])
                .arg(self.repo());
            let out = run_ok(&cmd, true).await?;
            let mut archives =
                parse::borg::parse_list(&out.stdout, 0).map_err(|source| SourceError::Parse {
                    command: out.command.clone(),
                    source,
                })?;
            if archives.is_empty() {
                return Ok(archives);
            }
            let cmd = self
                .base(ctx)
                .await?
                .args(["info", "--json", "--last", "2"])
                .arg(self.repo());
            let out = run_ok(&cmd, true).await?;
            let detail =
                parse::borg::parse_info(&out.stdout, 0).map_err(|source| SourceError::Parse {
                    command: out.command.clone(),
                    source,
                })?;
            for d in detail {
                if let Some(a) = archives.iter_mut().find(|a| a.id == d.id) {
                    a.time = d.time; // end time: when the backup finished
                    a.size = d.size;
                }
            }
            archives.sort_by(|a, b| a.time.total_cmp(&b.time));
            Ok(archives)
        })
    }

    fn check<'a>(&'a self, ctx: &'a Ctx) -> BoxFuture<'a, Result<IntegrityOutcome, SourceError>> {
        Box::pin(async move {
            let ic = &self.cfg.integrity;
            let mut cmd = self.base(ctx).await?.arg("check");
            let (what, subset) = if let Some(d) = ic.max_duration {
                cmd = cmd
                    .args(["--repository-only", "--max-duration"])
                    .arg(d.0.as_secs().max(1).to_string());
                (
                    format!(
                        "borg partial repository check (at most {d}, resumed where the last one stopped)"
                    ),
                    Some(format!("repository segments for at most {d}")),
                )
            } else if ic.verify_data {
                cmd = cmd.arg("--verify-data");
                (
                    "borg check --verify-data (all data read and verified)".to_owned(),
                    None,
                )
            } else {
                ("borg check (repository and archives)".to_owned(), None)
            };
            cmd = cmd.arg(self.repo());
            let out = tool::run(&cmd).await?;
            let outcome = tool::interpret(Tool::Borg, out.code, out.signal, &out.stderr);
            let findings = parse::borg::check_findings(&out.stderr);
            match outcome {
                Outcome::Ok => Ok(IntegrityOutcome {
                    ok: true,
                    summary: format!("{what}: no problems"),
                    findings: Vec::new(),
                    subset,
                    command: out.command,
                }),
                // check reports problems with exit code 1 (and some with 2 after a full run).
                Outcome::Warning => Ok(IntegrityOutcome {
                    ok: false,
                    summary: format!("{what}: problems found"),
                    findings,
                    subset,
                    command: out.command,
                }),
                Outcome::Failed(_)
                    if out.stderr.contains("errors found")
                        || out.stderr.contains("problems found") =>
                {
                    Ok(IntegrityOutcome {
                        ok: false,
                        summary: format!("{what}: problems found"),
                        findings,
                        subset,
                        command: out.command,
                    })
                }
                outcome => Err(SourceError::Tool {
                    command: out.command,
                    outcome,
                    stderr: tool::tail(&out.stderr, 4000),
                }),
            }
        })
    }

    fn restore<'a>(
        &'a self,
        ctx: &'a Ctx,
        snapshot: &'a Snapshot,
        into: &'a Path,
    ) -> BoxFuture<'a, Result<String, SourceError>> {
        Box::pin(async move {
            let mut cmd = self.base(ctx).await?.arg("extract").arg(format!(
                "{}::{}",
                self.repo(),
                snapshot.id
            ));
            cmd.cwd = Some(into.to_path_buf());
            let out = run_ok(&cmd, false).await?;
            Ok(out.command)
        })
    }
}
