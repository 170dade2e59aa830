//! How long the history lasts: the `history:` config section and [`apply`], which removes
//! drill reports (`<state-dir>/drills/*.json`) and backup-check day segments
//! (`<state-dir>/history/backup/*.log`) older than `retention`, then the oldest of what is
//! left until the whole fits `max_bytes`. Oldest first, always: a report's age is its file's
//! modification time (written once, when the drill finished), a segment's is the end of its
//! day. The newest item is never removed, so the latest evidence survives any bound. The
//! temporary file of a report write that a crash cut short (`.<id>.json.<random>.tmp`) is
//! removed once it is an hour old (no live write takes that long).
//!
//! ```yaml
//! history:
//!   retention: 400d          # a year and a quarter: this quarter against the same one last year
//!   max_bytes: 256MiB        # drill reports and backup-check records together
//!   pass_rate_window: 90d    # the window of faultline.backup.restore.pass_rate
//! ```
//!
//! Blocking file I/O: `faultline run` calls it at start and every ten minutes on the
//! blocking pool.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use faultline_chaos::{ByteSize, HumanDuration};
use serde::{Deserialize, Serialize};

/// `history:`.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct HistoryConfig {
    /// Drill reports and check records older than this are removed.
    pub retention: HumanDuration,
    /// The history's bound on disk; the oldest go first past it.
    pub max_bytes: ByteSize,
    /// The window of `faultline.backup.restore.pass_rate`.
    pub pass_rate_window: HumanDuration,
}

impl Default for HistoryConfig {
    fn default() -> Self {
        Self {
            retention: HumanDuration(Duration::from_secs(400 * 86_400)),
            max_bytes: ByteSize(256 << 20),
            pass_rate_window: HumanDuration(Duration::from_secs(90 * 86_400)),
        }
    }
}

impl HistoryConfig {
    /// Checks the ranges; the error names the field.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if self.retention.0 < Duration::from_secs(86_400) {
            return Err(("retention", "must be at least 1d".into()));
        }
        if self.max_bytes.0 < 1 << 20 {
            return Err(("max_bytes", "must be at least 1MiB".into()));
        }
        if self.pass_rate_window.0.is_zero() {
            return Err(("pass_rate_window", "must be above zero".into()));
        }
        Ok(())
    }
}

/// What [`apply`] removed.
#[derive(Debug, Default, PartialEq)]
pub struct Pruned {
    /// Files removed for their age.
    pub expired: Vec<PathBuf>,
    /// Files removed to fit `max_bytes`, oldest first.
    pub over_size: Vec<PathBuf>,
}

/// One history file, with its age key and size.
struct Item {
    path: PathBuf,
    at: f64,
    bytes: u64,
}

fn unix(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// A report write's temporary file older than this was left by a crash.
const STALE_TMP: f64 = 3600.0;

/// The history's files, oldest first; with the stale temporary files of report writes.
fn items(state_dir: &Path, now: f64) -> (Vec<Item>, Vec<PathBuf>) {
    let mut out = Vec::new();
    let mut stale = Vec::new();
    if let Ok(rd) = std::fs::read_dir(state_dir.join("drills")) {
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            // Reports only: not the temporary files of a write (`.x.json.<random>.tmp`).
            if name.starts_with('.') && name.ends_with(".tmp") {
                let age = e
                    .metadata()
                    .and_then(|m| m.modified())
                    .map_or(0.0, |t| now - unix(t));
                if age > STALE_TMP {
                    stale.push(e.path());
                }
                continue;
            }
            if name.starts_with('.') || !name.ends_with(".json") {
                continue;
            }
            if let Ok(m) = e.metadata() {
                out.push(Item {
                    path: e.path(),
                    at: m.modified().map_or(0.0, unix),
                    bytes: m.len(),
                });
            }
        }
    }
    if let Ok(segs) = crate::backup::history::segments(state_dir) {
        for (path, day) in segs {
            let bytes = std::fs::metadata(&path).map_or(0, |m| m.len());
            out.push(Item {
                path,
                at: day + 86_400.0,
                bytes,
            });
        }
    }
    out.sort_by(|a, b| a.at.total_cmp(&b.at));
    (out, stale)
}

/// Removes what `cfg` no longer keeps, as of `now` (Unix seconds). A file that cannot be
/// removed is logged and counted as kept.
pub fn apply(state_dir: &Path, cfg: &HistoryConfig, now: f64) -> Pruned {
    let (mut all, stale) = items(state_dir, now);
    let mut pruned = Pruned::default();
    let remove = |p: &Path| match std::fs::remove_file(p) {
        Ok(()) => true,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => true,
        Err(e) => {
            tracing::warn!(file = %p.display(), error = %e, "cannot remove an expired history file");
            false
        }
    };
    for p in stale {
        if remove(&p) {
            pruned.expired.push(p);
        }
    }
    let oldest_kept = now - cfg.retention.0.as_secs_f64();
    // The newest item stays, whatever its age or size.
    let newest = all.len().saturating_sub(1);
    let mut kept = Vec::with_capacity(all.len());
    for (i, it) in all.drain(..).enumerate() {
        if i < newest && it.at < oldest_kept && remove(&it.path) {
            pruned.expired.push(it.path);
        } else {
            kept.push(it);
        }
    }
    let mut total: u64 = kept.iter().map(|i| i.bytes).sum();
    let last = kept.len().saturating_sub(1);
    for it in kept.iter().take(last) {
        if total <= cfg.max_bytes.0 {
            break;
        }
        if remove(&it.path) {
            total = total.saturating_sub(it.bytes);
            pruned.over_size.push(it.path.clone());
        }
    }
    if !pruned.expired.is_empty() || !pruned.over_size.is_empty() {
        tracing::info!(
            expired = pruned.expired.len(),
            over_size = pruned.over_size.len(),
            "history pruned, oldest first"
        );
    }
    pruned
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backup::CheckKind;
    use crate::backup::history::{CheckRecord, append};

    fn check(t: f64) -> CheckRecord {
        CheckRecord {
            summary: "x".repeat(300),
            ..CheckRecord::test_record("s", CheckKind::Freshness, t)
        }
    }

    fn report(dir: &Path, id: &str, at: f64, bytes: usize) -> PathBuf {
        let p = dir.join("drills").join(format!("{id}.json"));
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, vec![b' '; bytes]).unwrap();
        let f = std::fs::File::options().write(true).open(&p).unwrap();
        f.set_modified(UNIX_EPOCH + Duration::from_secs_f64(at))
            .unwrap();
        p
    }

    #[test]
    fn expired_files_go_then_the_oldest_until_the_size_fits() {
        let dir = tempfile::tempdir().unwrap();
        let day = 86_400.0;
        let now = 1_000.0 * day;
        let cfg = HistoryConfig {
            retention: HumanDuration(Duration::from_secs(10 * 86_400)),
            max_bytes: ByteSize(2_200),
            ..HistoryConfig::default()
        };
        let ancient = report(dir.path(), "drill-old", now - 30.0 * day, 100);
        let a = report(dir.path(), "drill-a", now - 5.0 * day, 1000);
        let b = report(dir.path(), "drill-b", now - 3.0 * day, 1000);
        let c = report(dir.path(), "drill-c", now - 1.0 * day, 1000);
        let live_tmp = dir.path().join("drills/.drill-d.json.x.tmp");
        std::fs::write(&live_tmp, "x").unwrap();
        let crashed_tmp = report(dir.path(), ".drill-e.json.y.tmp", now - 2.0 * 3600.0, 10)
            .with_file_name(".drill-e.json.y.tmp");
        std::fs::rename(
            dir.path().join("drills/.drill-e.json.y.tmp.json"),
            &crashed_tmp,
        )
        .unwrap();
        let old_seg = append(dir.path(), &check(now - 20.0 * day)).unwrap();
        let seg = append(dir.path(), &check(now - 2.0 * day)).unwrap();
        let p = apply(dir.path(), &cfg, now);
        assert_eq!(p.expired, [crashed_tmp, ancient, old_seg]);
        assert!(live_tmp.exists(), "a write in progress keeps its file");
        // a, b, c (1000 each) and the segment (~450, its day ends a day ago) > 2200: a goes,
        // then b, the oldest left.
        assert_eq!(p.over_size, [a, b]);
        assert!(seg.exists() && c.exists());
        // Again: nothing more to do.
        assert_eq!(apply(dir.path(), &cfg, now), Pruned::default());
    }

    #[test]
    fn the_newest_item_stays_whatever_the_bounds() {
        let dir = tempfile::tempdir().unwrap();
        let only = report(dir.path(), "drill-1", 0.0, 5_000);
        let cfg = HistoryConfig {
            max_bytes: ByteSize(10),
            ..HistoryConfig::default()
        };
        assert_eq!(apply(dir.path(), &cfg, 1e9), Pruned::default());
        assert!(only.exists());
    }
}
