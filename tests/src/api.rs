//! The agent's HTTP API from a test: one-request HTTP/1.1 exchanges over plain TCP (no HTTP
//! client library, so a test sees exactly the status line the agent wrote), a tokens file,
//! and an agent with the API on a free loopback port.
//!
//! Not here: what the API must answer — that is asserted in `tests/drill_api.rs`,
//! `tests/api_load.rs`, `tests/api_tokens.rs` and `tests/api_routing_props.rs`.

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::path::Path;
use std::time::Duration;

use crate::Agent;

pub use crate::drill::{
    OPERATOR_TOKEN as OPERATOR, VIEWER_TOKEN as VIEWER, api_call as http, write_tokens,
};

/// [`http`] (`drill::api_call`) that reports connection and read errors instead of panicking.
pub fn try_http(
    addr: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &str,
) -> std::io::Result<(u16, String)> {
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    raw(
        addr,
        &format!(
            "{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        ),
    )
}

/// A whole answer as the agent wrote it.
#[derive(Debug)]
pub struct RawResponse {
    /// The status code (0 when the status line is not HTTP).
    pub status: u16,
    /// The header lines, lower-cased names, in order.
    pub headers: Vec<(String, String)>,
    /// Everything after the blank line, as is.
    pub body: String,
}

impl RawResponse {
    /// The first value of header `name` (lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Sends `request` as is and reads the answer to the end, unparsed beyond the head.
pub fn exchange(addr: &str, request: &str) -> std::io::Result<RawResponse> {
    exchange_bytes(addr, request.as_bytes())
}

/// [`exchange`] for a request that need not be text (a binary body).
pub fn exchange_bytes(addr: &str, request: &[u8]) -> std::io::Result<RawResponse> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    s.write_all(request)?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let out = String::from_utf8_lossy(&raw);
    let (head, body) = out.split_once("\r\n\r\n").unwrap_or((&out, ""));
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Ok(RawResponse {
        status,
        headers,
        body: body.to_owned(),
    })
}

/// `GET path` with an optional bearer token, the answer whole (for non-JSON documents).
///
/// # Panics
/// When the agent cannot be reached.
pub fn get_document(addr: &str, path: &str, token: Option<&str>) -> RawResponse {
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    exchange(
        addr,
        &format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{auth}\r\n"),
    )
    .unwrap_or_else(|e| panic!("GET {path} from {addr}: {e}"))
}

/// Sends `request` as is and reads the answer to the end: (status, JSON part of the body).
pub fn raw(addr: &str, request: &str) -> std::io::Result<(u16, String)> {
    let RawResponse { status, body, .. } = exchange(addr, request)?;
    // Chunked bodies: keep the JSON between the first '{' or '[' and the last '}' or ']'.
    let start = body.find(['{', '[']).unwrap_or(0);
    let end = body.rfind(['}', ']']).map_or(body.len(), |e| e + 1);
    Ok((status, body[start..end.max(start)].to_owned()))
}

/// Replaces `path` the way editors and Kubernetes Secret volumes do: write a sibling, then
/// rename it over the original (a new inode).
pub fn replace_file(path: &Path, text: &str) {
    let tmp = path.with_extension("new");
    std::fs::write(&tmp, text).unwrap_or_else(|e| panic!("write {}: {e}", tmp.display()));
    std::fs::rename(&tmp, path).unwrap_or_else(|e| panic!("rename to {}: {e}", path.display()));
}

/// `faultline run` with the API on a free loopback port (`api_extra`: more lines of the
/// `api:` section, each indented by two spaces), OTLP export off, and `extra` appended to the
/// config; returns once the API accepts connections.
///
/// # Panics
/// When the API does not come up within 30 s (the agent's stderr is in the message).
pub fn start_agent(tokens: &Path, api_extra: &str, extra: &str) -> (Agent, String) {
    start_agent_with(
        "interval: 1s\nexport:\n  otlp:\n    enabled: false\n",
        tokens,
        api_extra,
        extra,
    )
}

/// [`start_agent`] whose config starts with `head` (e.g. an OTLP export section from
/// [`crate::OtlpConfig::to_yaml`]) instead of one-second cycles with OTLP off.
///
/// # Panics
/// As [`start_agent`].
pub fn start_agent_with(
    head: &str,
    tokens: &Path,
    api_extra: &str,
    extra: &str,
) -> (Agent, String) {
    start_agent_with_env(head, tokens, api_extra, extra, &[])
}

/// [`start_agent_with`], the agent's environment extended by `env`.
///
/// # Panics
/// As [`start_agent`].
pub fn start_agent_with_env(
    head: &str,
    tokens: &Path,
    api_extra: &str,
    extra: &str,
    env: &[(&str, &str)],
) -> (Agent, String) {
    let addr = format!("127.0.0.1:{}", crate::backup::free_port());
    let agent = Agent::start_with_env(
        &format!(
            "{head}{}{api_extra}{extra}",
            crate::drill::api_section(&addr, tokens, &[])
        ),
        env,
    );
    let up = crate::drill::poll_for(Duration::from_secs(30), || {
        try_http(&addr, "GET", "/healthz", None, "")
            .ok()
            .filter(|(s, _)| *s == 200)
    });
    assert!(
        up.is_some(),
        "the API did not come up on {addr}:\n{}",
        agent.stderr()
    );
    (agent, addr)
}
