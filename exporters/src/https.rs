//! The one builder of outbound HTTP(S) clients: the OTLP/HTTP transport, the trace and log
//! sender, the drill probes and canaries, the agent-API client and the kubelet client all
//! get their hyper client and rustls configuration here, so trust roots, client identities,
//! protocol versions and connect timeouts are decided in one place.
//!
//! It lives in this crate because the OTLP transport is its first user and the agent
//! depends on this crate; it knows nothing of OTLP. (OTLP/gRPC goes through tonic's own
//! transport, configured in [`crate::otlp`].)

use std::sync::Arc;
use std::time::Duration;

use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

/// A hyper client that speaks `http://` and `https://` (HTTP/1.1, rustls with ring).
pub type HttpsClient<B> = Client<hyper_rustls::HttpsConnector<HttpConnector>, B>;

/// What a TLS client configuration trusts and presents.
#[derive(Clone, Debug, Default)]
pub struct TlsOptions<'a> {
    /// Trust the system's root certificates (unreadable ones are skipped, not fatal).
    pub system_roots: bool,
    /// Also trust every certificate of this PEM bundle (at least one must be in it).
    pub ca_pem: Option<&'a [u8]>,
    /// A client certificate chain and its private key (PEM), for mutual TLS.
    pub identity: Option<(&'a [u8], &'a [u8])>,
}

/// Why a TLS configuration could not be built; the caller adds which file or endpoint.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The CA bundle is unreadable PEM or holds no certificate.
    #[error("CA file: {0}")]
    Ca(String),
    /// The client certificate or key is unusable.
    #[error("{0}")]
    Identity(String),
    /// rustls refused the configuration.
    #[error("{0}")]
    Rustls(String),
}

/// The system's root certificates, read once per process: a probe, a canary write or a game
/// day's client each need them, and reading and parsing the store costs milliseconds of
/// blocking I/O and a few hundred KiB each time. A certificate added to the store later is
/// trusted after a restart.
pub fn system_roots() -> rustls::RootCertStore {
    static ROOTS: std::sync::OnceLock<rustls::RootCertStore> = std::sync::OnceLock::new();
    ROOTS
        .get_or_init(|| {
            let mut roots = rustls::RootCertStore::empty();
            for cert in rustls_native_certs::load_native_certs().certs {
                // A broken system certificate must not stop the agent; it is simply not
                // trusted.
                let _ = roots.add(cert);
            }
            roots
        })
        .clone()
}

/// Builds a rustls client configuration (ring, safe default protocol versions).
pub fn tls_config(opts: &TlsOptions<'_>) -> Result<rustls::ClientConfig, TlsError> {
    let mut roots = if opts.system_roots {
        system_roots()
    } else {
        rustls::RootCertStore::empty()
    };
    if let Some(ca) = opts.ca_pem {
        let mut added = 0;
        for cert in rustls_pemfile::certs(&mut &ca[..]) {
            let cert = cert.map_err(|e| TlsError::Ca(e.to_string()))?;
            roots.add(cert).map_err(|e| TlsError::Ca(e.to_string()))?;
            added += 1;
        }
        if added == 0 {
            return Err(TlsError::Ca("no PEM certificate in it".into()));
        }
    }
    tls_config_with_roots(roots, opts.identity)
}

/// [`tls_config`] trusting exactly `roots`.
pub fn tls_config_with_roots(
    roots: rustls::RootCertStore,
    identity: Option<(&[u8], &[u8])>,
) -> Result<rustls::ClientConfig, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Rustls(e.to_string()))?
        .with_root_certificates(roots);
    match identity {
        Some((cert, key)) => {
            let certs = rustls_pemfile::certs(&mut &cert[..])
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| TlsError::Identity(format!("client certificate: {e}")))?;
            let key = rustls_pemfile::private_key(&mut &key[..])
                .map_err(|e| TlsError::Identity(format!("client key: {e}")))?
                .ok_or_else(|| {
                    TlsError::Identity("client key file holds no PEM private key".into())
                })?;
            builder
                .with_client_auth_cert(certs, key)
                .map_err(|e| TlsError::Rustls(e.to_string()))
        }
        None => Ok(builder.with_no_client_auth()),
    }
}

/// A client that opens a fresh connection per request (no idle pool: every call sees the
/// server as it is now), trusting exactly `roots`, giving up connecting after
/// `connect_timeout` — the drill probes' and the fault CLI's. Should rustls ever refuse
/// its defaults with the ring provider, the client fails every https call with a TLS error
/// rather than the process.
pub fn fresh_client<B>(roots: rustls::RootCertStore, connect_timeout: Duration) -> HttpsClient<B>
where
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
{
    with_roots(roots, connect_timeout, true)
}

/// As [`fresh_client`], but a connection stays open between requests (HTTP keep-alive) and
/// the next request to the same server reuses it: for a caller that calls the same server
/// again and again (a game day polling every agent every second), where a new TCP and TLS
/// connection per call costs both ends more than the call itself. A connection the server
/// closed while idle is not reused; a request abandoned mid-way (a timeout) does not hand
/// its connection to the next one.
pub fn kept_alive_client<B>(
    roots: rustls::RootCertStore,
    connect_timeout: Duration,
) -> HttpsClient<B>
where
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
{
    with_roots(roots, connect_timeout, false)
}

fn with_roots<B>(
    roots: rustls::RootCertStore,
    connect_timeout: Duration,
    no_idle_pool: bool,
) -> HttpsClient<B>
where
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
{
    let tls = tls_config_with_roots(roots, None).unwrap_or_else(|_| {
        rustls::ClientConfig::builder()
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth()
    });
    client(
        tls,
        ConnectOptions {
            connect_timeout: Some(connect_timeout),
            no_idle_pool,
            nodelay: true,
        },
    )
}

/// How the client connects.
#[derive(Clone, Copy, Debug, Default)]
pub struct ConnectOptions {
    /// Give up connecting after this long (`None`: the OS's limit).
    pub connect_timeout: Option<Duration>,
    /// Keep no idle connection: every request opens its own, so it sees the server as it is
    /// now (probes), instead of reusing a pooled one (exporters).
    pub no_idle_pool: bool,
    /// Set `TCP_NODELAY`.
    pub nodelay: bool,
}

/// A client for `http://` and `https://` URLs with `tls` for the latter.
pub fn client<B>(tls: rustls::ClientConfig, opts: ConnectOptions) -> HttpsClient<B>
where
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
{
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_connect_timeout(opts.connect_timeout);
    http.set_nodelay(opts.nodelay);
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    let mut builder = Client::builder(TokioExecutor::new());
    if opts.no_idle_pool {
        builder.pool_max_idle_per_host(0);
    }
    builder.build(https)
}

/// An error with its sources, joined by `: ` (hyper's and rustls's errors say little without
/// their causes).
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ca_bundle_without_certificates_is_refused() {
        let e = tls_config(&TlsOptions {
            ca_pem: Some(b"not pem"),
            ..TlsOptions::default()
        })
        .unwrap_err();
        assert!(e.to_string().contains("no PEM certificate"), "{e}");
    }

    #[test]
    fn a_key_without_a_private_key_is_refused() {
        let e = tls_config(&TlsOptions {
            identity: Some((b"", b"")),
            ..TlsOptions::default()
        })
        .unwrap_err();
        assert!(e.to_string().contains("no PEM private key"), "{e}");
    }
}
