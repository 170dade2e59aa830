//! Creating, starting and removing pod sandboxes and containers through the CRI, as the
//! kubelet does.
//!
//! For tests and tools that need real pods on a real runtime (the integration tests build
//! their pods with these). faultline itself never calls them: on a Kubernetes node the
//! kubelet owns every pod, and a fault only stops what the kubelet will start again. They
//! share the client's socket handling, deadlines ([`LIFECYCLE_TIMEOUT`]) and errors.

use super::client::{CriClient, LIFECYCLE_TIMEOUT};
use super::error::CallError;
use super::proto::{
    ContainerConfig, CreateContainerRequest, PodSandboxConfig, RemoveContainerRequest,
    RemovePodSandboxRequest, RunPodSandboxRequest, StartContainerRequest, StopPodSandboxRequest,
};

impl CriClient {
    /// Creates and starts a pod sandbox from `config` with the runtime's default handler;
    /// returns the sandbox id.
    ///
    /// # Errors
    /// [`CallError`] naming the socket, `RunPodSandbox` and the pod's namespace/name.
    pub async fn run_pod_sandbox(&self, config: PodSandboxConfig) -> Result<String, CallError> {
        let target = || {
            let meta = config.metadata.clone().unwrap_or_default();
            format!("pod {}/{}", meta.namespace, meta.name)
        };
        let request = self.request_with_deadline(
            RunPodSandboxRequest {
                config: Some(config.clone()),
                runtime_handler: String::new(),
            },
            LIFECYCLE_TIMEOUT,
        );
        let reply = self
            .call(
                "RunPodSandbox",
                target,
                LIFECYCLE_TIMEOUT,
                |mut s| async move { s.run_pod_sandbox(request).await },
            )
            .await?;
        Ok(reply.pod_sandbox_id)
    }

    /// Stops every container of sandbox `id` and the sandbox itself (idempotent).
    ///
    /// # Errors
    /// [`CallError`] naming the socket, `StopPodSandbox` and the sandbox.
    pub async fn stop_pod_sandbox(&self, id: &str) -> Result<(), CallError> {
        let request = self.request_with_deadline(
            StopPodSandboxRequest {
                pod_sandbox_id: id.to_owned(),
            },
            LIFECYCLE_TIMEOUT,
        );
        self.call(
            "StopPodSandbox",
            || format!("pod sandbox {id}"),
            LIFECYCLE_TIMEOUT,
            |mut s| async move { s.stop_pod_sandbox(request).await },
        )
        .await?;
        Ok(())
    }

    /// Removes sandbox `id` and its containers, running or not (idempotent).
    ///
    /// # Errors
    /// [`CallError`] naming the socket, `RemovePodSandbox` and the sandbox.
    pub async fn remove_pod_sandbox(&self, id: &str) -> Result<(), CallError> {
        let request = self.request_with_deadline(
            RemovePodSandboxRequest {
                pod_sandbox_id: id.to_owned(),
            },
            LIFECYCLE_TIMEOUT,
        );
        self.call(
            "RemovePodSandbox",
            || format!("pod sandbox {id}"),
            LIFECYCLE_TIMEOUT,
            |mut s| async move { s.remove_pod_sandbox(request).await },
        )
        .await?;
        Ok(())
    }

    /// Creates a container from `config` in sandbox `pod_sandbox_id` (whose `sandbox_config`
    /// the runtime needs again, as from the kubelet); returns the container id. The container
    /// is created, not started: see [`start_container`](Self::start_container).
    ///
    /// # Errors
    /// [`CallError`] naming the socket, `CreateContainer`, the container's name and its pod.
    pub async fn create_container(
        &self,
        pod_sandbox_id: &str,
        config: ContainerConfig,
        sandbox_config: PodSandboxConfig,
    ) -> Result<String, CallError> {
        let target = || {
            let name = config.metadata.clone().unwrap_or_default().name;
            format!("container {name} in pod sandbox {pod_sandbox_id}")
        };
        let request = self.request_with_deadline(
            CreateContainerRequest {
                pod_sandbox_id: pod_sandbox_id.to_owned(),
                config: Some(config.clone()),
                sandbox_config: Some(sandbox_config),
            },
            LIFECYCLE_TIMEOUT,
        );
        let reply = self
            .call(
                "CreateContainer",
                target,
                LIFECYCLE_TIMEOUT,
                |mut s| async move { s.create_container(request).await },
            )
            .await?;
        Ok(reply.container_id)
    }

    /// Starts created container `id`.
    ///
    /// # Errors
    /// [`CallError`] naming the socket, `StartContainer` and the container.
    pub async fn start_container(&self, id: &str) -> Result<(), CallError> {
        let request = self.request_with_deadline(
            StartContainerRequest {
                container_id: id.to_owned(),
            },
            LIFECYCLE_TIMEOUT,
        );
        self.call(
            "StartContainer",
            || format!("container {id}"),
            LIFECYCLE_TIMEOUT,
            |mut s| async move { s.start_container(request).await },
        )
        .await?;
        Ok(())
    }

    /// Removes container `id`, running or not (idempotent).
    ///
    /// # Errors
    /// [`CallError`] naming the socket, `RemoveContainer` and the container.
    pub async fn remove_container(&self, id: &str) -> Result<(), CallError> {
        let request = self.request_with_deadline(
            RemoveContainerRequest {
                container_id: id.to_owned(),
            },
            LIFECYCLE_TIMEOUT,
        );
        self.call(
            "RemoveContainer",
            || format!("container {id}"),
            LIFECYCLE_TIMEOUT,
            |mut s| async move { s.remove_container(request).await },
        )
        .await?;
        Ok(())
    }
}
