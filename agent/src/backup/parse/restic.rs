//! restic's output: `snapshots --json`, `stats --json`, and the text `check` prints.
//!
//! restic 0.14 (Debian 12) prints no JSON for `check`, and its snapshot list has no sizes
//! (`summary` arrived in 0.17); sizes come from `stats --json <id>` (restore size). Both are
//! handled: a `summary.total_bytes_processed` is used when present.

use serde::Deserialize;

use super::{ParseError, Snapshot};
use crate::timefmt::parse_rfc3339;

#[derive(Deserialize)]
struct RawSnapshot {
    time: String,
    id: String,
    #[serde(default)]
    summary: Option<RawSummary>,
}

#[derive(Deserialize)]
struct RawSummary {
    #[serde(default)]
    total_bytes_processed: Option<u64>,
}

/// Parses `restic snapshots --json` into snapshots sorted oldest first.
pub fn parse_snapshots(text: &str) -> Result<Vec<Snapshot>, ParseError> {
    const WHAT: &str = "restic snapshots --json";
    let raw: Vec<RawSnapshot> = serde_json::from_str(text.trim())
        .map_err(|source| ParseError::Json { what: WHAT, source })?;
    let mut out = Vec::with_capacity(raw.len());
    for r in raw {
        let time =
            parse_rfc3339(&r.time).map_err(|reason| ParseError::Invalid { what: WHAT, reason })?;
        out.push(Snapshot {
            id: r.id,
            time,
            size: r.summary.and_then(|s| s.total_bytes_processed),
        });
    }
    out.sort_by(|a, b| a.time.total_cmp(&b.time));
    Ok(out)
}

#[derive(Deserialize)]
struct RawStats {
    total_size: u64,
}

/// Parses `restic stats --json <snapshot>` (restore-size mode) into the byte count.
pub fn parse_stats(text: &str) -> Result<u64, ParseError> {
    let raw: RawStats = serde_json::from_str(text.trim()).map_err(|source| ParseError::Json {
        what: "restic stats --json",
        source,
    })?;
    Ok(raw.total_size)
}

/// The lines of `restic check` output that are findings: everything on stderr except the
/// progress and retry chatter, which says nothing about the repository's state.
pub fn check_findings(stderr: &str) -> Vec<String> {
    stderr
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .filter(|l| {
            !l.starts_with("Load(")
                && !l.starts_with("using temporary cache")
                && !l.starts_with('[')
        })
        .map(str::to_owned)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIX: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/backup/");

    fn fixture(name: &str) -> String {
        std::fs::read_to_string(format!("{FIX}{name}")).unwrap()
    }

    #[test]
    fn real_snapshot_list_is_sorted_with_times() {
        let s = parse_snapshots(&fixture("restic-snapshots.json")).unwrap();
        assert_eq!(s.len(), 2);
        assert!(s[0].time < s[1].time);
        assert_eq!(s[0].id.len(), 64);
        assert!(s[0].time > 1.7e9);
        assert_eq!(s[1].size, None);
    }

    #[test]
    fn empty_list_and_summary_sizes() {
        assert!(parse_snapshots("[]\n").unwrap().is_empty());
        let s = parse_snapshots(
            r#"[{"time":"2024-01-01T00:00:00Z","id":"ab","summary":{"total_bytes_processed":42}}]"#,
        )
        .unwrap();
        assert_eq!(s[0].size, Some(42));
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(parse_snapshots("").is_err());
        assert!(parse_snapshots("{}").is_err());
        assert!(parse_snapshots(r#"[{"time":"yesterday","id":"x"}]"#).is_err());
        assert!(parse_stats("nope").is_err());
    }

    #[test]
    fn real_stats() {
        assert_eq!(
            parse_stats(&fixture("restic-stats-latest.json")).unwrap(),
            100_011
        );
    }

    #[test]
    fn check_findings_from_real_damaged_repositories() {
        assert!(check_findings(&fixture("restic-check-ok.stderr")).is_empty());
        let missing = check_findings(&fixture("restic-check-missing-pack.stderr"));
        assert!(
            missing.iter().any(|l| l.contains("does not exist")),
            "{missing:?}"
        );
        let truncated = check_findings(&fixture("restic-check-truncated-pack.stderr"));
        assert!(
            truncated.iter().any(|l| l.contains("unexpected file size")),
            "{truncated:?}"
        );
        let noisy = check_findings(
            "Load(<data/0a>, 1, 0) returned error, retrying\npack x failed to download\n",
        );
        assert_eq!(noisy, vec!["pack x failed to download"]);
    }
}
