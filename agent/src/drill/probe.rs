//! Probes: one small trait ([`Probe`]: `probe() -> Outcome`, timed) and its four kinds —
//! HTTP (hyper client, a fresh connection each time so a restarted server is really seen),
//! TCP connect, a command (exit code, output match) and a threshold on a metric faultline
//! collects (evaluated against the latest [`Batch`] a [`MetricSource`] hands out).
//!
//! Also here: [`Clock`] (the drill's monotonic clock in Unix seconds) and [`run_command`],
//! the one way drills run commands (probes, fault steps, canary, recovery actions): no
//! shell, a timeout, killed on drop, output captured.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use faultline_exporters::model::Batch;
use futures::future::BoxFuture;
use http_body_util::{BodyExt, Full};
use serde::{Deserialize, Serialize};

use super::scenario::{CommandProbe, HttpProbe, MetricProbe, ProbeSpec, TcpProbe};

/// The drill's clock: Unix seconds, advancing monotonically from the moment it was made (a
/// wall-clock step during a drill does not bend its measurements).
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    unix0: f64,
    t0: Instant,
}

impl Default for Clock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock {
    /// Anchored now.
    pub fn new() -> Self {
        Clock {
            unix0: SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64()),
            t0: Instant::now(),
        }
    }

    /// Now, Unix seconds.
    pub fn now(&self) -> f64 {
        self.unix0 + self.t0.elapsed().as_secs_f64()
    }

    /// The Unix time of a monotonic instant.
    pub fn at(&self, i: Instant) -> f64 {
        if i >= self.t0 {
            self.unix0 + (i - self.t0).as_secs_f64()
        } else {
            self.unix0 - (self.t0 - i).as_secs_f64()
        }
    }
}

/// One probe result.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Outcome {
    /// The probe's name.
    pub probe: String,
    /// When it started, Unix seconds.
    pub at: f64,
    /// How long it took, seconds.
    pub latency: f64,
    /// Passed.
    pub ok: bool,
    /// What was seen (status, error, value).
    pub detail: String,
}

/// A probe.
pub trait Probe: Send + Sync {
    /// Its name.
    fn name(&self) -> &str;
    /// Runs once; never fails (a failure is an outcome).
    fn probe<'a>(&'a self, clock: &'a Clock) -> BoxFuture<'a, Outcome>;
}

/// Where metric probes read the latest collected batch.
pub trait MetricSource: Send + Sync {
    /// The newest batch, if one was collected.
    fn latest(&self) -> BoxFuture<'_, Result<Arc<Batch>, String>>;
}

/// The running agent's latest cycle (`faultline run`).
#[derive(Debug, Clone)]
pub struct WatchSource(pub tokio::sync::watch::Receiver<Option<Arc<Batch>>>);

impl MetricSource for WatchSource {
    fn latest(&self) -> BoxFuture<'_, Result<Arc<Batch>, String>> {
        Box::pin(async move {
            self.0
                .borrow()
                .clone()
                .ok_or_else(|| "no collection cycle has finished yet".to_owned())
        })
    }
}

/// Builds the probe a spec describes.
pub fn build(spec: &ProbeSpec, metrics: Option<Arc<dyn MetricSource>>) -> Box<dyn Probe> {
    let name = spec.name.clone();
    if let Some(h) = &spec.http {
        Box::new(Http::new(name, h.clone()))
    } else if let Some(t) = &spec.tcp {
        Box::new(Tcp {
            name,
            spec: t.clone(),
        })
    } else if let Some(c) = &spec.command {
        Box::new(Command {
            name,
            spec: c.clone(),
        })
    } else if let Some(m) = &spec.metric {
        Box::new(Metric {
            name,
            spec: m.clone(),
            source: metrics,
        })
    } else {
        // Validation guarantees one kind; a spec without one always fails, loudly.
        Box::new(Never { name })
    }
}

struct Never {
    name: String,
}

impl Probe for Never {
    fn name(&self) -> &str {
        &self.name
    }
    fn probe<'a>(&'a self, clock: &'a Clock) -> BoxFuture<'a, Outcome> {
        Box::pin(async move {
            Outcome {
                probe: self.name.clone(),
                at: clock.now(),
                latency: 0.0,
                ok: false,
                detail: "probe has no kind".into(),
            }
        })
    }
}

fn timed<'a, F>(name: &'a str, clock: &'a Clock, f: F) -> BoxFuture<'a, Outcome>
where
    F: Future<Output = (bool, String)> + Send + 'a,
{
    Box::pin(async move {
        let at = clock.now();
        let t = Instant::now();
        let (ok, detail) = f.await;
        Outcome {
            probe: name.to_owned(),
            at,
            latency: t.elapsed().as_secs_f64(),
            ok,
            detail,
        }
    })
}

/// The probes' (and the API client's) HTTP(S) client.
pub type HttpsClient = faultline_exporters::https::HttpsClient<Full<Bytes>>;

/// An HTTP client for probes and canary calls: rustls with the system's roots, no idle
/// connections kept (every call opens its own, so it sees the server as it is now).
pub fn http_client(timeout: Duration) -> HttpsClient {
    use faultline_exporters::https;
    https::fresh_client(https::system_roots(), timeout)
}

/// Sends one request; (status, body) or the error.
pub async fn http_call(
    client: &HttpsClient,
    method: &str,
    url: &str,
    body: Option<String>,
    timeout: Duration,
) -> Result<(u16, String), String> {
    let method = http::Method::from_bytes(method.as_bytes()).map_err(|e| e.to_string())?;
    let req = http::Request::builder()
        .method(method)
        .uri(url)
        .body(Full::new(Bytes::from(body.unwrap_or_default())))
        .map_err(|e| format!("bad request: {e}"))?;
    send_request(client, req, timeout).await
}

/// Sends a ready-made request; (status, body up to 1 MiB) or the error.
pub async fn send_request(
    client: &HttpsClient,
    req: http::Request<Full<Bytes>>,
    timeout: Duration,
) -> Result<(u16, String), String> {
    let exchange = async {
        let resp = client
            .request(req)
            .await
            .map_err(|e| faultline_exporters::https::error_chain(&e))?;
        let status = resp.status().as_u16();
        let limited = http_body_util::Limited::new(resp.into_body(), 1 << 20);
        let bytes = limited
            .collect()
            .await
            .map_err(|e| format!("reading body: {e}"))?
            .to_bytes();
        Ok((status, String::from_utf8_lossy(&bytes).into_owned()))
    };
    match tokio::time::timeout(timeout, exchange).await {
        Ok(r) => r,
        Err(_) => Err(format!(
            "no answer within {}",
            humantime::format_duration(timeout)
        )),
    }
}

struct Http {
    name: String,
    spec: HttpProbe,
    client: HttpsClient,
}

impl Http {
    fn new(name: String, spec: HttpProbe) -> Self {
        let client = http_client(spec.timeout.0);
        Http { name, spec, client }
    }
}

impl Probe for Http {
    fn name(&self) -> &str {
        &self.name
    }
    fn probe<'a>(&'a self, clock: &'a Clock) -> BoxFuture<'a, Outcome> {
        timed(&self.name, clock, async move {
            let t = Instant::now();
            let s = &self.spec;
            match http_call(&self.client, &s.method, &s.url, None, s.timeout.0).await {
                Err(e) => (false, e),
                Ok((status, body)) => {
                    let took = t.elapsed();
                    if status != s.status {
                        return (false, format!("status {status}, expected {}", s.status));
                    }
                    if let Some(want) = &s.body
                        && !body.contains(want.as_str())
                    {
                        return (false, format!("status {status}; body lacks {want:?}"));
                    }
                    if let Some(max) = s.max_latency
                        && took > max.0
                    {
                        return (
                            false,
                            format!(
                                "status {status} after {:.1} ms, above max_latency {max}",
                                took.as_secs_f64() * 1000.0
                            ),
                        );
                    }
                    (true, format!("status {status}"))
                }
            }
        })
    }
}

struct Tcp {
    name: String,
    spec: TcpProbe,
}

impl Probe for Tcp {
    fn name(&self) -> &str {
        &self.name
    }
    fn probe<'a>(&'a self, clock: &'a Clock) -> BoxFuture<'a, Outcome> {
        timed(&self.name, clock, async move {
            let connect = tokio::net::TcpStream::connect(self.spec.address.as_str());
            match tokio::time::timeout(self.spec.timeout.0, connect).await {
                Ok(Ok(_)) => (true, format!("connected to {}", self.spec.address)),
                Ok(Err(e)) => (false, format!("{}: {e}", self.spec.address)),
                Err(_) => (
                    false,
                    format!(
                        "{}: no connection within {}",
                        self.spec.address, self.spec.timeout
                    ),
                ),
            }
        })
    }
}

/// What a command did.
#[derive(Clone, Debug, PartialEq)]
pub struct CommandOutput {
    /// Exit code (`None`: killed by a signal or not started).
    pub code: Option<i32>,
    /// stdout.
    pub stdout: String,
    /// stderr (tail).
    pub stderr: String,
}

/// Runs `argv` (no shell) with a timeout; Err when it cannot start or times out (it is
/// killed then).
pub async fn run_command(argv: &[String], timeout: Duration) -> Result<CommandOutput, String> {
    let Some((program, args)) = argv.split_first() else {
        return Err("empty command".into());
    };
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    let child = cmd
        .spawn()
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    match tokio::time::timeout(timeout, child.wait_with_output()).await {
        Err(_) => Err(format!(
            "{program} did not finish within {} (killed)",
            humantime::format_duration(timeout)
        )),
        Ok(Err(e)) => Err(format!("{program}: {e}")),
        Ok(Ok(out)) => {
            let stderr = String::from_utf8_lossy(&out.stderr);
            let tail: String = stderr
                .chars()
                .rev()
                .take(2000)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect();
            Ok(CommandOutput {
                code: out.status.code(),
                stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
                stderr: tail,
            })
        }
    }
}

struct Command {
    name: String,
    spec: CommandProbe,
}

impl Probe for Command {
    fn name(&self) -> &str {
        &self.name
    }
    fn probe<'a>(&'a self, clock: &'a Clock) -> BoxFuture<'a, Outcome> {
        timed(&self.name, clock, async move {
            match run_command(&self.spec.run, self.spec.timeout.0).await {
                Err(e) => (false, e),
                Ok(out) => {
                    if out.code != Some(self.spec.exit_code) {
                        return (
                            false,
                            format!(
                                "exit code {}, expected {}; stderr: {}",
                                out.code.map_or("none (signal)".into(), |c| c.to_string()),
                                self.spec.exit_code,
                                out.stderr.trim()
                            ),
                        );
                    }
                    if let Some(want) = &self.spec.output
                        && !out.stdout.contains(want.as_str())
                    {
                        return (false, format!("output lacks {want:?}"));
                    }
                    (true, format!("exit code {}", self.spec.exit_code))
                }
            }
        })
    }
}

struct Metric {
    name: String,
    spec: MetricProbe,
    source: Option<Arc<dyn MetricSource>>,
}

impl Probe for Metric {
    fn name(&self) -> &str {
        &self.name
    }
    fn probe<'a>(&'a self, clock: &'a Clock) -> BoxFuture<'a, Outcome> {
        timed(&self.name, clock, async move {
            let Some(source) = &self.source else {
                return (false, "no metric source in this mode".into());
            };
            match source.latest().await {
                Err(e) => (false, e),
                Ok(batch) => evaluate_metric(&self.spec, &batch),
            }
        })
    }
}

/// Evaluates a metric threshold against a batch: every matching point must be within the
/// bounds; none matching fails. Pure.
pub fn evaluate_metric(spec: &MetricProbe, batch: &Batch) -> (bool, String) {
    let mut values = Vec::new();
    for rm in &batch.resources {
        for m in rm.metrics.iter().filter(|m| m.name == spec.name) {
            for p in &m.points {
                let matches = spec.attributes.iter().all(|(k, v)| {
                    p.attributes
                        .get(k)
                        .or_else(|| rm.resource.attributes.get(k))
                        .is_some_and(|a| a.to_text() == v.as_str())
                });
                if matches {
                    values.push(p.value.as_f64());
                }
            }
        }
    }
    if values.is_empty() {
        return (
            false,
            format!("no point of {} matches {:?}", spec.name, spec.attributes),
        );
    }
    for v in &values {
        if let Some(a) = spec.above
            && *v <= a
        {
            return (false, format!("{} = {v}, not above {a}", spec.name));
        }
        if let Some(b) = spec.below
            && *v >= b
        {
            return (false, format!("{} = {v}, not below {b}", spec.name));
        }
    }
    (
        true,
        format!(
            "{} = {}",
            spec.name,
            values.first().copied().unwrap_or_default()
        ),
    )
}

#[cfg(test)]
mod tests;
