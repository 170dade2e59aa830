//! The bodies of faultline's fuzz targets: one function per group of parsers of outside
//! input, each handing the same bytes to every parser of its group. A parser must return a
//! value or an error for any input — a panic (index out of range, overflow: the targets are
//! built with overflow checks), an abort or a sanitizer report is a bug.
//!
//! Feeding every parser of a group the same input (instead of choosing one with a selector
//! byte) lets every fixture in `agent/tests/fixtures/` seed every parser without a mapping,
//! and costs little: the parsers are fast and libFuzzer keeps an input when it reaches new
//! code in any of them.
//!
//! Besides "no panic", some targets check properties that must hold for every accepted
//! input (a `FaultSpec` survives a JSON round trip, `MemInfo` states sum to at most the
//! total…); those are plain `assert!`s, so a violation is reported like a crash.
//!
//! The entry points are in `fuzz_targets/`; `run.sh` builds and runs them. Not a test
//! crate: the main workspace excludes this directory because cargo-fuzz builds it with
//! sanitizer flags.
#![forbid(unsafe_code)]

use std::path::Path;
use std::time::{Duration, SystemTime};

use faultline_agent::backup::parse as backup;
use faultline_agent::collectors::container::{cgroup, docker, kubelet, paths};
use faultline_agent::collectors::host::{
    connections, cpu, disk, filesystem, load, memory, network, paging, pressure, processes, uptime,
};

/// Every `/proc` parser of the host collectors, and the sock_diag netlink reply parser.
pub fn host_proc(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let text = text.as_ref();

    if let Ok(stat) = cpu::parse_stat(text) {
        // `parse_stat_into` must reuse a dirty buffer to the same result.
        let mut again = cpu::ProcStat {
            btime: Some(1),
            processes: Some(2),
            ..stat.clone()
        };
        assert!(cpu::parse_stat_into(text, &mut again).is_ok());
        assert_eq!(again, stat);
    }
    let _ = cpu::parse_btime(text);
    let _ = cpu::parse_cpuinfo_mhz(text);
    let _ = cpu::parse_cpuinfo_physical_cores(text);
    let _ = disk::parse_diskstats(text);
    let _ = filesystem::parse_mountinfo(text);
    let _ = load::parse_loadavg(text);
    if let Ok(m) = memory::parse_meminfo(text) {
        let states = m.states();
        let sum = states.iter().map(|(_, v)| u128::from(*v)).sum::<u128>();
        // The four states partition the total unless the kernel's own figures exceed it.
        let parts = u128::from(m.free)
            + u128::from(m.buffers)
            + u128::from(m.cached)
            + u128::from(m.sreclaimable.unwrap_or(0));
        assert!(sum == u128::from(m.total) || parts > u128::from(m.total));
    }
    let _ = network::parse_net_dev(text);
    let _ = paging::parse_swaps(text);
    let _ = paging::parse_vmstat(text);
    let _ = pressure::parse_pressure(text);
    let _ = uptime::parse_uptime(text);
    let _ = processes::parse_pid_stat_state(data);

    for msg_type in [20u16, 18] {
        let mut counts = [0u64; 14];
        let _ = connections::parse_datagram(data, 1, msg_type, &mut counts);
        let _ = connections::by_registry_state(&counts);
    }
}

/// Every cgroup (v1 and v2) file parser, and container recognition from cgroup paths.
pub fn cgroup(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let text = text.as_ref();

    let _ = cgroup::parse_u64(text);
    let _ = cgroup::parse_limit(text);
    let _ = cgroup::parse_cpu_stat_v2(text);
    let _ = cgroup::parse_cpu_stat_v1(text);
    let _ = cgroup::parse_cpuacct_stat(text);
    let _ = cgroup::parse_memory_stat(text, true);
    let _ = cgroup::parse_memory_stat(text, false);
    let _ = cgroup::parse_oom_kill(text);
    if let Ok(Some(cpus)) = cgroup::parse_cpu_max(text) {
        assert!(cpus >= 0.0, "negative CPU limit {cpus} from {text:?}");
    }
    let (quota, period) = text.split_once('\n').unwrap_or((text, ""));
    if let Ok(Some(cpus)) = cgroup::parse_cfs_quota(quota, period) {
        assert!(cpus >= 0.0, "negative CPU limit {cpus} from {text:?}");
    }
    let _ = cgroup::parse_io_stat(text);
    let _ = cgroup::parse_blkio(text);
    let _ = cgroup::parse_first_pid(text);
    let _ = paths::recognise(text);
    let _ = paths::is_container_id(text);

    // `adjust_cputime` on numbers taken from the input: the split sums to the total and
    // never goes backwards.
    let mut words = [0u64; 6];
    for (w, chunk) in words.iter_mut().zip(data.chunks(8)) {
        let mut b = [0u8; 8];
        b[..chunk.len()].copy_from_slice(chunk);
        *w = u64::from_le_bytes(b);
    }
    let [total, user, system, total2, user2, system2] = words;
    let mut prev = (0, 0);
    let (u, s) = cgroup::adjust_cputime(total, user, system, &mut prev);
    assert_eq!(u128::from(u) + u128::from(s), u128::from(total));
    let (u2, s2) = cgroup::adjust_cputime(total2, user2, system2, &mut prev);
    assert!(u2 >= u && s2 >= s, "cputime went backwards");
}

/// Docker Engine API answers and event lines, and the kubelet's `/pods`.
pub fn container_api(data: &[u8]) {
    let labels = ["app".to_owned(), "io.kubernetes.pod.name".to_owned()];
    use faultline_chaos::docker as engine_api;
    let _ = engine_api::parse_list(data);
    let _ = engine_api::parse_event(data);
    if let Ok(info) = engine_api::parse_inspect(data) {
        let _ = docker::container_meta(&info, &labels);
    }
    let _ = engine_api::parse_image(data);
    let _ = docker::split_image(&String::from_utf8_lossy(data));
    let _ = kubelet::parse_pods(data, &labels);
}

/// The agent's YAML configuration file (parse, environment substitution, validation).
pub fn config(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let _ = faultline_agent::config::parse(&text, "fuzz.yaml");
    let _ = faultline_agent::yaml::line_of(&text, "exporters.otlp.endpoint");
}

/// The game-day file parser (`faultline gameday run|validate`): any text gives a value or a
/// located error; what is accepted reads back the same from its own JSON rendering.
pub fn gameday(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    if let Ok(g) = faultline_agent::gameday::plan::parse(&text, "fuzz.yaml") {
        let json = serde_json::to_string(&g).unwrap_or_else(|e| panic!("serialise {g:?}: {e}"));
        // `${VAR}` in a value would be substituted again on the way back.
        if !json.contains('$') {
            let back = faultline_agent::gameday::plan::parse(&json, "fuzz.json")
                .unwrap_or_else(|e| panic!("{json} does not read back: {e}"));
            assert_eq!(back, g);
        }
    }
}

/// `FaultSpec` JSON (the body of the API's inject request, drill steps) and the unit
/// types inside it.
pub fn fault_spec(data: &[u8]) {
    if let Ok(spec) = serde_json::from_slice::<faultline_chaos::FaultSpec>(data) {
        let _ = spec.kind();
        let _ = spec.duration();
        // What is accepted must serialise and read back as the same spec.
        let json = serde_json::to_vec(&spec).unwrap_or_else(|e| panic!("serialise {spec:?}: {e}"));
        let back: faultline_chaos::FaultSpec = serde_json::from_slice(&json).unwrap_or_else(|e| {
            panic!(
                "{spec:?} does not read back: {e}: {}",
                String::from_utf8_lossy(&json)
            )
        });
        assert_eq!(back, spec);
    }
    let text = String::from_utf8_lossy(data);
    let _ = faultline_chaos::units::parse_bytes(&text);
    let _ = text.parse::<faultline_chaos::HumanDuration>();
    let _ = text.parse::<faultline_chaos::Percent>();
    let _ = text.parse::<faultline_chaos::SignalName>();
}

/// The fault journal's entry files, and the `/proc` files the chaos engine reads (the
/// container freezer's lookup included).
pub fn chaos_journal(data: &[u8]) {
    let _ = faultline_chaos::journal::parse_entry(Path::new("/fuzz/entry.json"), data);
    let text = String::from_utf8_lossy(data);
    let _ = faultline_chaos::procfs::parse_stat(&text);
    let _ = faultline_chaos::procfs::parse_cgroup(&text);
    let _ = faultline_chaos::procfs::parse_mem_available(&text);
    // A process's cgroup file and mountinfo, split at the first blank line.
    let (cgroup, mountinfo) = text.split_once("\n\n").unwrap_or((&text, &text));
    if let Some(found) = faultline_chaos::freezer::locate(cgroup, mountinfo) {
        assert!(
            found.cgroup.path != "/" && !found.cgroup.path.is_empty(),
            "the root cgroup is never a freezer target: {found:?}"
        );
    }
}

/// What restic, borg, pgBackRest and a `command` source print, and the time formats in it.
pub fn backup_output(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let text = text.as_ref();

    let mut snaps = Vec::new();
    if let Ok(s) = backup::restic::parse_snapshots(text) {
        snaps.extend(s);
    }
    let _ = backup::restic::parse_stats(text);
    let _ = backup::restic::check_findings(text);
    for offset in [0, 3600, -86_400 * 365] {
        if let Ok(s) = backup::borg::parse_list(text, offset) {
            snaps.extend(s);
        }
        if let Ok(s) = backup::borg::parse_info(text, offset) {
            snaps.extend(s);
        }
    }
    let _ = backup::borg::check_findings(text);
    if let Ok(s) = backup::command::parse_list(text) {
        snaps.extend(s);
    }
    let _ = backup::manifest::parse(text);
    let verify = backup::pgbackrest::parse_verify(text);
    if let Ok(info) = backup::pgbackrest::parse_info(text, "main") {
        snaps.extend(info.snapshots());
        let _ = backup::pgbackrest::wal_findings(&info, &verify.wal_ranges);
    }
    if let Ok(t) = faultline_agent::timefmt::parse_rfc3339(text) {
        snaps.push(backup::Snapshot {
            id: String::new(),
            time: t,
            size: None,
        });
    }
    if let Ok(t) = faultline_agent::timefmt::parse_naive(text, 0) {
        snaps.push(backup::Snapshot {
            id: String::new(),
            time: t,
            size: None,
        });
    }
    // Whatever time a tool printed is shown to people and summarised.
    for s in &snaps {
        let _ = faultline_agent::timefmt::format_utc(s.time);
    }
    let _ = faultline_agent::backup::inventory(&snaps, 1.7e9, Duration::from_secs(86_400), 0.5);
}

/// The OTLP backend's answers: `Retry-After`, gRPC status details (`RetryInfo`), HTTP
/// bodies (`google.rpc.Status`, partial success).
pub fn otlp_transport(data: &[u8]) {
    use faultline_exporters::otlp::transport;

    let text = String::from_utf8_lossy(data);
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let _ = transport::parse_retry_after(&text, now);
    let _ = transport::retry_info_delay(data);
    for status in [200u16, 400, 429, 503] {
        if let Ok(code) = http::StatusCode::from_u16(status) {
            let _ = transport::classify_http(code, None, data);
        }
    }
    let status = tonic::Status::with_details(tonic::Code::Unavailable, "fuzz", bytes_of(data));
    let _ = transport::classify_grpc(&status);
}

fn bytes_of(data: &[u8]) -> tonic::codegen::Bytes {
    tonic::codegen::Bytes::copy_from_slice(data)
}

/// A drill scenario file (YAML: environment substitution, the schema, validation against
/// what the agent knows).
pub fn drill_scenario(data: &[u8]) {
    use faultline_agent::drill::scenario;
    let text = String::from_utf8_lossy(data);
    for known in [
        scenario::Known::default(),
        scenario::Known {
            backup_sources: vec!["pg".into(), "restic".into()],
            max_fault_duration: Some(Duration::from_secs(60)),
        },
    ] {
        let _ = scenario::parse(&text, "fuzz.yaml", &known);
    }
}

/// The API's request bodies: `POST /v1/drills` (JSON envelope or YAML scenario) and
/// `POST /v1/faults` (a `FaultSpec`, the same parse as [`fault_spec`]). An error must be a
/// client error (4xx), never a server error.
pub fn api_body(data: &[u8]) {
    use faultline_agent::drill::scenario;
    let known = scenario::Known::default();
    let configured = |name: &str| {
        (name == "configured").then(|| {
            scenario::parse(
                "name: configured\nsteady_state: []\nrecovery: {strategy: self-heal, timeout: 1s}\n",
                "configured.yaml",
                &known,
            )
            .ok()
        })?
    };
    if let Err((status, msg)) = faultline_agent::api::parse_start_body(data, &known, configured) {
        assert!(status.is_client_error(), "{status} for a request body: {msg}");
        assert!(!msg.is_empty());
    }
    let _ = serde_json::from_slice::<faultline_chaos::FaultSpec>(data);
}

/// The API tokens file.
pub fn api_tokens(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    if let Ok(tokens) = faultline_agent::api::auth::Tokens::parse(&text, "tokens.yaml") {
        assert!(!tokens.is_empty(), "an accepted tokens file has no token");
        // No presented token is ever accepted unless it is one of the file's, and a
        // header without the Bearer scheme never is.
        let _ = tokens.from_header(Some(&text));
        assert!(tokens.from_header(Some("Basic x")).is_none());
    }
}
