//! A real containerd, started by the test itself, for the CRI tests: Debian's `containerd`
//! and `runc` with the CRI plugin on, and pods made the way the kubelet makes them.
//!
//! [`Containerd::start`] runs `containerd` with its own config file, root, state dir, runc
//! root and socket, all in one temporary directory. It never touches the engine Docker uses
//! (Docker's containerd has its own socket and state under `/var/run/docker`), nor
//! `/run/containerd/containerd.sock`. Docker only builds the image: the workload image of
//! [`crate::docker`] (`FROM scratch` around the project's static workload) is `docker save`d
//! and imported with `ctr -n k8s.io images import`; it is also the `sandbox_image`, so no
//! image is ever pulled.
//!
//! What this machine needed (measured; see the config in [`config_toml`]):
//! - `restrict_oom_score_adj = true`: root here lacks `CAP_SYS_RESOURCE`, and with the CRI's
//!   default sandbox `oom_score_adj` of -998 every `RunPodSandbox` fails with `runc create
//!   failed: … can't get final child's PID from pipe: EOF`.
//! - Pods use the host's network namespace, so no CNI plugin is needed (the CRI plugin logs
//!   that it found no CNI config; that is expected) — except in an instance started with
//!   [`Containerd::start_with_pod_network`], whose pods each get a network namespace of their
//!   own ([`PodNetwork`]).
//!
//! [`Containerd::run_pod`] makes a pod as the kubelet's cgroupfs driver does: a real UUID as
//! the pod uid, `cgroup_parent` `/kubepods/besteffort/pod<uid>`, Kubernetes labels
//! (`io.kubernetes.pod.name`, `…namespace`, `…uid`, `io.kubernetes.container.name`, `app`),
//! host networking, and one container of the workload image. It goes through the chaos
//! crate's [`CriClient`], the same client faultline uses.
//!
//! [`Containerd::start_with_pod_network`] is for the network faults: containerd runs inside a
//! network namespace the test creates (the pods' "node", [`PodNetwork::node`]; entered with
//! `nsenter --net`), so the CNI plugins it calls (Debian's `containernetworking-plugins`:
//! `bridge` with `host-local` addresses, no masquerading, and `loopback`) make their bridge,
//! veth pairs and routes there, never in the host's namespace. Each pod gets a namespace of
//! its own with `eth0` on that bridge ([`POD_SUBNET`], the node at [`NODE_IP`], the default
//! route through it), pinned under the instance's state directory
//! (`netns_mounts_under_state_dir`). The one file outside the instance's directory is
//! libcni's result cache (`/var/lib/cni/results/<network>-<sandbox>-eth0`, removed by the
//! pod's CNI DEL; the guard removes any left and the directories it made).
//!
//! Dropping the guard (also when the test panics) removes every pod through the CRI, stops
//! containerd, kills any shim or container process of this instance that is left, unmounts
//! whatever is still mounted under its directory, removes the pods' cgroups and the
//! directory. [`containerd_available`] decides between running and skipping: a missing tool
//! skips with a printed reason, except under CI, where it fails.

use std::collections::HashMap;
use std::fs;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use faultline_chaos::cri::{CriClient, proto};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tempfile::TempDir;

use crate::chaos::wait_until;
use crate::netns::Netns;

/// The snapshotter this instance uses. overlayfs works here (`/` is ext4 and the kernel has
/// `overlay`); `native` would be the fallback on a filesystem overlay cannot sit on.
pub const SNAPSHOTTER: &str = "overlayfs";
/// The workload image as containerd names it after the import (and the `sandbox_image`).
pub const IMAGE: &str = "docker.io/library/faultline-workload:test";
/// The runtime binaries the tests need, besides Docker for building the image.
const TOOLS: [&str; 4] = ["containerd", "containerd-shim-runc-v2", "runc", "ctr"];
/// Cgroup parents of best-effort pods under the kubelet's cgroupfs driver.
const KUBEPODS: &str = "kubepods/besteffort";
/// Where Debian's `containernetworking-plugins` (and the upstream tarball) put the plugins.
const CNI_DIRS: [&str; 2] = ["/usr/lib/cni", "/opt/cni/bin"];
/// The CNI plugins a pod network needs.
const CNI_PLUGINS: [&str; 3] = ["bridge", "host-local", "loopback"];
/// libcni's cache of ADD results (not configurable in containerd 1.6).
const CNI_CACHE: &str = "/var/lib/cni/results";
/// The pods' subnet in a [`PodNetwork`], inside its node namespace only.
pub const POD_SUBNET: &str = "10.79.0.0/24";
/// The node's address on the pods' bridge (their gateway), inside its node namespace only.
pub const NODE_IP: Ipv4Addr = Ipv4Addr::new(10, 79, 0, 1);

/// Whether containerd, its runc shim, runc, ctr and a Docker engine (to build the image) are
/// here. When not: prints why `test` is skipped and returns `false`, or panics under CI
/// ([`crate::in_ci`]), where `.ci/run` installs them.
pub fn containerd_available(test: &str) -> bool {
    let mut missing: Vec<String> = TOOLS
        .iter()
        .filter(|tool| on_path(tool).is_none())
        .map(|tool| (*tool).to_owned())
        .collect();
    let docker = Command::new("docker")
        .args(["version", "--format", "{{.Server.Version}}"])
        .stdin(Stdio::null())
        .output();
    if !matches!(docker, Ok(ref out) if out.status.success()) {
        missing.push("a Docker engine (builds the workload image)".into());
    }
    if missing.is_empty() {
        return true;
    }
    assert!(
        !crate::in_ci(),
        "{test}: required under CI but missing: {} (.ci/run installs containerd and runc)",
        missing.join(", ")
    );
    eprintln!("SKIPPED {test}: missing {}", missing.join(", "));
    false
}

/// The first executable `name` on `PATH`.
pub(crate) fn on_path(name: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0))
}

/// The directory holding the CNI plugins a pod network needs, if there is one.
fn cni_bin_dir() -> Option<PathBuf> {
    CNI_DIRS
        .iter()
        .map(PathBuf::from)
        .find(|dir| CNI_PLUGINS.iter().all(|p| dir.join(p).is_file()))
}

/// The config file of an instance living in `dir`; with `cni_bin`, one whose pods get
/// network namespaces of their own from the plugins there (see [`PodNetwork`]).
pub fn config_toml(dir: &Path, cni_bin: Option<&Path>) -> String {
    let d = dir.display();
    let (cni_bin_dir, netns_under_state) = match cni_bin {
        Some(bin) => (bin.display().to_string(), "true"),
        None => (format!("{d}/cni/bin"), "false"),
    };
    format!(
        r#"version = 2
root = "{d}/root"
state = "{d}/state"
# Plugins that would reach outside this directory (/opt/containerd) or are useless here.
disabled_plugins = [
  "io.containerd.internal.v1.opt",
  "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.zfs",
  "io.containerd.tracing.processor.v1.otlp",
]

[grpc]
  address = "{d}/containerd.sock"

# The CRI plugin does not load without the v1 runtime plugin, although pods use runc v2.
[plugins."io.containerd.runtime.v1.linux"]
  runtime_root = "{d}/runc-v1"

[ttrpc]
  address = "{d}/containerd.sock.ttrpc"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{IMAGE}"
  # Root here lacks CAP_SYS_RESOURCE: the default sandbox oom_score_adj (-998) makes every
  # RunPodSandbox fail with "can't get final child's PID from pipe: EOF".
  restrict_oom_score_adj = true
  disable_apparmor = true
  # A port of its own per instance (the default 10010 would clash between instances).
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  # Pod network namespaces pinned in this directory, not /run/netns.
  netns_mounts_under_state_dir = {netns_under_state}

  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "{SNAPSHOTTER}"
    default_runtime_name = "runc"

    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"

      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        Root = "{d}/runc"
        SystemdCgroup = false

  # Pods use the host network and no CNI plugin is called (empty dirs of its own), or a
  # PodNetwork's plugins with the conflist it writes into conf_dir.
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{cni_bin_dir}"
    conf_dir = "{d}/cni/conf"
"#
    )
}

/// The pod network of an instance started with [`Containerd::start_with_pod_network`]: the
/// node's namespace (the test's own; containerd runs in it) and the CNI network's name.
#[derive(Debug)]
pub struct PodNetwork {
    /// The node's network namespace: the bridge, the pods' veth ends and [`NODE_IP`].
    pub node: Netns,
    /// The CNI network's name (`faultline-<pid>-<n>`; in libcni's cache file names).
    name: String,
}

impl PodNetwork {
    /// The CNI conflist: a bridge of its own with `host-local` addresses kept in `dir`, the
    /// node as every pod's default gateway, and no masquerading (no iptables rule).
    fn conflist(&self, dir: &Path) -> String {
        serde_json::json!({
            "cniVersion": "1.0.0",
            "name": self.name,
            "plugins": [{
                "type": "bridge",
                "bridge": "flbr0",
                "isGateway": true,
                "ipMasq": false,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": POD_SUBNET, "gateway": NODE_IP.to_string()}]],
                    "routes": [{"dst": "0.0.0.0/0"}],
                    "dataDir": dir.join("cni/ipam").display().to_string(),
                },
            }],
        })
        .to_string()
    }

    /// libcni's cached results of this network's pods.
    fn cached_results(&self) -> Vec<PathBuf> {
        let prefix = format!("{}-", self.name);
        fs::read_dir(CNI_CACHE)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
            .map(|e| e.path())
            .collect()
    }
}

/// A pod made by [`Containerd::run_pod`]: one sandbox, one running container.
#[derive(Debug, Clone)]
pub struct TestPod {
    /// The sandbox id.
    pub sandbox_id: String,
    /// The container id.
    pub container_id: String,
    /// Pod name.
    pub name: String,
    /// Pod namespace.
    pub namespace: String,
    /// Pod uid (a random UUID from the kernel).
    pub uid: String,
    /// The container's name.
    pub container_name: String,
    /// `/kubepods/besteffort/pod<uid>`.
    pub cgroup_parent: String,
    /// The container's CRI log file.
    pub log: PathBuf,
    /// The ids of the pod's other containers ([`Containerd::run_pod_containers`]).
    pub sidecars: Vec<String>,
}

impl TestPod {
    /// PIDs of the live processes in the container's cgroup, read from `/proc/<pid>/cgroup`
    /// (independent of the CRI, which reports no pids).
    pub fn pids(&self) -> Vec<i32> {
        self.pids_of(&self.container_id)
    }

    /// [`pids`](Self::pids) of the pod's container `container_id` (a sidecar's, say).
    pub fn pids_of(&self, container_id: &str) -> Vec<i32> {
        let suffix = format!("{}/{}", self.cgroup_parent, container_id);
        let Ok(dir) = fs::read_dir("/proc") else {
            panic!("reading /proc failed");
        };
        dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
            .filter(|pid| {
                fs::read_to_string(format!("/proc/{pid}/cgroup")).is_ok_and(|text| {
                    text.lines()
                        .any(|line| line.rsplit(':').next() == Some(suffix.as_str()))
                })
            })
            .filter(|pid| crate::chaos::running(*pid))
            .collect()
    }
}

/// A containerd owned by the test; see the module docs. Everything goes on drop.
#[derive(Debug)]
pub struct Containerd {
    client: CriClient,
    // Last: dropped after the client, and its Drop does the cleanup.
    instance: Instance,
}

impl Containerd {
    /// Starts an instance and waits until its CRI answers, then imports the workload image.
    /// `None` (printed as SKIPPED) when a tool is missing outside CI.
    ///
    /// # Panics
    /// When containerd does not come up within 60 s (its log is in the message), or the image
    /// cannot be built or imported.
    pub async fn start(test: &str) -> Option<Self> {
        if !containerd_available(test) {
            return None;
        }
        Some(Self::start_instance(None).await)
    }

    /// [`start`](Self::start) with a [`PodNetwork`]: pods get network namespaces of their own
    /// on a bridge in a node namespace of the test's own (see the module docs). `None`
    /// (printed as SKIPPED) also when the CNI plugins (`containernetworking-plugins`) or
    /// `nsenter` are missing outside CI.
    ///
    /// # Panics
    /// As [`start`](Self::start); under CI, when the CNI plugins or `nsenter` are missing.
    pub async fn start_with_pod_network(test: &str) -> Option<Self> {
        if !containerd_available(test) {
            return None;
        }
        let ok = crate::chaos::require(
            cni_bin_dir().is_some() && on_path("nsenter").is_some(),
            "the CNI plugins bridge, host-local and loopback (.ci/run installs \
             containernetworking-plugins) and nsenter",
        );
        if !ok {
            return None;
        }
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let network = PodNetwork {
            node: Netns::create("cri-node"),
            name: format!(
                "faultline-{}-{}",
                std::process::id(),
                N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            ),
        };
        Some(Self::start_instance(Some(network)).await)
    }

    async fn start_instance(network: Option<PodNetwork>) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("faultline-containerd-")
            .tempdir()
            .unwrap_or_else(|e| panic!("tempdir: {e}"));
        let config = dir.path().join("config.toml");
        let cni_bin = network.as_ref().and_then(|_| cni_bin_dir());
        fs::write(&config, config_toml(dir.path(), cni_bin.as_deref()))
            .unwrap_or_else(|e| panic!("{}: {e}", config.display()));
        for sub in ["cni/bin", "cni/conf", "cni/ipam", "pods", "images"] {
            fs::create_dir_all(dir.path().join(sub)).unwrap_or_else(|e| panic!("mkdir {sub}: {e}"));
        }
        if let Some(net) = &network {
            let conflist = dir.path().join("cni/conf/10-faultline.conflist");
            fs::write(&conflist, net.conflist(dir.path()))
                .unwrap_or_else(|e| panic!("{}: {e}", conflist.display()));
        }
        let log_path = dir.path().join("containerd.log");
        let log =
            fs::File::create(&log_path).unwrap_or_else(|e| panic!("{}: {e}", log_path.display()));
        let log_err = log
            .try_clone()
            .unwrap_or_else(|e| panic!("{}: {e}", log_path.display()));
        MADE.register(&made_dirs());
        let mut cmd = match &network {
            // nsenter execs containerd in the node's namespace (no fork without --pid).
            Some(net) => {
                let mut cmd = crate::ending_with_test("nsenter");
                cmd.arg(format!("--net={}", net.node.path()))
                    .arg("containerd");
                cmd
            }
            None => crate::ending_with_test("containerd"),
        };
        let child = cmd
            .arg("--config")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .spawn()
            .unwrap_or_else(|e| panic!("containerd --config {}: {e}", config.display()));
        let socket = dir.path().join("containerd.sock");
        let mut instance = Instance {
            socket: socket.clone(),
            log: log_path,
            child,
            pod_uids: Mutex::new(Vec::new()),
            network,
            dir,
        };
        let client = instance.wait_for_cri(Duration::from_secs(60)).await;
        instance.import_image();
        Self { client, instance }
    }

    /// The pod network, for an instance started with
    /// [`start_with_pod_network`](Self::start_with_pod_network).
    pub fn pod_network(&self) -> Option<&PodNetwork> {
        self.instance.network.as_ref()
    }

    /// The chaos crate's CRI client, connected to this instance.
    pub fn client(&self) -> &CriClient {
        &self.client
    }

    /// This instance's socket.
    pub fn socket(&self) -> &Path {
        &self.instance.socket
    }

    /// containerd's log so far (for failure messages).
    pub fn log(&self) -> String {
        fs::read_to_string(&self.instance.log).unwrap_or_default()
    }

    /// Runs a pod `namespace/name` labelled `app=<app>` with one container `container_name`
    /// of the workload image (`faultline-workload <args>`), and waits until the workload
    /// printed its `ready` line.
    ///
    /// # Panics
    /// On any CRI error (containerd's log is in the message) or when the workload is not ready
    /// within 60 s.
    pub async fn run_pod(
        &self,
        namespace: &str,
        name: &str,
        app: &str,
        container_name: &str,
        args: &[&str],
    ) -> TestPod {
        self.run_pod_from(IMAGE, namespace, name, app, container_name, args)
            .await
    }

    /// [`run_pod`](Self::run_pod) with the container created from `image`: the workload
    /// image by another reference, such as its ID (`sha256:…`, as the kubelet creates
    /// containers).
    ///
    /// # Panics
    /// As [`run_pod`](Self::run_pod).
    pub async fn run_pod_from(
        &self,
        image: &str,
        namespace: &str,
        name: &str,
        app: &str,
        container_name: &str,
        args: &[&str],
    ) -> TestPod {
        self.run_pod_containers(image, namespace, name, app, &[(container_name, args)])
            .await
    }

    /// A pod `namespace/name` labelled `app=<app>` with one container per entry of
    /// `containers` (`(name, workload args)`, all of `image`): the first is the pod's
    /// [`TestPod::container_id`], the others its [`TestPod::sidecars`]. Waits until each
    /// printed its `ready` line. With a [`PodNetwork`] the pod has a network namespace of its
    /// own (its containers share it); otherwise the node's.
    ///
    /// # Panics
    /// As [`run_pod`](Self::run_pod); when `containers` is empty.
    pub async fn run_pod_containers(
        &self,
        image: &str,
        namespace: &str,
        name: &str,
        app: &str,
        containers: &[(&str, &[&str])],
    ) -> TestPod {
        assert!(!containers.is_empty(), "{namespace}/{name}: no container");
        let uid = kernel_uuid();
        self.instance
            .pod_uids
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(uid.clone());
        let cgroup_parent = format!("/{KUBEPODS}/pod{uid}");
        let log_directory = self
            .instance
            .dir
            .path()
            .join("pods")
            .join(format!("{namespace}_{name}_{uid}"));
        let identity = HashMap::from([
            ("io.kubernetes.pod.name".to_owned(), name.to_owned()),
            (
                "io.kubernetes.pod.namespace".to_owned(),
                namespace.to_owned(),
            ),
            ("io.kubernetes.pod.uid".to_owned(), uid.clone()),
        ]);
        let own_network = self.instance.network.is_some();
        let namespaces = proto::NamespaceOption {
            network: if own_network {
                proto::NamespaceMode::Pod
            } else {
                proto::NamespaceMode::Node
            }
            .into(),
            pid: proto::NamespaceMode::Container.into(),
            ipc: proto::NamespaceMode::Pod.into(),
            ..Default::default()
        };
        let mut pod_labels = identity.clone();
        pod_labels.insert("app".into(), app.into());
        let sandbox = proto::PodSandboxConfig {
            metadata: Some(proto::PodSandboxMetadata {
                name: name.into(),
                uid: uid.clone(),
                namespace: namespace.into(),
                attempt: 0,
            }),
            // As the kubelet: a host-network pod has the node's own UTS namespace and name,
            // any other its pod name.
            hostname: if own_network {
                name.to_owned()
            } else {
                String::new()
            },
            log_directory: log_directory.display().to_string(),
            labels: pod_labels,
            linux: Some(proto::LinuxPodSandboxConfig {
                cgroup_parent: cgroup_parent.clone(),
                security_context: Some(proto::LinuxSandboxSecurityContext {
                    namespace_options: Some(namespaces.clone()),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let sandbox_id = self
            .client
            .run_pod_sandbox(sandbox.clone())
            .await
            .unwrap_or_else(|e| panic!("{e}\ncontainerd log:\n{}", self.log()));
        let mut ids = Vec::new();
        let mut logs = Vec::new();
        for (container_name, args) in containers {
            // The kubelet makes the container's log directory; the runtime only opens the file.
            fs::create_dir_all(log_directory.join(container_name))
                .unwrap_or_else(|e| panic!("{}: {e}", log_directory.display()));
            let mut container_labels = identity.clone();
            container_labels.insert(
                "io.kubernetes.container.name".into(),
                (*container_name).into(),
            );
            let container_log = format!("{container_name}/0.log");
            let config = proto::ContainerConfig {
                metadata: Some(proto::ContainerMetadata {
                    name: (*container_name).into(),
                    attempt: 0,
                }),
                image: Some(proto::ImageSpec {
                    image: image.into(),
                    ..Default::default()
                }),
                args: args.iter().map(|a| (*a).to_owned()).collect(),
                labels: container_labels,
                log_path: container_log.clone(),
                linux: Some(proto::LinuxContainerConfig {
                    security_context: Some(proto::LinuxContainerSecurityContext {
                        namespace_options: Some(namespaces.clone()),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            };
            let container_id = self
                .client
                .create_container(&sandbox_id, config, sandbox.clone())
                .await
                .unwrap_or_else(|e| panic!("{e}\ncontainerd log:\n{}", self.log()));
            self.client
                .start_container(&container_id)
                .await
                .unwrap_or_else(|e| panic!("{e}\ncontainerd log:\n{}", self.log()));
            ids.push(container_id);
            logs.push(log_directory.join(container_log));
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        for log in &logs {
            while !fs::read_to_string(log).is_ok_and(|text| text.contains(" ready ")) {
                assert!(
                    Instant::now() < deadline,
                    "{namespace}/{name}: the workload printed no ready line within 60 s; its log \
                     {}: {:?}",
                    log.display(),
                    fs::read_to_string(log)
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        let mut ids = ids.into_iter();
        TestPod {
            sandbox_id,
            container_id: ids.next().unwrap_or_default(),
            name: name.into(),
            namespace: namespace.into(),
            uid,
            container_name: containers[0].0.into(),
            cgroup_parent,
            log: logs.swap_remove(0),
            sidecars: ids.collect(),
        }
    }

    /// Stops and removes `pod` through the CRI (its network namespace goes with it).
    ///
    /// # Panics
    /// On a CRI error.
    pub async fn remove_pod(&self, pod: &TestPod) {
        self.client
            .stop_pod_sandbox(&pod.sandbox_id)
            .await
            .unwrap_or_else(|e| panic!("{e}\ncontainerd log:\n{}", self.log()));
        self.client
            .remove_pod_sandbox(&pod.sandbox_id)
            .await
            .unwrap_or_else(|e| panic!("{e}\ncontainerd log:\n{}", self.log()));
    }
}

/// A fresh random (version 4) UUID from the kernel, as a real pod uid would be.
fn kernel_uuid() -> String {
    let uuid = fs::read_to_string("/proc/sys/kernel/random/uuid")
        .unwrap_or_else(|e| panic!("/proc/sys/kernel/random/uuid: {e}"));
    uuid.trim().to_owned()
}

/// The mount points of every cgroup hierarchy (v1 controllers and the unified one).
pub(crate) fn cgroup_roots() -> Vec<PathBuf> {
    mounts()
        .into_iter()
        .filter(|(_, fstype)| fstype == "cgroup" || fstype == "cgroup2")
        .map(|(point, _)| point)
        .collect()
}

/// Lazily unmounts everything mounted under `dir`, deepest first; `who` prefixes the
/// failures printed.
pub(crate) fn unmount_under(dir: &Path, who: &str) {
    let mut points: Vec<PathBuf> = mounts()
        .into_iter()
        .map(|(point, _)| point)
        .filter(|point| point.starts_with(dir))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    for point in points {
        if let Err(e) = nix::mount::umount2(&point, nix::mount::MntFlags::MNT_DETACH) {
            eprintln!("{who}: umount {}: {e}", point.display());
        }
    }
}

/// (mount point, filesystem type) of this process's mount namespace, from mountinfo.
fn mounts() -> Vec<(PathBuf, String)> {
    let text = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    text.lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let point = left.split(' ').nth(4)?;
            let fstype = right.split(' ').next()?;
            // mountinfo escapes space, tab, newline and backslash as octal.
            let point = point
                .replace("\\040", " ")
                .replace("\\011", "\t")
                .replace("\\012", "\n")
                .replace("\\134", "\\");
            Some((PathBuf::from(point), fstype.to_owned()))
        })
        .collect()
}

/// Directories a runtime makes on the machine outside an instance's own temporary directory
/// (`/run/containerd/s`, cgroups such as `kubepods/besteffort`), shared by this process's live
/// instances. The tests of one binary run in parallel: an instance must not take a sibling's
/// directory for the machine's own, or neither would remove it. The first instance records
/// which existed; the last to go removes the others, if empty (removing fails, harmlessly,
/// while another process's containers are in there).
#[derive(Debug)]
pub(crate) struct SharedDirs {
    /// (live instances, the directories that existed before the first of them).
    state: Mutex<(usize, Vec<PathBuf>)>,
}

impl SharedDirs {
    pub(crate) const fn new() -> Self {
        Self {
            state: Mutex::new((0, Vec::new())),
        }
    }

    /// One more live instance; the first records which of `dirs` exist.
    pub(crate) fn register(&self, dirs: &[PathBuf]) {
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if state.0 == 0 {
            state.1 = dirs.iter().filter(|d| d.exists()).cloned().collect();
        }
        state.0 += 1;
    }

    /// One instance less; the last removes each of `dirs` (deepest first, as given) that did
    /// not exist before.
    pub(crate) fn release(&self, dirs: &[PathBuf]) {
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        state.0 = state.0.saturating_sub(1);
        if state.0 == 0 {
            for dir in dirs.iter().filter(|d| !state.1.contains(d)) {
                let _ = fs::remove_dir(dir);
            }
        }
    }
}

/// This module's [`SharedDirs`].
static MADE: SharedDirs = SharedDirs::new();

/// The directories containerd and its pods make outside an instance's directory, deepest
/// first: the shims' socket directory (containerd 1.6 puts it in `/run/containerd/s`
/// whatever its config says), libcni's result cache (a pod network's), and the pods' cgroup
/// parents.
fn made_dirs() -> Vec<PathBuf> {
    let mut dirs = vec![
        PathBuf::from("/run/containerd/s"),
        PathBuf::from("/run/containerd"),
        PathBuf::from(CNI_CACHE),
        PathBuf::from("/var/lib/cni"),
    ];
    for root in cgroup_roots() {
        dirs.push(root.join(KUBEPODS));
        dirs.push(root.join("kubepods"));
    }
    dirs
}

/// The process and files of one instance; its Drop is the cleanup.
#[derive(Debug)]
struct Instance {
    socket: PathBuf,
    log: PathBuf,
    child: Child,
    pod_uids: Mutex<Vec<String>>,
    /// Dropped after the cleanup in Drop (containerd stopped): the node namespace goes, with
    /// the bridge and whatever veth end is left in it.
    network: Option<PodNetwork>,
    // Last: removed after the cleanup in Drop.
    dir: TempDir,
}

impl Instance {
    /// Connects the chaos crate's client once the CRI answers.
    async fn wait_for_cri(&mut self, timeout: Duration) -> CriClient {
        let deadline = Instant::now() + timeout;
        loop {
            let last =
                match CriClient::connect_with_timeout(&self.socket, Duration::from_secs(5)).await {
                    Ok(client) => return client,
                    Err(e) => e,
                };
            let log = fs::read_to_string(&self.log).unwrap_or_default();
            assert!(
                !log.contains("failed to load plugin io.containerd.grpc.v1.cri"),
                "containerd runs without its CRI plugin: {last}\nlog:\n{log}"
            );
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "containerd exited ({status}) before its CRI answered: {last}\nlog:\n{}",
                    fs::read_to_string(&self.log).unwrap_or_default()
                );
            }
            assert!(
                Instant::now() < deadline,
                "containerd's CRI did not answer within {timeout:?}: {last}\nlog:\n{}",
                fs::read_to_string(&self.log).unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// `docker save` of the workload image, imported into the CRI's namespace (`k8s.io`).
    fn import_image(&self) {
        let image = crate::docker::workload_image();
        let tarball = self.dir.path().join("images/workload.tar");
        run(Command::new("docker")
            .args(["save", "-o"])
            .arg(&tarball)
            .arg(image));
        run(Command::new("ctr")
            .arg("--address")
            .arg(&self.socket)
            .args([
                "-n",
                "k8s.io",
                "images",
                "import",
                "--snapshotter",
                SNAPSHOTTER,
            ])
            .arg(&tarball));
    }

    /// Every pod of this instance stopped and removed through the CRI. On a thread with a
    /// runtime of its own: Drop may run inside the test's runtime, which cannot be blocked on.
    fn remove_pods(&self) {
        let socket = self.socket.clone();
        let removal = std::thread::spawn(move || -> Result<usize, String> {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| format!("runtime: {e}"))?;
            runtime.block_on(async {
                let client = CriClient::connect(&socket)
                    .await
                    .map_err(|e| e.to_string())?;
                let pods = client
                    .list_pod_sandboxes(None)
                    .await
                    .map_err(|e| e.to_string())?;
                for pod in &pods {
                    client
                        .stop_pod_sandbox(&pod.id)
                        .await
                        .map_err(|e| e.to_string())?;
                    client
                        .remove_pod_sandbox(&pod.id)
                        .await
                        .map_err(|e| e.to_string())?;
                }
                Ok(pods.len())
            })
        });
        match removal.join() {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => eprintln!("containerd guard: removing pods: {e}"),
            Err(_) => eprintln!("containerd guard: the pod removal thread panicked"),
        }
    }

    /// SIGTERM to containerd, SIGKILL after 10 s.
    fn stop_containerd(&mut self) {
        let pid = Pid::from_raw(i32::try_from(self.child.id()).unwrap_or(i32::MAX));
        let _ = kill(pid, Signal::SIGTERM);
        let exited = wait_until(Duration::from_secs(10), || {
            matches!(self.child.try_wait(), Ok(Some(_)))
        });
        if !exited {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }

    /// SIGKILL to whatever of this instance still runs: shims started with its socket as
    /// `-address`, and processes in its pods' cgroups. Nothing else matches either test.
    fn kill_leftovers(&self) {
        let socket = self.socket.display().to_string();
        let cgroups: Vec<String> = self
            .pod_uids()
            .iter()
            .map(|uid| format!("/{KUBEPODS}/pod{uid}"))
            .collect();
        let Ok(dir) = fs::read_dir("/proc") else {
            return;
        };
        for pid in dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok()) {
            let shim = fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|raw| raw.split(|b| *b == 0).any(|arg| arg == socket.as_bytes()));
            let in_pod = fs::read_to_string(format!("/proc/{pid}/cgroup")).is_ok_and(|text| {
                text.lines().any(|line| {
                    let path = line.rsplit(':').next().unwrap_or("");
                    cgroups.iter().any(|c| path.starts_with(c.as_str()))
                })
            });
            if shim || in_pod {
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
        }
    }

    /// Lazily unmounts everything mounted under the instance's directory, deepest first.
    fn unmount_all(&self) {
        unmount_under(self.dir.path(), "containerd guard");
    }

    /// Removes the pods' cgroups, in every hierarchy.
    fn remove_cgroups(&self) {
        let uids = self.pod_uids();
        for root in cgroup_roots() {
            for uid in &uids {
                let pod = root.join(KUBEPODS).join(format!("pod{uid}"));
                if pod.exists() {
                    remove_cgroup_tree(&pod);
                }
            }
        }
    }

    /// The sockets of this instance's shims. containerd 1.6 puts them in `/run/containerd/s`
    /// whatever its config says; each shim writes its own into `address` in its bundle
    /// (`unix:///run/containerd/s/<hash>`).
    fn shim_sockets(&self) -> Vec<PathBuf> {
        let tasks = self.dir.path().join("state/io.containerd.runtime.v2.task");
        let bundles = fs::read_dir(&tasks)
            .into_iter()
            .flatten()
            .flatten()
            .flat_map(|namespace| {
                fs::read_dir(namespace.path())
                    .into_iter()
                    .flatten()
                    .flatten()
            });
        bundles
            .filter_map(|bundle| fs::read_to_string(bundle.path().join("address")).ok())
            .filter_map(|address| {
                let path = PathBuf::from(address.trim().strip_prefix("unix://")?);
                path.starts_with("/run/containerd/s/").then_some(path)
            })
            .collect()
    }

    /// This instance's shim sockets, once their shims are gone (a shim removes its own as it
    /// exits; a killed one cannot).
    fn remove_shim_sockets(&self, sockets: &[PathBuf]) {
        let _ = wait_until(Duration::from_secs(5), || {
            sockets.iter().all(|s| !s.exists())
        });
        for socket in sockets {
            let _ = fs::remove_file(socket);
        }
    }

    fn pod_uids(&self) -> Vec<String> {
        self.pod_uids
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        let shim_sockets = self.shim_sockets();
        self.remove_pods();
        self.stop_containerd();
        self.kill_leftovers();
        self.unmount_all();
        // A killed process leaves its cgroup a moment later.
        let _ = wait_until(Duration::from_secs(5), || {
            self.remove_cgroups();
            self.pod_uids().iter().all(|uid| {
                cgroup_roots()
                    .iter()
                    .all(|root| !root.join(KUBEPODS).join(format!("pod{uid}")).exists())
            })
        });
        self.remove_shim_sockets(&shim_sockets);
        // A pod's CNI DEL removes its cached result; a pod that never got one leaves it.
        if let Some(net) = &self.network {
            for cached in net.cached_results() {
                let _ = fs::remove_file(cached);
            }
        }
        MADE.release(&made_dirs());
    }
}

/// Removes a cgroup directory and the cgroups below it, deepest first (cgroupfs refuses to
/// remove a directory with child cgroups; control files go with their directory).
fn remove_cgroup_tree(dir: &Path) {
    if let Ok(entries) = fs::read_dir(dir) {
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                remove_cgroup_tree(&entry.path());
            }
        }
    }
    let _ = fs::remove_dir(dir);
}

/// Runs `cmd` and returns its standard output, trimmed, panicking with its stderr when it
/// fails.
pub(crate) fn run(cmd: &mut Command) -> String {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}
