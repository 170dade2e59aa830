//! pgBackRest's output: `info --output=json` and `verify --output=text --verbose` run with
//! `--log-level-console=detail` (without `--verbose`, 2.45 prints the report only on errors).
//!
//! Two findings from pgBackRest 2.45 shape this module. `verify` exits 0 even when it reports
//! `status: error` (invalid checksums, missing files), so its text report is parsed rather
//! than trusting the exit code. And `verify` reports a removed WAL segment only as a split in
//! the WAL ranges it logs at `DETAIL` level (`archiveId: 15-1, wal start: …, wal stop: …`),
//! so the ranges are collected and gaps after the oldest backup's start are findings;
//! [`wal_findings`] also compares each backup's required WAL with the ranges and with
//! `info`'s archive min/max.

use serde::Deserialize;

use super::{ParseError, Snapshot};

/// One backup set from `info`.
#[derive(Clone, Debug, PartialEq)]
pub struct BackupSet {
    /// The label, e.g. `20261127-024254F`.
    pub label: String,
    /// `full`, `diff` or `incr`.
    pub kind: String,
    /// Start and stop, Unix seconds.
    pub start: i64,
    /// Stop time.
    pub stop: i64,
    /// Database size restored from this set.
    pub size: u64,
    /// First WAL segment the set needs.
    pub archive_start: Option<String>,
    /// Last WAL segment the set needs.
    pub archive_stop: Option<String>,
    /// pgBackRest flagged the set as having errors (page checksum failures).
    pub error: bool,
}

/// A stanza as `info` describes it.
#[derive(Clone, Debug, PartialEq)]
pub struct StanzaInfo {
    /// 0 is ok; see pgBackRest's documentation for the others (1 missing stanza path, 2 no
    /// valid backups, 3 missing stanza data, …).
    pub status_code: i64,
    /// The status message.
    pub status_message: String,
    /// Backup sets, oldest first.
    pub backups: Vec<BackupSet>,
    /// WAL archive ranges per archive id: (id, min, max).
    pub archives: Vec<(String, Option<String>, Option<String>)>,
}

impl StanzaInfo {
    /// The sets as snapshots (stop time, restored size).
    pub fn snapshots(&self) -> Vec<Snapshot> {
        self.backups
            .iter()
            .map(|b| Snapshot {
                id: b.label.clone(),
                time: b.stop as f64,
                size: Some(b.size),
            })
            .collect()
    }
}

#[derive(Deserialize)]
struct RawStanza {
    name: String,
    status: RawStatus,
    #[serde(default)]
    backup: Vec<RawBackup>,
    #[serde(default)]
    archive: Vec<RawArchive>,
}

#[derive(Deserialize)]
struct RawStatus {
    code: i64,
    message: String,
}

#[derive(Deserialize)]
struct RawBackup {
    label: String,
    #[serde(rename = "type")]
    kind: String,
    timestamp: RawTimestamp,
    info: RawBackupInfo,
    #[serde(default)]
    archive: Option<RawBackupArchive>,
    #[serde(default)]
    error: Option<bool>,
}

#[derive(Deserialize)]
struct RawTimestamp {
    start: i64,
    stop: i64,
}

#[derive(Deserialize)]
struct RawBackupInfo {
    size: u64,
}

#[derive(Deserialize)]
struct RawBackupArchive {
    start: Option<String>,
    stop: Option<String>,
}

#[derive(Deserialize)]
struct RawArchive {
    id: String,
    min: Option<String>,
    max: Option<String>,
}

/// Parses `pgbackrest info --output=json` and picks `stanza`.
pub fn parse_info(text: &str, stanza: &str) -> Result<StanzaInfo, ParseError> {
    const WHAT: &str = "pgbackrest info --output=json";
    let raw: Vec<RawStanza> = serde_json::from_str(text.trim())
        .map_err(|source| ParseError::Json { what: WHAT, source })?;
    let s = raw
        .into_iter()
        .find(|s| s.name == stanza)
        .ok_or_else(|| ParseError::Invalid {
            what: WHAT,
            reason: format!("stanza {stanza:?} is not in the output"),
        })?;
    let mut backups: Vec<BackupSet> = s
        .backup
        .into_iter()
        .map(|b| BackupSet {
            label: b.label,
            kind: b.kind,
            start: b.timestamp.start,
            stop: b.timestamp.stop,
            size: b.info.size,
            archive_start: b.archive.as_ref().and_then(|a| a.start.clone()),
            archive_stop: b.archive.and_then(|a| a.stop),
            error: b.error.unwrap_or(false),
        })
        .collect();
    backups.sort_by_key(|b| b.stop);
    Ok(StanzaInfo {
        status_code: s.status.code,
        status_message: s.status.message,
        backups,
        archives: s
            .archive
            .into_iter()
            .map(|a| (a.id, a.min, a.max))
            .collect(),
    })
}

/// What `verify` reported.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct VerifyReport {
    /// The text report said `status: error`.
    pub status_error: bool,
    /// Whether a text report was found at all (`stanza: …` / `status: …`).
    pub has_report: bool,
    /// Lines of the report that name a problem (invalid backups, missing or invalid files).
    pub problems: Vec<String>,
    /// WAL ranges as logged: (archive id, first segment, last segment), in log order.
    pub wal_ranges: Vec<(String, String, String)>,
}

/// Parses `pgbackrest verify --output=text --log-level-console=detail` (stdout).
pub fn parse_verify(text: &str) -> VerifyReport {
    let mut r = VerifyReport::default();
    for line in text.lines() {
        if let Some(idx) = line.find("archiveId: ") {
            let rest = &line[idx + "archiveId: ".len()..];
            if let (Some(id), Some(start), Some(stop)) = (
                rest.split(',').next(),
                rest.split("wal start: ")
                    .nth(1)
                    .and_then(|s| s.split(',').next()),
                rest.split("wal stop: ").nth(1),
            ) {
                r.wal_ranges.push((
                    id.trim().to_owned(),
                    start.trim().to_owned(),
                    stop.trim().to_owned(),
                ));
                continue;
            }
        }
        // The report is printed once on stdout and, at info level, also inside a log line;
        // only the plain copy (no timestamp prefix) is read.
        if line.starts_with(|c: char| c.is_ascii_digit()) {
            if (line.contains("INFO: invalid") || line.contains("WARN:") || line.contains("ERROR:"))
                && let Some(msg) = line.split_once(": ").map(|(_, m)| m.trim())
            {
                r.problems.push(msg.to_owned());
            }
            continue;
        }
        let t = line.trim();
        if t.starts_with("stanza: ") {
            r.has_report = true;
        } else if t == "status: error" {
            r.status_error = true;
            r.has_report = true;
        } else if t == "status: ok" {
            r.has_report = true;
        } else if (t.starts_with("backup: ") && !t.contains("status: valid"))
            || (t.contains("invalid: ") || t.starts_with("missing: ")) && !is_all_zero(t)
        {
            r.problems.push(t.to_owned());
        }
    }
    // At info level the report is also printed inside a log line: keep each problem once.
    let mut seen = std::collections::HashSet::new();
    r.problems.retain(|p| seen.insert(p.clone()));
    r
}

/// `missing: 0, checksum invalid: 0, size invalid: 0, other: 0` — nothing wrong.
fn is_all_zero(line: &str) -> bool {
    line.split(',')
        .all(|part| part.rsplit(':').next().map(str::trim) == Some("0"))
}

/// A WAL segment name (24 hex digits) as (timeline, segment number).
fn wal_number(name: &str) -> Option<(u64, u64)> {
    if name.len() < 24 {
        return None;
    }
    let tl = u64::from_str_radix(name.get(0..8)?, 16).ok()?;
    let log = u64::from_str_radix(name.get(8..16)?, 16).ok()?;
    let seg = u64::from_str_radix(name.get(16..24)?, 16).ok()?;
    // 16 MiB segments: 256 per log file. Other segment sizes only change how far apart the
    // numbers are, not their order, and a gap is "not the next one" in either case.
    Some((tl, log * 0x100 + seg))
}

/// A parsed WAL range: archive id, first and last (timeline, segment), and their names.
type Range<'a> = (String, (u64, u64), (u64, u64), &'a str, &'a str);

/// WAL problems: gaps between the ranges `verify` logged (on one timeline, after the oldest
/// backup's first segment), and backups whose required segments are not in any range.
pub fn wal_findings(info: &StanzaInfo, ranges: &[(String, String, String)]) -> Vec<String> {
    let mut out = Vec::new();
    let oldest_start = info
        .backups
        .iter()
        .filter_map(|b| b.archive_start.as_deref())
        .filter_map(wal_number)
        .min();
    let mut parsed: Vec<Range<'_>> = ranges
        .iter()
        .filter_map(|(id, a, b)| {
            Some((
                id.clone(),
                wal_number(a)?,
                wal_number(b)?,
                a.as_str(),
                b.as_str(),
            ))
        })
        .collect();
    parsed.sort_by(|x, y| (&x.0, x.1).cmp(&(&y.0, y.1)));
    for pair in parsed.windows(2) {
        let (prev, next) = (&pair[0], &pair[1]);
        if prev.0 != next.0 || prev.2.0 != next.1.0 {
            continue; // another archive id or timeline: not a gap
        }
        if next.1.1 > prev.2.1 + 1 && oldest_start.is_none_or(|o| next.1 > o) {
            out.push(format!(
                "WAL archive {} has a gap: {} is followed by {} (segments in between are missing)",
                prev.0, prev.4, next.3
            ));
        }
    }
    for b in &info.backups {
        let (Some(s), Some(e)) = (b.archive_start.as_deref(), b.archive_stop.as_deref()) else {
            continue;
        };
        let (Some(sn), Some(en)) = (wal_number(s), wal_number(e)) else {
            continue;
        };
        let covered = parsed.iter().any(|r| r.1 <= sn && en <= r.2);
        if !parsed.is_empty() && !covered {
            out.push(format!(
                "backup {} needs WAL {s}..{e}, which is not in the archive",
                b.label
            ));
        }
        if b.error {
            out.push(format!(
                "backup {} is flagged with errors by pgBackRest",
                b.label
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIX: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/backup/");

    fn fixture(name: &str) -> String {
        std::fs::read_to_string(format!("{FIX}{name}")).unwrap()
    }

    #[test]
    fn real_info_with_full_and_diff() {
        let i = parse_info(&fixture("pgbackrest-info.json"), "t").unwrap();
        assert_eq!(i.status_code, 0);
        assert_eq!(i.backups.len(), 2);
        assert_eq!(i.backups[0].kind, "full");
        assert_eq!(i.backups[1].kind, "diff");
        assert_eq!(i.backups[1].size, 23_418_575);
        assert_eq!(
            i.backups[0].archive_start.as_deref(),
            Some("00000001000000000000000A")
        );
        assert!(parse_info(&fixture("pgbackrest-info.json"), "other").is_err());
    }

    #[test]
    fn real_clean_verify() {
        let r = parse_verify(&fixture("pgbackrest-verify-ok.stdout"));
        assert!(r.has_report);
        assert!(!r.status_error);
        assert!(r.problems.is_empty(), "{:?}", r.problems);
        assert_eq!(r.wal_ranges.len(), 1);
        let info = parse_info(&fixture("pgbackrest-info.json"), "t").unwrap();
        assert!(wal_findings(&info, &r.wal_ranges).is_empty());
    }

    #[test]
    fn real_corrupt_file_is_found_although_verify_exits_zero() {
        let r = parse_verify(&fixture("pgbackrest-verify-corrupt.stdout"));
        assert!(r.status_error);
        assert!(
            r.problems.iter().any(|p| p.contains("checksum invalid: 1")),
            "{:?}",
            r.problems
        );
        assert!(
            r.problems.iter().any(|p| p.contains("invalid checksum")),
            "{:?}",
            r.problems
        );
    }

    #[test]
    fn real_wal_gap_is_found() {
        let r = parse_verify(&fixture("pgbackrest-verify-walgap.stdout"));
        assert!(!r.status_error);
        assert_eq!(r.wal_ranges.len(), 3);
        let info = StanzaInfo {
            status_code: 0,
            status_message: "ok".into(),
            backups: vec![BackupSet {
                label: "20261127-024221F".into(),
                kind: "full".into(),
                start: 0,
                stop: 1,
                size: 1,
                archive_start: Some("000000010000000000000002".into()),
                archive_stop: Some("000000010000000000000002".into()),
                error: false,
            }],
            archives: vec![],
        };
        let f = wal_findings(&info, &r.wal_ranges);
        assert_eq!(f.len(), 2, "{f:?}");
        assert!(f[0].contains("000000010000000000000002 is followed by 000000010000000000000006"));
    }

    #[test]
    fn gaps_before_the_oldest_backup_and_timeline_switches_are_not_findings() {
        let info = StanzaInfo {
            status_code: 0,
            status_message: "ok".into(),
            backups: vec![BackupSet {
                label: "b".into(),
                kind: "full".into(),
                start: 0,
                stop: 1,
                size: 1,
                archive_start: Some("000000010000000000000010".into()),
                archive_stop: Some("000000010000000000000010".into()),
                error: false,
            }],
            archives: vec![],
        };
        let ranges = vec![
            (
                "15-1".into(),
                "000000010000000000000001".into(),
                "000000010000000000000003".into(),
            ),
            (
                "15-1".into(),
                "000000010000000000000009".into(),
                "000000010000000000000012".into(),
            ),
            (
                "15-1".into(),
                "000000020000000000000013".into(),
                "000000020000000000000014".into(),
            ),
        ];
        assert!(wal_findings(&info, &ranges).is_empty());
    }

    #[test]
    fn garbage_never_panics() {
        assert!(parse_info("", "t").is_err());
        assert!(parse_info("[{}]", "t").is_err());
        let r = parse_verify("archiveId: \nwal start: x\n\u{0}\n");
        assert!(!r.has_report);
        assert!(wal_number("zz").is_none());
    }
}
