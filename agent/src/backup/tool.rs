//! Running the backup tools: one child process per call, with a timeout, captured output and
//! the tool's own exit-code table.
//!
//! Each child gets its own process group, a null stdin (a tool that would prompt fails
//! instead of hanging) and `kill_on_drop`. When the timeout passes the whole group gets
//! SIGKILL, so a wrapper script's children die with it and cannot hold the output pipes open.
//! Output is captured up to a cap (stdout 64 MiB, stderr 256 KiB, the tail kept) so a chatty
//! tool cannot exhaust memory.
//!
//! Exit codes are read as each tool documents them ([`interpret`]):
//!
//! | tool | code | meaning |
//! | --- | --- | --- |
//! | restic | 0 | success |
//! | restic | 1 | command failed (0.14–0.16 also use 1 for the cases below; stderr is read to tell them apart) |
//! | restic | 2 | Go runtime error |
//! | restic | 3 | `backup` could not read some source data |
//! | restic | 10 | repository does not exist (0.17+) |
//! | restic | 11 | failed to lock the repository (0.17+) |
//! | restic | 12 | wrong password (0.17+) |
//! | restic | 130 | interrupted |
//! | borg | 0 | success |
//! | borg | 1 | warning: reached the end with warnings (for `check`: problems found) |
//! | borg | 2 | error |
//! | borg | 128+N | killed by signal N |
//! | pgbackrest | 0 | success (`verify` also exits 0 with `status: error`; its report is parsed) |
//! | pgbackrest | 25–125 | the error code table in pgBackRest's `error.yaml` (e.g. 50 lock-acquire, 55 file-missing, 56 db-connect, 95 crypto, 103 repo-invalid, 104 command) |
//! | command | 0 | success; anything else is failure |
//!
//! An unknown code is a failure (restic's documentation: "MUST be treated as a command
//! failure").

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt};

/// Most stdout bytes kept.
const STDOUT_CAP: usize = 64 << 20;
/// Most stderr bytes kept (the tail).
const STDERR_CAP: usize = 256 << 10;

/// Which tool's exit-code table applies.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Tool {
    /// restic.
    Restic,
    /// borg.
    Borg,
    /// pgBackRest.
    Pgbackrest,
    /// PostgreSQL's own programs (pg_ctl, psql): 0 success, else failure.
    Postgres,
    /// Any other program: 0 success, else failure.
    Command,
}

/// The user a tool runs as.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RunAs {
    /// User id.
    pub uid: u32,
    /// Primary group id.
    pub gid: u32,
}

/// One invocation.
#[derive(Clone, Debug)]
pub struct ToolCommand {
    /// Which exit-code table applies.
    pub tool: Tool,
    /// The program (a name looked up in `PATH`, or a path).
    pub program: PathBuf,
    /// Arguments.
    pub args: Vec<OsString>,
    /// Extra environment.
    pub env: Vec<(OsString, OsString)>,
    /// Working directory.
    pub cwd: Option<PathBuf>,
    /// Run as this user (needs root).
    pub run_as: Option<RunAs>,
    /// Kill the process group after this long.
    pub timeout: Duration,
}

impl ToolCommand {
    /// A command for `program` with `timeout` and nothing else set.
    pub fn new(tool: Tool, program: impl Into<PathBuf>, timeout: Duration) -> Self {
        Self {
            tool,
            program: program.into(),
            args: Vec::new(),
            env: Vec::new(),
            cwd: None,
            run_as: None,
            timeout,
        }
    }

    /// Appends an argument.
    #[must_use]
    pub fn arg(mut self, a: impl Into<OsString>) -> Self {
        self.args.push(a.into());
        self
    }

    /// Appends arguments.
    #[must_use]
    pub fn args<I: IntoIterator<Item = S>, S: Into<OsString>>(mut self, a: I) -> Self {
        self.args.extend(a.into_iter().map(Into::into));
        self
    }

    /// Adds an environment variable.
    #[must_use]
    pub fn env(mut self, k: impl Into<OsString>, v: impl Into<OsString>) -> Self {
        self.env.push((k.into(), v.into()));
        self
    }

    /// The command line for messages (arguments as given; secrets are never arguments).
    pub fn display(&self) -> String {
        let mut s = self.program.display().to_string();
        for a in &self.args {
            s.push(' ');
            s.push_str(&a.to_string_lossy());
        }
        s
    }
}

/// What a finished run produced.
#[derive(Clone, Debug)]
pub struct ToolOutput {
    /// The exit code, `None` when killed by a signal.
    pub code: Option<i32>,
    /// The signal that ended it.
    pub signal: Option<i32>,
    /// Standard output (lossy UTF-8, capped).
    pub stdout: String,
    /// Standard error (lossy UTF-8, tail kept).
    pub stderr: String,
    /// Wall-clock time.
    pub elapsed: Duration,
    /// The command line.
    pub command: String,
}

/// Why a tool could not be run to completion.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The program does not exist.
    #[error("{program}: not found (install it or set `binary:` to its path)")]
    NotFound {
        /// The program.
        program: String,
    },
    /// It could not be started.
    #[error("cannot start {command}: {source}")]
    Spawn {
        /// The command line.
        command: String,
        /// Why.
        source: std::io::Error,
    },
    /// It ran past its timeout and was killed.
    #[error("{command} did not finish within {} and was killed", humantime::format_duration(*.after))]
    Timeout {
        /// The command line.
        command: String,
        /// The timeout.
        after: Duration,
        /// What it had written to stderr by then.
        stderr: String,
    },
}

/// Runs `cmd` to completion or its timeout.
pub async fn run(cmd: &ToolCommand) -> Result<ToolOutput, RunError> {
    let command = cmd.display();
    let mut c = tokio::process::Command::new(&cmd.program);
    c.args(&cmd.args)
        .envs(cmd.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    if let Some(dir) = &cmd.cwd {
        c.current_dir(dir);
    }
    if let Some(u) = cmd.run_as {
        c.uid(u.uid).gid(u.gid);
    }
    let started = Instant::now();
    let mut child = match c.spawn() {
        Ok(ch) => ch,
        Err(e)
            if e.kind() == std::io::ErrorKind::NotFound
                && cmd.cwd.as_ref().is_none_or(|d| d.is_dir()) =>
        {
            return Err(RunError::NotFound {
                program: cmd.program.display().to_string(),
            });
        }
        Err(source) => return Err(RunError::Spawn { command, source }),
    };
    let pgid = child.id().and_then(|id| i32::try_from(id).ok());
    let mut out_pipe = child.stdout.take();
    let mut err_pipe = child.stderr.take();
    let mut out = Vec::new();
    let mut err = Vec::new();
    let finished = tokio::time::timeout(cmd.timeout, async {
        let (_, _, status) = tokio::join!(
            read_capped(out_pipe.as_mut(), &mut out, STDOUT_CAP, false),
            read_capped(err_pipe.as_mut(), &mut err, STDERR_CAP, true),
            child.wait()
        );
        status
    })
    .await;
    match finished {
        Ok(Ok(status)) => {
            use std::os::unix::process::ExitStatusExt;
            Ok(ToolOutput {
                code: status.code(),
                signal: status.signal(),
                stdout: String::from_utf8_lossy(&out).into_owned(),
                stderr: String::from_utf8_lossy(&err).into_owned(),
                elapsed: started.elapsed(),
                command,
            })
        }
        Ok(Err(source)) => Err(RunError::Spawn { command, source }),
        Err(_) => {
            if let Some(pgid) = pgid {
                // The child leads its own group (process_group(0)); ESRCH means it is gone.
                let _ = nix::sys::signal::killpg(
                    nix::unistd::Pid::from_raw(pgid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            let _ = tokio::time::timeout(Duration::from_secs(5), child.wait()).await;
            Err(RunError::Timeout {
                command,
                after: cmd.timeout,
                stderr: String::from_utf8_lossy(&err).into_owned(),
            })
        }
    }
}

/// Reads `pipe` to its end, keeping at most `cap` bytes (the head, or the tail if `tail`).
async fn read_capped<R: AsyncRead + Unpin>(
    pipe: Option<&mut R>,
    buf: &mut Vec<u8>,
    cap: usize,
    tail: bool,
) {
    let Some(pipe) = pipe else { return };
    let mut chunk = [0u8; 16 * 1024];
    loop {
        match pipe.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                if buf.len() > cap {
                    if tail {
                        let drop = buf.len() - cap;
                        buf.drain(..drop);
                    } else {
                        buf.truncate(cap);
                    }
                }
            }
        }
    }
}

/// What an exit status means for the tool.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Success.
    Ok,
    /// Finished with warnings (borg 1).
    Warning,
    /// The repository password or key is wrong.
    WrongPassword,
    /// The repository does not exist or is not a repository.
    RepositoryMissing,
    /// The repository is locked by another process.
    Locked,
    /// Any other failure, with the tool's meaning of the code.
    Failed(String),
    /// Killed by a signal.
    Signal(i32),
}

impl Outcome {
    /// A short phrase for events and tables.
    pub fn describe(&self) -> String {
        match self {
            Outcome::Ok => "success".into(),
            Outcome::Warning => "finished with warnings".into(),
            Outcome::WrongPassword => "wrong password or key".into(),
            Outcome::RepositoryMissing => "repository does not exist".into(),
            Outcome::Locked => "repository is locked by another process".into(),
            Outcome::Failed(m) => m.clone(),
            Outcome::Signal(s) => format!("killed by signal {s}"),
        }
    }
}

/// Reads an exit status the way `tool` documents it, refining generic failure codes with
/// the tool's stderr where older versions do not have specific codes.
pub fn interpret(tool: Tool, code: Option<i32>, signal: Option<i32>, stderr: &str) -> Outcome {
    let Some(code) = code else {
        return Outcome::Signal(signal.unwrap_or(0));
    };
    let lower = stderr.to_ascii_lowercase();
    let has = |needles: &[&str]| needles.iter().any(|n| lower.contains(n));
    let refine = |generic: String| -> Outcome {
        if has(&[
            "wrong password",
            "no key found",
            "passphrase supplied in",
            "is incorrect",
            "passphrase is wrong",
        ]) {
            Outcome::WrongPassword
        } else if has(&[
            "repository does not exist",
            "unable to open config file",
            "is there a repository at",
            "does not exist.",
            "is not a valid repository",
        ]) {
            Outcome::RepositoryMissing
        } else if has(&[
            "unable to create lock",
            "already locked",
            "failed to create/acquire the lock",
            "lock timeout",
        ]) {
            Outcome::Locked
        } else {
            Outcome::Failed(generic)
        }
    };
    match (tool, code) {
        (_, 0) => Outcome::Ok,
        (Tool::Restic, 1) => refine("restic: command failed (exit 1)".into()),
        (Tool::Restic, 2) => Outcome::Failed("restic: Go runtime error (exit 2)".into()),
        (Tool::Restic, 3) => {
            Outcome::Failed("restic: some source data could not be read (exit 3)".into())
        }
        (Tool::Restic, 10) => Outcome::RepositoryMissing,
        (Tool::Restic, 11) => Outcome::Locked,
        (Tool::Restic, 12) => Outcome::WrongPassword,
        (Tool::Restic, 130) => Outcome::Failed("restic: interrupted (exit 130)".into()),
        (Tool::Borg, 1) => Outcome::Warning,
        (Tool::Borg, 2) => refine("borg: error (exit 2)".into()),
        (Tool::Borg, c) if c > 128 => Outcome::Signal(c - 128),
        (Tool::Pgbackrest, c) => match pgbackrest_error(c) {
            Some("lock-acquire") => Outcome::Locked,
            Some("repo-invalid") => Outcome::RepositoryMissing,
            Some("crypto") => Outcome::WrongPassword,
            Some(name) => Outcome::Failed(format!(
                "pgbackrest: {name} error (exit {c}){}",
                pgbackrest_message(stderr)
            )),
            None => Outcome::Failed(format!(
                "pgbackrest: unknown exit code {c}{}",
                pgbackrest_message(stderr)
            )),
        },
        (t, c) => {
            let name = match t {
                Tool::Restic => "restic",
                Tool::Borg => "borg",
                Tool::Postgres => "postgres tool",
                Tool::Command | Tool::Pgbackrest => "command",
            };
            Outcome::Failed(format!("{name}: failed (exit {c})"))
        }
    }
}

/// pgBackRest's error names by exit code (its `src/build/error/error.yaml`).
pub fn pgbackrest_error(code: i32) -> Option<&'static str> {
    Some(match code {
        25 => "assert",
        26 => "checksum",
        27 => "config",
        28 => "file-invalid",
        29 => "format",
        30 => "command-required",
        31 => "option-invalid",
        32 => "option-invalid-value",
        37 => "option-required",
        38 => "pg-running",
        39 => "protocol",
        40 => "path-not-empty",
        41 => "file-open",
        42 => "file-read",
        44 => "archive-mismatch",
        45 => "archive-duplicate",
        46 => "version-not-supported",
        47 => "path-create",
        48 => "command-invalid",
        49 => "host-connect",
        50 => "lock-acquire",
        51 => "backup-mismatch",
        55 => "file-missing",
        56 => "db-connect",
        57 => "db-query",
        58 => "db-mismatch",
        62 => "stop",
        63 => "term",
        64 => "file-write",
        72 => "host-invalid",
        73 => "path-missing",
        75 => "backup-set-invalid",
        80 => "db-missing",
        81 => "db-invalid",
        82 => "archive-timeout",
        87 => "archive-disabled",
        88 => "file-owner",
        89 => "user-missing",
        95 => "crypto",
        99 => "json-format",
        101 => "service",
        102 => "execute",
        103 => "repo-invalid",
        104 => "command",
        105 => "access",
        122 => "runtime",
        124 => "unhandled",
        125 => "unknown",
        _ => return None,
    })
}

/// `": <message>"` from pgBackRest's `ERROR: [055]: message` line, or nothing.
fn pgbackrest_message(stderr: &str) -> String {
    stderr
        .lines()
        .find_map(|l| {
            l.split_once("ERROR: [")
                .and_then(|(_, r)| r.split_once("]: "))
                .map(|(_, m)| format!(": {}", m.trim()))
        })
        .unwrap_or_default()
}

/// The last `max` characters of `text`, trimmed, for events (whole lines where possible).
pub fn tail(text: &str, max: usize) -> String {
    let t = text.trim();
    if t.len() <= max {
        return t.to_owned();
    }
    let mut start = t.len() - max;
    while !t.is_char_boundary(start) {
        start += 1;
    }
    let cut = &t[start..];
    match cut.find('\n') {
        Some(i) if i + 1 < cut.len() => cut[i + 1..].to_owned(),
        _ => cut.to_owned(),
    }
}

#[cfg(test)]
mod tests;
