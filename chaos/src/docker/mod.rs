//! faultline's one Docker Engine API client: HTTP/1.1 over the Engine's unix socket
//! (`/var/run/docker.sock` by default) with hyper's connection API, and the Engine's answers
//! as types ([`parse`]). The container faults ([`crate::container`]), the agent's container
//! metadata collector and its drills' recovery actions all talk to Docker through it.
//!
//! Two ways to talk:
//! - [`Docker::inspect`], [`Docker::list_running`] and [`Docker::post`]: one request on a connection of its own, driven
//!   inside the call's own future, so no task outlives a call — usable from a throwaway
//!   runtime (the faults' blocking methods run one per call).
//! - [`Docker::connect`]: a kept-alive [`Connection`] for many requests and for the event
//!   stream ([`Connection::container_events`]), its driver a task on the caller's
//!   [`TaskTracker`] that ends with the caller's [`CancellationToken`] or with the
//!   connection.
//!
//! Every container reference is checked ([`valid_container_ref`]) before it goes into a
//! path. Not here: what a caller makes of an answer (a fault's checks, the collector's
//! metadata cache and its reconnect loop).

mod parse;

pub use parse::{
    ContainerInfo, ContainerState, Event, ImageInfo, InspectConfig, error_message, parse_event,
    parse_image, parse_inspect, parse_list, valid_container_ref,
};

use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use thiserror::Error;
use tokio::net::UnixStream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::debug;

/// The Docker Engine socket used when none is given.
pub const DEFAULT_SOCKET: &str = "/var/run/docker.sock";

/// How long one call on a connection of its own may take, on top of a stop/restart grace
/// period.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// `filters={"type":["container"]}`, URL-encoded.
const EVENTS_PATH: &str = "/events?filters=%7B%22type%22%3A%5B%22container%22%5D%7D";

/// A Docker Engine API call that failed.
#[derive(Debug, Error)]
pub enum DockerError {
    /// The socket could not be reached.
    #[error("cannot reach the Docker Engine at {socket}: {source}")]
    Connect {
        /// The socket path.
        socket: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A container reference that cannot go into an API path.
    #[error("{reference:?} is not a container id or name")]
    InvalidRef {
        /// The reference.
        reference: String,
    },
    /// HTTP-level failure.
    #[error("Docker Engine API {method} {path}: {message}")]
    Http {
        /// Method.
        method: String,
        /// Path.
        path: String,
        /// What went wrong.
        message: String,
    },
    /// The Engine answered with an error status.
    #[error("Docker Engine API {method} {path} answered {status}: {message}")]
    Status {
        /// Method.
        method: String,
        /// Path.
        path: String,
        /// HTTP status.
        status: u16,
        /// The Engine's `message`.
        message: String,
    },
    /// The call did not finish in time.
    #[error("Docker Engine API {method} {path} did not answer within {secs}s")]
    Timeout {
        /// Method.
        method: String,
        /// Path.
        path: String,
        /// Seconds waited.
        secs: u64,
    },
    /// An answer that is not what the API documents.
    #[error("Docker Engine API {path}: unexpected answer: {source}")]
    Decode {
        /// Path.
        path: String,
        /// What did not parse.
        source: serde_json::Error,
    },
}

impl DockerError {
    /// The HTTP status, when the Engine answered with an error.
    pub fn status(&self) -> Option<u16> {
        match self {
            DockerError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }

    fn http(method: &Method, path: &str, e: impl std::fmt::Display) -> Self {
        DockerError::Http {
            method: method.to_string(),
            path: path.to_owned(),
            message: e.to_string(),
        }
    }

    fn timeout(method: &Method, path: &str, limit: Duration) -> Self {
        DockerError::Timeout {
            method: method.to_string(),
            path: path.to_owned(),
            secs: limit.as_secs(),
        }
    }

    fn decode(path: &str) -> impl FnOnce(serde_json::Error) -> Self {
        let path = path.to_owned();
        move |source| DockerError::Decode { path, source }
    }
}

/// A Docker Engine API client over a unix socket.
#[derive(Clone, Debug)]
pub struct Docker {
    socket: PathBuf,
}

type Handshake = (
    http1::SendRequest<Empty<Bytes>>,
    http1::Connection<TokioIo<UnixStream>, Empty<Bytes>>,
);

impl Docker {
    /// A client for the Engine at `socket`.
    pub fn new(socket: impl Into<PathBuf>) -> Self {
        Docker {
            socket: socket.into(),
        }
    }

    /// The Engine's socket.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    async fn handshake(&self, method: &Method, path: &str) -> Result<Handshake, DockerError> {
        let stream =
            UnixStream::connect(&self.socket)
                .await
                .map_err(|source| DockerError::Connect {
                    socket: self.socket.clone(),
                    source,
                })?;
        http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| DockerError::http(method, path, e))
    }

    /// One request on a connection of its own, within [`CALL_TIMEOUT`] + `extra`; returns
    /// the body. Error statuses become [`DockerError::Status`].
    async fn call(
        &self,
        method: Method,
        path: &str,
        extra: Duration,
    ) -> Result<Bytes, DockerError> {
        let limit = CALL_TIMEOUT + extra;
        let work = async {
            let (mut sender, conn) = self.handshake(&method, path).await?;
            let exchange = async {
                let answer = exchange(&mut sender, &method, path).await;
                // Dropping the sender lets the connection future finish.
                drop(sender);
                answer
            };
            // The connection is driven here, in this future: no task to own or leak.
            let (answer, conn_result) = tokio::join!(exchange, conn);
            let (status, body) = answer?;
            if let Err(e) = conn_result {
                debug!(error = %e, "docker connection closed with an error after the answer");
            }
            success(&method, path, status, body)
        };
        tokio::time::timeout(limit, work)
            .await
            .unwrap_or_else(|_| Err(DockerError::timeout(&method, path, limit)))
    }

    /// `GET /containers/{id}/json`.
    pub async fn inspect(&self, id: &str) -> Result<ContainerInfo, DockerError> {
        let path = container_path(id, "json")?;
        let body = self.call(Method::GET, &path, Duration::ZERO).await?;
        parse_inspect(&body).map_err(DockerError::decode(&path))
    }

    /// The IDs of the running containers (`GET /containers/json`).
    pub async fn list_running(&self) -> Result<Vec<String>, DockerError> {
        let path = "/containers/json";
        let body = self.call(Method::GET, path, Duration::ZERO).await?;
        parse_list(&body).map_err(DockerError::decode(path))
    }

    /// `POST /containers/{id}/{action}{query}`; `extra` is added to the call's time limit.
    pub async fn post(
        &self,
        id: &str,
        action: &str,
        query: &str,
        extra: Duration,
    ) -> Result<(), DockerError> {
        let path = format!("{}{query}", container_path(id, action)?);
        self.call(Method::POST, &path, extra).await.map(drop)
    }

    /// A kept-alive connection whose requests each get `timeout`. Its driver runs on
    /// `tracker` until `cancel` or until the connection closes.
    pub async fn connect(
        &self,
        timeout: Duration,
        cancel: &CancellationToken,
        tracker: &TaskTracker,
    ) -> Result<Connection, DockerError> {
        let (sender, conn) = self.handshake(&Method::GET, "(handshake)").await?;
        let cancel = cancel.clone();
        tracker.spawn(async move {
            tokio::select! {
                () = cancel.cancelled() => {}
                r = conn => if let Err(e) = r { debug!(error = %e, "Docker connection closed"); }
            }
        });
        Ok(Connection { sender, timeout })
    }
}

/// `/containers/{id}/{rest}`, once `id` is known to be a container reference.
fn container_path(id: &str, rest: &str) -> Result<String, DockerError> {
    if !valid_container_ref(id) {
        return Err(DockerError::InvalidRef {
            reference: id.to_owned(),
        });
    }
    Ok(format!("/containers/{id}/{rest}"))
}

fn request(method: &Method, path: &str) -> Result<Request<Empty<Bytes>>, DockerError> {
    Request::builder()
        .method(method.clone())
        .uri(path)
        .header(http::header::HOST, "docker")
        .body(Empty::<Bytes>::new())
        .map_err(|e| DockerError::http(method, path, e))
}

async fn send(
    sender: &mut http1::SendRequest<Empty<Bytes>>,
    method: &Method,
    path: &str,
) -> Result<Response<Incoming>, DockerError> {
    let req = request(method, path)?;
    sender
        .ready()
        .await
        .map_err(|e| DockerError::http(method, path, e))?;
    sender
        .send_request(req)
        .await
        .map_err(|e| DockerError::http(method, path, e))
}

/// Sends one request and reads the whole answer.
async fn exchange(
    sender: &mut http1::SendRequest<Empty<Bytes>>,
    method: &Method,
    path: &str,
) -> Result<(StatusCode, Bytes), DockerError> {
    let resp = send(sender, method, path).await?;
    let status = resp.status();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| DockerError::http(method, path, e))?
        .to_bytes();
    Ok((status, body))
}

/// The body of a successful answer; an error status becomes [`DockerError::Status`].
fn success(
    method: &Method,
    path: &str,
    status: StatusCode,
    body: Bytes,
) -> Result<Bytes, DockerError> {
    if status.is_success() || status == StatusCode::NOT_MODIFIED {
        Ok(body)
    } else {
        Err(DockerError::Status {
            method: method.to_string(),
            path: path.to_owned(),
            status: status.as_u16(),
            message: error_message(&body),
        })
    }
}

/// A kept-alive connection to the Engine ([`Docker::connect`]).
#[derive(Debug)]
pub struct Connection {
    sender: http1::SendRequest<Empty<Bytes>>,
    timeout: Duration,
}

impl Connection {
    /// `GET path`, the whole body; `Ok(None)` on 404.
    async fn get(&mut self, path: &str) -> Result<Option<Bytes>, DockerError> {
        let method = Method::GET;
        let answer = tokio::time::timeout(self.timeout, exchange(&mut self.sender, &method, path))
            .await
            .map_err(|_| DockerError::timeout(&method, path, self.timeout))?;
        let (status, body) = answer?;
        if status == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        success(&method, path, status, body).map(Some)
    }

    /// `GET /containers/{id}/json`; `Ok(None)` when Docker does not know it.
    pub async fn inspect(&mut self, id: &str) -> Result<Option<ContainerInfo>, DockerError> {
        let path = container_path(id, "json")?;
        let Some(body) = self.get(&path).await? else {
            return Ok(None);
        };
        parse_inspect(&body)
            .map(Some)
            .map_err(DockerError::decode(&path))
    }

    /// `GET /images/{id}/json`; `Ok(None)` when Docker does not know it.
    pub async fn image(&mut self, id: &str) -> Result<Option<ImageInfo>, DockerError> {
        let path = format!("/images/{id}/json");
        let Some(body) = self.get(&path).await? else {
            return Ok(None);
        };
        parse_image(&body)
            .map(Some)
            .map_err(DockerError::decode(&path))
    }

    /// The IDs of the running containers (`GET /containers/json`).
    pub async fn list(&mut self) -> Result<Vec<String>, DockerError> {
        let path = "/containers/json";
        let body = self.get(path).await?.unwrap_or_default();
        parse_list(&body).map_err(DockerError::decode(path))
    }

    /// Follows the container events from now on (`GET /events`, containers only); the
    /// connection serves the stream alone from then on.
    pub async fn container_events(mut self) -> Result<Events, DockerError> {
        let method = Method::GET;
        let resp = tokio::time::timeout(self.timeout, send(&mut self.sender, &method, EVENTS_PATH))
            .await
            .map_err(|_| DockerError::timeout(&method, EVENTS_PATH, self.timeout))??;
        if !resp.status().is_success() {
            return Err(DockerError::Status {
                method: method.to_string(),
                path: EVENTS_PATH.into(),
                status: resp.status().as_u16(),
                message: String::new(),
            });
        }
        Ok(Events {
            body: resp.into_body(),
            pending: BytesMut::new(),
            _conn: self,
        })
    }
}

/// The container event stream ([`Connection::container_events`]).
#[derive(Debug)]
pub struct Events {
    body: Incoming,
    pending: BytesMut,
    /// Keeps the connection's sending half while the stream is read.
    _conn: Connection,
}

impl Events {
    /// The next container event; `Ok(None)` when the stream ends. Lines that do not parse
    /// are skipped (logged at debug). Cancel-safe: what was read stays buffered here.
    pub async fn next(&mut self) -> Result<Option<Event>, DockerError> {
        loop {
            while let Some(nl) = self.pending.iter().position(|b| *b == b'\n') {
                let line = self.pending.split_to(nl + 1);
                match parse_event(&line) {
                    Ok(Some(ev)) => return Ok(Some(ev)),
                    Ok(None) => {}
                    Err(e) => debug!(error = %e, "unparseable Docker event skipped"),
                }
            }
            let Some(frame) = self.body.frame().await else {
                return Ok(None);
            };
            let frame = frame.map_err(|e| DockerError::http(&Method::GET, EVENTS_PATH, e))?;
            if let Ok(data) = frame.into_data() {
                self.pending.extend_from_slice(&data);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_absent_socket_is_a_clear_error() {
        let d = Docker::new("/nonexistent/docker.sock");
        let e = d.inspect("x").await.unwrap_err().to_string();
        assert!(
            e.contains("cannot reach the Docker Engine at /nonexistent/docker.sock"),
            "{e}"
        );
    }
}
