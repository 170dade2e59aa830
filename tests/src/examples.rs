//! Fixtures for the runnable examples (`examples/drills/*.yaml`, run by
//! `tests/examples.rs`): the real services they drill — a supervised `redis-server`, a
//! PostgreSQL cluster with a pgBackRest stanza ([`crate::backup::PgCluster`]), Python's
//! `http.server` — and the test's own evidence about them: a canary of the test's own that
//! writes as fast as it can until the service dies ([`OwnCanary`]), stopwatches polled every
//! few milliseconds ([`wait_until`], [`ListenWatch`]), all on the wall clock in Unix
//! seconds, as the drill reports are. Everything is owned by the test and stopped on drop.
#![allow(clippy::disallowed_methods)] // std::thread::sleep: the canary and the watchers are plain threads

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use crate::drill::Supervised;

/// Now, Unix seconds.
pub fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// The Unix time of a monotonic instant (anchored now).
pub fn unix_at(i: Instant) -> f64 {
    let (now, unix) = (Instant::now(), unix_now());
    if i <= now {
        unix - (now - i).as_secs_f64()
    } else {
        unix + (i - now).as_secs_f64()
    }
}

/// A file under `examples/`.
pub fn example(rel: &str) -> PathBuf {
    crate::workspace_root().join("examples").join(rel)
}

/// One write of the test's own canary.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct OwnMarker {
    /// Sequence number, from 1.
    pub seq: u64,
    /// The timestamp written into it, Unix seconds (when the write was sent).
    pub at: f64,
    /// When the service acknowledged it, Unix seconds.
    pub acked_at: f64,
}

/// The test's own canary: `write(seq, ts_ms)` every `interval` on a thread of its own, until
/// a write fails (the service died) or the canary is dropped. Only acknowledged writes are
/// kept.
#[derive(Debug)]
pub struct OwnCanary {
    markers: Arc<Mutex<Vec<OwnMarker>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl OwnCanary {
    /// Starts writing.
    pub fn start(
        interval: Duration,
        mut write: impl FnMut(u64, u64) -> bool + Send + 'static,
    ) -> Self {
        let markers = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (m, s) = (markers.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let mut seq = 0;
            while !s.load(Ordering::SeqCst) {
                seq += 1;
                let at = unix_now();
                // Whole milliseconds are what is written: the timestamp is that.
                let ts_ms = (at * 1000.0).floor() as u64;
                if !write(seq, ts_ms) {
                    return;
                }
                m.lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .push(OwnMarker {
                        seq,
                        at: ts_ms as f64 / 1000.0,
                        acked_at: unix_now(),
                    });
                std::thread::sleep(interval);
            }
        });
        Self {
            markers,
            stop,
            thread: Some(thread),
        }
    }

    /// Waits until the writer has stopped (its first failed write), at most `timeout`;
    /// whether it has.
    pub fn wait_stopped(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while self.thread.as_ref().is_some_and(|t| !t.is_finished()) {
            if Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        true
    }

    /// The acknowledged writes so far.
    pub fn markers(&self) -> Vec<OwnMarker> {
        self.markers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// The longest time between two acknowledged writes: how finely this canary resolves
    /// the moment data stopped being kept.
    pub fn resolution(&self) -> f64 {
        let m = self.markers();
        m.windows(2)
            .map(|w| w[1].acked_at - w[0].at)
            .fold(0.0, f64::max)
    }
}

impl Drop for OwnCanary {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Polls `f` every `every` until it holds or `timeout` passes: when it first held, Unix
/// seconds.
pub fn wait_until(every: Duration, timeout: Duration, mut f: impl FnMut() -> bool) -> Option<f64> {
    let deadline = Instant::now() + timeout;
    loop {
        if f() {
            return Some(unix_now());
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(every);
    }
}

/// A `redis-server` on a free loopback port, snapshotting its data to its own directory
/// every second with at least one change (`--save "1 1"`, no append-only file: what a crash
/// loses is what happened since the last snapshot), restarted by the test's own supervisor
/// 200 ms after each exit (its outages measured from outside: [`Supervised::outages`]).
#[derive(Debug)]
pub struct Redis {
    /// The supervisor (dropped first: the server stops with it).
    pub sup: Supervised,
    /// The port.
    pub port: u16,
    /// Its directory (the snapshot file).
    pub dir: tempfile::TempDir,
}

impl Redis {
    /// Starts it and waits until it accepts connections.
    ///
    /// # Panics
    /// When it does not come up.
    pub fn start() -> Self {
        let dir = crate::backup::tempdir("fl-redis-");
        let port = crate::backup::free_port();
        let argv: Vec<String> = [
            "redis-server",
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--dir",
            &dir.path().display().to_string(),
            "--save",
            "1 1",
            "--appendonly",
            "no",
            "--daemonize",
            "no",
            "--logfile",
            &dir.path().join("redis.log").display().to_string(),
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        let sup = Supervised::start_command(
            argv,
            &format!("127.0.0.1:{port}"),
            Duration::from_millis(200),
        );
        Self { sup, port, dir }
    }

    /// One command over RESP on a fresh connection: the reply line (`+OK`, `$-1`, a bulk
    /// string's content), or `None` when the server does not answer.
    pub fn command(&self, args: &[&str]) -> Option<String> {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        resp_command(&mut s, args)
    }

    /// A canary of the test's own: `SET key "SEQ TS_MS"` every `interval` over one kept
    /// connection, until the server goes away.
    pub fn own_canary(&self, key: &str, interval: Duration) -> OwnCanary {
        let (port, key) = (self.port, key.to_owned());
        let mut conn: Option<TcpStream> = None;
        OwnCanary::start(interval, move |seq, ts_ms| {
            if conn.is_none() {
                conn = TcpStream::connect(("127.0.0.1", port)).ok().inspect(|c| {
                    let _ = c.set_read_timeout(Some(Duration::from_secs(2)));
                });
            }
            let Some(c) = conn.as_mut() else { return false };
            resp_command(c, &["SET", &key, &format!("{seq} {ts_ms}")]).as_deref() == Some("+OK")
        })
    }
}

/// Sends one RESP command and reads one reply: a status or error line as is, a bulk
/// string's content, `$-1` for nil.
fn resp_command(s: &mut TcpStream, args: &[&str]) -> Option<String> {
    let mut req = format!("*{}\r\n", args.len());
    for a in args {
        req.push_str(&format!("${}\r\n{a}\r\n", a.len()));
    }
    s.write_all(req.as_bytes()).ok()?;
    let mut r = BufReader::new(s.try_clone().ok()?);
    let mut line = String::new();
    if r.read_line(&mut line).ok()? == 0 {
        return None;
    }
    let line = line.trim_end().to_owned();
    match line.strip_prefix('$').map(str::parse::<i64>) {
        Some(Ok(n)) if n >= 0 => {
            let mut body = vec![0u8; usize::try_from(n).ok()? + 2];
            r.read_exact(&mut body).ok()?;
            body.truncate(body.len() - 2);
            Some(String::from_utf8_lossy(&body).into_owned())
        }
        _ => Some(line),
    }
}

/// `psql` argv as the test's user (the test clusters trust local connections; `postgres`
/// as the database user) to `host` — an address, or the directory of the Unix socket.
pub fn psql_argv_at(host: &str, port: u16, sql: &str) -> Vec<String> {
    [
        &format!("{}/psql", crate::backup::PG_BIN),
        "-X",
        "-A",
        "-t",
        "-q",
        "-v",
        "ON_ERROR_STOP=1",
        "-h",
        host,
        "-p",
        &port.to_string(),
        "-U",
        "postgres",
        "-d",
        "postgres",
        "-c",
        sql,
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect()
}

/// Runs SQL on `pg` with [`psql_argv_at`]: stdout, or `None` when psql fails.
pub fn psql(pg: &crate::backup::PgCluster, sql: &str) -> Option<String> {
    let argv = psql_argv_at(&pg.dir.path().display().to_string(), pg.port, sql);
    let out = Command::new(&argv[0])
        .args(&argv[1..])
        .stdin(Stdio::null())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// The postmaster's pid of the cluster (first line of `postmaster.pid`).
pub fn postmaster_pid(pg: &crate::backup::PgCluster) -> Option<i32> {
    std::fs::read_to_string(pg.dir.path().join("data/postmaster.pid"))
        .ok()?
        .lines()
        .next()?
        .trim()
        .parse()
        .ok()
}

/// Whether `pid` is gone or a zombie (it has died; nobody may have reaped it).
pub fn dead(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |s| {
        s.rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_none_or(|state| state == "Z" || state == "X")
    })
}

/// Python's `http.server` serving an empty directory on a free loopback port; killed on
/// drop.
#[derive(Debug)]
pub struct HttpServer {
    /// `127.0.0.1:PORT`.
    pub addr: String,
    child: Child,
    _dir: tempfile::TempDir,
}

impl HttpServer {
    /// Starts it and waits until it answers.
    ///
    /// # Panics
    /// When python3 is missing or the server does not come up.
    pub fn start() -> Self {
        let dir = crate::backup::tempdir("fl-http-");
        let port = crate::backup::free_port();
        let child = crate::ending_with_test("python3")
            .args([
                "-m",
                "http.server",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
            ])
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("python3 -m http.server: {e}"));
        let s = Self {
            addr: format!("127.0.0.1:{port}"),
            child,
            _dir: dir,
        };
        assert!(
            wait_until(Duration::from_millis(20), Duration::from_secs(10), || s
                .get(&s.addr)
                .is_some())
            .is_some(),
            "http.server did not answer on {}",
            s.addr
        );
        s
    }

    /// One `GET /` through `addr` (the server, or a proxy in front of it): (status line,
    /// seconds it took), `None` when nothing answers there.
    pub fn get(&self, addr: &str) -> Option<(String, f64)> {
        let t = Instant::now();
        let mut s = TcpStream::connect(addr).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        s.write_all(b"GET / HTTP/1.0\r\nHost: localhost\r\n\r\n")
            .ok()?;
        let mut body = String::new();
        s.read_to_string(&mut body).ok()?;
        let status = body.lines().next()?.to_owned();
        Some((status, t.elapsed().as_secs_f64()))
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// When something listened on an address, seen from outside: TCP connects every 2 ms on a
/// thread of its own, from the first accepted one to the first refused one after it.
#[derive(Debug)]
pub struct ListenWatch {
    window: Arc<Mutex<(Option<f64>, Option<f64>)>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ListenWatch {
    /// Starts watching `addr`.
    pub fn start(addr: &str) -> Self {
        let window = Arc::new(Mutex::new((None, None)));
        let stop = Arc::new(AtomicBool::new(false));
        let (w, s, a) = (window.clone(), stop.clone(), addr.to_owned());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::SeqCst) {
                let at = unix_now();
                let up = TcpStream::connect(a.as_str()).is_ok();
                let mut win = w.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                match (up, *win) {
                    (true, (None, _)) => win.0 = Some(at),
                    (false, (Some(_), None)) => {
                        win.1 = Some(at);
                        return;
                    }
                    _ => {}
                }
                drop(win);
                std::thread::sleep(Duration::from_millis(2));
            }
        });
        Self {
            window,
            stop,
            thread: Some(thread),
        }
    }

    /// (first accepted connect, first refused one after it), Unix seconds.
    pub fn window(&self) -> (Option<f64>, Option<f64>) {
        *self
            .window
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Drop for ListenWatch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A header line of an example naming the agent config it runs with
/// (`--config examples/config/NAME.yaml`), if any.
pub fn config_named_in(example: &Path) -> Option<PathBuf> {
    let text = std::fs::read_to_string(example).ok()?;
    text.lines()
        .take_while(|l| l.starts_with('#'))
        .find_map(|l| {
            l.split_whitespace()
                .skip_while(|w| *w != "--config")
                .nth(1)
                .filter(|p| p.starts_with("examples/"))
                .map(|p| crate::workspace_root().join(p))
        })
}
