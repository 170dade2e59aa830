//! Container metadata (names, images, labels, Kubernetes names): a shared cache that the
//! synchronous collector reads, filled by background tasks that talk to the runtimes.
//!
//! The collector runs on the collection thread and must never wait on a socket, so metadata is
//! fetched apart from it: [`MetadataWorker::start`] starts one dedicated thread with its own
//! single-threaded tokio runtime, a [`CancellationToken`] and a [`TaskTracker`]; on it run the
//! Docker task ([`super::docker`]: list and inspect once, then follow `/events`), the CRI
//! task where the node has a CRI runtime ([`super::cri`]: list the node's pods and
//! containers every `refresh`) and, when configured, the kubelet task ([`super::kubelet`]:
//! poll the pods endpoint). Each writes its own part of the [`MetadataCache`]; entries whose
//! content did not change keep their `Arc`, so the collector rebuilds a container's resource
//! only when its metadata really changed. A container's resource takes its names from the
//! first source that knows it, in that order.
//!
//! Dropping the worker cancels the token and waits (bounded) for the thread to finish, so no
//! task outlives the collector that owns it.
//!
//! The first collection waits (at most [`INITIAL_SYNC_WAIT`]) for each source's first attempt,
//! so `faultline collect --once` prints names, not only IDs. With no source reachable the
//! containers are still reported by ID; each source logs its failure once, and once more when
//! it recovers.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError, RwLock, RwLockReadGuard};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use super::paths::Runtime;
use super::{ContainerConfig, cri, docker, kubelet};

/// Longest the first collection waits for the metadata sources' first answer.
pub const INITIAL_SYNC_WAIT: Duration = Duration::from_secs(3);

/// How long dropping the worker waits for its thread.
const STOP_WAIT: Duration = Duration::from_secs(2);

/// What a runtime knows about one container.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ContainerMeta {
    /// `container.name`.
    pub name: Option<String>,
    /// `container.image.name` (repository, without tag or digest).
    pub image_name: Option<String>,
    /// `container.image.tags`.
    pub image_tags: Vec<String>,
    /// `container.runtime.name`, when the source knows it.
    pub runtime: Option<Runtime>,
    /// Labels that passed the allowlist, as (key, value).
    pub labels: Vec<(String, String)>,
    /// Kubernetes names.
    pub k8s: K8sMeta,
}

/// Kubernetes names of a container.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct K8sMeta {
    /// `k8s.pod.name`.
    pub pod_name: Option<String>,
    /// `k8s.pod.uid`.
    pub pod_uid: Option<String>,
    /// `k8s.namespace.name`.
    pub namespace: Option<String>,
    /// `k8s.container.name`.
    pub container_name: Option<String>,
}

/// A pod as the kubelet lists it (for containers it does not list, such as pod sandboxes).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PodMeta {
    /// `k8s.pod.name`.
    pub name: String,
    /// `k8s.namespace.name`.
    pub namespace: String,
}

/// What the kubelet said on its last answer.
#[derive(Debug, Default)]
pub struct KubeletView {
    /// By container ID.
    pub containers: HashMap<String, Arc<ContainerMeta>>,
    /// By pod UID.
    pub pods: HashMap<String, Arc<PodMeta>>,
}

/// Containers by ID, as one source names them.
pub type ByContainer = HashMap<String, Arc<ContainerMeta>>;

/// The shared cache.
#[derive(Debug, Default)]
pub struct MetadataCache {
    docker: RwLock<ByContainer>,
    cri: RwLock<ByContainer>,
    kubelet: RwLock<KubeletView>,
    docker_connected: AtomicBool,
    cri_listed: AtomicBool,
    kubelet_answered: AtomicBool,
}

/// Replaces every entry of `map` with a fresh listing: entries not listed go, unchanged ones
/// keep their `Arc`.
fn replace_all(map: &mut ByContainer, fresh: Vec<(String, ContainerMeta)>) {
    let keep: std::collections::HashSet<&String> = fresh.iter().map(|(id, _)| id).collect();
    map.retain(|id, _| keep.contains(id));
    for (id, meta) in fresh {
        upsert(map, id, meta);
    }
}

/// Replaces `map[key]` with `value` unless equal content is already there (keeps the `Arc`).
pub fn upsert<K: std::hash::Hash + Eq, V: PartialEq>(
    map: &mut HashMap<K, Arc<V>>,
    key: K,
    value: V,
) {
    match map.get(&key) {
        Some(old) if **old == value => {}
        _ => {
            map.insert(key, Arc::new(value));
        }
    }
}

impl MetadataCache {
    /// Read access to the Docker entries.
    pub fn docker(&self) -> RwLockReadGuard<'_, ByContainer> {
        self.docker.read().unwrap_or_else(PoisonError::into_inner)
    }
    /// Read access to the CRI entries (containers and pod sandboxes by ID).
    pub fn cri(&self) -> RwLockReadGuard<'_, ByContainer> {
        self.cri.read().unwrap_or_else(PoisonError::into_inner)
    }
    /// Read access to the kubelet view.
    pub fn kubelet(&self) -> RwLockReadGuard<'_, KubeletView> {
        self.kubelet.read().unwrap_or_else(PoisonError::into_inner)
    }
    /// Adds or updates one Docker container.
    pub fn docker_upsert(&self, id: String, meta: ContainerMeta) {
        upsert(
            &mut self.docker.write().unwrap_or_else(PoisonError::into_inner),
            id,
            meta,
        );
    }
    /// Forgets one Docker container.
    pub fn docker_remove(&self, id: &str) {
        self.docker
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(id);
    }
    /// Replaces all Docker entries with a fresh listing (unchanged entries keep their `Arc`).
    pub fn docker_replace(&self, fresh: Vec<(String, ContainerMeta)>) {
        replace_all(
            &mut self.docker.write().unwrap_or_else(PoisonError::into_inner),
            fresh,
        );
    }
    /// Replaces all CRI entries with a fresh listing (unchanged entries keep their `Arc`)
    /// and records that the runtime answered.
    pub fn cri_replace(&self, fresh: Vec<(String, ContainerMeta)>) {
        replace_all(
            &mut self.cri.write().unwrap_or_else(PoisonError::into_inner),
            fresh,
        );
        self.cri_listed.store(true, Ordering::Relaxed);
    }
    /// Replaces the kubelet view (unchanged entries keep their `Arc`).
    pub fn kubelet_replace(
        &self,
        containers: Vec<(String, ContainerMeta)>,
        pods: Vec<(String, PodMeta)>,
    ) {
        let mut view = self.kubelet.write().unwrap_or_else(PoisonError::into_inner);
        let mut c = std::mem::take(&mut view.containers);
        let mut p = std::mem::take(&mut view.pods);
        let new_c: HashMap<String, Arc<ContainerMeta>> = containers
            .into_iter()
            .map(|(id, m)| match c.remove(&id) {
                Some(old) if *old == m => (id, old),
                _ => (id, Arc::new(m)),
            })
            .collect();
        let new_p: HashMap<String, Arc<PodMeta>> = pods
            .into_iter()
            .map(|(uid, m)| match p.remove(&uid) {
                Some(old) if *old == m => (uid, old),
                _ => (uid, Arc::new(m)),
            })
            .collect();
        *view = KubeletView {
            containers: new_c,
            pods: new_p,
        };
        self.kubelet_answered.store(true, Ordering::Relaxed);
    }
    /// Whether the Docker event stream is currently followed.
    pub fn docker_connected(&self) -> bool {
        self.docker_connected.load(Ordering::Relaxed)
    }
    /// Records whether the Docker event stream is followed.
    pub fn set_docker_connected(&self, v: bool) {
        self.docker_connected.store(v, Ordering::Relaxed);
    }
    /// Whether the CRI runtime's last listing succeeded.
    pub fn cri_listed(&self) -> bool {
        self.cri_listed.load(Ordering::Relaxed)
    }
    /// Records that a CRI listing failed (the entries stay until the next one succeeds).
    pub fn set_cri_failing(&self) {
        self.cri_listed.store(false, Ordering::Relaxed);
    }
    /// Whether the kubelet has answered at least once.
    pub fn kubelet_answered(&self) -> bool {
        self.kubelet_answered.load(Ordering::Relaxed)
    }
}

/// Counts the sources that have not yet finished their first attempt.
#[derive(Debug, Default)]
pub struct InitialSync {
    pending: Mutex<usize>,
    cv: Condvar,
}

impl InitialSync {
    fn new(sources: usize) -> Self {
        Self {
            pending: Mutex::new(sources),
            cv: Condvar::new(),
        }
    }
    /// One source finished its first attempt (call once per source).
    pub fn done(&self) {
        let mut p = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        *p = p.saturating_sub(1);
        self.cv.notify_all();
    }
    /// Waits until every source finished its first attempt or `timeout` passed.
    pub fn wait(&self, timeout: Duration) {
        let guard = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        let _ = self.cv.wait_timeout_while(guard, timeout, |p| *p > 0);
    }
}

/// Signals a source's first attempt exactly once.
#[derive(Debug)]
pub struct FirstAttempt {
    sync: Arc<InitialSync>,
    signalled: bool,
}

impl FirstAttempt {
    /// Signals, the first time only.
    pub fn done(&mut self) {
        if !self.signalled {
            self.signalled = true;
            self.sync.done();
        }
    }
}

impl Drop for FirstAttempt {
    fn drop(&mut self) {
        self.done();
    }
}

/// Waits until a polling source's next request is due: `every` after the last one, or as
/// soon as the collector asks on `early`, but never sooner than `min` after the last one.
/// Returns `false` when `cancel` fired first.
pub async fn next_poll(
    cancel: &CancellationToken,
    early: &mut mpsc::Receiver<()>,
    min: Duration,
    every: Duration,
) -> bool {
    tokio::select! {
        () = cancel.cancelled() => return false,
        () = tokio::time::sleep(min) => {}
    }
    tokio::select! {
        () = cancel.cancelled() => false,
        () = tokio::time::sleep(every.saturating_sub(min)) => true,
        Some(()) = early.recv() => true,
    }
}

/// The owner of the metadata thread and its tasks.
#[derive(Debug)]
pub struct MetadataWorker {
    cancel: CancellationToken,
    thread: Option<std::thread::JoinHandle<()>>,
    stopped: std::sync::mpsc::Receiver<()>,
    initial: Arc<InitialSync>,
    /// Asks the Docker task to inspect a container it has not reported (a start event may
    /// still be on its way); `None` when Docker is disabled.
    pub docker_requests: Option<mpsc::Sender<String>>,
    /// Asks the CRI task for an early listing; `None` when no CRI runtime is used.
    pub cri_requests: Option<mpsc::Sender<()>>,
    /// Asks the kubelet task for an early refresh; `None` when the kubelet is disabled.
    pub kubelet_requests: Option<mpsc::Sender<()>>,
}

/// Why the metadata worker could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The thread or its runtime could not be created.
    #[error("cannot start the container metadata thread: {0}")]
    Thread(std::io::Error),
    /// The kubelet client settings are unusable.
    #[error(transparent)]
    Kubelet(#[from] kubelet::KubeletError),
}

impl MetadataWorker {
    /// Starts the sources enabled in `cfg`; returns `None` when none is.
    pub fn start(
        cfg: &ContainerConfig,
        rootfs: &std::path::Path,
        cache: Arc<MetadataCache>,
    ) -> Result<Option<Self>, StartError> {
        let docker_cfg = cfg
            .docker
            .enabled
            .then(|| docker::DockerSettings::from_config(cfg));
        let cri_cfg = cri::CriSettings::from_config(cfg, rootfs);
        let kubelet_client = if cfg.kubelet.enabled {
            Some(kubelet::KubeletClient::new(&cfg.kubelet, &cfg.labels)?)
        } else {
            None
        };
        let sources = usize::from(docker_cfg.is_some())
            + usize::from(cri_cfg.is_some())
            + usize::from(kubelet_client.is_some());
        if sources == 0 {
            return Ok(None);
        }
        let initial = Arc::new(InitialSync::new(sources));
        let cancel = CancellationToken::new();
        let (docker_tx, docker_rx) = mpsc::channel::<String>(1024);
        let (cri_tx, cri_rx) = mpsc::channel::<()>(1);
        let (kube_tx, kube_rx) = mpsc::channel::<()>(1);
        let (stopped_tx, stopped) = std::sync::mpsc::channel();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(StartError::Thread)?;
        let worker_cancel = cancel.clone();
        let worker_initial = initial.clone();
        let has_docker = docker_cfg.is_some();
        let has_cri = cri_cfg.is_some();
        let has_kubelet = kubelet_client.is_some();
        let thread = std::thread::Builder::new()
            .name("faultline-container-metadata".into())
            .spawn(move || {
                rt.block_on(async move {
                    let tracker = TaskTracker::new();
                    if let Some(settings) = docker_cfg {
                        let first = FirstAttempt {
                            sync: worker_initial.clone(),
                            signalled: false,
                        };
                        tracker.spawn(
                            docker::run(
                                settings,
                                cache.clone(),
                                docker_rx,
                                first,
                                worker_cancel.clone(),
                                tracker.clone(),
                            )
                            .instrument(tracing::info_span!("docker_metadata")),
                        );
                    }
                    if let Some(settings) = cri_cfg {
                        let first = FirstAttempt {
                            sync: worker_initial.clone(),
                            signalled: false,
                        };
                        tracker.spawn(
                            cri::run(
                                settings,
                                cache.clone(),
                                cri_rx,
                                first,
                                worker_cancel.clone(),
                            )
                            .instrument(tracing::info_span!("cri_metadata")),
                        );
                    }
                    if let Some(client) = kubelet_client {
                        let first = FirstAttempt {
                            sync: worker_initial.clone(),
                            signalled: false,
                        };
                        tracker.spawn(
                            kubelet::run(
                                client,
                                cache.clone(),
                                kube_rx,
                                first,
                                worker_cancel.clone(),
                            )
                            .instrument(tracing::info_span!("kubelet_metadata")),
                        );
                    }
                    tracker.close();
                    worker_cancel.cancelled().await;
                    let _ = tokio::time::timeout(STOP_WAIT, tracker.wait()).await;
                });
                let _ = stopped_tx.send(());
            })
            .map_err(StartError::Thread)?;
        Ok(Some(Self {
            cancel,
            thread: Some(thread),
            stopped,
            initial,
            docker_requests: has_docker.then_some(docker_tx),
            cri_requests: has_cri.then_some(cri_tx),
            kubelet_requests: has_kubelet.then_some(kube_tx),
        }))
    }

    /// Waits (bounded) for every source's first attempt.
    pub fn wait_initial(&self, timeout: Duration) {
        self.initial.wait(timeout);
    }
}

impl Drop for MetadataWorker {
    fn drop(&mut self) {
        self.cancel.cancel();
        if self
            .stopped
            .recv_timeout(STOP_WAIT + Duration::from_secs(1))
            .is_ok()
        {
            if let Some(t) = self.thread.take() {
                let _ = t.join();
            }
        } else {
            tracing::warn!("container metadata thread did not stop in time; leaving it behind");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unchanged_entries_keep_their_arc() {
        let cache = MetadataCache::default();
        let meta = ContainerMeta {
            name: Some("a".into()),
            ..ContainerMeta::default()
        };
        cache.docker_upsert("1".into(), meta.clone());
        let before = cache.docker().get("1").cloned().unwrap();
        cache.docker_replace(vec![("1".into(), meta.clone()), ("2".into(), meta.clone())]);
        assert!(Arc::ptr_eq(&before, cache.docker().get("1").unwrap()));
        cache.docker_upsert(
            "1".into(),
            ContainerMeta {
                name: Some("b".into()),
                ..meta.clone()
            },
        );
        assert!(!Arc::ptr_eq(&before, cache.docker().get("1").unwrap()));
        cache.docker_replace(vec![("2".into(), meta.clone())]);
        assert!(cache.docker().get("1").is_none());
        cache.docker_remove("2");
        assert!(cache.docker().is_empty());

        cache.kubelet_replace(
            vec![("c".into(), meta.clone())],
            vec![(
                "u".into(),
                PodMeta {
                    name: "p".into(),
                    namespace: "n".into(),
                },
            )],
        );
        let c = cache.kubelet().containers.get("c").cloned().unwrap();
        cache.kubelet_replace(vec![("c".into(), meta)], vec![]);
        assert!(Arc::ptr_eq(
            &c,
            cache.kubelet().containers.get("c").unwrap()
        ));
        assert!(cache.kubelet().pods.is_empty());
        assert!(cache.kubelet_answered());
    }

    #[test]
    fn initial_sync_waits_for_every_source_but_not_forever() {
        let sync = Arc::new(InitialSync::new(2));
        let mut a = FirstAttempt {
            sync: sync.clone(),
            signalled: false,
        };
        a.done();
        a.done();
        let started = std::time::Instant::now();
        sync.wait(Duration::from_millis(50));
        assert!(
            started.elapsed() >= Duration::from_millis(50),
            "one source still pending"
        );
        drop(FirstAttempt {
            sync: sync.clone(),
            signalled: false,
        });
        let started = std::time::Instant::now();
        sync.wait(Duration::from_secs(5));
        assert!(started.elapsed() < Duration::from_secs(1));
    }
}
