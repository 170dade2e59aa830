//! borg's output: `list --json`, `info --json --last N`, and `check`'s text.
//!
//! **Time zones.** borg stores archive times in UTC and prints them, without a zone, in the
//! local time of the process that runs `borg list`/`borg info` (it converts with Python's
//! `time.localtime`, which follows `TZ`). The same archive therefore prints as
//! `2026-11-27T11:40:23` under `TZ=Asia/Tokyo` and `2026-11-27T02:40:23` under `TZ=UTC`
//! (checked with borg 1.2.4). faultline runs borg with `TZ=UTC` and parses with offset 0, so
//! the agent's own zone, DST changes and the zone of the machine that made the archive cannot
//! shift ages. The parsers still take the offset as a parameter so output captured elsewhere
//! can be read.

use serde::Deserialize;

use super::{ParseError, Snapshot};
use crate::timefmt::parse_naive;

#[derive(Deserialize)]
struct RawList {
    archives: Vec<RawListArchive>,
}

#[derive(Deserialize)]
struct RawListArchive {
    name: String,
    #[serde(default)]
    start: Option<String>,
    #[serde(default)]
    time: Option<String>,
}

/// Parses `borg list --json REPO` into archives (start times) sorted oldest first.
pub fn parse_list(text: &str, utc_offset_secs: i64) -> Result<Vec<Snapshot>, ParseError> {
    const WHAT: &str = "borg list --json";
    let raw: RawList = serde_json::from_str(text.trim())
        .map_err(|source| ParseError::Json { what: WHAT, source })?;
    let mut out = Vec::with_capacity(raw.archives.len());
    for a in raw.archives {
        let t = a.start.or(a.time).ok_or_else(|| ParseError::Invalid {
            what: WHAT,
            reason: format!("archive {} has no time", a.name),
        })?;
        let time = parse_naive(&t, utc_offset_secs)
            .map_err(|reason| ParseError::Invalid { what: WHAT, reason })?;
        out.push(Snapshot {
            id: a.name,
            time,
            size: None,
        });
    }
    out.sort_by(|a, b| a.time.total_cmp(&b.time));
    Ok(out)
}

#[derive(Deserialize)]
struct RawInfo {
    archives: Vec<RawInfoArchive>,
}

#[derive(Deserialize)]
struct RawInfoArchive {
    name: String,
    end: String,
    stats: RawInfoStats,
}

#[derive(Deserialize)]
struct RawInfoStats {
    original_size: u64,
}

/// Parses `borg info --json --last N REPO` into archives with end time and original size,
/// sorted oldest first.
pub fn parse_info(text: &str, utc_offset_secs: i64) -> Result<Vec<Snapshot>, ParseError> {
    const WHAT: &str = "borg info --json";
    let raw: RawInfo = serde_json::from_str(text.trim())
        .map_err(|source| ParseError::Json { what: WHAT, source })?;
    let mut out = Vec::with_capacity(raw.archives.len());
    for a in raw.archives {
        let time = parse_naive(&a.end, utc_offset_secs)
            .map_err(|reason| ParseError::Invalid { what: WHAT, reason })?;
        out.push(Snapshot {
            id: a.name,
            time,
            size: Some(a.stats.original_size),
        });
    }
    out.sort_by(|a, b| a.time.total_cmp(&b.time));
    Ok(out)
}

/// The findings `borg check` printed (its stderr, minus blank lines and progress).
pub fn check_findings(stderr: &str) -> Vec<String> {
    stderr
        .lines()
        .map(str::trim_end)
        .filter(|l| !l.trim().is_empty())
        .filter(|l| !l.starts_with("Checking segments") && !l.starts_with("Analyzing archive"))
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
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
    fn real_list_in_utc() {
        let a = parse_list(&fixture("borg-list.json"), 0).unwrap();
        assert_eq!(
            a.iter().map(|s| s.id.as_str()).collect::<Vec<_>>(),
            ["a1", "a2"]
        );
        assert_eq!(a[0].time, 1_795_747_223.0);
    }

    #[test]
    fn the_same_list_printed_in_another_zone_gives_the_same_instant() {
        let utc = fixture("borg-list.json");
        let tokyo = utc.replace("T02:", "T11:");
        assert_eq!(
            parse_list(&tokyo, 9 * 3600).unwrap()[0].time,
            parse_list(&utc, 0).unwrap()[0].time
        );
    }

    #[test]
    fn real_info_has_end_times_and_sizes() {
        let a = parse_info(&fixture("borg-info-last2.json"), 0).unwrap();
        assert_eq!(a.len(), 2);
        assert_eq!(a[1].id, "a2");
        assert_eq!(a[0].size, Some(100_006));
        assert_eq!(a[1].size, Some(100_011));
    }

    #[test]
    fn damaged_segment_findings() {
        let f = check_findings(&fixture("borg-check-damaged.stderr"));
        assert!(
            f.iter()
                .any(|l| l.contains("Segment entry checksum mismatch")),
            "{f:?}"
        );
        assert!(f.iter().any(|l| l.contains("errors found")), "{f:?}");
    }

    #[test]
    fn garbage_is_an_error() {
        assert!(parse_list("", 0).is_err());
        assert!(parse_list(r#"{"archives":[{"name":"x","time":"soon"}]}"#, 0).is_err());
        assert!(parse_info("[]", 0).is_err());
    }
}
