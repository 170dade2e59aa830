//! pgBackRest stanzas: `info --output=json` for the backup sets, `verify` for integrity,
//! `restore` plus a temporary PostgreSQL for restore tests.
//!
//! Integrity combines what `verify --verbose` reports (its text report, read even though pgBackRest
//! 2.45 exits 0 with `status: error`, and the WAL ranges it logs at detail level) with `info`:
//! a gap in the WAL archive after the oldest backup's start, or a backup whose required WAL is
//! not in the archive, fails the check (see [`super::parse::pgbackrest`]). `verify` has no
//! subset option, so every run verifies everything.
//!
//! The restore test restores the chosen set into `<scratch>/data` with `--type=immediate
//! --target-action=pause --archive-mode=off`: recovery stops at the first consistent point
//! and stays a read-only standby, so no new timeline is created and nothing is ever archived
//! into the production repository. [`super::restore_check::verify_postgres`] then starts
//! PostgreSQL on it and runs the verification query.

use std::path::Path;

use futures::future::BoxFuture;

use super::config::BackupSourceConfig;
use super::tool::{Tool, ToolCommand};
use super::{
    BackupSource, Ctx, IntegrityOutcome, Snapshot, SourceError, parse, resolve_user, restore_check,
    run_ok,
};

/// A pgBackRest source.
#[derive(Debug)]
pub struct PgBackRest {
    cfg: BackupSourceConfig,
}

impl PgBackRest {
    /// From a validated config.
    pub fn new(cfg: BackupSourceConfig) -> Self {
        Self { cfg }
    }

    async fn base(&self, ctx: &Ctx) -> Result<ToolCommand, SourceError> {
        let c = &self.cfg;
        let bin = c.binary.clone().unwrap_or_else(|| "pgbackrest".into());
        let mut cmd = ToolCommand::new(Tool::Pgbackrest, bin, ctx.timeout);
        if let Some(conf) = &c.config {
            cmd = cmd.arg(format!("--config={}", conf.display()));
        }
        cmd = cmd.arg(format!("--stanza={}", c.stanza.clone().unwrap_or_default()));
        for (k, v) in &c.env {
            cmd = cmd.env(k, v);
        }
        cmd.run_as = resolve_user(c.user.as_deref()).await?;
        Ok(cmd)
    }

    /// `pgbackrest restore` of `snapshot` into `into/data`; with `target`, the restored
    /// cluster's `restore_command` fetches WAL for a data directory at `target` (where it is
    /// moved before it starts) instead of at `into/data`.
    async fn restore_at(
        &self,
        ctx: &Ctx,
        snapshot: &Snapshot,
        into: &Path,
        target: Option<&Path>,
    ) -> Result<String, SourceError> {
        let data = self.restored_tree(into);
        let mut cmd = self.base(ctx).await?;
        if let Some(target) = target {
            // What pgBackRest itself would write for a restore at `target`.
            let c = &self.cfg;
            let mut get = vec![
                c.binary
                    .as_deref()
                    .unwrap_or(Path::new("pgbackrest"))
                    .display()
                    .to_string(),
            ];
            if let Some(conf) = &c.config {
                get.push(format!("--config={}", conf.display()));
            }
            get.push(format!("--pg1-path={}", target.display()));
            get.push(format!(
                "--stanza={}",
                c.stanza.as_deref().unwrap_or_default()
            ));
            get.push("archive-get %f \"%p\"".into());
            cmd = cmd.arg(format!(
                "--recovery-option=restore_command={}",
                get.join(" ")
            ));
        }
        let cmd = cmd
            .arg(format!("--pg1-path={}", data.display()))
            .arg(format!("--set={}", snapshot.id))
            .args([
                "--type=immediate",
                "--target-action=pause",
                "--archive-mode=off",
                "restore",
            ]);
        let out = run_ok(&cmd, false).await?;
        Ok(out.command)
    }

    async fn info(&self, ctx: &Ctx) -> Result<parse::pgbackrest::StanzaInfo, SourceError> {
        let cmd = self.base(ctx).await?.args(["--output=json", "info"]);
        let out = run_ok(&cmd, false).await?;
        let stanza = self.cfg.stanza.clone().unwrap_or_default();
        let info = parse::pgbackrest::parse_info(&out.stdout, &stanza).map_err(|source| {
            SourceError::Parse {
                command: out.command.clone(),
                source,
            }
        })?;
        // 0 ok, 2 "no valid backups" (an empty list, judged by freshness); others are errors.
        if info.status_code != 0 && info.status_code != 2 {
            return Err(SourceError::Failed(format!(
                "{}: stanza {stanza} status {}: {}",
                out.command, info.status_code, info.status_message
            )));
        }
        Ok(info)
    }
}

impl BackupSource for PgBackRest {
    fn list<'a>(&'a self, ctx: &'a Ctx) -> BoxFuture<'a, Result<Vec<Snapshot>, SourceError>> {
        Box::pin(async move { Ok(self.info(ctx).await?.snapshots()) })
    }

    fn check<'a>(&'a self, ctx: &'a Ctx) -> BoxFuture<'a, Result<IntegrityOutcome, SourceError>> {
        Box::pin(async move {
            let info = self.info(ctx).await?;
            let cmd = self.base(ctx).await?.args([
                "--output=text",
                "--verbose",
                "--log-level-console=detail",
                "verify",
            ]);
            let out = run_ok(&cmd, false).await?;
            let report = parse::pgbackrest::parse_verify(&out.stdout);
            if !report.has_report {
                return Err(SourceError::Failed(format!(
                    "{}: printed no verify report (stdout: {:?})",
                    out.command,
                    super::tool::tail(&out.stdout, 500)
                )));
            }
            let mut findings = report.problems.clone();
            findings.extend(parse::pgbackrest::wal_findings(&info, &report.wal_ranges));
            let ok = !report.status_error && findings.is_empty();
            let ranges: Vec<String> = report
                .wal_ranges
                .iter()
                .map(|(id, a, b)| format!("{id} {a}..{b}"))
                .collect();
            Ok(IntegrityOutcome {
                ok,
                summary: format!(
                    "pgbackrest verify of {} backup sets and WAL {}: {}",
                    info.backups.len(),
                    if ranges.is_empty() {
                        "(none)".to_owned()
                    } else {
                        ranges.join(", ")
                    },
                    if ok { "valid" } else { "problems found" }
                ),
                findings,
                subset: None,
                command: out.command,
            })
        })
    }

    fn restore<'a>(
        &'a self,
        ctx: &'a Ctx,
        snapshot: &'a Snapshot,
        into: &'a Path,
    ) -> BoxFuture<'a, Result<String, SourceError>> {
        Box::pin(async move { self.restore_at(ctx, snapshot, into, None).await })
    }

    fn restore_for<'a>(
        &'a self,
        ctx: &'a Ctx,
        snapshot: &'a Snapshot,
        into: &'a Path,
        target: &'a Path,
    ) -> BoxFuture<'a, Result<String, SourceError>> {
        Box::pin(async move { self.restore_at(ctx, snapshot, into, Some(target)).await })
    }

    fn restored_tree(&self, into: &Path) -> std::path::PathBuf {
        into.join("data")
    }

    fn verify_restored<'a>(
        &'a self,
        ctx: &'a Ctx,
        into: &'a Path,
    ) -> BoxFuture<'a, Result<Vec<String>, SourceError>> {
        Box::pin(async move {
            let Some(r) = &self.cfg.restore else {
                return Ok(Vec::new());
            };
            let run_as = resolve_user(self.cfg.user.as_deref()).await?;
            restore_check::verify_postgres(&restore_check::PgVerify {
                data: self.restored_tree(into),
                socket_dir: into.to_path_buf(),
                bin_dir: self.cfg.pg_bin_dir.clone(),
                run_as,
                database: r.database.clone(),
                query: r.query.clone(),
                expect: r.expect.clone(),
                timeout: ctx.timeout,
            })
            .await
        })
    }
}
