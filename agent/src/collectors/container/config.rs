//! The container collector's configuration (`containers` in the configuration file): what it
//! reads, where its metadata comes from, and the checks [`ContainerConfig::validate`] runs at
//! load time.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::kubelet;
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
    /// Kubelet metadata (containerd, CRI-O).
    pub kubelet: kubelet::KubeletConfig,
    /// Container (and, from the kubelet, pod) label keys that become `container.label.<key>`
    /// resource attributes. Only these: labels are unbounded, attributes must not be.
    pub labels: Vec<String>,
    /// Read per-container network bytes from each container's network namespace.
    pub network: bool,
    /// Read per-container pressure stall information (cgroup v2 and hybrid).
    pub pressure: bool,
    /// Keep the control files read every cycle open between cycles and re-read them with
    /// one `pread` (up to 10 descriptors per container instead of 1): about 40 % less CPU
    /// per cycle, but each kept cgroup file holds a page of kernel memory (measured 4.4 KiB,
    /// charged to the agent's memory cgroup; ~39 MiB at 1000 containers). Off by default.
    pub keep_files_open: bool,
}

impl Default for ContainerConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            cgroup_root: None,
            docker: DockerConfig::default(),
            kubelet: kubelet::KubeletConfig::default(),
            labels: Vec::new(),
            network: true,
            pressure: true,
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

impl ContainerConfig {
    /// The cgroup root for these host roots.
    pub fn cgroup_root(&self, roots: &Roots) -> PathBuf {
        self.cgroup_root
            .clone()
            .unwrap_or_else(|| roots.sys("fs/cgroup"))
    }

    /// Checks what can be checked without starting anything (for config validation).
    pub fn validate(&self) -> Result<(), String> {
        if let Some(root) = &self.cgroup_root
            && !root.is_dir()
        {
            return Err(format!(
                "cgroup_root {} is not a readable directory",
                root.display()
            ));
        }
        for l in &self.labels {
            if l.is_empty() || l.chars().any(char::is_whitespace) {
                return Err(format!("labels: {l:?} is not a label key"));
            }
        }
        if self.kubelet.enabled && self.kubelet.refresh.0 < kubelet::MIN_INTERVAL {
            return Err(format!(
                "kubelet.refresh must be at least {}",
                humantime::format_duration(kubelet::MIN_INTERVAL)
            ));
        }
        Ok(())
    }
}
