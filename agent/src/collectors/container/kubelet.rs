//! Kubernetes names from the kubelet's pods endpoint: the fallback for nodes whose CRI socket
//! cannot be mounted ([`super::cri`] asks the runtime itself, which needs no token or RBAC).
//!
//! The kubelet on the same node knows every pod and container, so [`run`] polls its `/pods`
//! endpoint (every `refresh`, and early when the collector meets a container it cannot name,
//! at most once per [`MIN_INTERVAL`]). The request carries the service-account token (`token_file`, re-read
//! every time because projected tokens rotate); `https` endpoints are verified against
//! `ca_file`, or the system roots when it is unset. The kubelet's read-only port
//! (`http://<node>:10255/pods`) works as well, without a token.
//!
//! [`parse_pods`] is pure and tested on a pod list as the kubelet returns it. The pod UID of
//! every listed pod is kept too, so containers the kubelet does not list (pod sandboxes,
//! whose UID comes from the cgroup path) still get their pod's name and namespace.
//!
//! Not testable on the project's machines (no kubelet): the HTTP path is tested against an
//! in-process server speaking plain HTTP; TLS against a real kubelet is not exercised here.

use faultline_chaos::units::HumanDuration;
use faultline_exporters::repeat::{self, Failure, Repeated};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::metadata::{ContainerMeta, FirstAttempt, K8sMeta, MetadataCache, PodMeta, next_poll};
use super::paths::{Runtime, is_container_id};

/// Shortest time between two requests, however often the collector asks.
pub const MIN_INTERVAL: Duration = Duration::from_secs(5);
/// Longest one request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest pod list read (a node with 250 pods answers well under 2 MiB).
const MAX_BODY: usize = 32 << 20;

/// `containers.kubelet` in the configuration file.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct KubeletConfig {
    /// Ask the kubelet for pod and container names.
    pub enabled: bool,
    /// The pods endpoint: `https://<node>:10250/pods`, or the read-only
    /// `http://<node>:10255/pods`; unset: `https://$NODE_NAME:10250/pods`.
    pub endpoint: Option<String>,
    /// Bearer token file (the pod's service-account token); unset: no token.
    pub token_file: Option<PathBuf>,
    /// CA bundle that signed the kubelet's serving certificate; unset: the system roots.
    pub ca_file: Option<PathBuf>,
    /// How often the pod list is refreshed.
    pub refresh: HumanDuration,
}

impl Default for KubeletConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            endpoint: None,
            token_file: Some(PathBuf::from(
                "/var/run/secrets/kubernetes.io/serviceaccount/token",
            )),
            ca_file: Some(PathBuf::from(
                "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt",
            )),
            refresh: HumanDuration(Duration::from_secs(30)),
        }
    }
}

/// Why the kubelet could not be asked.
#[derive(Debug, thiserror::Error)]
pub enum KubeletError {
    /// The endpoint is not a usable URL.
    #[error("containers.kubelet.endpoint {endpoint:?}: {reason}")]
    Endpoint {
        /// The configured endpoint.
        endpoint: String,
        /// Why.
        reason: String,
    },
    /// The CA file could not be used.
    #[error("containers.kubelet.ca_file {path}: {reason}")]
    Ca {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The token file could not be read.
    #[error("cannot read the kubelet token {path}: {source}")]
    Token {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The request failed.
    #[error("kubelet {endpoint}: {reason}")]
    Request {
        /// The endpoint.
        endpoint: String,
        /// Why.
        reason: String,
    },
    /// The answer was not a pod list.
    #[error("kubelet {endpoint}: unexpected JSON: {source}")]
    Json {
        /// The endpoint.
        endpoint: String,
        /// The error.
        source: serde_json::Error,
    },
}

// ---------------------------------------------------------------------------------------
// Pure parsing.

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct PodList {
    items: Vec<Pod>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Pod {
    metadata: PodMetadata,
    status: PodStatus,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct PodMetadata {
    name: String,
    namespace: String,
    uid: String,
    labels: std::collections::BTreeMap<String, String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct PodStatus {
    container_statuses: Vec<ContainerStatus>,
    init_container_statuses: Vec<ContainerStatus>,
    ephemeral_container_statuses: Vec<ContainerStatus>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct ContainerStatus {
    name: String,
    #[serde(rename = "containerID")]
    container_id: String,
    image: String,
}

/// `containerd://<id>` → (runtime, id).
fn split_container_id(s: &str) -> Option<(Option<Runtime>, &str)> {
    let (scheme, id) = s.split_once("://")?;
    let runtime = match scheme {
        "containerd" => Some(Runtime::Containerd),
        "cri-o" => Some(Runtime::CriO),
        "docker" => Some(Runtime::Docker),
        _ => None,
    };
    is_container_id(id).then_some((runtime, id))
}

/// The kubelet's `/pods` answer → (containers by ID, pods by UID). Pod labels in the
/// allowlist `labels` become container labels, as Docker's do.
#[allow(clippy::type_complexity)] // Two plain lists of pairs.
pub fn parse_pods(
    body: &[u8],
    labels: &[String],
) -> Result<(Vec<(String, ContainerMeta)>, Vec<(String, PodMeta)>), serde_json::Error> {
    let list: PodList = serde_json::from_slice(body)?;
    let mut containers = Vec::new();
    let mut pods = Vec::new();
    for pod in list.items {
        let m = &pod.metadata;
        if !m.uid.is_empty() {
            pods.push((
                m.uid.clone(),
                PodMeta {
                    name: m.name.clone(),
                    namespace: m.namespace.clone(),
                },
            ));
        }
        let pod_labels: Vec<(String, String)> = labels
            .iter()
            .filter_map(|k| m.labels.get(k).map(|v| (k.clone(), v.clone())))
            .collect();
        let statuses = pod
            .status
            .container_statuses
            .iter()
            .chain(&pod.status.init_container_statuses)
            .chain(&pod.status.ephemeral_container_statuses);
        for c in statuses {
            let Some((runtime, id)) = split_container_id(&c.container_id) else {
                continue;
            };
            let (image_name, image_tags) = if c.image.is_empty() {
                (None, Vec::new())
            } else {
                let (n, t) = super::docker::split_image(&c.image);
                (Some(n), t)
            };
            let meta = ContainerMeta {
                name: Some(c.name.clone()),
                image_name,
                image_tags,
                runtime,
                labels: pod_labels.clone(),
                k8s: K8sMeta {
                    pod_name: Some(m.name.clone()),
                    pod_uid: Some(m.uid.clone()).filter(|u| !u.is_empty()),
                    namespace: Some(m.namespace.clone()),
                    container_name: Some(c.name.clone()),
                },
            };
            containers.push((id.to_owned(), meta));
        }
    }
    Ok((containers, pods))
}

// ---------------------------------------------------------------------------------------
// The client.

type HttpsClient = faultline_exporters::https::HttpsClient<Empty<Bytes>>;

/// A configured kubelet client.
#[derive(Debug)]
pub struct KubeletClient {
    client: HttpsClient,
    uri: http::Uri,
    token_file: Option<PathBuf>,
    refresh: Duration,
    labels: Vec<String>,
}

fn tls_config(ca_file: Option<&PathBuf>) -> Result<rustls::ClientConfig, KubeletError> {
    let ca_err = |reason: String| KubeletError::Ca {
        path: ca_file.cloned().unwrap_or_default(),
        reason,
    };
    let pem = match ca_file {
        Some(path) => Some(std::fs::read(path).map_err(|e| ca_err(e.to_string()))?),
        None => None,
    };
    faultline_exporters::https::tls_config(&faultline_exporters::https::TlsOptions {
        system_roots: ca_file.is_none(),
        ca_pem: pem.as_deref(),
        identity: None,
    })
    .map_err(|e| ca_err(e.to_string()))
}

impl KubeletClient {
    /// Builds the client; reads the CA file now, so a wrong path fails at start.
    pub fn new(cfg: &KubeletConfig, labels: &[String]) -> Result<Self, KubeletError> {
        let endpoint = match &cfg.endpoint {
            Some(e) => e.clone(),
            None => {
                match std::env::var("NODE_NAME") {
                    Ok(node) if !node.is_empty() => format!("https://{node}:10250/pods"),
                    _ => {
                        return Err(KubeletError::Endpoint {
                        endpoint: String::new(),
                        reason: "unset, and NODE_NAME is not set to default it from (set one of them)".to_owned(),
                    });
                    }
                }
            }
        };
        let endpoint_err = |reason: &str| KubeletError::Endpoint {
            endpoint: endpoint.clone(),
            reason: reason.to_owned(),
        };
        let uri: http::Uri = endpoint.parse().map_err(|_| endpoint_err("not a URL"))?;
        let https = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => return Err(endpoint_err("must start with https:// or http://")),
        };
        if uri.host().is_none_or(str::is_empty) {
            return Err(endpoint_err("has no host (is NODE_NAME set?)"));
        }
        // Plain http needs no trust roots: reading the system's costs start-up time and
        // resident memory for nothing.
        let tls = if https {
            tls_config(cfg.ca_file.as_ref())?
        } else {
            faultline_exporters::https::tls_config(&Default::default()).map_err(|e| {
                KubeletError::Ca {
                    path: PathBuf::new(),
                    reason: e.to_string(),
                }
            })?
        };
        let client = faultline_exporters::https::client(tls, Default::default());
        Ok(Self {
            client,
            uri,
            token_file: cfg.token_file.clone(),
            refresh: cfg.refresh.0,
            labels: labels.to_vec(),
        })
    }

    /// Fetches and parses the pod list.
    #[allow(clippy::type_complexity)] // The same two lists as parse_pods.
    pub async fn fetch(
        &self,
    ) -> Result<(Vec<(String, ContainerMeta)>, Vec<(String, PodMeta)>), KubeletError> {
        let endpoint = self.uri.to_string();
        let req_err = |reason: String| KubeletError::Request {
            endpoint: endpoint.clone(),
            reason,
        };
        let mut req = http::Request::get(self.uri.clone());
        if let Some(path) = &self.token_file {
            let path = path.clone();
            let token = tokio::task::spawn_blocking(move || {
                std::fs::read_to_string(&path)
                    .map_err(|source| KubeletError::Token { path, source })
            })
            .await
            .map_err(|e| req_err(e.to_string()))??;
            req = req.header(
                http::header::AUTHORIZATION,
                format!("Bearer {}", token.trim()),
            );
        }
        let req = req.body(Empty::new()).map_err(|e| req_err(e.to_string()))?;
        let fut = async {
            let resp = self
                .client
                .request(req)
                .await
                .map_err(|e| req_err(faultline_exporters::https::error_chain(&e)))?;
            let status = resp.status();
            let body = http_body_util::Limited::new(resp.into_body(), MAX_BODY)
                .collect()
                .await
                .map_err(|e| req_err(e.to_string()))?
                .to_bytes();
            if !status.is_success() {
                let hint = if status == http::StatusCode::UNAUTHORIZED
                    || status == http::StatusCode::FORBIDDEN
                {
                    " (the service account needs get on nodes/proxy)"
                } else {
                    ""
                };
                return Err(req_err(format!("HTTP {status}{hint}")));
            }
            parse_pods(&body, &self.labels).map_err(|source| KubeletError::Json {
                endpoint: endpoint.clone(),
                source,
            })
        };
        tokio::time::timeout(REQUEST_TIMEOUT, fut)
            .await
            .map_err(|_| req_err(format!("no answer within {REQUEST_TIMEOUT:?}")))?
    }
}

/// The kubelet task: poll until cancelled; logs a failing kubelet once, then a summary at
/// most once a minute while it fails ([`repeat`]), and its recovery.
pub async fn run(
    client: KubeletClient,
    cache: Arc<MetadataCache>,
    mut early: mpsc::Receiver<()>,
    mut first: FirstAttempt,
    cancel: CancellationToken,
) {
    let mut outage = Repeated::default();
    loop {
        match client.fetch().await {
            Ok((containers, pods)) => {
                if let Some(r) = outage.succeeded() {
                    info!(endpoint = %client.uri, "kubelet answers again after {}; Kubernetes names restored", repeat::human(r.lasted));
                }
                debug!(
                    containers = containers.len(),
                    pods = pods.len(),
                    "kubelet pod list"
                );
                cache.kubelet_replace(containers, pods);
            }
            Err(e) => match outage.failed() {
                Failure::First => {
                    warn!(endpoint = %client.uri, error = %e, "no Kubernetes names from the kubelet: containers are reported by ID and pod UID until it answers (retrying; a summary follows at most once a minute)")
                }
                Failure::Summary { attempts, lasting } => {
                    warn!(endpoint = %client.uri, error = %e, "kubelet still failing after {}: {attempts} attempts", repeat::human(lasting))
                }
                Failure::Quiet => debug!(error = %e, "kubelet still failing"),
            },
        }
        first.done();
        if !next_poll(&cancel, &mut early, MIN_INTERVAL, client.refresh).await {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "4a57c14d26338e3942ed0c74fa408ccc2b867eb66855835dbda05e806e749147";
    const UID: &str = "0f1e2d3c-4b5a-6978-8a9b-acbdcedf0011";

    fn pods_json() -> String {
        format!(
            r#"{{"kind":"PodList","apiVersion":"v1","metadata":{{}},"items":[
              {{"metadata":{{"name":"web-7d9","namespace":"prod","uid":"{UID}","labels":{{"app":"web","tier":"front"}}}},
                "spec":{{"containers":[{{"name":"web","image":"nginx:1.25"}}]}},
                "status":{{"phase":"Running",
                  "containerStatuses":[{{"name":"web","image":"docker.io/library/nginx:1.25","imageID":"docker.io/library/nginx@sha256:ab","containerID":"containerd://{ID}","ready":true}}],
                  "initContainerStatuses":[{{"name":"init","image":"busybox","containerID":"cri-o://{}"}}]}}}},
              {{"metadata":{{"name":"pending","namespace":"prod","uid":"11111111-2222-3333-4444-555555555555"}},"status":{{"phase":"Pending"}}}}
            ]}}"#,
            "b".repeat(64)
        )
    }

    #[test]
    fn pod_list_gives_names_images_and_pod_uids() {
        let (containers, pods) = parse_pods(pods_json().as_bytes(), &["app".to_owned()]).unwrap();
        assert_eq!(containers.len(), 2);
        let (id, m) = &containers[0];
        assert_eq!(id, ID);
        assert_eq!(m.runtime, Some(Runtime::Containerd));
        assert_eq!(m.image_name.as_deref(), Some("docker.io/library/nginx"));
        assert_eq!(m.image_tags, vec!["1.25".to_owned()]);
        assert_eq!(m.k8s.pod_name.as_deref(), Some("web-7d9"));
        assert_eq!(m.k8s.namespace.as_deref(), Some("prod"));
        assert_eq!(m.k8s.pod_uid.as_deref(), Some(UID));
        assert_eq!(m.k8s.container_name.as_deref(), Some("web"));
        assert_eq!(m.labels, vec![("app".to_owned(), "web".to_owned())]);
        assert_eq!(containers[1].1.runtime, Some(Runtime::CriO));
        assert_eq!(pods.len(), 2);
        assert_eq!(
            pods[1].1,
            PodMeta {
                name: "pending".into(),
                namespace: "prod".into()
            }
        );
        assert!(parse_pods(br#"{"items":3}"#, &[]).is_err());
        assert_eq!(split_container_id("containerd://short"), None);
        assert_eq!(split_container_id(ID), None);
    }

    #[test]
    fn bad_endpoints_and_ca_files_are_refused_with_the_field() {
        let mut cfg = KubeletConfig {
            enabled: true,
            endpoint: Some("ftp://node/pods".into()),
            ..KubeletConfig::default()
        };
        let e = KubeletClient::new(&cfg, &[]).unwrap_err().to_string();
        assert!(
            e.contains("containers.kubelet.endpoint") && e.contains("https://"),
            "{e}"
        );
        cfg.endpoint = Some("https://:10250/pods".into());
        assert!(KubeletClient::new(&cfg, &[]).is_err());
        cfg.endpoint = Some("https://node:10250/pods".into());
        cfg.ca_file = Some("/nonexistent/ca.crt".into());
        let e = KubeletClient::new(&cfg, &[]).unwrap_err().to_string();
        assert!(
            e.contains("ca_file") && e.contains("/nonexistent/ca.crt"),
            "{e}"
        );
    }

    /// The real HTTP path against an in-process server: the token is sent, the list parsed.
    #[tokio::test]
    async fn fetch_sends_the_token_and_parses_the_answer() {
        use hyper::service::service_fn;
        use hyper_util::rt::TokioIo;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let body = pods_json();
        let server = tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            let svc = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                let body = body.clone();
                async move {
                    let auth = req
                        .headers()
                        .get("authorization")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("")
                        .to_owned();
                    let resp = if auth == "Bearer s3cret" && req.uri().path() == "/pods" {
                        http::Response::new(http_body_util::Full::new(Bytes::from(body)))
                    } else {
                        let mut r = http::Response::new(http_body_util::Full::new(
                            Bytes::from_static(b"no"),
                        ));
                        *r.status_mut() = http::StatusCode::UNAUTHORIZED;
                        r
                    };
                    Ok::<_, std::convert::Infallible>(resp)
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
        let dir = tempfile::tempdir().unwrap();
        let token = dir.path().join("token");
        std::fs::write(&token, "s3cret\n").unwrap();
        let cfg = KubeletConfig {
            enabled: true,
            endpoint: Some(format!("http://{addr}/pods")),
            token_file: Some(token.clone()),
            ca_file: None,
            refresh: HumanDuration(Duration::from_secs(30)),
        };
        let client = KubeletClient::new(&cfg, &[]).unwrap();
        let (containers, pods) = client.fetch().await.unwrap();
        assert_eq!((containers.len(), pods.len()), (2, 2));
        server.abort();

        std::fs::remove_file(&token).unwrap();
        let e = client.fetch().await.unwrap_err().to_string();
        assert!(
            e.contains("token") && e.contains(&token.display().to_string()),
            "{e}"
        );
    }
}
