//! Containers joined to their pods ([`PodContainer`]): the view that both the metadata
//! collector (names and labels for telemetry) and the pod/label selectors of the faults work
//! from. [`join_pods`] is pure, so it is tested on hand-made CRI messages.

use std::collections::HashMap;

use super::proto::{Container, ContainerState, PodSandbox};

/// A pod's identity as its sandbox reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodIdentity {
    /// The runtime's sandbox id.
    pub sandbox_id: String,
    /// The pod's name (`k8s.pod.name`).
    pub name: String,
    /// The pod's namespace (`k8s.namespace.name`).
    pub namespace: String,
    /// The pod's uid (`k8s.pod.uid`).
    pub uid: String,
    /// The pod's labels.
    pub labels: HashMap<String, String>,
}

/// One container with its pod.
#[derive(Debug, Clone, PartialEq)]
pub struct PodContainer {
    /// The runtime's container id (the id in the container's cgroup path).
    pub id: String,
    /// The container's name in its pod spec (`k8s.container.name`).
    pub name: String,
    /// The image as the container was created from it: the name the pod spec gave where the
    /// runtime kept it (`user_specified_image`; the kubelet creates containers from the image
    /// ID), else the image it was created from (a name or an ID), else its image reference.
    pub image: String,
    /// Created, running, exited or unknown.
    pub state: ContainerState,
    /// The container's labels (the kubelet copies the pod's identity into them).
    pub labels: HashMap<String, String>,
    /// Its pod, or `None` when the sandbox was not in the listing (removed in between).
    pub pod: Option<PodIdentity>,
}

/// Each of `containers` with the pod of `pods` that holds it.
pub fn join_pods(pods: &[PodSandbox], containers: &[Container]) -> Vec<PodContainer> {
    let by_id: HashMap<&str, &PodSandbox> = pods.iter().map(|p| (p.id.as_str(), p)).collect();
    containers
        .iter()
        .map(|c| {
            let metadata = c.metadata.clone().unwrap_or_default();
            let image = c
                .image
                .as_ref()
                .into_iter()
                .flat_map(|spec| [&spec.user_specified_image, &spec.image])
                .find(|name| !name.is_empty())
                .unwrap_or(&c.image_ref)
                .clone();
            let pod = by_id.get(c.pod_sandbox_id.as_str()).map(|p| {
                let metadata = p.metadata.clone().unwrap_or_default();
                PodIdentity {
                    sandbox_id: p.id.clone(),
                    name: metadata.name,
                    namespace: metadata.namespace,
                    uid: metadata.uid,
                    labels: p.labels.clone(),
                }
            });
            PodContainer {
                id: c.id.clone(),
                name: metadata.name,
                image,
                // A state this proto does not know yet (a newer runtime) is not "created".
                state: ContainerState::try_from(c.state)
                    .unwrap_or(ContainerState::ContainerUnknown),
                labels: c.labels.clone(),
                pod,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cri::proto::{ContainerMetadata, ImageSpec, PodSandboxMetadata};

    fn pod(id: &str, name: &str, uid: &str) -> PodSandbox {
        PodSandbox {
            id: id.into(),
            metadata: Some(PodSandboxMetadata {
                name: name.into(),
                uid: uid.into(),
                namespace: "shop".into(),
                attempt: 0,
            }),
            labels: HashMap::from([("app".into(), "web".into())]),
            ..PodSandbox::default()
        }
    }

    fn container(id: &str, pod: &str, image: &str, image_ref: &str, state: i32) -> Container {
        Container {
            id: id.into(),
            pod_sandbox_id: pod.into(),
            metadata: Some(ContainerMetadata {
                name: format!("{id}-name"),
                attempt: 0,
            }),
            image: Some(ImageSpec {
                image: image.into(),
                ..ImageSpec::default()
            }),
            image_ref: image_ref.into(),
            state,
            ..Container::default()
        }
    }

    #[test]
    fn containers_get_their_own_pod() {
        let pods = [pod("p1", "web-1", "uid-1"), pod("p2", "web-2", "uid-2")];
        let containers = [
            container("c2", "p2", "docker.io/library/web:1", "sha256:2", 1),
            container("c1", "p1", "docker.io/library/web:1", "sha256:1", 2),
        ];
        let joined = join_pods(&pods, &containers);
        assert_eq!(joined.len(), 2);
        assert_eq!(joined[0].id, "c2");
        assert_eq!(joined[0].name, "c2-name");
        assert_eq!(joined[0].state, ContainerState::ContainerRunning);
        let pod = joined[0].pod.as_ref().unwrap();
        assert_eq!(
            (pod.name.as_str(), pod.uid.as_str(), pod.namespace.as_str()),
            ("web-2", "uid-2", "shop")
        );
        assert_eq!(pod.labels.get("app").map(String::as_str), Some("web"));
        assert_eq!(joined[1].pod.as_ref().unwrap().name, "web-1");
        assert_eq!(joined[1].state, ContainerState::ContainerExited);
    }

    #[test]
    fn the_pod_specs_image_name_comes_before_the_image_id() {
        let mut by_id = container("c", "p", "sha256:2", "sha256:2", 1);
        if let Some(spec) = by_id.image.as_mut() {
            spec.user_specified_image = "docker.io/library/web:1".into();
        }
        let joined = join_pods(&[], &[by_id]);
        assert_eq!(joined[0].image, "docker.io/library/web:1");
    }

    #[test]
    fn image_falls_back_to_the_reference_and_unknown_states_stay_unknown() {
        let joined = join_pods(&[], &[container("c", "gone", "", "sha256:abc", 42)]);
        assert_eq!(joined[0].image, "sha256:abc");
        assert_eq!(joined[0].state, ContainerState::ContainerUnknown);
        assert_eq!(
            joined[0].pod, None,
            "a container whose sandbox is gone has no pod"
        );
    }
}
