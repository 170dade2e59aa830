//! The restore test: restore a backup into scratch space, verify what came back, time both
//! phases, and always clean up.
//!
//! 1. Pick the backup: the latest, or a random one among those made within
//!    `restore.random_within` of the latest.
//! 2. Check free space where the scratch directory goes (`restore.scratch_dir`, default
//!    `<state-dir>/backup/scratch`): the backup's size plus 10 % and 1 MiB must be free, else
//!    the test is refused (unhealthy) before anything is written. A size the tool does not
//!    report cannot be checked; the result says so.
//! 3. Restore into a fresh `<scratch>/<source>-<random>` (owned by `user` when set).
//! 4. Verify: the tree is not empty; every `expect_paths` entry exists; the `manifest`
//!    entries (all, or a random `sample`) have the recorded SHA-256; and the source's own
//!    verification — for pgBackRest a temporary PostgreSQL on a free loopback port running
//!    the configured query, whose first value must satisfy the predicate.
//! 5. Remove the scratch directory, whatever happened before; a failed removal is itself a
//!    finding. If the check's task is dropped mid-way (agent shutdown), [`ScratchGuard`]'s
//!    `Drop` stops a PostgreSQL it left running (SIGQUIT to the postmaster in its pid file)
//!    and removes the directory synchronously — there is no async drop, and this path only
//!    runs on cancellation.
//! 6. Compare restore + verification time with the source's `rto`.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::Serialize;

use super::config::{BackupSourceConfig, Predicate, RestoreConfig};
use super::parse::manifest::Entry;
use super::tool::{RunAs, Tool, ToolCommand};
use super::{BackupSource, Ctx, Snapshot, SourceError, human, parse, resolve_user, run_ok, tool};

/// What a restore test did.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct RestoreDetail {
    /// The backup restored.
    pub backup_id: Option<String>,
    /// When it was made.
    pub backup_time_utc: Option<String>,
    /// The restore command.
    pub command: Option<String>,
    /// The scratch directory used.
    pub scratch_dir: Option<String>,
    /// Bytes free where the scratch directory went.
    pub free_bytes: Option<u64>,
    /// Bytes the test required free.
    pub required_bytes: Option<u64>,
    /// Seconds the restore took.
    pub restore_seconds: Option<f64>,
    /// Seconds the verification took.
    pub verify_seconds: Option<f64>,
    /// Files and bytes restored.
    pub restored_files: Option<u64>,
    /// Bytes restored.
    pub restored_bytes: Option<u64>,
    /// What was verified and passed.
    pub verified: Vec<String>,
    /// What failed.
    pub problems: Vec<String>,
    /// The restore-time target, seconds.
    pub rto_seconds: Option<f64>,
    /// The scratch directory is gone afterwards.
    pub scratch_cleaned: bool,
    /// Restore and verification together took longer than `rto`.
    pub rto_exceeded: bool,
}

/// A finished restore test.
#[derive(Clone, Debug)]
pub struct RestoreRun {
    /// The details.
    pub detail: RestoreDetail,
    /// One line.
    pub summary: String,
    /// Set when the test failed.
    pub error: Option<String>,
    /// The tool's stderr when a tool failed.
    pub stderr: Option<String>,
}

/// Runs the restore test of one source.
pub async fn run(
    source: &dyn BackupSource,
    cfg: &BackupSourceConfig,
    rcfg: &RestoreConfig,
    ctx: &Ctx,
) -> RestoreRun {
    let mut d = RestoreDetail {
        rto_seconds: cfg.rto.map(|r| r.0.as_secs_f64()),
        ..RestoreDetail::default()
    };
    let mut stderr = None;
    let res = attempt(source, cfg, rcfg, ctx, &mut d, &mut stderr).await;
    let mut error = res.err();
    if error.is_none() && !d.problems.is_empty() {
        error = Some(d.problems.join("; "));
    }
    let timing = match (d.restore_seconds, d.verify_seconds) {
        (Some(r), Some(v)) => format!("restore {r:.1} s + verification {v:.1} s"),
        (Some(r), None) => format!("restore {r:.1} s"),
        _ => "no restore".to_owned(),
    };
    let what = d.backup_id.clone().unwrap_or_else(|| "-".into());
    let summary = match &error {
        None => format!(
            "restored {what} and verified {} checks ({timing}); scratch cleaned",
            d.verified.len()
        ),
        Some(e) => format!("restore test of {what} failed: {e} ({timing})"),
    };
    RestoreRun {
        detail: d,
        summary,
        error,
        stderr,
    }
}

async fn attempt(
    source: &dyn BackupSource,
    cfg: &BackupSourceConfig,
    rcfg: &RestoreConfig,
    ctx: &Ctx,
    d: &mut RestoreDetail,
    stderr: &mut Option<String>,
) -> Result<(), String> {
    let snaps = source.list(ctx).await.map_err(|e| {
        *stderr = e.stderr().map(str::to_owned);
        format!("cannot list backups: {e}")
    })?;
    let snap = pick(&snaps, rcfg.random_within.map(|w| w.0)).ok_or("no backup to restore")?;
    d.backup_id = Some(snap.id.clone());
    d.backup_time_utc = Some(crate::timefmt::format_utc(snap.time));

    let base = rcfg
        .scratch_dir
        .clone()
        .unwrap_or_else(|| ctx.state_dir.join("backup").join("scratch"));
    tokio::fs::create_dir_all(&base)
        .await
        .map_err(|e| format!("cannot create the scratch base {}: {e}", base.display()))?;
    let free = free_bytes(&base)
        .await
        .map_err(|e| format!("cannot read free space of {}: {e}", base.display()))?;
    d.free_bytes = Some(free);
    d.required_bytes = snap
        .size
        .map(|s| s.saturating_add(s / 10).saturating_add(1 << 20));
    match d.required_bytes {
        Some(need) if free < need => {
            return Err(format!(
                "refused: {} has {free} bytes free, the restore needs {need} (backup size {} + 10 % + 1 MiB)",
                base.display(),
                snap.size.unwrap_or(0)
            ));
        }
        Some(_) => {}
        None => d
            .verified
            .push("free space not checked: the tool reports no size for this backup".into()),
    }

    let run_as = resolve_user(cfg.user.as_deref())
        .await
        .map_err(|e| e.to_string())?;
    let scratch = base.join(format!("{}-{:016x}", cfg.name, rand::random::<u64>()));
    tokio::fs::create_dir(&scratch)
        .await
        .map_err(|e| format!("cannot create {}: {e}", scratch.display()))?;
    d.scratch_dir = Some(scratch.display().to_string());
    let mut guard = ScratchGuard::new(scratch.clone());
    let prepared = prepare_scratch(&scratch, run_as).await;

    let outcome = match prepared {
        Err(e) => Err(e),
        Ok(()) => restore_and_verify(source, rcfg, ctx, snap, &scratch, d, stderr).await,
    };

    // Cleanup, whatever happened.
    match guard.clean().await {
        Ok(()) => d.scratch_cleaned = true,
        Err(e) => d.problems.push(format!(
            "scratch directory {} not cleaned: {e}",
            scratch.display()
        )),
    }
    outcome?;
    if let (Some(rto), Some(r), Some(v)) = (cfg.rto, d.restore_seconds, d.verify_seconds)
        && r + v > rto.0.as_secs_f64()
    {
        d.rto_exceeded = true;
        d.problems.push(format!(
            "restore and verification took {}, longer than the restore-time target {rto}",
            human(r + v)
        ));
    }
    Ok(())
}

/// Makes `scratch` private (0700) and hands it to the source's user, who writes the restored
/// tree into it. Also a drill's staging directory for a restore into place.
pub(crate) async fn prepare_scratch(scratch: &Path, run_as: Option<RunAs>) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    tokio::fs::set_permissions(scratch, std::fs::Permissions::from_mode(0o700))
        .await
        .map_err(|e| format!("{}: {e}", scratch.display()))?;
    if let Some(u) = run_as {
        let p = scratch.to_path_buf();
        tokio::task::spawn_blocking(move || {
            nix::unistd::chown(
                &p,
                Some(nix::unistd::Uid::from_raw(u.uid)),
                Some(nix::unistd::Gid::from_raw(u.gid)),
            )
        })
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| {
            format!(
                "cannot hand {} to the configured user: {e}",
                scratch.display()
            )
        })?;
    }
    Ok(())
}

async fn restore_and_verify(
    source: &dyn BackupSource,
    rcfg: &RestoreConfig,
    ctx: &Ctx,
    snap: &Snapshot,
    scratch: &Path,
    d: &mut RestoreDetail,
    stderr: &mut Option<String>,
) -> Result<(), String> {
    let t0 = Instant::now();
    let restored = source.restore(ctx, snap, scratch).await;
    d.restore_seconds = Some(t0.elapsed().as_secs_f64());
    d.command = Some(restored.map_err(|e| {
        *stderr = e.stderr().map(str::to_owned);
        format!("restore failed: {e}")
    })?);

    let t1 = Instant::now();
    let root = scratch.to_path_buf();
    let (files, bytes) = tokio::task::spawn_blocking(move || tree_size(&root))
        .await
        .map_err(|e| e.to_string())?;
    d.restored_files = Some(files);
    d.restored_bytes = Some(bytes);
    if files == 0 {
        d.problems.push("the restore produced no files".into());
    } else {
        d.verified
            .push(format!("{files} files, {bytes} bytes restored"));
    }
    for p in &rcfg.expect_paths {
        let at = scratch.join(p.trim_start_matches('/'));
        match tokio::fs::symlink_metadata(&at).await {
            Ok(_) => d.verified.push(format!("path {p} present")),
            Err(_) => d
                .problems
                .push(format!("expected path {p} is missing from the restore")),
        }
    }
    if let Some(m) = &rcfg.manifest {
        match load_manifest(m).await {
            Ok(entries) => {
                let total = entries.len();
                let chosen = sample(entries, rcfg.sample);
                let n = chosen.len();
                match verify_manifest(scratch, chosen, true, ctx.timeout).await {
                    Ok(found) if found.is_empty() => d.verified.push(format!(
                        "sha256 of {n} of {total} manifest files match {}",
                        m.display()
                    )),
                    Ok(found) => d.problems.extend(found),
                    Err(e) => d.problems.push(e.to_string()),
                }
            }
            Err(e) => d.problems.push(e.to_string()),
        }
    }
    match source.verify_restored(ctx, scratch).await {
        Ok(v) => d.verified.extend(v),
        Err(e) => {
            if stderr.is_none() {
                *stderr = e.stderr().map(str::to_owned);
            }
            d.problems.push(e.to_string());
        }
    }
    d.verify_seconds = Some(t1.elapsed().as_secs_f64());
    Ok(())
}

/// The latest backup, or a random one within `window` of the latest.
pub fn pick(snaps: &[Snapshot], window: Option<Duration>) -> Option<&Snapshot> {
    pick_with(snaps, window, |n| rand::random_range(0..n))
}

/// [`pick`] with the random choice made by `draw`, which gets the number of candidates (at
/// least 1) and returns an index below it; an index out of range falls back to the latest.
/// Pure, so tests can drive the choice.
pub fn pick_with(
    snaps: &[Snapshot],
    window: Option<Duration>,
    draw: impl FnOnce(usize) -> usize,
) -> Option<&Snapshot> {
    let newest = snaps.last()?;
    let Some(w) = window else { return Some(newest) };
    let cands: Vec<&Snapshot> = snaps
        .iter()
        .filter(|s| s.time >= newest.time - w.as_secs_f64())
        .collect();
    Some(cands.get(draw(cands.len())).copied().unwrap_or(newest))
}

/// `n` random entries (all when `n` is `None` or not smaller).
pub fn sample(mut entries: Vec<Entry>, n: Option<usize>) -> Vec<Entry> {
    if let Some(n) = n {
        while entries.len() > n {
            let i = rand::random_range(0..entries.len());
            entries.swap_remove(i);
        }
    }
    entries
}

async fn load_manifest(path: &Path) -> Result<Vec<Entry>, SourceError> {
    let text = tokio::fs::read_to_string(path)
        .await
        .map_err(|source| SourceError::Io {
            path: path.to_path_buf(),
            source,
        })?;
    parse::manifest::parse(&text).map_err(|source| SourceError::Parse {
        command: path.display().to_string(),
        source,
    })
}

/// Checks manifest entries under `root` (absolute entry paths are re-rooted there when
/// `reroot_absolute`, else used as they are) and returns the mismatches and missing files.
pub async fn verify_manifest(
    root: &Path,
    entries: Vec<Entry>,
    reroot_absolute: bool,
    timeout: Duration,
) -> Result<Vec<String>, SourceError> {
    let root = root.to_path_buf();
    let work = tokio::task::spawn_blocking(move || {
        let mut findings = Vec::new();
        for e in entries {
            let p = Path::new(&e.path);
            let at = if p.is_absolute() && !reroot_absolute {
                p.to_path_buf()
            } else {
                root.join(e.path.trim_start_matches('/'))
            };
            match sha256_file(&at) {
                Ok(h) if h == e.sha256 => {}
                Ok(h) => findings.push(format!(
                    "sha256 mismatch for {}: manifest {}, found {h}",
                    e.path, e.sha256
                )),
                Err(err) => findings.push(format!(
                    "{} listed in the manifest cannot be read: {err}",
                    e.path
                )),
            }
        }
        findings
    });
    match tokio::time::timeout(timeout, work).await {
        Ok(Ok(f)) => Ok(f),
        Ok(Err(e)) => Err(SourceError::Failed(format!(
            "checksum verification did not finish: {e}"
        ))),
        Err(_) => Err(SourceError::Failed(format!(
            "checksum verification did not finish within {}",
            human(timeout.as_secs_f64())
        ))),
    }
}

/// Lower-case hex SHA-256 of a file (blocking; call on the blocking pool).
pub fn sha256_file(path: &Path) -> std::io::Result<String> {
    use std::io::Read;
    let mut f = std::fs::File::open(path)?;
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        ctx.update(&buf[..n]);
    }
    Ok(ctx
        .finish()
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

/// Regular files and their bytes under `root` (blocking; symlinks are not followed).
pub fn tree_size(root: &Path) -> (u64, u64) {
    let mut stack = vec![root.to_path_buf()];
    let (mut files, mut bytes) = (0u64, 0u64);
    while let Some(dir) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in rd.flatten() {
            let Ok(ft) = e.file_type() else { continue };
            if ft.is_dir() {
                stack.push(e.path());
            } else if ft.is_file() {
                files += 1;
                bytes += e.metadata().map(|m| m.len()).unwrap_or(0);
            }
        }
    }
    (files, bytes)
}

async fn free_bytes(dir: &Path) -> std::io::Result<u64> {
    let dir = dir.to_path_buf();
    tokio::task::spawn_blocking(move || {
        let s = nix::sys::statvfs::statvfs(&dir).map_err(std::io::Error::from)?;
        Ok(s.blocks_available().saturating_mul(s.fragment_size()))
    })
    .await
    .map_err(std::io::Error::other)?
}

/// Removes a scratch directory: explicitly with [`ScratchGuard::clean`], or in `Drop` when
/// the test was cancelled before it could.
#[derive(Debug)]
pub struct ScratchGuard {
    dir: Option<PathBuf>,
}

impl ScratchGuard {
    /// Guards `dir`.
    pub fn new(dir: PathBuf) -> Self {
        Self { dir: Some(dir) }
    }

    /// Stops a PostgreSQL left running in it and removes it (on the blocking pool).
    pub async fn clean(&mut self) -> std::io::Result<()> {
        let Some(dir) = self.dir.take() else {
            return Ok(());
        };
        let d2 = dir.clone();
        tokio::task::spawn_blocking(move || remove_now(&d2))
            .await
            .map_err(std::io::Error::other)??;
        if tokio::fs::symlink_metadata(&dir).await.is_ok() {
            return Err(std::io::Error::other(format!(
                "{} still exists after removal",
                dir.display()
            )));
        }
        Ok(())
    }
}

impl Drop for ScratchGuard {
    fn drop(&mut self) {
        if let Some(dir) = self.dir.take()
            && let Err(e) = remove_now(&dir)
        {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot remove the restore scratch directory");
        }
    }
}

/// SIGQUIT (immediate shutdown) to a postmaster whose pid file is in `dir/data`, a short wait
/// for it to go, then `remove_dir_all`. Blocking.
fn remove_now(dir: &Path) -> std::io::Result<()> {
    let pidfile = dir.join("data").join("postmaster.pid");
    if let Some(pid) = std::fs::read_to_string(&pidfile)
        .ok()
        .and_then(|t| t.lines().next().and_then(|l| l.trim().parse::<i32>().ok()))
    {
        let pid = nix::unistd::Pid::from_raw(pid);
        if nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGQUIT).is_ok() {
            let deadline = Instant::now() + Duration::from_secs(10);
            while nix::sys::signal::kill(pid, None).is_ok() && Instant::now() < deadline {
                // A dedicated blocking-pool thread waits here; never an async worker.
                #[allow(clippy::disallowed_methods)]
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
    match std::fs::remove_dir_all(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// What the temporary PostgreSQL needs.
#[derive(Clone, Debug)]
pub struct PgVerify {
    /// The restored data directory.
    pub data: PathBuf,
    /// Where its Unix socket and log go (the scratch directory).
    pub socket_dir: PathBuf,
    /// PostgreSQL's bin directory; from `PG_VERSION` when `None`.
    pub bin_dir: Option<PathBuf>,
    /// Run as (PostgreSQL refuses root).
    pub run_as: Option<RunAs>,
    /// Database.
    pub database: String,
    /// Verification query.
    pub query: Option<String>,
    /// Predicate on its first value.
    pub expect: Option<Predicate>,
    /// Timeout for each step.
    pub timeout: Duration,
}

fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// Starts PostgreSQL on the restored data directory on a free loopback port, runs the
/// verification query, checks the predicate, and stops the server again (immediate mode) —
/// also when the query fails.
pub async fn verify_postgres(v: &PgVerify) -> Result<Vec<String>, SourceError> {
    let bin = match &v.bin_dir {
        Some(b) => b.clone(),
        None => {
            let pv = v.data.join("PG_VERSION");
            let ver = tokio::fs::read_to_string(&pv)
                .await
                .map_err(|source| SourceError::Io {
                    path: pv.clone(),
                    source,
                })?;
            PathBuf::from(format!("/usr/lib/postgresql/{}/bin", ver.trim()))
        }
    };
    let sock = v.socket_dir.display().to_string();
    if sock.len() + ".s.PGSQL.65535".len() + 1 > 107 {
        return Err(SourceError::Failed(format!(
            "scratch path {sock} is too long for PostgreSQL's Unix socket (107 bytes); set restore.scratch_dir to a shorter path"
        )));
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| SourceError::Failed(format!("no free loopback port: {e}")))?;
    let log = v.socket_dir.join("postgres.log");
    let opts = format!(
        "-c port={port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={} -c archive_mode=off -c hot_standby=on -c ssl=off",
        sh_quote(&sock)
    );
    let secs = v.timeout.as_secs().clamp(1, 3600).to_string();
    let pg_ctl = bin.join("pg_ctl");
    let mut start = ToolCommand::new(Tool::Postgres, &pg_ctl, v.timeout)
        .arg("-D")
        .arg(&v.data)
        .arg("-l")
        .arg(&log)
        .args(["-w", "-t", &secs, "-o", &opts, "start"]);
    start.run_as = v.run_as;
    let t0 = Instant::now();
    let started = run_ok(&start, false).await;
    let result = match started {
        Err(e) => {
            let log_tail = tokio::fs::read_to_string(&log)
                .await
                .map(|t| tool::tail(&t, 1500))
                .unwrap_or_default();
            Err(SourceError::Failed(format!(
                "PostgreSQL did not start on the restored data: {e}{}",
                if log_tail.is_empty() {
                    String::new()
                } else {
                    format!("; server log: {log_tail}")
                }
            )))
        }
        Ok(_) => {
            let mut verified = vec![format!(
                "PostgreSQL started on the restored data (127.0.0.1:{port}) in {:.1} s",
                t0.elapsed().as_secs_f64()
            )];
            match (&v.query, &v.expect) {
                (Some(q), Some(pred)) => {
                    let mut psql = ToolCommand::new(Tool::Postgres, bin.join("psql"), v.timeout)
                        .args([
                            "-X",
                            "-A",
                            "-t",
                            "-q",
                            "-v",
                            "ON_ERROR_STOP=1",
                            "-h",
                            &sock,
                            "-p",
                            &port.to_string(),
                            "-d",
                            &v.database,
                            "-c",
                            q,
                        ]);
                    psql.run_as = v.run_as;
                    match run_ok(&psql, false).await {
                        Ok(out) => {
                            let value = out.stdout.lines().next().unwrap_or("").trim().to_owned();
                            if pred.holds(&value) {
                                verified.push(format!(
                                    "query {q:?} returned {value:?}, satisfies {pred}"
                                ));
                                Ok(verified)
                            } else {
                                Err(SourceError::Failed(format!(
                                    "query {q:?} returned {value:?}, which does not satisfy {pred}"
                                )))
                            }
                        }
                        Err(e) => Err(SourceError::Failed(format!(
                            "verification query failed: {e}{}",
                            e.stderr()
                                .map(|s| format!(": {}", s.trim()))
                                .unwrap_or_default()
                        ))),
                    }
                }
                _ => Ok(verified),
            }
        }
    };
    let mut stop = ToolCommand::new(Tool::Postgres, &pg_ctl, Duration::from_secs(60))
        .arg("-D")
        .arg(&v.data)
        .args(["-m", "immediate", "-w", "stop"]);
    stop.run_as = v.run_as;
    if let Err(e) = run_ok(&stop, false).await {
        // Not running (start failed) is expected; anything else is left to the scratch guard.
        tracing::debug!(error = %e, "pg_ctl stop after the restore test");
    }
    result
}

#[cfg(test)]
mod tests;
