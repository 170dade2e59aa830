//! Docker Engine metadata, through the chaos crate's Engine API client
//! ([`faultline_chaos::docker`], which also serves the container faults and drill recovery).
//!
//! [`run`] keeps the [`MetadataCache`]'s Docker entries current without listing every cycle:
//! it opens the `/events` stream (container events only) first, then lists the running
//! containers and inspects each once, then applies events as they come: `start`, `rename` and
//! `update` re-inspect one container, `destroy` forgets it. When the stream ends or the socket
//! is unreachable, it waits (1 s doubling to 30 s) and starts over with a fresh listing, so
//! nothing missed in between stays wrong. The collector may also ask for one container it has
//! found in the cgroup tree before its start event arrived.
//!
//! What the collector makes of Docker's answers is pure ([`container_meta`],
//! [`image_name_and_tags`], [`split_image`]) and tested on JSON as Docker sends it.
//! `io.kubernetes.*` labels (dockershim-era Kubernetes nodes) become the `k8s.*` names; other
//! labels pass only through the configured allowlist.
//!
//! Not here: stats. Docker's stats endpoint reads the same cgroup files the collector reads
//! directly, at a much higher cost per container.

use std::path::PathBuf;
use std::time::Duration;

use faultline_chaos::docker::{Connection, ContainerInfo, Docker, DockerError, Event};
use faultline_exporters::repeat::{self, Failure, Repeated};
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

// ---------------------------------------------------------------------------------------
// Pure: Docker's answers → metadata.

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
pub(super) fn is_image_id(reference: &str) -> bool {
    let hex = reference.strip_prefix("sha256:").unwrap_or(reference);
    super::paths::is_container_id(hex)
}

/// An inspected container's metadata. `labels` is the allowlist.
pub fn container_meta(i: &ContainerInfo, labels: &[String]) -> ContainerMeta {
    let no_labels = std::collections::BTreeMap::new();
    let all = i.config.labels.as_ref().unwrap_or(&no_labels);
    let get = |k: &str| all.get(k).filter(|v| !v.is_empty()).cloned();
    let reference = if i.config.image.is_empty() {
        &i.image
    } else {
        &i.config.image
    };
    let (image_name, image_tags) = if reference.is_empty() || is_image_id(reference) {
        (None, Vec::new())
    } else {
        let (n, t) = split_image(reference);
        (Some(n), t)
    };
    ContainerMeta {
        name: Some(i.short_name().to_owned()).filter(|n| !n.is_empty()),
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
    }
}

/// An image's name and its tags of that name, from its `RepoTags`: the first one's.
pub fn image_name_and_tags(repo_tags: &[String]) -> Option<(String, Vec<String>)> {
    let (name, _) = split_image(repo_tags.first()?);
    let same: Vec<String> = repo_tags
        .iter()
        .map(|t| split_image(t))
        .filter(|(n, _)| *n == name)
        .flat_map(|(_, t)| t)
        .collect();
    Some((name, same))
}

// ---------------------------------------------------------------------------------------
// Following Docker.

/// Inspects one container; `Ok(None)` when Docker does not know it.
async fn inspect(
    conn: &mut Connection,
    id: &str,
    labels: &[String],
) -> Result<Option<(String, ContainerMeta)>, DockerError> {
    let Some(info) = conn.inspect(id).await? else {
        return Ok(None);
    };
    let mut meta = container_meta(&info, labels);
    // Started from an image ID: name it from the image's tags.
    if meta.image_name.is_none()
        && !info.image.is_empty()
        && info
            .image
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b':')
        && let Some(image) = conn.image(&info.image).await?
        && let Some((name, tags)) = image_name_and_tags(&image.repo_tags.unwrap_or_default())
    {
        meta.image_name = Some(name);
        meta.image_tags = tags;
    }
    Ok(Some((info.id, meta)))
}

/// Lists and inspects every running container: what a session starts with (and what the
/// metadata bench measures).
///
/// # Errors
/// The first failed request.
pub async fn list_all(
    conn: &mut Connection,
    labels: &[String],
) -> Result<Vec<(String, ContainerMeta)>, DockerError> {
    let ids = conn.list().await?;
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
    outage: &mut Repeated,
) -> Result<(), DockerError> {
    let docker = Docker::new(&s.socket);
    let mut events = docker
        .connect(REQUEST_TIMEOUT, cancel, tracker)
        .await?
        .container_events()
        .await?;
    let mut api = docker.connect(REQUEST_TIMEOUT, cancel, tracker).await?;
    let all = list_all(&mut api, &s.labels).await?;
    let n = all.len();
    cache.docker_replace(all);
    cache.set_docker_connected(true);
    first.done();
    // Connected and listed: an outage ends here, not when the event stream later ends, so
    // that the next failure, however much later, is warned about as a new one.
    if outage.succeeded().is_some() {
        info!(socket = %s.socket.display(), "Docker reachable again; container metadata restored");
    }
    debug!(containers = n, "Docker containers listed; following events");

    loop {
        tokio::select! {
            () = cancel.cancelled() => return Ok(()),
            Some(id) = requests.recv() => {
                if let Some((full, meta)) = inspect(&mut api, &id, &s.labels).await? {
                    cache.docker_upsert(full, meta);
                }
            }
            ev = events.next() => {
                let Some(ev) = ev? else { return Ok(()) };
                apply(&ev, &mut api, cache, &s.labels).await?;
            }
        }
    }
}

async fn apply(
    ev: &Event,
    api: &mut Connection,
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
/// then a summary at most once a minute while it stays away ([`repeat`]), and once more when
/// it comes back.
pub async fn run(
    s: DockerSettings,
    cache: std::sync::Arc<MetadataCache>,
    mut requests: mpsc::Receiver<String>,
    mut first: FirstAttempt,
    cancel: CancellationToken,
    tracker: TaskTracker,
) {
    let mut delay = BACKOFF.0;
    let mut outage = Repeated::default();
    loop {
        let r = session(
            &s,
            &cache,
            &mut requests,
            &mut first,
            &cancel,
            &tracker,
            &mut outage,
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
            Err(e) => match outage.failed() {
                Failure::First => {
                    warn!(error = %e, "no Docker metadata: containers are reported by ID only until Docker answers (retrying in the background; a summary follows at most once a minute)")
                }
                Failure::Summary { attempts, lasting } => {
                    warn!(error = %e, "Docker still unreachable after {}: {attempts} attempts; containers are reported by ID only", repeat::human(lasting))
                }
                Failure::Quiet => debug!(error = %e, "Docker still unreachable"),
            },
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
    use faultline_chaos::docker::{parse_image, parse_inspect};

    /// What the collector keeps of an inspect answer: (id, metadata).
    fn inspected(
        body: &[u8],
        labels: &[String],
    ) -> Result<(String, ContainerMeta), serde_json::Error> {
        let info = parse_inspect(body)?;
        Ok((info.id.clone(), container_meta(&info, labels)))
    }

    /// The name and tags of an image inspect answer.
    fn image_tags(body: &[u8]) -> Option<(String, Vec<String>)> {
        let image = parse_image(body).unwrap();
        image_name_and_tags(&image.repo_tags.unwrap_or_default())
    }

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
            inspected(body.as_bytes(), &["team".to_owned(), "absent".to_owned()]).unwrap();
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
        let (_, m) = inspected(by_id.as_bytes(), &[]).unwrap();
        assert_eq!(m.image_name, None, "an image ID is not a name");
        assert!(inspected(b"[1,2]", &[]).is_err());
    }

    #[test]
    fn image_tags_name_the_image() {
        let img = br#"{"RepoTags":["app:1.0","app:latest","other:2"]}"#;
        assert_eq!(
            image_tags(img),
            Some(("app".into(), vec!["1.0".into(), "latest".into()]))
        );
        assert_eq!(image_tags(br#"{"RepoTags":[]}"#), None);
    }
}
