//! Any backup tool, through commands: `list_command` prints the backups as JSON (schema in
//! [`super::parse::command`]), `check_command` and `restore_command` are judged by their exit
//! code (0 healthy, anything else unhealthy, with stderr in the event).
//!
//! `restore_command` gets the scratch directory as `$FAULTLINE_RESTORE_DIR` and in place of
//! `{dir}` in its arguments, and the backup's id as `$FAULTLINE_BACKUP_ID` and `{id}`; the
//! restored tree is then verified like any other (expected paths, manifest). Commands are
//! argument lists, never shell strings: write `["sh", "-c", "…"]` to get a shell.

use std::path::Path;

use futures::future::BoxFuture;

use super::config::BackupSourceConfig;
use super::tool::{Tool, ToolCommand};
use super::{
    BackupSource, Ctx, IntegrityOutcome, Snapshot, SourceError, parse, resolve_user, run_ok, tool,
};

/// A command source.
#[derive(Debug)]
pub struct CommandSource {
    cfg: BackupSourceConfig,
}

impl CommandSource {
    /// From a validated config.
    pub fn new(cfg: BackupSourceConfig) -> Self {
        Self { cfg }
    }

    async fn cmd(
        &self,
        ctx: &Ctx,
        argv: &[String],
        subst: &[(&str, &str)],
    ) -> Result<ToolCommand, SourceError> {
        let Some((program, args)) = argv.split_first() else {
            return Err(SourceError::Failed("empty command".into()));
        };
        let fill = |a: &String| {
            subst
                .iter()
                .fold(a.clone(), |acc, (k, v)| acc.replace(k, v))
        };
        let mut cmd =
            ToolCommand::new(Tool::Command, fill(program), ctx.timeout).args(args.iter().map(fill));
        for (k, v) in &self.cfg.env {
            cmd = cmd.env(k, v);
        }
        cmd.run_as = resolve_user(self.cfg.user.as_deref()).await?;
        Ok(cmd)
    }
}

impl BackupSource for CommandSource {
    fn list<'a>(&'a self, ctx: &'a Ctx) -> BoxFuture<'a, Result<Vec<Snapshot>, SourceError>> {
        Box::pin(async move {
            let argv = self.cfg.list_command.clone().unwrap_or_default();
            let out = run_ok(&self.cmd(ctx, &argv, &[]).await?, false).await?;
            parse::command::parse_list(&out.stdout).map_err(|source| SourceError::Parse {
                command: out.command,
                source,
            })
        })
    }

    fn check<'a>(&'a self, ctx: &'a Ctx) -> BoxFuture<'a, Result<IntegrityOutcome, SourceError>> {
        Box::pin(async move {
            let Some(argv) = self.cfg.check_command.clone() else {
                return Err(SourceError::Failed("no check_command configured".into()));
            };
            let out = tool::run(&self.cmd(ctx, &argv, &[]).await?).await?;
            let ok = out.code == Some(0);
            let findings = if ok {
                Vec::new()
            } else {
                let mut f = vec![format!(
                    "exit {}",
                    out.code.map_or_else(
                        || format!("by signal {}", out.signal.unwrap_or(0)),
                        |c| c.to_string()
                    )
                )];
                f.extend(tool::tail(&out.stderr, 2000).lines().map(str::to_owned));
                f
            };
            Ok(IntegrityOutcome {
                ok,
                summary: format!("check command {}", if ok { "succeeded" } else { "failed" }),
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
        Box::pin(async move {
            let Some(argv) = self.cfg.restore_command.clone() else {
                return Err(SourceError::Failed("no restore_command configured".into()));
            };
            let dir = into.display().to_string();
            let cmd = self
                .cmd(ctx, &argv, &[("{dir}", &dir), ("{id}", &snapshot.id)])
                .await?
                .env("FAULTLINE_RESTORE_DIR", into)
                .env("FAULTLINE_BACKUP_ID", &snapshot.id);
            Ok(run_ok(&cmd, false).await?.command)
        })
    }
}
