//! The real `faultline run` exporting to an in-process OTLP receiver, once per transport
//! variant. Each test checks the whole export: names, units, instruments and attributes
//! against the semantic-conventions registry; the full metric list of the foundation issue;
//! counter monotonicity and start times; values against `/proc` read by the test at about the
//! same moment; resource attributes; and, where configured, compression and custom headers.

// A test binary: a panic *is* the failure report, so `expect` is how it reports.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use faultline_tests::{
    Agent, OtlpConfig, OtlpReceiver, Point, PointKind, Received, Semconv, Transport, procfs,
    semconv,
};

/// Name prefixes allowed outside the registry: faultline's self-telemetry and the documented
/// extras (load average and PSI have no semantic conventions yet).
const EXTRA_PREFIXES: &[&str] = &[
    "faultline.",
    "system.cpu.load_average.",
    "system.linux.pressure.",
    // Container extras (docs/METRICS.md, "Containers"), present when containers run.
    "container.memory.limit",
    "container.cpu.limit",
    "container.cpu.throttling_data.",
    "container.memory.oom_kills",
    "container.pids.",
    "container.linux.pressure.",
];

/// Open enums: values outside the registry's list are legitimate (every filesystem type the
/// kernel knows is a valid `system.filesystem.type`).
const OPEN_ENUMS: &[&str] = &["system.filesystem.type"];

/// Cycles to observe: counters must be checked across at least three.
const CYCLES: usize = 4;

/// Generous for 1 s cycles on a loaded 2-core CI machine; the agent normally needs ~CYCLES s.
const WAIT: Duration = Duration::from_secs(40);

const NANOS: u64 = 1_000_000_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_export_conforms_to_semconv_and_matches_proc() {
    run_and_check(Transport::Grpc, None, &[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_protobuf_export_conforms_to_semconv_and_matches_proc() {
    run_and_check(Transport::Http, None, &[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_protobuf_gzip_export_carries_custom_header() {
    run_and_check(
        Transport::Http,
        Some("gzip"),
        &[("x-faultline-test", "http-gzip-42")],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_gzip_export_carries_custom_header() {
    run_and_check(
        Transport::Grpc,
        Some("gzip"),
        &[("x-faultline-test", "grpc-gzip-42")],
    )
    .await;
}

/// What `/proc` said right after the newest request arrived.
struct ProcSnapshot {
    taken_at: SystemTime,
    mem_total_kb: u64,
    processes: u64,
    cpu_idle_secs: f64,
    lo_rx_bytes: Option<u64>,
}

impl ProcSnapshot {
    fn take() -> Self {
        Self {
            taken_at: SystemTime::now(),
            mem_total_kb: procfs::meminfo_kb("MemTotal"),
            processes: procfs::processes_created(),
            cpu_idle_secs: procfs::cpu_idle_secs(),
            lo_rx_bytes: procfs::net_rx_bytes("lo"),
        }
    }
}

async fn run_and_check(
    transport: Transport,
    compression: Option<&'static str>,
    headers: &[(&str, &str)],
) {
    let registry = semconv();
    let receiver = OtlpReceiver::start().await.expect("receiver starts");
    let mut config = OtlpConfig::new(transport, receiver.endpoint(transport));
    config.compression = compression;
    config.headers = headers
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    let mut agent = Agent::start(&config.to_yaml());

    let requests = receiver
        .wait_for(|reqs| cycles_with(reqs, "system.cpu.time") >= CYCLES, WAIT)
        .await;
    // Read /proc at once: the newest request was collected at most one export round trip ago.
    let proc_now = ProcSnapshot::take();

    let status = agent.terminate(Duration::from_secs(10)).await;
    assert!(
        status.is_some_and(|s| s.success()),
        "faultline run must exit 0 on SIGTERM, got {status:?}"
    );

    check_transport(&requests, transport, compression, headers);
    let points: Vec<Point> = requests.iter().flat_map(Received::points).collect();
    match registry {
        Some(registry) => check_semconv(&points, &registry),
        None => eprintln!("(semconv conformance skipped; the other checks ran)"),
    }
    check_required(&points);
    check_counters(&points);
    check_values(&points, &proc_now);
    check_resource(&points);
}

/// Number of distinct cycles (point timestamps) in which `metric` arrived.
fn cycles_with(requests: &[Received], metric: &str) -> usize {
    let stamps: BTreeSet<u64> = requests
        .iter()
        .filter(|r| r.accepted())
        .flat_map(Received::points)
        .filter(|p| p.name == metric)
        .map(|p| p.time_unix_nano)
        .collect();
    stamps.len()
}

fn check_transport(
    requests: &[Received],
    transport: Transport,
    compression: Option<&str>,
    headers: &[(&str, &str)],
) {
    for r in requests {
        assert_eq!(
            r.transport, transport,
            "request came in over the wrong transport"
        );
        match transport {
            Transport::Http => {
                assert_eq!(r.header("content-type"), Some("application/x-protobuf"));
                assert_eq!(
                    r.header("content-encoding"),
                    compression,
                    "HTTP Content-Encoding"
                );
            }
            Transport::Grpc => {
                assert_eq!(r.header("grpc-encoding"), compression, "gRPC grpc-encoding");
            }
        }
        for (k, v) in headers {
            assert_eq!(
                r.header(k),
                Some(*v),
                "custom header {k} must reach the backend"
            );
        }
    }
}

/// (a) Every metric the registry knows matches it; every other one is a documented extra.
fn check_semconv(points: &[Point], registry: &Semconv) {
    let mut errors = BTreeSet::new();
    for p in points {
        for key in p.attributes.keys() {
            if registry
                .attributes
                .get(key)
                .is_some_and(|a| a.deprecated.is_some())
            {
                errors.insert(format!("{}: attribute {key} is deprecated", p.name));
            }
        }
        let Some(def) = registry.metrics.get(&p.name) else {
            if !EXTRA_PREFIXES
                .iter()
                .any(|prefix| p.name.starts_with(prefix))
            {
                errors.insert(format!(
                    "{}: not in the registry and not a documented extra",
                    p.name
                ));
            }
            continue;
        };
        if let Some(dep) = &def.deprecated {
            errors.insert(format!(
                "{}: deprecated ({}), use {:?}",
                p.name, dep.reason, dep.renamed_to
            ));
        }
        if p.unit != def.unit {
            errors.insert(format!(
                "{}: unit {:?}, registry {:?}",
                p.name, p.unit, def.unit
            ));
        }
        let expected = match def.instrument.as_str() {
            "counter" => PointKind::Sum {
                monotonic: true,
                cumulative: true,
            },
            "updowncounter" => PointKind::Sum {
                monotonic: false,
                cumulative: true,
            },
            "gauge" => PointKind::Gauge,
            other => {
                errors.insert(format!(
                    "{}: registry instrument {other} not expected",
                    p.name
                ));
                continue;
            }
        };
        if p.kind != expected {
            errors.insert(format!(
                "{}: sent as {:?}, registry says {} ({expected:?})",
                p.name, p.kind, def.instrument
            ));
        }
        for (key, value) in &p.attributes {
            if !def.attributes.contains_key(key) {
                errors.insert(format!(
                    "{}: attribute {key} not defined for this metric",
                    p.name
                ));
                continue;
            }
            let Some(attr) = registry.attributes.get(key) else {
                continue;
            };
            if attr.kind == "enum" && !OPEN_ENUMS.contains(&key.as_str()) {
                let values = attr.value_texts();
                if !values.iter().any(|v| v == value) {
                    errors.insert(format!(
                        "{}: {key}={value:?} is not one of {values:?}",
                        p.name
                    ));
                }
            }
        }
        for key in def.attributes.keys() {
            if def.requires(key) && !p.attributes.contains_key(key) {
                errors.insert(format!("{}: required attribute {key} missing", p.name));
            }
        }
    }
    assert!(
        errors.is_empty(),
        "semantic-convention violations (registry {}):\n{}",
        registry.source,
        errors.into_iter().collect::<Vec<_>>().join("\n")
    );
}

/// (b) The foundation issue's list, plus swap, CPU frequency and PSI where the host has them.
fn check_required(points: &[Point]) {
    let names: BTreeSet<&str> = points.iter().map(|p| p.name.as_str()).collect();
    let missing = procfs::missing_host_metrics(&names);
    assert!(
        missing.is_empty(),
        "required metrics missing: {missing:?}\nsent: {names:?}"
    );
}

/// (c) Every counter series is non-decreasing over at least three cycles, and kernel counters
/// start at boot (`btime`, ±1 s) — or, for a device that appeared during the run (a test's
/// veth, a container's interface), at the cycle that first saw it.
fn check_counters(points: &[Point]) {
    let boot_nanos = procfs::boot_time_secs() * NANOS;
    let mut series: BTreeMap<String, Vec<&Point>> = BTreeMap::new();
    for p in points.iter().filter(|p| {
        matches!(
            p.kind,
            PointKind::Sum {
                monotonic: true,
                ..
            }
        )
    }) {
        series.entry(p.series()).or_default().push(p);
    }
    assert!(!series.is_empty(), "no counters arrived");
    let first_cycle = points
        .iter()
        .map(|p| p.time_unix_nano)
        .min()
        .unwrap_or_default();
    let mut errors = Vec::new();
    for (key, mut pts) in series {
        pts.sort_by_key(|p| p.time_unix_nano);
        pts.dedup_by_key(|p| p.time_unix_nano);
        let present_from_start = pts[0].time_unix_nano == first_cycle;
        if present_from_start && pts.len() < 3 {
            errors.push(format!("{key}: only in {} cycle(s)", pts.len()));
        }
        for w in pts.windows(2) {
            if w[1].value < w[0].value {
                errors.push(format!(
                    "{key}: went down from {} to {}",
                    w[0].value, w[1].value
                ));
            }
            if w[1].start_time_unix_nano != w[0].start_time_unix_nano {
                errors.push(format!("{key}: start time changed between cycles"));
            }
        }
        let expected_start = if present_from_start {
            boot_nanos
        } else {
            pts[0].time_unix_nano
        };
        for p in &pts {
            if p.start_time_unix_nano == 0 || p.start_time_unix_nano > p.time_unix_nano {
                errors.push(format!(
                    "{key}: start {} vs time {}",
                    p.start_time_unix_nano, p.time_unix_nano
                ));
            }
            if p.name.starts_with("system.")
                && p.start_time_unix_nano.abs_diff(expected_start) > NANOS
            {
                errors.push(format!(
                    "{key}: start time {} is not {expected_start} (boot, or first seen; ±1 s)",
                    p.start_time_unix_nano
                ));
            }
        }
    }
    assert!(
        errors.is_empty(),
        "counter violations:\n{}",
        errors.join("\n")
    );
}

/// The points of `name` in the newest cycle.
fn latest<'a>(points: &'a [Point], name: &str) -> Vec<&'a Point> {
    let newest = points
        .iter()
        .filter(|p| p.name == name)
        .map(|p| p.time_unix_nano)
        .max();
    points
        .iter()
        .filter(|p| p.name == name && Some(p.time_unix_nano) == newest)
        .collect()
}

fn single(points: &[Point], name: &str) -> f64 {
    let pts = latest(points, name);
    assert_eq!(
        pts.len(),
        1,
        "{name}: expected one point per cycle, got {pts:?}"
    );
    pts[0].value
}

fn secs_since_epoch(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or_default()
}

/// (d) Values agree with `/proc` read by the test just after the newest request arrived.
fn check_values(points: &[Point], proc_now: &ProcSnapshot) {
    // Exact: MemTotal does not change while the host runs.
    let limit = single(points, "system.memory.limit");
    assert_eq!(
        limit,
        (proc_now.mem_total_kb * 1024) as f64,
        "system.memory.limit vs MemTotal"
    );

    // Between the agent's read and ours, at most one cycle plus an export passed; 500 new
    // processes in that window would mean a fork storm, not a faultline bug.
    let created = single(points, "system.process.created");
    let ours = proc_now.processes as f64;
    assert!(
        created <= ours && ours - created <= 500.0,
        "system.process.created {created} vs /proc/stat processes {ours} (agent read first)"
    );

    // Idle time grows by at most one second per CPU per second: allow the age of the newest
    // cycle plus one second, per CPU, plus one tick of rounding.
    let idle_pts: Vec<&Point> = latest(points, "system.cpu.time")
        .into_iter()
        .filter(|p| p.attributes.get("cpu.mode").map(String::as_str) == Some("idle"))
        .collect();
    assert!(
        !idle_pts.is_empty(),
        "no system.cpu.time{{cpu.mode=idle}} points"
    );
    let per_cpu: Vec<&&Point> = idle_pts
        .iter()
        .filter(|p| p.attributes.contains_key("cpu.logical_number"))
        .collect();
    let idle: f64 = if per_cpu.is_empty() {
        idle_pts.iter().map(|p| p.value).sum()
    } else {
        per_cpu.iter().map(|p| p.value).sum()
    };
    let cycle_time = idle_pts[0].time_unix_nano as f64 / NANOS as f64;
    let age = (secs_since_epoch(proc_now.taken_at) - cycle_time).max(0.0);
    let cpus = procfs::cpu_count().max(1) as f64;
    let tolerance = cpus * (age + 1.0) + 1.0 / procfs::clock_ticks() as f64;
    assert!(
        (proc_now.cpu_idle_secs - idle).abs() <= tolerance,
        "idle cpu time {idle} s vs /proc/stat {} s (tolerance {tolerance:.2} s)",
        proc_now.cpu_idle_secs
    );

    // Loopback carries this very test's OTLP traffic (a few hundred kB per cycle at most), so
    // our later reading may exceed the agent's by that much; 16 MiB is far above it and far
    // below a wrong counter (which would be off by orders of magnitude or below ours).
    if let Some(ours) = proc_now.lo_rx_bytes {
        let lo: Vec<&Point> = latest(points, "system.network.io")
            .into_iter()
            .filter(|p| {
                p.attributes
                    .get("network.interface.name")
                    .map(String::as_str)
                    == Some("lo")
                    && p.attributes.get("network.io.direction").map(String::as_str)
                        == Some("receive")
            })
            .collect();
        assert_eq!(lo.len(), 1, "system.network.io for lo/receive: {lo:?}");
        let theirs = lo[0].value;
        let ours = ours as f64;
        assert!(
            theirs <= ours && ours - theirs <= 16.0 * 1024.0 * 1024.0,
            "lo receive bytes: agent {theirs}, /proc/net/dev {ours}"
        );
    }

    // Uptime: now minus boot time, minus the cycle's age (±2 s for rounding of btime).
    let uptime = single(points, "system.uptime");
    let expected = cycle_time - procfs::boot_time_secs() as f64;
    assert!(
        (uptime - expected).abs() <= 2.0,
        "system.uptime {uptime} vs expected {expected}"
    );
}

/// (e) Resource attributes identify the service and the host.
fn check_resource(points: &[Point]) {
    let resources: BTreeSet<Vec<(String, String)>> = points
        .iter()
        .filter(|p| p.name.starts_with("system."))
        .map(|p| p.resource.clone().into_iter().collect())
        .collect();
    assert_eq!(
        resources.len(),
        1,
        "host metrics must share one resource: {resources:?}"
    );
    let resource: BTreeMap<String, String> = resources
        .into_iter()
        .next()
        .unwrap_or_default()
        .into_iter()
        .collect();
    let get = |k: &str| resource.get(k).map(String::as_str);
    assert_eq!(get("service.name"), Some("faultline"), "{resource:?}");
    assert_eq!(get("os.type"), Some("linux"), "{resource:?}");
    for key in ["host.name", "host.arch", "service.instance.id"] {
        assert!(
            get(key).is_some_and(|v| !v.is_empty()),
            "resource lacks {key}: {resource:?}"
        );
    }
    if let Some(id) = procfs::machine_id() {
        assert_eq!(
            get("host.id"),
            Some(id.as_str()),
            "host.id must be /etc/machine-id"
        );
    }
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    assert_eq!(get("host.arch"), Some(arch), "host.arch per semconv enum");
}
