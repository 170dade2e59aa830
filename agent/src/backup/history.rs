//! The history of backup checks: one compact [`CheckRecord`] per check that ran (freshness,
//! integrity, restore test — with its timings), kept for the posture report
//! (`faultline report posture`, `GET /v1/history`) as drill reports are kept under
//! `<state-dir>/drills/`.
//!
//! Records are appended to one segment file per UTC day,
//! `<state-dir>/history/backup/<YYYY-MM-DD>.log`, one line each: the CRC-32 of the JSON in
//! eight hex digits, a space, the JSON, a newline. A writer takes the segment's `flock`,
//! ends a torn last line (a writer killed mid-write) with a newline so the next record
//! starts clean, appends its line in one `write` and `fdatasync`s. A reader keeps the lines
//! whose CRC and JSON check out and skips the rest (counted), so a record cut short by
//! SIGKILL is never read and every other record is kept. Day segments make retention a matter
//! of removing whole files, oldest first (`crate::posture::retention`).
//!
//! Blocking file I/O: the scheduler appends on the blocking pool, off the collection path
//! (checks are minutes apart; one fsync each).

use std::io::{Read as _, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{CheckKind, CheckResult, SourceKind, Status};

/// The longest summary or error kept in a record (the check's log event has the rest).
const TEXT_LIMIT: usize = 400;

#[cfg(test)]
impl CheckRecord {
    /// Tests' base record: a healthy `check` of the files source `source` that started at
    /// `started` (Unix seconds), took 0.1 s and measured nothing; tests change what they need.
    pub(crate) fn test_record(source: &str, check: CheckKind, started: f64) -> Self {
        Self {
            id: format!("{source}-{}-{started}", check.as_str()),
            source: source.into(),
            kind: SourceKind::Files,
            service: None,
            tier: None,
            check,
            status: Status::Healthy,
            started,
            duration_seconds: 0.1,
            summary: String::new(),
            error: None,
            age_seconds: None,
            rpo_seconds: None,
            restore_seconds: None,
            verify_seconds: None,
            rto_seconds: None,
            rto_exceeded: None,
            backup_id: None,
        }
    }
}

/// One check that ran, as the history keeps it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CheckRecord {
    /// `<source>-<check>-<started, Unix ms>`: unique per source and check.
    pub id: String,
    /// Source name.
    pub source: String,
    /// Source kind.
    pub kind: SourceKind,
    /// The source's `service:`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    /// The source's `tier:`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tier: Option<String>,
    /// Which check.
    pub check: CheckKind,
    /// `healthy` or `unhealthy` (skipped checks are not recorded).
    pub status: Status,
    /// When it started, Unix seconds.
    pub started: f64,
    /// How long the whole check took, seconds.
    pub duration_seconds: f64,
    /// One line for people (shortened).
    pub summary: String,
    /// The error, when it failed (shortened).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Freshness: the newest backup's age when checked, seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub age_seconds: Option<f64>,
    /// The source's RPO, seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rpo_seconds: Option<f64>,
    /// Restore test: seconds the restore took.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore_seconds: Option<f64>,
    /// Restore test: seconds the verification took.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verify_seconds: Option<f64>,
    /// The source's restore-time objective, seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rto_seconds: Option<f64>,
    /// Restore test: restore and verification together took longer than the RTO.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rto_exceeded: Option<bool>,
    /// The backup checked or restored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup_id: Option<String>,
}

fn shorten(s: &str) -> String {
    if s.len() <= TEXT_LIMIT {
        return s.to_owned();
    }
    let mut end = TEXT_LIMIT;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

impl CheckRecord {
    /// The record of `r`, a check of a source with `service` and `tier`; `None` for a skipped
    /// check (it says nothing about health).
    pub fn of(r: &CheckResult, service: Option<&str>, tier: Option<&str>) -> Option<Self> {
        if r.status == Status::Skipped {
            return None;
        }
        let restore = r.restore.as_ref();
        let inv = r.inventory.as_ref();
        Some(Self {
            id: format!(
                "{}-{}-{}",
                r.source,
                r.check.as_str(),
                (r.started * 1000.0).round() as i64
            ),
            source: r.source.clone(),
            kind: r.kind,
            service: service.map(str::to_owned),
            tier: tier.map(str::to_owned),
            check: r.check,
            status: r.status,
            started: r.started,
            duration_seconds: r.duration_seconds,
            summary: shorten(&r.summary),
            error: r.error.as_deref().map(shorten),
            age_seconds: inv.and_then(|i| i.age_seconds),
            rpo_seconds: inv.map(|i| i.rpo_seconds),
            restore_seconds: restore.and_then(|d| d.restore_seconds),
            verify_seconds: restore.and_then(|d| d.verify_seconds),
            rto_seconds: restore.and_then(|d| d.rto_seconds),
            rto_exceeded: restore.map(|d| d.rto_exceeded),
            backup_id: restore
                .and_then(|d| d.backup_id.clone())
                .or_else(|| inv.and_then(|i| i.newest_id.clone())),
        })
    }

    /// Restore and verification together, seconds (a restore test's duration against the RTO).
    pub fn restore_total_seconds(&self) -> Option<f64> {
        self.restore_seconds
            .map(|r| r + self.verify_seconds.unwrap_or(0.0))
    }
}

/// Why the history could not be written or read.
#[derive(Debug, thiserror::Error)]
#[error("backup check history {}: {source}", path.display())]
pub struct HistoryIoError {
    /// The file or directory.
    pub path: PathBuf,
    /// Why.
    pub source: std::io::Error,
}

/// What a read found.
#[derive(Debug, Default)]
pub struct Records {
    /// The records, in file order (oldest first).
    pub records: Vec<CheckRecord>,
    /// Lines skipped: torn by a crash, or damaged.
    pub skipped: usize,
}

/// The segment directory of a state directory.
pub fn dir(state_dir: &Path) -> PathBuf {
    state_dir.join("history").join("backup")
}

/// The segment name (`YYYY-MM-DD.log`) of the UTC day holding `unix`.
fn segment_name(unix: f64) -> String {
    let day = crate::timefmt::format_utc(unix);
    format!("{}.log", day.get(..10).unwrap_or("1970-01-01"))
}

/// The UTC day (Unix seconds at its start) a segment file name stands for.
pub fn segment_day(name: &str) -> Option<f64> {
    let day = name.strip_suffix(".log")?;
    crate::timefmt::parse_rfc3339(&format!("{day}T00:00:00Z")).ok()
}

/// One line: `CRC32HEX JSON\n`.
fn encode(r: &CheckRecord) -> Result<Vec<u8>, serde_json::Error> {
    let json = serde_json::to_vec(r)?;
    let mut line = format!("{:08x} ", crc32fast::hash(&json)).into_bytes();
    line.extend_from_slice(&json);
    line.push(b'\n');
    Ok(line)
}

/// The record of one line, if it is whole and undamaged.
fn decode(line: &[u8]) -> Option<CheckRecord> {
    let (crc, json) = (line.get(..8)?, line.get(9..)?);
    if line.get(8) != Some(&b' ') {
        return None;
    }
    let crc = u32::from_str_radix(std::str::from_utf8(crc).ok()?, 16).ok()?;
    if crc32fast::hash(json) != crc {
        return None;
    }
    serde_json::from_slice(json).ok()
}

/// Appends `r` to its day's segment under `state_dir`, durably.
pub fn append(state_dir: &Path, r: &CheckRecord) -> Result<PathBuf, HistoryIoError> {
    let dir = dir(state_dir);
    let path = dir.join(segment_name(r.started));
    let err = |p: &Path| {
        let p = p.to_path_buf();
        move |source| HistoryIoError { path: p, source }
    };
    let line = encode(r).map_err(|e| HistoryIoError {
        path: path.clone(),
        source: std::io::Error::other(e),
    })?;
    let new_dir = !dir.is_dir();
    std::fs::create_dir_all(&dir).map_err(err(&dir))?;
    let file = std::fs::OpenOptions::new()
        .create(true)
        .read(true)
        .append(true)
        .open(&path)
        .map_err(err(&path))?;
    // Writers in other processes (`backup check` beside the agent) wait here.
    let mut file =
        nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive).map_err(|(_, e)| {
            HistoryIoError {
                path: path.clone(),
                source: e.into(),
            }
        })?;
    let len = file.metadata().map_err(err(&path))?.len();
    let mut out = Vec::with_capacity(line.len() + 1);
    if len > 0 {
        let mut last = [0u8; 1];
        file.seek(SeekFrom::Start(len - 1)).map_err(err(&path))?;
        file.read_exact(&mut last).map_err(err(&path))?;
        if last[0] != b'\n' {
            // A writer died mid-line: end its torn record so it cannot swallow this one.
            out.push(b'\n');
        }
    }
    out.extend_from_slice(&line);
    file.write_all(&out).map_err(err(&path))?;
    file.sync_data().map_err(err(&path))?;
    if new_dir || len == 0 {
        // A new file's directory entry must last too.
        std::fs::File::open(&dir)
            .and_then(|d| d.sync_all())
            .map_err(err(&dir))?;
    }
    Ok(path)
}

/// Every segment file: (path, the day it holds).
pub fn segments(state_dir: &Path) -> Result<Vec<(PathBuf, f64)>, HistoryIoError> {
    let dir = dir(state_dir);
    let rd = match std::fs::read_dir(&dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => return Err(HistoryIoError { path: dir, source }),
    };
    let mut out: Vec<(PathBuf, f64)> = rd
        .flatten()
        .filter_map(|e| {
            let day = segment_day(&e.file_name().to_string_lossy())?;
            Some((e.path(), day))
        })
        .collect();
    out.sort_by(|a, b| a.1.total_cmp(&b.1));
    Ok(out)
}

/// The records of checks started at or after `since` (Unix seconds), oldest first.
pub fn read_since(state_dir: &Path, since: f64) -> Result<Records, HistoryIoError> {
    read_days(state_dir, since, usize::MAX).map(|(r, _)| r)
}

/// The records started at or after `since`, read day segment by day segment, oldest first,
/// stopping after the day in which more than `enough` were found; with the end of the last
/// day read when it stopped early (records after it were not read).
pub fn read_days(
    state_dir: &Path,
    since: f64,
    enough: usize,
) -> Result<(Records, Option<f64>), HistoryIoError> {
    let mut out = Records::default();
    let mut stopped = None;
    for (path, day) in segments(state_dir)? {
        if day + 86_400.0 <= since {
            continue;
        }
        if out.records.len() > enough {
            stopped = Some(day);
            break;
        }
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            // Removed by retention meanwhile.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(source) => return Err(HistoryIoError { path, source }),
        };
        for line in bytes.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            match decode(line) {
                Some(r) if r.started >= since => out.records.push(r),
                Some(_) => {}
                None => out.skipped += 1,
            }
        }
    }
    out.records.sort_by(|a, b| a.started.total_cmp(&b.started));
    Ok((out, stopped))
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn record(source: &str, check: CheckKind, started: f64, ok: bool) -> CheckRecord {
        CheckRecord {
            id: format!("{source}-{}-{}", check.as_str(), started as i64),
            source: source.into(),
            kind: SourceKind::Restic,
            service: Some("payments".into()),
            tier: Some("tier-1".into()),
            check,
            status: if ok {
                Status::Healthy
            } else {
                Status::Unhealthy
            },
            started,
            duration_seconds: 1.5,
            summary: "s".into(),
            error: (!ok).then(|| "broken".into()),
            age_seconds: Some(60.0),
            rpo_seconds: Some(3600.0),
            restore_seconds: Some(1.0),
            verify_seconds: Some(0.25),
            rto_seconds: Some(60.0),
            rto_exceeded: Some(false),
            backup_id: Some("abc".into()),
        }
    }

    #[test]
    fn records_round_trip_and_are_read_oldest_first_by_day() {
        let dir = tempfile::tempdir().unwrap();
        let day = 1_790_000_000.0;
        for (t, ok) in [(day + 86_400.0, false), (day, true), (day + 10.0, true)] {
            append(dir.path(), &record("db", CheckKind::Restore, t, ok)).unwrap();
        }
        assert_eq!(segments(dir.path()).unwrap().len(), 2);
        let all = read_since(dir.path(), 0.0).unwrap();
        assert_eq!(all.skipped, 0);
        let times: Vec<f64> = all.records.iter().map(|r| r.started).collect();
        assert_eq!(times, [day, day + 10.0, day + 86_400.0]);
        assert_eq!(all.records[0], record("db", CheckKind::Restore, day, true));
        assert_eq!(read_since(dir.path(), day + 5.0).unwrap().records.len(), 2);
        assert_eq!(all.records[0].restore_total_seconds(), Some(1.25));
    }

    #[test]
    fn a_record_torn_at_any_byte_is_never_read_and_the_rest_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let t = 1_790_000_000.0;
        let path = append(dir.path(), &record("db", CheckKind::Freshness, t, true)).unwrap();
        let whole = std::fs::read(&path).unwrap();
        let torn = encode(&record("db", CheckKind::Freshness, t + 1.0, false)).unwrap();
        // Every point a SIGKILL could cut the second write at before its JSON is whole (with
        // only the newline missing, the record is whole and is read).
        for cut in 0..torn.len() - 1 {
            let mut bytes = whole.clone();
            bytes.extend_from_slice(&torn[..cut]);
            std::fs::write(&path, &bytes).unwrap();
            let read = read_since(dir.path(), 0.0).unwrap();
            assert_eq!(read.records.len(), 1, "cut at {cut}");
            assert_eq!(read.skipped, usize::from(cut > 0), "cut at {cut}");
            // The next writer ends the torn line: its own record is read whole (at a sample
            // of cuts: in the CRC, at the space, inside the JSON; each append fsyncs).
            if ![1, 8, 9, 10, torn.len() / 2, torn.len() - 2].contains(&cut) {
                continue;
            }
            append(
                dir.path(),
                &record("db", CheckKind::Freshness, t + 2.0, true),
            )
            .unwrap();
            let read = read_since(dir.path(), 0.0).unwrap();
            let times: Vec<f64> = read.records.iter().map(|r| r.started).collect();
            assert_eq!(times, [t, t + 2.0], "cut at {cut}");
        }
        // A flipped byte inside a record is caught by the CRC.
        let mut bytes = whole.clone();
        bytes[20] ^= 0x01;
        std::fs::write(&path, &bytes).unwrap();
        let read = read_since(dir.path(), 0.0).unwrap();
        assert_eq!((read.records.len(), read.skipped), (0, 1));
    }

    #[test]
    fn skipped_checks_are_not_recorded_and_long_texts_are_shortened() {
        let r = CheckResult {
            source: "s".into(),
            kind: SourceKind::Files,
            check: CheckKind::Integrity,
            status: Status::Skipped,
            summary: "x".repeat(2000),
            started: 1.0,
            duration_seconds: 0.0,
            error: None,
            stderr: None,
            inventory: None,
            integrity: None,
            restore: None,
        };
        assert!(CheckRecord::of(&r, None, None).is_none());
        let failed = CheckResult {
            status: Status::Unhealthy,
            ..r
        };
        let rec = CheckRecord::of(&failed, Some("web"), None).unwrap();
        assert!(rec.summary.len() <= TEXT_LIMIT + 3);
        assert_eq!(rec.service.as_deref(), Some("web"));
        assert_eq!(rec.id, "s-integrity-1000");
    }
}
