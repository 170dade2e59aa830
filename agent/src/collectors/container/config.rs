//! The container collector's configuration (`containers` in the configuration file): what it
//! reads, where its metadata comes from, and the checks [`ContainerConfig::validate`] runs at
//! load time.
//!
//! Metadata sources, each for the containers the ones before it do not name: Docker's Engine
//! API (`docker`, also podman's compatible socket), the node's CRI runtime (`cri`:
//! containerd, CRI-O; on by default, used where its socket exists) and the kubelet's pods
//! endpoint (`kubelet`, off by default: the fallback for nodes whose CRI socket cannot be
//! mounted).

use std::path::PathBuf;
use std::time::Duration;

use faultline_chaos::units::{ByteSize, HumanDuration};
use serde::{Deserialize, Serialize};

use super::{cri, kubelet};
use crate::collectors::Roots;

/// `containers` in the configuration file.
///
/// `enabled` defaults to `true`: on a host without a cgroup hierarchy under `cgroup_root` the
/// collector logs that once at info level and is left out; with no container running it
/// records nothing. So the default costs nothing where there are no containers, and needs no
/// setting where there are.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ContainerConfig {
    /// Collect container metrics.
    pub enabled: bool,
    /// Where cgroups are mounted; unset: `{sys_root}/fs/cgroup`.
    pub cgroup_root: Option<PathBuf>,
    /// Docker Engine metadata.
    pub docker: DockerConfig,
    /// CRI runtime metadata (containerd, CRI-O).
    pub cri: CriConfig,
    /// Kubelet metadata (containerd, CRI-O), the fallback where the CRI socket is not
    /// reachable.
    pub kubelet: kubelet::KubeletConfig,
    /// Container (and, from the CRI runtime or the kubelet, pod) label keys that become
    /// `container.label.<key>` resource attributes. Only these: labels are unbounded,
    /// attributes must not be.
    pub labels: Vec<String>,
    /// Read per-container network bytes from each container's network namespace.
    pub network: bool,
    /// Read per-container pressure stall information (cgroup v2 and hybrid).
    pub pressure: bool,
    /// Kernel memory the collector may hold in control files it keeps open between cycles
    /// (each read with one `pread` instead of an open, a read and a close): an open cgroup
    /// file that has been read holds a page of kernel memory (measured 4.4 KiB, charged to
    /// the agent's memory cgroup). The files read in cycle after cycle are kept while this
    /// allows, the first containers' first; `0` keeps none. Default 16 MiB, about 3 700 files.
    pub kept_files_memory: ByteSize,
    /// Keep every control file read in cycle after cycle open, whatever `kept_files_memory`
    /// says (up to 11 files per container: ~48 MiB of kernel memory at 1000 containers whose
    /// figures all move every cycle). Off by default.
    pub keep_files_open: bool,
}

/// `containers.kept_files_memory` by default.
pub const DEFAULT_KEPT_FILES_MEMORY: ByteSize = ByteSize(16 << 20);

impl Default for ContainerConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            cgroup_root: None,
            docker: DockerConfig::default(),
            cri: CriConfig::default(),
            kubelet: kubelet::KubeletConfig::default(),
            labels: Vec::new(),
            network: true,
            pressure: true,
            kept_files_memory: DEFAULT_KEPT_FILES_MEMORY,
            keep_files_open: false,
        }
    }
}

/// `containers.docker`.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct DockerConfig {
    /// Ask Docker for names, images and labels.
    pub enabled: bool,
    /// The Engine API socket.
    pub socket: PathBuf,
}

impl Default for DockerConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            socket: PathBuf::from("/var/run/docker.sock"),
        }
    }
}

/// `containers.cri`.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct CriConfig {
    /// Ask the node's CRI runtime for pod and container names, images and pod labels.
    pub enabled: bool,
    /// The runtime's CRI socket; unset: the first of `/run/containerd/containerd.sock` and
    /// `/var/run/crio/crio.sock` that exists when the agent starts (none: no CRI metadata).
    pub socket: Option<PathBuf>,
    /// How often the running containers are listed. A container the collector finds before
    /// the next listing is asked about at once (at most once per second).
    pub refresh: HumanDuration,
}

impl Default for CriConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            socket: None,
            refresh: HumanDuration(Duration::from_secs(30)),
        }
    }
}

impl ContainerConfig {
    /// The cgroup root for these host roots.
    pub fn cgroup_root(&self, roots: &Roots) -> PathBuf {
        self.cgroup_root
            .clone()
            .unwrap_or_else(|| roots.sys("fs/cgroup"))
    }

    /// Checks what can be checked without starting anything (for config validation): on
    /// failure, the field (below `containers`) and what is wrong with it.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if let Some(root) = &self.cgroup_root
            && !root.is_dir()
        {
            return Err((
                "cgroup_root",
                format!("{} is not a readable directory", root.display()),
            ));
        }
        for l in &self.labels {
            if l.is_empty() || l.chars().any(char::is_whitespace) {
                return Err(("labels", format!("{l:?} is not a label key")));
            }
        }
        if let Some(socket) = &self.cri.socket
            && !socket.is_absolute()
        {
            return Err((
                "cri.socket",
                format!(
                    "{} is not an absolute path (the runtime's socket, e.g. {})",
                    socket.display(),
                    faultline_chaos::cri::CONTAINERD_SOCKET
                ),
            ));
        }
        for (enabled, field, refresh, min) in [
            (
                self.cri.enabled,
                "cri.refresh",
                self.cri.refresh.0,
                cri::MIN_INTERVAL,
            ),
            (
                self.kubelet.enabled,
                "kubelet.refresh",
                self.kubelet.refresh.0,
                kubelet::MIN_INTERVAL,
            ),
        ] {
            if enabled && refresh < min {
                return Err((
                    field,
                    format!("must be at least {}", humantime::format_duration(min)),
                ));
            }
        }
        Ok(())
    }
}
