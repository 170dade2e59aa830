//! The agent's configuration: one YAML file, typed and strict.
//!
//! Loading goes: read the file → substitute `${VAR}` / `${VAR:-default}` from the environment
//! → parse with serde into structs that reject unknown fields → validate (paths exist,
//! addresses parse, TLS files readable). Every error names the file, the line and the field,
//! and the CLI maps it to exit code 2. Defaults live in one place: the `Default` impls here,
//! mirrored by the commented embedded default (`default.yaml`, printed by
//! `faultline config default`), which a test keeps in step.
//!
//! Environment fallbacks follow the OpenTelemetry conventions (`OTEL_EXPORTER_OTLP_*`,
//! `OTEL_RESOURCE_ATTRIBUTES`) and the node_exporter/collector ones for roots (`HOST_PROC`,
//! `HOST_SYS`, `HOST_ROOT`): a value in the file wins over the environment, which wins over
//! the built-in default.

use faultline_chaos::units::HumanDuration;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::collectors::Roots;
use crate::collectors::container::ContainerConfig;
use crate::collectors::host::HostConfig;
use crate::telemetry::export::ExportConfig;
use crate::telemetry::resource::ResourceConfig;
use crate::yaml::{ConfigError, line_of, substitute_env, yaml_error};

/// The embedded default configuration, with comments.
pub const DEFAULT_CONFIG_YAML: &str = include_str!("default.yaml");

/// The whole configuration file.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Collection interval.
    pub interval: HumanDuration,
    /// Host `/proc` (env `HOST_PROC`).
    pub proc_root: Option<PathBuf>,
    /// Host `/sys` (env `HOST_SYS`).
    pub sys_root: Option<PathBuf>,
    /// Host `/` (env `HOST_ROOT`).
    pub rootfs: Option<PathBuf>,
    /// How long SIGTERM/SIGINT waits for queued data to be sent.
    pub shutdown_grace: HumanDuration,
    /// Extra resource attributes.
    pub resource: ResourceConfig,
    /// Log output.
    pub logging: LoggingConfig,
    /// Host metrics.
    pub host: HostConfig,
    /// Container metrics.
    pub containers: ContainerConfig,
    /// Outputs.
    pub export: ExportConfig,
    /// Fault-injection limits (`faultline_chaos::ChaosConfig`).
    pub chaos: faultline_chaos::ChaosConfig,
    /// Backup sources to check (see `backup::config`).
    pub backups: Vec<crate::backup::config::BackupSourceConfig>,
    /// The HTTP API (see `api`).
    pub api: crate::api::ApiConfig,
    /// Drill scenarios, on demand or on cron schedules (see `drill::schedule`).
    pub drills: Vec<crate::drill::schedule::DrillEntry>,
    /// How long drill reports and backup-check records are kept (see `posture::retention`).
    pub history: crate::posture::HistoryConfig,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            interval: HumanDuration(Duration::from_secs(10)),
            proc_root: None,
            sys_root: None,
            rootfs: None,
            shutdown_grace: HumanDuration(Duration::from_secs(5)),
            resource: ResourceConfig::default(),
            logging: LoggingConfig::default(),
            host: HostConfig::default(),
            containers: ContainerConfig::default(),
            export: ExportConfig::default(),
            chaos: faultline_chaos::ChaosConfig::default(),
            backups: Vec::new(),
            api: crate::api::ApiConfig::default(),
            drills: Vec::new(),
            history: crate::posture::HistoryConfig::default(),
        }
    }
}

/// Log format.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// Logging settings (the `--log-format` flag and `RUST_LOG` override them).
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LoggingConfig {
    /// Format.
    pub format: LogFormat,
    /// A tracing filter such as `info` or `info,faultline_exporters=debug`.
    pub level: String,
}

impl Default for LoggingConfig {
    fn default() -> Self {
        Self {
            format: LogFormat::Text,
            level: "info".into(),
        }
    }
}

/// A loaded, validated configuration and where it came from.
#[derive(Clone, Debug)]
pub struct Loaded {
    /// The settings.
    pub config: Config,
    /// The file name for messages.
    pub source: String,
}

/// Loads and validates a config file, or the embedded default when `path` is `None`.
pub fn load(path: Option<&Path>) -> Result<Loaded, ConfigError> {
    match path {
        Some(p) => {
            let text = std::fs::read_to_string(p).map_err(|source| ConfigError::Read {
                what: "config file",
                path: p.to_path_buf(),
                source,
            })?;
            parse(&text, &p.display().to_string())
        }
        None => parse(DEFAULT_CONFIG_YAML, "<embedded default>"),
    }
}

/// Parses and validates config text; `file` is used in messages.
pub fn parse(text: &str, file: &str) -> Result<Loaded, ConfigError> {
    let text = substitute_env(text, file, &|k| std::env::var(k).ok())?;
    let config: Config = if text.trim().is_empty() {
        Config::default()
    } else {
        serde_yaml_ng::from_str(&text).map_err(|e| yaml_error(&e, &text, file))?
    };
    validate(&config, &text, file)?;
    Ok(Loaded {
        config,
        source: file.to_owned(),
    })
}

fn validate(c: &Config, text: &str, file: &str) -> Result<(), ConfigError> {
    let err = |field: &str, message: String| ConfigError::Invalid {
        file: file.to_owned(),
        line: line_of(text, field),
        field: field.to_owned(),
        message,
    };
    if c.interval.0 < Duration::from_millis(100) {
        return Err(err(
            "interval",
            format!(
                "{} is too short; the smallest interval is 100ms",
                c.interval
            ),
        ));
    }
    for (field, path) in [
        ("proc_root", &c.proc_root),
        ("sys_root", &c.sys_root),
        ("rootfs", &c.rootfs),
    ] {
        if let Some(p) = path
            && !p.is_dir()
        {
            return Err(err(
                field,
                format!("{} is not a readable directory", p.display()),
            ));
        }
    }
    let o = &c.export.otlp;
    for (field, path) in [
        ("export.otlp.tls.ca_file", &o.tls.ca_file),
        ("export.otlp.tls.cert_file", &o.tls.cert_file),
        ("export.otlp.tls.key_file", &o.tls.key_file),
    ] {
        if let Some(p) = path
            && let Err(e) = std::fs::metadata(p)
        {
            return Err(err(field, format!("cannot read {}: {e}", p.display())));
        }
    }
    if o.tls.cert_file.is_some() != o.tls.key_file.is_some() {
        return Err(err(
            "export.otlp.tls",
            "cert_file and key_file must be set together".into(),
        ));
    }
    if o.retry.initial_backoff.0.is_zero() || o.retry.initial_backoff > o.retry.max_backoff {
        return Err(err(
            "export.otlp.retry",
            "initial_backoff must be above zero and not above max_backoff".into(),
        ));
    }
    if o.queue.persistent && o.queue.max_bytes.0 < 64 << 10 {
        return Err(err(
            "export.otlp.queue.max_bytes",
            format!(
                "{} is too small for the disk queue; give it at least 64KiB (a batch is tens of KB)",
                o.queue.max_bytes
            ),
        ));
    }
    if o.queue.max_batches == 0 {
        return Err(err(
            "export.otlp.queue.max_batches",
            "must be at least 1".into(),
        ));
    }
    if let Some(t) = o.timeout
        && t.0.is_zero()
    {
        return Err(err("export.otlp.timeout", "must be above zero".into()));
    }
    for (field, url) in [
        ("export.otlp.endpoint", &o.endpoint),
        ("export.otlp.metrics_endpoint", &o.metrics_endpoint),
    ] {
        if let Some(u) = url
            && !(u.starts_with("http://") || u.starts_with("https://"))
        {
            return Err(err(
                field,
                format!("{u:?} must start with http:// or https://"),
            ));
        }
    }
    crate::collectors::host::collectors(&c.host).map_err(|e| err("host", e.to_string()))?;
    c.chaos
        .validate()
        .map_err(|(field, e)| err(&format!("chaos.{field}"), e))?;
    crate::backup::config::validate(&c.backups, text, file)?;
    c.api
        .validate()
        .map_err(|(field, e)| err(&format!("api.{field}"), e))?;
    crate::drill::schedule::load(&c.drills, text, file, &c.drill_known())?;
    c.history
        .validate()
        .map_err(|(field, e)| err(&format!("history.{field}"), e))?;
    c.containers
        .validate()
        .map_err(|(field, e)| err(&format!("containers.{field}"), e))?;
    if let Err(e) = tracing_subscriber::EnvFilter::try_new(&c.logging.level) {
        return Err(err(
            "logging.level",
            format!("{:?} is not a valid filter: {e}", c.logging.level),
        ));
    }
    Ok(())
}

impl Config {
    /// The OpenTelemetry resource this config describes: detected from the host roots, plus
    /// `resource.attributes` and `OTEL_RESOURCE_ATTRIBUTES`.
    pub fn detect_resource(&self) -> faultline_exporters::model::Resource {
        crate::telemetry::resource::detect(
            &self.roots(),
            &crate::telemetry::resource::ResourceInputs::from_env(self.resource.attributes.clone()),
        )
    }

    /// The OTLP logs and traces of a one-shot command ([`crate::telemetry::events::OneShot`]).
    pub fn one_shot_signals(&self, what: &str) -> Option<crate::telemetry::events::OneShot> {
        crate::telemetry::events::OneShot::start(
            &self.export.otlp,
            self.shutdown_grace.0,
            || self.detect_resource(),
            what,
        )
    }

    /// What the fault engine is built from ([`crate::faults::open_engine`]).
    pub fn fault_settings(&self) -> crate::faults::EngineSettings {
        crate::faults::EngineSettings {
            chaos: self.chaos.clone(),
            roots: self.roots(),
            docker_socket: self.containers.docker.socket.clone(),
            cri_socket: self.containers.cri.socket.clone(),
        }
    }

    /// What validating drill scenarios needs from this config: the backup sources they may
    /// name, the longest fault the guards allow.
    pub fn drill_known(&self) -> crate::drill::scenario::Known {
        crate::drill::scenario::Known {
            backup_sources: self.backups.iter().map(|b| b.name.clone()).collect(),
            max_fault_duration: Some(self.chaos.max_duration.0),
        }
    }

    /// The host roots, from config, then `HOST_*` environment, then the real paths.
    pub fn roots(&self) -> Roots {
        let pick = |cfg: &Option<PathBuf>, env: &str, default: &str| {
            cfg.clone()
                .or_else(|| {
                    std::env::var_os(env)
                        .filter(|v| !v.is_empty())
                        .map(PathBuf::from)
                })
                .unwrap_or_else(|| PathBuf::from(default))
        };
        Roots {
            proc: pick(&self.proc_root, "HOST_PROC", "/proc"),
            sys: pick(&self.sys_root, "HOST_SYS", "/sys"),
            rootfs: pick(&self.rootfs, "HOST_ROOT", "/"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn invalid(text: &str) -> (usize, String, String) {
        match parse(text, "t.yaml") {
            Err(ConfigError::Invalid {
                line,
                field,
                message,
                ..
            }) => (line, field, message),
            other => panic!("expected invalid, got {other:?}"),
        }
    }

    #[test]
    fn embedded_default_parses_and_equals_code_defaults() {
        let loaded = load(None).unwrap();
        assert_eq!(loaded.config, Config::default());
    }

    #[test]
    fn unknown_key_is_named_with_its_line() {
        let (line, field, msg) = invalid("interval: 5s\nexport:\n  otlp:\n    endpoit: http://x\n");
        assert_eq!(line, 4);
        assert!(field.ends_with("endpoit"), "{field}");
        assert!(msg.contains("unknown field"), "{msg}");
    }

    #[test]
    fn wrong_type_and_bad_duration_are_named() {
        let (line, field, _) = invalid("host:\n  per_cpu: sometimes\n");
        assert_eq!((line, field.as_str()), (2, "host.per_cpu"));
        let (line, field, msg) = invalid("host:\n  enabled: true\ninterval: 10 parsecs\n");
        assert_eq!((line, field.as_str()), (3, "interval"));
        assert!(msg.contains("invalid duration"), "{msg}");
        let (line, field, _) = invalid("export:\n  otlp:\n    enabled: true\n    timeout: soon\n");
        assert_eq!((line, field.as_str()), (4, "export.otlp.timeout"));
    }

    #[test]
    fn container_metadata_settings_are_named_with_their_line() {
        let (line, field, msg) = invalid("containers:\n  cri:\n    socket: run/crio.sock\n");
        assert_eq!((line, field.as_str()), (3, "containers.cri.socket"));
        assert!(
            msg.contains("run/crio.sock") && msg.contains("absolute"),
            "{msg}"
        );
        let (line, field, msg) = invalid("containers:\n  cri:\n    refresh: 200ms\n");
        assert_eq!((line, field.as_str()), (3, "containers.cri.refresh"));
        assert!(msg.contains("at least 1s"), "{msg}");
        let (line, field, _) = invalid("containers:\n  cri:\n    sockets: /x\n");
        assert_eq!((line, field.as_str()), (3, "containers.cri.sockets"));
        let (line, field, _) = invalid("containers:\n  labels: [\"a b\"]\n");
        assert_eq!((line, field.as_str()), (2, "containers.labels"));
        let ok = parse(
            "containers:\n  cri:\n    enabled: false\n    refresh: 10ms\n",
            "t.yaml",
        )
        .unwrap();
        assert!(
            !ok.config.containers.cri.enabled,
            "a disabled source's refresh is not checked"
        );
    }

    #[test]
    fn disk_queue_size_is_parsed_and_a_bad_one_named_with_its_line() {
        let ok = parse(
            "export:\n  otlp:\n    queue:\n      max_bytes: 1GiB\n",
            "t.yaml",
        )
        .unwrap();
        assert_eq!(ok.config.export.otlp.queue.max_bytes.0, 1 << 30);
        let (line, field, msg) = invalid("export:\n  otlp:\n    queue:\n      max_bytes: lots\n");
        assert_eq!((line, field.as_str()), (4, "export.otlp.queue.max_bytes"));
        assert!(msg.contains("invalid size"), "{msg}");
        let (line, _, msg) = invalid("export:\n  otlp:\n    queue:\n      max_bytes: 1K\n");
        assert_eq!(line, 4);
        assert!(msg.contains("at least 64KiB"), "{msg}");
    }

    #[test]
    fn missing_root_directory_is_refused_with_line() {
        let (line, field, msg) = invalid("interval: 5s\nproc_root: /nonexistent/proc\n");
        assert_eq!((line, field.as_str()), (2, "proc_root"));
        assert!(msg.contains("/nonexistent/proc"));
    }

    #[test]
    fn env_substitution_with_default_and_escape() {
        let lookup = |k: &str| (k == "A").then(|| "1".to_owned());
        let out = substitute_env("a: ${A}\nb: ${B:-two}\nc: $$HOME\n", "f", &lookup).unwrap();
        assert_eq!(out, "a: 1\nb: two\nc: $HOME\n");
        let out = substitute_env("# see ${X}\nd: \"#${A}\" # ${Y}\n", "f", &lookup).unwrap();
        assert_eq!(out, "# see ${X}\nd: \"#1\" # ${Y}\n");
        let e = substitute_env("x: 1\ny: ${MISSING}\n", "f", &lookup)
            .unwrap_err()
            .to_string();
        assert!(e.contains("f:2") && e.contains("MISSING"), "{e}");
    }

    #[test]
    fn garbage_is_rejected_naming_file_and_line() {
        for text in [
            "{",
            "- a\n- b",
            "interval: [1,2]",
            ": :",
            "\t\tx",
            "export: 3",
            "~",
            "host:\n  enabled: true\nbogus: 1\n",
        ] {
            crate::test_support::assert_rejected_at_a_line(parse(text, "g.yaml"), "g.yaml", text);
        }
        for text in ["", "interval: 5s\n", "host:\n  per_cpu: true\n"] {
            if let Err(e) = parse(text, "g.yaml") {
                panic!("{text:?} is a valid config but was rejected: {e}");
            }
        }
    }
}
