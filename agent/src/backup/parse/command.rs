//! The `command` source's list schema: what any backup tool's wrapper prints so faultline can
//! judge it.
//!
//! The list command prints JSON on stdout, either an array or an object with a `backups`
//! array. Each entry has:
//!
//! | field | type | required | meaning |
//! | --- | --- | --- | --- |
//! | `time` | RFC 3339 string with a zone, or Unix seconds (number) | yes | when the backup finished |
//! | `size` | integer, bytes | no | size of the backup (for inventory and the restore space check) |
//! | `id` | string | no | the tool's identifier (defaults to the time as printed) |
//!
//! Example: `[{"time": "2024-05-01T02:00:00Z", "size": 1048576, "id": "nightly-0501"}]`.
//! Unknown fields are ignored so wrappers may print more.

use serde::Deserialize;

use super::{ParseError, Snapshot};
use crate::timefmt::parse_rfc3339;

#[derive(Deserialize)]
#[serde(untagged)]
enum RawList {
    Array(Vec<RawEntry>),
    Object { backups: Vec<RawEntry> },
}

#[derive(Deserialize)]
struct RawEntry {
    time: RawTime,
    #[serde(default)]
    size: Option<u64>,
    #[serde(default)]
    id: Option<String>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RawTime {
    Unix(f64),
    Text(String),
}

/// Parses a list command's stdout into snapshots sorted oldest first.
pub fn parse_list(text: &str) -> Result<Vec<Snapshot>, ParseError> {
    const WHAT: &str = "list command output";
    let raw: RawList = serde_json::from_str(text.trim())
        .map_err(|source| ParseError::Json { what: WHAT, source })?;
    let entries = match raw {
        RawList::Array(v) | RawList::Object { backups: v } => v,
    };
    let mut out = Vec::with_capacity(entries.len());
    for (i, e) in entries.into_iter().enumerate() {
        let (time, shown) = match e.time {
            RawTime::Unix(t) if t.is_finite() && t >= 0.0 => (t, t.to_string()),
            RawTime::Unix(t) => {
                return Err(ParseError::Invalid {
                    what: WHAT,
                    reason: format!("entry {i}: time {t} is not a Unix time"),
                });
            }
            RawTime::Text(s) => {
                let t = parse_rfc3339(&s).map_err(|r| ParseError::Invalid {
                    what: WHAT,
                    reason: format!("entry {i}: {r}"),
                })?;
                (t, s)
            }
        };
        out.push(Snapshot {
            id: e.id.unwrap_or(shown),
            time,
            size: e.size,
        });
    }
    out.sort_by(|a, b| a.time.total_cmp(&b.time));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_shapes_and_both_time_forms() {
        let a = parse_list(
            r#"[{"time":"2024-01-02T00:00:00Z","size":5,"id":"b"},{"time":1704067200}]"#,
        )
        .unwrap();
        assert_eq!(a.len(), 2);
        assert_eq!(a[0].time, 1_704_067_200.0);
        assert_eq!(a[0].id, "1704067200");
        assert_eq!(a[1].size, Some(5));
        let b = parse_list(r#"{"backups":[{"time":"2024-01-02T00:00:00+01:00","extra":true}]}"#)
            .unwrap();
        assert_eq!(b[0].time, 1_704_150_000.0);
        assert!(parse_list("[]").unwrap().is_empty());
    }

    #[test]
    fn bad_entries_are_named() {
        let e = parse_list(r#"[{"time":"2024-01-02T00:00:00Z"},{"time":"tuesday"}]"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("entry 1"), "{e}");
        assert!(parse_list(r#"[{"time":-5}]"#).is_err());
        assert!(parse_list(r#"[{"size":1}]"#).is_err());
        assert!(parse_list("not json").is_err());
    }
}
