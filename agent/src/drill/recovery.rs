//! Recovery actions: a command, a Docker container restart (Engine API, through the chaos
//! crate's client), a systemd unit restart (`systemctl restart`), and a restore of a
//! configured backup source into place.
//!
//! Restore into place: the backup is restored (by the backup module's
//! [`crate::backup::BackupSource::restore`], as the source's configured `user`, who is handed
//! the directory) into a staging directory next to the target
//! (`.<name>.faultline-restore-<drill>`, same filesystem), then an existing target is moved
//! aside to `<target>.faultline-old-<drill>` (never deleted: it may be the only copy of
//! something) and the restored tree (the staging directory, or pgBackRest's data directory
//! in it: [`crate::backup::BackupSource::restored_tree`]) is renamed onto the target. The
//! backup's own point in time is returned for the backup RPO.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::backup::{self, BackupSourceConfig, Ctx};

use super::probe::run_command;
use super::scenario::{RecoveryAction, RestoreAction};

/// What an action did.
#[derive(Clone, Debug, PartialEq)]
pub struct ActionOutcome {
    /// Succeeded.
    pub ok: bool,
    /// What happened.
    pub detail: String,
    /// For a restore: the backup's point in time (Unix seconds).
    pub backup_point_at: Option<f64>,
}

impl ActionOutcome {
    fn ok(detail: String) -> Self {
        Self {
            ok: true,
            detail,
            backup_point_at: None,
        }
    }
    fn failed(detail: String) -> Self {
        Self {
            ok: false,
            detail,
            backup_point_at: None,
        }
    }
}

/// Where the Docker Engine listens (`DOCKER_HOST=unix://…`, else the default socket).
pub fn docker_socket() -> PathBuf {
    std::env::var("DOCKER_HOST")
        .ok()
        .and_then(|h| h.strip_prefix("unix://").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from(faultline_chaos::docker::DEFAULT_SOCKET))
}

/// Runs one action.
pub async fn run(
    a: &RecoveryAction,
    backups: &[BackupSourceConfig],
    state_dir: &Path,
    drill_id: &str,
) -> ActionOutcome {
    let timeout = a.timeout.0;
    if let Some(argv) = &a.command {
        return command(argv, timeout).await;
    }
    if let Some(name) = &a.restart_container {
        if !faultline_chaos::docker::valid_container_ref(name) {
            return ActionOutcome::failed(format!("{name:?} is not a container name or id"));
        }
        let docker = faultline_chaos::docker::Docker::new(docker_socket());
        let secs = timeout.as_secs().clamp(1, 300);
        return match docker
            .post(name, "restart", &format!("?t={}", secs.min(30)), timeout)
            .await
        {
            Ok(()) => ActionOutcome::ok(format!("container {name} restarted")),
            Err(e) => ActionOutcome::failed(e.to_string()),
        };
    }
    if let Some(unit) = &a.restart_unit {
        let argv = vec!["systemctl".to_owned(), "restart".to_owned(), unit.clone()];
        return command(&argv, timeout).await;
    }
    if let Some(r) = &a.restore_backup {
        return restore(r, backups, state_dir, drill_id, timeout).await;
    }
    ActionOutcome::failed("the action has no kind".into())
}

async fn command(argv: &[String], timeout: Duration) -> ActionOutcome {
    match run_command(argv, timeout).await {
        Ok(out) if out.code == Some(0) => ActionOutcome::ok(format!(
            "{} exited 0{}",
            argv.join(" "),
            if out.stdout.trim().is_empty() {
                String::new()
            } else {
                format!(
                    ": {}",
                    out.stdout.trim().chars().take(300).collect::<String>()
                )
            }
        )),
        Ok(out) => ActionOutcome::failed(format!(
            "{} exited {}: {}",
            argv.join(" "),
            out.code.map_or("by a signal".into(), |c| c.to_string()),
            out.stderr.trim()
        )),
        Err(e) => ActionOutcome::failed(e),
    }
}

/// The staging and moved-aside paths for `target`.
pub fn restore_paths(target: &Path, drill_id: &str) -> (PathBuf, PathBuf) {
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "restore".into());
    let parent = target.parent().unwrap_or(Path::new("/"));
    (
        parent.join(format!(".{name}.faultline-restore-{drill_id}")),
        parent.join(format!("{name}.faultline-old-{drill_id}")),
    )
}

async fn restore(
    r: &RestoreAction,
    backups: &[BackupSourceConfig],
    state_dir: &Path,
    drill_id: &str,
    timeout: Duration,
) -> ActionOutcome {
    let Some(cfg) = backups.iter().find(|b| b.name == r.source) else {
        return ActionOutcome::failed(format!(
            "backup source {:?} is not in the agent config",
            r.source
        ));
    };
    let source = backup::build_source(cfg);
    let ctx = Ctx {
        state_dir: state_dir.to_path_buf(),
        timeout,
    };
    let snaps = match source.list(&ctx).await {
        Ok(s) => s,
        Err(e) => return ActionOutcome::failed(format!("listing {}: {e}", r.source)),
    };
    let snap = if r.snapshot == "latest" {
        snaps.last()
    } else {
        snaps.iter().find(|s| s.id == r.snapshot)
    };
    let Some(snap) = snap.cloned() else {
        return ActionOutcome::failed(format!(
            "backup source {} has no backup {:?} ({} listed)",
            r.source,
            r.snapshot,
            snaps.len()
        ));
    };
    let (staging, aside) = restore_paths(&r.target, drill_id);
    let prep = {
        let staging = staging.clone();
        tokio::task::spawn_blocking(move || {
            if staging.exists() {
                std::fs::remove_dir_all(&staging)?;
            }
            std::fs::create_dir_all(&staging)
        })
        .await
    };
    match prep {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            return ActionOutcome::failed(format!("staging {}: {e}", staging.display()));
        }
        Err(e) => return ActionOutcome::failed(format!("staging task failed: {e}")),
    }
    let remove_staging = |s: PathBuf| async move {
        let _ = tokio::task::spawn_blocking(move || std::fs::remove_dir_all(s)).await;
    };
    // The source's tool runs as its configured user (pgBackRest as postgres): it writes
    // into the staging directory.
    let handed = match backup::resolve_user(cfg.user.as_deref()).await {
        Ok(run_as) => backup::restore_check::prepare_scratch(&staging, run_as).await,
        Err(e) => Err(e.to_string()),
    };
    if let Err(e) = handed {
        remove_staging(staging).await;
        return ActionOutcome::failed(format!("staging for {}: {e}", r.source));
    }
    if let Err(e) = source.restore_for(&ctx, &snap, &staging, &r.target).await {
        remove_staging(staging).await;
        return ActionOutcome::failed(format!("restoring {} {}: {e}", r.source, snap.id));
    }
    // The restored tree: the staging directory itself, or pgBackRest's data directory in it.
    let tree = source.restored_tree(&staging);
    let target = r.target.clone();
    let moved = {
        let (staging, tree, aside, target) =
            (staging.clone(), tree.clone(), aside.clone(), target.clone());
        tokio::task::spawn_blocking(move || -> std::io::Result<bool> {
            let had = target.symlink_metadata().is_ok();
            if had {
                std::fs::rename(&target, &aside)?;
            }
            std::fs::rename(&tree, &target)?;
            if tree != staging {
                std::fs::remove_dir_all(&staging)?;
            }
            if let Some(parent) = target.parent()
                && let Ok(dir) = std::fs::File::open(parent)
            {
                let _ = dir.sync_all();
            }
            Ok(had)
        })
        .await
    };
    match moved {
        Ok(Ok(had)) => ActionOutcome {
            ok: true,
            detail: format!(
                "restored {} backup {} (taken {}) to {}{}",
                r.source,
                snap.id,
                crate::timefmt::format_utc(snap.time),
                target.display(),
                if had {
                    format!("; the previous tree was moved to {}", aside.display())
                } else {
                    String::new()
                }
            ),
            backup_point_at: Some(snap.time),
        },
        Ok(Err(e)) => ActionOutcome::failed(format!(
            "moving the restored tree {} onto {}: {e}",
            staging.display(),
            target.display()
        )),
        Err(e) => ActionOutcome::failed(format!("move task failed: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restore_paths_are_siblings_of_the_target() {
        let (s, a) = restore_paths(Path::new("/srv/pg/data"), "d1");
        assert_eq!(s, Path::new("/srv/pg/.data.faultline-restore-d1"));
        assert_eq!(a, Path::new("/srv/pg/data.faultline-old-d1"));
    }

    #[tokio::test]
    async fn a_files_backup_is_restored_into_place_and_the_old_tree_kept() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        std::fs::create_dir_all(src.join("sub")).unwrap();
        std::fs::write(src.join("sub/a.txt"), "hello").unwrap();
        let backups = dir.path().join("backups");
        std::fs::create_dir(&backups).unwrap();
        let st = std::process::Command::new("tar")
            .arg("-czf")
            .arg(backups.join("b1.tar.gz"))
            .arg("-C")
            .arg(&src)
            .arg(".")
            .status()
            .unwrap();
        assert!(st.success());
        let cfg: BackupSourceConfig = serde_yaml_ng::from_str(&format!(
            "name: files1\nkind: files\nrpo: 1h\npath: {}\nglob: \"*.tar.gz\"\n",
            backups.display()
        ))
        .unwrap();
        let target = dir.path().join("data");
        std::fs::create_dir(&target).unwrap();
        std::fs::write(target.join("junk"), "x").unwrap();
        let action: RecoveryAction = serde_yaml_ng::from_str(&format!(
            "restore_backup: {{ source: files1, target: {} }}",
            target.display()
        ))
        .unwrap();
        let out = run(&action, &[cfg], dir.path(), "t1").await;
        assert!(out.ok, "{out:?}");
        assert!(out.backup_point_at.unwrap() > 1.6e9);
        assert_eq!(
            std::fs::read_to_string(target.join("sub/a.txt")).unwrap(),
            "hello"
        );
        assert!(!target.join("junk").exists());
        assert!(dir.path().join("data.faultline-old-t1/junk").exists());
        let bad: RecoveryAction = serde_yaml_ng::from_str("command: [\"false\"]").unwrap();
        assert!(!run(&bad, &[], dir.path(), "t2").await.ok);
    }
}
