//! The real `faultline run` exporting OTLP over TLS with a client certificate (mTLS), over
//! both transports, to the in-process receiver in its TLS mode
//! ([`OtlpReceiver::start_tls`]), which requires a client certificate from the test's CA.
//!
//! Per transport:
//! - with `export.otlp.tls.{ca_file,cert_file,key_file}` the metrics arrive over `https`,
//!   decode, and every request came over a connection on which the agent presented exactly
//!   the configured client certificate;
//! - without a client certificate, and with one from an unrelated CA, the receiver refuses
//!   every handshake and nothing arrives; the agent keeps running, logs an export error that
//!   names the TLS/certificate problem, and counts the failures
//!   (`faultline.export.failures`, read from its Prometheus endpoint);
//! - the same client identity given by `OTEL_EXPORTER_OTLP_CERTIFICATE`,
//!   `OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE` and `OTEL_EXPORTER_OTLP_CLIENT_KEY` instead of
//!   the config file works the same.
//!
//! And: a `cert_file` that does not exist fails `config validate` and `run` with exit code 2
//! and an error naming `export.otlp.tls.cert_file`.
//!
//! Certificates are made at test time with rcgen: a CA, a server certificate for 127.0.0.1
//! and localhost, a client certificate, and a second CA with its own client certificate.

// A test binary: a panic *is* the failure report, so `expect` is how it reports.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::ffi::OsStr;
use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use faultline_tests::pki::{TestCa, TestLeaf};
use faultline_tests::{Agent, OtlpConfig, OtlpReceiver, TlsFiles, Transport, run_cli};
use http_body_util::{BodyExt as _, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tempfile::TempDir;

/// Generous for 1 s cycles and a TLS handshake on a loaded 2-core CI machine.
const WAIT: Duration = Duration::from_secs(40);

/// One-shot commands; a hang is a failure, not a slow pass.
const CLI_TIMEOUT: Duration = Duration::from_secs(30);

/// Everything the tests need: the trusted CA with server and client leaves, and an unrelated
/// CA with its own client leaf.
struct Pki {
    _dir: TempDir,
    ca: TestCa,
    server: TestLeaf,
    client: TestLeaf,
    other_client: TestLeaf,
}

impl Pki {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let ca = TestCa::new(dir.path(), "faultline-test-ca");
        let server = ca.server(dir.path(), "otlp-receiver", &["127.0.0.1", "localhost"]);
        let client = ca.client(dir.path(), "faultline-agent");
        let other = TestCa::new(dir.path(), "unrelated-ca");
        let other_client = other.client(dir.path(), "stranger-agent");
        Self {
            _dir: dir,
            ca,
            server,
            client,
            other_client,
        }
    }

    /// A receiver serving TLS with the server leaf and trusting only clients of the CA.
    async fn receiver(&self) -> OtlpReceiver {
        let receiver = OtlpReceiver::start_tls(
            &self.server.cert_pem(),
            &self.server.key_pem(),
            &self.ca.pem,
        )
        .await
        .expect("TLS receiver starts");
        assert!(receiver.grpc_endpoint().starts_with("https://"));
        assert!(receiver.http_endpoint().starts_with("https://"));
        receiver
    }

    /// `export.otlp.tls` trusting the CA and, with `client`, presenting that leaf.
    fn tls_files(&self, client: Option<&TestLeaf>) -> TlsFiles {
        TlsFiles {
            ca_file: Some(self.ca.path.clone()),
            cert_file: client.map(|c| c.cert.clone()),
            key_file: client.map(|c| c.key.clone()),
        }
    }
}

// ---- the configured client certificate is presented and the metrics arrive -----------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_mtls_export_arrives_with_the_configured_client_certificate() {
    mtls_export_arrives(Transport::Grpc, Identity::ConfigFile).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_mtls_export_arrives_with_the_configured_client_certificate() {
    mtls_export_arrives(Transport::Http, Identity::ConfigFile).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_mtls_export_arrives_with_the_client_certificate_from_otel_env_vars() {
    mtls_export_arrives(Transport::Grpc, Identity::EnvVars).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_mtls_export_arrives_with_the_client_certificate_from_otel_env_vars() {
    mtls_export_arrives(Transport::Http, Identity::EnvVars).await;
}

/// Where the agent gets its CA and client identity from.
#[derive(Clone, Copy, Debug)]
enum Identity {
    /// `export.otlp.tls.*`.
    ConfigFile,
    /// `OTEL_EXPORTER_OTLP_CERTIFICATE`, `_CLIENT_CERTIFICATE`, `_CLIENT_KEY`.
    EnvVars,
}

async fn mtls_export_arrives(transport: Transport, identity: Identity) {
    let pki = Pki::new();
    let receiver = pki.receiver().await;
    let mut config = OtlpConfig::new(transport, receiver.endpoint(transport));
    let mut agent = match identity {
        Identity::ConfigFile => {
            config.tls = pki.tls_files(Some(&pki.client));
            Agent::start(&config.to_yaml())
        }
        Identity::EnvVars => {
            let path = |p: &Path| p.display().to_string();
            let (ca, cert, key) = (
                path(&pki.ca.path),
                path(&pki.client.cert),
                path(&pki.client.key),
            );
            Agent::start_with_env(
                &config.to_yaml(),
                &[
                    ("OTEL_EXPORTER_OTLP_CERTIFICATE", &ca),
                    ("OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE", &cert),
                    ("OTEL_EXPORTER_OTLP_CLIENT_KEY", &key),
                ],
            )
        }
    };

    let requests = receiver
        .wait_for(
            |reqs| {
                reqs.iter()
                    .filter(|r| r.accepted())
                    .flat_map(|r| r.points())
                    .any(|p| p.name == "system.cpu.time")
            },
            WAIT,
        )
        .await;
    assert!(requests.iter().all(|r| r.transport == transport));
    for r in &requests {
        assert!(
            r.client_cert.as_deref() == Some(pki.client.der.as_slice()),
            "every request must come over a connection authenticated with the configured \
             client certificate; got {:?} bytes",
            r.client_cert.as_ref().map(Vec::len)
        );
    }
    let cpu = receiver.metric_points("system.cpu.time");
    assert!(
        cpu.iter().all(|p| p.value.is_finite() && p.value >= 0.0),
        "system.cpu.time decodes to finite non-negative values: {cpu:?}"
    );
    assert!(
        receiver.refused_handshakes().is_empty(),
        "no handshake of a correctly configured agent is refused: {:?}",
        receiver.refused_handshakes()
    );
    let status = agent.terminate(Duration::from_secs(10)).await;
    assert!(
        status.is_some_and(|s| s.success()),
        "faultline run must exit 0 on SIGTERM, got {status:?}"
    );
}

// ---- a missing or foreign client certificate is refused -------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_without_client_certificate_is_refused_logged_and_counted() {
    refused(Transport::Grpc, Presented::Nothing).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_without_client_certificate_is_refused_logged_and_counted() {
    refused(Transport::Http, Presented::Nothing).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_client_certificate_of_another_ca_is_refused_logged_and_counted() {
    refused(Transport::Grpc, Presented::OtherCa).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_client_certificate_of_another_ca_is_refused_logged_and_counted() {
    refused(Transport::Http, Presented::OtherCa).await;
}

/// Which client certificate a refused agent presents.
#[derive(Clone, Copy, Debug)]
enum Presented {
    /// Only `ca_file`: no client certificate.
    Nothing,
    /// A client certificate from the unrelated CA.
    OtherCa,
}

async fn refused(transport: Transport, client: Presented) {
    let pki = Pki::new();
    let receiver = pki.receiver().await;
    let mut config = OtlpConfig::new(transport, receiver.endpoint(transport));
    config.tls = pki.tls_files(match client {
        Presented::Nothing => None,
        Presented::OtherCa => Some(&pki.other_client),
    });
    let listen = free_local_port();
    config.prometheus_listen = Some(listen);
    // Each attempt's error is at debug level (the first of an outage alone at WARN, and with
    // TLS 1.3 the first may only see the connection closed, before the alert is read).
    let mut agent = Agent::start(&format!(
        "{}logging:\n  level: info,faultline_exporters::otlp::pipeline=debug\n",
        config.to_yaml()
    ));

    // Two refusals: the first attempt and at least one retry after it.
    let reasons = receiver.wait_for_refused_handshakes(2, WAIT).await;
    // rustls' words on the receiver side.
    let expected_reason = match client {
        Presented::Nothing => "peer sent no certificates",
        Presented::OtherCa => "UnknownIssuer",
    };
    assert!(
        reasons.iter().all(|r| r.contains(expected_reason)),
        "the receiver refused for the expected reason ({expected_reason}): {reasons:?}"
    );

    let failures = scrape_failures(&mut agent, listen).await;
    assert!(failures >= 1.0, "faultline.export.failures counts them");
    assert!(
        agent.exit_status().is_none(),
        "the agent keeps running while the backend refuses it"
    );
    assert!(
        receiver.requests().is_empty(),
        "nothing arrives over a refused handshake: {} request(s)",
        receiver.requests().len()
    );
    // The agent's side of the refusal is the TLS alert the receiver sent.
    let alert = match client {
        Presented::Nothing => "received fatal alert: CertificateRequired",
        Presented::OtherCa => "received fatal alert: UnknownCA",
    };
    assert!(
        agent.wait_for_stderr(alert, Duration::from_secs(10)).await,
        "the export error names the TLS alert ({alert:?}):\n{}",
        agent.stderr()
    );
    let stderr = agent.stderr();
    let line = stderr
        .lines()
        .find(|l| l.contains(alert))
        .expect("waited for");
    assert!(
        line.contains("export attempt failed"),
        "a refused handshake is a retryable export failure: {line}"
    );
    assert!(
        !stderr.contains("dropping this batch"),
        "a refused handshake never drops data as if the backend had refused it:\n{stderr}"
    );
    let status = agent.terminate(Duration::from_secs(10)).await;
    assert!(
        status.is_some(),
        "the agent exits on SIGTERM, got {status:?}"
    );
}

fn free_local_port() -> SocketAddr {
    // Bind port 0, read the port the kernel picked, release it for the agent. Another process
    // could take it in between; on a test machine that is rare enough not to matter.
    let listener = TcpListener::bind("127.0.0.1:0").expect("binding 127.0.0.1:0");
    listener.local_addr().expect("local_addr")
}

/// `faultline_export_failures_total` from the agent's Prometheus endpoint, once it is above
/// zero (polling every 200 ms up to [`WAIT`]).
async fn scrape_failures(agent: &mut Agent, listen: SocketAddr) -> f64 {
    let client: Client<HttpConnector, Empty<Bytes>> =
        Client::builder(TokioExecutor::new()).build_http();
    let uri: http::Uri = format!("http://{listen}/metrics").parse().unwrap();
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut last = String::new();
    loop {
        assert!(agent.exit_status().is_none(), "the agent exited");
        if let Ok(resp) = client.get(uri.clone()).await {
            let body = resp.into_body().collect().await.map(|b| b.to_bytes());
            last = body.map_or_else(|e| e.to_string(), |b| String::from_utf8_lossy(&b).into());
            let total: f64 = last
                .lines()
                .filter(|l| l.starts_with("faultline_export_failures_total"))
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .sum();
            if total > 0.0 {
                return total;
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "faultline_export_failures_total stayed 0 for {WAIT:?}; last scrape:\n{last}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

// ---- a missing client certificate file is a config error --------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_cert_file_fails_validate_and_run_with_exit_2_naming_the_field() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-client.pem");
    let mut config = OtlpConfig::new(Transport::Grpc, "https://127.0.0.1:4317".into());
    config.tls = TlsFiles {
        cert_file: Some(missing.clone()),
        ..pki.tls_files(Some(&pki.client))
    };
    let path = dir.path().join("faultline.yaml");
    std::fs::write(&path, config.to_yaml()).unwrap();
    let state = dir.path().join("state");
    std::fs::create_dir(&state).unwrap();

    let validate: [&OsStr; 3] = ["config".as_ref(), "validate".as_ref(), path.as_os_str()];
    let run: [&OsStr; 5] = [
        "--state-dir".as_ref(),
        state.as_os_str(),
        "run".as_ref(),
        "--config".as_ref(),
        path.as_os_str(),
    ];
    for (what, out) in [
        ("config validate", run_cli(validate, CLI_TIMEOUT).await),
        ("run", run_cli(run, CLI_TIMEOUT).await),
    ] {
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{what}: exit code; stderr:\n{stderr}"
        );
        assert!(
            stderr.contains("export.otlp.tls.cert_file"),
            "{what}: the error names the field: {stderr}"
        );
        assert!(
            stderr.contains(&missing.display().to_string()),
            "{what}: the error names the file: {stderr}"
        );
    }
}
