//! The scenario file: one drill, in YAML (or JSON, which is YAML too), typed and strict.
//! Its reference for users — every field, probe kind and recovery action, and how RTO, RPO
//! and detection are measured — is docs/DRILLS.md; a test (`reference_tests`) checks that it
//! names every field these types accept, and that the example below still parses.
//!
//! ```yaml
//! name: web-restart                 # [A-Za-z0-9._-]
//! description: the web tier restarts by itself after a crash
//! service: web                      # optional: drills roll up by service in `report posture`
//! tier: tier-1                      # optional: the service's tier, reported as written
//! targets: [web]                    # lock names: no two drills on a shared target at once
//! max_duration: 2m                  # the drill is aborted (every fault reverted) past this
//! probe_interval: 100ms             # how often probes run during faults and recovery
//! steady_state:                     # must all pass before any fault is injected
//!   - name: web-up
//!     http: { url: "http://127.0.0.1:8080/health", status: 200, body: ok, max_latency: 500ms }
//!   - name: port
//!     tcp: { address: "127.0.0.1:7000" }
//!   - name: ready
//!     command: { run: [pg_isready, -h, 127.0.0.1], exit_code: 0, output: accepting }
//!   - name: load
//!     metric: { name: system.cpu.load_average.1m, below: 8 }
//! fault_mode: sequence              # sequence (each after the previous one ended) | together
//! faults:
//!   - at: 2s                        # offset (from the fault phase, or the previous fault's end)
//!     fault: { kind: process-kill, pid: 4242, duration: 1s }   # any faultline_chaos FaultSpec
//!   - at: 0s                        # pod selectors: one random pod of app=web in shop
//!     fault: { kind: container-kill, namespace: shop, label: { app: web }, count: 1, duration: 1m }
//!   - at: 0s
//!     command: [rm, -rf, /srv/pg/data]  # an irreversible step, run as a command
//! recovery:
//!   strategy: actions               # self-heal (wait) | actions
//!   consecutive: 3                  # K passing probe rounds in a row mean "recovered"
//!   timeout: 1m
//!   actions:
//!     - restore_backup: { source: pgdata, target: /srv/pg/data }
//!     - command: [pg_ctl, -D, /srv/pg/data, start]
//!     - restart_container: web
//!     - restart_unit: nginx.service
//! objectives: { rto: 30s, rpo: 5m }
//! canary:
//!   interval: 100ms
//!   writer: { command: [psql, -c, "insert into canary values ({seq}, {ts_ms})"] }
//!   reader: { command: [psql, -Atc, "select seq, ts from canary order by seq desc limit 1"] }
//! abort_when:                       # guard rails: the drill aborts as soon as one fails
//!   - name: other-tenant-up
//!     tcp: { address: "127.0.0.1:9000" }
//! ```
//!
//! Loading: `${VAR}` substitution ([`crate::yaml::substitute_env`]) → serde with
//! `deny_unknown_fields` → [`validate`]. Every error is a [`ConfigError`] naming the file,
//! the line and the field (`steady_state[1].http.url`), before anything runs.

use faultline_chaos::units::HumanDuration;
use std::collections::BTreeMap;
use std::time::Duration;

use faultline_chaos::FaultSpec;
use serde::{Deserialize, Serialize};

use crate::yaml::item_line;
use crate::yaml::{ConfigError, line_of, substitute_env};

/// One drill.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// `[A-Za-z0-9._-]`, used in metrics, reports and history.
    pub name: String,
    /// Free text for the report.
    #[serde(default)]
    pub description: String,
    /// The service the scenario exercises: drills roll up by it in the posture report.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    /// The service's tier (`tier-1`, `gold`…), reported as written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tier: Option<String>,
    /// Lock names: two drills sharing one never run at once (the faults' resolved targets
    /// are added at run time).
    #[serde(default)]
    pub targets: Vec<String>,
    /// Past this the drill is aborted and every fault reverted.
    #[serde(default = "default_max_duration")]
    pub max_duration: HumanDuration,
    /// Probe period during faults and recovery.
    #[serde(default = "default_probe_interval")]
    pub probe_interval: HumanDuration,
    /// Probes that must all pass before any fault is injected; also the recovery and
    /// verification probes.
    pub steady_state: Vec<ProbeSpec>,
    /// `sequence` or `together`.
    #[serde(default)]
    pub fault_mode: FaultMode,
    /// The faults.
    pub faults: Vec<FaultStep>,
    /// How the system recovers.
    #[serde(default)]
    pub recovery: Recovery,
    /// Targets.
    #[serde(default)]
    pub objectives: Objectives,
    /// Marker writer/reader for the RPO.
    #[serde(default)]
    pub canary: Option<Canary>,
    /// Guard-rail probes: the drill aborts as soon as one fails.
    #[serde(default)]
    pub abort_when: Vec<ProbeSpec>,
}

fn default_max_duration() -> HumanDuration {
    HumanDuration(Duration::from_secs(600))
}

fn default_probe_interval() -> HumanDuration {
    HumanDuration(Duration::from_secs(1))
}

fn default_probe_timeout() -> HumanDuration {
    HumanDuration(Duration::from_secs(2))
}

fn default_command_timeout() -> HumanDuration {
    HumanDuration(Duration::from_secs(300))
}

/// How faults follow each other.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FaultMode {
    /// Each fault starts `at` after the previous one ended (was reverted).
    #[default]
    Sequence,
    /// Every fault starts `at` after the fault phase began.
    Together,
}

/// One step of the fault phase: a chaos fault or an irreversible command.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FaultStep {
    /// Start offset.
    #[serde(default = "zero")]
    pub at: HumanDuration,
    /// A fault from the chaos crate (reverted at its deadline, on abort and at the end).
    #[serde(default)]
    pub fault: Option<FaultSpec>,
    /// A command (e.g. deleting a data directory); nothing to revert.
    #[serde(default)]
    pub command: Option<Vec<String>>,
    /// Command timeout.
    #[serde(default = "default_command_timeout")]
    pub timeout: HumanDuration,
}

fn zero() -> HumanDuration {
    HumanDuration(Duration::ZERO)
}

impl FaultStep {
    /// `process-kill`, or `command`.
    pub fn label(&self) -> String {
        match (&self.fault, &self.command) {
            (Some(f), _) => f.kind().to_owned(),
            (None, Some(c)) => format!("command {}", c.first().map_or("", String::as_str)),
            (None, None) => "nothing".into(),
        }
    }
}

/// A probe: a name and exactly one kind.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ProbeSpec {
    /// Name in the report.
    pub name: String,
    /// HTTP request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpProbe>,
    /// TCP connect.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp: Option<TcpProbe>,
    /// A command.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<CommandProbe>,
    /// A threshold on a metric faultline collects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metric: Option<MetricProbe>,
}

/// `http:` probe.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HttpProbe {
    /// `http://` or `https://` URL.
    pub url: String,
    /// Method (GET).
    #[serde(default = "default_get")]
    pub method: String,
    /// Expected status (200).
    #[serde(default = "default_status")]
    pub status: u16,
    /// The body must contain this text.
    #[serde(default)]
    pub body: Option<String>,
    /// The answer must come within this.
    #[serde(default)]
    pub max_latency: Option<HumanDuration>,
    /// Give up after this (2s).
    #[serde(default = "default_probe_timeout")]
    pub timeout: HumanDuration,
}

fn default_get() -> String {
    "GET".into()
}

fn default_status() -> u16 {
    200
}

/// `tcp:` probe.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TcpProbe {
    /// `host:port`.
    pub address: String,
    /// Connect timeout (2s).
    #[serde(default = "default_probe_timeout")]
    pub timeout: HumanDuration,
}

/// `command:` probe.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CommandProbe {
    /// Program and arguments.
    pub run: Vec<String>,
    /// Expected exit code (0).
    #[serde(default)]
    pub exit_code: i32,
    /// stdout must contain this text.
    #[serde(default)]
    pub output: Option<String>,
    /// Killed after this (2s).
    #[serde(default = "default_probe_timeout")]
    pub timeout: HumanDuration,
}

/// `metric:` probe: every point of the metric (matching `attributes`) must satisfy the
/// bounds; a missing metric fails.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MetricProbe {
    /// Metric name, as faultline records it (`system.cpu.load_average.1m`).
    pub name: String,
    /// Point attributes that must match.
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
    /// Value must be above this.
    #[serde(default)]
    pub above: Option<f64>,
    /// Value must be below this.
    #[serde(default)]
    pub below: Option<f64>,
}

/// How the system recovers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Strategy {
    /// A supervisor brings it back; faultline waits and measures.
    #[default]
    SelfHeal,
    /// faultline runs the recovery actions.
    Actions,
}

/// `recovery:`.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Recovery {
    /// `self-heal` or `actions`.
    pub strategy: Strategy,
    /// K: passing probe rounds in a row that mean "recovered" (the first of them is the
    /// recovery point).
    pub consecutive: usize,
    /// How long to wait for recovery after the last fault was applied.
    pub timeout: HumanDuration,
    /// Delay between the last fault's apply and the first action.
    pub after: HumanDuration,
    /// Actions, in order.
    pub actions: Vec<RecoveryAction>,
}

impl Default for Recovery {
    fn default() -> Self {
        Self {
            strategy: Strategy::SelfHeal,
            consecutive: 3,
            timeout: HumanDuration(Duration::from_secs(300)),
            after: zero(),
            actions: Vec::new(),
        }
    }
}

/// One recovery action: exactly one kind.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RecoveryAction {
    /// Run a command.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,
    /// Restart a Docker container (name or id) through the Docker Engine API.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart_container: Option<String>,
    /// `systemctl restart UNIT`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart_unit: Option<String>,
    /// Restore a configured backup source into place.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore_backup: Option<RestoreAction>,
    /// Give up after this (5m).
    #[serde(default = "default_command_timeout")]
    pub timeout: HumanDuration,
}

impl RecoveryAction {
    /// One line for the timeline.
    pub fn label(&self) -> String {
        if let Some(c) = &self.command {
            format!("command {}", c.join(" "))
        } else if let Some(c) = &self.restart_container {
            format!("restart container {c}")
        } else if let Some(u) = &self.restart_unit {
            format!("restart unit {u}")
        } else if let Some(r) = &self.restore_backup {
            format!(
                "restore backup {} ({}) to {}",
                r.source,
                r.snapshot,
                r.target.display()
            )
        } else {
            "nothing".into()
        }
    }
}

/// `restore_backup:`.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RestoreAction {
    /// A source from the agent config's `backups:`.
    pub source: String,
    /// Where the restored tree goes (pgBackRest: the data directory itself); an existing
    /// directory there is moved aside (`<target>.faultline-old-<drill id>`), never deleted.
    pub target: std::path::PathBuf,
    /// `latest` or a backup id.
    #[serde(default = "default_latest")]
    pub snapshot: String,
}

fn default_latest() -> String {
    "latest".into()
}

/// `objectives:`.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Objectives {
    /// Recovery time objective.
    pub rto: Option<HumanDuration>,
    /// Recovery point objective.
    pub rpo: Option<HumanDuration>,
}

/// `canary:`.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Canary {
    /// Write period.
    #[serde(default = "default_probe_interval")]
    pub interval: HumanDuration,
    /// Writes marker `{seq}` stamped `{ts_ms}`.
    pub writer: CanaryIo,
    /// Prints the newest surviving marker: `SEQ [TS_MS]` or `{"seq":…,"ts_ms":…}`; nothing
    /// when none survived.
    pub reader: CanaryIo,
}

/// A canary side: exactly one of a command or an HTTP call. `{seq}` and `{ts_ms}` are
/// substituted in arguments, URL and body.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CanaryIo {
    /// Program and arguments.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,
    /// HTTP call; 2xx is success, the body is the reader's answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpCall>,
    /// Per call (2s).
    #[serde(default = "default_probe_timeout")]
    pub timeout: HumanDuration,
}

/// An HTTP call of the canary.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HttpCall {
    /// URL.
    pub url: String,
    /// Method (POST for the writer, GET for the reader when not set).
    #[serde(default)]
    pub method: Option<String>,
    /// Body.
    #[serde(default)]
    pub body: Option<String>,
}

/// What validation needs to know about the agent's configuration.
#[derive(Clone, Debug, Default)]
pub struct Known {
    /// Names of the configured backup sources.
    pub backup_sources: Vec<String>,
    /// `chaos.max_duration`.
    pub max_fault_duration: Option<Duration>,
}

/// Parses and validates scenario text; `file` names it in errors.
pub fn parse(text: &str, file: &str, known: &Known) -> Result<Scenario, ConfigError> {
    let text = substitute_env(text, file, &|k| std::env::var(k).ok())?;
    if text.trim().is_empty() {
        return Err(ConfigError::Invalid {
            file: file.to_owned(),
            line: 1,
            field: "-".into(),
            message: "the scenario is empty: it needs at least name, steady_state and faults"
                .into(),
        });
    }
    let s: Scenario = serde_yaml_ng::from_str(&text)
        .map_err(|e| refine_line(crate::yaml::yaml_error(&e, &text, file), &text))?;
    validate(&s, &text, file, known)?;
    Ok(s)
}

/// serde reports an unknown key inside a flow mapping (`fault: { kind: …, pidd: 1 }`) at
/// the enclosing item; point at the line that really holds the key.
fn refine_line(e: ConfigError, text: &str) -> ConfigError {
    match e {
        ConfigError::Invalid {
            file,
            line,
            field,
            message,
        } => {
            let key = message
                .split('`')
                .nth(1)
                .filter(|_| message.contains("unknown field"))
                .map(str::to_owned);
            let line = key
                .and_then(|k| {
                    text.lines()
                        .enumerate()
                        .skip(line.saturating_sub(1))
                        .find(|(_, l)| {
                            l.contains(&format!(" {k}:"))
                                || l.contains(&format!("{{{k}:"))
                                || l.trim_start().starts_with(&format!("{k}:"))
                        })
                        .map(|(i, _)| i + 1)
                })
                .unwrap_or(line);
            ConfigError::Invalid {
                file,
                line,
                field,
                message,
            }
        }
        other => other,
    }
}

/// Reads and parses a scenario file.
pub fn load(path: &std::path::Path, known: &Known) -> Result<Scenario, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        what: "scenario file",
        path: path.to_path_buf(),
        source,
    })?;
    parse(&text, &path.display().to_string(), known)
}

/// A located problem: (dotted field for line search, list item, message).
struct Problem {
    list: Option<(&'static str, usize)>,
    field: String,
    message: String,
}

fn at(field: impl Into<String>, message: impl Into<String>) -> Problem {
    Problem {
        list: None,
        field: field.into(),
        message: message.into(),
    }
}

fn item(
    list: &'static str,
    i: usize,
    field: impl Into<String>,
    message: impl Into<String>,
) -> Problem {
    Problem {
        list: Some((list, i)),
        field: field.into(),
        message: message.into(),
    }
}

/// Checks what serde cannot; errors name the file, line and field.
pub fn validate(s: &Scenario, text: &str, file: &str, known: &Known) -> Result<(), ConfigError> {
    check(s, known).map_err(|p| {
        let (line, field) = match p.list {
            Some((list, i)) => (
                item_line(text, list, i, &p.field),
                if p.field.is_empty() {
                    format!("{list}[{i}]")
                } else {
                    format!("{list}[{i}].{}", p.field)
                },
            ),
            None => (line_of(text, &p.field), p.field.clone()),
        };
        ConfigError::Invalid {
            file: file.to_owned(),
            line,
            field,
            message: p.message,
        }
    })
}

fn valid_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 64
        && n.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
}

fn check(s: &Scenario, known: &Known) -> Result<(), Problem> {
    if !valid_name(&s.name) {
        return Err(at(
            "name",
            format!("{:?}: use 1-64 of [A-Za-z0-9._-]", s.name),
        ));
    }
    for (field, v) in [("service", &s.service), ("tier", &s.tier)] {
        if let Some(v) = v
            && !crate::yaml::valid_label(v)
        {
            return Err(at(field, format!("{v:?}: use 1-64 of [A-Za-z0-9._-]")));
        }
    }
    if s.max_duration.0 < Duration::from_secs(1) {
        return Err(at("max_duration", "must be at least 1s"));
    }
    if s.probe_interval.0 < Duration::from_millis(10) {
        return Err(at("probe_interval", "must be at least 10ms"));
    }
    if s.steady_state.is_empty() {
        return Err(at(
            "steady_state",
            "needs at least one probe: it is how faultline tells healthy from broken",
        ));
    }
    for (i, p) in s.steady_state.iter().enumerate() {
        check_probe(p).map_err(|(f, m)| item("steady_state", i, f, m))?;
    }
    for (i, p) in s.abort_when.iter().enumerate() {
        check_probe(p).map_err(|(f, m)| item("abort_when", i, f, m))?;
    }
    let mut names = std::collections::HashSet::new();
    for (i, p) in s.steady_state.iter().chain(&s.abort_when).enumerate() {
        if !names.insert(p.name.as_str()) {
            let (list, idx) = if i < s.steady_state.len() {
                ("steady_state", i)
            } else {
                ("abort_when", i - s.steady_state.len())
            };
            return Err(item(
                list,
                idx,
                "name",
                format!("probe name {:?} is used twice", p.name),
            ));
        }
    }
    if s.faults.is_empty() {
        return Err(at("faults", "needs at least one fault"));
    }
    for (i, f) in s.faults.iter().enumerate() {
        match (&f.fault, &f.command) {
            (Some(_), Some(_)) | (None, None) => {
                return Err(item(
                    "faults",
                    i,
                    "",
                    "set exactly one of `fault` (a chaos fault) or `command`",
                ));
            }
            (None, Some(c)) if c.is_empty() || c[0].is_empty() => {
                return Err(item("faults", i, "command", "needs a program"));
            }
            (Some(spec), None) => {
                if spec.duration().is_zero() {
                    return Err(item("faults", i, "fault.duration", "must be above 0s"));
                }
                if let Some(max) = known.max_fault_duration
                    && spec.duration() > max
                {
                    return Err(item(
                        "faults",
                        i,
                        "fault.duration",
                        format!(
                            "{} is above chaos.max_duration ({})",
                            humantime::format_duration(spec.duration()),
                            humantime::format_duration(max)
                        ),
                    ));
                }
            }
            _ => {}
        }
    }
    let r = &s.recovery;
    if r.consecutive == 0 {
        return Err(at("recovery.consecutive", "must be at least 1"));
    }
    if r.timeout.0.is_zero() {
        return Err(at("recovery.timeout", "must be above 0s"));
    }
    match (r.strategy, r.actions.is_empty()) {
        (Strategy::Actions, true) => {
            return Err(at(
                "recovery.actions",
                "strategy `actions` needs at least one action",
            ));
        }
        (Strategy::SelfHeal, false) => {
            return Err(at(
                "recovery.strategy",
                "actions are listed: set `strategy: actions` (self-heal runs none)",
            ));
        }
        _ => {}
    }
    for (i, a) in r.actions.iter().enumerate() {
        let n = usize::from(a.command.is_some())
            + usize::from(a.restart_container.is_some())
            + usize::from(a.restart_unit.is_some())
            + usize::from(a.restore_backup.is_some());
        let field = format!("recovery.actions[{i}]");
        if n != 1 {
            return Err(at(
                "recovery.actions",
                format!(
                    "{field}: set exactly one of command, restart_container, restart_unit, restore_backup"
                ),
            ));
        }
        if let Some(c) = &a.command
            && (c.is_empty() || c[0].is_empty())
        {
            return Err(at(
                "recovery.actions",
                format!("{field}.command: needs a program"),
            ));
        }
        if let Some(rb) = &a.restore_backup {
            if !known.backup_sources.iter().any(|b| b == &rb.source) {
                return Err(at(
                    "recovery.actions",
                    format!(
                        "{field}.restore_backup.source: {:?} is not a backup source in the agent config (known: {})",
                        rb.source,
                        if known.backup_sources.is_empty() {
                            "none".to_owned()
                        } else {
                            known.backup_sources.join(", ")
                        }
                    ),
                ));
            }
            if !rb.target.is_absolute() || rb.target.parent().is_none() {
                return Err(at(
                    "recovery.actions",
                    format!("{field}.restore_backup.target: must be an absolute path below /"),
                ));
            }
        }
    }
    if let Some(c) = &s.canary {
        if c.interval.0 < Duration::from_millis(10) {
            return Err(at("canary.interval", "must be at least 10ms"));
        }
        for (side, io) in [("writer", &c.writer), ("reader", &c.reader)] {
            match (&io.command, &io.http) {
                (Some(cmd), None) if !cmd.is_empty() && !cmd[0].is_empty() => {}
                (None, Some(h))
                    if h.url.starts_with("http://") || h.url.starts_with("https://") => {}
                (None, Some(_)) => {
                    return Err(at(
                        format!("canary.{side}.http.url"),
                        "must start with http:// or https://",
                    ));
                }
                _ => {
                    return Err(at(
                        format!("canary.{side}"),
                        "set exactly one of `command` (with a program) or `http`",
                    ));
                }
            }
        }
    }
    let has_restore = r.actions.iter().any(|a| a.restore_backup.is_some());
    if s.objectives.rpo.is_some() && s.canary.is_none() && !has_restore {
        return Err(at(
            "objectives.rpo",
            "an RPO needs evidence: add a `canary` (writer + reader) or a restore_backup action",
        ));
    }
    for (i, t) in s.targets.iter().enumerate() {
        if t.is_empty() {
            return Err(at("targets", format!("targets[{i}] is empty")));
        }
    }
    Ok(())
}

/// Checks one probe: (field inside the probe, message).
pub fn check_probe(p: &ProbeSpec) -> Result<(), (String, String)> {
    let e = |f: &str, m: String| Err((f.to_owned(), m));
    if p.name.is_empty() {
        return e("name", "must not be empty".into());
    }
    let n = usize::from(p.http.is_some())
        + usize::from(p.tcp.is_some())
        + usize::from(p.command.is_some())
        + usize::from(p.metric.is_some());
    if n != 1 {
        return e(
            "name",
            format!(
                "probe {:?}: set exactly one of http, tcp, command, metric",
                p.name
            ),
        );
    }
    if let Some(h) = &p.http {
        match h.url.parse::<http::Uri>() {
            Ok(u) if matches!(u.scheme_str(), Some("http" | "https")) && u.host().is_some() => {}
            Ok(_) => {
                return e(
                    "http.url",
                    format!("{:?} must be an http:// or https:// URL", h.url),
                );
            }
            Err(err) => return e("http.url", format!("{:?}: {err}", h.url)),
        }
        if http::Method::from_bytes(h.method.as_bytes()).is_err() {
            return e(
                "http.method",
                format!("{:?} is not an HTTP method", h.method),
            );
        }
        if !(100..=599).contains(&h.status) {
            return e("http.status", format!("{} is not an HTTP status", h.status));
        }
        if h.timeout.0.is_zero() {
            return e("http.timeout", "must be above 0s".into());
        }
    }
    if let Some(t) = &p.tcp {
        if t.address
            .rsplit_once(':')
            .and_then(|(_, port)| port.parse::<u16>().ok())
            .is_none()
        {
            return e(
                "tcp.address",
                format!("{:?}: write it as host:port", t.address),
            );
        }
        if t.timeout.0.is_zero() {
            return e("tcp.timeout", "must be above 0s".into());
        }
    }
    if let Some(c) = &p.command {
        if c.run.is_empty() || c.run[0].is_empty() {
            return e("command.run", "needs a program".into());
        }
        if c.timeout.0.is_zero() {
            return e("command.timeout", "must be above 0s".into());
        }
    }
    if let Some(m) = &p.metric {
        if m.name.is_empty() {
            return e("metric.name", "must not be empty".into());
        }
        if m.above.is_none() && m.below.is_none() {
            return e("metric", "set `above`, `below` or both".into());
        }
        if let (Some(a), Some(b)) = (m.above, m.below)
            && a >= b
        {
            return e("metric.above", format!("{a} is not below `below` ({b})"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_scenario_file_is_named_a_scenario_file() {
        let e = load(
            std::path::Path::new("/nonexistent/drill.yaml"),
            &Known::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.starts_with("cannot read scenario file /nonexistent/drill.yaml: "),
            "{e}"
        );
    }

    const GOOD: &str = "\
name: web
probe_interval: 100ms
steady_state:
  - name: up
    tcp: { address: \"127.0.0.1:7000\" }
faults:
  - at: 1s
    fault: { kind: process-kill, pid: 42, duration: 1s }
objectives: { rto: 5s }
";

    fn invalid(text: &str, known: &Known) -> (usize, String, String) {
        match parse(text, "s.yaml", known) {
            Err(ConfigError::Invalid {
                line,
                field,
                message,
                file,
            }) => {
                assert_eq!(file, "s.yaml");
                (line, field, message)
            }
            other => panic!("expected invalid, got {other:?}"),
        }
    }

    #[test]
    fn a_good_scenario_parses_with_defaults() {
        let s = parse(GOOD, "s.yaml", &Known::default()).unwrap();
        assert_eq!(s.name, "web");
        assert_eq!(s.probe_interval.0, Duration::from_millis(100));
        assert_eq!(s.recovery.consecutive, 3);
        assert_eq!(s.recovery.strategy, Strategy::SelfHeal);
        assert_eq!(s.fault_mode, FaultMode::Sequence);
        assert_eq!(s.faults[0].at.0, Duration::from_secs(1));
        assert_eq!(s.faults[0].fault.as_ref().unwrap().kind(), "process-kill");
        // JSON is accepted too (the API's inline form).
        let json = serde_json::to_string(&s).unwrap();
        assert_eq!(parse(&json, "inline", &Known::default()).unwrap(), s);
    }

    #[test]
    fn unknown_fields_are_named_with_their_line() {
        let text = GOOD.replace("    tcp: {", "    tcpp: {");
        let (line, field, msg) = invalid(&text, &Known::default());
        assert_eq!(line, 5, "{field}: {msg}");
        assert!(field.contains("tcpp"), "{field}");
        let text = GOOD.replace("pid: 42,", "pid: 42, pidd: 1,");
        let (line, _, msg) = invalid(&text, &Known::default());
        assert_eq!(line, 8, "{msg}");
        assert!(msg.contains("pidd"), "{msg}");
    }

    #[test]
    fn semantic_errors_name_field_and_line() {
        let text = GOOD.replace(
            "tcp: { address: \"127.0.0.1:7000\" }",
            "tcp: { address: nowhere }",
        );
        let (line, field, _) = invalid(&text, &Known::default());
        assert_eq!((line, field.as_str()), (5, "steady_state[0].tcp.address"));
        let text = GOOD.replace(
            "    fault: { kind: process-kill, pid: 42, duration: 1s }\n",
            "",
        );
        let (line, field, msg) = invalid(&text, &Known::default());
        assert_eq!((line, field.as_str()), (7, "faults[0]"), "{msg}");
        let text = format!("{GOOD}recovery:\n  consecutive: 0\n");
        let (line, field, _) = invalid(&text, &Known::default());
        assert_eq!((line, field.as_str()), (11, "recovery.consecutive"));
        let text = GOOD.replace("objectives: { rto: 5s }", "objectives: { rpo: 5s }");
        let (_, field, msg) = invalid(&text, &Known::default());
        assert_eq!(field, "objectives.rpo");
        assert!(msg.contains("canary"), "{msg}");
        let text = GOOD.replace("probe_interval: 100ms", "probe_interval: soon");
        let (line, field, msg) = invalid(&text, &Known::default());
        assert_eq!((line, field.as_str()), (2, "probe_interval"), "{msg}");
    }

    #[test]
    fn restore_sources_and_fault_limits_are_checked_against_the_agent_config() {
        let text = format!(
            "{GOOD}recovery:\n  strategy: actions\n  actions:\n    - restore_backup: {{ source: pg, target: /srv/pg }}\n"
        );
        let (_, field, msg) = invalid(&text, &Known::default());
        assert_eq!(field, "recovery.actions");
        assert!(msg.contains("\"pg\""), "{msg}");
        let known = Known {
            backup_sources: vec!["pg".into()],
            max_fault_duration: Some(Duration::from_millis(500)),
        };
        let (_, field, msg) = invalid(&text, &known);
        assert_eq!(field, "faults[0].fault.duration", "{msg}");
        let known = Known {
            backup_sources: vec!["pg".into()],
            max_fault_duration: None,
        };
        assert!(parse(&text, "s.yaml", &known).is_ok());
        let self_heal_with_actions = text.replace("strategy: actions", "strategy: self-heal");
        let (_, field, _) = invalid(&self_heal_with_actions, &known);
        assert_eq!(field, "recovery.strategy");
    }

    #[test]
    fn fault_steps_take_pod_selectors_as_the_cli_and_the_api_do() {
        let text = GOOD.replace(
            "fault: { kind: process-kill, pid: 42, duration: 1s }",
            "fault: { kind: container-pause, namespace: shop, label: { app: web }, count: 1, duration: 1s }",
        );
        let s = parse(&text, "s.yaml", &Known::default()).unwrap();
        let spec = s.faults[0].fault.as_ref().unwrap();
        let json = serde_json::to_value(spec).unwrap();
        assert_eq!(json["label"], serde_json::json!(["app=web"]));
        assert_eq!(json["namespace"], "shop");
        assert_eq!(json["count"], 1);
        // The same spec as the API's JSON body.
        let api: faultline_chaos::FaultSpec = serde_json::from_str(
            r#"{"kind":"container-pause","namespace":"shop","label":["app=web"],"count":1,"duration":"1s"}"#,
        )
        .unwrap();
        assert_eq!(&api, spec);
        let typo = GOOD.replace(
            "fault: { kind: process-kill, pid: 42, duration: 1s }",
            "fault: { kind: container-pause, lable: { app: web }, duration: 1s }",
        );
        let (_, _, msg) = invalid(&typo, &Known::default());
        assert!(msg.contains("lable"), "{msg}");
    }

    #[test]
    fn garbage_is_rejected_naming_file_and_line() {
        for t in ["", "{", "name: [", "- a", "name: x\nfaults: 3", ":", "\t"] {
            let result = parse(t, "g.yaml", &Known::default());
            crate::test_support::assert_rejected_at_a_line(result, "g.yaml", t);
        }
        if let Err(e) = parse(GOOD, "g.yaml", &Known::default()) {
            panic!("the valid scenario was rejected: {e}");
        }
    }
}
