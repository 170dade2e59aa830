//! Kubernetes names from the node's CRI runtime (containerd, CRI-O), through the chaos
//! crate's CRI client ([`faultline_chaos::cri`], which also serves the container faults).
//!
//! The runtime knows every pod and container it runs, so no kubelet, token or RBAC grant is
//! needed: only its socket. [`run`] connects once (the client's channel redials by itself
//! when the runtime restarts), then lists every `refresh`: `ListPodSandbox` and
//! `ListContainers`, two calls that answer for the whole node, joined by
//! [`faultline_chaos::cri::join_pods`]. A container the collector finds before the next
//! listing is asked about early, at most once per [`MIN_INTERVAL`]. Nothing is listed on the
//! collection thread: the task runs on the metadata worker's thread.
//!
//! The only per-container call is `ContainerStatus`, and only for a container listed by image
//! ID rather than name (the kubelet creates containers from the image ID it pulled; the
//! runtime's status names the image by its tag). Its answer is kept while the container runs,
//! so a container costs that call once in its life.
//!
//! What becomes of the runtime's answers is pure ([`container_meta`], [`sandbox_meta`],
//! [`runtime_of`]) and tested on hand-made CRI messages: the pod's name, namespace and uid,
//! the container's name in its pod, the image (as `container.image.name` and its tag), the
//! runtime's name from its `Version` answer (`container.runtime.name`: `containerd`, `cri-o`)
//! and the pod labels that pass the configured allowlist. Pod sandboxes (their pause
//! process has a cgroup too) get their pod's names.
//!
//! Which socket: `containers.cri.socket`, or the first default one that exists when the agent
//! starts ([`faultline_chaos::cri::detect`]). A default socket that is not a CRI runtime
//! (Docker's own containerd has its CRI plugin disabled) is logged at info level and left
//! alone; a configured one that does not answer is retried, warned about once and then
//! summarised at most once a minute (`faultline_exporters::repeat`).

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use faultline_chaos::cri::proto::{ContainerState, PodSandbox};
use faultline_chaos::cri::{CallError, ConnectError, CriClient, PodContainer, join_pods};
use faultline_exporters::repeat::{self, Failure, Repeated};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::ContainerConfig;
use super::docker::{is_image_id, split_image};
use super::metadata::{ContainerMeta, FirstAttempt, K8sMeta, MetadataCache, next_poll};
use super::paths::Runtime;

/// Shortest time between two listings, however often the collector asks.
pub const MIN_INTERVAL: Duration = Duration::from_secs(1);
/// First and largest delay between two connection attempts.
const BACKOFF: (Duration, Duration) = (Duration::from_secs(1), Duration::from_secs(30));

/// What the CRI task needs.
#[derive(Clone, Debug)]
pub struct CriSettings {
    /// The runtime's socket.
    pub socket: PathBuf,
    /// Whether the socket was configured (`containers.cri.socket`) rather than found among
    /// the defaults.
    pub configured: bool,
    /// How often the containers are listed.
    pub refresh: Duration,
    /// Label keys that become `container.label.<key>` attributes.
    pub labels: Vec<String>,
}

impl CriSettings {
    /// From the containers configuration: `None` when CRI metadata is off, or when no socket
    /// is configured and none of the default ones exists (a `stat` per candidate, once, at
    /// start).
    /// `rootfs` is the node's `/` as the agent sees it (`/host/root` in the DaemonSet).
    pub fn from_config(cfg: &ContainerConfig, rootfs: &std::path::Path) -> Option<Self> {
        if !cfg.cri.enabled {
            return None;
        }
        let (socket, configured) = match &cfg.cri.socket {
            Some(socket) => (socket.clone(), true),
            None => {
                let Some(found) = faultline_chaos::cri::detect_under(rootfs) else {
                    debug!("no CRI socket at the default paths: no CRI metadata");
                    return None;
                };
                (found, false)
            }
        };
        Some(Self {
            socket,
            configured,
            refresh: cfg.cri.refresh.0,
            labels: cfg.labels.clone(),
        })
    }
}

// ---------------------------------------------------------------------------------------
// Pure: the runtime's answers → metadata.

/// The runtime as `container.runtime.name` spells it, from the `runtime_name` of its
/// `Version` answer; `None` for a runtime this collector does not know by name.
pub fn runtime_of(runtime_name: &str) -> Option<Runtime> {
    match runtime_name {
        "containerd" => Some(Runtime::Containerd),
        "cri-o" => Some(Runtime::CriO),
        "docker" => Some(Runtime::Docker),
        _ => None,
    }
}

/// The allowlisted keys of `labels` (then of `more`, for keys `labels` lacks), as pairs.
fn allowed(
    allowlist: &[String],
    labels: &HashMap<String, String>,
    more: &HashMap<String, String>,
) -> Vec<(String, String)> {
    allowlist
        .iter()
        .filter_map(|k| {
            labels
                .get(k)
                .or_else(|| more.get(k))
                .map(|v| (k.clone(), v.clone()))
        })
        .collect()
}

/// A non-empty value.
fn some(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_owned())
}

/// A listed container's metadata. `image` is its image's name: the listing's, or the one its
/// status gave when the listing had only an ID (`None`: no name known). The pod comes from
/// the container's sandbox; a container whose sandbox was not listed (removed in between)
/// falls back to the identity labels the kubelet puts on every container. `labels` is the
/// allowlist, looked up in the pod's labels, then in the container's.
pub fn container_meta(
    c: &PodContainer,
    image: Option<&str>,
    runtime: Option<Runtime>,
    labels: &[String],
) -> ContainerMeta {
    let label = |k: &str| c.labels.get(k).and_then(|v| some(v));
    let no_labels = HashMap::new();
    let pod_labels = c.pod.as_ref().map_or(&no_labels, |p| &p.labels);
    let (image_name, image_tags) = match image {
        Some(reference) => {
            let (name, tags) = split_image(reference);
            (Some(name), tags)
        }
        None => (None, Vec::new()),
    };
    ContainerMeta {
        name: some(&c.name),
        image_name,
        image_tags,
        runtime,
        labels: allowed(labels, pod_labels, &c.labels),
        k8s: K8sMeta {
            pod_name: c
                .pod
                .as_ref()
                .and_then(|p| some(&p.name))
                .or_else(|| label("io.kubernetes.pod.name")),
            pod_uid: c
                .pod
                .as_ref()
                .and_then(|p| some(&p.uid))
                .or_else(|| label("io.kubernetes.pod.uid")),
            namespace: c
                .pod
                .as_ref()
                .and_then(|p| some(&p.namespace))
                .or_else(|| label("io.kubernetes.pod.namespace")),
            container_name: some(&c.name).or_else(|| label("io.kubernetes.container.name")),
        },
    }
}

/// A pod sandbox's metadata (for the cgroup of its pause process, whose ID is the
/// sandbox's): its pod's names and allowlisted labels, no container name or image.
pub fn sandbox_meta(p: &PodSandbox, runtime: Option<Runtime>, labels: &[String]) -> ContainerMeta {
    let metadata = p.metadata.clone().unwrap_or_default();
    ContainerMeta {
        name: None,
        image_name: None,
        image_tags: Vec::new(),
        runtime,
        labels: allowed(labels, &p.labels, &HashMap::new()),
        k8s: K8sMeta {
            pod_name: some(&metadata.name),
            pod_uid: some(&metadata.uid),
            namespace: some(&metadata.namespace),
            container_name: None,
        },
    }
}

/// The image name a listing gave, unless it is empty or an image ID.
fn image_name(reference: &str) -> Option<&str> {
    (!reference.is_empty() && !is_image_id(reference)).then_some(reference)
}

// ---------------------------------------------------------------------------------------
// Listing.

/// A connected runtime and what the task keeps between listings: one listing is
/// [`CriLister::list`] (also what the metadata bench measures).
#[derive(Debug)]
pub struct CriLister {
    client: CriClient,
    runtime: Option<Runtime>,
    labels: Vec<String>,
    /// Image names that `ContainerStatus` gave for containers listed by image ID, by
    /// container ID, kept while the container is listed.
    resolved: HashMap<String, Option<String>>,
}

impl CriLister {
    /// Connects to the runtime at `socket`; `labels` is the allowlist.
    ///
    /// # Errors
    /// [`ConnectError`], naming the socket.
    pub async fn connect(
        socket: &std::path::Path,
        labels: Vec<String>,
    ) -> Result<Self, ConnectError> {
        Ok(Self::new(CriClient::connect(socket).await?, labels))
    }

    fn new(client: CriClient, labels: Vec<String>) -> Self {
        let runtime = runtime_of(&client.runtime().runtime_name);
        Self {
            client,
            runtime,
            labels,
            resolved: HashMap::new(),
        }
    }

    /// Every pod sandbox and every container not exited, with its metadata. Created and
    /// not-ready ones count: their cgroup is there before the runtime calls them running or
    /// ready, and the collector may meet it then. (The CRI filters by one state only; the few
    /// exited containers the kubelet keeps are skipped here instead.)
    ///
    /// # Errors
    /// The first failed list call.
    pub async fn list(&mut self) -> Result<Vec<(String, ContainerMeta)>, CallError> {
        let (sandboxes, containers) = tokio::try_join!(
            self.client.list_pod_sandboxes(None),
            self.client.list_containers(None)
        )?;
        let mut joined = join_pods(&sandboxes, &containers);
        joined.retain(|c| c.state != ContainerState::ContainerExited);
        let listed: HashSet<&str> = joined.iter().map(|c| c.id.as_str()).collect();
        self.resolved.retain(|id, _| listed.contains(id.as_str()));
        let mut out = Vec::with_capacity(sandboxes.len() + joined.len());
        for p in &sandboxes {
            out.push((p.id.clone(), sandbox_meta(p, self.runtime, &self.labels)));
        }
        for c in &joined {
            let image = match image_name(&c.image) {
                Some(name) => Some(name.to_owned()),
                None => self.status_image(&c.id).await,
            };
            let meta = container_meta(c, image.as_deref(), self.runtime, &self.labels);
            out.push((c.id.clone(), meta));
        }
        Ok(out)
    }

    /// The image name of container `id` from its status, asked once per container. A failed
    /// call is not kept (the next listing asks again); the container is named all the same,
    /// without its image.
    async fn status_image(&mut self, id: &str) -> Option<String> {
        if let Some(known) = self.resolved.get(id) {
            return known.clone();
        }
        match self.client.container_status(id).await {
            Ok(status) => {
                let spec = status.image.unwrap_or_default();
                let name = image_name(&spec.user_specified_image)
                    .or_else(|| image_name(&spec.image))
                    .map(str::to_owned);
                self.resolved.insert(id.to_owned(), name.clone());
                name
            }
            Err(e) => {
                debug!(error = %e, "no image name for a container listed by image ID");
                None
            }
        }
    }
}

/// Connects, retrying with backoff until the runtime answers; `None` when cancelled, or when
/// the socket found among the defaults is not a CRI runtime (logged at info level).
async fn connect(
    s: &CriSettings,
    first: &mut FirstAttempt,
    cancel: &CancellationToken,
) -> Option<CriLister> {
    let mut delay = BACKOFF.0;
    let mut outage = Repeated::default();
    loop {
        let attempt = cancel
            .run_until_cancelled(CriClient::connect(&s.socket))
            .await?;
        match attempt {
            Ok(client) => {
                if outage.succeeded().is_some() {
                    info!(socket = %s.socket.display(), "CRI runtime reachable again; container metadata restored");
                }
                let version = client.runtime();
                debug!(
                    runtime = %version.runtime_name,
                    version = %version.runtime_version,
                    "CRI runtime connected"
                );
                return Some(CriLister::new(client, s.labels.clone()));
            }
            Err(e @ ConnectError::NotCri { .. }) if !s.configured => {
                info!(error = %e, "no CRI metadata from this socket (found at a default path, but not a CRI runtime: Docker's containerd has its CRI plugin disabled); set containers.cri.socket if the runtime listens elsewhere");
                return None;
            }
            Err(e) => match outage.failed() {
                Failure::First => {
                    warn!(error = %e, "no CRI metadata: containers are reported by ID and pod UID until the runtime answers (retrying in the background; a summary follows at most once a minute)")
                }
                Failure::Summary { attempts, lasting } => {
                    warn!(error = %e, "CRI runtime still unreachable after {}: {attempts} attempts", repeat::human(lasting))
                }
                Failure::Quiet => debug!(error = %e, "CRI runtime still unreachable"),
            },
        }
        first.done();
        cancel
            .run_until_cancelled(tokio::time::sleep(delay))
            .await?;
        delay = (delay * 2).min(BACKOFF.1);
    }
}

/// The CRI task: connect, then list every `refresh` (or early when the collector asks) until
/// cancelled. Logs a failing runtime once, a summary at most once a minute, and its recovery.
pub async fn run(
    s: CriSettings,
    cache: Arc<MetadataCache>,
    mut early: mpsc::Receiver<()>,
    mut first: FirstAttempt,
    cancel: CancellationToken,
) {
    let Some(mut lister) = connect(&s, &mut first, &cancel).await else {
        return;
    };
    let mut outage = Repeated::default();
    loop {
        let Some(listing) = cancel.run_until_cancelled(lister.list()).await else {
            return;
        };
        match listing {
            Ok(all) => {
                if outage.succeeded().is_some() {
                    info!(socket = %s.socket.display(), "CRI runtime answers again; container metadata restored");
                }
                debug!(entries = all.len(), "CRI pods and containers listed");
                cache.cri_replace(all);
            }
            Err(e) => {
                cache.set_cri_failing();
                match outage.failed() {
                    Failure::First => {
                        warn!(error = %e, "CRI listing failed: new containers are reported by ID until it succeeds (retrying; a summary follows at most once a minute)")
                    }
                    Failure::Summary { attempts, lasting } => {
                        warn!(error = %e, "CRI listing still failing after {}: {attempts} attempts", repeat::human(lasting))
                    }
                    Failure::Quiet => debug!(error = %e, "CRI listing still failing"),
                }
            }
        }
        first.done();
        if !next_poll(&cancel, &mut early, MIN_INTERVAL, s.refresh).await {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use faultline_chaos::cri::PodIdentity;
    use faultline_chaos::cri::proto::PodSandboxMetadata;

    const UID: &str = "0f1e2d3c-4b5a-6978-8a9b-acbdcedf0011";

    fn pod_labels() -> HashMap<String, String> {
        HashMap::from([
            ("app".to_owned(), "web".to_owned()),
            ("tier".to_owned(), "front".to_owned()),
            ("io.kubernetes.pod.name".to_owned(), "web-7d9".to_owned()),
        ])
    }

    fn container(pod: Option<PodIdentity>) -> PodContainer {
        PodContainer {
            id: "c".repeat(64),
            name: "app".into(),
            image: "docker.io/library/nginx:1.25".into(),
            state: ContainerState::ContainerRunning,
            labels: HashMap::from([
                ("io.kubernetes.pod.name".to_owned(), "web-7d9".to_owned()),
                ("io.kubernetes.pod.namespace".to_owned(), "shop".to_owned()),
                ("io.kubernetes.pod.uid".to_owned(), UID.to_owned()),
                ("io.kubernetes.container.name".to_owned(), "app".to_owned()),
                ("build".to_owned(), "42".to_owned()),
            ]),
            pod,
        }
    }

    fn identity() -> PodIdentity {
        PodIdentity {
            sandbox_id: "s".repeat(64),
            name: "web-7d9".into(),
            namespace: "shop".into(),
            uid: UID.into(),
            labels: pod_labels(),
        }
    }

    #[test]
    fn a_container_gets_its_pods_names_its_image_and_allowlisted_labels() {
        let c = container(Some(identity()));
        let allow = ["app".to_owned(), "build".to_owned(), "absent".to_owned()];
        let m = container_meta(&c, image_name(&c.image), Some(Runtime::Containerd), &allow);
        assert_eq!(m.name.as_deref(), Some("app"));
        assert_eq!(m.image_name.as_deref(), Some("docker.io/library/nginx"));
        assert_eq!(m.image_tags, vec!["1.25".to_owned()]);
        assert_eq!(m.runtime, Some(Runtime::Containerd));
        assert_eq!(m.k8s.pod_name.as_deref(), Some("web-7d9"));
        assert_eq!(m.k8s.namespace.as_deref(), Some("shop"));
        assert_eq!(m.k8s.pod_uid.as_deref(), Some(UID));
        assert_eq!(m.k8s.container_name.as_deref(), Some("app"));
        // The pod's `app`, the container's own `build`; `tier` and the identity labels are
        // not on the allowlist.
        assert_eq!(
            m.labels,
            vec![
                ("app".to_owned(), "web".to_owned()),
                ("build".to_owned(), "42".to_owned())
            ]
        );
    }

    #[test]
    fn without_its_sandbox_a_container_is_named_from_its_identity_labels() {
        let c = container(None);
        let m = container_meta(&c, None, None, &["app".to_owned()]);
        assert_eq!(m.k8s.pod_name.as_deref(), Some("web-7d9"));
        assert_eq!(m.k8s.namespace.as_deref(), Some("shop"));
        assert_eq!(m.k8s.pod_uid.as_deref(), Some(UID));
        assert_eq!(m.image_name, None);
        assert!(m.labels.is_empty(), "{:?}", m.labels);
    }

    #[test]
    fn image_ids_are_not_names() {
        assert_eq!(image_name(&format!("sha256:{}", "a".repeat(64))), None);
        assert_eq!(image_name(&"a".repeat(64)), None);
        assert_eq!(image_name(""), None);
        assert_eq!(
            image_name("registry:5000/app:1"),
            Some("registry:5000/app:1")
        );
    }

    #[test]
    fn a_sandbox_gets_its_pods_names_and_labels() {
        let p = PodSandbox {
            id: "s".repeat(64),
            metadata: Some(PodSandboxMetadata {
                name: "web-7d9".into(),
                uid: UID.into(),
                namespace: "shop".into(),
                attempt: 0,
            }),
            labels: pod_labels(),
            ..PodSandbox::default()
        };
        let m = sandbox_meta(&p, Some(Runtime::CriO), &["app".to_owned()]);
        assert_eq!(m.name, None);
        assert_eq!(m.k8s.pod_name.as_deref(), Some("web-7d9"));
        assert_eq!(m.k8s.container_name, None);
        assert_eq!(m.runtime, Some(Runtime::CriO));
        assert_eq!(m.labels, vec![("app".to_owned(), "web".to_owned())]);
    }

    #[test]
    fn runtime_names_map_to_the_attribute_values() {
        assert_eq!(runtime_of("containerd"), Some(Runtime::Containerd));
        assert_eq!(runtime_of("cri-o"), Some(Runtime::CriO));
        assert_eq!(runtime_of("docker"), Some(Runtime::Docker));
        assert_eq!(runtime_of("something-else"), None);
    }
}
