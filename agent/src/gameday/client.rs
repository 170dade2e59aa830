//! The game-day runner's HTTP client for one agent's API (the drill probes' hyper + rustls
//! client, [`http_client_with_roots`]): start a drill, read its report, pull the kill switch.
//! Every call carries the bearer token and gives up after the game's `request_timeout`; a
//! fresh connection is opened per call (no pooled connection to a node that went away).
//!
//! Errors separate "the agent did not answer" ([`CallError::Unreachable`]: connect,
//! TLS, timeout) from "the agent answered no" ([`CallError::Status`]), because only the
//! first counts towards `unreachable_after`.

use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use serde::de::DeserializeOwned;

use super::file::{Agent, ScenarioRef};
use crate::drill::probe::{HttpsClient, error_chain, http_client_with_roots};
use crate::drill::report::DrillReport;

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// No answer: connection refused or reset, TLS failure, timeout.
    #[error("{agent} ({url}) did not answer: {reason}")]
    Unreachable {
        /// The agent.
        agent: String,
        /// The URL called.
        url: String,
        /// Why.
        reason: String,
    },
    /// An answer that is not a success.
    #[error("{agent} answered {status} to {what}: {body}")]
    Status {
        /// The agent.
        agent: String,
        /// What was asked.
        what: String,
        /// HTTP status.
        status: u16,
        /// The error text the agent gave.
        body: String,
    },
    /// A success whose body is not what the API promises.
    #[error("{agent}: unexpected answer to {what}: {reason}")]
    Decode {
        /// The agent.
        agent: String,
        /// What was asked.
        what: String,
        /// Why.
        reason: String,
    },
}

impl CallError {
    /// Whether this counts as "the agent did not answer".
    pub fn is_unreachable(&self) -> bool {
        matches!(self, CallError::Unreachable { .. })
    }
}

/// The certificates to trust: the PEM certificates of `ca_file`, or the system roots.
pub fn roots(ca_file: Option<&Path>) -> Result<rustls::RootCertStore, String> {
    let mut roots = rustls::RootCertStore::empty();
    match ca_file {
        Some(path) => {
            let pem =
                std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
                let cert = cert.map_err(|e| format!("{}: {e}", path.display()))?;
                roots
                    .add(cert)
                    .map_err(|e| format!("{}: {e}", path.display()))?;
            }
            if roots.is_empty() {
                return Err(format!("{}: no PEM certificate in it", path.display()));
            }
        }
        None => {
            for cert in rustls_native_certs::load_native_certs().certs {
                // An unreadable system certificate is simply not trusted.
                let _ = roots.add(cert);
            }
        }
    }
    Ok(roots)
}

/// A client for one agent.
#[derive(Clone)]
pub struct AgentClient {
    agent: Agent,
    client: HttpsClient,
    timeout: Duration,
}

impl std::fmt::Debug for AgentClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentClient")
            .field("agent", &self.agent)
            .finish_non_exhaustive()
    }
}

impl AgentClient {
    /// Builds the client (reads the CA file).
    pub fn new(agent: Agent, timeout: Duration) -> Result<Self, String> {
        let client = http_client_with_roots(timeout, roots(agent.ca_file.as_deref())?);
        Ok(Self {
            agent,
            client,
            timeout,
        })
    }

    /// The agent's name.
    pub fn name(&self) -> &str {
        &self.agent.name
    }

    /// The agent's base URL.
    pub fn url(&self) -> &str {
        &self.agent.url
    }

    async fn call<T: DeserializeOwned>(
        &self,
        method: http::Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<T, CallError> {
        let url = format!("{}{path}", self.agent.url);
        let what = format!("{method} {path}");
        let unreachable = |reason: String| CallError::Unreachable {
            agent: self.agent.name.clone(),
            url: url.clone(),
            reason,
        };
        let mut req = http::Request::builder().method(method).uri(&url).header(
            http::header::AUTHORIZATION,
            format!("Bearer {}", self.agent.token),
        );
        if body.is_some() {
            req = req.header(http::header::CONTENT_TYPE, "application/json");
        }
        let req = req
            .body(Full::new(Bytes::from(
                body.map(|b| b.to_string()).unwrap_or_default(),
            )))
            .map_err(|e| unreachable(format!("bad request: {e}")))?;
        let exchange = async {
            let resp = self
                .client
                .request(req)
                .await
                .map_err(|e| unreachable(error_chain(&e)))?;
            let status = resp.status();
            let bytes = http_body_util::Limited::new(resp.into_body(), 64 << 20)
                .collect()
                .await
                .map_err(|e| unreachable(format!("reading the answer: {e}")))?
                .to_bytes();
            Ok::<_, CallError>((status, bytes))
        };
        let (status, bytes) = tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| {
                unreachable(format!(
                    "no answer within {}",
                    humantime::format_duration(self.timeout)
                ))
            })??;
        if !status.is_success() {
            let body = serde_json::from_slice::<serde_json::Value>(&bytes)
                .ok()
                .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_owned))
                .unwrap_or_else(|| String::from_utf8_lossy(&bytes).chars().take(300).collect());
            return Err(CallError::Status {
                agent: self.agent.name.clone(),
                what,
                status: status.as_u16(),
                body,
            });
        }
        serde_json::from_slice(&bytes).map_err(|e| CallError::Decode {
            agent: self.agent.name.clone(),
            what,
            reason: e.to_string(),
        })
    }

    /// Checks the agent answers and the token may read (`GET /v1/drills`).
    pub async fn preflight(&self) -> Result<(), CallError> {
        self.call::<serde_json::Value>(http::Method::GET, "/v1/drills", None)
            .await
            .map(|_| ())
    }

    /// Starts a drill; returns its id.
    pub async fn start(&self, scenario: &ScenarioRef) -> Result<String, CallError> {
        let body = match scenario {
            ScenarioRef::Named(n) => serde_json::json!({ "scenario": n }),
            ScenarioRef::Inline { scenario, .. } => {
                let v = serde_json::to_value(scenario).map_err(|e| CallError::Decode {
                    agent: self.agent.name.clone(),
                    what: "encoding the scenario".into(),
                    reason: e.to_string(),
                })?;
                serde_json::json!({ "inline": v })
            }
        };
        let v: serde_json::Value = self
            .call(http::Method::POST, "/v1/drills", Some(body))
            .await?;
        v.get("id")
            .and_then(|i| i.as_str())
            .map(str::to_owned)
            .ok_or_else(|| CallError::Decode {
                agent: self.agent.name.clone(),
                what: "POST /v1/drills".into(),
                reason: format!("no drill id in {v}"),
            })
    }

    /// The drill's report (live while it runs).
    pub async fn drill(&self, id: &str) -> Result<DrillReport, CallError> {
        self.call(http::Method::GET, &format!("/v1/drills/{id}"), None)
            .await
    }

    /// The kill switch: every drill aborted, every fault reverted on this agent.
    pub async fn abort_all(&self) -> Result<serde_json::Value, CallError> {
        self.call(http::Method::POST, "/v1/abort", Some(serde_json::json!({})))
            .await
    }
}
