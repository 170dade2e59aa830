//! The parent side of helper processes, in the agent: start the agent binary in its hidden
//! mode ([`super::child`] runs there), wait until it says it is working, and end it again —
//! also after a crash, from its journaled identity.
//!
//! ## Dying with the agent
//! `PR_SET_PDEATHSIG` fires when the *thread* that forked the child exits, not the process.
//! A tokio blocking-pool thread retires after a few idle seconds, which would kill every
//! helper it had started. So all helpers are spawned by one process-lifetime thread
//! (`chaos-spawner`) that never exits; it blocks on a channel whose sender lives in a
//! static. The child itself calls `set_pdeathsig(SIGKILL)` first thing, then exits if its
//! parent is not the pid it was given (the agent died before the call) — no `pre_exec`,
//! no unsafe code.
//!
//! ## Ending
//! [`end`] sends SIGKILL after checking pid + start time (a reused pid is never touched)
//! and reaps the child when this process started it; a helper left by a previous agent
//! (reparented to init) is polled until it is gone. A process this one did not start is
//! signalled only if its command line is a helper's (`… __chaos-worker --parent PID …`): a
//! journal entry is outside input after a crash, and one naming another process's exact
//! identity as its helper must not get it killed. [`end_orphans`], for the helpers an
//! unreadable entry names, ends only helpers whose agent (`--parent`) is gone: a live agent
//! ends its own.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use crate::error::FaultError;
use crate::fault::Env;
use crate::guard;
use crate::procfs::{self, ProcessIdentity};

use super::READY_LINE;

type SpawnRequest = (Command, mpsc::Sender<std::io::Result<Child>>);

fn spawner() -> Result<&'static Mutex<mpsc::Sender<SpawnRequest>>, FaultError> {
    static SPAWNER: OnceLock<Mutex<mpsc::Sender<SpawnRequest>>> = OnceLock::new();
    static START_ERROR: OnceLock<String> = OnceLock::new();
    if let Some(s) = SPAWNER.get() {
        return Ok(s);
    }
    if let Some(e) = START_ERROR.get() {
        return Err(FaultError::Helper(e.clone()));
    }
    let (tx, rx) = mpsc::channel::<SpawnRequest>();
    let started = std::thread::Builder::new()
        .name("chaos-spawner".into())
        .spawn(move || {
            // Lives as long as the process: the sender is in a static, so recv only ends at exit.
            while let Ok((mut cmd, reply)) = rx.recv() {
                let _ = reply.send(cmd.spawn());
            }
        });
    match started {
        Ok(_) => Ok(SPAWNER.get_or_init(|| Mutex::new(tx))),
        Err(e) => {
            let msg = format!("cannot start the helper spawner thread: {e}");
            let _ = START_ERROR.set(msg.clone());
            Err(FaultError::Helper(msg))
        }
    }
}

fn children() -> &'static Mutex<HashMap<i32, Child>> {
    static CHILDREN: OnceLock<Mutex<HashMap<i32, Child>>> = OnceLock::new();
    CHILDREN.get_or_init(|| Mutex::new(HashMap::new()))
}

/// Starts a worker (`<worker program> <worker args> --parent <agent pid> <args…>`), waits
/// up to `ready_timeout` for its ready line, and returns its identity.
pub(crate) fn spawn(
    env: &Env,
    args: &[String],
    ready_timeout: Duration,
) -> Result<ProcessIdentity, FaultError> {
    let mut cmd = Command::new(&env.worker.program);
    cmd.args(&env.worker.args)
        .arg("--parent")
        .arg(env.agent.pid.to_string())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    let what = format!(
        "{} {} {}",
        env.worker.program.display(),
        env.worker.args.join(" "),
        args.join(" ")
    );
    let (reply_tx, reply_rx) = mpsc::channel();
    spawner()?
        .lock()
        .map_err(|_| FaultError::Helper("helper spawner lock poisoned".into()))?
        .send((cmd, reply_tx))
        .map_err(|_| FaultError::Helper("helper spawner thread is gone".into()))?;
    let mut child = reply_rx
        .recv()
        .map_err(|_| FaultError::Helper("helper spawner thread is gone".into()))?
        .map_err(|e| FaultError::Helper(format!("cannot start {what}: {e}")))?;
    let pid = child.id() as i32;
    let identity = procfs::identity(&env.proc_root, pid, &env.boot_id).unwrap_or(ProcessIdentity {
        pid,
        start_time: 0,
        boot_id: env.boot_id.clone(),
        name: String::new(),
    });
    let stdout = child.stdout.take();
    if let Ok(mut map) = children().lock() {
        map.insert(pid, child);
    }
    let ready = wait_ready(stdout, ready_timeout);
    if let Err(msg) = ready {
        let _ = end(&identity, env);
        return Err(FaultError::Helper(format!("{what}: {msg}")));
    }
    // The identity read right after spawn may predate exec (same start time either way).
    Ok(procfs::identity(&env.proc_root, pid, &env.boot_id).unwrap_or(identity))
}

fn wait_ready(stdout: Option<std::process::ChildStdout>, timeout: Duration) -> Result<(), String> {
    let Some(stdout) = stdout else {
        return Err("no stdout pipe".into());
    };
    let (tx, rx) = mpsc::channel();
    // A short-lived reader: it ends at the first line or at EOF (the worker exiting).
    let reader = std::thread::Builder::new()
        .name("chaos-ready".into())
        .spawn(move || {
            let mut line = String::new();
            let r = BufReader::new(stdout).read_line(&mut line).map(|_| line);
            let _ = tx.send(r);
        });
    if let Err(e) = reader {
        return Err(format!("cannot start the ready reader: {e}"));
    }
    match rx.recv_timeout(timeout) {
        Ok(Ok(line)) if line.trim() == READY_LINE => Ok(()),
        Ok(Ok(line)) if line.is_empty() => {
            Err("exited before it was ready (see its stderr above)".into())
        }
        Ok(Ok(line)) => Err(format!("unexpected first line {:?}", line.trim())),
        Ok(Err(e)) => Err(format!("cannot read its stdout: {e}")),
        Err(_) => Err(format!(
            "not ready within {}",
            humantime::format_duration(timeout)
        )),
    }
}

/// Ends a helper: SIGKILL if pid + start time still match, then reap (our child) or wait
/// until it is gone (a previous agent's). Gone already is `Ok`.
fn end(p: &ProcessIdentity, env: &Env) -> Result<(), FaultError> {
    let ours = children().lock().ok().and_then(|mut m| m.remove(&p.pid));
    if let Some(mut child) = ours {
        if procfs::is_alive(&env.proc_root, p, &env.boot_id) {
            let _ = child.kill();
        }
        return child
            .wait()
            .map(|_| ())
            .map_err(|e| FaultError::Helper(format!("cannot reap helper {p}: {e}")));
    }
    if worker_parent(&raw_cmdline(env, p.pid)).is_none() {
        if procfs::is_alive(&env.proc_root, p, &env.boot_id) {
            tracing::warn!(helper = %p, "a journaled helper is not a faultline helper (its command line says otherwise): not signalled");
        }
        return Ok(());
    }
    if !guard::signal_if_alive(p, Signal::SIGKILL, env)? {
        return Ok(());
    }
    let deadline = Instant::now() + Duration::from_secs(2);
    while procfs::is_alive(&env.proc_root, p, &env.boot_id) {
        if Instant::now() > deadline {
            return Err(FaultError::Helper(format!(
                "helper {p} survived SIGKILL for 2s"
            )));
        }
        // `end` runs on a blocking thread (the engine calls faults through spawn_blocking).
        #[allow(clippy::disallowed_methods)]
        std::thread::sleep(Duration::from_millis(5));
    }
    Ok(())
}

/// Ends every helper in `list`; the first error is returned after trying them all.
pub(crate) fn end_all(list: &[ProcessIdentity], env: &Env) -> Result<(), FaultError> {
    let mut first = None;
    for p in list {
        if let Err(e) = end(p, env) {
            first.get_or_insert(e);
        }
    }
    first.map_or(Ok(()), Err)
}

/// Ends the helpers of `list` whose agent is gone (an unreadable journal entry's: nothing
/// says whose they are, so a helper whose agent still runs is left to that agent); the first
/// error is returned after trying them all.
pub(crate) fn end_orphans(list: &[ProcessIdentity], env: &Env) -> Result<(), FaultError> {
    let orphans: Vec<ProcessIdentity> = list
        .iter()
        .filter(|p| {
            worker_parent(&raw_cmdline(env, p.pid)).is_some_and(|parent| {
                procfs::read_stat(&env.proc_root, parent)
                    .is_none_or(|st| st.state == 'Z' || st.state == 'X')
            })
        })
        .cloned()
        .collect();
    end_all(&orphans, env)
}

/// `/proc/<pid>/cmdline` as it is (NUL-separated); empty when unreadable.
fn raw_cmdline(env: &Env, pid: i32) -> Vec<u8> {
    std::fs::read(env.proc_root.join(pid.to_string()).join("cmdline")).unwrap_or_default()
}

/// The `--parent` pid of a helper's command line (`… __chaos-worker --parent PID …`,
/// NUL-separated as in `/proc/<pid>/cmdline`); `None` for any other process. Pure.
fn worker_parent(cmdline: &[u8]) -> Option<i32> {
    let mut args = cmdline.split(|b| *b == 0);
    args.by_ref().find(|a| *a == crate::WORKER_ARG.as_bytes())?;
    match (args.next(), args.next()) {
        (Some(b"--parent"), Some(pid)) => std::str::from_utf8(pid).ok()?.parse().ok(),
        _ => None,
    }
}

/// How many of `list` are alive.
pub(crate) fn alive(list: &[ProcessIdentity], env: &Env) -> usize {
    list.iter()
        .filter(|p| procfs::is_alive(&env.proc_root, p, &env.boot_id))
        .count()
}

#[cfg(test)]
mod tests {
    use super::worker_parent;

    #[test]
    fn only_a_helpers_command_line_names_its_parent() {
        let line = |args: &[&str]| args.join("\0").into_bytes();
        assert_eq!(
            worker_parent(&line(&[
                "/usr/bin/faultline",
                "__chaos-worker",
                "--parent",
                "42",
                "cpu",
                ""
            ])),
            Some(42)
        );
        assert_eq!(worker_parent(&line(&["sleep", "300", ""])), None);
        assert_eq!(
            worker_parent(&line(&["faultline", "run", "--parent", "42"])),
            None
        );
        assert_eq!(
            worker_parent(&line(&["x", "__chaos-worker", "--parent", "x"])),
            None
        );
        assert_eq!(
            worker_parent(&line(&["x", "__chaos-worker", "cpu", "--parent", "7"])),
            None
        );
        assert_eq!(worker_parent(b""), None);
    }
}
