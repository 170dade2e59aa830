//! Plain backup files in a directory (database dumps, tarballs): each file matching `glob` is
//! one backup, timed by its modification time and sized by its length.
//!
//! Integrity: with `manifest` (a `sha256sum` file; relative paths are relative to `path`),
//! every listed file must exist and match its checksum. Without one, the newest file is read
//! to its end (the disk can still deliver it) and, if it is a tar archive, listed with
//! `tar -tf` (which also decompresses gzip/xz/zstd).
//!
//! Restore test: a tar archive is extracted into the scratch directory with `tar -xf`; any
//! other file is copied there under its own name. The generic verification (expected paths,
//! restore manifest) then runs on that tree.

use std::path::{Path, PathBuf};
use std::time::Duration;

use futures::future::BoxFuture;

use super::config::BackupSourceConfig;
use super::tool::{Tool, ToolCommand};
use super::{
    BackupSource, Ctx, IntegrityOutcome, Snapshot, SourceError, parse, restore_check, run_ok,
};

/// A directory of backup files.
#[derive(Debug)]
pub struct Files {
    cfg: BackupSourceConfig,
}

/// Whether `name` looks like a tar archive `tar -xf` can read.
pub fn is_tar(name: &str) -> bool {
    [
        ".tar", ".tar.gz", ".tgz", ".tar.xz", ".txz", ".tar.zst", ".tar.bz2", ".tbz2",
    ]
    .iter()
    .any(|s| name.ends_with(s))
}

impl Files {
    /// From a validated config.
    pub fn new(cfg: BackupSourceConfig) -> Self {
        Self { cfg }
    }

    fn dir(&self) -> PathBuf {
        self.cfg.path.clone().unwrap_or_default()
    }

    async fn scan(&self) -> Result<Vec<Snapshot>, SourceError> {
        let dir = self.dir();
        let glob = self.cfg.glob.clone().unwrap_or_else(|| "*".into());
        tokio::task::spawn_blocking(move || scan_dir(&dir, &glob))
            .await
            .map_err(|e| SourceError::Failed(format!("directory scan did not finish: {e}")))?
    }
}

/// Lists files in `dir` whose names match `glob`, oldest first.
pub fn scan_dir(dir: &Path, glob: &str) -> Result<Vec<Snapshot>, SourceError> {
    let matcher = globset::Glob::new(glob)
        .map_err(|e| SourceError::Failed(format!("glob {glob:?}: {e}")))?
        .compile_matcher();
    let rd = std::fs::read_dir(dir).map_err(|source| SourceError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let mut out = Vec::new();
    for entry in rd {
        let entry = entry.map_err(|source| SourceError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if !matcher.is_match(&name) {
            continue;
        }
        let meta = entry.metadata().map_err(|source| SourceError::Io {
            path: entry.path(),
            source,
        })?;
        if !meta.is_file() {
            continue;
        }
        let mtime = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0.0, |d| d.as_secs_f64());
        out.push(Snapshot {
            id: name,
            time: mtime,
            size: Some(meta.len()),
        });
    }
    out.sort_by(|a, b| a.time.total_cmp(&b.time).then_with(|| a.id.cmp(&b.id)));
    Ok(out)
}

impl BackupSource for Files {
    fn list<'a>(&'a self, _ctx: &'a Ctx) -> BoxFuture<'a, Result<Vec<Snapshot>, SourceError>> {
        Box::pin(self.scan())
    }

    fn check<'a>(&'a self, ctx: &'a Ctx) -> BoxFuture<'a, Result<IntegrityOutcome, SourceError>> {
        Box::pin(async move {
            let dir = self.dir();
            if let Some(m) = &self.cfg.manifest {
                let text =
                    tokio::fs::read_to_string(m)
                        .await
                        .map_err(|source| SourceError::Io {
                            path: m.clone(),
                            source,
                        })?;
                let entries =
                    parse::manifest::parse(&text).map_err(|source| SourceError::Parse {
                        command: m.display().to_string(),
                        source,
                    })?;
                let n = entries.len();
                let findings =
                    restore_check::verify_manifest(&dir, entries, false, ctx.timeout).await?;
                return Ok(IntegrityOutcome {
                    ok: findings.is_empty(),
                    summary: format!("sha256 of {n} files listed in {}", m.display()),
                    findings,
                    subset: None,
                    command: format!("sha256 verify {}", m.display()),
                });
            }
            let snaps = self.scan().await?;
            let Some(newest) = snaps.last() else {
                return Ok(IntegrityOutcome {
                    ok: false,
                    summary: "no backup file to check".into(),
                    findings: vec![format!("no file in {} matches the glob", dir.display())],
                    subset: None,
                    command: String::new(),
                });
            };
            let file = dir.join(&newest.id);
            let f2 = file.clone();
            tokio::task::spawn_blocking(move || restore_check::sha256_file(&f2))
                .await
                .map_err(|e| SourceError::Failed(format!("read did not finish: {e}")))?
                .map_err(|source| SourceError::Io {
                    path: file.clone(),
                    source,
                })?;
            let mut command = format!("read {}", file.display());
            if is_tar(&newest.id) {
                let cmd = ToolCommand::new(Tool::Command, "tar", ctx.timeout)
                    .arg("-tf")
                    .arg(&file);
                match run_ok(&cmd, false).await {
                    Ok(out) => command = out.command,
                    Err(e) => {
                        return Ok(IntegrityOutcome {
                            ok: false,
                            summary: format!(
                                "newest backup file {} is not a readable tar archive",
                                newest.id
                            ),
                            findings: vec![e.to_string()]
                                .into_iter()
                                .chain(e.stderr().map(str::to_owned))
                                .collect(),
                            subset: Some("newest file".into()),
                            command: format!("tar -tf {}", file.display()),
                        });
                    }
                }
            }
            Ok(IntegrityOutcome {
                ok: true,
                summary: format!(
                    "newest backup file {} read to its end (no manifest configured)",
                    newest.id
                ),
                findings: Vec::new(),
                subset: Some("newest file".into()),
                command,
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
            let src = self.dir().join(&snapshot.id);
            if is_tar(&snapshot.id) {
                let mut cmd = ToolCommand::new(Tool::Command, "tar", ctx.timeout)
                    .arg("-xf")
                    .arg(&src)
                    .arg("-C")
                    .arg(into);
                cmd.run_as = super::resolve_user(self.cfg.user.as_deref()).await?;
                return Ok(run_ok(&cmd, false).await?.command);
            }
            let dst = into.join(&snapshot.id);
            tokio::time::timeout(
                ctx.timeout.max(Duration::from_secs(1)),
                tokio::fs::copy(&src, &dst),
            )
            .await
            .map_err(|_| {
                SourceError::Failed(format!(
                    "copying {} did not finish within {}",
                    src.display(),
                    super::human(ctx.timeout.as_secs_f64())
                ))
            })?
            .map_err(|source| SourceError::Io {
                path: src.clone(),
                source,
            })?;
            Ok(format!("copy {} {}", src.display(), dst.display()))
        })
    }
}
