//! The `drills:` config section and the scheduler.
//!
//! ```yaml
//! drills:
//!   - name: nightly-pg            # optional: the scenario's own name by default
//!     scenario: /etc/faultline/drills/pg.yaml
//!     schedule: "0 3 * * *"       # cron (croner; an optional leading seconds field); none: on demand
//!     timezone: Europe/Berlin     # UTC (default), an IANA zone name, or a fixed offset ±HH:MM;
//!                                 # explicit, never the host's
//!     jitter: 10m                 # random delay added to each start
//! ```
//!
//! Every listed scenario is loaded and validated with the config (its errors name the
//! scenario file's line), so a bad one stops `faultline run` at start. On-demand entries are
//! what `POST /v1/drills {"scenario": NAME}` starts. Scheduled starts go through the same
//! [`super::service::DrillService::start`] as the API, so two drills sharing a target never
//! run at once: the later one is skipped and logged.
//!
//! Named zones follow their daylight-saving rules (chrono-tz's IANA database, croner's DST
//! handling): on a spring-forward day a start in the skipped hour runs once, right after the
//! jump; on a fall-back day a start in the repeated hour runs once, at its first occurrence.

use faultline_chaos::units::HumanDuration;
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, FixedOffset, TimeZone, Utc};
use croner::Cron;
use serde::{Deserialize, Serialize};

use super::scenario::{Known, Scenario};
use crate::yaml::ConfigError;
use crate::yaml::item_line;

/// One `drills:` entry.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DrillEntry {
    /// Name for the API and metrics (default: the scenario's name).
    #[serde(default)]
    pub name: Option<String>,
    /// The scenario file.
    pub scenario: std::path::PathBuf,
    /// Cron expression.
    #[serde(default)]
    pub schedule: Option<String>,
    /// `UTC`, an IANA zone name (`Europe/Berlin`) or `±HH:MM`.
    #[serde(default = "default_tz")]
    pub timezone: String,
    /// Random start delay, up to this.
    #[serde(default = "zero")]
    pub jitter: HumanDuration,
}

fn default_tz() -> String {
    "UTC".into()
}

fn zero() -> HumanDuration {
    HumanDuration(Duration::ZERO)
}

/// A validated entry.
#[derive(Clone, Debug)]
pub struct Loaded {
    /// The entry's name.
    pub name: String,
    /// The scenario.
    pub scenario: Scenario,
    /// Parsed schedule.
    pub cron: Option<Cron>,
    /// Its time zone.
    pub tz: Zone,
    /// Jitter bound.
    pub jitter: Duration,
}

/// A schedule's time zone: a fixed offset (UTC included) or a named IANA zone with its
/// daylight-saving rules.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Zone {
    /// UTC or `±HH:MM`.
    Fixed(FixedOffset),
    /// An IANA zone (`Europe/Berlin`).
    Named(chrono_tz::Tz),
}

/// Parses `UTC`, `Z`, an IANA zone name or `±HH:MM`.
pub fn parse_tz(s: &str) -> Result<Zone, String> {
    let t = s.trim();
    if t.eq_ignore_ascii_case("utc") || t == "Z" {
        return FixedOffset::east_opt(0)
            .map(Zone::Fixed)
            .ok_or_else(|| "UTC".to_owned());
    }
    let err = || {
        format!(
            "{s:?}: write UTC, an IANA time zone name such as Europe/Berlin, or a fixed offset such as +02:00 or -05:30"
        )
    };
    let (sign, rest) = match t.as_bytes().first() {
        Some(b'+') => (1, &t[1..]),
        Some(b'-') => (-1, &t[1..]),
        _ => {
            return t.parse::<chrono_tz::Tz>().map(Zone::Named).map_err(|_| {
                format!(
                    "{s:?} is not a known IANA time zone name (such as Europe/Berlin or America/New_York); or write UTC or a fixed offset such as +02:00"
                )
            });
        }
    };
    let (h, m) = rest.split_once(':').ok_or_else(err)?;
    let (h, m): (i32, i32) = (h.parse().map_err(|_| err())?, m.parse().map_err(|_| err())?);
    if !(0..=14).contains(&h) || !(0..60).contains(&m) {
        return Err(err());
    }
    FixedOffset::east_opt(sign * (h * 3600 + m * 60))
        .map(Zone::Fixed)
        .ok_or_else(err)
}

/// Parses a cron expression (5 fields, or 6 with leading seconds).
pub fn parse_cron(s: &str) -> Result<Cron, String> {
    Cron::from_str(s).map_err(|e| format!("{s:?} is not a cron expression: {e}"))
}

/// The first start strictly after `after`, in `tz`'s wall clock.
pub fn next_run(cron: &Cron, tz: Zone, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
    fn next<Z: TimeZone>(cron: &Cron, tz: &Z, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        cron.find_next_occurrence(&after.with_timezone(tz), false)
            .ok()
            .map(|t| t.with_timezone(&Utc))
    }
    match tz {
        Zone::Fixed(f) => next(cron, &f, after),
        Zone::Named(z) => next(cron, &z, after),
    }
}

/// Loads and validates every entry; errors name the config file's line and field, or the
/// scenario file's.
pub fn load(
    entries: &[DrillEntry],
    text: &str,
    file: &str,
    known: &Known,
) -> Result<Vec<Loaded>, ConfigError> {
    let mut out: Vec<Loaded> = Vec::new();
    for (i, e) in entries.iter().enumerate() {
        let err = |field: &str, message: String| ConfigError::Invalid {
            file: file.to_owned(),
            line: item_line(text, "drills", i, field),
            field: format!("drills[{i}].{field}"),
            message,
        };
        let scenario = super::scenario::load(&e.scenario, known)?;
        let cron = e
            .schedule
            .as_deref()
            .map(parse_cron)
            .transpose()
            .map_err(|m| err("schedule", m))?;
        let tz = parse_tz(&e.timezone).map_err(|m| err("timezone", m))?;
        let name = e.name.clone().unwrap_or_else(|| scenario.name.clone());
        if out.iter().any(|l| l.name == name) {
            return Err(err("name", format!("{name:?} is listed twice")));
        }
        out.push(Loaded {
            name,
            scenario,
            cron,
            tz,
            jitter: e.jitter.0,
        });
    }
    Ok(out)
}

/// A random delay in `[0, bound]`.
pub fn jitter(bound: Duration) -> Duration {
    if bound.is_zero() {
        return Duration::ZERO;
    }
    let ms = u64::try_from(bound.as_millis()).unwrap_or(u64::MAX);
    Duration::from_millis(rand::random_range(0..=ms))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn time_zones_are_explicit() {
        let fixed = |s| match parse_tz(s).unwrap() {
            Zone::Fixed(f) => f.local_minus_utc(),
            Zone::Named(z) => panic!("{s}: {z}"),
        };
        assert_eq!(fixed("UTC"), 0);
        assert_eq!(fixed("+02:00"), 7200);
        assert_eq!(fixed("-05:30"), -19800);
        assert_eq!(
            parse_tz("Europe/Berlin").unwrap(),
            Zone::Named(chrono_tz::Europe::Berlin)
        );
        for bad in [
            "Europe/Berlinn",
            "Mars/Olympus",
            "+2",
            "+25:00",
            "",
            "02:00",
        ] {
            assert!(parse_tz(bad).is_err(), "{bad}");
        }
        assert!(parse_tz("Europe/Berlinn").unwrap_err().contains("IANA"));
    }

    fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, mo, d, h, mi, 0).unwrap()
    }

    #[test]
    fn berlin_spring_forward_day_keeps_wall_clock_times_and_runs_a_skipped_hour_once() {
        // 2025-03-30: at 02:00 CET (01:00 UTC) clocks jump to 03:00 CEST.
        let berlin = parse_tz("Europe/Berlin").unwrap();
        // 01:30 local exists (CET, +01:00) → 00:30 UTC; 03:30 local is CEST (+02:00) → 01:30 UTC.
        let c = parse_cron("30 1,3 * * *").unwrap();
        let n = next_run(&c, berlin, utc(2025, 3, 29, 23, 0)).unwrap();
        assert_eq!(n, utc(2025, 3, 30, 0, 30));
        let n = next_run(&c, berlin, n).unwrap();
        assert_eq!(n, utc(2025, 3, 30, 1, 30));
        // 03:00 local the day before is CET (02:00 UTC), the day after CEST (01:00 UTC).
        let three = parse_cron("0 3 * * *").unwrap();
        assert_eq!(
            next_run(&three, berlin, utc(2025, 3, 29, 0, 0)).unwrap(),
            utc(2025, 3, 29, 2, 0)
        );
        assert_eq!(
            next_run(&three, berlin, utc(2025, 3, 31, 0, 0)).unwrap(),
            utc(2025, 3, 31, 1, 0)
        );
        // 02:30 does not exist that day: the drill runs once, not never and not twice.
        let skipped = parse_cron("30 2 * * *").unwrap();
        let first = next_run(&skipped, berlin, utc(2025, 3, 29, 23, 0)).unwrap();
        assert!(
            first >= utc(2025, 3, 30, 1, 0) && first < utc(2025, 3, 30, 2, 0),
            "{first}"
        );
        let second = next_run(&skipped, berlin, first).unwrap();
        assert_eq!(second, utc(2025, 3, 31, 0, 30), "once on the gap day");
    }

    #[test]
    fn berlin_fall_back_day_runs_a_repeated_hour_once() {
        // 2025-10-26: at 03:00 CEST (01:00 UTC) clocks go back to 02:00 CET.
        let berlin = parse_tz("Europe/Berlin").unwrap();
        let c = parse_cron("30 2 * * *").unwrap();
        // 02:30 happens twice (00:30 UTC in CEST, 01:30 UTC in CET): the drill runs once.
        let first = next_run(&c, berlin, utc(2025, 10, 25, 23, 0)).unwrap();
        assert_eq!(first, utc(2025, 10, 26, 0, 30));
        let second = next_run(&c, berlin, first).unwrap();
        assert_eq!(second, utc(2025, 10, 27, 1, 30), "not again at 01:30 UTC");
        // 04:00 local after the change is CET: 03:00 UTC.
        let four = parse_cron("0 4 * * *").unwrap();
        assert_eq!(
            next_run(&four, berlin, utc(2025, 10, 26, 0, 0)).unwrap(),
            utc(2025, 10, 26, 3, 0)
        );
        // A fixed offset ignores DST entirely.
        let n = next_run(&four, parse_tz("+02:00").unwrap(), utc(2025, 10, 26, 0, 0)).unwrap();
        assert_eq!(n, utc(2025, 10, 26, 2, 0));
    }

    #[test]
    fn next_run_follows_the_zone() {
        let c = parse_cron("0 3 * * *").unwrap();
        let after = Utc.with_ymd_and_hms(2025, 1, 1, 0, 0, 0).unwrap();
        // 03:00 at +02:00 is 01:00 UTC.
        let n = next_run(&c, parse_tz("+02:00").unwrap(), after).unwrap();
        assert_eq!(n, Utc.with_ymd_and_hms(2025, 1, 1, 1, 0, 0).unwrap());
        let n = next_run(&c, parse_tz("UTC").unwrap(), after).unwrap();
        assert_eq!(n, Utc.with_ymd_and_hms(2025, 1, 1, 3, 0, 0).unwrap());
        // Seconds field.
        let every2 = parse_cron("*/2 * * * * *").unwrap();
        let n = next_run(&every2, parse_tz("UTC").unwrap(), after).unwrap();
        assert_eq!(n, Utc.with_ymd_and_hms(2025, 1, 1, 0, 0, 2).unwrap());
        assert!(parse_cron("every day").is_err());
    }

    #[test]
    fn a_bad_zone_name_is_a_config_error_naming_file_line_and_field() {
        let dir = tempfile::tempdir().unwrap();
        let sc = dir.path().join("s.yaml");
        std::fs::write(
            &sc,
            "name: s\nsteady_state:\n  - name: port\n    tcp: { address: \"127.0.0.1:9\", timeout: 200ms }\nfaults:\n  - at: 0s\n    fault: { kind: process-pause, pid: 999999, duration: 1s }\n",
        )
        .unwrap();
        let good = format!(
            "drills:\n  - scenario: {}\n    schedule: \"0 3 * * *\"\n    timezone: Europe/Berlin\n",
            sc.display()
        );
        let loaded = crate::config::parse(&good, "f.yaml").unwrap();
        assert_eq!(loaded.config.drills[0].timezone, "Europe/Berlin");
        let bad = good.replace("Europe/Berlin", "Europe/Berln");
        let e = crate::config::parse(&bad, "f.yaml")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("f.yaml:4: drills[0].timezone: "), "{e}");
        assert!(e.contains("Europe/Berln") && e.contains("IANA"), "{e}");
    }

    #[test]
    fn jitter_stays_in_bounds() {
        assert_eq!(jitter(Duration::ZERO), Duration::ZERO);
        for _ in 0..100 {
            assert!(jitter(Duration::from_millis(50)) <= Duration::from_millis(50));
        }
    }
}
