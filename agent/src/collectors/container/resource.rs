//! A container's resource: the host's attributes followed by the container's own (ID,
//! runtime, name, image, Kubernetes names, chosen labels), from the metadata sources that know
//! it ([`Sources`]): Docker's entry, else the CRI runtime's, else the kubelet's. The runtime
//! is the one the cgroup path names where it names one (a podman container answered for by
//! podman's Docker-compatible socket is `podman`), else the source's. The collector keeps the
//! `Arc<Resource>` per container and rebuilds it only when one of its sources changed.

use std::sync::Arc;

use faultline_exporters::model::{AttrValue, Resource};

use super::metadata::{ByContainer, ContainerMeta, KubeletView, PodMeta};
use super::paths::ContainerPath;

/// The metadata a container's resource is built from, compared by pointer.
#[derive(Clone, Debug)]
pub(super) struct Sources {
    docker: Option<Arc<ContainerMeta>>,
    cri: Option<Arc<ContainerMeta>>,
    kubelet: Option<Arc<ContainerMeta>>,
    pod: Option<Arc<PodMeta>>,
}

fn same<T>(a: &Option<Arc<T>>, b: &Option<Arc<T>>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => Arc::ptr_eq(a, b),
        (None, None) => true,
        _ => false,
    }
}

impl Sources {
    /// What the Docker entries, the CRI runtime's and the kubelet's last answers say about
    /// the container at `path`.
    pub(super) fn of(
        docker: &ByContainer,
        cri: &ByContainer,
        kube: &KubeletView,
        path: &ContainerPath,
    ) -> Self {
        let id = path.id.as_str();
        Self {
            docker: docker.get(id).cloned(),
            cri: cri.get(id).cloned(),
            kubelet: kube.containers.get(id).cloned(),
            pod: path
                .pod_uid
                .as_deref()
                .and_then(|u| kube.pods.get(u))
                .cloned(),
        }
    }

    pub(super) fn same_as(&self, o: &Sources) -> bool {
        same(&self.docker, &o.docker)
            && same(&self.cri, &o.cri)
            && same(&self.kubelet, &o.kubelet)
            && same(&self.pod, &o.pod)
    }

    /// No source names the container.
    pub(super) fn is_empty(&self) -> bool {
        self.docker.is_none() && self.cri.is_none() && self.kubelet.is_none()
    }

    /// The container's resource from these sources.
    pub(super) fn build(&self, host: &Resource, path: &ContainerPath) -> Resource {
        build_resource(
            host,
            &path.id,
            path,
            self.docker.as_deref().or(self.cri.as_deref()),
            self.kubelet.as_deref(),
            self.pod.as_deref(),
        )
    }
}

/// Builds a container's resource: the host's attributes, then the container's. `runtime` is
/// what the container's runtime (Docker, CRI) says about it, `kube` what the kubelet says.
pub fn build_resource(
    host: &Resource,
    id: &str,
    path: &ContainerPath,
    runtime: Option<&ContainerMeta>,
    kube: Option<&ContainerMeta>,
    pod: Option<&PodMeta>,
) -> Resource {
    let mut a = host.attributes.clone();
    a.push("container.id", id.to_owned());
    let meta = runtime.or(kube);
    if let Some(rt) = path.runtime.or_else(|| meta.and_then(|m| m.runtime)) {
        a.push("container.runtime.name", rt.as_str());
    }
    if let Some(m) = meta {
        if let Some(n) = &m.name {
            a.push("container.name", n.clone());
        }
        if let Some(n) = &m.image_name {
            a.push("container.image.name", n.clone());
        }
        if !m.image_tags.is_empty() {
            a.push(
                "container.image.tags",
                AttrValue::StrArray(m.image_tags.clone()),
            );
        }
    }
    let k8s = meta.map(|m| &m.k8s);
    let pod_uid = k8s
        .and_then(|k| k.pod_uid.clone())
        .or_else(|| path.pod_uid.clone());
    let pod_name = k8s
        .and_then(|k| k.pod_name.clone())
        .or_else(|| pod.map(|p| p.name.clone()));
    let namespace = k8s
        .and_then(|k| k.namespace.clone())
        .or_else(|| pod.map(|p| p.namespace.clone()));
    for (key, v) in [
        ("k8s.pod.name", pod_name),
        ("k8s.pod.uid", pod_uid),
        ("k8s.namespace.name", namespace),
        (
            "k8s.container.name",
            k8s.and_then(|k| k.container_name.clone()),
        ),
    ] {
        if let Some(v) = v {
            a.push(key, v);
        }
    }
    if let Some(m) = meta {
        for (k, v) in &m.labels {
            a.push(format!("container.label.{k}"), v.clone());
        }
    }
    Resource { attributes: a }
}
