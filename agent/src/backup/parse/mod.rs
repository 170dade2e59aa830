//! Pure parsers for what the backup tools print: one module per tool, each a set of functions
//! from `&str` to values, tested against captured real output in
//! `agent/tests/fixtures/backup/`. No I/O happens here; the sources run the tools and hand
//! their output over.
//!
//! Times are carried as Unix seconds (`f64`). The helpers in this file parse the two shapes
//! the tools print: RFC 3339 with an offset (restic, the `command` schema) and borg's naive
//! `YYYY-MM-DDTHH:MM:SS.ffffff`, which has no zone and is interpreted with an explicit offset
//! (see [`borg`] for why faultline runs borg with `TZ=UTC` so that offset is zero).

pub mod borg;
pub mod command;
pub mod manifest;
pub mod pgbackrest;
pub mod restic;

/// Output that does not have the shape the tool documents.
#[derive(Debug, thiserror::Error)]
pub enum ParseError {
    /// Not valid JSON, or JSON of the wrong shape.
    #[error("{what}: not the JSON the tool documents: {source}")]
    Json {
        /// What was being parsed, e.g. `restic snapshots --json`.
        what: &'static str,
        /// The decoder's message.
        source: serde_json::Error,
    },
    /// A value inside is malformed.
    #[error("{what}: {reason}")]
    Invalid {
        /// What was being parsed.
        what: &'static str,
        /// What was wrong.
        reason: String,
    },
}

/// One backup (restic snapshot, borg archive, pgBackRest backup set, file, command entry).
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Snapshot {
    /// The tool's identifier (snapshot id, archive name, backup label, file name).
    pub id: String,
    /// When the backup finished (or, where the tool records only that, started), Unix seconds.
    pub time: f64,
    /// Size in bytes as the tool reports it (restored size where known), if known.
    pub size: Option<u64>,
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's `days_from_civil`).
pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The civil date of a day count since 1970-01-01 (inverse of [`days_from_civil`]).
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = if z >= 0 { z } else { z - 146_096 } / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Formats Unix seconds as `YYYY-MM-DDTHH:MM:SSZ` (for tables and events).
pub fn format_utc(unix: f64) -> String {
    let secs = unix.floor() as i64;
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// Parses `YYYY-MM-DD[T ]HH:MM:SS[.fraction]` and returns (seconds of that wall-clock time
/// read as UTC, the rest of the string after the time).
fn parse_wall_clock(s: &str) -> Result<(f64, &str), String> {
    let b = s.as_bytes();
    let num = |r: std::ops::Range<usize>| -> Result<i64, String> {
        s.get(r.clone())
            .filter(|t| t.bytes().all(|c| c.is_ascii_digit()))
            .and_then(|t| t.parse::<i64>().ok())
            .ok_or_else(|| format!("{s:?} is not a YYYY-MM-DDTHH:MM:SS time"))
    };
    if b.len() < 19
        || b[4] != b'-'
        || b[7] != b'-'
        || !(b[10] == b'T' || b[10] == b' ' || b[10] == b't')
        || b[13] != b':'
        || b[16] != b':'
    {
        return Err(format!("{s:?} is not a YYYY-MM-DDTHH:MM:SS time"));
    }
    let (y, mo, d, h, mi, se) = (
        num(0..4)?,
        num(5..7)?,
        num(8..10)?,
        num(11..13)?,
        num(14..16)?,
        num(17..19)?,
    );
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || se > 60 {
        return Err(format!("{s:?} has a field out of range"));
    }
    let mut rest = &s[19..];
    let mut frac = 0.0;
    if let Some(r) = rest.strip_prefix('.') {
        let digits = r.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(format!("{s:?} has an empty fraction"));
        }
        frac = format!("0.{}", &r[..digits])
            .parse::<f64>()
            .map_err(|e| format!("{s:?}: {e}"))?;
        rest = &r[digits..];
    }
    let days = days_from_civil(y, mo as u32, d as u32);
    Ok((
        (days * 86_400 + h * 3600 + mi * 60 + se) as f64 + frac,
        rest,
    ))
}

/// Parses an RFC 3339 time with a zone (`Z` or `±HH:MM`) into Unix seconds.
pub fn parse_rfc3339(s: &str) -> Result<f64, String> {
    let s = s.trim();
    let (wall, rest) = parse_wall_clock(s)?;
    let offset = match rest {
        "Z" | "z" => 0,
        r if (r.starts_with('+') || r.starts_with('-'))
            && r.len() == 6
            && r.as_bytes()[3] == b':' =>
        {
            let h: i64 = r[1..3].parse().map_err(|_| format!("{s:?}: bad offset"))?;
            let m: i64 = r[4..6].parse().map_err(|_| format!("{s:?}: bad offset"))?;
            let o = h * 3600 + m * 60;
            if r.starts_with('-') { -o } else { o }
        }
        "" => {
            return Err(format!(
                "{s:?} has no time zone; write Z or an offset such as +02:00"
            ));
        }
        _ => return Err(format!("{s:?} has a malformed time zone")),
    };
    Ok(wall - offset as f64)
}

/// Parses a naive `YYYY-MM-DDTHH:MM:SS[.ffffff]` (no zone) that is wall-clock time at
/// `utc_offset_secs` east of UTC, into Unix seconds.
pub fn parse_naive(s: &str, utc_offset_secs: i64) -> Result<f64, String> {
    let (wall, rest) = parse_wall_clock(s.trim())?;
    if !rest.is_empty() {
        return Err(format!("{s:?} has trailing text {rest:?}"));
    }
    Ok(wall - utc_offset_secs as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_with_zones_and_fractions() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z").unwrap(), 0.0);
        assert_eq!(
            parse_rfc3339("2024-02-29T12:00:00+02:00").unwrap(),
            1_709_200_800.0
        );
        let t = parse_rfc3339("2026-11-27T02:40:10.863363109Z").unwrap();
        assert!((t - 1_795_747_210.863_363).abs() < 1e-3, "{t}");
        assert_eq!(
            parse_rfc3339("2000-01-01T00:00:00-01:30").unwrap(),
            946_684_800.0 + 5400.0
        );
    }

    #[test]
    fn rfc3339_rejects_garbage_without_panicking() {
        for bad in [
            "",
            "x",
            "2024-13-01T00:00:00Z",
            "2024-01-01T00:00:00",
            "2024-01-01T00:00:00+0",
            "2024-01-01T00:00:00.Z",
            "20240101T000000Z",
            "2024-01-01T00:00:0é",
        ] {
            assert!(parse_rfc3339(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn naive_times_use_the_given_offset() {
        assert_eq!(
            parse_naive("2026-11-27T02:40:23.000000", 0).unwrap(),
            1_795_747_223.0
        );
        assert_eq!(
            parse_naive("2026-11-27T11:40:23.000000", 9 * 3600).unwrap(),
            1_795_747_223.0
        );
        assert!(parse_naive("2026-11-27T02:40:23Z", 0).is_err());
    }

    #[test]
    fn civil_round_trip_and_format() {
        for days in [-800_000, -1, 0, 1, 19_000, 20_000, 2_000_000] {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
        assert_eq!(format_utc(1_795_747_223.9), "2026-11-27T02:40:23Z");
    }
}
