//! The game-day runner's calls to one node's agent, over the one agent-API client
//! ([`crate::agent_client`], one kept-alive connection per agent): ask which node it is on,
//! check it answers, start a drill, read how far it is and its report, pull the kill switch.
//! Each call gives up after the game's `request_timeout`.

use std::time::Duration;

use super::plan::{Agent, ScenarioRef};
pub use crate::agent_client::CallError;
use crate::agent_client::{self, AgentClient, Timeouts};
use crate::api::AgentInfo;
use crate::drill::report::{DrillReport, Progress};

/// A client for one node's agent.
#[derive(Clone, Debug)]
pub struct NodeClient {
    api: AgentClient,
}

impl NodeClient {
    /// Builds the client (reads the CA file).
    pub fn new(agent: Agent, timeout: Duration) -> Result<Self, String> {
        let roots = agent_client::roots(agent.ca_file.as_deref())?;
        let timeouts = Timeouts {
            connect: timeout,
            call: timeout,
        };
        Ok(Self {
            api: AgentClient::kept_alive(agent.name, agent.url, agent.token, roots, timeouts),
        })
    }

    /// The agent's name.
    pub fn name(&self) -> &str {
        self.api.name()
    }

    /// The agent's base URL.
    pub fn url(&self) -> &str {
        self.api.base()
    }

    /// The API client under it (for calls other than a game's: the posture report's).
    pub fn api(&self) -> &AgentClient {
        &self.api
    }

    /// Which node the agent is on (`GET /v1/info`).
    pub async fn info(&self) -> Result<AgentInfo, CallError> {
        self.api.call_json("GET", "/v1/info", None).await
    }

    /// Checks the agent answers and the token may read (`GET /v1/drills`).
    pub async fn preflight(&self) -> Result<(), CallError> {
        self.api
            .call_json::<serde_json::Value>("GET", "/v1/drills", None)
            .await
            .map(|_| ())
    }

    /// Starts a drill; returns its id.
    pub async fn start(&self, scenario: &ScenarioRef) -> Result<String, CallError> {
        let decode = |what: &str, reason: String| CallError::Decode {
            agent: self.name().to_owned(),
            what: what.to_owned(),
            reason,
        };
        let body = match scenario {
            ScenarioRef::Named(n) => serde_json::json!({ "scenario": n }),
            ScenarioRef::Inline { scenario, .. } => {
                let v = serde_json::to_value(scenario)
                    .map_err(|e| decode("encoding the scenario", e.to_string()))?;
                serde_json::json!({ "inline": v })
            }
        };
        let v: serde_json::Value = self.api.call_json("POST", "/v1/drills", Some(body)).await?;
        v.get("id")
            .and_then(|i| i.as_str())
            .map(str::to_owned)
            .ok_or_else(|| decode("POST /v1/drills", format!("no drill id in {v}")))
    }

    /// The drill's report (live while it runs).
    pub async fn drill(&self, id: &str) -> Result<DrillReport, CallError> {
        self.api
            .call_json("GET", &format!("/v1/drills/{id}"), None)
            .await
    }

    /// How far the drill is (`GET /v1/drills/{id}/progress`): a few bytes, however long the
    /// drill has run. An agent older than the route answers 404 ([`CallError::Status`]).
    pub async fn progress(&self, id: &str) -> Result<Progress, CallError> {
        self.api
            .call_json("GET", &format!("/v1/drills/{id}/progress"), None)
            .await
    }

    /// The kill switch: every drill aborted, every fault reverted on this agent.
    pub async fn abort_all(&self) -> Result<serde_json::Value, CallError> {
        self.api
            .call_json("POST", "/v1/abort", Some(serde_json::json!({})))
            .await
    }
}
