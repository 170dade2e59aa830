//! What keeping container metadata current costs at 100 containers: one CRI refresh (the
//! collector's `ListPodSandbox` + `ListContainers` and their mapping,
//! [`CriLister::list`]) against a real containerd running 100 pods, next to the Docker
//! path's full listing ([`docker::list_all`]: `GET /containers/json` and one inspect per
//! container) against the Docker engine running 100 containers. The Docker path lists only
//! when it (re)connects and then follows `/events`, so its cost per cycle is nothing while
//! no container starts or stops; the CRI path lists every `containers.cri.refresh` (30 s by
//! default, three cycles at the default 10 s interval).
//!
//! Run (as root, with containerd, runc, ctr and Docker as for tests/tests/cri_containerd.rs):
//! `cargo bench -p faultline-benches --bench metadata`. `FAULTLINE_BENCH_CONTAINERS` sets
//! the count (default 100). Besides criterion's wall-clock figures it prints, per refresh,
//! the CPU time of the agent's side (from `/proc/thread-self/schedstat`: the listing runs on
//! a current-thread runtime on the measuring thread, as on the agent's metadata thread) and
//! the runtime daemon's (containerd's own process; dockerd's, which also serves whatever else
//! uses this machine's Docker at the time), over [`ROUNDS`] refreshes. Figures go to
//! docs/PERFORMANCE.md with the date and the command.
//!
//! The pods and containers are the test helpers' (`faultline_tests::containerd`,
//! `faultline_tests::docker`): made by this bench, removed when it ends, also on panic.

#![allow(clippy::expect_used, clippy::unwrap_used)] // A benchmark that cannot set up has nothing to measure.

use std::path::Path;
use std::time::{Duration, Instant};

use criterion::Criterion;
use faultline_agent::collectors::container::cri::CriLister;
use faultline_agent::collectors::container::docker;
use faultline_benches::thread_cpu_ns;
use faultline_chaos::docker::Docker;
use faultline_tests::containerd::Containerd;
use faultline_tests::docker::Container;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Refreshes per CPU measurement.
const ROUNDS: u32 = 50;
/// The allowlist, as a typical node's configuration has one.
const LABELS: [&str; 2] = ["app", "team"];

fn labels() -> Vec<String> {
    LABELS.iter().map(|l| (*l).to_owned()).collect()
}

fn count() -> usize {
    std::env::var("FAULTLINE_BENCH_CONTAINERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100)
}

/// User + system CPU time of process `pid`, in nanoseconds (clock ticks of 10 ms).
fn process_cpu_ns(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    ticks * 10_000_000
}

/// The process whose command line contains `needle` (the first found).
fn pid_with_cmdline(needle: &[u8]) -> u32 {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .find(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|raw| raw.windows(needle.len()).any(|w| w == needle))
        })
        .unwrap_or_else(|| panic!("no process with {:?}", String::from_utf8_lossy(needle)))
}

/// The Docker daemon's pid.
fn dockerd_pid() -> u32 {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .find(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|c| c.trim() == "dockerd")
        })
        .expect("dockerd runs")
}

/// Runs `refresh` [`ROUNDS`] times and prints the agent's and the daemon's CPU per refresh.
fn cpu_per_refresh(what: &str, daemon: u32, mut refresh: impl FnMut() -> usize) {
    let entries = refresh();
    let (agent0, daemon0, wall0) = (thread_cpu_ns(), process_cpu_ns(daemon), Instant::now());
    for _ in 0..ROUNDS {
        refresh();
    }
    let agent = (thread_cpu_ns() - agent0) / u64::from(ROUNDS);
    let daemon = (process_cpu_ns(daemon) - daemon0) / u64::from(ROUNDS);
    let wall = wall0.elapsed() / ROUNDS;
    println!(
        "{what}: {entries} entries; per refresh: agent CPU {:.2} ms, daemon CPU {:.2} ms, wall {:.2} ms",
        agent as f64 / 1e6,
        daemon as f64 / 1e6,
        wall.as_secs_f64() * 1e3
    );
}

fn bench_cri(c: &mut Criterion, setup: &tokio::runtime::Runtime, n: usize) {
    let Some(containerd) = setup.block_on(Containerd::start("metadata bench")) else {
        return;
    };
    let started = Instant::now();
    let mut pods = Vec::with_capacity(n);
    for i in 0..n {
        let app = format!("app-{}", i % 10);
        pods.push(setup.block_on(containerd.run_pod(
            "bench",
            &format!("pod-{i}"),
            &app,
            "main",
            &[],
        )));
    }
    println!("{n} CRI pods ready in {:?}", started.elapsed());
    let config = containerd.socket().parent().unwrap().join("config.toml");
    let daemon = pid_with_cmdline(config.as_os_str().as_encoded_bytes());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut lister = rt
        .block_on(CriLister::connect(containerd.socket(), labels()))
        .unwrap();
    cpu_per_refresh(&format!("CRI refresh, {n} pods"), daemon, || {
        rt.block_on(lister.list()).unwrap().len()
    });
    c.bench_function(&format!("cri_refresh/{n}"), |b| {
        b.iter(|| rt.block_on(lister.list()).unwrap());
    });
    drop(pods);
}

fn bench_docker(c: &mut Criterion, setup: &tokio::runtime::Runtime, n: usize) {
    let socket = Path::new(faultline_chaos::docker::DEFAULT_SOCKET);
    if !socket.exists() {
        println!("SKIPPED the Docker path: no {}", socket.display());
        return;
    }
    let started = Instant::now();
    let containers: Vec<Container> = (0..n)
        .map(|i| {
            let label = vec!["--label".to_owned(), format!("app=app-{}", i % 10)];
            setup.block_on(Container::run("metabench", &label, &[]))
        })
        .collect();
    println!("{n} Docker containers started in {:?}", started.elapsed());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let cancel = CancellationToken::new();
    let tracker = TaskTracker::new();
    let mut conn = rt
        .block_on(Docker::new(socket).connect(Duration::from_secs(10), &cancel, &tracker))
        .unwrap();
    cpu_per_refresh(
        &format!("Docker full listing, {n} containers (+ the machine's others)"),
        dockerd_pid(),
        || {
            rt.block_on(docker::list_all(&mut conn, &labels()))
                .unwrap()
                .len()
        },
    );
    c.bench_function(&format!("docker_list_all/{n}"), |b| {
        b.iter(|| rt.block_on(docker::list_all(&mut conn, &labels())).unwrap());
    });
    cancel.cancel();
    drop(conn);
    drop(containers);
}

fn main() {
    let n = count();
    let setup = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut c = Criterion::default()
        .configure_from_args()
        .sample_size(20)
        .measurement_time(Duration::from_secs(10));
    bench_cri(&mut c, &setup, n);
    bench_docker(&mut c, &setup, n);
    c.final_summary();
}
