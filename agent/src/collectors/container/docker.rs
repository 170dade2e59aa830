//! Docker Engine metadata over its unix socket (hyper 1 on a tokio `UnixStream`).
//!
//! [`run`] keeps the [`MetadataCache`]'s Docker entries current without listing every cycle:
//! it opens the `/events` stream (container events only) first, then lists the running
//! containers and inspects each once, then applies events as they come: `start`, `rename` and
//! `update` re-inspect one container, `destroy` forgets it. When the stream ends or the socket
//! is unreachable, it waits (1 s doubling to 30 s) and starts over with a fresh listing, so
//! nothing missed in between stays wrong. The collector may also ask for one container it has
//! found in the cgroup tree before its start event arrived.
//!
//! Parsing is pure ([`parse_inspect`], [`parse_list`], [`parse_event`], [`split_image`]) and
//! tested on JSON as Docker sends it. `io.kubernetes.*` labels (dockershim-era Kubernetes
//! nodes) become the `k8s.*` names; other labels pass only through the configured allowlist.
//!
//! Not here: stats. Docker's stats endpoint reads the same cgroup files the collector reads
//! directly, at a much higher cost per container.

use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use tokio::net::UnixStream;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use super::ContainerConfig;
use super::metadata::{ContainerMeta, FirstAttempt, K8sMeta, MetadataCache};
use super::paths::Runtime;

/// Longest a single request (not the event stream) may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// First and largest reconnect delay.
const BACKOFF: (Duration, Duration) = (Duration::from_secs(1), Duration::from_secs(30));
/// `filters={"type":["container"]}`, URL-encoded.
const EVENTS_PATH: &str = "/events?filters=%7B%22type%22%3A%5B%22container%22%5D%7D";

/// What the Docker task needs.
#[derive(Clone, Debug)]
pub struct DockerSettings {
    /// The Engine API socket.
    pub socket: PathBuf,
    /// Label keys that become `container.label.<key>` attributes.
    pub labels: Vec<String>,
}

impl DockerSettings {
    /// From the containers configuration.
    pub fn from_config(cfg: &ContainerConfig) -> Self {
        Self {
            socket: cfg.docker.socket.clone(),
            labels: cfg.labels.clone(),
        }
    }
}

/// Why talking to Docker failed.
#[derive(Debug, thiserror::Error)]
pub enum DockerError {
    /// The socket could not be connected.
    #[error("cannot connect to the Docker socket {socket}: {source}")]
    Connect {
        /// The socket.
        socket: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// HTTP failed.
    #[error("Docker API {path}: {source}")]
    Http {
        /// The request path.
        path: String,
        /// The error.
        source: hyper::Error,
    },
    /// A request took too long.
    #[error("Docker API {path}: no answer within {REQUEST_TIMEOUT:?}")]
    Timeout {
        /// The request path.
        path: String,
    },
    /// A non-success status.
    #[error("Docker API {path}: HTTP {status}: {body}")]
    Status {
        /// The request path.
        path: String,
        /// The status.
        status: http::StatusCode,
        /// The start of the body.
        body: String,
    },
    /// The answer is not the JSON Docker documents.
    #[error("Docker API {path}: unexpected JSON: {source}")]
    Json {
        /// The request path.
        path: String,
        /// The error.
        source: serde_json::Error,
    },
    /// The request could not be built (a container ID with odd characters).
    #[error("Docker API {path}: cannot build the request: {reason}")]
    Request {
        /// The request path.
        path: String,
        /// Why.
        reason: String,
    },
}

// ---------------------------------------------------------------------------------------
// Pure parsing.

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ListEntry {
    id: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct Inspect {
    id: String,
    name: String,
    image: String,
    config: InspectConfig,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct InspectConfig {
    image: String,
    labels: Option<std::collections::BTreeMap<String, String>>,
}

/// One event of the `/events` stream (only what is used).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// `start`, `die`, `destroy`, `rename`, … (`exec_start: sh` and the like keep their suffix).
    pub action: String,
    /// The container ID.
    pub id: String,
}

#[derive(Debug, Deserialize)]
struct RawEvent {
    #[serde(rename = "Type", default)]
    kind: String,
    #[serde(rename = "Action", default)]
    action: String,
    #[serde(rename = "Actor", default)]
    actor: RawActor,
}

#[derive(Debug, Default, Deserialize)]
struct RawActor {
    #[serde(rename = "ID", default)]
    id: String,
}

/// IDs from `GET /containers/json`.
pub fn parse_list(body: &[u8]) -> Result<Vec<String>, serde_json::Error> {
    let entries: Vec<ListEntry> = serde_json::from_slice(body)?;
    Ok(entries.into_iter().map(|e| e.id).collect())
}

/// One line of the event stream; `Ok(None)` for events that are not about a container.
pub fn parse_event(line: &[u8]) -> Result<Option<Event>, serde_json::Error> {
    let e: RawEvent = serde_json::from_slice(line)?;
    Ok(
        (e.kind == "container" && !e.actor.id.is_empty()).then_some(Event {
            action: e.action,
            id: e.actor.id,
        }),
    )
}

/// Splits an image reference into (name, tags): `registry:5000/team/app:1.2` →
/// (`registry:5000/team/app`, [`1.2`]); a digest reference has no tag; no tag at all means
/// `latest`, as Docker resolved it.
pub fn split_image(reference: &str) -> (String, Vec<String>) {
    let (without_digest, digest) = match reference.split_once('@') {
        Some((r, _)) => (r, true),
        None => (reference, false),
    };
    let last_slash = without_digest.rfind('/').map_or(0, |i| i + 1);
    match without_digest[last_slash..].rfind(':') {
        Some(colon) => {
            let at = last_slash + colon;
            (
                without_digest[..at].to_owned(),
                vec![without_digest[at + 1..].to_owned()],
            )
        }
        None if digest => (without_digest.to_owned(), Vec::new()),
        None => (without_digest.to_owned(), vec!["latest".to_owned()]),
    }
}

/// True when an image reference is an image ID rather than a name.
fn is_image_id(reference: &str) -> bool {
    let hex = reference.strip_prefix("sha256:").unwrap_or(reference);
    super::paths::is_container_id(hex)
}

/// `GET /containers/<id>/json` → (id, metadata). `labels` is the allowlist.
pub fn parse_inspect(
    body: &[u8],
    labels: &[String],
) -> Result<(String, ContainerMeta), serde_json::Error> {
    let i: Inspect = serde_json::from_slice(body)?;
    let all = i.config.labels.unwrap_or_default();
    let get = |k: &str| all.get(k).filter(|v| !v.is_empty()).cloned();
    let reference = if i.config.image.is_empty() {
        i.image.clone()
    } else {
        i.config.image.clone()
    };
    let (image_name, image_tags) = if reference.is_empty() || is_image_id(&reference) {
        (None, Vec::new())
    } else {
        let (n, t) = split_image(&reference);
        (Some(n), t)
    };
    let meta = ContainerMeta {
        name: Some(i.name.trim_start_matches('/').to_owned()).filter(|n| !n.is_empty()),
        image_name,
        image_tags,
        runtime: Some(Runtime::Docker),
        labels: labels
            .iter()
            .filter_map(|k| all.get(k).map(|v| (k.clone(), v.clone())))
            .collect(),
        k8s: K8sMeta {
            pod_name: get("io.kubernetes.pod.name"),
            pod_uid: get("io.kubernetes.pod.uid"),
            namespace: get("io.kubernetes.pod.namespace"),
            container_name: get("io.kubernetes.container.name"),
        },
    };
    Ok((i.id, meta))
}

/// `RepoTags` of `GET /images/<id>/json`: the first one's (name, tags of that name).
pub fn parse_image_tags(body: &[u8]) -> Result<Option<(String, Vec<String>)>, serde_json::Error> {
    #[derive(Deserialize)]
    struct Image {
        #[serde(rename = "RepoTags", default)]
        repo_tags: Option<Vec<String>>,
    }
    let img: Image = serde_json::from_slice(body)?;
    let tags = img.repo_tags.unwrap_or_default();
    let Some(first) = tags.first() else {
        return Ok(None);
    };
    let (name, _) = split_image(first);
    let same: Vec<String> = tags
        .iter()
        .map(|t| split_image(t))
        .filter(|(n, _)| *n == name)
        .flat_map(|(_, t)| t)
        .collect();
    Ok(Some((name, same)))
}

// ---------------------------------------------------------------------------------------
// The client.

/// One HTTP/1.1 connection to the Docker socket, driven by an owned task.
struct Conn {
    sender: http1::SendRequest<Empty<Bytes>>,
}

impl Conn {
    async fn open(
        socket: &Path,
        cancel: &CancellationToken,
        tracker: &TaskTracker,
    ) -> Result<Self, DockerError> {
        let stream = UnixStream::connect(socket)
            .await
            .map_err(|source| DockerError::Connect {
                socket: socket.to_path_buf(),
                source,
            })?;
        let (sender, conn) = http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|source| DockerError::Http {
                path: "(handshake)".into(),
                source,
            })?;
        let cancel = cancel.clone();
        tracker.spawn(async move {
            tokio::select! {
                () = cancel.cancelled() => {}
                r = conn => if let Err(e) = r { debug!(error = %e, "Docker connection closed"); }
            }
        });
        Ok(Self { sender })
    }

    async fn send(&mut self, path: &str) -> Result<http::Response<Incoming>, DockerError> {
        let req = http::Request::get(format!("http://docker{path}"))
            .header(http::header::HOST, "docker")
            .body(Empty::new())
            .map_err(|e| DockerError::Request {
                path: path.to_owned(),
                reason: e.to_string(),
            })?;
        self.sender
            .ready()
            .await
            .map_err(|source| DockerError::Http {
                path: path.to_owned(),
                source,
            })?;
        self.sender
            .send_request(req)
            .await
            .map_err(|source| DockerError::Http {
                path: path.to_owned(),
                source,
            })
    }

    /// GET returning the whole body; `Ok(None)` on 404.
    async fn get(&mut self, path: &str) -> Result<Option<Bytes>, DockerError> {
        let fut = async {
            let resp = self.send(path).await?;
            let status = resp.status();
            let body = resp
                .into_body()
                .collect()
                .await
                .map_err(|source| DockerError::Http {
                    path: path.to_owned(),
                    source,
                })?
                .to_bytes();
            if status == http::StatusCode::NOT_FOUND {
                return Ok(None);
            }
            if !status.is_success() {
                let body = String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned();
                return Err(DockerError::Status {
                    path: path.to_owned(),
                    status,
                    body,
                });
            }
            Ok(Some(body))
        };
        tokio::time::timeout(REQUEST_TIMEOUT, fut)
            .await
            .map_err(|_| DockerError::Timeout {
                path: path.to_owned(),
            })?
    }
}

/// Inspects one container; `Ok(None)` when Docker does not know it.
async fn inspect(
    conn: &mut Conn,
    id: &str,
    labels: &[String],
) -> Result<Option<(String, ContainerMeta)>, DockerError> {
    if !id
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
    {
        return Err(DockerError::Request {
            path: format!("/containers/{id}/json"),
            reason: "unexpected characters in the ID".into(),
        });
    }
    let path = format!("/containers/{id}/json");
    let Some(body) = conn.get(&path).await? else {
        return Ok(None);
    };
    let (full_id, mut meta) = parse_inspect(&body, labels).map_err(|source| DockerError::Json {
        path: path.clone(),
        source,
    })?;
    if meta.image_name.is_none() {
        // Started from an image ID: name it from the image's tags.
        #[derive(Deserialize, Default)]
        struct ImageRef {
            #[serde(rename = "Image", default)]
            image: String,
        }
        let image_id = serde_json::from_slice::<ImageRef>(&body)
            .unwrap_or_default()
            .image;
        if !image_id.is_empty()
            && image_id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b':')
        {
            let ipath = format!("/images/{image_id}/json");
            if let Some(ibody) = conn.get(&ipath).await?
                && let Some((name, tags)) =
                    parse_image_tags(&ibody).map_err(|source| DockerError::Json {
                        path: ipath,
                        source,
                    })?
            {
                meta.image_name = Some(name);
                meta.image_tags = tags;
            }
        }
    }
    Ok(Some((full_id, meta)))
}

/// Lists and inspects every running container.
async fn list_all(
    conn: &mut Conn,
    labels: &[String],
) -> Result<Vec<(String, ContainerMeta)>, DockerError> {
    let path = "/containers/json";
    let body = conn.get(path).await?.unwrap_or_default();
    let ids = parse_list(&body).map_err(|source| DockerError::Json {
        path: path.into(),
        source,
    })?;
    let mut out = Vec::with_capacity(ids.len());
    for id in ids {
        if let Some(entry) = inspect(conn, &id, labels).await? {
            out.push(entry);
        }
    }
    Ok(out)
}

/// One session: follow events, list, then apply events until the stream ends or fails.
async fn session(
    s: &DockerSettings,
    cache: &MetadataCache,
    requests: &mut mpsc::Receiver<String>,
    first: &mut FirstAttempt,
    cancel: &CancellationToken,
    tracker: &TaskTracker,
    recovered: &mut bool,
) -> Result<(), DockerError> {
    let mut events_conn = Conn::open(&s.socket, cancel, tracker).await?;
    let resp = tokio::time::timeout(REQUEST_TIMEOUT, events_conn.send(EVENTS_PATH))
        .await
        .map_err(|_| DockerError::Timeout {
            path: EVENTS_PATH.into(),
        })??;
    if !resp.status().is_success() {
        return Err(DockerError::Status {
            path: EVENTS_PATH.into(),
            status: resp.status(),
            body: String::new(),
        });
    }
    let mut events = resp.into_body();
    let mut api = Conn::open(&s.socket, cancel, tracker).await?;
    let all = list_all(&mut api, &s.labels).await?;
    let n = all.len();
    cache.docker_replace(all);
    cache.set_docker_connected(true);
    first.done();
    if *recovered {
        info!(socket = %s.socket.display(), "Docker reachable again; container metadata restored");
        *recovered = false;
    }
    debug!(containers = n, "Docker containers listed; following events");

    let mut pending = BytesMut::new();
    loop {
        tokio::select! {
            () = cancel.cancelled() => return Ok(()),
            Some(id) = requests.recv() => {
                if let Some((full, meta)) = inspect(&mut api, &id, &s.labels).await? {
                    cache.docker_upsert(full, meta);
                }
            }
            frame = events.frame() => {
                let Some(frame) = frame else { return Ok(()) };
                let frame = frame.map_err(|source| DockerError::Http { path: EVENTS_PATH.into(), source })?;
                let Ok(data) = frame.into_data() else { continue };
                pending.extend_from_slice(&data);
                while let Some(nl) = pending.iter().position(|b| *b == b'\n') {
                    let line = pending.split_to(nl + 1);
                    let line = line.chunk();
                    match parse_event(line) {
                        Ok(Some(ev)) => apply(&ev, &mut api, cache, &s.labels).await?,
                        Ok(None) => {}
                        Err(e) => debug!(error = %e, "unparseable Docker event skipped"),
                    }
                }
            }
        }
    }
}

async fn apply(
    ev: &Event,
    api: &mut Conn,
    cache: &MetadataCache,
    labels: &[String],
) -> Result<(), DockerError> {
    match ev.action.as_str() {
        "start" | "rename" | "update" | "create" => {
            if let Some((full, meta)) = inspect(api, &ev.id, labels).await? {
                cache.docker_upsert(full, meta);
            }
        }
        "destroy" => cache.docker_remove(&ev.id),
        _ => {}
    }
    Ok(())
}

/// The Docker task: sessions with backoff until cancelled. Logs an unreachable socket once,
/// and once more when it comes back.
pub async fn run(
    s: DockerSettings,
    cache: std::sync::Arc<MetadataCache>,
    mut requests: mpsc::Receiver<String>,
    mut first: FirstAttempt,
    cancel: CancellationToken,
    tracker: TaskTracker,
) {
    let mut delay = BACKOFF.0;
    let mut recovered = false;
    let mut logged = false;
    loop {
        let r = session(
            &s,
            &cache,
            &mut requests,
            &mut first,
            &cancel,
            &tracker,
            &mut recovered,
        )
        .await;
        cache.set_docker_connected(false);
        first.done();
        if cancel.is_cancelled() {
            return;
        }
        match r {
            Ok(()) => {
                debug!("Docker event stream ended; listing again");
                delay = BACKOFF.0;
            }
            Err(e) => {
                if !logged {
                    warn!(error = %e, "no Docker metadata: containers are reported by ID only until Docker answers (logged once; retrying in the background)");
                    logged = true;
                } else {
                    debug!(error = %e, "Docker still unreachable");
                }
                recovered = true;
            }
        }
        tokio::select! {
            () = cancel.cancelled() => return,
            () = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(BACKOFF.1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "4a57c14d26338e3942ed0c74fa408ccc2b867eb66855835dbda05e806e749147";

    #[test]
    fn image_references_split_into_name_and_tags() {
        assert_eq!(
            split_image("faultline-workload:test"),
            ("faultline-workload".into(), vec!["test".into()])
        );
        assert_eq!(
            split_image("nginx"),
            ("nginx".into(), vec!["latest".into()])
        );
        assert_eq!(
            split_image("registry:5000/team/app:1.2"),
            ("registry:5000/team/app".into(), vec!["1.2".into()])
        );
        assert_eq!(
            split_image("registry:5000/team/app"),
            ("registry:5000/team/app".into(), vec!["latest".into()])
        );
        assert_eq!(split_image("app@sha256:abcd"), ("app".into(), vec![]));
        assert_eq!(
            split_image("app:1@sha256:abcd"),
            ("app".into(), vec!["1".into()])
        );
    }

    #[test]
    fn inspect_gives_name_image_allowlisted_labels_and_kubernetes_names() {
        let body = format!(
            r#"{{"Id":"{ID}","Name":"/web-1","Image":"sha256:22f4","State":{{"StartedAt":"2026-11-27T02:41:55.316824246Z"}},
               "Config":{{"Image":"faultline-workload:test","Labels":{{"team":"sre","secret":"x",
               "io.kubernetes.pod.name":"web-7d9","io.kubernetes.pod.namespace":"prod",
               "io.kubernetes.pod.uid":"0f1e2d3c-4b5a-6978-8a9b-acbdcedf0011","io.kubernetes.container.name":"web"}}}}}}"#
        );
        let (id, m) =
            parse_inspect(body.as_bytes(), &["team".to_owned(), "absent".to_owned()]).unwrap();
        assert_eq!(id, ID);
        assert_eq!(m.name.as_deref(), Some("web-1"));
        assert_eq!(m.image_name.as_deref(), Some("faultline-workload"));
        assert_eq!(m.image_tags, vec!["test".to_owned()]);
        assert_eq!(m.runtime, Some(Runtime::Docker));
        assert_eq!(m.labels, vec![("team".to_owned(), "sre".to_owned())]);
        assert_eq!(m.k8s.pod_name.as_deref(), Some("web-7d9"));
        assert_eq!(m.k8s.namespace.as_deref(), Some("prod"));
        assert_eq!(m.k8s.container_name.as_deref(), Some("web"));
        assert_eq!(
            m.k8s.pod_uid.as_deref(),
            Some("0f1e2d3c-4b5a-6978-8a9b-acbdcedf0011")
        );

        let by_id = format!(
            r#"{{"Id":"{ID}","Name":"/x","Image":"sha256:{ID}","Config":{{"Image":"sha256:{ID}","Labels":null}}}}"#
        );
        let (_, m) = parse_inspect(by_id.as_bytes(), &[]).unwrap();
        assert_eq!(m.image_name, None, "an image ID is not a name");
        assert!(parse_inspect(b"[1,2]", &[]).is_err());
    }

    #[test]
    fn list_events_and_image_tags_parse() {
        assert_eq!(
            parse_list(format!(r#"[{{"Id":"{ID}","Names":["/a"]}}]"#).as_bytes()).unwrap(),
            vec![ID.to_owned()]
        );
        assert!(parse_list(b"{}").is_err());
        let ev = format!(
            r#"{{"status":"start","id":"{ID}","Type":"container","Action":"start","Actor":{{"ID":"{ID}","Attributes":{{"name":"a"}}}},"time":1}}"#
        );
        assert_eq!(
            parse_event(ev.as_bytes()).unwrap(),
            Some(Event {
                action: "start".into(),
                id: ID.into()
            })
        );
        assert_eq!(
            parse_event(br#"{"Type":"network","Action":"connect","Actor":{"ID":"n"}}"#).unwrap(),
            None
        );
        assert!(parse_event(b"not json").is_err());
        let img = br#"{"RepoTags":["app:1.0","app:latest","other:2"]}"#;
        assert_eq!(
            parse_image_tags(img).unwrap(),
            Some(("app".into(), vec!["1.0".into(), "latest".into()]))
        );
        assert_eq!(parse_image_tags(br#"{"RepoTags":[]}"#).unwrap(), None);
    }
}
