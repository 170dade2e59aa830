//! Fixtures for the drill tests (`tests/drill_*.rs`): a self-healing service (the project's
//! workload as a TCP echo server, kept alive by a restart loop the test owns, with the
//! test's own stopwatch of each outage), `faultline drill run` invocations, and a PNG
//! checker for the HTML report's headless-Chromium screenshot, and outlines of the JUnit
//! and HTML reports read with Python's own (strict XML, tag-balance-checked HTML) parsers.
//! Everything is owned by the test and stopped on drop.
#![allow(clippy::disallowed_methods)] // std::thread::sleep: the restart loop is a plain thread

use std::io::Read as _;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// One observed outage of the supervised service, measured from outside.
#[derive(Clone, Debug)]
pub struct Outage {
    /// The pid that died.
    pub pid: u32,
    /// When `wait` returned for it.
    pub died: Instant,
    /// When a TCP connect to the service first succeeded again (polled every 1 ms).
    pub up: Option<Instant>,
}

impl Outage {
    /// The restart time seen from outside.
    pub fn seconds(&self) -> Option<f64> {
        self.up.map(|u| (u - self.died).as_secs_f64())
    }
}

#[derive(Debug, Default)]
struct SupState {
    pid: Option<u32>,
    outages: Vec<Outage>,
}

/// `faultline-workload --listen 127.0.0.1:PORT` under a restart loop (respawn `delay` after
/// each exit). Dropping it stops the loop and kills the service.
#[derive(Debug)]
pub struct Supervised {
    /// The service's address.
    pub addr: String,
    state: Arc<Mutex<SupState>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

fn wait_connect(addr: &str, timeout: Duration) -> Option<Instant> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if TcpStream::connect(addr).is_ok() {
            return Some(Instant::now());
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    None
}

impl Supervised {
    /// Starts the loop and waits until the service accepts connections.
    ///
    /// # Panics
    /// When the service does not come up within 10 s.
    pub fn start(delay: Duration) -> Self {
        let port = crate::backup::free_port();
        let addr = format!("127.0.0.1:{port}");
        let bin = crate::docker::workload_binary().display().to_string();
        Self::start_command(vec![bin, "--listen".into(), addr.clone()], &addr, delay)
    }

    /// [`Supervised::start`] for any server: `argv` is (re)started `delay` after each exit,
    /// and `addr` is where it accepts TCP connections once it is up.
    ///
    /// # Panics
    /// When the server does not come up within 10 s.
    pub fn start_command(argv: Vec<String>, addr: &str, delay: Duration) -> Self {
        let addr = addr.to_owned();
        let state = Arc::new(Mutex::new(SupState::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let (st, sp, a) = (state.clone(), stop.clone(), addr.clone());
        let thread = std::thread::spawn(move || {
            let spawn = || -> Option<Child> {
                // Dies with the test even if it is killed outright (the spawning thread is
                // this loop, which lives until the drop).
                crate::ending_with_test(&argv[0])
                    .args(&argv[1..])
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .spawn()
                    .ok()
            };
            let mut child = spawn();
            loop {
                let Some(mut c) = child.take() else { return };
                st.lock().unwrap_or_else(|e| e.into_inner()).pid = Some(c.id());
                // Poll instead of a blocking wait so the loop notices `stop`.
                let died = loop {
                    if sp.load(Ordering::SeqCst) {
                        let _ = c.kill();
                        let _ = c.wait();
                        return;
                    }
                    if let Ok(Some(_)) = c.try_wait() {
                        break Instant::now();
                    }
                    std::thread::sleep(Duration::from_micros(500));
                };
                let pid = c.id();
                std::thread::sleep(delay);
                if sp.load(Ordering::SeqCst) {
                    return;
                }
                child = spawn();
                let up = wait_connect(&a, Duration::from_secs(10));
                st.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .outages
                    .push(Outage { pid, died, up });
            }
        });
        let s = Supervised {
            addr: addr.clone(),
            state,
            stop,
            thread: Some(thread),
        };
        assert!(
            wait_connect(&addr, Duration::from_secs(10)).is_some(),
            "the supervised server did not listen on {addr}"
        );
        // The loop records the pid after spawning, which may be after the service listens.
        assert!(
            poll_for(Duration::from_secs(10), || s
                .state
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .pid)
            .is_some(),
            "the restart loop did not record the service's pid"
        );
        s
    }

    /// The current service pid.
    pub fn pid(&self) -> u32 {
        self.state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pid
            .unwrap_or(0)
    }

    /// The outages seen so far.
    pub fn outages(&self) -> Vec<Outage> {
        self.state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .outages
            .clone()
    }
}

impl Drop for Supervised {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Runs `faultline [--state-dir STATE] drill run SCENARIO [extra…]` with a timeout.
///
/// # Panics
/// When the binary cannot be run or does not finish in `timeout`.
pub fn drill_run(state: &Path, scenario: &Path, extra: &[&str], timeout: Duration) -> Output {
    drill_run_with_env(state, scenario, extra, &[], timeout)
}

/// [`drill_run`] with extra environment variables (the `${VAR}`s of a scenario file).
///
/// # Panics
/// When the binary cannot be run or does not finish in `timeout`.
pub fn drill_run_with_env(
    state: &Path,
    scenario: &Path,
    extra: &[&str],
    env: &[(&str, String)],
    timeout: Duration,
) -> Output {
    let mut child = Command::new(crate::agent_binary())
        .arg("--state-dir")
        .arg(state)
        .args(["drill", "run"])
        .arg(scenario)
        .args(extra)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .env_remove("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run faultline: {e}"));
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(Some(_)) = child.try_wait() {
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().ok();
            panic!(
                "faultline drill run did not finish within {timeout:?}: {:?}",
                out.map(|o| String::from_utf8_lossy(&o.stderr).into_owned())
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child
        .wait_with_output()
        .unwrap_or_else(|e| panic!("faultline output: {e}"))
}

/// The headless Chromium binary, if installed.
pub fn chromium() -> Option<PathBuf> {
    ["chromium", "chromium-browser", "google-chrome"]
        .iter()
        .find_map(|n| crate::backup::which(n))
}

/// Takes a screenshot of `html` into `png` with headless Chromium.
///
/// # Panics
/// When Chromium fails.
pub fn screenshot(chromium: &Path, html: &Path, png: &Path) {
    let profile = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let out = Command::new(chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            "--window-size=1280,900",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(format!("--screenshot={}", png.display()))
        .arg(format!("file://{}", html.display()))
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("running chromium: {e}"));
    assert!(
        png.is_file(),
        "chromium wrote no screenshot: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Decodes a PNG's header and image data: (width, height, distinct byte values in the
/// decompressed scanlines, share of bytes that differ from the most common one).
///
/// # Panics
/// When the file is not a PNG.
pub fn png_stats(png: &Path) -> (u32, u32, usize, f64) {
    let data = std::fs::read(png).unwrap_or_else(|e| panic!("{}: {e}", png.display()));
    assert_eq!(&data[..8], b"\x89PNG\r\n\x1a\n", "not a PNG");
    let mut pos = 8;
    let (mut w, mut h) = (0u32, 0u32);
    let mut idat = Vec::new();
    while pos + 8 <= data.len() {
        let len =
            u32::from_be_bytes([data[pos], data[pos + 1], data[pos + 2], data[pos + 3]]) as usize;
        let kind = &data[pos + 4..pos + 8];
        let body = &data[pos + 8..pos + 8 + len];
        if kind == b"IHDR" {
            w = u32::from_be_bytes([body[0], body[1], body[2], body[3]]);
            h = u32::from_be_bytes([body[4], body[5], body[6], body[7]]);
        } else if kind == b"IDAT" {
            idat.extend_from_slice(body);
        }
        pos += 12 + len;
    }
    let mut raw = Vec::new();
    flate2::read::ZlibDecoder::new(&idat[..])
        .read_to_end(&mut raw)
        .unwrap_or_else(|e| panic!("PNG data: {e}"));
    let mut counts = [0usize; 256];
    for b in &raw {
        counts[*b as usize] += 1;
    }
    let distinct = counts.iter().filter(|c| **c > 0).count();
    let top = counts.iter().max().copied().unwrap_or(0);
    let other = 1.0 - top as f64 / raw.len().max(1) as f64;
    (w, h, distinct, other)
}

/// One plain-HTTP/1.1 request to the agent API at `addr` (`Connection: close`, optional
/// bearer token); (status, JSON body — chunk framing stripped). Status 0 when the
/// connection fails or breaks (the agent does not answer).
///
/// # Panics
/// When the read timeout cannot be set.
pub fn api_call(
    addr: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &str,
) -> (u16, String) {
    // An agent that does not answer (cut off, stopped) is status 0, for tests that expect it.
    crate::api::try_http(addr, method, path, token, body).unwrap_or((0, String::new()))
}

/// The report of drill `id` on the agent whose API is at `api`, once the drill has ended
/// (its verdict is no longer `running`); panics after `timeout`.
pub fn finished_drill(api: &str, token: &str, id: &str, timeout: Duration) -> serde_json::Value {
    poll_for(timeout, || {
        let (st, body) = api_call(api, "GET", &format!("/v1/drills/{id}"), Some(token), "");
        (st == 200)
            .then(|| serde_json::from_str::<serde_json::Value>(&body).ok())
            .flatten()
            .filter(|r| r["verdict"] != "running")
    })
    .unwrap_or_else(|| panic!("drill {id} did not finish within {timeout:?}"))
}

/// Polls `f` every 10 ms until it returns `Some` or `timeout` passes.
pub fn poll_for<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A bare PostgreSQL 15 cluster for the data-loss drill: data in a temp dir, a free loopback
/// port, run as `postgres` when the test is root, a `canary(seq, ts)` table. Stopped
/// (immediate) on drop, whatever data directory is in place by then.
#[derive(Debug)]
pub struct PgCanary {
    /// Temp dir holding data, logs, socket and backups.
    pub dir: tempfile::TempDir,
    /// The port.
    pub port: u16,
    /// `postgres` when root.
    pub user: Option<&'static str>,
}

impl PgCanary {
    /// The data directory.
    pub fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// argv prefix to run `program` as the cluster's user.
    pub fn as_user_argv(&self, program: &str) -> Vec<String> {
        match self.user {
            Some(u) => vec![
                "runuser".into(),
                "-u".into(),
                u.into(),
                "--".into(),
                program.into(),
            ],
            None => vec![program.into()],
        }
    }

    fn cmd(&self, program: &str) -> Command {
        let argv = self.as_user_argv(program);
        let mut c = Command::new(&argv[0]);
        c.args(&argv[1..]).current_dir("/");
        c
    }

    /// `pg_ctl start` argv (for recovery actions too).
    pub fn start_argv(&self) -> Vec<String> {
        let mut v = self.as_user_argv(&format!("{}/pg_ctl", crate::backup::PG_BIN));
        v.extend([
            "-D".into(),
            self.data().display().to_string(),
            "-l".into(),
            self.dir.path().join("pg.log").display().to_string(),
            "-w".into(),
            "-t".into(),
            "60".into(),
            "start".into(),
        ]);
        v
    }

    /// psql argv running `sql` (for the canary writer and reader).
    pub fn psql_argv(&self, sql: &str) -> Vec<String> {
        crate::examples::psql_argv_at("127.0.0.1", self.port, sql)
    }

    /// Runs SQL; stdout.
    ///
    /// # Panics
    /// When psql fails.
    pub fn psql(&self, sql: &str) -> String {
        let argv = self.psql_argv(sql);
        crate::backup::run_ok(Command::new(&argv[0]).args(&argv[1..]))
    }

    /// initdb, configure, start, create the canary table.
    ///
    /// # Panics
    /// When any step fails.
    pub fn start() -> Self {
        let dir = crate::backup::tempdir("fl-drill-pg-");
        let user = nix::unistd::geteuid().is_root().then_some("postgres");
        let port = crate::backup::free_port();
        if user.is_some() {
            crate::backup::run_ok(
                Command::new("chown")
                    .args(["postgres:postgres"])
                    .arg(dir.path()),
            );
        }
        let c = PgCanary { dir, port, user };
        crate::backup::run_ok(
            c.cmd(&format!("{}/initdb", crate::backup::PG_BIN))
                .args(["-A", "trust", "-U", "postgres", "-D"])
                .arg(c.data()),
        );
        let conf = c.data().join("postgresql.conf");
        let mut text = std::fs::read_to_string(&conf).unwrap_or_else(|e| panic!("{e}"));
        text.push_str(&format!(
            // TCP only: a socket lock file naming the killed postmaster (a zombie where
            // nothing reaps orphans) would otherwise stop the restored cluster from starting.
            "port = {port}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = ''\nfsync = off\nwal_level = replica\n"
        ));
        std::fs::write(&conf, text).unwrap_or_else(|e| panic!("{e}"));
        let argv = c.start_argv();
        crate::backup::run_ok(Command::new(&argv[0]).args(&argv[1..]));
        c.psql("create table canary(seq bigint primary key, ts bigint not null);");
        c
    }

    /// The postmaster's pid (first line of `postmaster.pid`).
    pub fn postmaster_pid(&self) -> u32 {
        std::fs::read_to_string(self.data().join("postmaster.pid"))
            .ok()
            .and_then(|t| t.lines().next().and_then(|l| l.trim().parse().ok()))
            .unwrap_or_else(|| panic!("no postmaster.pid in {}", self.data().display()))
    }

    /// `pg_basebackup` of the running cluster into `into` (plain format, WAL streamed).
    ///
    /// # Panics
    /// When it fails.
    pub fn basebackup(&self, into: &Path) {
        let mut c = self.cmd(&format!("{}/pg_basebackup", crate::backup::PG_BIN));
        c.args([
            "-h",
            "127.0.0.1",
            "-p",
            &self.port.to_string(),
            "-U",
            "postgres",
            "-X",
            "stream",
            "-c",
            "fast",
            // The backup's point in time is its end; an fsync of the copy would add delay
            // after it that the test would count as part of the backup.
            "--no-sync",
            "-D",
        ])
        .arg(into);
        crate::backup::run_ok(&mut c);
    }
}

impl Drop for PgCanary {
    fn drop(&mut self) {
        let _ = self
            .cmd(&format!("{}/pg_ctl", crate::backup::PG_BIN))
            .arg("-D")
            .arg(self.data())
            .args(["-m", "immediate", "-w", "stop"])
            .output();
    }
}

/// An operator token for the API tests' tokens file ([`write_tokens`]).
pub const OPERATOR_TOKEN: &str = "operator-token-0123456789";
/// A viewer token for the API tests' tokens file ([`write_tokens`]).
pub const VIEWER_TOKEN: &str = "viewer-token-0123456789ab";

/// Writes `<dir>/tokens.yaml` with an operator (`ops`) and a viewer (`dash`) token.
///
/// # Panics
/// When the file cannot be written.
pub fn write_tokens(dir: &Path) -> PathBuf {
    let tokens = dir.join("tokens.yaml");
    std::fs::write(
        &tokens,
        format!(
            "- {{name: ops, role: operator, token: {OPERATOR_TOKEN}}}\n- {{name: dash, role: viewer, token: {VIEWER_TOKEN}}}\n"
        ),
    )
    .unwrap_or_else(|e| panic!("{}: {e}", tokens.display()));
    tokens
}

/// The `api:` config section serving on `listen` with `tokens`, plus `extra` lines indented
/// under it (e.g. `cert_file: …`).
pub fn api_section(listen: &str, tokens: &Path, extra: &[String]) -> String {
    let mut s = format!(
        "api:\n  enabled: true\n  listen: {listen}\n  tokens_file: {}\n",
        tokens.display()
    );
    for l in extra {
        s.push_str(&format!("  {l}\n"));
    }
    s
}

/// Waits up to 20 s until something accepts TCP connections at `addr`; whether it did.
pub fn wait_listening(addr: &str) -> bool {
    poll_for(Duration::from_secs(20), || {
        TcpStream::connect(addr).is_ok().then_some(())
    })
    .is_some()
}

/// A JUnit report read with a real XML parser (Python's `xml.etree`, which rejects anything
/// not well-formed): `{"paths": [sorted distinct element paths], "suite": {attributes},
/// "cases": [{"name", "failure", "error"}]}` where `failure`/`error` are the messages or
/// null.
///
/// # Panics
/// When the document is not well-formed XML.
pub fn junit_outline(xml: &str) -> serde_json::Value {
    const SCRIPT: &str = r#"
import json, sys, xml.etree.ElementTree as ET
root = ET.fromstring(sys.stdin.read().encode())
paths = set()
def walk(e, prefix):
    p = prefix + "/" + e.tag
    paths.add(p)
    for c in e:
        walk(c, p)
walk(root, "")
suite = root.find("testsuite")
cases = []
for c in root.iter("testcase"):
    f, e = c.find("failure"), c.find("error")
    cases.append({"name": c.get("name"),
                  "failure": None if f is None else f.get("message"),
                  "error": None if e is None else e.get("message")})
print(json.dumps({"paths": sorted(paths), "suite": dict(suite.attrib) if suite is not None else None, "cases": cases}))
"#;
    let out = crate::python3(SCRIPT, &[], Some(xml));
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("junit outline: {e}: {out}"))
}

/// An HTML report read with Python's `html.parser`, checked for balance (every non-void
/// element closed, in order): `{"unbalanced": [problems], "ids": [element ids], "title":
/// text, "verdict": text of #verdict, "svg": count of <svg> elements}`.
///
/// # Panics
/// When Python fails.
pub fn html_outline(html: &str) -> serde_json::Value {
    const SCRIPT: &str = r#"
import json, sys
from html.parser import HTMLParser
VOID = {"area","base","br","col","embed","hr","img","input","link","meta","source","track","wbr"}
class P(HTMLParser):
    def __init__(self):
        super().__init__()
        self.stack, self.bad, self.ids, self.svg = [], [], [], 0
        self.title, self.verdict, self.capture = "", "", None
    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if "id" in a: self.ids.append(a["id"])
        if tag == "svg": self.svg += 1
        if tag == "title": self.capture = "title"
        if a.get("id") == "verdict": self.capture = "verdict"
        if tag not in VOID: self.stack.append(tag)
    def handle_startendtag(self, tag, attrs):
        a = dict(attrs)
        if "id" in a: self.ids.append(a["id"])
    def handle_endtag(self, tag):
        if tag in VOID: return
        if not self.stack or self.stack[-1] != tag:
            self.bad.append("</%s> closes <%s>" % (tag, self.stack[-1] if self.stack else "nothing"))
        else:
            self.stack.pop()
        self.capture = None
    def handle_data(self, d):
        if self.capture == "title": self.title += d
        if self.capture == "verdict": self.verdict += d
p = P()
p.feed(sys.stdin.read())
p.close()
p.bad += ["<%s> never closed" % t for t in p.stack]
print(json.dumps({"unbalanced": p.bad, "ids": p.ids, "title": p.title, "verdict": p.verdict, "svg": p.svg}))
"#;
    let out = crate::python3(SCRIPT, &[], Some(html));
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("html outline: {e}: {out}"))
}

/// A drill scenario that kills the [`Supervised`] service at `addr` (pid `pid`) 100 ms into
/// its fault phase, probing it every 50 ms: a real outage of the supervisor's restart delay
/// plus the service's start. Self-heal, 3 passing rounds in a row, RTO objective 10 s.
pub fn kill_scenario(name: &str, addr: &str, pid: u32) -> String {
    format!(
        "name: {name}\nprobe_interval: 50ms\nmax_duration: 60s\nsteady_state:\n  - name: echo\n    tcp: {{ address: \"{addr}\", timeout: 200ms }}\nfaults:\n  - at: 100ms\n    fault: {{ kind: process-kill, pid: {pid}, duration: 1s }}\nrecovery: {{ strategy: self-heal, consecutive: 3, timeout: 30s }}\nobjectives: {{ rto: 10s }}\n"
    )
}
