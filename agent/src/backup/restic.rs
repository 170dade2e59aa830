//! restic repositories: `snapshots --json` for the list, `stats --json <id>` for sizes,
//! `check [--read-data-subset=n/t]` for integrity, `restore <id> --target` for restore tests.
//!
//! Listing, stats and restore run with `--no-lock` (read-only, and they must not fail while a
//! backup holds the lock); `check` takes restic's exclusive lock as it must. restic's cache
//! lives in `<state-dir>/backup/cache/restic` rather than the agent user's home. The password
//! goes as `--password-file` or, from `password_env`, as `RESTIC_PASSWORD` in the child's
//! environment only — never as an argument.

use std::path::Path;

use futures::future::BoxFuture;

use super::config::BackupSourceConfig;
use super::tool::{Outcome, Tool, ToolCommand};
use super::{
    BackupSource, Ctx, IntegrityOutcome, Snapshot, SourceError, now_unix, parse, resolve_user,
    run_ok, state, tool,
};

/// A restic source.
#[derive(Debug)]
pub struct Restic {
    cfg: BackupSourceConfig,
}

impl Restic {
    /// From a validated config.
    pub fn new(cfg: BackupSourceConfig) -> Self {
        Self { cfg }
    }

    async fn base(&self, ctx: &Ctx, lock: bool) -> Result<ToolCommand, SourceError> {
        let c = &self.cfg;
        let bin = c.binary.clone().unwrap_or_else(|| "restic".into());
        let mut cmd = ToolCommand::new(Tool::Restic, bin, ctx.timeout)
            .arg("--repo")
            .arg(c.repository.clone().unwrap_or_default())
            .arg("--cache-dir")
            .arg(ctx.state_dir.join("backup").join("cache").join("restic"));
        if !lock {
            cmd = cmd.arg("--no-lock");
        }
        if let Some(f) = &c.password_file {
            // Read it ourselves first: restic's own message for an unreadable file is vague.
            super::read_password(Some(f), None).await?;
            cmd = cmd.arg("--password-file").arg(f);
        } else if let Some(pw) = super::read_password(None, c.password_env.as_deref()).await? {
            cmd = cmd.env("RESTIC_PASSWORD", pw);
        }
        for (k, v) in &c.env {
            cmd = cmd.env(k, v);
        }
        cmd.run_as = resolve_user(c.user.as_deref()).await?;
        Ok(cmd)
    }
}

impl BackupSource for Restic {
    fn list<'a>(&'a self, ctx: &'a Ctx) -> BoxFuture<'a, Result<Vec<Snapshot>, SourceError>> {
        Box::pin(async move {
            let cmd = self.base(ctx, false).await?.args(["snapshots", "--json"]);
            let out = run_ok(&cmd, false).await?;
            let mut snaps = parse::restic::parse_snapshots(&out.stdout).map_err(|source| {
                SourceError::Parse {
                    command: out.command.clone(),
                    source,
                }
            })?;
            let n = snaps.len();
            for s in snaps
                .iter_mut()
                .skip(n.saturating_sub(2))
                .filter(|s| s.size.is_none())
            {
                let cmd = self
                    .base(ctx, false)
                    .await?
                    .args(["stats", "--json", "--mode", "restore-size"])
                    .arg(&s.id);
                let out = run_ok(&cmd, false).await?;
                s.size = Some(parse::restic::parse_stats(&out.stdout).map_err(|source| {
                    SourceError::Parse {
                        command: out.command.clone(),
                        source,
                    }
                })?);
            }
            Ok(snaps)
        })
    }

    fn check<'a>(&'a self, ctx: &'a Ctx) -> BoxFuture<'a, Result<IntegrityOutcome, SourceError>> {
        Box::pin(async move {
            let mut cmd = self.base(ctx, true).await?.arg("check");
            let mut st = state::load(&ctx.state_dir, &self.cfg.name).await;
            let subset = self
                .cfg
                .integrity
                .read_data_subsets
                .map(|t| (st.current(t), t));
            if let Some((n, t)) = subset {
                cmd = cmd.arg(format!("--read-data-subset={n}/{t}"));
            }
            let out = tool::run(&cmd).await?;
            let findings = parse::restic::check_findings(&out.stderr);
            let outcome = tool::interpret(Tool::Restic, out.code, out.signal, &out.stderr);
            let ran_through = match &outcome {
                Outcome::Ok => true,
                Outcome::Failed(_)
                    if out.code == Some(1) && out.stderr.contains("repository contains errors") =>
                {
                    true
                }
                _ => false,
            };
            if !ran_through {
                return Err(SourceError::Tool {
                    command: out.command,
                    outcome,
                    stderr: tool::tail(&out.stderr, 4000),
                });
            }
            if let Some((n, t)) = subset {
                st.advance(n, t, now_unix());
                if let Err(e) = state::save(&ctx.state_dir, &self.cfg.name, &st).await {
                    tracing::warn!(source = %self.cfg.name, error = %e, "cannot save the read-data rotation; the next run may read the same subset again");
                }
            }
            let what = match subset {
                Some((n, t)) => format!("restic check read data subset {n}/{t}"),
                None => "restic check (structure, no data read)".to_owned(),
            };
            let ok = outcome == Outcome::Ok;
            Ok(IntegrityOutcome {
                ok,
                summary: if ok {
                    format!("{what}: no errors")
                } else {
                    format!("{what}: repository contains errors")
                },
                findings: if ok { Vec::new() } else { findings },
                subset: subset.map(|(n, t)| format!("{n}/{t}")),
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
        Box::pin(async move {
            let cmd = self
                .base(ctx, false)
                .await?
                .arg("restore")
                .arg(&snapshot.id)
                .arg("--target")
                .arg(into);
            let out = run_ok(&cmd, false).await?;
            Ok(out.command)
        })
    }
}
