//! `ChaosConfig`: the `chaos:` section of the agent's configuration — the limits every
//! fault request is checked against.
//!
//! Defaults live here (the agent's commented `default.yaml` mirrors them).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::units::{HumanDuration, Percent, parse_bytes};

/// The processes never signalled unless the config says otherwise.
pub const DEFAULT_PROTECTED: &[&str] = &[
    "kubelet",
    "containerd",
    "containerd-shim",
    "dockerd",
    "sshd",
    "systemd",
];

/// The namespaces whose pods are never touched unless the config says otherwise.
pub const DEFAULT_PROTECTED_NAMESPACES: &[&str] = &["kube-system"];

/// Fault-injection limits.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ChaosConfig {
    /// Longest duration any fault may ask for.
    pub max_duration: HumanDuration,
    /// Most faults active at once.
    pub max_concurrent: usize,
    /// Process names (comm, executable or argv[0] file name) never signalled. This list
    /// replaces the defaults: keep them when adding names.
    pub protected_processes: Vec<String>,
    /// Kubernetes namespaces whose pods no container or process fault touches (where the
    /// pod is known: on a CRI runtime, and with pod selectors). This list replaces the
    /// defaults.
    pub protected_namespaces: Vec<String>,
    /// Free space a disk fill must leave: a size (`1GiB`) or a share of the filesystem
    /// (`5%`).
    pub disk_free_floor: FreeFloor,
    /// Largest share of MemAvailable one memory stress may take.
    pub memory_max_share: Percent,
}

impl Default for ChaosConfig {
    fn default() -> Self {
        Self {
            max_duration: HumanDuration(std::time::Duration::from_secs(3600)),
            max_concurrent: 8,
            protected_processes: DEFAULT_PROTECTED.iter().map(|s| (*s).to_owned()).collect(),
            protected_namespaces: DEFAULT_PROTECTED_NAMESPACES
                .iter()
                .map(|s| (*s).to_owned())
                .collect(),
            disk_free_floor: FreeFloor::Percent(Percent(5.0)),
            memory_max_share: Percent(50.0),
        }
    }
}

impl ChaosConfig {
    /// Checks values serde cannot: a zero cap or duration. The error is (field, message).
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if self.max_concurrent == 0 {
            return Err(("max_concurrent", "must be at least 1".into()));
        }
        if self.max_duration.0.is_zero() {
            return Err(("max_duration", "must be more than 0s".into()));
        }
        Ok(())
    }
}

/// Free space a disk fill leaves: an absolute size or a share of the filesystem's size.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum FreeFloor {
    /// Bytes.
    Bytes(u64),
    /// Percent of the filesystem's size.
    Percent(Percent),
}

impl FreeFloor {
    /// The floor in bytes for a filesystem of `total` bytes.
    pub fn bytes(self, total: u64) -> u64 {
        match self {
            FreeFloor::Bytes(b) => b,
            FreeFloor::Percent(p) => (total as f64 * p.0 / 100.0).ceil() as u64,
        }
    }
}

impl FromStr for FreeFloor {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s.trim().ends_with('%') {
            s.parse().map(FreeFloor::Percent)
        } else {
            parse_bytes(s).map(FreeFloor::Bytes)
        }
    }
}

impl fmt::Display for FreeFloor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FreeFloor::Bytes(b) => write!(f, "{}", crate::units::ByteSize(*b)),
            FreeFloor::Percent(p) => write!(f, "{p}"),
        }
    }
}

impl Serialize for FreeFloor {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for FreeFloor {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floor_forms() {
        assert_eq!("5%".parse::<FreeFloor>().unwrap().bytes(1000), 50);
        assert_eq!("1MiB".parse::<FreeFloor>().unwrap().bytes(1), 1 << 20);
        assert!("lots".parse::<FreeFloor>().is_err());
    }

    #[test]
    fn config_is_strict_and_defaults_round_trip() {
        let c: ChaosConfig = serde_json::from_str("{}").unwrap();
        assert_eq!(c, ChaosConfig::default());
        assert!(serde_json::from_str::<ChaosConfig>(r#"{"max_duraton":"1s"}"#).is_err());
        let json = serde_json::to_string(&c).unwrap();
        assert_eq!(serde_json::from_str::<ChaosConfig>(&json).unwrap(), c);
        let zero = ChaosConfig {
            max_concurrent: 0,
            ..c
        };
        assert!(zero.validate().is_err());
    }
}
