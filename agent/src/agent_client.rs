//! The one client of a faultline agent's HTTP API, used by `faultline fault …` when an agent
//! runs (through its API instead of in-process) and by the game-day runner (one client per
//! node). Every call carries the bearer token and gives up after the call timeout. The fault
//! CLI's client ([`AgentClient::new`]) opens a fresh connection per call; the game day's
//! ([`AgentClient::kept_alive`]) keeps one open between its polls (HTTP keep-alive:
//! docs/adr/0023), since a new TCP and TLS connection every second to each of a hundred
//! agents costs them and the runner more than the polls themselves.
//!
//! Errors separate "the agent did not answer" ([`CallError::Unreachable`]: connect, TLS,
//! timeout) from "the agent answered no" ([`CallError::Status`]): a game day counts only the
//! first towards `unreachable_after`, and the fault CLI never falls back to running
//! in-process once an agent answered. Finding the agent and its token is the caller's
//! business (the config for the CLI, the game-day file for a game).

use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use faultline_exporters::https::{self, HttpsClient, error_chain};
use http_body_util::{BodyExt, Full};
use serde::Deserialize;
use serde::de::DeserializeOwned;

/// The largest answer read (a drill report with a long timeline stays far below).
const MAX_ANSWER: usize = 64 << 20;

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

/// An answer: status and body text.
#[derive(Debug)]
pub struct Answer {
    /// HTTP status.
    pub status: u16,
    /// Body.
    pub body: String,
}

impl Answer {
    /// The `error` field of a JSON error body, else the body itself.
    pub fn message(&self) -> String {
        #[derive(Deserialize)]
        struct E {
            error: String,
        }
        serde_json::from_str::<E>(&self.body)
            .map(|e| e.error)
            .unwrap_or_else(|_| self.body.trim().to_owned())
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
                    .map_err(|e| format!("{}: not a usable CA certificate: {e}", path.display()))?;
            }
            if roots.is_empty() {
                return Err(format!("{}: no PEM certificate in it", path.display()));
            }
        }
        None => roots = https::system_roots(),
    }
    Ok(roots)
}

/// How long to wait.
#[derive(Clone, Copy, Debug)]
pub struct Timeouts {
    /// For the TCP connection.
    pub connect: Duration,
    /// For a whole call, answer read included.
    pub call: Duration,
}

/// A client of one agent's API.
#[derive(Clone)]
pub struct AgentClient {
    name: String,
    base: String,
    token: String,
    client: HttpsClient<Full<Bytes>>,
    timeouts: Timeouts,
}

impl std::fmt::Debug for AgentClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentClient")
            .field("name", &self.name)
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

impl AgentClient {
    /// A client of the agent `name` at `base` (`http(s)://host:port`) trusting `roots`.
    pub fn new(
        name: impl Into<String>,
        base: impl Into<String>,
        token: impl Into<String>,
        roots: rustls::RootCertStore,
        timeouts: Timeouts,
    ) -> Self {
        let client = https::fresh_client(roots, timeouts.connect);
        Self::with_client(name, base, token, client, timeouts)
    }

    /// As [`Self::new`], but the connection stays open between calls and is reused
    /// ([`https::kept_alive_client`]): for a caller that calls the same agent every second.
    /// A call that times out does not pass its connection on, so an agent that stopped
    /// answering is still seen as such at the next call.
    pub fn kept_alive(
        name: impl Into<String>,
        base: impl Into<String>,
        token: impl Into<String>,
        roots: rustls::RootCertStore,
        timeouts: Timeouts,
    ) -> Self {
        let client = https::kept_alive_client(roots, timeouts.connect);
        Self::with_client(name, base, token, client, timeouts)
    }

    fn with_client(
        name: impl Into<String>,
        base: impl Into<String>,
        token: impl Into<String>,
        client: HttpsClient<Full<Bytes>>,
        timeouts: Timeouts,
    ) -> Self {
        Self {
            name: name.into(),
            base: base.into(),
            token: token.into(),
            client,
            timeouts,
        }
    }

    /// The agent's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The base URL (`http(s)://addr`).
    pub fn base(&self) -> &str {
        &self.base
    }

    /// One call with any answer; `Err` only when the agent did not answer.
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<String>,
    ) -> Result<Answer, CallError> {
        let url = format!("{}{path}", self.base);
        let unreachable = |reason: String| CallError::Unreachable {
            agent: self.name.clone(),
            url: url.clone(),
            reason,
        };
        let method = http::Method::from_bytes(method.as_bytes())
            .map_err(|e| unreachable(format!("bad method: {e}")))?;
        let mut req = http::Request::builder().method(method).uri(&url).header(
            http::header::AUTHORIZATION,
            format!("Bearer {}", self.token),
        );
        if body.is_some() {
            req = req.header(http::header::CONTENT_TYPE, "application/json");
        }
        let req = req
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| unreachable(format!("bad request: {e}")))?;
        let exchange = async {
            let resp = self
                .client
                .request(req)
                .await
                .map_err(|e| unreachable(error_chain(&e)))?;
            let status = resp.status().as_u16();
            let bytes = http_body_util::Limited::new(resp.into_body(), MAX_ANSWER)
                .collect()
                .await
                .map_err(|e| unreachable(format!("reading the answer: {e}")))?
                .to_bytes();
            Ok::<_, CallError>(Answer {
                status,
                body: String::from_utf8_lossy(&bytes).into_owned(),
            })
        };
        tokio::time::timeout(self.timeouts.call, exchange)
            .await
            .map_err(|_| {
                unreachable(format!(
                    "no answer within {}",
                    humantime::format_duration(self.timeouts.call)
                ))
            })?
    }

    /// One call whose success is decoded as `T`; any other status is [`CallError::Status`].
    pub async fn call_json<T: DeserializeOwned>(
        &self,
        method: &str,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<T, CallError> {
        let what = format!("{method} {path}");
        let answer = self.call(method, path, body.map(|b| b.to_string())).await?;
        if !(200..300).contains(&answer.status) {
            return Err(CallError::Status {
                agent: self.name.clone(),
                what,
                status: answer.status,
                body: answer.message().chars().take(300).collect(),
            });
        }
        serde_json::from_str(&answer.body).map_err(|e| CallError::Decode {
            agent: self.name.clone(),
            what,
            reason: e.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_bodies_give_their_message() {
        let a = Answer {
            status: 404,
            body: "{\"error\": \"no active fault x\"}".into(),
        };
        assert_eq!(a.message(), "no active fault x");
        let b = Answer {
            status: 500,
            body: " plain text \n".into(),
        };
        assert_eq!(b.message(), "plain text");
    }

    #[tokio::test]
    async fn a_closed_port_is_unreachable_not_an_answer() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let c = AgentClient::new(
            "n1",
            format!("http://127.0.0.1:{port}"),
            "t",
            rustls::RootCertStore::empty(),
            Timeouts {
                connect: Duration::from_secs(1),
                call: Duration::from_secs(2),
            },
        );
        let e = c.call("GET", "/v1/drills", None).await.unwrap_err();
        assert!(e.is_unreachable(), "{e}");
        assert!(e.to_string().contains("n1"), "{e}");
    }
}
