//! Resolves the OTLP exporter's settings from the config file and the standard
//! `OTEL_EXPORTER_OTLP_*` environment variables (OpenTelemetry exporter specification):
//! config value → signal-specific variable (`…_METRICS_…`) → generic variable → default.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use faultline_chaos::units::HumanDuration;
use serde::{Deserialize, Serialize};

use faultline_exporters::otlp::{
    Compression, Protocol, RetrySettings, TlsMaterial, TransportSettings,
};

use crate::telemetry::resource::percent_decode;

/// Where telemetry goes.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ExportConfig {
    /// OTLP push.
    pub otlp: OtlpConfig,
    /// Prometheus pull endpoint.
    pub prometheus: PrometheusConfig,
}

/// OTLP wire protocol as written in config and `OTEL_EXPORTER_OTLP_PROTOCOL`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
pub enum OtlpProtocol {
    /// `grpc`
    #[serde(rename = "grpc")]
    Grpc,
    /// `http/protobuf`
    #[serde(rename = "http/protobuf")]
    HttpProtobuf,
}

/// Compression as written in config.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OtlpCompression {
    /// No compression.
    None,
    /// gzip.
    Gzip,
}

/// OTLP exporter settings. Unset fields fall back to `OTEL_EXPORTER_OTLP_*`.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct OtlpConfig {
    /// Export over OTLP at all.
    pub enabled: bool,
    /// `grpc` or `http/protobuf`.
    pub protocol: Option<OtlpProtocol>,
    /// Base endpoint; for HTTP `/v1/metrics` is appended.
    pub endpoint: Option<String>,
    /// Full metrics URL, used as-is.
    pub metrics_endpoint: Option<String>,
    /// Extra headers.
    pub headers: BTreeMap<String, String>,
    /// Body compression.
    pub compression: Option<OtlpCompression>,
    /// Per-request timeout.
    pub timeout: Option<HumanDuration>,
    /// TLS files.
    pub tls: TlsConfig,
    /// Backoff.
    pub retry: RetryConfig,
    /// In-memory queue bound.
    pub queue: QueueConfig,
}

impl Default for OtlpConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            protocol: None,
            endpoint: None,
            metrics_endpoint: None,
            headers: BTreeMap::new(),
            compression: None,
            timeout: None,
            tls: TlsConfig::default(),
            retry: RetryConfig::default(),
            queue: QueueConfig::default(),
        }
    }
}

/// TLS files for `https` endpoints.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// Extra CA bundle (PEM) to trust.
    pub ca_file: Option<PathBuf>,
    /// Client certificate (PEM) for mTLS.
    pub cert_file: Option<PathBuf>,
    /// Client key (PEM) for mTLS.
    pub key_file: Option<PathBuf>,
}

/// Exponential backoff bounds.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetryConfig {
    /// First delay.
    pub initial_backoff: HumanDuration,
    /// Largest delay.
    pub max_backoff: HumanDuration,
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            initial_backoff: HumanDuration(Duration::from_secs(1)),
            max_backoff: HumanDuration(Duration::from_secs(30)),
        }
    }
}

/// Queue bounds and persistence.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct QueueConfig {
    /// Most batches (cycles) kept in memory while the backend is away; 1000 × 10 s ≈ 2 h 45
    /// min. With the disk queue on, this bounds only batches that could not be written there.
    pub max_batches: usize,
    /// Keep unsent batches in `<state-dir>/queue/` (written before they are first sent,
    /// removed once accepted), so restarts, SIGKILL and crashes lose nothing. If the directory
    /// cannot be used, the agent warns and queues in memory.
    pub persistent: bool,
    /// Disk budget of that queue (`256MiB`, `1G`, bytes); the oldest batches are dropped first.
    pub max_bytes: faultline_chaos::ByteSize,
}

impl Default for QueueConfig {
    fn default() -> Self {
        Self {
            max_batches: 1000,
            persistent: true,
            max_bytes: faultline_chaos::ByteSize(256 << 20),
        }
    }
}

/// Prometheus endpoint.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct PrometheusConfig {
    /// Serve `/metrics`.
    pub enabled: bool,
    /// Listen address.
    pub listen: SocketAddr,
}

impl Default for PrometheusConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            listen: SocketAddr::from(([127, 0, 0, 1], 9464)),
        }
    }
}

/// A problem with the exporter's settings, naming where the value came from.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    /// An environment variable holds a value that is not allowed.
    #[error("environment variable {var}={value:?}: {reason}")]
    Env {
        /// The variable.
        var: String,
        /// Its value.
        value: String,
        /// What is allowed.
        reason: String,
    },
    /// A TLS file could not be read.
    #[error("cannot read {field} {path}: {source}")]
    File {
        /// The config field or variable.
        field: String,
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
}

/// Resolved exporter settings.
#[derive(Clone, Debug)]
pub struct ExporterSettings {
    /// For the transport.
    pub transport: TransportSettings,
    /// Backoff.
    pub retry: RetrySettings,
    /// Queue bound in batches.
    pub max_batches: usize,
}

/// Resolves with the process environment.
pub fn resolve(cfg: &OtlpConfig) -> Result<ExporterSettings, SettingsError> {
    resolve_with(cfg, &|k| std::env::var(k).ok().filter(|v| !v.is_empty()))
}

/// Resolves with an explicit environment lookup (for tests).
pub fn resolve_with(
    cfg: &OtlpConfig,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<ExporterSettings, SettingsError> {
    let pick = |signal: &str, generic: &str| {
        env(signal)
            .map(|v| (signal.to_owned(), v))
            .or_else(|| env(generic).map(|v| (generic.to_owned(), v)))
    };

    let protocol = match cfg.protocol {
        Some(OtlpProtocol::Grpc) => Protocol::Grpc,
        Some(OtlpProtocol::HttpProtobuf) => Protocol::HttpProtobuf,
        None => match pick(
            "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL",
            "OTEL_EXPORTER_OTLP_PROTOCOL",
        ) {
            None => Protocol::Grpc,
            Some((_, v)) if v == "grpc" => Protocol::Grpc,
            Some((_, v)) if v == "http/protobuf" => Protocol::HttpProtobuf,
            Some((var, value)) => {
                return Err(SettingsError::Env {
                    var,
                    value,
                    reason: "faultline supports grpc and http/protobuf".into(),
                });
            }
        },
    };

    // Signal-specific URLs are used as-is; base URLs get /v1/metrics appended for HTTP.
    let signal_url = cfg
        .metrics_endpoint
        .clone()
        .or_else(|| env("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT"));
    let url = match signal_url {
        Some(u) => u,
        None => {
            let base = cfg
                .endpoint
                .clone()
                .or_else(|| env("OTEL_EXPORTER_OTLP_ENDPOINT"));
            match (protocol, base) {
                (Protocol::Grpc, Some(b)) => b,
                (Protocol::Grpc, None) => "http://localhost:4317".to_owned(),
                (Protocol::HttpProtobuf, Some(b)) => {
                    format!("{}/v1/metrics", b.trim_end_matches('/'))
                }
                (Protocol::HttpProtobuf, None) => "http://localhost:4318/v1/metrics".to_owned(),
            }
        }
    };

    let mut headers: Vec<(String, String)> = Vec::new();
    if let Some((_, v)) = pick(
        "OTEL_EXPORTER_OTLP_METRICS_HEADERS",
        "OTEL_EXPORTER_OTLP_HEADERS",
    ) {
        for pair in v.split(',') {
            if let Some((k, val)) = pair.split_once('=') {
                headers.push((k.trim().to_owned(), percent_decode(val.trim())));
            }
        }
    }
    for (k, v) in &cfg.headers {
        headers.retain(|(hk, _)| !hk.eq_ignore_ascii_case(k));
        headers.push((k.clone(), v.clone()));
    }

    let compression = match cfg.compression {
        Some(OtlpCompression::Gzip) => Compression::Gzip,
        Some(OtlpCompression::None) => Compression::None,
        None => match pick(
            "OTEL_EXPORTER_OTLP_METRICS_COMPRESSION",
            "OTEL_EXPORTER_OTLP_COMPRESSION",
        ) {
            None => Compression::None,
            Some((_, v)) if v == "gzip" => Compression::Gzip,
            Some((_, v)) if v == "none" => Compression::None,
            Some((var, value)) => {
                return Err(SettingsError::Env {
                    var,
                    value,
                    reason: "allowed: gzip, none".into(),
                });
            }
        },
    };

    let timeout = match cfg.timeout {
        Some(t) => t.0,
        None => match pick(
            "OTEL_EXPORTER_OTLP_METRICS_TIMEOUT",
            "OTEL_EXPORTER_OTLP_TIMEOUT",
        ) {
            None => Duration::from_secs(10),
            Some((var, value)) => match value.parse::<u64>() {
                Ok(ms) if ms > 0 => Duration::from_millis(ms),
                _ => {
                    return Err(SettingsError::Env {
                        var,
                        value,
                        reason: "a timeout in milliseconds above zero".into(),
                    });
                }
            },
        },
    };

    let file = |field: &str,
                cfg_path: Option<&Path>,
                signal: &str,
                generic: &str|
     -> Result<Option<Vec<u8>>, SettingsError> {
        let (field, path) = match cfg_path {
            Some(p) => (field.to_owned(), p.display().to_string()),
            None => match pick(signal, generic) {
                Some((var, v)) => (var, v),
                None => return Ok(None),
            },
        };
        std::fs::read(&path)
            .map(Some)
            .map_err(|source| SettingsError::File {
                field,
                path,
                source,
            })
    };
    let tls = TlsMaterial {
        ca_pem: file(
            "export.otlp.tls.ca_file",
            cfg.tls.ca_file.as_deref(),
            "OTEL_EXPORTER_OTLP_METRICS_CERTIFICATE",
            "OTEL_EXPORTER_OTLP_CERTIFICATE",
        )?,
        client_cert_pem: file(
            "export.otlp.tls.cert_file",
            cfg.tls.cert_file.as_deref(),
            "OTEL_EXPORTER_OTLP_METRICS_CLIENT_CERTIFICATE",
            "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE",
        )?,
        client_key_pem: file(
            "export.otlp.tls.key_file",
            cfg.tls.key_file.as_deref(),
            "OTEL_EXPORTER_OTLP_METRICS_CLIENT_KEY",
            "OTEL_EXPORTER_OTLP_CLIENT_KEY",
        )?,
    };

    Ok(ExporterSettings {
        transport: TransportSettings {
            url,
            protocol,
            headers,
            compression,
            timeout,
            tls,
        },
        retry: RetrySettings {
            initial_backoff: cfg.retry.initial_backoff.0,
            max_backoff: cfg.retry.max_backoff.0,
        },
        max_batches: cfg.queue.max_batches,
    })
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |k| m.get(k).cloned()
    }

    #[test]
    fn defaults_are_local_grpc() {
        let s = resolve_with(&OtlpConfig::default(), &env(&[])).unwrap();
        assert_eq!(s.transport.url, "http://localhost:4317");
        assert_eq!(s.transport.protocol, Protocol::Grpc);
        assert_eq!(s.transport.timeout, Duration::from_secs(10));
    }

    #[test]
    fn http_base_endpoint_gets_signal_path_and_specific_wins() {
        let e = env(&[
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318/"),
            ("OTEL_EXPORTER_OTLP_HEADERS", "api-key=a%20b,tenant=t1"),
            ("OTEL_EXPORTER_OTLP_METRICS_TIMEOUT", "2500"),
            ("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip"),
        ]);
        let s = resolve_with(&OtlpConfig::default(), &e).unwrap();
        assert_eq!(s.transport.url, "http://collector:4318/v1/metrics");
        assert_eq!(
            s.transport.headers,
            vec![
                ("api-key".into(), "a b".into()),
                ("tenant".into(), "t1".into())
            ]
        );
        assert_eq!(s.transport.timeout, Duration::from_millis(2500));
        assert_eq!(s.transport.compression, Compression::Gzip);
        let e = env(&[
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
            ("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", "http://m:1/custom"),
        ]);
        assert_eq!(
            resolve_with(&OtlpConfig::default(), &e)
                .unwrap()
                .transport
                .url,
            "http://m:1/custom"
        );
    }

    #[test]
    fn config_wins_over_environment() {
        let mut cfg = OtlpConfig {
            protocol: Some(OtlpProtocol::Grpc),
            endpoint: Some("http://file:4317".into()),
            ..OtlpConfig::default()
        };
        cfg.headers.insert("tenant".into(), "from-file".into());
        let e = env(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://env:4317"),
            ("OTEL_EXPORTER_OTLP_HEADERS", "tenant=env"),
        ]);
        let s = resolve_with(&cfg, &e).unwrap();
        assert_eq!(s.transport.url, "http://file:4317");
        assert_eq!(
            s.transport.headers,
            vec![("tenant".into(), "from-file".into())]
        );
    }

    #[test]
    fn bad_environment_values_are_named() {
        let e = env(&[("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")]);
        let err = resolve_with(&OtlpConfig::default(), &e)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("OTEL_EXPORTER_OTLP_PROTOCOL") && err.contains("http/json"),
            "{err}"
        );
        let e = env(&[("OTEL_EXPORTER_OTLP_CERTIFICATE", "/nonexistent/ca.pem")]);
        let err = resolve_with(&OtlpConfig::default(), &e)
            .unwrap_err()
            .to_string();
        assert!(err.contains("/nonexistent/ca.pem"), "{err}");
    }
}
