//! Times as the agent reads and writes them: Unix seconds (`f64`) to and from RFC 3339 text,
//! on `chrono`. Backup tools print RFC 3339 with an offset (restic, the `command` schema) or
//! borg's naive `YYYY-MM-DDTHH:MM:SS.ffffff`, which has no zone and is read with an explicit
//! offset; reports, tables and events print UTC. Pure functions, never a panic.

use chrono::{DateTime, NaiveDateTime};

/// Formats Unix seconds as `YYYY-MM-DDTHH:MM:SSZ` (for tables, reports and events); a time
/// outside chrono's range of ±262 000 years is printed as seconds.
pub fn format_utc(unix: f64) -> String {
    let secs = unix.floor() as i64;
    match DateTime::from_timestamp(secs, 0) {
        Some(t) => t.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
        None => format!("{secs} s after 1970-01-01T00:00:00Z"),
    }
}

/// Parses an RFC 3339 time with a zone (`Z` or `±HH:MM`) into Unix seconds.
pub fn parse_rfc3339(s: &str) -> Result<f64, String> {
    let s = s.trim();
    match DateTime::parse_from_rfc3339(s) {
        Ok(t) => Ok(unix_seconds(t.timestamp(), t.timestamp_subsec_nanos())),
        Err(_) if parse_wall_clock(s).is_ok() => Err(format!(
            "{s:?} has no time zone; write Z or an offset such as +02:00"
        )),
        Err(e) => Err(format!(
            "{s:?} is not an RFC 3339 time ({e}); write it like 2026-01-31T12:00:00Z"
        )),
    }
}

/// Parses a naive `YYYY-MM-DDTHH:MM:SS[.ffffff]` (no zone) that is wall-clock time at
/// `utc_offset_secs` east of UTC, into Unix seconds.
pub fn parse_naive(s: &str, utc_offset_secs: i64) -> Result<f64, String> {
    let t = parse_wall_clock(s.trim())?.and_utc();
    Ok(unix_seconds(t.timestamp(), t.timestamp_subsec_nanos()) - utc_offset_secs as f64)
}

/// `YYYY-MM-DD[T ]HH:MM:SS[.fraction]` with nothing after it.
fn parse_wall_clock(s: &str) -> Result<NaiveDateTime, String> {
    NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f")
        .or_else(|_| NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S%.f"))
        .map_err(|e| format!("{s:?} is not a YYYY-MM-DDTHH:MM:SS[.ffffff] time ({e})"))
}

fn unix_seconds(secs: i64, nanos: u32) -> f64 {
    secs as f64 + f64::from(nanos) / 1e9
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
        assert!(
            parse_rfc3339("2024-01-01T00:00:00")
                .unwrap_err()
                .contains("no time zone")
        );
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
    fn format_utc_round_trips_and_survives_any_number() {
        assert_eq!(format_utc(1_795_747_223.9), "2026-11-27T02:40:23Z");
        assert_eq!(format_utc(-1.0), "1969-12-31T23:59:59Z");
        for t in [0.0, 1e9, 1_795_747_223.0, -1e9] {
            assert_eq!(parse_rfc3339(&format_utc(t)).unwrap(), t);
        }
        for odd in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY, 1e300] {
            assert!(!format_utc(odd).is_empty());
        }
    }
}
