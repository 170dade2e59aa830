//! The OpenTelemetry semantic-conventions registry, as exported to
//! `<workspace>/../shared/semconv/semconv.json` (override with `FAULTLINE_SEMCONV`).
//!
//! Only the fields the conformance assertions need are read; unknown fields are ignored on
//! purpose, since this is someone else's format. When the file is absent the tests that need
//! it skip with a printed message — except on CI (`CI` non-empty and not `false`/`0`), where absence is a failure.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

/// The registry.
#[derive(Debug, Deserialize)]
pub struct Semconv {
    /// Where it was exported from (repository@commit).
    #[serde(default)]
    pub source: String,
    /// Attribute definitions by key.
    pub attributes: BTreeMap<String, AttributeDef>,
    /// Metric definitions by name.
    pub metrics: BTreeMap<String, MetricDef>,
}

/// Why and into what a name was deprecated.
#[derive(Debug, Deserialize)]
pub struct Deprecation {
    /// `renamed`, `obsoleted`, ...
    #[serde(default)]
    pub reason: String,
    /// The replacement, when renamed.
    #[serde(default)]
    pub renamed_to: Option<String>,
}

/// One attribute.
#[derive(Debug, Deserialize)]
pub struct AttributeDef {
    /// Set when deprecated.
    #[serde(default)]
    pub deprecated: Option<Deprecation>,
    /// `string`, `int`, `enum`, ...
    #[serde(rename = "type", default)]
    pub kind: String,
    /// The enum members, for `enum` attributes (strings, or integers for int enums).
    #[serde(default)]
    pub values: Option<Vec<serde_json::Value>>,
}

impl AttributeDef {
    /// The enum members rendered as the receiver renders attribute values (strings as-is,
    /// numbers in decimal), so the two compare directly.
    pub fn value_texts(&self) -> Vec<String> {
        let text = |v: &serde_json::Value| match v {
            serde_json::Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        self.values.iter().flatten().map(text).collect()
    }
}

/// One metric.
#[derive(Debug, Deserialize)]
pub struct MetricDef {
    /// Attribute keys the metric may carry, with their requirement level: a word
    /// (`"required"`, `"recommended"`, `"opt_in"`) or a one-key map from the level to its
    /// condition (`{"conditionally_required": "if ..."}`).
    #[serde(default)]
    pub attributes: BTreeMap<String, serde_json::Value>,
    /// Set when deprecated.
    #[serde(default)]
    pub deprecated: Option<Deprecation>,
    /// `counter`, `updowncounter`, `gauge`, `histogram`.
    pub instrument: String,
    /// UCUM unit.
    pub unit: String,
}

impl MetricDef {
    /// Whether attribute `key` is unconditionally required on this metric.
    pub fn requires(&self, key: &str) -> bool {
        self.attributes.get(key).and_then(serde_json::Value::as_str) == Some("required")
    }
}

/// Where the registry is looked for.
pub fn semconv_path() -> PathBuf {
    std::env::var_os("FAULTLINE_SEMCONV")
        .map(PathBuf::from)
        .unwrap_or_else(|| crate::workspace_root().join("../shared/semconv/semconv.json"))
}

/// Load the registry, or `None` (after printing why the caller skips) when it is absent.
///
/// # Panics
/// When the file exists but does not parse, or is absent under CI.
pub fn semconv() -> Option<Semconv> {
    let path = semconv_path();
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) => {
            let msg = format!(
                "semconv registry {} unavailable ({e}); set FAULTLINE_SEMCONV to its path",
                path.display()
            );
            assert!(!crate::in_ci(), "{msg} (required under CI)");
            eprintln!("SKIPPED semantic-convention checks: {msg}");
            return None;
        }
    };
    let registry = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{} is not a semconv registry export: {e}", path.display()));
    Some(registry)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_shared_registry_parses_and_knows_system_metrics() {
        let Some(registry) = super::semconv() else {
            return;
        };
        let cpu = &registry.metrics["system.cpu.time"];
        assert_eq!(
            (cpu.instrument.as_str(), cpu.unit.as_str()),
            ("counter", "s")
        );
        assert!(
            registry.attributes["cpu.mode"]
                .value_texts()
                .contains(&"idle".to_owned())
        );
    }
}
