//! Fixtures for the fault-injection tests (`tests/chaos_*.rs`). Everything here is owned by
//! the test that made it and removed on drop, also when the test fails: child processes
//! ([`Victim`], [`Bg`]), scratch directories with a config and a state dir ([`Scratch`]),
//! and tmpfs mounts ([`Tmpfs`]). Observations are independent of faultline: `/proc/<pid>/stat`
//! and `statvfs(2)` read directly.
//!
//! [`HelperWatch`] is the stray-helper scan every chaos test gets through its fixtures
//! ([`Scratch`], [`crate::Agent`], and [`HelperWatch::worker_command`] for a test's own
//! engine): when the fixture goes, also on failure, a helper process (`faultline
//! __chaos-worker …`) of the faultline processes it started that is still alive and not held
//! by a live fault fails the test, named, and is killed.
#![allow(clippy::disallowed_methods)] // std::thread::sleep: synchronous polling in tests, no async runtime

use std::fs;
use std::os::unix::ffi::OsStrExt as _;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tempfile::TempDir;

/// A two-worker runtime for synchronous tests that drive a [`faultline_chaos::Engine`]
/// directly (its blocking work runs on the runtime's blocking pool).
///
/// # Panics
/// When the runtime cannot be built.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("runtime: {e}"))
}

/// Polls `cond` every 10 ms until it holds or `timeout` passes; returns whether it held.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The comm and the fields after it (from field 3, the state) of a `stat` file's text.
fn split_stat(text: &str) -> Option<(String, Vec<&str>)> {
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let comm = text.get(open + 1..close)?.to_owned();
    Some((comm, text.get(close + 2..)?.split_whitespace().collect()))
}

/// `/proc/<pid>/stat` of a live process, parsed independently of faultline's parser.
pub fn stat(pid: i32) -> Option<(char, u64, u64)> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, f) = split_stat(&text)?;
    // f[0] = state (field 3); utime = field 14, rss = field 24.
    Some((
        f.first()?.chars().next()?,
        f.get(11)?.parse().ok()?,
        f.get(21)?.parse().ok()?,
    ))
}

/// One thread's times, from `/proc/<pid>/task/<tid>/stat` and `…/schedstat`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ThreadTimes {
    /// The thread id.
    pub tid: i32,
    /// Its name (`comm`).
    pub comm: String,
    /// CPU time used, utime + stime, in clock ticks.
    pub cpu_ticks: u64,
    /// Time spent runnable but waiting for a CPU, in ns (second field of `schedstat`).
    pub runqueue_ns: u64,
}

/// The threads of `pid`, sorted by tid; empty when the process is gone.
pub fn threads(pid: i32) -> Vec<ThreadTimes> {
    let Ok(rd) = fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    let mut out: Vec<ThreadTimes> = rd
        .filter_map(Result::ok)
        .filter_map(|e| {
            let tid: i32 = e.file_name().to_str()?.parse().ok()?;
            let text = fs::read_to_string(e.path().join("stat")).ok()?;
            let (comm, f) = split_stat(&text)?;
            let cpu_ticks = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
            let sched = fs::read_to_string(e.path().join("schedstat")).ok()?;
            let runqueue_ns = sched.split_whitespace().nth(1)?.parse().ok()?;
            Some(ThreadTimes {
                tid,
                comm,
                cpu_ticks,
                runqueue_ns,
            })
        })
        .collect();
    out.sort_unstable_by_key(|t| t.tid);
    out
}

/// The state letter of `pid` (R, S, T, Z…), `None` when it is gone.
pub fn state(pid: i32) -> Option<char> {
    stat(pid).map(|s| s.0)
}

/// Whether `pid` exists and is not a zombie.
pub fn running(pid: i32) -> bool {
    matches!(state(pid), Some(c) if c != 'Z' && c != 'X')
}

/// Whether this test runs as root.
pub fn is_root() -> bool {
    fs::metadata("/proc/self")
        .map(|m| m.uid() == 0)
        .unwrap_or(false)
}

/// Skips (returns false, printing why) or, under CI ([`crate::in_ci`]), panics.
pub fn require(cond: bool, what: &str) -> bool {
    if cond {
        return true;
    }
    assert!(!crate::in_ci(), "{what} is required under CI");
    eprintln!("SKIPPED: {what} is not available");
    false
}

/// A child process the test may kill, pause or stress: `sleep 300` by default. Killed and
/// reaped on drop (SIGCONT first, in case a failed test left it stopped).
#[derive(Debug)]
pub struct Victim {
    child: Child,
}

impl Victim {
    /// `sleep 300`.
    pub fn sleep() -> Self {
        Self::spawn(Command::new("sleep").arg("300"))
    }

    /// A process running `cmd`.
    pub fn spawn(cmd: &mut Command) -> Self {
        let child = cmd
            .stdin(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
        Victim { child }
    }

    /// Its pid.
    pub fn pid(&self) -> i32 {
        i32::try_from(self.child.id()).unwrap_or(i32::MAX)
    }

    /// Waits up to `timeout` for it to exit; its status.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let mut status = None;
        wait_until(timeout, || {
            status = self.child.try_wait().ok().flatten();
            status.is_some()
        });
        status
    }
}

impl Drop for Victim {
    fn drop(&mut self) {
        let pid = Pid::from_raw(self.pid());
        let _ = kill(pid, Signal::SIGCONT);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A scratch directory with `faultline.yaml` (OTLP off, plus `extra_yaml`) and a `state`
/// directory, removed on drop.
///
/// Every `faultline` process started through it carries its [`HelperWatch`] mark, so the
/// helpers they start are checked for strays when the scratch dir goes.
#[derive(Debug)]
pub struct Scratch {
    // Dropped (checked) before `dir`: the check reads the journal in it.
    helpers: HelperWatch,
    dir: TempDir,
}

impl Scratch {
    /// A new scratch dir; `extra_yaml` is appended to the config (e.g. a `chaos:` section).
    pub fn new(extra_yaml: &str) -> Self {
        Self::with_config(&format!(
            "interval: 1s\nexport:\n  otlp:\n    enabled: false\n{extra_yaml}"
        ))
    }

    /// A new scratch dir whose `faultline.yaml` is `config` as given (e.g. with OTLP export
    /// on, from [`crate::OtlpConfig::to_yaml`]).
    pub fn with_config(config: &str) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("faultline-chaos-")
            .tempdir()
            .unwrap_or_else(|e| panic!("tempdir: {e}"));
        fs::write(dir.path().join("faultline.yaml"), config)
            .unwrap_or_else(|e| panic!("config: {e}"));
        fs::create_dir(dir.path().join("state")).unwrap_or_else(|e| panic!("state: {e}"));
        Scratch {
            helpers: HelperWatch::new(&dir.path().join("state")),
            dir,
        }
    }

    /// The stray-helper scan of the processes started through this scratch dir.
    pub fn helpers(&self) -> &HelperWatch {
        &self.helpers
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The state directory.
    pub fn state(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    /// The journal directory.
    pub fn journal(&self) -> PathBuf {
        self.state().join("faults/journal")
    }

    /// `faultline --state-dir <state> <args…> --config <cfg>` as a command.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = crate::agent::faultline_command();
        cmd.arg("--state-dir")
            .arg(self.state())
            .args(args)
            .arg("--config")
            .arg(self.path().join("faultline.yaml"));
        cmd.env_remove("FAULTLINE_CONFIG")
            .env_remove("FAULTLINE_STATE_DIR")
            .env_remove("RUST_LOG")
            .env(HELPER_MARK_VAR, self.helpers.mark())
            .stdin(Stdio::null());
        cmd
    }

    /// Runs `faultline <args…>` to completion.
    pub fn run(&self, args: &[&str]) -> Output {
        let mut cmd = self.command(args);
        cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"))
    }

    /// Starts `faultline <args…>` in the background, output to `<name>.out/.err` files.
    pub fn spawn(&self, name: &str, args: &[&str]) -> Bg {
        self.spawn_env(name, args, &[])
    }

    /// [`Scratch::spawn`] with `env` set for the process (e.g. a `PATH` without `tc`).
    pub fn spawn_env(&self, name: &str, args: &[&str], env: &[(&str, &str)]) -> Bg {
        let out = self.path().join(format!("{name}.out"));
        let err = self.path().join(format!("{name}.err"));
        let mut cmd = self.command(args);
        cmd.envs(env.iter().copied());
        cmd.stdout(fs::File::create(&out).unwrap_or_else(|e| panic!("{e}")))
            .stderr(fs::File::create(&err).unwrap_or_else(|e| panic!("{e}")));
        let child = cmd.spawn().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
        Bg { child, out, err }
    }

    /// Starts `faultline fault inject disk-fill --path <dir> <amount…> --duration <duration>` in
    /// the background and waits until its journal entry is applied; returns the process and
    /// the entry. `amount` is `["--percent", "50"]` or `["--bytes", "2MiB"]`.
    ///
    /// # Panics
    /// When the fault is not applied within `timeout` (with the injector's stderr).
    pub fn inject_disk_fill(
        &self,
        dir: &Path,
        amount: [&str; 2],
        duration: &str,
        timeout: Duration,
    ) -> (Bg, serde_json::Value) {
        let path = dir.to_string_lossy().into_owned();
        let bg = self.spawn(
            "fill",
            &[
                "fault",
                "inject",
                "disk-fill",
                "--path",
                &path,
                amount[0],
                amount[1],
                "--duration",
                duration,
            ],
        );
        let entry = self
            .wait_applied("disk-fill", timeout)
            .unwrap_or_else(|| panic!("not applied: {}", bg.stderr()));
        (bg, entry)
    }

    /// The journal entries as JSON.
    pub fn journal_entries(&self) -> Vec<serde_json::Value> {
        journal_entries(&self.state())
    }

    /// The journal entry of `kind` once it is `applied`.
    pub fn wait_applied(&self, kind: &str, timeout: Duration) -> Option<serde_json::Value> {
        let mut found = None;
        wait_until(timeout, || {
            found = self
                .journal_entries()
                .into_iter()
                .find(|e| e["spec"]["kind"] == kind && e["phase"] == "applied");
            found.is_some()
        });
        found
    }
}

/// The fault journal entries under `state_dir` (`<state_dir>/faults/journal/*.json`) as JSON;
/// empty when there is no journal.
pub fn journal_entries(state_dir: &Path) -> Vec<serde_json::Value> {
    let Ok(rd) = fs::read_dir(state_dir.join("faults/journal")) else {
        return Vec::new();
    };
    rd.filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().ends_with(".json"))
        .filter_map(|e| fs::read(e.path()).ok())
        .filter_map(|b| serde_json::from_slice(&b).ok())
        .collect()
}

/// A loopback TCP echo server on plain threads (for tests without a tokio runtime of their
/// own); it lives as long as the test process.
///
/// # Panics
/// When no loopback port can be bound.
pub fn echo_server() -> std::net::SocketAddr {
    use std::io::{Read as _, Write as _};
    let l = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap_or_else(|e| panic!("bind an echo server: {e}"));
    let addr = l
        .local_addr()
        .unwrap_or_else(|e| panic!("echo server address: {e}"));
    std::thread::spawn(move || {
        for mut s in l.incoming().flatten() {
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while let Ok(n) = s.read(&mut buf) {
                    if n == 0 || s.write_all(&buf[..n]).is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

/// Whether something accepts TCP connections at `addr` (within 200 ms).
pub fn accepting(addr: std::net::SocketAddr) -> bool {
    std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
}

/// Helper pids named in a journal entry.
pub fn helper_pids(entry: &serde_json::Value) -> Vec<i32> {
    entry["record"]["helpers"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|h| h["pid"].as_i64())
                .filter_map(|p| i32::try_from(p).ok())
                .collect()
        })
        .unwrap_or_default()
}

/// The environment variable that marks the `faultline` processes a fixture starts (its value
/// is the fixture's [`HelperWatch::mark`]); their helpers inherit it with the rest of the
/// environment, and keep it when they outlive their parent and are reparented.
pub const HELPER_MARK_VAR: &str = "FAULTLINE_TEST_FIXTURE";

/// How long a helper that no live fault holds may take to go before it counts as a stray:
/// the time a helper of a killed process takes to receive its `PR_SET_PDEATHSIG` and exit
/// (milliseconds), a revert in progress, or an inject between its helper's spawn and the
/// journal write naming it — with a loaded machine's margin.
const HELPER_GRACE: Duration = Duration::from_secs(2);

/// The `--parent` pid of a chaos helper's command line (NUL-separated, as in
/// `/proc/<pid>/cmdline`: `… __chaos-worker --parent <pid> …`); `None` for any other
/// command line. Pure.
pub fn helper_parent(cmdline: &[u8]) -> Option<i32> {
    let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
    if !args.contains(&faultline_chaos::WORKER_ARG.as_bytes()) {
        return None;
    }
    args.windows(2)
        .find(|w| w[0] == b"--parent")
        .and_then(|w| std::str::from_utf8(w[1]).ok()?.parse().ok())
}

/// Every pid listed in `/proc` now.
pub fn proc_pids() -> Vec<i32> {
    fs::read_dir("/proc")
        .map(|rd| {
            rd.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// The start time (clock ticks after boot, field 22 of `/proc/<pid>/stat`) of a live process.
pub fn start_time(pid: i32) -> Option<u64> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    split_stat(&text)?.1.get(19)?.parse().ok()
}

/// A helper process found by [`HelperWatch`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Helper {
    /// Its pid.
    pub pid: i32,
    /// Its start time, so that a reused pid is never killed in its place.
    pub start_time: u64,
    /// The faultline process that started it (`--parent`).
    pub parent: i32,
    /// Its command line, NULs as spaces.
    pub cmdline: String,
}

impl std::fmt::Display for Helper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let parent = if running(self.parent) {
            "alive"
        } else {
            "gone"
        };
        write!(
            f,
            "pid {} (`{}`, parent {} {parent})",
            self.pid,
            self.cmdline.trim(),
            self.parent
        )
    }
}

/// The stray-helper scan of one fixture: the helper processes (`faultline __chaos-worker …`,
/// CPU and memory stress, disk I/O) that the `faultline` processes it started have started,
/// found in `/proc` by the fixture's mark — [`HELPER_MARK_VAR`] in their environment, or, for
/// a test's own engine, the program path of [`HelperWatch::worker_command`] in their command
/// line — never by name, so another test's helpers are never counted or killed.
///
/// A helper is *held* while its parent runs and an entry of the fixture's journal names it
/// (a fault still active). [`HelperWatch::check`] fails naming every other live helper that
/// does not go within [`HELPER_GRACE`] — a revert that forgot its helper, a helper that
/// outlived its parent — and kills it (pid and start time checked). It runs when the watch is
/// dropped with its fixture, also when the test fails (then it reports without a second
/// panic), and [`crate::Agent`] runs it once more before it kills its agent, since a helper
/// the agent forgot dies with the agent and would go unseen afterwards.
#[derive(Debug)]
pub struct HelperWatch {
    mark: String,
    state_dir: PathBuf,
    worker_dir: Option<TempDir>,
}

impl HelperWatch {
    /// A watch over the helpers of processes whose journal is in `state_dir`.
    pub fn new(state_dir: &Path) -> Self {
        static N: AtomicU32 = AtomicU32::new(0);
        HelperWatch {
            mark: format!(
                "{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            ),
            state_dir: state_dir.to_path_buf(),
            worker_dir: None,
        }
    }

    /// The value of [`HELPER_MARK_VAR`] for the processes this fixture starts.
    pub fn mark(&self) -> &str {
        &self.mark
    }

    /// How a test's own [`faultline_chaos::Engine`] (journaling in this watch's state dir)
    /// starts helpers: the real binary's worker mode, through a symlink in a directory of this
    /// watch's own, so the helpers' command lines name it (the test process's environment,
    /// which they inherit, cannot carry a per-test mark).
    ///
    /// # Panics
    /// When the directory or the symlink cannot be made.
    pub fn worker_command(&mut self) -> faultline_chaos::WorkerCommand {
        let dir = self.worker_dir.get_or_insert_with(|| {
            let dir = tempfile::Builder::new()
                .prefix("faultline-helpers-")
                .tempdir()
                .unwrap_or_else(|e| panic!("tempdir: {e}"));
            let link = dir.path().join("faultline");
            std::os::unix::fs::symlink(crate::agent_binary(), &link)
                .unwrap_or_else(|e| panic!("symlink {}: {e}", link.display()));
            dir
        });
        faultline_chaos::WorkerCommand {
            program: dir.path().join("faultline"),
            args: vec![faultline_chaos::WORKER_ARG.to_owned()],
        }
    }

    /// Whether the process `pid` with command line `args` carries this watch's mark.
    fn marked(&self, pid: i32, args: &[&[u8]]) -> bool {
        if let (Some(dir), Some(program)) = (&self.worker_dir, args.first())
            && Path::new(std::ffi::OsStr::from_bytes(program)).starts_with(dir.path())
        {
            return true;
        }
        let want = format!("{HELPER_MARK_VAR}={}", self.mark);
        fs::read(format!("/proc/{pid}/environ"))
            .is_ok_and(|env| env.split(|b| *b == 0).any(|kv| kv == want.as_bytes()))
    }

    /// The live helpers carrying this watch's mark.
    pub fn alive(&self) -> Vec<Helper> {
        proc_pids()
            .into_iter()
            .filter_map(|pid| {
                let raw = fs::read(format!("/proc/{pid}/cmdline")).ok()?;
                let parent = helper_parent(&raw)?;
                let args: Vec<&[u8]> = raw.split(|b| *b == 0).collect();
                if !self.marked(pid, &args) || !running(pid) {
                    return None;
                }
                Some(Helper {
                    pid,
                    start_time: start_time(pid)?,
                    parent,
                    cmdline: String::from_utf8_lossy(&raw).replace('\0', " "),
                })
            })
            .collect()
    }

    /// Whether `h` belongs to a fault still active: its parent runs and a journal entry names it.
    fn held(&self, h: &Helper) -> bool {
        running(h.parent)
            && journal_entries(&self.state_dir)
                .iter()
                .flat_map(helper_pids)
                .any(|p| p == h.pid)
    }

    /// The live helpers no active fault holds that did not go within [`HELPER_GRACE`].
    pub fn strays(&self) -> Vec<Helper> {
        let deadline = Instant::now() + HELPER_GRACE;
        loop {
            let strays: Vec<Helper> = self.alive().into_iter().filter(|h| !self.held(h)).collect();
            if strays.is_empty() || Instant::now() >= deadline {
                return strays;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills every stray helper ([`HelperWatch::strays`]; pid and start time checked) and
    /// names them in the error.
    pub fn settle(&self, when: &str) -> Result<(), String> {
        let strays = self.strays();
        if strays.is_empty() {
            return Ok(());
        }
        for h in &strays {
            if start_time(h.pid) == Some(h.start_time) {
                let _ = kill(Pid::from_raw(h.pid), Signal::SIGKILL);
            }
        }
        let names: Vec<String> = strays.iter().map(ToString::to_string).collect();
        Err(format!(
            "stray faultline helper process(es) {when}, alive {HELPER_GRACE:?} after no fault held them (killed now): {}",
            names.join("; ")
        ))
    }

    /// [`HelperWatch::settle`], failing the test on a stray (or only reporting it while the
    /// test already panics).
    pub fn check(&self, when: &str) {
        if let Err(msg) = self.settle(when) {
            if std::thread::panicking() {
                eprintln!("{msg}");
            } else {
                panic!("{msg}");
            }
        }
    }
}

impl Drop for HelperWatch {
    fn drop(&mut self) {
        self.check("when the test's fixture was dropped");
    }
}

/// A background `faultline` process; SIGKILLed and reaped on drop.
#[derive(Debug)]
pub struct Bg {
    /// The process.
    pub child: Child,
    out: PathBuf,
    err: PathBuf,
}

impl Bg {
    /// Its pid.
    pub fn pid(&self) -> i32 {
        i32::try_from(self.child.id()).unwrap_or(i32::MAX)
    }

    /// Its stdout so far.
    pub fn stdout(&self) -> String {
        fs::read_to_string(&self.out).unwrap_or_default()
    }

    /// Its stderr so far.
    pub fn stderr(&self) -> String {
        fs::read_to_string(&self.err).unwrap_or_default()
    }

    /// Sends `sig`.
    pub fn signal(&self, sig: Signal) {
        let _ = kill(Pid::from_raw(self.pid()), sig);
    }

    /// Waits up to `timeout` for it to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let mut status = None;
        wait_until(timeout, || {
            status = self.child.try_wait().ok().flatten();
            status.is_some()
        });
        status
    }
}

impl Drop for Bg {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!(
                "---- {} ----\n{}\n---- stderr ----\n{}",
                self.out.display(),
                self.stdout(),
                self.stderr()
            );
        }
    }
}

/// (mount point, filesystem type) of this process's mount namespace, from mountinfo.
pub fn mounts() -> Vec<(PathBuf, String)> {
    let text = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    text.lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let point = left.split(' ').nth(4)?;
            let fstype = right.split(' ').next()?;
            // mountinfo escapes space, tab, newline and backslash as octal.
            let point = point
                .replace("\\040", " ")
                .replace("\\011", "\t")
                .replace("\\012", "\n")
                .replace("\\134", "\\");
            Some((PathBuf::from(point), fstype.to_owned()))
        })
        .collect()
}

/// The mount points of every cgroup hierarchy (v1 controllers and the unified one).
pub fn cgroup_roots() -> Vec<PathBuf> {
    mounts()
        .into_iter()
        .filter(|(_, fstype)| fstype == "cgroup" || fstype == "cgroup2")
        .map(|(point, _)| point)
        .collect()
}

/// Lazily unmounts everything mounted at or below `dir` (a runtime's storage the test set
/// up), deepest first, and again while some remain (stacked mounts, at most five rounds).
pub fn unmount_below(dir: &Path) {
    for _ in 0..5 {
        let mut points: Vec<PathBuf> = mounts()
            .into_iter()
            .map(|(point, _)| point)
            .filter(|point| point.starts_with(dir))
            .collect();
        if points.is_empty() {
            return;
        }
        points.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
        for point in points {
            if let Err(e) = nix::mount::umount2(&point, nix::mount::MntFlags::MNT_DETACH) {
                eprintln!("umount {}: {e}", point.display());
            }
        }
    }
}

/// A small tmpfs the test mounted itself (root only); unmounted on drop.
#[derive(Debug)]
pub struct Tmpfs {
    dir: TempDir,
}

impl Tmpfs {
    /// Mounts a tmpfs of `size` (e.g. `32m`) on a new temporary directory.
    pub fn mount(size: &str) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("faultline-tmpfs-")
            .tempdir()
            .unwrap_or_else(|e| panic!("tempdir: {e}"));
        let status = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0755"),
                "faultline-test",
            ])
            .arg(dir.path())
            .status()
            .unwrap_or_else(|e| panic!("mount: {e}"));
        assert!(
            status.success(),
            "mount tmpfs on {}: {status}",
            dir.path().display()
        );
        Tmpfs { dir }
    }

    /// The mount point.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Used percentage as df computes it: used / (used + available).
    pub fn used_percent(&self) -> f64 {
        let st = nix::sys::statvfs::statvfs(self.path()).unwrap_or_else(|e| panic!("statvfs: {e}"));
        let used = (st.blocks() - st.blocks_free()) as f64;
        let avail = st.blocks_available() as f64;
        used * 100.0 / (used + avail)
    }

    /// Names of the files in it.
    pub fn files(&self) -> Vec<String> {
        fs::read_dir(self.path())
            .map(|rd| {
                rd.filter_map(Result::ok)
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let status = Command::new("umount").arg(self.dir.path()).status();
        if !matches!(status, Ok(s) if s.success()) {
            let _ = Command::new("umount")
                .arg("-l")
                .arg(self.dir.path())
                .status();
        }
    }
}

/// A cgroup the test created (root only): a new directory in the `pids` v1 hierarchy where
/// there is one (hybrid and v1 hosts), else in the unified hierarchy — or, from
/// [`TestCgroup::freezer`], one that can be frozen. Processes still in it are thawed, moved
/// back to the hierarchy's root and the directory removed on drop.
#[derive(Debug)]
pub struct TestCgroup {
    root: PathBuf,
    rel: String,
}

impl TestCgroup {
    /// Creates `<hierarchy>/faultline-test-<pid>-<name>`.
    ///
    /// # Panics
    /// When no writable cgroup hierarchy is mounted.
    pub fn create(name: &str) -> Self {
        Self::create_in(
            &[
                "/sys/fs/cgroup/pids",
                "/sys/fs/cgroup/unified",
                "/sys/fs/cgroup",
            ],
            name,
        )
    }

    /// A cgroup [`TestCgroup::freeze`] works on: in the v1 `freezer` hierarchy where there
    /// is one, else in the unified hierarchy (`cgroup.freeze`).
    ///
    /// # Panics
    /// When neither is mounted.
    pub fn freezer(name: &str) -> Self {
        Self::create_in(&["/sys/fs/cgroup/freezer", "/sys/fs/cgroup"], name)
    }

    fn create_in(roots: &[&str], name: &str) -> Self {
        let root = roots
            .iter()
            .map(PathBuf::from)
            .find(|p| p.join("cgroup.procs").is_file())
            .unwrap_or_else(|| panic!("no cgroup hierarchy among {roots:?}"));
        let rel = format!("/faultline-test-{}-{name}", std::process::id());
        let cg = TestCgroup { root, rel };
        fs::create_dir(cg.path()).unwrap_or_else(|e| panic!("{}: {e}", cg.path().display()));
        cg
    }

    /// Freezes (`true`) or thaws the cgroup's processes, and waits until the kernel says so.
    ///
    /// # Panics
    /// When the cgroup cannot be frozen (not from [`TestCgroup::freezer`]) or does not settle.
    pub fn freeze(&self, frozen: bool) {
        let v1 = self.path().join("freezer.state");
        let (file, value, settled) = if v1.is_file() {
            let want = if frozen { "FROZEN" } else { "THAWED" };
            (v1, want, want)
        } else {
            let want = if frozen { "1" } else { "0" };
            (self.path().join("cgroup.freeze"), want, "")
        };
        fs::write(&file, value).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        if !settled.is_empty() {
            assert!(
                wait_until(Duration::from_secs(5), || fs::read_to_string(&file)
                    .is_ok_and(|t| t.trim() == settled)),
                "{} did not reach {settled}",
                file.display()
            );
        } else {
            let events = self.path().join("cgroup.events");
            let want = format!("frozen {}", u8::from(frozen));
            assert!(
                wait_until(Duration::from_secs(5), || fs::read_to_string(&events)
                    .is_ok_and(|t| t.lines().any(|l| l == want))),
                "{} never said {want}",
                events.display()
            );
        }
    }

    /// A child cgroup `<this>/<name>`, removed with this one.
    ///
    /// # Panics
    /// When it cannot be created.
    pub fn child(&self, name: &str) -> String {
        let rel = format!("{}/{name}", self.rel);
        let dir = self.root.join(rel.trim_start_matches('/'));
        fs::create_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        rel
    }

    /// The path as `/proc/<pid>/cgroup` shows it (relative to the hierarchy's root).
    pub fn rel(&self) -> &str {
        &self.rel
    }

    /// The directory.
    pub fn path(&self) -> PathBuf {
        self.root.join(self.rel.trim_start_matches('/'))
    }

    /// Moves `pid` into the cgroup `rel` (this one or a [`Self::child`]).
    ///
    /// # Panics
    /// When the write fails.
    pub fn add(&self, rel: &str, pid: i32) {
        let procs = self
            .root
            .join(rel.trim_start_matches('/'))
            .join("cgroup.procs");
        fs::write(&procs, pid.to_string()).unwrap_or_else(|e| panic!("{}: {e}", procs.display()));
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        // Deepest first: move every process out, then remove the directories.
        let mut dirs = vec![self.path()];
        if let Ok(rd) = fs::read_dir(self.path()) {
            dirs.extend(
                rd.filter_map(Result::ok)
                    .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                    .map(|e| e.path()),
            );
        }
        for dir in dirs.iter().rev() {
            // A frozen process moved out stays frozen (v1): thaw first.
            let _ = fs::write(dir.join("freezer.state"), "THAWED");
            let _ = fs::write(dir.join("cgroup.freeze"), "0");
            for pid in fs::read_to_string(dir.join("cgroup.procs"))
                .unwrap_or_default()
                .lines()
            {
                let _ = fs::write(self.root.join("cgroup.procs"), pid);
            }
            let _ = fs::remove_dir(dir);
        }
    }
}
