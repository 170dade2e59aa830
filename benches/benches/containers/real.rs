//! A real cgroup tree for the container bench (`FAULTLINE_BENCH_TREES=real/<n>`): `n`
//! containers in kubelet's cgroupfs shape, `faultline-bench-<pid>/kubepods/besteffort/
//! pod<uid>/<64-hex id>`, made in every hierarchy the collector reads, each with one sleeping
//! process of the bench's own in it, so that one collection cycle pays what the kernel
//! charges for producing real control files (`memory.stat` above all, and a `seq_file` per
//! open) and real `/proc/<pid>/net/dev` files.
//!
//! - **Hierarchies.** cgroup v1 and hybrid: `cpu`, `cpuacct`, `memory`, `blkio`, `pids` (the
//!   controllers the collector reads) and `name=systemd` (which the kubelet's cgroupfs
//!   driver also creates in), each once where two are co-mounted; on hybrid also the
//!   `unified/` cgroup2 mount, as runc does there (the collector reads the pressure files
//!   from it). Pure cgroup v2: the subtree under the root, with the controllers the root
//!   delegates (`cpu`, `memory`, `io`, `pids` as available) enabled in each inner
//!   directory's `cgroup.subtree_control`; processes only in the leaves.
//! - **Processes.** Two containers per pod, as a pause container and an application: the
//!   pod's first process starts in a network namespace of its own (`unshare -n`) with `lo`
//!   and an `eth0`, the second joins it (`nsenter --net`). Both sleep; with
//!   `FAULTLINE_BENCH_BUSY=1` the second is a `bash` loop that wakes twice a second (its CPU
//!   time moves, so the files the collector reads only after a move are read). `eth0` is one end of a veth pair
//!   whose other end lives in one extra namespace of the bench's (a "node" namespace held by
//!   a sleeper outside the tree), as a pod's peer lives in the host's — so the host's own
//!   `/proc/net/dev` is not touched. Each process is `sleep infinity` with the parent-death
//!   signal set to `SIGKILL` (`setpriv --pdeathsig KILL`), so none outlives the bench.
//! - **The collector's view.** [`RealTree::hierarchy`] is the host's hierarchy with every
//!   hierarchy directory moved down to `faultline-bench-<pid>`: the walk finds this bench's
//!   containers only (not other cgroups of the machine), through the same paths a node's
//!   would have (`paths::recognise` reads `kubepods/besteffort/pod<uid>/<id>`). `/proc`,
//!   `/sys` and `/` are the real ones.
//! - **Clean-up, on every exit path.** [`RealTree`]'s `Drop` (also on panic) kills and
//!   reaps every process it started, then removes every directory it made, leaves first. A
//!   `SIGINT`, `SIGTERM` or `SIGHUP` does the same from a thread of its own before the bench
//!   exits ([`guard_signals`]); if the bench is killed outright, its sleepers die with it
//!   (parent-death signal) and the next run removes the directories of any
//!   `faultline-bench-<pid>` whose process is gone ([`sweep_stale`]). Nothing else is
//!   touched: only directories named after this bench and processes it started.
//!
//! Needs root and a writable cgroupfs at `/sys/fs/cgroup`; without them it says so and
//! measures nothing.

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;

use faultline_agent::collectors::container::cgroup::{Hierarchy, Layout, V1Dirs};

/// Where the cgroup hierarchies are mounted.
const CGROUP_ROOT: &str = "/sys/fs/cgroup";
/// The prefix of the bench's own subtree in each hierarchy; its process id follows.
const PREFIX: &str = "faultline-bench-";

/// What a tree holds, shared with the signal thread so that it can clean up too.
#[derive(Debug, Default)]
struct State {
    /// Processes started, in order.
    children: Vec<Child>,
    /// Directories made, in order (parents before children).
    dirs: Vec<PathBuf>,
}

static STATE: Mutex<Option<State>> = Mutex::new(None);

fn with_state<T>(f: impl FnOnce(&mut State) -> T) -> T {
    let mut g = STATE.lock().unwrap_or_else(|e| e.into_inner());
    f(g.get_or_insert_with(State::default))
}

/// Kills and reaps every process, then removes every directory, last made first. Prints what
/// it could not remove (naming it), so that a leftover is never silent.
fn clean_up() {
    let Some(mut s) = STATE.lock().unwrap_or_else(|e| e.into_inner()).take() else {
        return;
    };
    for c in &mut s.children {
        let _ = c.kill();
    }
    for c in &mut s.children {
        let _ = c.wait();
    }
    let mut left = 0;
    for d in s.dirs.iter().rev() {
        if let Err(e) = rmdir_retrying(d) {
            left += 1;
            eprintln!("real tree: could not remove {}: {e}", d.display());
        }
    }
    if left == 0 {
        eprintln!(
            "real tree: removed {} processes and {} cgroups",
            s.children.len(),
            s.dirs.len()
        );
    }
}

/// `rmdir`, retried briefly on `EBUSY` (a cgroup is busy until its last task has gone through
/// exit; the processes were reaped, so this is a matter of microseconds).
fn rmdir_retrying(d: &Path) -> std::io::Result<()> {
    let mut tries = 0;
    loop {
        match std::fs::remove_dir(d) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) if e.raw_os_error() == Some(nix::libc::EBUSY) && tries < 200 => {
                tries += 1;
                #[allow(clippy::disallowed_methods)] // A bench's own thread, no async runtime.
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            Err(e) => return Err(e),
        }
    }
}

/// Blocks `SIGINT`, `SIGTERM` and `SIGHUP` in the calling thread (and so in the threads it
/// starts later) and starts a thread that waits for them: on one, it cleans up and exits with
/// 128 + the signal's number, as the shell reports a death by that signal. Call before
/// starting any other thread.
pub fn guard_signals() {
    use nix::sys::signal::{SigSet, Signal};
    let mut set = SigSet::empty();
    for s in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        set.add(s);
    }
    if let Err(e) = set.thread_block() {
        eprintln!("real tree: signals not guarded ({e}); a Ctrl-C may leave cgroups behind");
        return;
    }
    std::thread::spawn(move || {
        if let Ok(sig) = set.wait() {
            eprintln!("real tree: {sig}, cleaning up");
            clean_up();
            #[allow(clippy::disallowed_methods)] // Nothing to drain: the tree is cleaned up.
            std::process::exit(128 + sig as i32);
        }
    });
}

/// A real tree of `n` containers; dropping it removes everything it made.
#[derive(Debug)]
pub struct RealTree {
    hierarchy: Hierarchy,
    ids: Vec<String>,
}

impl Drop for RealTree {
    fn drop(&mut self) {
        clean_up();
    }
}

/// Why no real tree could be made.
fn fail(what: impl std::fmt::Display) -> String {
    format!("real tree: {what}; nothing measured")
}

/// Why no cgroup could be made, with what it takes.
fn fail_cgroups(what: impl std::fmt::Display) -> String {
    fail(format!(
        "{what} (a real tree needs root and a writable cgroupfs at {CGROUP_ROOT})"
    ))
}

impl RealTree {
    /// The hierarchy the collector is to read: the host's, with each hierarchy moved down to
    /// the bench's subtree.
    pub fn hierarchy(&self) -> &Hierarchy {
        &self.hierarchy
    }

    /// The containers' IDs, in the order made.
    pub fn ids(&self) -> &[String] {
        &self.ids
    }

    /// Makes the tree: `n` containers (two per pod), each with a sleeping process, or with
    /// `busy` the second of each pod an application that wakes twice a second. On any failure,
    /// what was made so far is removed before the error returns.
    pub fn create(
        busy: bool,
        n: usize,
        id: impl Fn(usize) -> String,
        uid: impl Fn(usize) -> String,
    ) -> Result<Self, String> {
        if !nix::unistd::geteuid().is_root() {
            return Err(fail_cgroups("not running as root"));
        }
        let host = Hierarchy::detect(Path::new(CGROUP_ROOT)).map_err(fail_cgroups)?;
        sweep_stale(&host);
        let name = format!("{PREFIX}{}", std::process::id());
        let mut hierarchy = host.clone();
        let sub = |p: &Option<PathBuf>| p.as_ref().map(|p| p.join(&name));
        hierarchy.v1 = V1Dirs {
            cpu: sub(&host.v1.cpu),
            cpuacct: sub(&host.v1.cpuacct),
            memory: sub(&host.v1.memory),
            blkio: sub(&host.v1.blkio),
            pids: sub(&host.v1.pids),
            systemd: sub(&host.v1.systemd),
        };
        hierarchy.unified = sub(&host.unified);
        let tree = Self {
            hierarchy,
            ids: (0..n).map(&id).collect(),
        };
        // From here on, `tree`'s drop removes whatever is registered.
        with_state(|_| ());
        let bases = tree.bases();
        let controllers = match tree.hierarchy.layout {
            Layout::V2 => v2_controllers(&host),
            Layout::V1 | Layout::Hybrid => String::new(),
        };
        let node = node_namespace()?;
        for b in &bases {
            mkdir(b)?;
            mkdir(&b.join("kubepods"))?;
            mkdir(&b.join("kubepods/besteffort"))?;
        }
        let mut leaves = Vec::with_capacity(n);
        for i in 0..n {
            let rel = format!("kubepods/besteffort/pod{}/{}", uid(i / 2), tree.ids[i]);
            for b in &bases {
                if i % 2 == 0 {
                    mkdir(&b.join(Path::new(&rel).parent().unwrap_or(Path::new(""))))?;
                }
                mkdir(&b.join(&rel))?;
            }
            leaves.push(rel);
        }
        if !controllers.is_empty() {
            // cgroup v2: controllers enabled from the subtree's root down to the pods.
            let b = &bases[0];
            let mut inner = vec![b.clone(), b.join("kubepods"), b.join("kubepods/besteffort")];
            inner.extend(
                (0..n)
                    .step_by(2)
                    .map(|i| b.join(format!("kubepods/besteffort/pod{}", uid(i / 2)))),
            );
            for d in inner {
                write(&d.join("cgroup.subtree_control"), &controllers)?;
            }
        }
        // Processes: each pod's first container makes the pod's namespace, its second joins it.
        let mut pids = vec![0u32; n];
        for first in [true, false] {
            let mut started = Vec::new();
            for i in (0..n).filter(|i| (i % 2 == 0) == first) {
                let mut cmd = Command::new("setpriv");
                cmd.args(["--pdeathsig", "KILL"]);
                if first {
                    cmd.args([
                        "unshare",
                        "-n",
                        "sh",
                        "-c",
                        &format!(
                            "ip link add eth0 type veth peer name p{i} netns {node} && ip link set lo up && ip link set eth0 up && echo ready && exec sleep infinity"
                        ),
                    ]);
                } else if busy {
                    // An application that wakes twice a second (`read` times out on a pipe
                    // nobody writes to): its CPU time moves between any two cycles a second
                    // or more apart.
                    cmd.args([
                        "nsenter",
                        &format!("--net=/proc/{}/ns/net", pids[i - 1]),
                        "bash",
                        "-c",
                        "echo ready; while :; do read -t 0.5; done",
                    ]);
                } else {
                    cmd.args([
                        "nsenter",
                        &format!("--net=/proc/{}/ns/net", pids[i - 1]),
                        "sh",
                        "-c",
                        "echo ready && exec sleep infinity",
                    ]);
                }
                let app = busy && !first;
                let mut child = cmd
                    .stdin(if app { Stdio::piped() } else { Stdio::null() })
                    .stdout(Stdio::piped())
                    .spawn()
                    .map_err(|e| fail(format!("cannot start setpriv/unshare/nsenter: {e}")))?;
                let out = child.stdout.take();
                pids[i] = child.id();
                with_state(|s| s.children.push(child));
                started.push((i, out));
            }
            for (i, out) in started {
                let mut line = String::new();
                if let Some(out) = out {
                    let _ = BufReader::new(out).read_line(&mut line);
                }
                if line.trim() != "ready" {
                    return Err(fail(format!(
                        "the process of container {i} did not start (its network namespace could not be set up)"
                    )));
                }
            }
        }
        for (i, rel) in leaves.iter().enumerate() {
            for b in &bases {
                write(&b.join(rel).join("cgroup.procs"), &pids[i].to_string())?;
            }
        }
        Ok(tree)
    }

    /// The bench's subtree in each hierarchy it makes cgroups in, each once.
    fn bases(&self) -> Vec<PathBuf> {
        let v1 = &self.hierarchy.v1;
        let mut out: Vec<PathBuf> = Vec::new();
        let candidates = match self.hierarchy.layout {
            Layout::V2 => vec![self.hierarchy.unified.clone()],
            Layout::V1 | Layout::Hybrid => vec![
                v1.memory.clone(),
                v1.cpu.clone(),
                v1.cpuacct.clone(),
                v1.blkio.clone(),
                v1.pids.clone(),
                v1.systemd.clone(),
                self.hierarchy.unified.clone(),
            ],
        };
        for p in candidates.into_iter().flatten() {
            if !out.contains(&p) {
                out.push(p);
            }
        }
        out
    }
}

/// The controllers the root delegates that the collector reads, as `cgroup.subtree_control`
/// takes them (`+cpu +memory +io +pids`).
fn v2_controllers(host: &Hierarchy) -> String {
    let root = host
        .unified
        .clone()
        .unwrap_or_else(|| PathBuf::from(CGROUP_ROOT));
    let enabled = std::fs::read_to_string(root.join("cgroup.subtree_control")).unwrap_or_default();
    let enabled: Vec<&str> = enabled.split_whitespace().collect();
    ["cpu", "memory", "io", "pids"]
        .into_iter()
        .filter(|c| enabled.contains(c))
        .map(|c| format!("+{c}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Makes one directory and registers it for removal.
fn mkdir(d: &Path) -> Result<(), String> {
    std::fs::create_dir(d)
        .map_err(|e| fail_cgroups(format!("cannot create cgroup {}: {e}", d.display())))?;
    with_state(|s| s.dirs.push(d.to_path_buf()));
    Ok(())
}

fn write(path: &Path, text: &str) -> Result<(), String> {
    std::fs::write(path, text)
        .map_err(|e| fail(format!("cannot write {text:?} to {}: {e}", path.display())))
}

/// Starts the "node" namespace that holds the far ends of the pods' veth pairs: a sleeper in
/// a network namespace of its own, outside the tree. Returns its pid.
fn node_namespace() -> Result<u32, String> {
    let mut child = Command::new("setpriv")
        .args([
            "--pdeathsig",
            "KILL",
            "unshare",
            "-n",
            "sh",
            "-c",
            "echo ready && exec sleep infinity",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| fail(format!("cannot start setpriv/unshare: {e}")))?;
    let out = child.stdout.take();
    let pid = child.id();
    with_state(|s| s.children.push(child));
    let mut line = String::new();
    if let Some(out) = out {
        let _ = BufReader::new(out).read_line(&mut line);
    }
    if line.trim() != "ready" {
        return Err(fail("unshare -n failed (no network namespaces?)"));
    }
    Ok(pid)
}

/// Removes the subtrees of earlier runs whose bench process is gone (killed outright, so its
/// `Drop` never ran): their sleepers have died with it (parent-death signal); any still there
/// is a `sleep` this bench started, and is killed first.
fn sweep_stale(host: &Hierarchy) {
    let roots = [
        host.v1.memory.as_ref(),
        host.v1.cpu.as_ref(),
        host.v1.cpuacct.as_ref(),
        host.v1.blkio.as_ref(),
        host.v1.pids.as_ref(),
        host.v1.systemd.as_ref(),
        host.unified.as_ref(),
    ];
    for root in roots.into_iter().flatten() {
        let Ok(rd) = std::fs::read_dir(root) else {
            continue;
        };
        for e in rd.flatten() {
            let name = e.file_name();
            let Some(pid) = name
                .to_str()
                .and_then(|n| n.strip_prefix(PREFIX))
                .and_then(|p| p.parse::<u32>().ok())
            else {
                continue;
            };
            if Path::new(&format!("/proc/{pid}")).exists() {
                continue;
            }
            eprintln!(
                "real tree: removing {} left by a bench that died",
                e.path().display()
            );
            remove_stale(&e.path());
        }
    }
}

fn remove_stale(dir: &Path) {
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                remove_stale(&e.path());
            }
        }
    }
    if let Ok(procs) = std::fs::read_to_string(dir.join("cgroup.procs")) {
        for pid in procs
            .split_whitespace()
            .filter_map(|p| p.parse::<i32>().ok())
        {
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            if comm.trim() == "sleep" {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
    }
    if let Err(e) = rmdir_retrying(dir) {
        eprintln!("real tree: could not remove {}: {e}", dir.display());
    }
}
