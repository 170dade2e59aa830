//! [`CriClient`]: the connection to one CRI runtime and the calls faultline makes on it.
//!
//! The tonic channel dials the unix socket itself (the URI tonic insists on is a placeholder)
//! and reconnects on its own when the runtime restarts. A `CriClient` is cheap to clone; clones
//! share the channel. Each call runs under a deadline, sent to the runtime as `grpc-timeout`
//! and enforced here as well, so a hung runtime costs a caller at most that long.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;
use tonic::transport::{Channel, Endpoint, Uri};

use super::error::{CallError, ConnectError, innermost};
use super::proto::runtime_service_client::RuntimeServiceClient;
use super::proto::{
    Container, ContainerFilter, ContainerStatus, ContainerStatusRequest, ListContainersRequest,
    ListPodSandboxRequest, PodSandbox, PodSandboxFilter, PodSandboxStatus, PodSandboxStatusRequest,
    StopContainerRequest, VersionRequest, VersionResponse,
};
use super::view::{PodContainer, join_pods};

/// The deadline of a query (`Version`, list and status calls) unless
/// [`CriClient::connect_with_timeout`] sets another.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// The deadline of the calls that create or remove pods and containers: a runtime on a busy
/// node can take tens of seconds to set up a sandbox.
pub(super) const LIFECYCLE_TIMEOUT: Duration = Duration::from_secs(120);
/// The CRI API version a client states in `VersionRequest` (the kubelet's value; runtimes
/// answer with their own).
const CLIENT_API_VERSION: &str = "0.1.0";

/// A connection to a CRI runtime (`runtime.v1` over its unix socket).
#[derive(Debug, Clone)]
pub struct CriClient {
    socket: Arc<Path>,
    service: RuntimeServiceClient<Channel>,
    timeout: Duration,
    runtime: VersionResponse,
}

impl CriClient {
    /// Connects to the runtime at `socket` and asks its `Version`, with [`DEFAULT_TIMEOUT`].
    ///
    /// # Errors
    /// [`ConnectError`], naming the socket: nothing listening there, not a CRI `runtime.v1`
    /// server, or no answer in time.
    pub async fn connect(socket: impl AsRef<Path>) -> Result<Self, ConnectError> {
        Self::connect_with_timeout(socket, DEFAULT_TIMEOUT).await
    }

    /// [`connect`](Self::connect) with `timeout` as the connect deadline and the deadline of
    /// every query made through this client.
    ///
    /// # Errors
    /// As [`connect`](Self::connect).
    pub async fn connect_with_timeout(
        socket: impl AsRef<Path>,
        timeout: Duration,
    ) -> Result<Self, ConnectError> {
        let socket: Arc<Path> = Arc::from(socket.as_ref());
        let dial = Arc::clone(&socket);
        // tonic requires a URI; the connector ignores it and always dials the socket.
        let channel = Endpoint::from_static("http://localhost")
            .connect_timeout(timeout)
            .connect_with_connector(tower::service_fn(move |_: Uri| {
                let path = Arc::clone(&dial);
                async move { UnixStream::connect(&*path).await.map(TokioIo::new) }
            }))
            .await
            .map_err(|source| ConnectError::Connect {
                socket: socket.to_path_buf(),
                reason: innermost(&source),
                source,
            })?;
        let mut client = Self {
            socket,
            service: RuntimeServiceClient::new(channel),
            timeout,
            runtime: VersionResponse::default(),
        };
        client.runtime = client.version().await.map_err(|e| match e {
            CallError::Timeout { socket, .. } => ConnectError::Timeout { socket, timeout },
            CallError::NotFound {
                socket, message, ..
            } => ConnectError::NotCri {
                socket,
                code: tonic::Code::NotFound,
                message,
            },
            CallError::Rpc {
                socket,
                code,
                message,
                ..
            } => ConnectError::NotCri {
                socket,
                code,
                message,
            },
            CallError::Incomplete { socket, field, .. } => ConnectError::NotCri {
                socket,
                code: tonic::Code::Internal,
                message: format!("the reply has no {field}"),
            },
        })?;
        Ok(client)
    }

    /// The socket this client talks to.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// The runtime's `Version` as answered at connect time: `runtime_name` (`containerd`,
    /// `cri-o`) is what telemetry calls `container.runtime`.
    pub fn runtime(&self) -> &VersionResponse {
        &self.runtime
    }

    /// Asks the runtime's name, version and CRI API version again.
    ///
    /// # Errors
    /// [`CallError`] naming the socket and `Version`.
    pub async fn version(&self) -> Result<VersionResponse, CallError> {
        let request = self.request(VersionRequest {
            version: CLIENT_API_VERSION.to_owned(),
        });
        self.call(
            "Version",
            || "runtime".to_owned(),
            self.timeout,
            |mut s| async move { s.version(request).await },
        )
        .await
    }

    /// The pod sandboxes matching `filter` (all with `None`), ready or not.
    ///
    /// # Errors
    /// [`CallError`] naming the socket and `ListPodSandbox`.
    pub async fn list_pod_sandboxes(
        &self,
        filter: Option<PodSandboxFilter>,
    ) -> Result<Vec<PodSandbox>, CallError> {
        let request = self.request(ListPodSandboxRequest { filter });
        let reply = self
            .call(
                "ListPodSandbox",
                || "pod sandboxes".to_owned(),
                self.timeout,
                |mut s| async move { s.list_pod_sandbox(request).await },
            )
            .await?;
        Ok(reply.items)
    }

    /// The status of pod sandbox `id`: state, creation time, network, metadata, labels.
    ///
    /// # Errors
    /// [`CallError::NotFound`] when the runtime knows no such sandbox; others as usual.
    pub async fn pod_sandbox_status(&self, id: &str) -> Result<PodSandboxStatus, CallError> {
        let target = || format!("pod sandbox {id}");
        let request = self.request(PodSandboxStatusRequest {
            pod_sandbox_id: id.to_owned(),
            verbose: false,
        });
        let reply = self
            .call(
                "PodSandboxStatus",
                target,
                self.timeout,
                |mut s| async move { s.pod_sandbox_status(request).await },
            )
            .await?;
        reply
            .status
            .ok_or_else(|| self.incomplete("PodSandboxStatus", target(), "status"))
    }

    /// The containers matching `filter` (all with `None`), in any state.
    ///
    /// # Errors
    /// [`CallError`] naming the socket and `ListContainers`.
    pub async fn list_containers(
        &self,
        filter: Option<ContainerFilter>,
    ) -> Result<Vec<Container>, CallError> {
        let request = self.request(ListContainersRequest { filter });
        let reply = self
            .call(
                "ListContainers",
                || "containers".to_owned(),
                self.timeout,
                |mut s| async move { s.list_containers(request).await },
            )
            .await?;
        Ok(reply.containers)
    }

    /// The status of container `id`: state, exit code and reason, times, image, labels (the
    /// CRI does not report the container's processes).
    ///
    /// # Errors
    /// [`CallError::NotFound`] when the runtime knows no such container; others as usual.
    pub async fn container_status(&self, id: &str) -> Result<ContainerStatus, CallError> {
        let target = || format!("container {id}");
        let request = self.request(ContainerStatusRequest {
            container_id: id.to_owned(),
            verbose: false,
        });
        let reply = self
            .call(
                "ContainerStatus",
                target,
                self.timeout,
                |mut s| async move { s.container_status(request).await },
            )
            .await?;
        reply
            .status
            .ok_or_else(|| self.incomplete("ContainerStatus", target(), "status"))
    }

    /// The containers matching `filter` (all with `None`), each with its pod's identity (see
    /// [`join_pods`]). Two list calls, made concurrently.
    ///
    /// # Errors
    /// The first [`CallError`] of the two calls.
    pub async fn list_pod_containers(
        &self,
        filter: Option<ContainerFilter>,
    ) -> Result<Vec<PodContainer>, CallError> {
        let (pods, containers) =
            tokio::try_join!(self.list_pod_sandboxes(None), self.list_containers(filter))?;
        Ok(join_pods(&pods, &containers))
    }

    /// Stops container `id`: SIGTERM (or the image's stop signal), then SIGKILL after
    /// `grace` (rounded up to whole seconds, as the CRI counts). Stopping a stopped container
    /// succeeds. On Kubernetes the kubelet, not faultline, starts the container again.
    ///
    /// # Errors
    /// [`CallError::NotFound`] when the runtime knows no such container; others as usual. The
    /// deadline is `grace` plus the client's query timeout.
    pub async fn stop_container(&self, id: &str, grace: Duration) -> Result<(), CallError> {
        let seconds = grace.as_secs() + u64::from(grace.subsec_nanos() > 0);
        let limit = grace + self.timeout;
        let request = self.request_with_deadline(
            StopContainerRequest {
                container_id: id.to_owned(),
                timeout: i64::try_from(seconds).unwrap_or(i64::MAX),
            },
            limit,
        );
        self.call(
            "StopContainer",
            || format!("container {id}"),
            limit,
            |mut s| async move { s.stop_container(request).await },
        )
        .await?;
        Ok(())
    }

    /// `message` as a request carrying the client's query deadline.
    pub(super) fn request<T>(&self, message: T) -> tonic::Request<T> {
        self.request_with_deadline(message, self.timeout)
    }

    /// `message` as a request carrying `deadline` as its `grpc-timeout`.
    pub(super) fn request_with_deadline<T>(
        &self,
        message: T,
        deadline: Duration,
    ) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        request.set_timeout(deadline);
        request
    }

    /// Runs one RPC on a clone of the stub with `limit` as its deadline, mapping a failure to
    /// a [`CallError`] that names the socket, `method` and `target()`.
    pub(super) async fn call<T, F, Fut>(
        &self,
        method: &'static str,
        target: impl FnOnce() -> String,
        limit: Duration,
        rpc: F,
    ) -> Result<T, CallError>
    where
        F: FnOnce(RuntimeServiceClient<Channel>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let socket = || self.socket.to_path_buf();
        match tokio::time::timeout(limit, rpc(self.service.clone())).await {
            Ok(Ok(reply)) => Ok(reply.into_inner()),
            Ok(Err(status)) if status.code() == tonic::Code::NotFound => Err(CallError::NotFound {
                socket: socket(),
                method,
                target: target(),
                message: status.message().to_owned(),
            }),
            // A deadline the runtime enforced from our grpc-timeout is the same event as ours.
            Ok(Err(status)) if status.code() == tonic::Code::DeadlineExceeded => {
                Err(CallError::Timeout {
                    socket: socket(),
                    method,
                    target: target(),
                    timeout: limit,
                })
            }
            Ok(Err(status)) => Err(CallError::Rpc {
                socket: socket(),
                method,
                target: target(),
                code: status.code(),
                message: status.message().to_owned(),
            }),
            Err(_elapsed) => Err(CallError::Timeout {
                socket: socket(),
                method,
                target: target(),
                timeout: limit,
            }),
        }
    }

    /// A reply that lacks `field`.
    pub(super) fn incomplete(
        &self,
        method: &'static str,
        target: String,
        field: &'static str,
    ) -> CallError {
        CallError::Incomplete {
            socket: PathBuf::from(&*self.socket),
            method,
            target,
            field,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn connect_names_a_missing_socket() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("runtime.sock");
        let error = CriClient::connect(&socket).await.unwrap_err();
        let text = error.to_string();
        assert!(matches!(error, ConnectError::Connect { .. }), "{error:?}");
        assert!(text.contains(&socket.display().to_string()), "{text}");
        assert!(text.contains("No such file or directory"), "{text}");
    }

    #[tokio::test]
    async fn connect_refuses_a_socket_that_does_not_speak_grpc() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("not-cri.sock");
        let listener = tokio::net::UnixListener::bind(&socket).unwrap();
        // Accepts and hangs up at once, as a non-gRPC server would after a bad request.
        let server = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                drop(stream);
            }
        });
        let error = CriClient::connect_with_timeout(&socket, Duration::from_secs(5))
            .await
            .unwrap_err();
        server.abort();
        let text = error.to_string();
        assert!(matches!(error, ConnectError::NotCri { .. }), "{error:?}");
        assert!(text.contains(&socket.display().to_string()), "{text}");
        assert!(text.contains("CRI plugin"), "{text}");
    }
}
