//! The game-day file: which agents take part, what runs where and in what order, the
//! objectives for the whole game and the conditions that abort it. YAML, typed and strict.
//!
//! ```yaml
//! name: payments-q3                  # [A-Za-z0-9._-]
//! description: web tier crash on node1 while node2's database link is slow
//! agents:                            # the inventory: each agent's API and its token
//!   - name: node1
//!     url: https://10.0.0.11:9465
//!     token_file: /etc/faultline/gameday.token   # or token_env: FAULTLINE_TOKEN
//!     ca_file: /etc/faultline/agents-ca.pem      # optional; the system roots otherwise
//!   - { name: node2, url: "https://10.0.0.12:9465", token_env: FAULTLINE_TOKEN }
//! poll_interval: 1s                  # how often each running drill is read back
//! request_timeout: 5s                # one API call gives up after this
//! unreachable_after: 15s             # no answer for this long: the agent is `unreachable`
//! max_duration: 30m                  # the whole game; past it everything is aborted
//! plan:                              # stages, one after the other
//!   - scenario: web-restart          # a scenario from the agent's own `drills:` config
//!     agents: [node1]
//!   - parallel:                      # steps of one stage run together
//!       - scenario_file: scenarios/db-latency.yaml   # sent inline (relative to this file)
//!         agents: [node2]
//!       - scenario: cache-kill
//!         agents: [node1, node2]     # one drill on each, together
//! objectives: { rto: 30s, rpo: 1m }  # the worst node's measured RTO/RPO must be within
//! abort_when:                        # game-wide guard rails: the first that fires aborts all
//!   verdicts: [aborted, error]       # a node's drill ended so
//!   unreachable: false               # an agent became unreachable (default: report it only)
//!   probes:                          # run by this process every poll_interval
//!     - name: checkout-up
//!       http: { url: "https://shop.example/health", status: 200 }
//! ```
//!
//! [`parse`] is pure (text in, value out: the fuzz target's entry); [`load`] also reads the
//! token files and variables and the inline scenario files, and checks them. Every error is
//! a [`ConfigError`] with the file, the line and the dotted field.

use faultline_chaos::units::HumanDuration;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::drill::report::Verdict;
use crate::drill::scenario::{self, Known, ProbeSpec, Scenario};
use crate::yaml::item_line;
use crate::yaml::{ConfigError, line_of, substitute_env};

/// The whole file.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct GameDayFile {
    /// `[A-Za-z0-9._-]`, 1–64 characters.
    pub name: String,
    /// Free text for the report.
    #[serde(default)]
    pub description: String,
    /// The inventory.
    pub agents: Vec<AgentEntry>,
    /// How often running drills are read back.
    #[serde(default = "default_poll")]
    pub poll_interval: HumanDuration,
    /// One API call gives up after this.
    #[serde(default = "default_request_timeout")]
    pub request_timeout: HumanDuration,
    /// An agent that answers nothing for this long is reported unreachable.
    #[serde(default = "default_unreachable")]
    pub unreachable_after: HumanDuration,
    /// The whole game; past it every agent's kill switch is pulled.
    #[serde(default = "default_max_duration")]
    pub max_duration: HumanDuration,
    /// Stages, in order.
    pub plan: Vec<Stage>,
    /// Game-wide objectives.
    #[serde(default)]
    pub objectives: GameObjectives,
    /// Game-wide abort conditions.
    #[serde(default)]
    pub abort_when: AbortWhen,
}

fn default_poll() -> HumanDuration {
    HumanDuration(Duration::from_secs(1))
}

fn default_request_timeout() -> HumanDuration {
    HumanDuration(Duration::from_secs(5))
}

fn default_unreachable() -> HumanDuration {
    HumanDuration(Duration::from_secs(15))
}

fn default_max_duration() -> HumanDuration {
    HumanDuration(Duration::from_secs(3600))
}

/// One agent of the inventory.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AgentEntry {
    /// What the plan calls it (a node name).
    pub name: String,
    /// The API's base URL (`http://` or `https://`).
    pub url: String,
    /// A file holding the bearer token (an operator token).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_file: Option<PathBuf>,
    /// An environment variable holding the token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_env: Option<String>,
    /// PEM CA certificates to trust for this agent (the system roots otherwise).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
}

/// One stage of the plan: a single step, or `parallel:` steps.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Stage {
    /// A name for the report (default: `stage-<n>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Scenario name on the agent (single-step stage).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scenario: Option<String>,
    /// Local scenario file, sent inline (single-step stage).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scenario_file: Option<PathBuf>,
    /// Agents of the single step.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub agents: Vec<String>,
    /// Steps that run together.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub parallel: Vec<Step>,
}

/// One step: a scenario on some agents (one drill per agent, together).
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Step {
    /// Scenario name on the agent (`drills:` of its config).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scenario: Option<String>,
    /// Local scenario file, sent inline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scenario_file: Option<PathBuf>,
    /// The agents.
    pub agents: Vec<String>,
}

/// `objectives:`: bounds on the worst node's measurements.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct GameObjectives {
    /// Every measured RTO must be within this.
    pub rto: Option<HumanDuration>,
    /// Every measured RPO must be within this.
    pub rpo: Option<HumanDuration>,
}

/// `abort_when:`.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AbortWhen {
    /// A node's drill ending with one of these aborts the game.
    pub verdicts: Vec<Verdict>,
    /// An agent becoming unreachable aborts the game.
    pub unreachable: bool,
    /// Probes run by the game-day runner every `poll_interval`; one failing aborts the game.
    pub probes: Vec<ProbeSpec>,
}

/// Where a step's scenario comes from, resolved.
#[derive(Clone, Debug, PartialEq)]
pub enum ScenarioRef {
    /// A name in the agent's config.
    Named(String),
    /// A scenario read from a local file (sent as JSON).
    Inline {
        /// The file, for the report.
        file: PathBuf,
        /// The parsed scenario.
        scenario: Box<Scenario>,
    },
}

impl ScenarioRef {
    /// The scenario's name.
    pub fn name(&self) -> &str {
        match self {
            ScenarioRef::Named(n) => n,
            ScenarioRef::Inline { scenario, .. } => &scenario.name,
        }
    }
}

/// A resolved agent: its token read.
#[derive(Clone, PartialEq)]
pub struct Agent {
    /// Name.
    pub name: String,
    /// Base URL without a trailing slash.
    pub url: String,
    /// The bearer token.
    pub token: String,
    /// CA file.
    pub ca_file: Option<PathBuf>,
}

impl std::fmt::Debug for Agent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Agent")
            .field("name", &self.name)
            .field("url", &self.url)
            .field("ca_file", &self.ca_file)
            .finish_non_exhaustive()
    }
}

/// A resolved stage.
#[derive(Clone, Debug, PartialEq)]
pub struct PlanStage {
    /// Name.
    pub name: String,
    /// (scenario, agent names) pairs that run together.
    pub steps: Vec<(ScenarioRef, Vec<String>)>,
}

/// A game day ready to run: tokens read, inline scenarios parsed.
#[derive(Clone, Debug)]
pub struct GameDay {
    /// The file as written.
    pub file: GameDayFile,
    /// Where it was read from.
    pub source: String,
    /// Agents, in inventory order.
    pub agents: Vec<Agent>,
    /// The plan.
    pub stages: Vec<PlanStage>,
}

/// Parses and checks game-day text (no file or variable is read but `${VAR}`s);
/// `file` names it in errors.
pub fn parse(text: &str, file: &str) -> Result<GameDayFile, ConfigError> {
    let text = substitute_env(text, file, &|k| std::env::var(k).ok())?;
    if text.trim().is_empty() {
        return Err(invalid(
            file,
            1,
            "-",
            "the game-day file is empty: it needs name, agents and plan",
        ));
    }
    let g: GameDayFile =
        serde_yaml_ng::from_str(&text).map_err(|e| crate::yaml::yaml_error(&e, &text, file))?;
    check(&g).map_err(|p| p.locate(&text, file))?;
    Ok(g)
}

/// Reads, parses and resolves a game-day file: token files and variables are read, inline
/// scenario files (relative to the game-day file) are read and validated.
pub fn load(path: &Path) -> Result<GameDay, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let source = path.display().to_string();
    let file = parse(&text, &source)?;
    let base = path.parent().unwrap_or(Path::new("."));
    resolve(file, &text, &source, base, &|k| std::env::var(k).ok())
}

/// Resolves a parsed file: tokens and inline scenarios, relative paths against `base`.
pub fn resolve(
    file: GameDayFile,
    text: &str,
    source: &str,
    base: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<GameDay, ConfigError> {
    let mut agents = Vec::new();
    for (i, a) in file.agents.iter().enumerate() {
        let err =
            |field: &str, message: String| item("agents", i, field, message).locate(text, source);
        let token = match (&a.token_file, &a.token_env) {
            (Some(p), None) => {
                let p = base.join(p);
                std::fs::read_to_string(&p)
                    .map_err(|e| err("token_file", format!("cannot read {}: {e}", p.display())))?
                    .trim()
                    .to_owned()
            }
            (None, Some(v)) => env(v)
                .ok_or_else(|| err("token_env", format!("the variable {v} is not set")))?
                .trim()
                .to_owned(),
            _ => {
                return Err(err(
                    "token_file",
                    "set exactly one of token_file, token_env".into(),
                ));
            }
        };
        if token.is_empty() {
            return Err(err(
                if a.token_file.is_some() {
                    "token_file"
                } else {
                    "token_env"
                },
                "the token is empty".into(),
            ));
        }
        let ca_file = a.ca_file.as_ref().map(|p| base.join(p));
        if let Some(ca) = &ca_file {
            crate::agent_client::roots(Some(ca)).map_err(|e| err("ca_file", e))?;
        }
        agents.push(Agent {
            name: a.name.clone(),
            url: a.url.trim_end_matches('/').to_owned(),
            token,
            ca_file,
        });
    }
    let mut stages = Vec::new();
    for (i, s) in file.plan.iter().enumerate() {
        let steps: Vec<Step> = if s.parallel.is_empty() {
            vec![Step {
                scenario: s.scenario.clone(),
                scenario_file: s.scenario_file.clone(),
                agents: s.agents.clone(),
            }]
        } else {
            s.parallel.clone()
        };
        let mut resolved = Vec::new();
        for (j, st) in steps.into_iter().enumerate() {
            let sc = match (st.scenario, st.scenario_file) {
                (Some(n), None) => ScenarioRef::Named(n),
                (None, Some(f)) => {
                    let field = if s.parallel.is_empty() {
                        "scenario_file".to_owned()
                    } else {
                        format!("parallel[{j}].scenario_file")
                    };
                    let p = base.join(&f);
                    let scenario = load_scenario(&p)
                        .map_err(|m| item("plan", i, &field, m).locate(text, source))?;
                    ScenarioRef::Inline {
                        file: p,
                        scenario: Box::new(scenario),
                    }
                }
                // `check` made sure of exactly one.
                _ => {
                    return Err(item(
                        "plan",
                        i,
                        "scenario",
                        "set exactly one of scenario, scenario_file",
                    )
                    .locate(text, source));
                }
            };
            resolved.push((sc, st.agents));
        }
        stages.push(PlanStage {
            name: s.name.clone().unwrap_or_else(|| format!("stage-{}", i + 1)),
            steps: resolved,
        });
    }
    Ok(GameDay {
        file,
        source: source.to_owned(),
        agents,
        stages,
    })
}

/// A local scenario: validated as the agent will, except for the backup source names,
/// which only the agent knows (it checks them when the drill is posted).
fn load_scenario(path: &Path) -> Result<Scenario, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let loose: Option<Scenario> = serde_yaml_ng::from_str(&text).ok();
    let known = Known {
        backup_sources: loose
            .map(|s| {
                s.recovery
                    .actions
                    .iter()
                    .filter_map(|a| a.restore_backup.as_ref().map(|r| r.source.clone()))
                    .collect()
            })
            .unwrap_or_default(),
        max_fault_duration: None,
    };
    scenario::parse(&text, &path.display().to_string(), &known).map_err(|e| e.to_string())
}

fn invalid(file: &str, line: usize, field: &str, message: &str) -> ConfigError {
    ConfigError::Invalid {
        file: file.to_owned(),
        line,
        field: field.to_owned(),
        message: message.to_owned(),
    }
}

/// A located problem: a top-level dotted field, or a field inside an item of a top-level
/// list.
struct Problem {
    list: Option<(&'static str, usize)>,
    field: String,
    message: String,
}

impl Problem {
    fn locate(self, text: &str, file: &str) -> ConfigError {
        let (line, field) = match self.list {
            Some((list, i)) => (
                nested_line(text, list, i, &self.field),
                if self.field.is_empty() {
                    format!("{list}[{i}]")
                } else {
                    format!("{list}[{i}].{}", self.field)
                },
            ),
            None => (line_of(text, &self.field), self.field),
        };
        ConfigError::Invalid {
            file: file.to_owned(),
            line,
            field,
            message: self.message,
        }
    }
}

/// [`item_line`], also inside a nested list (`parallel[1].agents` of a plan stage).
fn nested_line(text: &str, list: &str, i: usize, field: &str) -> usize {
    let Some((head, rest)) = field.split_once('[') else {
        return item_line(text, list, i, field);
    };
    let (Some((idx, tail)), start) = (rest.split_once(']'), item_line(text, list, i, head)) else {
        return item_line(text, list, i, field);
    };
    let (Ok(j), true) = (idx.parse::<usize>(), start > 0) else {
        return start;
    };
    let lines: Vec<&str> = text.lines().collect();
    let indent = |l: &str| l.len() - l.trim_start().len();
    let base = lines.get(start - 1).map_or(0, |l| indent(l));
    let items: Vec<usize> = (start..lines.len())
        .take_while(|&n| {
            lines[n].trim().is_empty()
                || indent(lines[n]) > base
                || lines[n].trim_start().starts_with("- ") && indent(lines[n]) >= base && n == start
        })
        .filter(|&n| lines[n].trim_start().starts_with("- "))
        .collect();
    let Some(&first) = items.get(j) else {
        return start;
    };
    let key = tail.trim_start_matches('.');
    if key.is_empty() {
        return first + 1;
    }
    let stop = items.get(j + 1).copied().unwrap_or(lines.len());
    (first..stop)
        .find(|&n| {
            let t = lines[n].trim_start().trim_start_matches("- ");
            t.starts_with(&format!("{key}:"))
        })
        .map_or(first + 1, |n| n + 1)
}

fn at(field: impl Into<String>, message: impl Into<String>) -> Problem {
    Problem {
        list: None,
        field: field.into(),
        message: message.into(),
    }
}

fn item(list: &'static str, i: usize, field: &str, message: impl Into<String>) -> Problem {
    Problem {
        list: Some((list, i)),
        field: field.to_owned(),
        message: message.into(),
    }
}

fn valid_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 64
        && n.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
}

fn check(g: &GameDayFile) -> Result<(), Problem> {
    if !valid_name(&g.name) {
        return Err(at(
            "name",
            format!("{:?}: use 1-64 of [A-Za-z0-9._-]", g.name),
        ));
    }
    if g.agents.is_empty() {
        return Err(at("agents", "needs at least one agent"));
    }
    let mut names = BTreeSet::new();
    for (i, a) in g.agents.iter().enumerate() {
        if !valid_name(&a.name) {
            return Err(item(
                "agents",
                i,
                "name",
                format!("{:?}: use 1-64 of [A-Za-z0-9._-]", a.name),
            ));
        }
        if !names.insert(a.name.as_str()) {
            return Err(item(
                "agents",
                i,
                "name",
                format!("agent {:?} is listed twice", a.name),
            ));
        }
        match a.url.parse::<http::Uri>() {
            Ok(u)
                if matches!(u.scheme_str(), Some("http" | "https"))
                    && u.host().is_some()
                    && u.path_and_query().is_none_or(|p| p.query().is_none()) => {}
            _ => {
                return Err(item(
                    "agents",
                    i,
                    "url",
                    format!(
                        "{:?} must be an http:// or https:// base URL such as https://10.0.0.11:9465",
                        a.url
                    ),
                ));
            }
        }
        if a.token_file.is_some() == a.token_env.is_some() {
            return Err(item(
                "agents",
                i,
                "token_file",
                "set exactly one of token_file, token_env",
            ));
        }
        if a.token_env.as_deref() == Some("") {
            return Err(item("agents", i, "token_env", "names no variable"));
        }
        if a.ca_file.is_some() && a.url.starts_with("http://") {
            return Err(item(
                "agents",
                i,
                "ca_file",
                "a CA file needs an https:// url",
            ));
        }
    }
    if g.poll_interval.0 < Duration::from_millis(50) {
        return Err(at("poll_interval", "must be at least 50ms"));
    }
    if g.request_timeout.0 < Duration::from_millis(100) {
        return Err(at("request_timeout", "must be at least 100ms"));
    }
    if g.unreachable_after.0 < g.poll_interval.0 {
        return Err(at(
            "unreachable_after",
            format!("must be at least poll_interval ({})", g.poll_interval),
        ));
    }
    if g.max_duration.0 < Duration::from_secs(1) {
        return Err(at("max_duration", "must be at least 1s"));
    }
    if g.plan.is_empty() {
        return Err(at("plan", "needs at least one stage"));
    }
    for (i, s) in g.plan.iter().enumerate() {
        if let Some(n) = &s.name
            && !valid_name(n)
        {
            return Err(item(
                "plan",
                i,
                "name",
                format!("{n:?}: use 1-64 of [A-Za-z0-9._-]"),
            ));
        }
        let single = s.scenario.is_some() || s.scenario_file.is_some() || !s.agents.is_empty();
        if single != s.parallel.is_empty() {
            return Err(item(
                "plan",
                i,
                "",
                "a stage is either one step (scenario or scenario_file, and agents) or `parallel:` steps",
            ));
        }
        if single {
            check_step(
                s.scenario.as_ref(),
                s.scenario_file.as_ref(),
                &s.agents,
                &names,
            )
            .map_err(|(f, m)| item("plan", i, &f, m))?;
        }
        let mut seen = BTreeSet::new();
        for (j, st) in s.parallel.iter().enumerate() {
            check_step(
                st.scenario.as_ref(),
                st.scenario_file.as_ref(),
                &st.agents,
                &names,
            )
            .map_err(|(f, m)| item("plan", i, &format!("parallel[{j}].{f}"), m))?;
            for a in &st.agents {
                if !seen.insert(a.as_str()) {
                    return Err(item(
                        "plan",
                        i,
                        &format!("parallel[{j}].agents"),
                        format!(
                            "agent {a:?} has two steps in this stage; an agent runs one drill of a stage at a time"
                        ),
                    ));
                }
            }
        }
    }
    for (f, d) in [
        ("objectives.rto", &g.objectives.rto),
        ("objectives.rpo", &g.objectives.rpo),
    ] {
        if d.is_some_and(|d| d.0.is_zero()) {
            return Err(at(f, "must be above 0s"));
        }
    }
    if g.abort_when.verdicts.contains(&Verdict::Running) {
        return Err(at(
            "abort_when.verdicts",
            "`running` is not a final verdict",
        ));
    }
    let mut probe_names = BTreeSet::new();
    for (i, p) in g.abort_when.probes.iter().enumerate() {
        let field = format!("abort_when.probes[{i}]");
        if p.metric.is_some() {
            return Err(at(
                "abort_when.probes",
                format!(
                    "{field}: metric probes read an agent's own collectors; use http, tcp or command here"
                ),
            ));
        }
        scenario::check_probe(p)
            .map_err(|(f, m)| at("abort_when.probes", format!("{field}.{f}: {m}")))?;
        if !probe_names.insert(p.name.as_str()) {
            return Err(at(
                "abort_when.probes",
                format!("{field}: probe name {:?} is used twice", p.name),
            ));
        }
    }
    Ok(())
}

fn check_step(
    scenario: Option<&String>,
    file: Option<&PathBuf>,
    agents: &[String],
    known: &BTreeSet<&str>,
) -> Result<(), (String, String)> {
    match (scenario, file) {
        (Some(n), None) if !n.is_empty() => {}
        (None, Some(f)) if !f.as_os_str().is_empty() => {}
        _ => {
            return Err((
                "scenario".into(),
                "set exactly one of scenario (a name in the agent's drills:) or scenario_file"
                    .into(),
            ));
        }
    }
    if agents.is_empty() {
        return Err(("agents".into(), "needs at least one agent".into()));
    }
    let mut seen = BTreeSet::new();
    for a in agents {
        if !known.contains(a.as_str()) {
            return Err((
                "agents".into(),
                format!(
                    "{a:?} is not in agents: (known: {})",
                    known.iter().copied().collect::<Vec<_>>().join(", ")
                ),
            ));
        }
        if !seen.insert(a.as_str()) {
            return Err(("agents".into(), format!("{a:?} is listed twice")));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "\
name: gd
agents:
  - name: node1
    url: http://127.0.0.1:9465
    token_env: GD_TOKEN
  - name: node2
    url: https://10.0.0.2:9465/
    token_file: token
plan:
  - scenario: web-restart
    agents: [node1]
  - name: together
    parallel:
      - scenario_file: s.yaml
        agents: [node2]
      - scenario: other
        agents: [node1]
objectives: { rto: 30s }
abort_when:
  verdicts: [aborted]
";

    fn invalid_at(text: &str) -> (usize, String, String) {
        match parse(text, "g.yaml") {
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
    fn a_good_file_parses_with_defaults_and_resolves() {
        let g = parse(GOOD, "g.yaml").unwrap();
        assert_eq!(g.poll_interval.0, Duration::from_secs(1));
        assert_eq!(g.unreachable_after.0, Duration::from_secs(15));
        assert_eq!(g.plan[1].parallel.len(), 2);
        assert_eq!(g.abort_when.verdicts, vec![Verdict::Aborted]);
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("token"), "secret-token-0123456789\n").unwrap();
        std::fs::write(
            dir.path().join("s.yaml"),
            "name: lat\nsteady_state:\n  - name: up\n    tcp: { address: \"127.0.0.1:1\" }\nfaults:\n  - fault: { kind: process-kill, pid: 42, duration: 1s }\n",
        )
        .unwrap();
        let env = |k: &str| (k == "GD_TOKEN").then(|| "env-token-0123456789".to_owned());
        let r = resolve(g, GOOD, "g.yaml", dir.path(), &env).unwrap();
        assert_eq!(r.agents[0].token, "env-token-0123456789");
        assert_eq!(r.agents[1].token, "secret-token-0123456789");
        assert_eq!(r.agents[1].url, "https://10.0.0.2:9465");
        assert!(!format!("{:?}", r.agents[1]).contains("secret"));
        assert_eq!(r.stages[0].name, "stage-1");
        assert_eq!(r.stages[1].name, "together");
        assert_eq!(r.stages[1].steps[0].0.name(), "lat");
        assert_eq!(r.stages[1].steps[1].1, vec!["node1".to_owned()]);
    }

    #[test]
    fn unknown_fields_and_bad_values_are_located() {
        let (line, field, msg) = invalid_at(&GOOD.replace("    token_env:", "    token_envv:"));
        assert_eq!(line, 5, "{field} {msg}");
        assert!(field.contains("token_envv"), "{field}");
        let (line, field, _) = invalid_at(&GOOD.replace("agents: [node2]", "agents: [node9]"));
        assert_eq!((line, field.as_str()), (15, "plan[1].parallel[0].agents"));
        let (line, field, _) = invalid_at(&GOOD.replace("http://127.0.0.1:9465", "ftp://x"));
        assert_eq!((line, field.as_str()), (4, "agents[0].url"));
        let (line, field, msg) =
            invalid_at(&GOOD.replace("objectives: { rto: 30s }", "objectives: { rto: soon }"));
        assert_eq!(line, 18, "{field}: {msg}");
        let (_, field, _) = invalid_at(&GOOD.replace("    token_file: token\n", ""));
        assert_eq!(field, "agents[1].token_file");
        let (line, field, _) = invalid_at(&GOOD.replace(
            "agents: [node1]\n  - name",
            "agents: [node1, node1]\n  - name",
        ));
        assert_eq!((line, field.as_str()), (11, "plan[0].agents"));
        let text = GOOD.replace(
            "      - scenario: other\n        agents: [node1]\n",
            "      - scenario: other\n        agents: [node2]\n",
        );
        let (_, field, msg) = invalid_at(&text);
        assert_eq!(field, "plan[1].parallel[1].agents", "{msg}");
        let (_, field, _) = invalid_at(&GOOD.replace("verdicts: [aborted]", "verdicts: [running]"));
        assert_eq!(field, "abort_when.verdicts");
        let (_, field, _) = invalid_at(&GOOD.replace("name: gd", "name: g d"));
        assert_eq!(field, "name");
    }

    #[test]
    fn resolve_names_missing_tokens_and_scenario_errors() {
        let g = parse(GOOD, "g.yaml").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let none = |_: &str| None;
        let e = resolve(g.clone(), GOOD, "g.yaml", dir.path(), &none).unwrap_err();
        assert!(e.to_string().contains("GD_TOKEN"), "{e}");
        let env = |_: &str| Some("t0123456789abcdef".to_owned());
        let e = resolve(g.clone(), GOOD, "g.yaml", dir.path(), &env).unwrap_err();
        assert!(e.to_string().contains("agents[1].token_file"), "{e}");
        std::fs::write(dir.path().join("token"), "x\n").unwrap();
        std::fs::write(
            dir.path().join("s.yaml"),
            "name: lat\nsteady_state: []\nfaults: []\n",
        )
        .unwrap();
        let e = resolve(g, GOOD, "g.yaml", dir.path(), &env).unwrap_err();
        let s = e.to_string();
        assert!(
            s.starts_with("g.yaml:14: plan[1].parallel[0].scenario_file:"),
            "{s}"
        );
        assert!(s.contains("steady_state"), "{s}");
    }

    #[test]
    fn the_documented_example_parses_and_reads_back_from_json() {
        let text = include_str!("../../../tests/fuzz/seeds/gameday/full.yaml");
        let g = parse(text, "full.yaml").unwrap();
        assert_eq!(g.abort_when.probes.len(), 2);
        let json = serde_json::to_string(&g).unwrap();
        assert_eq!(parse(&json, "full.json").unwrap(), g);
    }

    #[test]
    fn garbage_is_rejected_naming_file_and_line() {
        for t in [
            "",
            "{",
            "name: [",
            "- a",
            "agents: 3",
            ":",
            "\t",
            "plan:\n  - parallel: []\n",
        ] {
            crate::test_support::assert_rejected_at_a_line(parse(t, "g.yaml"), "g.yaml", t);
        }
        if let Err(e) = parse(GOOD, "g.yaml") {
            panic!("the valid game day was rejected: {e}");
        }
    }
}
