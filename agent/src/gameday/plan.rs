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
//! seed: 42                           # optional: the `count:` picks' seed (drawn otherwise)
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
//!   - scenario: web-restart
//!     agents: {count: 1}             # one agent at random (seeded); or `agents: all`
//! objectives: { rto: 30s, rpo: 1m }  # the worst node's measured RTO/RPO must be within
//! abort_when:                        # game-wide guard rails: the first that fires aborts all
//!   verdicts: [aborted, error]       # a node's drill ended so
//!   unreachable: false               # an agent became unreachable (default: report it only)
//!   probes:                          # run by this process every poll_interval
//!     - name: checkout-up
//!       http: { url: "https://shop.example/health", status: 200 }
//! ```
//!
//! Instead of the inventory, `agents:` can name the DNS name of the agents' headless
//! Service; every A/AAAA record is one agent, named by the node its `GET /v1/info` reports
//! ([`super::discover`], docs/adr/0017):
//!
//! ```yaml
//! agents:
//!   dns: faultline-api.faultline.svc.cluster.local
//!   port: 9465
//!   scheme: https                    # or http (the default manifests serve plain HTTP)
//!   token_file: /etc/faultline/gameday.token     # or token_env
//!   ca_file: /etc/faultline/agents-ca.pem        # optional, https only
//!   resolver: 10.96.0.10:53          # optional: this DNS server, not /etc/resolv.conf
//! ```
//!
//! Node names in steps are then checked against what was found, at run time.
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

mod agents;
mod check;

use check::*;

pub use agents::{Agents, DnsAgents, Scheme, Targets};

/// The whole file.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct GameDayFile {
    /// `[A-Za-z0-9._-]`, 1–64 characters.
    pub name: String,
    /// Free text for the report.
    #[serde(default)]
    pub description: String,
    /// The inventory, or the DNS name the agents are found under.
    pub agents: Agents,
    /// Seed of the random `count:` picks; drawn when the game starts if unset. Recorded in
    /// the report either way, so a game can be replayed with the same picks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
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
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agents: Option<Targets>,
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
    /// The agents: names, `{count: N}` or `all`.
    pub agents: Targets,
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

/// `agents: {dns: …}` resolved: the token read, the resolver parsed.
#[derive(Clone, PartialEq)]
pub struct DnsSource {
    /// The DNS name.
    pub name: String,
    /// The agents' API port.
    pub port: u16,
    /// `https` or `http`.
    pub scheme: Scheme,
    /// The bearer token.
    pub token: String,
    /// CA file.
    pub ca_file: Option<PathBuf>,
    /// The DNS server to ask; the system's resolver when `None`.
    pub resolver: Option<std::net::SocketAddr>,
}

impl std::fmt::Debug for DnsSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DnsSource")
            .field("name", &self.name)
            .field("port", &self.port)
            .field("scheme", &self.scheme)
            .field("ca_file", &self.ca_file)
            .field("resolver", &self.resolver)
            .finish_non_exhaustive()
    }
}

/// Where the agents come from, resolved.
#[derive(Clone, Debug, PartialEq)]
pub enum AgentSource {
    /// The inventory, in its order.
    Inventory(Vec<Agent>),
    /// Found when the game starts ([`super::discover`]).
    Dns(DnsSource),
}

/// A resolved stage.
#[derive(Clone, Debug, PartialEq)]
pub struct PlanStage {
    /// Name.
    pub name: String,
    /// (scenario, agents) pairs that run together; [`super::cast`] picks the agents.
    pub steps: Vec<(ScenarioRef, Targets)>,
}

/// A game day ready to run: tokens read, inline scenarios parsed.
#[derive(Clone, Debug)]
pub struct GameDay {
    /// The file as written.
    pub file: GameDayFile,
    /// Where it was read from.
    pub source: String,
    /// The agents, or where to find them.
    pub agents: AgentSource,
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
        what: "game-day file",
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
    let agents = match &file.agents {
        Agents::Inventory(list) => {
            let mut agents = Vec::new();
            for (i, a) in list.iter().enumerate() {
                let creds = Credentials::of_entry(a);
                let (token, ca_file) = creds
                    .read(base, env)
                    .map_err(|(f, m)| item("agents", i, f, m).locate(text, source))?;
                agents.push(Agent {
                    name: a.name.clone(),
                    url: a.url.trim_end_matches('/').to_owned(),
                    token,
                    ca_file,
                });
            }
            AgentSource::Inventory(agents)
        }
        Agents::Dns(d) => {
            let (token, ca_file) = Credentials::of_dns(d)
                .read(base, env)
                .map_err(|(f, m)| at(format!("agents.{f}"), m).locate(text, source))?;
            let resolver = d
                .resolver
                .as_deref()
                .map(agents::parse_resolver)
                .transpose()
                .map_err(|m| at("agents.resolver", m).locate(text, source))?;
            AgentSource::Dns(DnsSource {
                name: d.dns.clone(),
                port: d.port,
                scheme: d.scheme,
                token,
                ca_file,
                resolver,
            })
        }
    };
    let mut stages = Vec::new();
    for (i, s) in file.plan.iter().enumerate() {
        let steps: Vec<Step> = if s.parallel.is_empty() {
            vec![Step {
                scenario: s.scenario.clone(),
                scenario_file: s.scenario_file.clone(),
                agents: s.agents.clone().unwrap_or(Targets::Named(Vec::new())),
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

#[cfg(test)]
mod tests;
