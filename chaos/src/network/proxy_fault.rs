//! The proxy fault kinds — `latency`, `bandwidth` and the general `proxy` (any toxics) — as
//! [`Fault`] impls over [`Proxy`].
//!
//! The proxy is the one fault whose effect lives in the agent's memory rather than in the
//! kernel, while [`Fault::revert`] must work from a [`RevertRecord`] alone. So `apply` starts
//! the proxy on the engine's tokio runtime and keeps it in a process-wide registry keyed by
//! fault id; `revert` stops the registered proxy (listener closed, connections closed) when
//! there is one. When there is none, the process that ran it has died — and its listener and
//! connections died with it — so revert only confirms that: the record names the owning
//! process (pid + start time) and the listen address; revert fails only while that owner is
//! still alive (revert through that agent instead), and notes whether something else now
//! listens on the address.

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener, ToSocketAddrs};
use std::sync::{LazyLock, Mutex, MutexGuard};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::proxy::{Proxy, ProxySpec};
use super::toxic::{Stream, Toxic};
use super::{NetTarget, plan_with};
use crate::error::FaultError;
use crate::fault::{Context, Effect, Fault, Plan, RevertRecord};
use crate::procfs::ProcessIdentity;
use crate::units::HumanDuration;

/// `latency`: a proxy adding `latency ± jitter` (downstream by default, so a request-response
/// round trip gains it once).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, clap::Args)]
#[serde(deny_unknown_fields)]
pub struct LatencySpec {
    /// Address the proxy listens on (clients connect here).
    #[arg(long)]
    pub listen: SocketAddr,
    /// The real service (`host:port`).
    #[arg(long)]
    pub upstream: String,
    /// Added delay.
    #[arg(long)]
    pub latency: HumanDuration,
    /// Uniform spread around the latency (±).
    #[arg(long)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jitter: Option<HumanDuration>,
    /// Which direction is delayed.
    #[arg(long, value_enum, default_value_t = Stream::Downstream)]
    #[serde(default)]
    pub stream: Stream,
    /// How long the fault lasts.
    #[arg(long)]
    pub duration: HumanDuration,
}

/// `bandwidth`: a proxy limiting throughput to `rate` KB/s.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, clap::Args)]
#[serde(deny_unknown_fields)]
pub struct BandwidthSpec {
    /// Address the proxy listens on.
    #[arg(long)]
    pub listen: SocketAddr,
    /// The real service (`host:port`).
    #[arg(long)]
    pub upstream: String,
    /// Kilobytes (1000 bytes) per second.
    #[arg(long)]
    pub rate: u64,
    /// Which direction is limited.
    #[arg(long, value_enum, default_value_t = Stream::Downstream)]
    #[serde(default)]
    pub stream: Stream,
    /// How long the fault lasts.
    #[arg(long)]
    pub duration: HumanDuration,
}

/// `proxy`: a proxy with any toxics, e.g.
/// `--toxic reset_peer,timeout=2s --toxic latency,latency=20ms,stream=both`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, clap::Args)]
#[serde(deny_unknown_fields)]
pub struct ProxyFaultSpec {
    /// Address the proxy listens on.
    #[arg(long)]
    pub listen: SocketAddr,
    /// The real service (`host:port`).
    #[arg(long)]
    pub upstream: String,
    /// A toxic: `TYPE[,key=value…]` (keys as in the JSON form) or a JSON object; repeatable,
    /// applied in order. Types: latency, bandwidth, timeout, reset_peer, slicer, slow_close,
    /// limit_data.
    #[arg(long = "toxic", value_parser = parse_toxic)]
    #[serde(default, rename = "toxics", alias = "toxic")]
    pub toxics: Vec<Toxic>,
    /// How long the fault lasts.
    #[arg(long)]
    pub duration: HumanDuration,
}

/// Parse `--toxic`: a JSON object, or `TYPE[,key=value…]` where values that are plain
/// integers become numbers and everything else stays a string (durations: `50ms`). Pure.
pub fn parse_toxic(s: &str) -> Result<Toxic, String> {
    let t = s.trim();
    let value = if t.starts_with('{') {
        serde_json::from_str::<serde_json::Value>(t).map_err(|e| format!("--toxic {t:?}: {e}"))?
    } else {
        let mut parts = t.split(',').map(str::trim);
        let kind = parts
            .next()
            .filter(|k| !k.is_empty())
            .ok_or("--toxic needs a type")?;
        let mut map = serde_json::Map::new();
        map.insert("type".into(), kind.into());
        for p in parts {
            let (k, v) = p
                .split_once('=')
                .ok_or_else(|| format!("--toxic {t:?}: expected key=value, found {p:?}"))?;
            let v = match v.parse::<u64>() {
                Ok(n) => serde_json::Value::from(n),
                Err(_) => serde_json::Value::from(v),
            };
            map.insert(k.trim().to_owned(), v);
        }
        serde_json::Value::Object(map)
    };
    let toxic: Toxic = serde_json::from_value(value).map_err(|e| format!("--toxic {t:?}: {e}"))?;
    toxic.validate().map_err(|e| e.to_string())?;
    Ok(toxic)
}

impl LatencySpec {
    /// The proxy this fault runs.
    pub fn proxy(&self) -> ProxySpec {
        ProxySpec {
            listen: self.listen,
            upstream: self.upstream.clone(),
            toxics: vec![Toxic::Latency {
                stream: self.stream,
                latency: self.latency.0,
                jitter: self.jitter.map(|j| j.0).unwrap_or_default(),
            }],
        }
    }
}

impl BandwidthSpec {
    /// The proxy this fault runs.
    pub fn proxy(&self) -> ProxySpec {
        ProxySpec {
            listen: self.listen,
            upstream: self.upstream.clone(),
            toxics: vec![Toxic::Bandwidth {
                stream: self.stream,
                rate: self.rate,
            }],
        }
    }
}

impl ProxyFaultSpec {
    /// The proxy this fault runs.
    pub fn proxy(&self) -> ProxySpec {
        ProxySpec {
            listen: self.listen,
            upstream: self.upstream.clone(),
            toxics: self.toxics.clone(),
        }
    }
}

/// What revert needs for a proxy fault.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProxyRecord {
    /// The bound listen address.
    pub listen: SocketAddr,
    /// The upstream, for reports.
    pub upstream: String,
    /// The process running the proxy; `None` until apply has started it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<ProcessIdentity>,
}

/// Proxies started by `apply` in this process, by fault id.
static RUNNING: LazyLock<Mutex<HashMap<String, Proxy>>> = LazyLock::new(Default::default);

fn running() -> MutexGuard<'static, HashMap<String, Proxy>> {
    // A panic while holding the lock cannot leave the map inconsistent (single inserts and
    // removes), so a poisoned lock is still usable.
    RUNNING
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn invalid(kind: &'static str) -> impl Fn(String) -> FaultError {
    move |message| FaultError::Invalid { kind, message }
}

fn plan_proxy(
    kind: &'static str,
    spec: &ProxySpec,
    duration: HumanDuration,
    ctx: &Context,
) -> Result<Plan, FaultError> {
    for t in &spec.toxics {
        t.validate().map_err(|e| invalid(kind)(e.to_string()))?;
    }
    let addrs: Vec<SocketAddr> = spec
        .upstream
        .to_socket_addrs()
        .map_err(|e| {
            invalid(kind)(format!(
                "--upstream {:?} does not resolve: {e}",
                spec.upstream
            ))
        })?
        .collect();
    if addrs.contains(&spec.listen) {
        return Err(invalid(kind)(format!(
            "--upstream {} is the listen address; that would loop",
            spec.upstream
        )));
    }
    // The listen address must be free now (binding and closing at once leaves nothing).
    if spec.listen.port() != 0 {
        TcpListener::bind(spec.listen).map_err(|e| {
            FaultError::Other(format!("{kind}: cannot listen on {}: {e}", spec.listen))
        })?;
    }
    let toxics = spec
        .toxics
        .iter()
        .map(|t| serde_json::to_string(t).unwrap_or_else(|_| t.name().to_owned()))
        .collect::<Vec<_>>()
        .join(" ");
    let target = NetTarget {
        netns: None,
        dev: None,
        detail: format!("proxy {} → {} toxics {toxics}", spec.listen, spec.upstream),
    };
    let rec = ProxyRecord {
        listen: spec.listen,
        upstream: spec.upstream.clone(),
        owner: None,
    };
    Ok(plan_with(
        ctx,
        kind,
        duration,
        vec![target.into_target()],
        vec![format!(
            "listen on {} and forward to {} through the toxics",
            spec.listen, spec.upstream
        )],
        vec![format!(
            "close the listener on {} and every proxied connection",
            spec.listen
        )],
        RevertRecord::with_state(&rec)?,
        None,
    ))
}

fn apply_proxy(
    kind: &'static str,
    spec: &ProxySpec,
    ctx: &Context,
) -> Result<RevertRecord, FaultError> {
    let handle = tokio::runtime::Handle::try_current().map_err(|_| {
        FaultError::Other(format!(
            "{kind}: the proxy runs on the agent's tokio runtime, and none is running"
        ))
    })?;
    let proxy = handle
        .block_on(Proxy::start(spec, &CancellationToken::new()))
        .map_err(|e| FaultError::Other(format!("{kind}: {e}")))?;
    let rec = ProxyRecord {
        listen: proxy.local_addr(),
        upstream: spec.upstream.clone(),
        owner: Some(ctx.env.agent.clone()),
    };
    info!(fault = %ctx.id, listen = %rec.listen, upstream = %rec.upstream, "proxy started");
    running().insert(ctx.id.as_str().to_owned(), proxy);
    RevertRecord::with_state(&rec)
}

fn check_proxy(record: &RevertRecord, ctx: &Context) -> Result<Effect, FaultError> {
    let rec: ProxyRecord = record.state()?;
    let mine = running().get(ctx.id.as_str()).map(Proxy::is_running);
    Ok(match mine {
        Some(true) => Effect::in_effect(format!(
            "proxy listening on {} → {}",
            rec.listen, rec.upstream
        )),
        Some(false) => Effect::not_in_effect(format!("proxy on {} has stopped", rec.listen)),
        None => Effect::not_in_effect(format!("no proxy for {} runs in this process", rec.listen)),
    })
}

fn revert_proxy(record: &RevertRecord, ctx: &Context) -> Result<(), FaultError> {
    let rec: ProxyRecord = record.state()?;
    let proxy = running().remove(ctx.id.as_str());
    if let Some(proxy) = proxy {
        match tokio::runtime::Handle::try_current() {
            Ok(h) => h.block_on(proxy.stop()),
            // Without a runtime the tasks cannot be awaited; dropping cancels them.
            Err(_) => drop(proxy),
        }
        return Ok(());
    }
    // Not ours: the process that ran it must be gone, and with it the listener.
    if let Some(owner) = &rec.owner
        && *owner != ctx.env.agent
        && crate::procfs::is_alive(&ctx.env.proc_root, owner, &ctx.env.boot_id)
    {
        return stop_owner(owner, &rec, ctx);
    }
    if rec.owner.is_some()
        && std::net::TcpStream::connect_timeout(&rec.listen, Duration::from_millis(200)).is_ok()
    {
        warn!(listen = %rec.listen, "the proxy's process is gone, but something else listens on its address now");
    }
    Ok(())
}

/// The proxy runs in another live process. A `faultline fault inject` process exists only to
/// hold its fault, so the kill switch (`fault revert --all`) asks it to revert with SIGTERM and
/// waits for the listener to close; any other owner (a running agent) is left alone and the
/// revert fails with a message saying where to revert it.
fn stop_owner(owner: &ProcessIdentity, rec: &ProxyRecord, ctx: &Context) -> Result<(), FaultError> {
    let cmdline = crate::procfs::cmdline(&ctx.env.proc_root, owner.pid);
    if !(cmdline.contains("fault") && cmdline.contains("inject")) {
        return Err(FaultError::Other(format!(
            "the proxy on {} runs in the live process {owner}; revert it through that agent",
            rec.listen
        )));
    }
    let pid = nix::unistd::Pid::from_raw(owner.pid);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).map_err(|errno| {
        FaultError::Sys {
            action: format!(
                "asking the holder {owner} of the proxy on {} to revert (SIGTERM)",
                rec.listen
            ),
            errno,
        }
    })?;
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    while std::time::Instant::now() < deadline {
        if std::net::TcpStream::connect_timeout(&rec.listen, Duration::from_millis(100)).is_err() {
            return Ok(());
        }
        // Polling a socket from a blocking fault method; nothing to await here.
        #[allow(clippy::disallowed_methods)]
        std::thread::sleep(Duration::from_millis(20));
    }
    Err(FaultError::Other(format!(
        "the proxy on {} still listens 2s after SIGTERM to its holder {owner}",
        rec.listen
    )))
}

macro_rules! proxy_fault {
    ($spec:ty, $kind:literal) => {
        impl Fault for $spec {
            fn plan(&self, ctx: &Context) -> Result<Plan, FaultError> {
                plan_proxy($kind, &self.proxy(), self.duration, ctx)
            }
            fn apply(&self, _plan: &Plan, ctx: &Context) -> Result<RevertRecord, FaultError> {
                apply_proxy($kind, &self.proxy(), ctx)
            }
            fn check(&self, record: &RevertRecord, ctx: &Context) -> Result<Effect, FaultError> {
                check_proxy(record, ctx)
            }
            fn revert(&self, record: &RevertRecord, ctx: &Context) -> Result<(), FaultError> {
                revert_proxy(record, ctx)
            }
        }
    };
}

proxy_fault!(LatencySpec, "latency");
proxy_fault!(BandwidthSpec, "bandwidth");
proxy_fault!(ProxyFaultSpec, "proxy");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toxic_flags_parse_compact_and_json() {
        assert_eq!(
            parse_toxic("latency,latency=50ms,jitter=5ms,stream=both").unwrap(),
            Toxic::Latency {
                stream: Stream::Both,
                latency: Duration::from_millis(50),
                jitter: Duration::from_millis(5)
            }
        );
        assert_eq!(
            parse_toxic("limit_data,bytes=100").unwrap(),
            Toxic::LimitData {
                stream: Stream::Downstream,
                bytes: 100
            }
        );
        assert_eq!(
            parse_toxic(r#"{"type":"reset_peer","timeout":"1s","stream":"upstream"}"#).unwrap(),
            Toxic::ResetPeer {
                stream: Stream::Upstream,
                timeout: Duration::from_secs(1)
            }
        );
        assert!(
            parse_toxic("latency,latency")
                .unwrap_err()
                .contains("key=value")
        );
        assert!(
            parse_toxic("meteor")
                .unwrap_err()
                .contains("unknown variant")
        );
        assert!(
            parse_toxic("bandwidth,rate=0")
                .unwrap_err()
                .contains("rate must be > 0")
        );
    }
}
