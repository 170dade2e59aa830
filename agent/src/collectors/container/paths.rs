//! Recognising containers from the shape of their cgroup path.
//!
//! Pure functions over a path relative to the cgroup hierarchy's root (`/`-separated, no
//! leading slash), so every shape is tested without a cgroup filesystem. The shapes known:
//!
//! | runtime | cgroup driver | last components |
//! | --- | --- | --- |
//! | Docker | cgroupfs | `docker/<id>` |
//! | Docker | systemd | `docker-<id>.scope` |
//! | containerd (CRI) | systemd | `cri-containerd-<id>.scope` |
//! | CRI-O | systemd | `crio-<id>.scope` (not `crio-conmon-<id>.scope`, its monitor) |
//! | Podman | systemd | `libpod-<id>.scope` (not `libpod-conmon-<id>.scope`) |
//! | Podman | cgroupfs | `libpod_parent/libpod-<id>` |
//! | any CRI | cgroupfs | `kubepods/[burstable\|besteffort/]pod<uid>/<id>` |
//!
//! Under Kubernetes the systemd driver nests containers in
//! `kubepods.slice/kubepods-<qos>.slice/kubepods-<qos>-pod<uid>.slice/` (guaranteed pods:
//! `kubepods.slice/kubepods-pod<uid>.slice/`), where systemd escaping turned the pod UID's
//! `-` into `_`; [`recognise`] turns them back. Container IDs are 64 lowercase hex digits for
//! every runtime listed; anything else is not taken for a container, so ordinary services
//! (`system.slice/ssh.service`) never are.
//!
//! Not here: walking the tree ([`super::cgroup`]) and metadata (names, images) beyond what the
//! path itself says.

/// The container runtime, as `container.runtime.name` spells it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Runtime {
    /// Docker Engine.
    Docker,
    /// containerd (through its CRI plugin).
    Containerd,
    /// CRI-O.
    CriO,
    /// Podman.
    Podman,
}

impl Runtime {
    /// The attribute value.
    pub fn as_str(self) -> &'static str {
        match self {
            Runtime::Docker => "docker",
            Runtime::Containerd => "containerd",
            Runtime::CriO => "cri-o",
            Runtime::Podman => "podman",
        }
    }
}

/// What a container's cgroup path says about it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContainerPath {
    /// The full container ID (64 hex digits).
    pub id: String,
    /// The runtime, when the path names it (`kubepods/…/pod<uid>/<id>` does not).
    pub runtime: Option<Runtime>,
    /// The Kubernetes pod UID (with dashes), when under `kubepods`.
    pub pod_uid: Option<String>,
}

/// True for a 64-character lowercase hex string.
pub fn is_container_id(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// True for a pod UID: 36 characters of hex and dashes in the 8-4-4-4-12 layout.
fn is_pod_uid(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 36
        && b.iter().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => *c == b'-',
            _ => c.is_ascii_hexdigit(),
        })
}

/// The pod UID in one path component: `pod<uid>` (cgroupfs) or
/// `kubepods[-<qos>]-pod<uid_with_underscores>.slice` (systemd).
fn pod_uid_of(component: &str) -> Option<String> {
    let raw = if let Some(slice) = component.strip_suffix(".slice") {
        let pos = slice.rfind("-pod")?;
        &slice[pos + 4..]
    } else {
        component.strip_prefix("pod")?
    };
    let uid = raw.replace('_', "-");
    is_pod_uid(&uid).then_some(uid)
}

/// `<prefix><id>.scope` → id, when the id is a container ID.
fn scoped<'a>(component: &'a str, prefix: &str) -> Option<&'a str> {
    let id = component.strip_prefix(prefix)?.strip_suffix(".scope")?;
    is_container_id(id).then_some(id)
}

/// Recognises a container from its cgroup path relative to the hierarchy root; `None` for
/// anything that is not a container's own cgroup.
pub fn recognise(rel: &str) -> Option<ContainerPath> {
    let rel = rel.trim_matches('/');
    let mut parts = rel.rsplit('/');
    let last = parts.next()?;
    let parent = parts.next();

    let (id, runtime) = if let Some(id) = scoped(last, "docker-") {
        (id, Some(Runtime::Docker))
    } else if let Some(id) = scoped(last, "cri-containerd-") {
        (id, Some(Runtime::Containerd))
    } else if let Some(id) = scoped(last, "crio-") {
        (id, Some(Runtime::CriO))
    } else if let Some(id) = scoped(last, "libpod-") {
        (id, Some(Runtime::Podman))
    } else if let Some(id) = last
        .strip_prefix("libpod-")
        .filter(|id| is_container_id(id))
    {
        // Podman with the cgroupfs manager: libpod_parent/libpod-<id>.
        (id, Some(Runtime::Podman))
    } else if is_container_id(last) {
        match parent {
            Some("docker") => (last, Some(Runtime::Docker)),
            // kubepods/<qos>/pod<uid>/<id>: the runtime is not in the path.
            Some(p) if pod_uid_of(p).is_some() => (last, None),
            _ => return None,
        }
    } else {
        return None;
    };
    let pod_uid = if rel.contains("kubepods") {
        parent.and_then(pod_uid_of)
    } else {
        None
    };
    Some(ContainerPath {
        id: id.to_owned(),
        runtime,
        pod_uid,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "4a57c14d26338e3942ed0c74fa408ccc2b867eb66855835dbda05e806e749147";
    const UID: &str = "0f1e2d3c-4b5a-6978-8a9b-acbdcedf0011";
    const UID_: &str = "0f1e2d3c_4b5a_6978_8a9b_acbdcedf0011";

    fn rec(path: &str) -> Option<(String, Option<Runtime>, Option<String>)> {
        recognise(path).map(|c| (c.id, c.runtime, c.pod_uid))
    }

    #[test]
    fn docker_cgroupfs_and_systemd_shapes() {
        assert_eq!(
            rec(&format!("docker/{ID}")),
            Some((ID.into(), Some(Runtime::Docker), None))
        );
        assert_eq!(
            rec(&format!("system.slice/docker-{ID}.scope")),
            Some((ID.into(), Some(Runtime::Docker), None))
        );
        assert_eq!(
            rec(&format!("/docker/{ID}/")),
            Some((ID.into(), Some(Runtime::Docker), None))
        );
    }

    #[test]
    fn kubernetes_systemd_shapes_for_every_qos_class() {
        for (qos_dir, runtime_prefix, runtime) in [
            (
                format!("kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice"),
                "cri-containerd-",
                Runtime::Containerd,
            ),
            (
                format!("kubepods-besteffort.slice/kubepods-besteffort-pod{UID_}.slice"),
                "crio-",
                Runtime::CriO,
            ),
            (
                format!("kubepods-pod{UID_}.slice"),
                "cri-containerd-",
                Runtime::Containerd,
            ),
            (
                format!("kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice"),
                "docker-",
                Runtime::Docker,
            ),
        ] {
            let path = format!("kubepods.slice/{qos_dir}/{runtime_prefix}{ID}.scope");
            assert_eq!(
                rec(&path),
                Some((ID.into(), Some(runtime), Some(UID.into()))),
                "{path}"
            );
        }
    }

    #[test]
    fn kubernetes_cgroupfs_shapes() {
        for qos in ["burstable/", "besteffort/", ""] {
            let path = format!("kubepods/{qos}pod{UID}/{ID}");
            assert_eq!(
                rec(&path),
                Some((ID.into(), None, Some(UID.into()))),
                "{path}"
            );
        }
    }

    #[test]
    fn podman_shapes_and_monitors_are_not_containers() {
        assert_eq!(
            rec(&format!("machine.slice/libpod-{ID}.scope")),
            Some((ID.into(), Some(Runtime::Podman), None))
        );
        assert_eq!(
            rec(&format!(
                "user.slice/user-1000.slice/user@1000.service/user.slice/libpod-{ID}.scope"
            )),
            Some((ID.into(), Some(Runtime::Podman), None))
        );
        assert_eq!(
            rec(&format!("libpod_parent/libpod-{ID}")),
            Some((ID.into(), Some(Runtime::Podman), None))
        );
        assert_eq!(
            rec(&format!("machine.slice/libpod-conmon-{ID}.scope")),
            None
        );
        assert_eq!(
            rec(&format!(
                "kubepods.slice/kubepods-pod{UID_}.slice/crio-conmon-{ID}.scope"
            )),
            None
        );
    }

    #[test]
    fn ordinary_cgroups_are_not_containers() {
        for path in [
            "",
            "docker",
            "system.slice/ssh.service",
            "kubepods.slice",
            &format!("kubepods.slice/kubepods-pod{UID_}.slice"),
            &format!("kubepods/burstable/pod{UID}"),
            "docker/abc",
            &format!("docker/{}", ID.to_uppercase()),
            &format!("somewhere/{ID}"),
            &format!("system.slice/docker-{ID}.service"),
            &format!("kubepods/burstable/podnot-a-uid/{ID}"),
        ] {
            assert_eq!(rec(path), None, "{path:?}");
        }
    }
}
