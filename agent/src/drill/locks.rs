//! Target locks: "never two drills on the same targets at once" across processes. Every drill
//! — in `faultline run` (API, schedules) and in `faultline drill run` — takes an exclusive
//! `flock(2)` on one file per target under `<state-dir>/drill-locks/` (named by the SHA-256
//! of the target, so any target text is a safe file name) before anything runs, and holds
//! it until the drill has finished and reverted. The kernel releases the locks when the
//! process dies, so a crashed drill never leaves a target locked.
//!
//! The holder writes who it is into the file (drill id, scenario, pid), so a refused drill
//! can say who has the target. Within one agent the drill service also checks its own map
//! first (it names the drill without touching files); the locks are what a CLI drill and the
//! agent share. Both must use the same `--state-dir` (the default for both).

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read as _, Seek as _, Write as _};
use std::path::{Path, PathBuf};

/// Why the locks could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another drill holds a target.
    #[error(
        "target {target} is busy: {holder} holds it (lock {path}); two drills never share a target"
    )]
    Busy {
        /// The target.
        target: String,
        /// Who holds it, as it wrote itself into the lock file.
        holder: String,
        /// The lock file.
        path: PathBuf,
    },
    /// The lock directory or a lock file failed.
    #[error("cannot lock drill target {target} ({path}): {source}")]
    Io {
        /// The target.
        target: String,
        /// The lock file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// Locks held for one drill; dropping this releases them.
#[derive(Debug)]
pub struct TargetLocks {
    _files: Vec<File>,
}

/// The lock file of `target`.
pub fn lock_path(state_dir: &Path, target: &str) -> PathBuf {
    let d = ring::digest::digest(&ring::digest::SHA256, target.as_bytes());
    let hex: String = d.as_ref()[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    state_dir.join("drill-locks").join(format!("{hex}.lock"))
}

/// Takes every target's lock without waiting, or none: the first busy target is the error.
/// `holder` is written into each file (e.g. `drill drill-… (pg-loss) in faultline run pid 42`).
/// Blocking file I/O: call from a blocking thread.
pub fn acquire(
    state_dir: &Path,
    targets: &[String],
    holder: &str,
) -> Result<TargetLocks, LockError> {
    let mut files = Vec::with_capacity(targets.len());
    for target in targets {
        let path = lock_path(state_dir, target);
        let io = |source| LockError::Io {
            target: target.clone(),
            path: path.clone(),
            source,
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let mut f = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io)?;
        match f.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut who = String::new();
                let _ = f.read_to_string(&mut who);
                let who = who.trim();
                return Err(LockError::Busy {
                    target: target.clone(),
                    holder: if who.is_empty() {
                        "another drill".into()
                    } else {
                        who.to_owned()
                    },
                    path,
                });
            }
            Err(TryLockError::Error(e)) => return Err(io(e)),
        }
        f.set_len(0).map_err(io)?;
        f.rewind().map_err(io)?;
        f.write_all(format!("{holder}\n").as_bytes()).map_err(io)?;
        files.push(f);
    }
    Ok(TargetLocks { _files: files })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_held_target_is_refused_naming_the_holder_until_released() {
        let dir = tempfile::tempdir().unwrap();
        let t = vec!["process pid 42 (sleep)".to_owned(), "scenario:a".to_owned()];
        let held = acquire(dir.path(), &t, "drill d-1 (a)").unwrap();
        // Any overlap is refused (flock is per open file, so also within one process).
        let e = acquire(dir.path(), &["scenario:a".to_owned()], "drill d-2 (a)").unwrap_err();
        assert!(
            e.to_string()
                .contains("scenario:a is busy: drill d-1 (a) holds it"),
            "{e}"
        );
        // Other targets are free.
        let other = acquire(dir.path(), &["scenario:b".to_owned()], "drill d-3 (b)").unwrap();
        drop(held);
        let again = acquire(dir.path(), &t, "drill d-4 (a)").unwrap();
        drop((again, other));
    }
}
