//! How `faultline fault …` reaches a running agent: it finds the agent from the config's
//! `api:` section, a bearer token and the CA to trust, and talks to it through the one
//! agent-API client ([`crate::agent_client`]).
//!
//! [`find`] decides the path once: [`Reach::NoAgent`] only when the API is not enabled in the
//! config or nothing accepts a TCP connection at `api.listen`; once something answers, every
//! later failure (TLS, a refused token, an error status) is an error of that call — the
//! command never falls back to running in-process after it reached an agent, so a fault is
//! never applied twice.
//!
//! The token, first found wins: `--token-file FILE` (the token alone in a file),
//! `FAULTLINE_TOKEN`, then the first operator entry (else the first entry) of the config's
//! `api.tokens_file`. The CA: `--ca-file FILE` (`FAULTLINE_API_CA`), else the agent's own
//! `api.cert_file` (a self-signed certificate is its own root). Nothing else is trusted.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use crate::agent_client::{AgentClient, Timeouts};
use crate::api::ApiConfig;

/// How long the CLI waits for a TCP connection to the agent before it treats the agent as
/// absent, and for each API call.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const CALL_TIMEOUT: Duration = Duration::from_secs(60);

/// Where the CLI's credentials for the agent come from (flags of the `fault` commands).
#[derive(Clone, Debug, Default, clap::Args)]
pub struct AgentArgs {
    /// A file holding the agent API's bearer token (else `FAULTLINE_TOKEN`, else the first
    /// operator token of the config's `api.tokens_file`).
    #[arg(long, global = true, env = "FAULTLINE_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
    /// The CA certificate (PEM) that signed the agent API's certificate (else the config's
    /// `api.cert_file` itself).
    #[arg(long, global = true, env = "FAULTLINE_API_CA")]
    pub ca_file: Option<PathBuf>,
}

/// The outcome of looking for an agent.
#[derive(Debug)]
pub enum Reach {
    /// An agent answers at this address (boxed: the client is large, the other variant a
    /// message).
    Agent(Box<AgentClient>),
    /// None does; why (for the "running in-process" message).
    NoAgent(String),
}

/// The address the CLI connects to: `api.listen` with an unspecified IP replaced by loopback.
pub fn connect_addr(listen: SocketAddr) -> SocketAddr {
    let ip = match listen.ip() {
        IpAddr::V4(v4) if v4.is_unspecified() => IpAddr::from([127, 0, 0, 1]),
        IpAddr::V6(v6) if v6.is_unspecified() => IpAddr::from(std::net::Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, listen.port())
}

/// Finds the agent: [`Reach::NoAgent`] when the API is off in the config or nothing accepts
/// connections at its address; an error when an agent is there but the CLI cannot talk to it
/// (no token, unreadable CA).
pub async fn find(api: &ApiConfig, args: &AgentArgs) -> Result<Reach, String> {
    if !api.enabled {
        return Ok(Reach::NoAgent(
            "the config does not enable the agent API (api.enabled)".into(),
        ));
    }
    let addr = connect_addr(api.listen);
    match tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(addr)).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => return Ok(Reach::NoAgent(format!("no agent answers at {addr} ({e})"))),
        Err(_) => {
            return Ok(Reach::NoAgent(format!(
                "no agent answers at {addr} (no connection within {})",
                humantime::format_duration(CONNECT_TIMEOUT)
            )));
        }
    }
    let token = token(api, args)?;
    let tls = api.cert_file.is_some() || api.key_file.is_some();
    let roots = if tls {
        let ca = args
            .ca_file
            .as_deref()
            .or(api.cert_file.as_deref())
            .ok_or("the agent API uses TLS: give its CA with --ca-file")?;
        crate::agent_client::roots(Some(ca))?
    } else {
        rustls::RootCertStore::empty()
    };
    let base = format!("{}://{addr}", if tls { "https" } else { "http" });
    let timeouts = Timeouts {
        connect: CONNECT_TIMEOUT,
        call: CALL_TIMEOUT,
    };
    Ok(Reach::Agent(Box::new(AgentClient::new(
        "the agent",
        base,
        token,
        roots,
        timeouts,
    ))))
}

/// The bearer token (see the module docs for the order).
fn token(api: &ApiConfig, args: &AgentArgs) -> Result<String, String> {
    if let Some(path) = &args.token_file {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read the token file {}: {e}", path.display()))?;
        let t = text.trim();
        if t.is_empty() {
            return Err(format!("the token file {} is empty", path.display()));
        }
        return Ok(t.to_owned());
    }
    if let Ok(t) = std::env::var("FAULTLINE_TOKEN")
        && !t.trim().is_empty()
    {
        return Ok(t.trim().to_owned());
    }
    let Some(path) = &api.tokens_file else {
        return Err(
            "an agent answers but no API token is known: use --token-file or FAULTLINE_TOKEN"
                .into(),
        );
    };
    crate::api::auth::Tokens::client_token(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unspecified_listen_addresses_connect_over_loopback() {
        assert_eq!(
            connect_addr("0.0.0.0:9465".parse().unwrap()),
            "127.0.0.1:9465".parse().unwrap()
        );
        assert_eq!(
            connect_addr("[::]:1".parse().unwrap()),
            "[::1]:1".parse().unwrap()
        );
        assert_eq!(
            connect_addr("10.1.2.3:9".parse().unwrap()),
            "10.1.2.3:9".parse().unwrap()
        );
    }
}
