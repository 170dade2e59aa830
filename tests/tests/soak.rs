//! The soak: a real `faultline run` (1 s collection, the API on, OTLP over gRPC to the suite's
//! receiver, a drill on a cron schedule every minute) under a stream of fault inject/revert
//! cycles for `FAULTLINE_SOAK_SECONDS` (default 180: the form `cargo test --workspace` runs),
//! while the receiver goes away for 10 s every 30–60 s. By hand, an hour:
//! `FAULTLINE_SOAK_SECONDS=3600 cargo test -p faultline-tests --release --test soak -- --nocapture`.
//!
//! Two workers drive the faults, one after another each, as fast as each answer comes:
//! - **the API worker** (`POST /v1/faults`, then `DELETE /v1/faults/{id}`, or, every other
//!   round, a 300 ms fault left to revert at its deadline): process-pause and process-kill of
//!   the test's own `sleep` victims (a killed one is respawned), cpu-stress (1 worker, 20 %),
//!   memory-stress (16 MiB), disk-fill (1 MiB) and disk-io (1 MiB/s writes) on a 64 MiB tmpfs
//!   the test mounts, latency (20 ms) and bandwidth through the userspace proxy to the test's
//!   loopback echo server, rate-limit (tbf, and htb towards one address and port) and
//!   partition (nftables) inside a network namespace the test creates, and netem where the
//!   kernel has sch_netem (here it does not: the run prints `NOT TESTED here`). Each effect
//!   is checked with the test's own reads while it holds (`/proc/<pid>/stat` state, the
//!   victim's exit, a helper in `/proc`, a file in the tmpfs, an echo's round trip, `tc`/`nft`
//!   in the namespace) and, for the stateful ones, gone after the revert.
//! - **the CLI worker** (`faultline fault inject KIND … --duration 1s`, which goes through the
//!   running agent's API and holds until the deadline revert): the same kinds on its own
//!   victims, proxy port and a second veth pair in the namespaces, and `proxy` with a latency
//!   toxic.
//!
//! Container kinds are not soaked: they need a container runtime and an image of the test's
//! own, which `tests/chaos_container.rs` covers.
//!
//! Every 2 s the test samples, from its own reads ([`faultline_tests::soak`]): the agent's open
//! fds, RSS, threads, its helper processes, journal entries, qdiscs and nft tables in the
//! namespace, faultline's nft tables on the host, and the disk queue's bytes, into a CSV under
//! `target/soak/` (path printed; `benches/soak/plot.py` draws it). With `FAULTLINE_SOAK_KEEP`
//! set, the agent's config and log are copied next to it.
//!
//! Bounds, and why:
//! - **fds**: the peak of the last third ≤ the peak of the first third + 8. The load is the
//!   same all along (at most one fault per worker, one drill, a few API connections), so the
//!   working set of descriptors is too; a leak of one per cycle adds hundreds in three
//!   minutes. 8 covers connections that happen to be open at the peak sample.
//! - **RSS**: the peak of the second half ≤ the peak of the first half + 8 MiB. Allocator
//!   arenas and caches reach their size within the first minute of this load; a leak of 1 KiB
//!   per cycle is ~10 MiB in the hour's ≥ 10 000 cycles.
//! - **threads**: the peak of the last third ≤ the peak of the first third + 8 (tokio's
//!   blocking pool grows with concurrent blocking work and shrinks after 10 s idle; the
//!   concurrency is constant, so its peak is too).
//! - **disk queue**: ≤ 9 MiB at every sample. Consumed segments are deleted; what remains is
//!   the segment being written and at most one being sent (each ≤ 4 MiB, the default budget
//!   / 64), plus the ~10 s of cycles an outage queues.
//! - **helpers**, **journal entries** and **nft tables** in the namespace: at most one per
//!   concurrent fault at any time (≤ 3: two workers and the drill; qdiscs are not bounded so,
//!   an htb fault adds several lines to `tc qdisc show`), and at the end —
//!   after the last revert, the last drill and a settle of up to 30 s — 0 helpers, 0 journal
//!   entries, `GET /v1/faults` empty, the namespace's `tc qdisc show` and `nft list tables`
//!   exactly as before the soak, no file left in the tmpfs, no proxy still listening, and no
//!   host nft table named after one of the soak's faults.
//! - **0 points lost**: every cycle the agent wrote to its disk queue (its debug log, the
//!   ground truth `tests/export_persistence.rs` uses too) with a timestamp up to the end of the
//!   soak arrived at the receiver (the queue is delivered oldest first, so once a later cycle
//!   arrived every earlier one had its chance); the cycles after the end are the ones still in
//!   flight and are not counted. The receiver's distinct cycle timestamps must also number at
//!   least 80 % of the seconds the soak ran (the agent never stopped collecting; a loaded
//!   machine may delay a tick, never skip most of them).
//! - **progress**: at least one cycle per second on average (a debug build on a loaded 2-core
//!   machine does about five): a stalled API or CLI would otherwise look like a quiet, leak-free
//!   agent.
//! - **faults**: every inject answered 201 and every revert went through, save at most 1 % of
//!   cycles (a loaded 2-core machine can make an effect check miss by a scheduler tick); each
//!   failure is printed.
//! - **drills**: at least one per full minute but the first ran, each passed.
//!
//! Everything is the test's own and cleaned up on panic too: the agent, victims and CLI
//! processes are killed on drop, the namespaces deleted, the tmpfs unmounted.

// A test binary: a panic *is* the failure report, so `expect` is how it reports.
#![allow(clippy::expect_used, clippy::unwrap_used)]
#![allow(clippy::disallowed_methods)] // std::thread::sleep: the workers are plain threads

use std::collections::BTreeSet;
use std::fs;
use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use faultline_tests::chaos::{Scratch, Tmpfs, Victim, echo_server, is_root, state};
use faultline_tests::drill::{OPERATOR_TOKEN, VIEWER_TOKEN, api_call, api_section, write_tokens};
use faultline_tests::netns::{self, NetnsPair};
use faultline_tests::soak::{self, Sample, growth};
use faultline_tests::{Agent, OtlpConfig, OtlpReceiver, Received, Transport};
use serde_json::{Value, json};

const VIA_AGENT: &str = "going through the running agent's API";
/// How often the series are sampled.
const SAMPLE_EVERY: Duration = Duration::from_secs(2);
/// How long each receiver outage lasts.
const OUTAGE: Duration = Duration::from_secs(10);
/// Latency the latency faults add (the effect check waits at least this long for an echo).
const LATENCY_MS: u64 = 20;
/// The disk queue's bound: the segment being written and the one being sent, each at most
/// 4 MiB (the default 256 MiB budget / 64), plus 1 MiB for what a 10 s outage adds.
const QUEUE_BOUND: u64 = 9 << 20;
/// Ports in `b` the network faults select (nothing listens; the rules are what is checked).
const SELECTED_PORT: u16 = 7999;

fn nanos(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default()
        .try_into()
        .unwrap()
}

fn json_of(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or(Value::Null)
}

/// A `sleep` that outlives any soak.
fn victim() -> Victim {
    Victim::spawn(Command::new("sleep").arg("infinity"))
}

/// What the faults act on, all the test's own.
struct Targets {
    api: String,
    agent_pid: i32,
    echo: SocketAddr,
    tmpfs: Option<PathBuf>,
    /// Namespace `a` of the pair (veth-a towards `b` for the API worker, veth-c for the CLI's).
    ns: Option<String>,
}

impl Targets {
    fn qdiscs(&self, dev: &str) -> String {
        self.ns.as_ref().map_or(String::new(), |ns| {
            text(&NetnsPair::exec(ns, "tc", &["qdisc", "show", "dev", dev]).stdout)
        })
    }

    fn ns_tables(&self) -> Vec<String> {
        self.ns.as_ref().map_or(Vec::new(), |ns| {
            soak::nft_table_names(&text(
                &NetnsPair::exec(ns, "nft", &["list", "tables"]).stdout,
            ))
        })
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// One echo through `addr`: its round trip, or why it failed.
fn echo_through(addr: SocketAddr) -> Result<Duration, String> {
    let t = Instant::now();
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))
        .map_err(|e| format!("connect {addr}: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    s.write_all(b"x")
        .map_err(|e| format!("write {addr}: {e}"))?;
    let mut b = [0u8; 1];
    s.read_exact(&mut b)
        .map_err(|e| format!("read {addr}: {e}"))?;
    Ok(t.elapsed())
}

/// Counters and failures the workers share with the sampler and the test.
#[derive(Default)]
struct Progress {
    stop: AtomicBool,
    api_cycles: AtomicU64,
    cli_cycles: AtomicU64,
    receiver_up: AtomicBool,
    failures: Mutex<Vec<String>>,
    /// Ids of every fault the API worker injected (for the host nft check).
    ids: Mutex<BTreeSet<String>>,
}

impl Progress {
    fn cycles(&self) -> u64 {
        self.api_cycles.load(Ordering::Relaxed) + self.cli_cycles.load(Ordering::Relaxed)
    }

    fn fail(&self, what: String) {
        eprintln!("soak: FAILED cycle: {what}");
        self.failures.lock().unwrap().push(what);
    }

    fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }
}

/// The background threads; stopped and joined on drop (also when the test panics), before
/// the agent and the fixtures they use are dropped.
struct Workers {
    progress: Arc<Progress>,
    handles: Vec<JoinHandle<()>>,
}

impl Workers {
    /// Stops and joins every thread; how many had panicked.
    fn stop(&mut self) -> usize {
        self.progress.stop.store(true, Ordering::Relaxed);
        self.handles
            .drain(..)
            .filter_map(|h| h.join().err())
            .count()
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        self.stop();
    }
}

// ---- the API worker --------------------------------------------------------------------------

/// The API worker's kinds, as labels: a kind's name, or a variant of one
/// (`rate-limit-selected`: htb towards one address and port).
fn api_kinds(t: &Targets, netem: bool) -> Vec<&'static str> {
    let mut k = vec![
        "process-pause",
        "process-kill",
        "cpu-stress",
        "memory-stress",
        "latency",
        "bandwidth",
    ];
    if t.tmpfs.is_some() {
        k.extend(["disk-fill", "disk-io"]);
    }
    if t.ns.is_some() {
        k.extend(["rate-limit", "rate-limit-selected", "partition"]);
        if netem {
            k.push("netem");
        }
    }
    k
}

struct ApiWorker {
    t: Arc<Targets>,
    pause: Victim,
    kill: Victim,
    proxy: SocketAddr,
    /// The fault of the cycle under way, until it is reverted.
    current: Option<String>,
}

impl ApiWorker {
    fn spec(&self, label: &str, duration: &str) -> Value {
        let tmp = || self.t.tmpfs.as_ref().unwrap().display().to_string();
        let ns = || self.t.ns.clone().unwrap();
        match label {
            "process-pause" => {
                json!({"kind": label, "pid": self.pause.pid(), "duration": duration})
            }
            "process-kill" => json!({"kind": label, "pid": self.kill.pid(), "duration": "1s"}),
            "cpu-stress" => json!({"kind": label, "workers": 1, "load": 20, "duration": duration}),
            "memory-stress" => json!({"kind": label, "bytes": "16MiB", "duration": duration}),
            "disk-fill" => {
                json!({"kind": label, "path": tmp(), "bytes": "1MiB", "duration": duration})
            }
            "disk-io" => {
                json!({"kind": label, "path": tmp(), "write_rate": "1MiB", "duration": duration})
            }
            "latency" => json!({"kind": label, "listen": self.proxy.to_string(),
                "upstream": self.t.echo.to_string(), "latency": format!("{LATENCY_MS}ms"),
                "duration": duration}),
            "bandwidth" => json!({"kind": label, "listen": self.proxy.to_string(),
                "upstream": self.t.echo.to_string(), "rate": 100, "duration": duration}),
            "rate-limit" => json!({"kind": label, "netns": ns(), "dev": "veth-a",
                "rate": "8mbit", "duration": duration}),
            "rate-limit-selected" => json!({"kind": "rate-limit", "netns": ns(), "dev": "veth-a",
                "rate": "8mbit", "dest": ["10.77.0.2"], "port": [SELECTED_PORT],
                "protocol": "tcp", "duration": duration}),
            "partition" => json!({"kind": label, "netns": ns(), "dest": ["10.77.0.2"],
                "port": [SELECTED_PORT], "duration": duration}),
            "netem" => json!({"kind": label, "netns": ns(), "dev": "veth-a",
                "delay": "10ms", "duration": duration}),
            other => panic!("no spec for {other}"),
        }
    }

    /// The fault holds, seen from outside the agent.
    fn check_applied(&self, label: &str, id: &str) -> Result<(), String> {
        let ok = match label {
            "process-pause" => faultline_tests::chaos::wait_until(Duration::from_secs(2), || {
                state(self.pause.pid()) == Some('T')
            }),
            "cpu-stress" | "memory-stress" | "disk-io" => {
                !soak::helper_pids(self.t.agent_pid).is_empty()
            }
            "disk-fill" => self.t.tmpfs.as_ref().is_some_and(|d| {
                fs::read_dir(d).is_ok_and(|rd| {
                    rd.filter_map(Result::ok)
                        .any(|e| e.file_name().to_string_lossy().ends_with(id))
                })
            }),
            "latency" => {
                let rtt = echo_through(self.proxy)?;
                if rtt < Duration::from_millis(LATENCY_MS) {
                    return Err(format!("echo through the latency proxy took {rtt:?}"));
                }
                true
            }
            "bandwidth" => echo_through(self.proxy).is_ok(),
            "rate-limit" => self.t.qdiscs("veth-a").contains("qdisc tbf"),
            "rate-limit-selected" => {
                let q = self.t.qdiscs("veth-a");
                q.contains("qdisc htb") && q.contains("qdisc tbf")
            }
            "netem" => self.t.qdiscs("veth-a").contains("qdisc netem"),
            "partition" => self.t.ns_tables().contains(&table_of(id)),
            _ => true,
        };
        if ok {
            Ok(())
        } else {
            Err("not in effect (own check)".into())
        }
    }

    /// The fault is gone, seen from outside the agent (stateful kinds).
    fn check_reverted(&self, label: &str, id: &str) -> Result<(), String> {
        let gone = || match label {
            "process-pause" => state(self.pause.pid()) != Some('T'),
            "latency" | "bandwidth" => TcpStream::connect(self.proxy).is_err(),
            "rate-limit" | "rate-limit-selected" | "netem" => {
                let q = self.t.qdiscs("veth-a");
                !q.contains("tbf") && !q.contains("htb") && !q.contains("netem")
            }
            "partition" => !self.t.ns_tables().contains(&table_of(id)),
            _ => true,
        };
        if faultline_tests::chaos::wait_until(Duration::from_secs(2), gone) {
            Ok(())
        } else {
            Err("still in effect after the revert (own check)".into())
        }
    }

    /// One inject/revert cycle.
    fn cycle(&mut self, label: &str, by_deadline: bool, p: &Progress) -> Result<(), String> {
        let api = &self.t.api;
        let duration = if by_deadline { "300ms" } else { "30s" };
        let spec = self.spec(label, duration);
        let (st, body) = api_call(
            api,
            "POST",
            "/v1/faults",
            Some(OPERATOR_TOKEN),
            &spec.to_string(),
        );
        if st != 201 {
            return Err(format!("inject answered {st}: {body}"));
        }
        let id = json_of(&body)["id"].as_str().unwrap_or_default().to_owned();
        p.ids.lock().unwrap().insert(id.clone());
        self.current = Some(id.clone());
        if label == "process-kill" {
            // Instant: over once the signal is delivered. The victim is gone; a new one.
            if self.kill.wait_exit(Duration::from_secs(5)).is_none() {
                return Err(format!("victim {} still alive", self.kill.pid()));
            }
            self.kill = victim();
            return Ok(());
        }
        if !by_deadline {
            self.check_applied(label, &id)?;
            let (st, body) = api_call(
                api,
                "DELETE",
                &format!("/v1/faults/{id}"),
                Some(OPERATOR_TOKEN),
                "",
            );
            if st != 200 {
                return Err(format!("revert {id} answered {st}: {body}"));
            }
        } else {
            let gone = faultline_tests::drill::poll_for(Duration::from_secs(15), || {
                std::thread::sleep(Duration::from_millis(100));
                let (st, body) = api_call(api, "GET", "/v1/faults", Some(VIEWER_TOKEN), "");
                (st == 200 && !body.contains(&format!("\"{id}\""))).then_some(())
            });
            if gone.is_none() {
                return Err(format!("{id} still listed 15 s after its 300 ms deadline"));
            }
        }
        self.current = None;
        self.check_reverted(label, &id)
    }

    fn run(mut self, kinds: Vec<&'static str>, p: Arc<Progress>) {
        let mut n = 0usize;
        while !p.stopped() {
            let label = kinds[n % kinds.len()];
            let by_deadline = (n / kinds.len()) % 2 == 1;
            match self.cycle(label, by_deadline, &p) {
                Ok(()) => {
                    p.api_cycles.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => {
                    let how = if by_deadline { "deadline" } else { "DELETE" };
                    p.fail(format!("API {label} ({how}): {e}"));
                    // Whatever is left of this cycle's fault is reverted before the next one.
                    if let Some(id) = self.current.take() {
                        let path = format!("/v1/faults/{id}");
                        let _ = api_call(&self.t.api, "DELETE", &path, Some(OPERATOR_TOKEN), "");
                    }
                }
            }
            n += 1;
        }
    }
}

/// The nft table faultline names after fault `id`.
fn table_of(id: &str) -> String {
    format!("faultline_{}", id.replace('-', "_"))
}

// ---- the CLI worker --------------------------------------------------------------------------

struct CliWorker {
    t: Arc<Targets>,
    cli: Scratch,
    pause: Victim,
    kill: Victim,
    proxy: SocketAddr,
}

impl CliWorker {
    fn kinds(&self) -> Vec<&'static str> {
        let mut k = vec![
            "process-pause",
            "process-kill",
            "cpu-stress",
            "memory-stress",
            "proxy",
        ];
        if self.t.tmpfs.is_some() {
            k.extend(["disk-fill", "disk-io"]);
        }
        if self.t.ns.is_some() {
            k.extend(["rate-limit", "partition"]);
        }
        k
    }

    fn args(&self, kind: &str) -> Vec<String> {
        let tmp = || self.t.tmpfs.as_ref().unwrap().display().to_string();
        let ns = || self.t.ns.clone().unwrap();
        let mut a: Vec<String> = match kind {
            "process-pause" => vec!["--pid".into(), self.pause.pid().to_string()],
            "process-kill" => vec!["--pid".into(), self.kill.pid().to_string()],
            "cpu-stress" => vec!["--workers".into(), "1".into(), "--load".into(), "20".into()],
            "memory-stress" => vec!["--bytes".into(), "16MiB".into()],
            "disk-fill" => vec!["--path".into(), tmp(), "--bytes".into(), "1MiB".into()],
            "disk-io" => vec!["--path".into(), tmp(), "--write-rate".into(), "1MiB".into()],
            "proxy" => vec![
                "--listen".into(),
                self.proxy.to_string(),
                "--upstream".into(),
                self.t.echo.to_string(),
                "--toxic".into(),
                format!("latency,latency={LATENCY_MS}ms"),
            ],
            "rate-limit" => vec![
                "--netns".into(),
                ns(),
                "--dev".into(),
                "veth-c".into(),
                "--rate".into(),
                "8mbit".into(),
            ],
            "partition" => vec![
                "--netns".into(),
                ns(),
                "--dest".into(),
                "10.77.0.2".into(),
                "--port".into(),
                (SELECTED_PORT + 1).to_string(),
            ],
            other => panic!("no args for {other}"),
        };
        a.splice(0..0, ["fault".to_owned(), "inject".into(), kind.into()]);
        a.extend(["--duration".into(), "1s".into()]);
        a
    }

    fn cycle(&mut self, kind: &str) -> Result<(), String> {
        let args = self.args(kind);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut bg = self.cli.spawn("cli", &args);
        let status = bg.wait_exit(Duration::from_secs(30));
        let (out, err) = (bg.stdout(), bg.stderr());
        match status {
            Some(s) if s.success() => {}
            Some(s) => return Err(format!("exit {s}: {err}")),
            None => return Err(format!("still running after 30 s: {err}")),
        }
        if !err.contains(VIA_AGENT) {
            return Err(format!("did not go through the agent: {err}"));
        }
        if kind == "process-kill" {
            if self.kill.wait_exit(Duration::from_secs(5)).is_none() {
                return Err(format!("victim {} still alive", self.kill.pid()));
            }
            self.kill = victim();
        } else if !out.contains("reverted") {
            return Err(format!("no revert reported: {out}{err}"));
        }
        Ok(())
    }

    fn run(mut self, p: Arc<Progress>) {
        let kinds = self.kinds();
        let mut n = 0usize;
        while !p.stopped() {
            let kind = kinds[n % kinds.len()];
            match self.cycle(kind) {
                Ok(()) => {
                    p.cli_cycles.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => p.fail(format!("CLI {kind}: {e}")),
            }
            n += 1;
        }
    }
}

// ---- sampling --------------------------------------------------------------------------------

struct Sampler {
    t: Arc<Targets>,
    state: PathBuf,
    started: Instant,
    csv: fs::File,
    rows: Arc<Mutex<Vec<Sample>>>,
}

impl Sampler {
    fn sample(&self, p: &Progress) -> Sample {
        let (fds, rss_kib, threads) = soak::process(self.t.agent_pid).unwrap_or_default();
        let qdiscs = self.t.ns.as_ref().map_or(0, |ns| {
            NetnsPair::qdiscs(ns)
                .lines()
                .filter(|l| !l.is_empty())
                .count() as u64
        });
        Sample {
            t_s: self.started.elapsed().as_secs_f64(),
            fds,
            rss_kib,
            threads,
            helpers: soak::helper_pids(self.t.agent_pid).len() as u64,
            journal: soak::count_files(&self.state.join("faults/journal"), ".json"),
            qdiscs,
            nft_ns: self.t.ns_tables().len() as u64,
            nft_host: soak::host_nft_tables()
                .iter()
                .filter(|n| n.starts_with("faultline_"))
                .count() as u64,
            queue_bytes: soak::dir_bytes(&self.state.join("queue")),
            cycles: p.cycles(),
            receiver_up: p.receiver_up.load(Ordering::Relaxed),
        }
    }

    fn record(&mut self, p: &Progress) -> Sample {
        let s = self.sample(p);
        let _ = writeln!(self.csv, "{}", s.csv_row());
        let _ = self.csv.flush();
        self.rows.lock().unwrap().push(s.clone());
        s
    }

    fn run(mut self, p: Arc<Progress>) {
        let mut next = Instant::now();
        while !p.stopped() {
            let s = self.record(&p);
            if s.t_s as u64 % 60 < 2 {
                eprintln!(
                    "soak: t={:.0}s cycles={} fds={} rss={} KiB threads={} queue={} B",
                    s.t_s, s.cycles, s.fds, s.rss_kib, s.threads, s.queue_bytes
                );
            }
            next += SAMPLE_EVERY;
            while Instant::now() < next && !p.stopped() {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

// ---- the pieces of the run ---------------------------------------------------------------------

fn soak_seconds() -> u64 {
    std::env::var("FAULTLINE_SOAK_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(180)
}

/// `<target>/soak/` (created).
fn out_dir() -> PathBuf {
    let dir = faultline_tests::agent::profile_dir()
        .parent()
        .map_or_else(|| PathBuf::from("target"), Path::to_path_buf)
        .join("soak");
    fs::create_dir_all(&dir).unwrap();
    dir
}

/// The drill the agent runs on the minute: pause a victim for 200 ms while probing a port.
fn drill_scenario(dir: &Path, probe: SocketAddr, pid: i32) -> PathBuf {
    let path = dir.join("soak-drill.yaml");
    fs::write(
        &path,
        format!(
            "name: soak-drill\nprobe_interval: 100ms\nmax_duration: 50s\nsteady_state:\n  - name: port\n    tcp: {{ address: \"{probe}\", timeout: 500ms }}\nfaults:\n  - at: 100ms\n    fault: {{ kind: process-pause, pid: {pid}, duration: 200ms }}\nrecovery: {{ strategy: self-heal, consecutive: 2, timeout: 30s }}\nobjectives: {{ rto: 10s }}\n"
        ),
    )
    .unwrap();
    path
}

fn agent_config(receiver: &OtlpReceiver, api: &str, tokens: &Path, drill: &Path) -> String {
    let mut c = OtlpConfig::new(Transport::Grpc, receiver.endpoint(Transport::Grpc));
    c.shutdown_grace = Duration::from_secs(2);
    format!(
        "{}containers:\n  enabled: false\nlogging:\n  format: json\n  level: info,faultline_exporters::otlp::pipeline=debug\n{}chaos:\n  max_concurrent: 16\ndrills:\n  - name: soak-drill\n    scenario: {}\n    schedule: \"0 * * * * *\"\n    timezone: UTC\n",
        c.to_yaml(),
        api_section(api, tokens, &[]),
        drill.display()
    )
}

/// Whether the kernel takes a netem qdisc, asked through the agent (its own probe); prints
/// why not when it does not.
fn netem_supported(api: &str, ns: &str) -> bool {
    let spec =
        json!({"kind": "netem", "netns": ns, "dev": "veth-a", "delay": "10ms", "duration": "30s"});
    let body = spec.to_string();
    let r = faultline_tests::api::exchange(
        api,
        &format!(
            "POST /v1/faults HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer {OPERATOR_TOKEN}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        ),
    )
    .expect("the API answers");
    let (st, body) = (r.status, r.body);
    if st == 201 {
        let id = json_of(&body)["id"].as_str().unwrap_or_default().to_owned();
        let (st, body) = api_call(
            api,
            "DELETE",
            &format!("/v1/faults/{id}"),
            Some(OPERATOR_TOKEN),
            "",
        );
        assert_eq!(st, 200, "reverting the netem probe: {body}");
        return true;
    }
    let why = json_of(&body)["error"]
        .as_str()
        .map_or_else(|| body.clone(), str::to_owned);
    eprintln!("soak: NOT TESTED here: netem (the agent answered {st}: {why})");
    false
}

/// Cycle timestamps the agent logged as written to its disk queue.
fn written_cycles(agent: &Agent) -> Vec<u64> {
    agent
        .stderr()
        .lines()
        .filter(|l| l.contains("batch written to the disk queue"))
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter_map(|v| v["fields"]["time_unix_nano"].as_u64())
        .collect()
}

fn accepted_cycles(requests: &[Received]) -> BTreeSet<u64> {
    requests
        .iter()
        .filter(|r| r.accepted())
        .flat_map(Received::timestamps)
        .collect()
}

/// A xorshift for the outage schedule (seeded from the clock; printed so a run can be read
/// back).
fn next_rand(x: &mut u64) -> u64 {
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    *x
}

/// (min, max, first, last) of one series.
fn span(rows: &[Sample], f: impl Fn(&Sample) -> u64) -> (u64, u64, u64, u64) {
    let v: Vec<u64> = rows.iter().map(f).collect();
    (
        v.iter().copied().min().unwrap_or(0),
        v.iter().copied().max().unwrap_or(0),
        v.first().copied().unwrap_or(0),
        v.last().copied().unwrap_or(0),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soak_of_fault_cycles_drills_and_outages_leaks_nothing_and_loses_no_point() {
    let seconds = soak_seconds();
    // Without root the soak still runs, without the disk and kernel network kinds.
    let root = faultline_tests::chaos::require(
        is_root(),
        "root (the soak's tmpfs for disk-fill and disk-io, its namespaces for rate-limit, partition and netem)",
    );
    let kernel = root && netns::require_kernel_tools();

    // The test's own targets.
    let dir = tempfile::tempdir().unwrap();
    let tokens = write_tokens(dir.path());
    let echo = echo_server();
    let tmpfs = root.then(|| Tmpfs::mount("64m"));
    let pair = kernel.then(|| NetnsPair::create("soak"));
    if let Some(p) = &pair {
        // A second veth pair, `veth-c` in `a` to `veth-d` in `b`, for the CLI's rate limits.
        let add = [
            "link", "add", "veth-c", "netns", &p.a, "type", "veth", "peer", "name", "veth-d",
            "netns", &p.b,
        ];
        for (ns, args) in [
            (None, add.as_slice()),
            (Some(&p.a), &["link", "set", "veth-c", "up"]),
            (Some(&p.b), &["link", "set", "veth-d", "up"]),
        ] {
            let mut cmd = Command::new("ip");
            if let Some(ns) = ns {
                cmd.args(["-n", ns]);
            }
            let out = cmd.args(args).output().unwrap();
            assert!(out.status.success(), "ip {args:?}: {}", text(&out.stderr));
        }
    }
    let drill_victim = victim();
    let drill = drill_scenario(dir.path(), echo, drill_victim.pid());

    let mut receiver = OtlpReceiver::start().await.expect("receiver starts");
    let api = format!("127.0.0.1:{}", faultline_tests::backup::free_port());
    let mut agent = Agent::start(&agent_config(&receiver, &api, &tokens, &drill));
    assert!(
        faultline_tests::drill::wait_listening(&api),
        "the API did not come up:\n{}",
        agent.stderr()
    );
    let agent_pid = agent.pid().expect("agent runs").as_raw();
    let t = Arc::new(Targets {
        api: api.clone(),
        agent_pid,
        echo,
        tmpfs: tmpfs.as_ref().map(|m| m.path().to_path_buf()),
        ns: pair.as_ref().map(|p| p.a.clone()),
    });
    let netem = t.ns.as_ref().is_some_and(|ns| netem_supported(&api, ns));

    // Baselines, before any cycle.
    let base_qdiscs = pair.as_ref().map(|p| NetnsPair::qdiscs(&p.a));
    let base_tables = t.ns_tables();
    let state_dir = agent.dir().join("state");

    let out = out_dir();
    let stamp = nanos(SystemTime::now()) / 1_000_000_000;
    let csv_path = out.join(format!("soak-{stamp}.csv"));
    let mut csv = fs::File::create(&csv_path).unwrap();
    writeln!(csv, "{}", Sample::CSV_HEADER).unwrap();
    eprintln!(
        "soak: {seconds} s, CSV {} (plot: python3 benches/soak/plot.py {})",
        csv_path.display(),
        csv_path.display()
    );

    let progress = Arc::new(Progress::default());
    progress.receiver_up.store(true, Ordering::Relaxed);
    let rows = Arc::new(Mutex::new(Vec::new()));
    let started = Instant::now();
    let started_wall = SystemTime::now();
    let mut workers = Workers {
        progress: progress.clone(),
        handles: Vec::new(),
    };
    let kinds = api_kinds(&t, netem);
    eprintln!("soak: API kinds {kinds:?}");
    let api_worker = ApiWorker {
        t: t.clone(),
        pause: victim(),
        kill: victim(),
        proxy: SocketAddr::from(([127, 0, 0, 1], faultline_tests::backup::free_port())),
        current: None,
    };
    let cli_worker = CliWorker {
        t: t.clone(),
        cli: Scratch::new(&api_section(&api, &tokens, &[])),
        pause: victim(),
        kill: victim(),
        proxy: SocketAddr::from(([127, 0, 0, 1], faultline_tests::backup::free_port())),
    };
    eprintln!("soak: CLI kinds {:?}", cli_worker.kinds());
    let proxies = [api_worker.proxy, cli_worker.proxy];
    let sampler = Sampler {
        t: t.clone(),
        state: state_dir.clone(),
        started,
        csv,
        rows: rows.clone(),
    };
    let p = progress.clone();
    workers
        .handles
        .push(std::thread::spawn(move || api_worker.run(kinds, p)));
    let p = progress.clone();
    workers
        .handles
        .push(std::thread::spawn(move || cli_worker.run(p)));
    let p = progress.clone();
    workers
        .handles
        .push(std::thread::spawn(move || sampler.run(p)));

    // The receiver's outages, until the end.
    let deadline = started + Duration::from_secs(seconds);
    let mut seed = nanos(SystemTime::now()) | 1;
    eprintln!("soak: outage schedule seed {seed}");
    let mut outages = 0u32;
    loop {
        let gap = Duration::from_secs(30 + next_rand(&mut seed) % 31);
        let at = Instant::now() + gap;
        if at + OUTAGE + Duration::from_secs(5) > deadline {
            break;
        }
        while Instant::now() < at {
            tokio::time::sleep(Duration::from_millis(200)).await;
            assert!(agent.exit_status().is_none(), "the agent exited");
        }
        receiver.stop().await;
        progress.receiver_up.store(false, Ordering::Relaxed);
        tokio::time::sleep(OUTAGE).await;
        receiver.restart().await.expect("receiver restarts");
        progress.receiver_up.store(true, Ordering::Relaxed);
        outages += 1;
        eprintln!(
            "soak: outage {outages} over at t={:.0}s",
            started.elapsed().as_secs_f64()
        );
    }
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(agent.exit_status().is_none(), "the agent exited");
    }
    let panicked = workers.stop();
    assert_eq!(
        panicked, 0,
        "a worker thread panicked (its message is above)"
    );
    let ran = started.elapsed();
    let end_wall = SystemTime::now();
    let api_cycles = progress.api_cycles.load(Ordering::Relaxed);
    let cli_cycles = progress.cli_cycles.load(Ordering::Relaxed);
    let cycles = api_cycles + cli_cycles;
    assert!(agent.exit_status().is_none(), "the agent exited");

    // The last drill ends; then everything settles back to the baseline.
    let drills = faultline_tests::drill::poll_for(Duration::from_secs(90), || {
        let (st, body) = api_call(&api, "GET", "/v1/drills", Some(VIEWER_TOKEN), "");
        let v = json_of(&body);
        let list = v.as_array()?.clone();
        (st == 200 && list.iter().all(|d| d["verdict"] != "running")).then_some(list)
    })
    .expect("a drill still runs 90 s after the soak");
    let settled = faultline_tests::chaos::wait_until(Duration::from_secs(30), || {
        let (st, body) = api_call(&api, "GET", "/v1/faults", Some(VIEWER_TOKEN), "");
        st == 200
            && json_of(&body).as_array().is_some_and(Vec::is_empty)
            && soak::count_files(&state_dir.join("faults/journal"), ".json") == 0
            && soak::helper_pids(agent_pid).is_empty()
            && pair.as_ref().map(|p| NetnsPair::qdiscs(&p.a)) == base_qdiscs
            && t.ns_tables() == base_tables
    });
    let last = Sampler {
        t: t.clone(),
        state: state_dir.clone(),
        started,
        csv: fs::OpenOptions::new().append(true).open(&csv_path).unwrap(),
        rows: rows.clone(),
    }
    .record(&progress);
    let rows = rows.lock().unwrap().clone();

    // Points: every cycle written up to the end arrived once the receiver was back.
    let end = nanos(end_wall);
    let requests = receiver
        .wait_for(
            |r| accepted_cycles(r).range(end + 1..).next().is_some(),
            Duration::from_secs(120),
        )
        .await;
    let received = accepted_cycles(&requests);
    let written: Vec<u64> = written_cycles(&agent)
        .into_iter()
        .filter(|&ts| ts <= end)
        .collect();
    let lost: Vec<u64> = written
        .iter()
        .copied()
        .filter(|ts| !received.contains(ts))
        .collect();
    let in_window = received.range(nanos(started_wall)..=end).count();

    let finished: Vec<&Value> = drills
        .iter()
        .filter(|d| d["scenario"] == "soak-drill")
        .collect();
    let failed_drills: Vec<&&Value> = finished
        .iter()
        .filter(|d| d["verdict"] != "passed")
        .collect();
    let failures = progress.failures.lock().unwrap().clone();

    // The figures, whatever the verdict.
    eprintln!(
        "soak: ran {:.0} s: {cycles} cycles ({api_cycles} API, {cli_cycles} CLI; {:.0}/h), {} failed; {} drills; {outages} outages of {}s; {} collection cycles written, {} received in the window, {} lost",
        ran.as_secs_f64(),
        cycles as f64 * 3600.0 / ran.as_secs_f64(),
        failures.len(),
        finished.len(),
        OUTAGE.as_secs(),
        written.len(),
        in_window,
        lost.len()
    );
    type Col = (&'static str, fn(&Sample) -> u64);
    let cols: [Col; 9] = [
        ("fds", |s| s.fds),
        ("rss_kib", |s| s.rss_kib),
        ("threads", |s| s.threads),
        ("helpers", |s| s.helpers),
        ("journal", |s| s.journal),
        ("qdiscs_ns", |s| s.qdiscs),
        ("nft_tables_ns", |s| s.nft_ns),
        ("nft_tables_host", |s| s.nft_host),
        ("queue_bytes", |s| s.queue_bytes),
    ];
    for (name, f) in cols {
        let (min, max, first, last) = span(&rows, f);
        eprintln!("soak: {name}: start {first}, end {last}, min {min}, peak {max}");
    }
    eprintln!("soak: CSV {}", csv_path.display());
    if std::env::var_os("FAULTLINE_SOAK_KEEP").is_some() {
        for (from, to) in [
            ("stderr.log", "agent.log"),
            ("faultline.yaml", "faultline.yaml"),
        ] {
            let _ = fs::copy(
                agent.dir().join(from),
                out.join(format!("soak-{stamp}-{to}")),
            );
        }
    }

    // The verdicts.
    let series = |f: fn(&Sample) -> u64| rows.iter().map(f).collect::<Vec<u64>>();
    let fds = series(|s| s.fds);
    let rss = series(|s| s.rss_kib);
    let threads = series(|s| s.threads);
    let third = 1.0 / 3.0;
    let mut broken = Vec::new();
    let (fds_early, fds_late) = (
        growth::max_in(&fds, 0.0, third),
        growth::max_in(&fds, 2.0 * third, 1.0),
    );
    if fds_late > fds_early + 8 {
        broken.push(format!(
            "fds grew: peak {fds_late} in the last third, {fds_early} in the first"
        ));
    }
    let (rss_early, rss_late) = (
        growth::max_in(&rss, 0.0, 0.5),
        growth::max_in(&rss, 0.5, 1.0),
    );
    if rss_late > rss_early + 8 * 1024 {
        broken.push(format!(
            "RSS grew: peak {rss_late} KiB in the second half, {rss_early} KiB in the first"
        ));
    }
    let (thr_early, thr_late) = (
        growth::max_in(&threads, 0.0, third),
        growth::max_in(&threads, 2.0 * third, 1.0),
    );
    if thr_late > thr_early + 8 {
        broken.push(format!(
            "threads grew: peak {thr_late} in the last third, {thr_early} in the first"
        ));
    }
    for (name, f) in [
        ("helpers", (|s| s.helpers) as fn(&Sample) -> u64),
        ("journal entries", |s| s.journal),
        ("nft tables in the namespace", |s| s.nft_ns),
    ] {
        let peak = series(f).into_iter().max().unwrap_or(0);
        if peak > 3 {
            broken.push(format!(
                "{name}: {peak} at once (at most 3 faults hold at once)"
            ));
        }
    }
    let queue_peak = series(|s| s.queue_bytes).into_iter().max().unwrap_or(0);
    if queue_peak > QUEUE_BOUND {
        broken.push(format!(
            "the disk queue held {queue_peak} bytes (bound {QUEUE_BOUND})"
        ));
    }
    if !settled {
        let (_, body) = api_call(&api, "GET", "/v1/faults", Some(VIEWER_TOKEN), "");
        broken.push(format!(
            "not back to the baseline 30 s after the last revert: faults {body}, journal {}, helpers {:?}, qdiscs {:?} (before: {:?}), nft tables {:?} (before: {base_tables:?})",
            last.journal,
            soak::helper_pids(agent_pid),
            pair.as_ref().map(|p| NetnsPair::qdiscs(&p.a)),
            base_qdiscs,
            t.ns_tables()
        ));
    }
    let ours = progress.ids.lock().unwrap().clone();
    let host_left: Vec<String> = soak::host_nft_tables()
        .into_iter()
        .filter(|n| ours.iter().any(|id| *n == table_of(id)))
        .collect();
    if !host_left.is_empty() {
        broken.push(format!(
            "soak faults' nft tables on the host: {host_left:?}"
        ));
    }
    if let Some(m) = &tmpfs {
        let left = m.files();
        if !left.is_empty() {
            broken.push(format!("files left in the tmpfs: {left:?}"));
        }
    }
    for proxy in proxies {
        if TcpStream::connect(proxy).is_ok() {
            broken.push(format!("a proxy still listens on {proxy}"));
        }
    }
    // The lost-points check reads the agent's debug lines: without them it would pass on
    // nothing, so as many cycles must have been logged as written as ran (1 s interval).
    if (written.len() as f64) < 0.8 * ran.as_secs_f64() {
        broken.push(format!(
            "only {} cycles logged as written to the disk queue over {:.0} s: the lost-points \
             check has nothing to compare",
            written.len(),
            ran.as_secs_f64()
        ));
    }
    if !lost.is_empty() {
        broken.push(format!(
            "{} of {} written collection cycles never reached the receiver: {:?}",
            lost.len(),
            written.len(),
            &lost[..lost.len().min(20)]
        ));
    }
    if (in_window as f64) < 0.8 * ran.as_secs_f64() {
        broken.push(format!(
            "only {in_window} distinct cycles received over {:.0} s",
            ran.as_secs_f64()
        ));
    }
    if (cycles as f64) < ran.as_secs_f64() {
        broken.push(format!(
            "only {cycles} cycles in {:.0} s: the workers stalled (a debug build on a loaded \
             2-core machine does 5 a second)",
            ran.as_secs_f64()
        ));
    }
    if failures.len() as f64 > 0.01 * cycles.max(1) as f64 {
        broken.push(format!(
            "{} of {cycles} cycles failed: {:#?}",
            failures.len(),
            &failures[..failures.len().min(20)]
        ));
    }
    let want_drills = (seconds / 60).saturating_sub(1) as usize;
    if finished.len() < want_drills || !failed_drills.is_empty() {
        broken.push(format!(
            "drills: {} finished (want ≥ {want_drills}), not passed: {failed_drills:?}",
            finished.len()
        ));
    }
    assert!(
        broken.is_empty(),
        "the soak failed:\n- {}",
        broken.join("\n- ")
    );
    agent.terminate(Duration::from_secs(15)).await;
}
