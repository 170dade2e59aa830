//! Per-source state that must survive restarts, in `<state-dir>/backup/<source>.json`.
//!
//! Today that is restic's read-data rotation: run `k` of a cycle of `t` reads subset `n/t`,
//! and the next run reads `n % t + 1`, so `t` scheduled runs read every pack once whatever
//! restarts happen in between. The position advances only after restic actually read the
//! subset (it exited 0 or reported findings), not after a timeout, a lock or a wrong password.
//! A changed `t` starts the cycle again at 1. A missing or unreadable file starts at 1 too
//! (logged): re-reading a subset early is harmless, skipping one is not, and neither happens
//! silently. The file is written to a temporary name and renamed, so a crash leaves the old or
//! the new state, never half of one.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// What is kept for one source.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SourceState {
    /// The subset the next integrity run reads (1-based).
    #[serde(default)]
    pub next_subset: Option<u32>,
    /// The cycle length the position belongs to.
    #[serde(default)]
    pub subsets: Option<u32>,
    /// The last subset read, as `n/t`.
    #[serde(default)]
    pub last_subset: Option<String>,
    /// When it was read, Unix seconds.
    #[serde(default)]
    pub last_subset_time: Option<f64>,
}

impl SourceState {
    /// The subset to read now for a cycle of `total`.
    pub fn current(&self, total: u32) -> u32 {
        match (self.next_subset, self.subsets) {
            (Some(n), Some(t)) if t == total && (1..=total).contains(&n) => n,
            _ => 1,
        }
    }

    /// Records that subset `n` of `total` was read at `now`; the next is `n % total + 1`.
    pub fn advance(&mut self, n: u32, total: u32, now: f64) {
        self.last_subset = Some(format!("{n}/{total}"));
        self.last_subset_time = Some(now);
        self.subsets = Some(total);
        self.next_subset = Some(n % total + 1);
    }
}

/// The state file of `source`.
pub fn path(state_dir: &Path, source: &str) -> PathBuf {
    state_dir.join("backup").join(format!("{source}.json"))
}

/// Reads the state of `source`; a missing file is the default state, an unreadable one too
/// (with a warning).
pub async fn load(state_dir: &Path, source: &str) -> SourceState {
    let p = path(state_dir, source);
    match tokio::fs::read_to_string(&p).await {
        Ok(text) => serde_json::from_str(&text).unwrap_or_else(|e| {
            tracing::warn!(file = %p.display(), error = %e, "backup state file is not valid JSON; starting the read-data rotation again at 1");
            SourceState::default()
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => SourceState::default(),
        Err(e) => {
            tracing::warn!(file = %p.display(), error = %e, "cannot read the backup state file; starting the read-data rotation again at 1");
            SourceState::default()
        }
    }
}

/// Writes the state of `source` atomically ([`crate::state_file`]).
pub async fn save(state_dir: &Path, source: &str, state: &SourceState) -> std::io::Result<()> {
    let text = serde_json::to_vec_pretty(state).map_err(std::io::Error::other)?;
    crate::state_file::write_atomic_async(&path(state_dir, source), text).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotation_covers_every_subset_and_resets_on_a_new_cycle_length() {
        let mut s = SourceState::default();
        let mut seen = Vec::new();
        for _ in 0..8 {
            let n = s.current(3);
            seen.push(n);
            s.advance(n, 3, 0.0);
        }
        assert_eq!(seen, [1, 2, 3, 1, 2, 3, 1, 2]);
        assert_eq!(s.current(5), 1);
        let broken = SourceState {
            next_subset: Some(9),
            subsets: Some(3),
            ..SourceState::default()
        };
        assert_eq!(broken.current(3), 1);
    }

    #[tokio::test]
    async fn survives_a_round_trip_and_tolerates_garbage() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(load(dir.path(), "x").await, SourceState::default());
        let mut s = SourceState::default();
        s.advance(2, 4, 5.0);
        save(dir.path(), "x", &s).await.unwrap();
        assert_eq!(load(dir.path(), "x").await.current(4), 3);
        std::fs::write(path(dir.path(), "x"), "{garbage").unwrap();
        assert_eq!(load(dir.path(), "x").await, SourceState::default());
    }
}
