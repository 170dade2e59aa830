//! Small value types written the human way in specs, flags and config: durations (`30s`),
//! byte sizes (`512MiB`), percentages (`50` or `50%`) and signals (`KILL`, `SIGTERM`, `9`).
//!
//! Each type parses from a string (clap uses [`std::str::FromStr`]) and (de)serialises as
//! that same string, so a spec reads the same on the command line, in JSON and in YAML.
//! Parsing is pure and never panics.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use nix::sys::signal::Signal;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

macro_rules! string_serde {
    ($t:ty) => {
        impl Serialize for $t {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }
        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                // Accept numbers too (`bytes: 1048576`, `load: 50`).
                let v = serde_json::Value::deserialize(d)?;
                let s = match v {
                    serde_json::Value::String(s) => s,
                    serde_json::Value::Number(n) => n.to_string(),
                    other => {
                        return Err(serde::de::Error::custom(format!(
                            "expected a string or a number, found {other}"
                        )));
                    }
                };
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

/// A duration such as `30s`, `1m30s` or `250ms`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct HumanDuration(pub Duration);

impl FromStr for HumanDuration {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        humantime::parse_duration(s.trim())
            .map(HumanDuration)
            .map_err(|e| format!("invalid duration {s:?} ({e}); write it like 30s, 250ms or 1m30s"))
    }
}

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", humantime::format_duration(self.0))
    }
}
string_serde!(HumanDuration);

/// A number of bytes: `1048576`, `512K`, `64MiB`, `1.5G` (K/M/G/T are powers of 1024, as
/// are KiB/MiB/GiB/TiB; KB/MB/GB/TB are powers of 1000).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ByteSize(pub u64);

impl FromStr for ByteSize {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        parse_bytes(s).map(ByteSize)
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [(&str, u64); 4] = [
            ("TiB", 1 << 40),
            ("GiB", 1 << 30),
            ("MiB", 1 << 20),
            ("KiB", 1 << 10),
        ];
        for (name, size) in UNITS {
            if self.0 >= size && self.0.is_multiple_of(size) {
                return write!(f, "{}{name}", self.0 / size);
            }
        }
        write!(f, "{}", self.0)
    }
}
string_serde!(ByteSize);

/// Parses a byte size; see [`ByteSize`].
pub fn parse_bytes(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let unit = unit.trim();
    let mult: u64 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" => 1 << 10,
        "m" | "mib" => 1 << 20,
        "g" | "gib" => 1 << 30,
        "t" | "tib" => 1 << 40,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "tb" => 1_000_000_000_000,
        _ => {
            return Err(format!(
                "invalid size {s:?}: unknown unit {unit:?}; write it like 1048576, 512K, 64MiB or 2G"
            ));
        }
    };
    let value: f64 = num
        .parse()
        .map_err(|_| format!("invalid size {s:?}; write it like 1048576, 512K, 64MiB or 2G"))?;
    let bytes = value * mult as f64;
    if !bytes.is_finite() || bytes < 0.0 || bytes > u64::MAX as f64 {
        return Err(format!("invalid size {s:?}: out of range"));
    }
    Ok(bytes.round() as u64)
}

/// A percentage in `0..=100`, written `50` or `50%` (fractions allowed: `12.5`).
#[derive(Clone, Copy, Debug, PartialEq, PartialOrd)]
pub struct Percent(pub f64);

impl FromStr for Percent {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let t = s.trim().trim_end_matches('%').trim();
        match t.parse::<f64>() {
            Ok(v) if (0.0..=100.0).contains(&v) => Ok(Percent(v)),
            _ => Err(format!(
                "invalid percentage {s:?}: expected a number from 0 to 100"
            )),
        }
    }
}

impl fmt::Display for Percent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}%", self.0)
    }
}
string_serde!(Percent);

/// A signal, written `KILL`, `SIGKILL`, `kill` or `9`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SignalName(pub Signal);

impl Default for SignalName {
    fn default() -> Self {
        SignalName(Signal::SIGKILL)
    }
}

impl FromStr for SignalName {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let t = s.trim();
        if let Ok(n) = t.parse::<i32>() {
            return Signal::try_from(n)
                .map(SignalName)
                .map_err(|_| format!("invalid signal number {n}"));
        }
        let upper = t.to_ascii_uppercase();
        let name = if upper.starts_with("SIG") {
            upper
        } else {
            format!("SIG{upper}")
        };
        name.parse::<Signal>()
            .map(SignalName)
            .map_err(|_| format!("invalid signal {s:?}; write it like KILL, TERM, SIGINT or 9"))
    }
}

impl fmt::Display for SignalName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0.as_str().trim_start_matches("SIG"))
    }
}
string_serde!(SignalName);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_bytes("1048576").unwrap(), 1 << 20);
        assert_eq!(parse_bytes("512K").unwrap(), 512 << 10);
        assert_eq!(parse_bytes("64MiB").unwrap(), 64 << 20);
        assert_eq!(parse_bytes("1.5G").unwrap(), 3 << 29);
        assert_eq!(parse_bytes("2MB").unwrap(), 2_000_000);
        assert!(
            parse_bytes("12 parsecs")
                .unwrap_err()
                .contains("unknown unit")
        );
        assert!(parse_bytes("").is_err());
        assert!(parse_bytes("-1").is_err());
        assert_eq!(ByteSize(64 << 20).to_string(), "64MiB");
        assert_eq!(ByteSize(1000).to_string(), "1000");
    }

    #[test]
    fn signals_and_percent() {
        assert_eq!("KILL".parse::<SignalName>().unwrap().0, Signal::SIGKILL);
        assert_eq!("sigterm".parse::<SignalName>().unwrap().0, Signal::SIGTERM);
        assert_eq!("9".parse::<SignalName>().unwrap().0, Signal::SIGKILL);
        assert!("NOPE".parse::<SignalName>().is_err());
        assert_eq!(SignalName(Signal::SIGSTOP).to_string(), "STOP");
        assert_eq!("50%".parse::<Percent>().unwrap(), Percent(50.0));
        assert!("150".parse::<Percent>().is_err());
    }

    #[test]
    fn serde_as_strings() {
        let d: HumanDuration = serde_json::from_str("\"1m30s\"").unwrap();
        assert_eq!(d.0, Duration::from_secs(90));
        let b: ByteSize = serde_json::from_str("4096").unwrap();
        assert_eq!(b.0, 4096);
        assert_eq!(serde_json::to_string(&b).unwrap(), "\"4KiB\"");
        assert!(serde_json::from_str::<HumanDuration>("[1]").is_err());
    }
}
