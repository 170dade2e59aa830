//! The receiver over TLS ([`OtlpReceiver::start_tls`]): the rustls configuration requiring a
//! client certificate of a given CA, the certificate each request came with, and the
//! handshakes the receiver refused.
//!
//! Not here: the accept loop, which does the handshake (`server`).

use std::sync::Arc;
use std::time::Duration;

use tokio_rustls::rustls;

use super::OtlpReceiver;

impl OtlpReceiver {
    /// [`Self::start`], but both transports speak TLS only, with `server_cert_pem` (chain) and
    /// `server_key_pem` as the server's identity, and every client must present a certificate
    /// that chains to a CA in `client_ca_pem`; a handshake without one, or with one from
    /// another CA, is refused and recorded in [`Self::refused_handshakes`]. The endpoints are
    /// `https://127.0.0.1:<port>`.
    ///
    /// # Errors
    /// When the PEM does not parse, rustls rejects the material, or binding fails.
    pub async fn start_tls(
        server_cert_pem: &str,
        server_key_pem: &str,
        client_ca_pem: &str,
    ) -> std::io::Result<Self> {
        let config = tls_server_config(server_cert_pem, server_key_pem, client_ca_pem)
            .map_err(std::io::Error::other)?;
        Self::start_with(Some(Arc::new(config))).await
    }

    /// Why each TLS handshake the receiver refused failed (rustls' error text), in order.
    pub fn refused_handshakes(&self) -> Vec<String> {
        self.shared.lock().refused_handshakes.clone()
    }

    /// Wait until at least `n` TLS handshakes have been refused; returns their reasons.
    ///
    /// # Panics
    /// When `timeout` passes first, with the number of requests that did arrive.
    pub async fn wait_for_refused_handshakes(&self, n: usize, timeout: Duration) -> Vec<String> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.shared.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let inner = self.shared.lock();
                if inner.refused_handshakes.len() >= n {
                    return inner.refused_handshakes.clone();
                }
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                let inner = self.shared.lock();
                panic!(
                    "receiver: {n} refused handshake(s) expected within {timeout:?}, got {:?}; \
                     {} metrics request(s) arrived",
                    inner.refused_handshakes,
                    inner.metrics.len()
                );
            }
        }
    }
}

/// The DER of the end-entity certificate a TLS client presented, put into the extensions of
/// every request on that connection.
#[derive(Clone, Debug)]
pub(super) struct PeerCertificate(pub(super) Arc<[u8]>);

/// The rustls server configuration of [`OtlpReceiver::start_tls`]: `h2` and `http/1.1` by
/// ALPN (tonic's client insists on `h2`), client certificates required and verified against
/// `client_ca_pem`.
fn tls_server_config(
    server_cert_pem: &str,
    server_key_pem: &str,
    client_ca_pem: &str,
) -> Result<rustls::ServerConfig, String> {
    let certs = |pem: &str, what: &str| {
        rustls_pemfile::certs(&mut pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("{what}: {e}"))
    };
    let chain = certs(server_cert_pem, "server certificate")?;
    let key = rustls_pemfile::private_key(&mut server_key_pem.as_bytes())
        .map_err(|e| format!("server key: {e}"))?
        .ok_or("server key: no PEM private key")?;
    let mut roots = rustls::RootCertStore::empty();
    for ca in certs(client_ca_pem, "client CA")? {
        roots.add(ca).map_err(|e| format!("client CA: {e}"))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .map_err(|e| format!("client verifier: {e}"))?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(|e| format!("server identity: {e}"))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}
