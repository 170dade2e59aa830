//! Real backup tools for the backup tests: restic and borg repositories, a PostgreSQL cluster
//! with a pgBackRest stanza, each in its own temporary directory and gone when dropped.
//!
//! [`require`] decides whether a test can run: it prints why and returns `false` when a tool
//! is missing, and panics instead under CI (CI installs them all). The PostgreSQL
//! cluster listens only on 127.0.0.1 and a Unix socket in its own directory, on a free port,
//! and runs as the `postgres` user when the tests run as root (the server refuses root);
//! [`PgCluster`]'s `Drop` stops it in immediate mode.
//!
//! [`backup_check`] runs the real `faultline backup check --format json` against a config
//! and returns its exit code and parsed JSON, for comparison with the tools run by hand here.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use tempfile::TempDir;

/// The PostgreSQL binaries used for the test cluster.
pub const PG_BIN: &str = "/usr/lib/postgresql/15/bin";

/// Whether `name` is an executable on `PATH` (or an existing path).
pub fn which(name: &str) -> Option<PathBuf> {
    if name.contains('/') {
        return Path::new(name).is_file().then(|| PathBuf::from(name));
    }
    std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join(name))
            .find(|f| f.is_file())
    })
}

/// Whether every tool is installed. A missing one skips the test with a message, or fails it
/// under CI.
///
/// # Panics
/// When a tool is missing and CI.
pub fn require(tools: &[&str]) -> bool {
    let missing: Vec<&str> = tools
        .iter()
        .copied()
        .filter(|t| which(t).is_none())
        .collect();
    if missing.is_empty() {
        return true;
    }
    let msg = format!(
        "backup test needs {} (Debian: apt-get install restic borgbackup pgbackrest postgresql)",
        missing.join(", ")
    );
    assert!(!crate::in_ci(), "{msg}");
    eprintln!("SKIPPED: {msg}");
    false
}

/// Runs a command to completion, panicking when it cannot start.
///
/// # Panics
/// When the command cannot be started.
pub fn run(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

/// Runs a command and panics with its output unless it succeeds; returns stdout.
///
/// # Panics
/// When it fails.
pub fn run_ok(cmd: &mut Command) -> String {
    let out = run(cmd);
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A temporary directory.
///
/// # Panics
/// When it cannot be created.
pub fn tempdir(prefix: &str) -> TempDir {
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir()
        .unwrap_or_else(|e| panic!("tempdir: {e}"))
}

/// Writes a small data tree (a few files with known content) under `dir/data`, returning it.
///
/// # Panics
/// On I/O errors.
pub fn write_data(dir: &Path) -> PathBuf {
    let data = dir.join("data");
    std::fs::create_dir_all(data.join("sub")).unwrap_or_else(|e| panic!("{e}"));
    let write = |p: PathBuf, c: &[u8]| {
        std::fs::write(&p, c).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
    };
    write(data.join("hello.txt"), b"hello backups\n");
    write(
        data.join("sub/numbers.csv"),
        (0..2000)
            .map(|i| format!("{i},{}\n", i * i))
            .collect::<String>()
            .as_bytes(),
    );
    write(
        data.join("sub/blob.bin"),
        &(0..65_536u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect::<Vec<u8>>(),
    );
    data
}

/// `sha256sum`-format manifest of every file under `data`, with absolute paths.
///
/// # Panics
/// When `sha256sum` fails.
pub fn manifest_of(data: &Path) -> String {
    let mut files = Vec::new();
    let mut stack = vec![data.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d)
            .unwrap_or_else(|e| panic!("{e}"))
            .flatten()
        {
            if e.path().is_dir() {
                stack.push(e.path());
            } else {
                files.push(e.path());
            }
        }
    }
    files.sort();
    run_ok(Command::new("sha256sum").args(&files))
}

/// A restic repository with a password file, its data tree and a cache, in a temp dir.
#[derive(Debug)]
pub struct Restic {
    /// Holds everything.
    pub dir: TempDir,
    /// The repository.
    pub repo: PathBuf,
    /// The password file.
    pub password_file: PathBuf,
    /// The backed-up tree.
    pub data: PathBuf,
}

impl Restic {
    /// `restic init` in a new temp dir, plus a data tree.
    ///
    /// # Panics
    /// When restic fails.
    pub fn init() -> Self {
        let dir = tempdir("fl-restic-");
        let repo = dir.path().join("repo");
        let password_file = dir.path().join("pass");
        std::fs::write(&password_file, "correct horse\n").unwrap_or_else(|e| panic!("{e}"));
        let data = write_data(dir.path());
        let r = Self {
            dir,
            repo,
            password_file,
            data,
        };
        run_ok(r.cmd().args(["init", "--quiet"]));
        r
    }

    /// A restic command on this repository (password and cache set in the environment).
    pub fn cmd(&self) -> Command {
        let mut c = Command::new("restic");
        c.arg("--repo")
            .arg(&self.repo)
            .env("RESTIC_PASSWORD_FILE", &self.password_file)
            .env("RESTIC_CACHE_DIR", self.dir.path().join("cache"))
            .env_remove("RESTIC_PASSWORD")
            .env_remove("RESTIC_REPOSITORY");
        c
    }

    /// Backs the data tree up; returns the snapshot id.
    ///
    /// # Panics
    /// When restic fails.
    pub fn backup(&self) -> String {
        let out = run_ok(
            self.cmd()
                .args(["backup", "--json", "--quiet"])
                .arg(&self.data),
        );
        let v: serde_json::Value = out
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .find(|v: &serde_json::Value| v["message_type"] == "summary")
            .unwrap_or_else(|| panic!("no summary in restic output: {out}"));
        v["snapshot_id"].as_str().unwrap_or_default().to_owned()
    }

    /// The pack files in the repository.
    pub fn packs(&self) -> Vec<PathBuf> {
        let mut out = Vec::new();
        for sub in std::fs::read_dir(self.repo.join("data"))
            .unwrap_or_else(|e| panic!("{e}"))
            .flatten()
        {
            for f in std::fs::read_dir(sub.path())
                .unwrap_or_else(|e| panic!("{e}"))
                .flatten()
            {
                out.push(f.path());
            }
        }
        out.sort();
        out
    }
}

/// A borg repository (repokey, passphrase `faultline-test`) with its own `BORG_BASE_DIR`.
#[derive(Debug)]
pub struct Borg {
    /// Holds everything.
    pub dir: TempDir,
    /// The repository.
    pub repo: PathBuf,
    /// The backed-up tree.
    pub data: PathBuf,
    /// `BORG_BASE_DIR` (cache, security, keys).
    pub base: PathBuf,
    /// A file holding the passphrase.
    pub passphrase_file: PathBuf,
}

/// The test repositories' borg passphrase.
pub const BORG_PASSPHRASE: &str = "faultline-test";

impl Borg {
    /// `borg init -e repokey` in a new temp dir, plus a data tree.
    ///
    /// # Panics
    /// When borg fails.
    pub fn init() -> Self {
        let dir = tempdir("fl-borg-");
        let repo = dir.path().join("repo");
        let base = dir.path().join("base");
        let data = write_data(dir.path());
        let passphrase_file = dir.path().join("passphrase");
        std::fs::write(&passphrase_file, format!("{BORG_PASSPHRASE}\n"))
            .unwrap_or_else(|e| panic!("{e}"));
        let b = Self {
            dir,
            repo,
            data,
            base,
            passphrase_file,
        };
        run_ok(b.cmd().args(["init", "-e", "repokey"]).arg(&b.repo));
        b
    }

    /// A borg command with this repository's passphrase and base dir.
    pub fn cmd(&self) -> Command {
        let mut c = Command::new("borg");
        c.env("BORG_PASSPHRASE", BORG_PASSPHRASE)
            .env("BORG_BASE_DIR", &self.base)
            .env_remove("BORG_REPO");
        c
    }

    /// Creates archive `name` of the data tree.
    ///
    /// # Panics
    /// When borg fails.
    pub fn create(&self, name: &str) {
        run_ok(
            self.cmd()
                .arg("create")
                .arg(format!("{}::{name}", self.repo.display()))
                .arg(&self.data),
        );
    }

    /// The data segment files (`data/<n>/<m>`), largest first.
    pub fn segments(&self) -> Vec<PathBuf> {
        let mut out = Vec::new();
        for sub in std::fs::read_dir(self.repo.join("data"))
            .unwrap_or_else(|e| panic!("{e}"))
            .flatten()
        {
            for f in std::fs::read_dir(sub.path())
                .unwrap_or_else(|e| panic!("{e}"))
                .flatten()
            {
                out.push(f.path());
            }
        }
        out.sort_by_key(|p| std::cmp::Reverse(std::fs::metadata(p).map(|m| m.len()).unwrap_or(0)));
        out
    }
}

/// A free TCP port on 127.0.0.1 (bound and released).
///
/// # Panics
/// When no port can be bound.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("no free port: {e}"))
}

/// A PostgreSQL 15 cluster on a free loopback port with WAL archived by pgBackRest into a
/// stanza `t` in the same temp dir. Stopped (immediate) on drop.
#[derive(Debug)]
pub struct PgCluster {
    /// Holds data, repository, config, logs, socket.
    pub dir: TempDir,
    /// The port.
    pub port: u16,
    /// `postgres` when the tests run as root, else `None` (the current user).
    pub user: Option<&'static str>,
}

impl PgCluster {
    /// Initialises, configures archiving, starts, creates the stanza and a table `t` with
    /// 1000 rows.
    ///
    /// # Panics
    /// When any step fails.
    pub fn start() -> Self {
        let dir = tempdir("fl-pg-");
        let user = nix::unistd::geteuid().is_root().then_some("postgres");
        let port = free_port();
        let p = dir.path().to_path_buf();
        let p = p.as_path();
        let conf = format!(
            "[global]\nrepo1-path={p}/repo\nlog-path={p}/log\nlock-path={p}/lock\nspool-path={p}/spool\n\
             log-level-console=warn\nlog-level-file=off\nstart-fast=y\nrepo1-retention-full=9\n\
             [t]\npg1-path={p}/data\npg1-port={port}\npg1-socket-path={p}\n",
            p = p.display()
        );
        std::fs::write(p.join("pgbackrest.conf"), conf).unwrap_or_else(|e| panic!("{e}"));
        if user.is_some() {
            run_ok(
                Command::new("chown")
                    .args(["-R", "postgres:postgres"])
                    .arg(p),
            );
        }
        let c = Self { dir, port, user };
        run_ok(
            c.as_user(&format!("{PG_BIN}/initdb"))
                .args(["-A", "trust", "-U", "postgres", "-D"])
                .arg(p.join("data")),
        );
        let extra = format!(
            "port = {port}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{p}'\n\
             archive_mode = on\narchive_command = 'pgbackrest --config={p}/pgbackrest.conf --stanza=t archive-push %p'\n\
             wal_level = replica\nfsync = off\n",
            p = p.display()
        );
        let pgconf = p.join("data/postgresql.conf");
        let mut text = std::fs::read_to_string(&pgconf).unwrap_or_else(|e| panic!("{e}"));
        text.push_str(&extra);
        std::fs::write(&pgconf, text).unwrap_or_else(|e| panic!("{e}"));
        run_ok(
            c.as_user(&format!("{PG_BIN}/pg_ctl"))
                .arg("-D")
                .arg(p.join("data"))
                .arg("-l")
                .arg(p.join("pg.log"))
                .args(["-w", "-t", "60", "start"]),
        );
        run_ok(c.pgbackrest().arg("stanza-create"));
        c.psql("create table t(x int); insert into t select generate_series(1, 1000);");
        c
    }

    /// The config file path.
    pub fn conf(&self) -> PathBuf {
        self.dir.path().join("pgbackrest.conf")
    }

    /// A command run as the cluster's user.
    pub fn as_user(&self, program: &str) -> Command {
        match self.user {
            Some(u) => {
                let mut c = Command::new("runuser");
                c.args(["-u", u, "--", program]).current_dir("/");
                c
            }
            None => Command::new(program),
        }
    }

    /// `pgbackrest --config=… --stanza=t` as the cluster's user.
    pub fn pgbackrest(&self) -> Command {
        let mut c = self.as_user("pgbackrest");
        c.arg(format!("--config={}", self.conf().display()))
            .arg("--stanza=t");
        c
    }

    /// Runs SQL through psql on the Unix socket; returns stdout.
    ///
    /// # Panics
    /// When psql fails.
    pub fn psql(&self, sql: &str) -> String {
        run_ok(
            self.as_user(&format!("{PG_BIN}/psql"))
                .args(["-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1", "-h"])
                .arg(self.dir.path())
                .arg("-p")
                .arg(self.port.to_string())
                .args(["-d", "postgres", "-c", sql]),
        )
    }

    /// A full backup.
    ///
    /// # Panics
    /// When it fails.
    pub fn backup_full(&self) {
        run_ok(self.pgbackrest().args(["--type=full", "backup"]));
    }

    /// The archived WAL segment files (compressed), sorted by name.
    pub fn wal_files(&self) -> Vec<PathBuf> {
        let root = self.dir.path().join("repo/archive/t");
        let mut out = Vec::new();
        let mut stack = vec![root];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
                let p = e.path();
                if p.is_dir() {
                    stack.push(p);
                } else if p
                    .file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.len() > 24 && n.ends_with(".gz") && !n.contains(".backup"))
                {
                    out.push(p);
                }
            }
        }
        out.sort();
        out
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        let _ = self
            .as_user(&format!("{PG_BIN}/pg_ctl"))
            .arg("-D")
            .arg(self.dir.path().join("data"))
            .args(["-m", "immediate", "-w", "stop"])
            .output();
    }
}

/// What one `faultline backup check --format json` run returned.
#[derive(Debug)]
pub struct CheckRun {
    /// Exit code.
    pub code: Option<i32>,
    /// Parsed stdout (`Null` when not JSON).
    pub json: serde_json::Value,
    /// Raw stdout.
    pub stdout: String,
    /// Raw stderr.
    pub stderr: String,
}

impl CheckRun {
    /// The result of `check` for `source`.
    ///
    /// # Panics
    /// When there is none.
    pub fn result(&self, source: &str, check: &str) -> &serde_json::Value {
        self.json["results"]
            .as_array()
            .and_then(|a| {
                a.iter()
                    .find(|r| r["source"] == source && r["check"] == check)
            })
            .unwrap_or_else(|| {
                panic!(
                    "no {check} result for {source} in {}\nstderr: {}",
                    self.stdout, self.stderr
                )
            })
    }
}

/// Writes `config_yaml` next to `state_dir` and runs `faultline --state-dir <state_dir>
/// backup check --config <file> --format json <extra…>`.
pub async fn backup_check(config_yaml: &str, state_dir: &Path, extra: &[&str]) -> CheckRun {
    std::fs::create_dir_all(state_dir).unwrap_or_else(|e| panic!("{e}"));
    let cfg = state_dir.join("faultline.yaml");
    std::fs::write(&cfg, config_yaml).unwrap_or_else(|e| panic!("{e}"));
    let mut args: Vec<String> = vec![
        "--state-dir".into(),
        state_dir.display().to_string(),
        "backup".into(),
        "check".into(),
        "--config".into(),
        cfg.display().to_string(),
        "--format".into(),
        "json".into(),
    ];
    args.extend(extra.iter().map(|s| (*s).to_owned()));
    let out = crate::run_cli(&args, Duration::from_secs(120)).await;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    CheckRun {
        code: out.status.code(),
        json: serde_json::from_str(&stdout).unwrap_or(serde_json::Value::Null),
        stdout,
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Whether the PostgreSQL server at `addr` takes a session: a start-up handshake (protocol
/// 3.0, user and database `postgres`, trust authentication) answered with ReadyForQuery
/// within `timeout`. A server that is starting up, shutting down or recovering answers with
/// an error instead, and a dead one refuses the connection. No process is spawned (psql costs
/// tens of milliseconds a call), so a stopwatch can ask every millisecond.
pub fn pg_accepts(addr: &std::net::SocketAddr, timeout: Duration) -> bool {
    use std::io::{Read as _, Write as _};
    let Ok(mut s) = std::net::TcpStream::connect_timeout(addr, timeout) else {
        return false;
    };
    if s.set_read_timeout(Some(timeout)).is_err() || s.set_nodelay(true).is_err() {
        return false;
    }
    let params: &[u8] = b"user\0postgres\0database\0postgres\0\0";
    let mut startup = Vec::with_capacity(8 + params.len());
    startup.extend_from_slice(&u32::try_from(8 + params.len()).unwrap_or(0).to_be_bytes());
    startup.extend_from_slice(&196_608u32.to_be_bytes()); // protocol 3.0
    startup.extend_from_slice(params);
    if s.write_all(&startup).is_err() {
        return false;
    }
    let ready = loop {
        let mut head = [0u8; 5];
        if s.read_exact(&mut head).is_err() {
            break false;
        }
        let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
        let mut body = vec![0u8; len.saturating_sub(4)];
        if s.read_exact(&mut body).is_err() {
            break false;
        }
        match head[0] {
            b'Z' => break true,
            b'E' => break false,
            // Authentication: 0 is AuthenticationOk; anything else asks for a password.
            b'R' if body.get(..4) != Some(&[0, 0, 0, 0]) => break false,
            _ => {}
        }
    };
    // Terminate, so the server logs no "unexpected EOF".
    let _ = s.write_all(&[b'X', 0, 0, 0, 4]);
    ready
}
