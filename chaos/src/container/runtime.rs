//! Where a fault's containers live, and the few calls made on them: a CRI runtime
//! (containerd, CRI-O) through the crate's one CRI client ([`crate::cri::CriClient`]), or a
//! Docker Engine API (Docker itself, or podman's `podman system service` socket) through
//! the crate's one Engine client ([`crate::docker::Docker`]).
//!
//! Which runtime: the sockets a spec names (`--cri-socket`, `--docker-socket`), else the
//! CRI socket that exists ([`crate::cri::detect`]), else the Docker socket. A lookup asks
//! them in that order and takes the first that answers (a listing) or that knows the
//! container (`--container ID`), so a Docker host that also runs a containerd without its
//! CRI plugin still works.
//!
//! Each call runs on a small runtime of its own in a scoped thread ([`block_on`]): the
//! [`crate::Fault`] methods are blocking and may run inside or outside a tokio runtime.
//!
//! Not here: what a fault does with a container, and the freezer (`freezer.rs`).

use std::collections::BTreeMap;
use std::fmt;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::cri::{self, CriClient, proto};
use crate::docker::{self, ContainerInfo, Docker, DockerError};
use crate::error::FaultError;
use crate::fault::PodRef;
use crate::select::{Candidate, RuntimeSockets};

/// The label keys the kubelet puts on every container it creates (CRI runtimes, and
/// cri-dockerd on Docker).
const POD_NAME: &str = "io.kubernetes.pod.name";
const POD_NAMESPACE: &str = "io.kubernetes.pod.namespace";
const POD_UID: &str = "io.kubernetes.pod.uid";
const CONTAINER_NAME: &str = "io.kubernetes.container.name";

/// Which API a runtime speaks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RuntimeKind {
    /// The Docker Engine API (Docker, podman's compat socket).
    #[default]
    Engine,
    /// The Kubernetes CRI (`runtime.v1`: containerd, CRI-O).
    Cri,
}

/// One runtime: its API and socket.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Runtime {
    /// Its API.
    pub kind: RuntimeKind,
    /// Its socket.
    pub socket: PathBuf,
}

impl fmt::Display for Runtime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            RuntimeKind::Cri => write!(f, "the CRI runtime at {}", self.socket.display()),
            RuntimeKind::Engine => {
                write!(f, "the Docker Engine API at {}", self.socket.display())
            }
        }
    }
}

/// What a runtime says about a container now.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Seen {
    /// Running (also while the Engine says paused).
    pub running: bool,
    /// Paused through the Engine API (the CRI has no pause).
    pub paused: bool,
    /// For messages: `running`, `exited (exit code 137)`, `paused`…
    pub status: String,
    /// When it last started, as the runtime writes it (Engine API only; empty on CRI).
    pub started_at: String,
}

/// A container found on a runtime.
#[derive(Clone, Debug, PartialEq)]
pub struct Found {
    /// Where.
    pub runtime: Runtime,
    /// Id, name, pod and labels.
    pub candidate: Candidate,
    /// Its main process on the host, when the runtime says (the Engine API does).
    pub main_pid: Option<i32>,
    /// Its state when found.
    pub seen: Seen,
}

impl AsRef<Candidate> for Found {
    fn as_ref(&self) -> &Candidate {
        &self.candidate
    }
}

/// Runs a runtime call from a blocking [`crate::Fault`] method, on a current-thread
/// runtime of its own in a scoped thread (safe whether or not the caller is inside a tokio
/// runtime; the thread and the runtime end with the call, and so does any task a client
/// started on it).
pub fn block_on<T: Send>(
    fut: impl std::future::Future<Output = Result<T, FaultError>> + Send,
) -> Result<T, FaultError> {
    std::thread::scope(|s| {
        s.spawn(|| {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| {
                    FaultError::Other(format!(
                        "cannot start a runtime for the container runtime client: {e}"
                    ))
                })?;
            rt.block_on(fut)
        })
        .join()
        .unwrap_or_else(|_| {
            Err(FaultError::Other(
                "the container runtime client's thread panicked".into(),
            ))
        })
    })
}

fn is_socket(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.file_type().is_socket())
}

/// The runtimes to ask, in order: the sockets the spec gives; else the CRI socket and then
/// the Docker socket that exist — each at the engine's `defaults` (the agent's config) when
/// set, else at its standard path.
fn candidates(
    kind: &'static str,
    spec: &RuntimeSockets,
    defaults: &RuntimeSockets,
) -> Result<Vec<Runtime>, FaultError> {
    let mut out = Vec::new();
    if let Some(socket) = &spec.cri {
        out.push(Runtime {
            kind: RuntimeKind::Cri,
            socket: socket.clone(),
        });
    }
    if let Some(socket) = &spec.docker {
        out.push(Runtime {
            kind: RuntimeKind::Engine,
            socket: socket.clone(),
        });
    }
    if !out.is_empty() {
        return Ok(out);
    }
    let cri = match &defaults.cri {
        Some(socket) => is_socket(socket).then(|| socket.clone()),
        None => cri::detect(),
    };
    if let Some(socket) = cri {
        out.push(Runtime {
            kind: RuntimeKind::Cri,
            socket,
        });
    }
    let docker = defaults
        .docker
        .clone()
        .unwrap_or_else(|| PathBuf::from(docker::DEFAULT_SOCKET));
    if is_socket(&docker) {
        out.push(Runtime {
            kind: RuntimeKind::Engine,
            socket: docker.clone(),
        });
    }
    if out.is_empty() {
        let mut tried: Vec<String> = match &defaults.cri {
            Some(s) => vec![s.display().to_string()],
            None => cri::DEFAULT_SOCKETS
                .iter()
                .map(|s| (*s).to_owned())
                .collect(),
        };
        tried.push(docker.display().to_string());
        return Err(FaultError::Unsupported {
            kind,
            message: format!(
                "no container runtime socket here (tried {}); give --cri-socket or --docker-socket",
                tried.join(", ")
            ),
        });
    }
    Ok(out)
}

/// The running containers of the first runtime that answers.
///
/// # Errors
/// [`FaultError::Unsupported`] when none answers, naming each and why.
pub fn list_running(
    kind: &'static str,
    r: &RuntimeSockets,
    defaults: &RuntimeSockets,
) -> Result<(Runtime, Vec<Found>), FaultError> {
    let mut failures = Vec::new();
    for rt in candidates(kind, r, defaults)? {
        match block_on(list_on(kind, &rt)) {
            Ok(found) => return Ok((rt, found)),
            Err(e) => failures.push(e.to_string()),
        }
    }
    Err(FaultError::Unsupported {
        kind,
        message: format!("no container runtime answered: {}", failures.join("; ")),
    })
}

/// The container `reference` (an id, a unique id prefix, or on the Engine API a name) on the
/// first runtime that knows it.
///
/// # Errors
/// [`FaultError::NoTarget`] (`no container "…"`) when the runtimes that answered do not know
/// it; [`FaultError::Unsupported`] when none answered.
pub fn find(
    kind: &'static str,
    r: &RuntimeSockets,
    defaults: &RuntimeSockets,
    reference: &str,
) -> Result<Found, FaultError> {
    let mut asked = Vec::new();
    let mut failures = Vec::new();
    for rt in candidates(kind, r, defaults)? {
        match block_on(find_on(kind, &rt, reference)) {
            Ok(Some(found)) => return Ok(found),
            Ok(None) => asked.push(rt.to_string()),
            Err(e) => failures.push(e.to_string()),
        }
    }
    if asked.is_empty() {
        return Err(FaultError::Unsupported {
            kind,
            message: format!("no container runtime answered: {}", failures.join("; ")),
        });
    }
    let hint = if reference.bytes().all(|b| b.is_ascii_hexdigit()) {
        ""
    } else {
        " (on a CRI runtime, name containers with --namespace, --pod and --container-name)"
    };
    Err(FaultError::NoTarget {
        kind,
        message: format!("no container {reference:?} on {}{hint}", asked.join(" or ")),
    })
}

fn engine_error(kind: &'static str, e: DockerError) -> FaultError {
    match e {
        DockerError::Connect { .. } => FaultError::Unsupported {
            kind,
            message: e.to_string(),
        },
        other => FaultError::Other(format!("{kind}: {other}")),
    }
}

async fn connect(kind: &'static str, rt: &Runtime) -> Result<CriClient, FaultError> {
    CriClient::connect(&rt.socket)
        .await
        .map_err(|e| FaultError::Unsupported {
            kind,
            message: e.to_string(),
        })
}

async fn list_on(kind: &'static str, rt: &Runtime) -> Result<Vec<Found>, FaultError> {
    match rt.kind {
        RuntimeKind::Cri => {
            let client = connect(kind, rt).await?;
            let running = proto::ContainerFilter {
                state: Some(proto::ContainerStateValue {
                    state: proto::ContainerState::ContainerRunning.into(),
                }),
                ..Default::default()
            };
            let listed = client
                .list_pod_containers(Some(running))
                .await
                .map_err(|e| FaultError::Other(format!("{kind}: {e}")))?;
            Ok(listed.into_iter().map(|c| cri_found(rt, c)).collect())
        }
        RuntimeKind::Engine => {
            let engine = Docker::new(&rt.socket);
            let ids = engine
                .list_running()
                .await
                .map_err(|e| engine_error(kind, e))?;
            let mut out = Vec::new();
            for id in ids {
                match engine.inspect(&id).await {
                    Ok(info) if info.state.running => out.push(engine_found(rt, &info)),
                    Ok(_) => {}
                    // Removed between the listing and the inspect.
                    Err(e) if e.status() == Some(404) => {}
                    Err(e) => return Err(engine_error(kind, e)),
                }
            }
            Ok(out)
        }
    }
}

async fn find_on(
    kind: &'static str,
    rt: &Runtime,
    reference: &str,
) -> Result<Option<Found>, FaultError> {
    match rt.kind {
        RuntimeKind::Cri => {
            let client = connect(kind, rt).await?;
            let all = client
                .list_pod_containers(None)
                .await
                .map_err(|e| FaultError::Other(format!("{kind}: {e}")))?;
            let want = reference.to_ascii_lowercase();
            let mut hits: Vec<_> = all
                .into_iter()
                .filter(|c| c.id.starts_with(&want))
                .collect();
            match hits.len() {
                0 => Ok(None),
                1 => Ok(hits.pop().map(|c| cri_found(rt, c))),
                n => Err(FaultError::Invalid {
                    kind,
                    message: format!(
                        "--container {reference:?} is the start of {n} container ids on {rt}; give more of it"
                    ),
                }),
            }
        }
        RuntimeKind::Engine => match Docker::new(&rt.socket).inspect(reference).await {
            Ok(info) => Ok(Some(engine_found(rt, &info))),
            Err(e) if e.status() == Some(404) => Ok(None),
            Err(e) => Err(engine_error(kind, e)),
        },
    }
}

fn cri_found(rt: &Runtime, c: cri::PodContainer) -> Found {
    let running = c.state == proto::ContainerState::ContainerRunning;
    let mut labels: BTreeMap<String, String> = c.labels.into_iter().collect();
    let pod = c.pod.map(|p| {
        // The pod's labels win over the container's (the sandbox carries the pod's own).
        labels.extend(p.labels);
        PodRef {
            namespace: p.namespace,
            name: p.name,
            uid: p.uid,
        }
    });
    Found {
        runtime: rt.clone(),
        candidate: Candidate {
            id: c.id,
            name: c.name,
            pod,
            labels,
        },
        main_pid: None,
        seen: Seen {
            running,
            paused: false,
            status: cri_state_name(c.state).to_owned(),
            started_at: String::new(),
        },
    }
}

/// The pod an Engine-API container belongs to, from the kubelet's `io.kubernetes.pod.*`
/// labels (a dockershim or podman-in-Kubernetes node); `None` without them.
pub(crate) fn pod_of(info: &ContainerInfo) -> Option<PodRef> {
    let labels = info.config.labels.as_ref()?;
    match (labels.get(POD_NAMESPACE), labels.get(POD_NAME)) {
        (Some(namespace), Some(name)) => Some(PodRef {
            namespace: namespace.clone(),
            name: name.clone(),
            uid: labels.get(POD_UID).cloned().unwrap_or_default(),
        }),
        _ => None,
    }
}

fn engine_found(rt: &Runtime, info: &ContainerInfo) -> Found {
    let labels = info.config.labels.clone().unwrap_or_default();
    let pod = pod_of(info);
    let name = labels
        .get(CONTAINER_NAME)
        .filter(|_| pod.is_some())
        .cloned()
        .unwrap_or_else(|| info.short_name().to_owned());
    Found {
        runtime: rt.clone(),
        candidate: Candidate {
            id: info.id.clone(),
            name,
            pod,
            labels,
        },
        main_pid: i32::try_from(info.state.pid).ok().filter(|p| *p > 0),
        seen: engine_seen(info),
    }
}

fn engine_seen(info: &ContainerInfo) -> Seen {
    Seen {
        running: info.state.running,
        paused: info.state.paused,
        status: info.state.status.clone(),
        started_at: info.state.started_at.clone(),
    }
}

fn cri_state_name(state: proto::ContainerState) -> &'static str {
    match state {
        proto::ContainerState::ContainerCreated => "created",
        proto::ContainerState::ContainerRunning => "running",
        proto::ContainerState::ContainerExited => "exited",
        proto::ContainerState::ContainerUnknown => "unknown",
    }
}

impl Runtime {
    /// What the runtime says about container `id` now; `None` when it no longer knows it.
    pub fn observe(&self, kind: &'static str, id: &str) -> Result<Option<Seen>, FaultError> {
        block_on(async {
            match self.kind {
                RuntimeKind::Cri => {
                    let client = connect(kind, self).await?;
                    let status = match client.container_status(id).await {
                        Ok(s) => s,
                        Err(e) if e.is_not_found() => return Ok(None),
                        Err(e) => return Err(FaultError::Other(format!("{kind}: {e}"))),
                    };
                    let state = status.state();
                    let mut text = cri_state_name(state).to_owned();
                    if state == proto::ContainerState::ContainerExited {
                        text.push_str(&format!(" (exit code {}", status.exit_code));
                        if !status.reason.is_empty() {
                            text.push_str(&format!(", {}", status.reason));
                        }
                        text.push(')');
                    }
                    Ok(Some(Seen {
                        running: state == proto::ContainerState::ContainerRunning,
                        paused: false,
                        status: text,
                        started_at: String::new(),
                    }))
                }
                RuntimeKind::Engine => match Docker::new(&self.socket).inspect(id).await {
                    Ok(info) => Ok(Some(engine_seen(&info))),
                    Err(e) if e.status() == Some(404) => Ok(None),
                    Err(e) => Err(engine_error(kind, e)),
                },
            }
        })
    }

    /// CRI `StopContainer` with `grace` (zero: SIGKILL at once).
    pub fn cri_stop(
        &self,
        kind: &'static str,
        id: &str,
        grace: Duration,
    ) -> Result<(), FaultError> {
        block_on(async {
            let client = connect(kind, self).await?;
            client
                .stop_container(id, grace)
                .await
                .map_err(|e| FaultError::Other(format!("{kind}: {e}")))
        })
    }

    /// `POST /containers/{id}/{verb}{query}` on the Engine API; `extra` is added to the
    /// call's time limit (a stop's grace period).
    pub fn engine_post(
        &self,
        kind: &'static str,
        id: &str,
        verb: &str,
        query: &str,
        extra: Duration,
    ) -> Result<(), FaultError> {
        block_on(async {
            Docker::new(&self.socket)
                .post(id, verb, query, extra)
                .await
                .map_err(|e| engine_error(kind, e))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn engine_containers_of_kubernetes_pods_carry_their_pod() {
        let rt = Runtime {
            kind: RuntimeKind::Engine,
            socket: "/x.sock".into(),
        };
        let mut info = ContainerInfo {
            id: "c".repeat(64),
            name: "/k8s_app_web-1_shop_uid_0".into(),
            ..ContainerInfo::default()
        };
        info.state.pid = 42;
        info.config.labels = Some(BTreeMap::from([
            (POD_NAMESPACE.to_owned(), "shop".to_owned()),
            (POD_NAME.to_owned(), "web-1".to_owned()),
            (CONTAINER_NAME.to_owned(), "app".to_owned()),
            ("app".to_owned(), "web".to_owned()),
        ]));
        let f = engine_found(&rt, &info);
        assert_eq!(f.candidate.name, "app");
        assert_eq!(f.candidate.pod.as_ref().unwrap().to_string(), "shop/web-1");
        assert_eq!(f.main_pid, Some(42));
        // A plain Docker container keeps its Docker name and has no pod.
        info.config.labels = Some(BTreeMap::from([(
            CONTAINER_NAME.to_owned(),
            "app".to_owned(),
        )]));
        let f = engine_found(&rt, &info);
        assert_eq!(f.candidate.name, "k8s_app_web-1_shop_uid_0");
        assert_eq!(f.candidate.pod, None);
    }

    #[test]
    fn sockets_come_from_the_spec_then_the_config_cri_first() {
        let r = RuntimeSockets {
            cri: Some("/c.sock".into()),
            docker: Some("/d.sock".into()),
        };
        let got = candidates("container-pause", &r, &RuntimeSockets::default()).unwrap();
        assert_eq!(got[0].kind, RuntimeKind::Cri);
        assert_eq!(got[1].kind, RuntimeKind::Engine);
        let e = block_on(find_on("container-pause", &got[0], "abc")).unwrap_err();
        assert!(e.to_string().contains("/c.sock"), "{e}");
        // Without sockets in the spec, the engine's defaults (the agent's config) are where
        // the runtimes are looked for; one that is not there is not asked.
        let dir = tempfile::tempdir().unwrap();
        let docker = dir.path().join("docker.sock");
        let _listener = std::os::unix::net::UnixListener::bind(&docker).unwrap();
        let defaults = RuntimeSockets {
            cri: Some(dir.path().join("no-containerd.sock")),
            docker: Some(docker.clone()),
        };
        let got = candidates("container-pause", &RuntimeSockets::default(), &defaults).unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(
            (got[0].kind, got[0].socket.as_path()),
            (RuntimeKind::Engine, docker.as_path())
        );
        let nothing = RuntimeSockets {
            cri: Some(dir.path().join("a.sock")),
            docker: Some(dir.path().join("b.sock")),
        };
        let e = candidates("container-pause", &RuntimeSockets::default(), &nothing).unwrap_err();
        assert!(
            e.to_string().contains("a.sock") && e.to_string().contains("b.sock"),
            "{e}"
        );
    }
}
