//! Per-container network bytes, read from inside the container's own network namespace.
//!
//! `/proc/<pid>/net/dev` shows the interfaces of the network namespace `<pid>` lives in, so
//! reading it for one process of the container (the first PID of its `cgroup.procs`) gives the
//! container's own interfaces without entering the namespace. The parser is the host
//! collector's ([`crate::collectors::host::network::parse_net_dev`]).
//!
//! A container in the host's network namespace (`--network host`, `hostNetwork: true`) would
//! report the host's interfaces; it is detected by comparing `/proc/<pid>/ns/net` with
//! `/proc/1/ns/net` (once per process; the collector caches the answer) and reports no
//! network metrics. Containers that share one namespace (the containers of a Kubernetes pod,
//! `--network container:<x>`) each report the same interface counters, read once per cycle
//! for all of them (the collector keys what it read by the namespace's inode, [`NetNs`]):
//! summing `container.network.io` over such containers counts the shared traffic once per
//! container. [`NetReader`] reads one process's view; [`NamespaceReads`] is one cycle's
//! reads, shared by the containers of a namespace.
//!
//! **Kept descriptors** ([`Kept`], within the collector's [`KeepBudget`]): a handle on each
//! followed process, and each namespace's `net/dev` once read.
//! - On the agent's own `/proc` (`/proc/self` is the agent), the handle is a pidfd
//!   (`pidfd_open`): one `poll` over all of them at the cycle's first look tells which
//!   processes have exited, a single system call for every container (a pidfd is readable
//!   once its process has exited, and names that process, not whoever gets its pid next).
//!   Elsewhere (a tree whose pids are not the agent's, such as a fixture) the handle is the
//!   process's `/proc/<pid>` directory (`O_PATH`), and a lookup of one entry under it, which
//!   fails once the process is gone, is the check. Either replaces the `readlink` of `ns/net`
//!   that proved a pod's second container alive and still in the namespace; a process does
//!   not leave its network namespace, so a live one is where it was seen.
//! - A kept `net/dev` is read with `pread` at 0, which makes the file anew from the
//!   namespace's interfaces as they are now (it is a `seq_file`), without the path walk, the
//!   open and the close; it holds a reference to its namespace, so the namespace's inode
//!   cannot be given to another one while it is kept. It is read only for a container whose
//!   process the cycle found alive.
//!
//! Whatever was not used in a cycle is closed at its end ([`NamespaceReads::end_cycle`]): a
//! deleted pod's namespace is not held past the cycle that no longer saw its containers.
//! Without room in the budget, a process is checked with the `readlink` and a namespace read
//! by its path, as before.

use std::collections::HashMap;
use std::fs::File;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{AT_FDCWD, AtFlags, OFlag, openat, readlinkat};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::stat::{Mode, fstatat};

use crate::collectors::file::read_records_to_end;
use crate::collectors::host::network::parse_net_dev;
use crate::collectors::{CollectError, parse_error};

use super::cgroup::{KeepBudget, ReadBuf};

/// A `/proc/<pid>/net/dev` line is shorter than this: an interface name of at most 15 bytes
/// and 16 counters of at most 20 digits, with their spaces (about 360 bytes).
const NET_DEV_MAX_LINE: usize = 1024;

/// Reads container network counters; keeps its buffers between cycles.
#[derive(Debug, Default)]
pub struct NetReader {
    /// The host's namespace link, read at the first lookup of a cycle (`None`: not yet read
    /// this cycle; `Some(None)`: unreadable), so that a cycle without a new process reads it
    /// not at all.
    host_netns: Option<Option<PathBuf>>,
    buf: ReadBuf,
    path: PathBuf,
}

/// A process's network namespace, as the container collector tells them apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NetNs {
    /// The host's: the container reports no network metrics of its own.
    Host,
    /// Another one, by its inode (the number in the `net:[…]` link) when the link could be
    /// read; containers whose processes show the same inode share the namespace.
    Own(Option<u64>),
}

/// The inode of a namespace link's target, `net:[4026532999]` → 4026532999.
pub fn parse_ns_inode(link: &str) -> Option<u64> {
    link.strip_prefix("net:[")?.strip_suffix(']')?.parse().ok()
}

/// Counters of one interface.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IfaceBytes {
    /// Interface name inside the container.
    pub name: String,
    /// Bytes received.
    pub receive: u64,
    /// Bytes transmitted.
    pub transmit: u64,
}

/// The file or process is not there (a process gone reads as `ESRCH` under `/proc`).
fn is_absent(e: Errno) -> bool {
    matches!(e, Errno::ENOENT | Errno::ESRCH | Errno::ENOTDIR)
}

impl NetReader {
    /// Once per cycle: forgets the host's network namespace (that of PID 1 under `proc`), to be
    /// read again by the cycle's first [`Self::netns`].
    pub fn begin_cycle(&mut self) {
        self.host_netns = None;
    }

    /// Which network namespace `pid` is in. A container's namespace does not change while its
    /// process lives, so the collector asks once per process.
    pub fn netns(&mut self, proc: &Path, pid: u32) -> NetNs {
        self.set_path(proc, pid, "ns/net");
        let link = std::fs::read_link(&self.path).ok();
        self.classify(proc, link)
    }

    /// As [`Self::netns`], for the process whose `/proc/<pid>` directory `dir` is.
    fn netns_at(&mut self, proc: &Path, dir: &OwnedFd) -> NetNs {
        let link = readlinkat(dir, "ns/net").ok().map(PathBuf::from);
        self.classify(proc, link)
    }

    /// A process's namespace link (`None`: unreadable) against the host's.
    fn classify(&mut self, proc: &Path, link: Option<PathBuf>) -> NetNs {
        let host = self
            .host_netns
            .get_or_insert_with(|| std::fs::read_link(proc.join("1/ns/net")).ok());
        match (&*host, link) {
            (Some(host), Some(ns)) if &ns == host => NetNs::Host,
            (_, Some(ns)) => NetNs::Own(ns.to_str().and_then(parse_ns_inode)),
            _ => NetNs::Own(None),
        }
    }

    fn set_path(&mut self, proc: &Path, pid: u32, rel: &str) {
        use std::fmt::Write as _;
        let mut s = String::with_capacity(16);
        let _ = write!(s, "{pid}");
        self.path.clear();
        self.path.push(proc);
        self.path.push(s);
        self.path.push(rel);
    }

    /// Appends the interfaces of `pid`'s network namespace to `out` (nothing on an error).
    /// Returns `Ok(false)` when the process is gone. (The collector reads through
    /// [`NamespaceReads`], which keeps the file; this is the one-off read.)
    #[cfg(test)]
    pub fn read(
        &mut self,
        proc: &Path,
        pid: u32,
        out: &mut Vec<IfaceBytes>,
    ) -> Result<bool, CollectError> {
        Ok(self.open_read(proc, pid, None, out)?.is_some())
    }

    /// [`Self::read`], opening `net/dev` under the process's kept directory `dir` when there
    /// is one; returns the open file (to be kept) when the process was there.
    fn open_read(
        &mut self,
        proc: &Path,
        pid: u32,
        dir: Option<&OwnedFd>,
        out: &mut Vec<IfaceBytes>,
    ) -> Result<Option<File>, CollectError> {
        self.set_path(proc, pid, "net/dev");
        let flags = OFlag::O_RDONLY | OFlag::O_CLOEXEC;
        let opened = match dir {
            Some(d) => openat(d, "net/dev", flags, Mode::empty()),
            None => openat(AT_FDCWD, &self.path, flags, Mode::empty()),
        };
        let file = match opened {
            Ok(fd) => File::from(fd),
            Err(e) if is_absent(e) => return Ok(None),
            Err(e) => {
                return Err(CollectError::Read {
                    path: self.path.clone(),
                    source: e.into(),
                });
            }
        };
        Ok(self.read_file(&file, out)?.then_some(file))
    }

    /// Reads an open `net/dev` into `out`; `Ok(false)` when its process went away.
    fn read_file(&mut self, file: &File, out: &mut Vec<IfaceBytes>) -> Result<bool, CollectError> {
        let err = |source| CollectError::Read {
            path: self.path.clone(),
            source,
        };
        if !read_records_to_end(file, &mut self.buf, NET_DEV_MAX_LINE).map_err(err)? {
            return Ok(false);
        }
        let text = std::str::from_utf8(self.buf.as_bytes())
            .map_err(|_| parse_error(&self.path, "not UTF-8 text"))?;
        let devs = parse_net_dev(text).map_err(|e| parse_error(&self.path, e))?;
        out.extend(devs.into_iter().map(|d| IfaceBytes {
            name: d.name.to_owned(),
            receive: d.receive.bytes,
            transmit: d.transmit.bytes,
        }));
        Ok(true)
    }
}

/// A descriptor kept between cycles, and whether this cycle used it.
#[derive(Debug)]
struct Entry<T> {
    fd: T,
    used: bool,
}

/// How a followed process is told alive (see the module docs).
#[derive(Debug)]
enum Handle {
    /// Its pidfd, polled once a cycle with the others.
    Pidfd(OwnedFd),
    /// Its `/proc/<pid>` directory (`O_PATH`), an entry of which is looked up.
    Dir(OwnedFd),
}

/// What the network reads keep open between cycles (see the module docs).
#[derive(Debug, Default)]
pub(super) struct Kept {
    /// A handle on each followed process, by pid.
    procs: HashMap<u32, Entry<Handle>>,
    /// `net/dev` of each namespace read, by the namespace's inode.
    net_dev: HashMap<u64, Entry<File>>,
    /// Whether the `/proc` the collector reads is the agent's own (pidfds name its pids),
    /// for that `/proc` path; found out once.
    own_proc: Option<(PathBuf, bool)>,
    /// Whether this cycle has polled the pidfds, and the pids found exited.
    polled: bool,
    exited: Vec<u32>,
}

impl Kept {
    /// Once per cycle, before the first check.
    fn begin_cycle(&mut self) {
        self.polled = false;
        self.exited.clear();
    }

    /// Whether `pid`'s process is alive, when a handle on it is kept (`None`: not kept). A
    /// process found gone has its handle closed and stays gone for the rest of the cycle.
    fn alive(&mut self, pid: u32, budget: &mut KeepBudget) -> Option<bool> {
        if !self.polled {
            self.polled = true;
            self.poll_pidfds(budget);
        }
        if self.exited.contains(&pid) {
            return Some(false);
        }
        let entry = self.procs.get_mut(&pid)?;
        let alive = match &entry.fd {
            // Polled above: still kept, so not exited.
            Handle::Pidfd(_) => true,
            // Any entry of the process's directory: its lookup fails once the process is gone.
            Handle::Dir(dir) => fstatat(dir.as_fd(), "ns", AtFlags::AT_SYMLINK_NOFOLLOW).is_ok(),
        };
        if alive {
            entry.used = true;
            return Some(true);
        }
        self.procs.remove(&pid);
        self.exited.push(pid);
        budget.give_fds(1);
        Some(false)
    }

    /// One `poll` over every kept pidfd: those readable belong to processes that have
    /// exited, whose handles are closed. A failed `poll` tells nothing and closes nothing.
    fn poll_pidfds(&mut self, budget: &mut KeepBudget) {
        let (pids, mut fds): (Vec<u32>, Vec<PollFd<'_>>) = self
            .procs
            .iter()
            .filter_map(|(pid, e)| match &e.fd {
                Handle::Pidfd(fd) => Some((*pid, PollFd::new(fd.as_fd(), PollFlags::POLLIN))),
                Handle::Dir(_) => None,
            })
            .unzip();
        if fds.is_empty() || poll(&mut fds, PollTimeout::ZERO).is_err() {
            return;
        }
        let exited = fds
            .iter()
            .zip(&pids)
            .filter(|(fd, _)| fd.revents().is_some_and(|r| !r.is_empty()))
            .map(|(_, pid)| *pid);
        self.exited.extend(exited);
        for pid in &self.exited {
            self.procs.remove(pid);
        }
        budget.give_fds(self.exited.len());
    }

    /// Whether `proc` is the agent's own `/proc` (its `self` is the agent's pid).
    fn own_proc(&mut self, proc: &Path) -> bool {
        match &self.own_proc {
            Some((p, own)) if p == proc => *own,
            _ => {
                let own = std::fs::read_link(proc.join("self"))
                    .ok()
                    .and_then(|l| l.to_str()?.parse::<u32>().ok())
                    == Some(std::process::id());
                self.own_proc = Some((proc.to_path_buf(), own));
                own
            }
        }
    }

    /// Descriptors held now (process handles, namespace files).
    #[cfg(test)]
    pub(super) fn counts(&self) -> (usize, usize) {
        (self.procs.len(), self.net_dev.len())
    }

    /// How many process handles are pidfds.
    #[cfg(test)]
    pub(super) fn pidfds(&self) -> usize {
        self.procs
            .values()
            .filter(|e| matches!(e.fd, Handle::Pidfd(_)))
            .count()
    }
}

/// One cycle's network reads: the interfaces of every namespace read so far, in a row, and
/// where each namespace's are (by its inode), so that the containers of a pod, which share
/// one namespace, read it once; and the descriptors kept between cycles ([`Kept`]).
#[derive(Debug, Default)]
pub(super) struct NamespaceReads {
    reader: NetReader,
    read: Vec<IfaceBytes>,
    pub(super) by_ns: HashMap<u64, (usize, usize)>,
    pub(super) kept: Kept,
}

impl NamespaceReads {
    /// Once per cycle: forgets the last cycle's reads and the host's namespace.
    pub(super) fn begin_cycle(&mut self) {
        self.reader.begin_cycle();
        self.kept.begin_cycle();
        self.read.clear();
        self.by_ns.clear();
    }

    /// Once per cycle, after the last container: closes the process directories and
    /// namespace files this cycle did not use, giving their room back to `budget`.
    pub(super) fn end_cycle(&mut self, budget: &mut KeepBudget) {
        let before = (self.kept.procs.len(), self.kept.net_dev.len());
        self.kept.procs.retain(|_, e| std::mem::take(&mut e.used));
        self.kept.net_dev.retain(|_, e| std::mem::take(&mut e.used));
        budget.give_fds(before.0 - self.kept.procs.len());
        budget.give_files(before.1 - self.kept.net_dev.len());
    }

    /// A process first followed: its namespace, looked up through its directory, which is
    /// kept when the budget has room and the namespace is not the host's.
    fn look_up(&mut self, proc: &Path, pid: u32, budget: &mut KeepBudget) -> NetNs {
        if self.kept.procs.remove(&pid).is_some() {
            // The handle of an earlier process of this pid (reused since).
            budget.give_fds(1);
        }
        self.reader.set_path(proc, pid, "");
        let dir = match openat(
            AT_FDCWD,
            &self.reader.path,
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        ) {
            Ok(fd) => fd,
            Err(_) => return NetNs::Own(None),
        };
        let ns = self.reader.netns_at(proc, &dir);
        if matches!(ns, NetNs::Own(Some(_))) && budget.take_fd() {
            // A pidfd on the agent's own /proc (a pid that is not a process's, or a kernel
            // without pidfds, keeps the directory).
            let pidfd = self
                .kept
                .own_proc(proc)
                .then(|| {
                    let pid = rustix::process::Pid::from_raw(i32::try_from(pid).ok()?)?;
                    rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty()).ok()
                })
                .flatten();
            let fd = pidfd.map_or(Handle::Dir(dir), Handle::Pidfd);
            self.kept.procs.insert(pid, Entry { fd, used: true });
        }
        ns
    }

    /// Reads namespace `ns_id` for the container whose process is `pid`: through the
    /// namespace's kept `net/dev` when the process is known alive (`alive`), else by the
    /// process's path (keeping the file when the budget has room). `Ok(None)` when the
    /// process is gone.
    fn read_ns(
        &mut self,
        proc: &Path,
        pid: u32,
        ns_id: Option<u64>,
        alive: bool,
        budget: &mut KeepBudget,
    ) -> Result<Option<(usize, usize)>, CollectError> {
        let start = self.read.len();
        if let (true, Some(id)) = (alive, ns_id)
            && let Some(entry) = self.kept.net_dev.get_mut(&id)
        {
            entry.used = true;
            if self.reader.read_file(&entry.fd, &mut self.read)? {
                let range = (start, self.read.len());
                self.by_ns.insert(id, range);
                return Ok(Some(range));
            }
            // Not expected of a file that holds its namespace: read it by path instead.
            self.kept.net_dev.remove(&id);
            budget.give_files(1);
        }
        let dir = self.kept.procs.get(&pid).and_then(|e| match &e.fd {
            Handle::Dir(d) => Some(d),
            Handle::Pidfd(_) => None,
        });
        let Some(file) = self.reader.open_read(proc, pid, dir, &mut self.read)? else {
            return Ok(None);
        };
        let range = (start, self.read.len());
        if let Some(id) = ns_id {
            self.by_ns.insert(id, range);
            if !self.kept.net_dev.contains_key(&id) && budget.take_file(true) {
                self.kept.net_dev.insert(
                    id,
                    Entry {
                        fd: file,
                        used: true,
                    },
                );
            }
        }
        Ok(Some(range))
    }

    /// The interfaces of a container whose process `pid` was found in its cgroup: none for
    /// the host's namespace. `kept` is the container's (pid, namespace), looked up once per
    /// process and updated when the process turns out to be gone or elsewhere; when no
    /// process can be read it is cleared (unless it is the host's), so that the next cycle
    /// reads `cgroup.procs` again. `first_pid` reads `cgroup.procs` for a live process, at
    /// most once, and only when the cycle has not read it already (`procs_read`). What is
    /// kept open between cycles is taken from `budget`.
    pub(super) fn interfaces(
        &mut self,
        proc: &Path,
        mut pid: u32,
        kept: &mut Option<(u32, NetNs)>,
        procs_read: bool,
        budget: &mut KeepBudget,
        mut first_pid: impl FnMut() -> Result<Option<u32>, CollectError>,
    ) -> Result<&[IfaceBytes], CollectError> {
        let netns = match *kept {
            Some((p, ns)) if p == pid => ns,
            _ => {
                let ns = self.look_up(proc, pid, budget);
                *kept = Some((pid, ns));
                ns
            }
        };
        let NetNs::Own(mut ns_id) = netns else {
            return Ok(&[]);
        };
        // A namespace another container of this cycle (a pod's) has read already is not
        // read again, once this container's own process is seen in it. At most one retry:
        // the kept process is gone, `cgroup.procs` names one that lives.
        let mut retried = false;
        // Bounded: a process that keeps changing namespaces under us ends it.
        let mut turns = 0;
        let read = loop {
            turns += 1;
            if turns > 4 {
                break None;
            }
            // Known cheaply where the process's directory is kept; a gone process is not
            // read (its pid may be another process's already).
            let alive = self.kept.alive(pid, budget);
            if alive != Some(false) {
                if let Some(range) = ns_id.and_then(|id| self.by_ns.get(&id).copied()) {
                    // Only if this container's process is alive and still in it (a dead
                    // pid's namespace may be gone and its inode reused): known from the kept
                    // directory, else one `readlink`, cheaper than reading `net/dev`.
                    let now = match alive {
                        Some(_) => NetNs::Own(ns_id),
                        None => self.reader.netns(proc, pid),
                    };
                    if now == NetNs::Own(ns_id) {
                        break Some(range);
                    }
                    *kept = Some((pid, now));
                    match now {
                        NetNs::Host => break None,
                        // Another namespace: look it up (or read it) instead.
                        NetNs::Own(Some(id)) => {
                            ns_id = Some(id);
                            continue;
                        }
                        // Gone: the read below finds no process and asks `cgroup.procs`.
                        NetNs::Own(None) => ns_id = None,
                    }
                }
                if let Some(range) = self.read_ns(proc, pid, ns_id, alive == Some(true), budget)? {
                    break Some(range);
                }
            }
            if retried || procs_read {
                break None;
            }
            retried = true;
            match first_pid()? {
                Some(p) if p != pid => {
                    pid = p;
                    let ns = self.look_up(proc, pid, budget);
                    *kept = Some((pid, ns));
                    match ns {
                        NetNs::Host => break None,
                        NetNs::Own(id) => ns_id = id,
                    }
                }
                _ => break None,
            }
        };
        match read {
            Some((from, to)) => Ok(&self.read[from..to]),
            // No process to read (or it has just joined the host's namespace): the next cycle
            // reads `cgroup.procs` again unless it is the host's.
            None => {
                if kept.is_some_and(|(_, ns)| ns != NetNs::Host) {
                    *kept = None;
                }
                Ok(&[])
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A process of the test's own in a network namespace of its own (`unshare --net`),
    /// killed and reaped on drop.
    struct NsChild(std::process::Child);

    impl Drop for NsChild {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    /// `lo`'s received bytes in `ifaces`.
    fn lo_rx(ifaces: &[IfaceBytes]) -> u64 {
        ifaces.iter().find(|i| i.name == "lo").expect("lo").receive
    }

    #[test]
    #[allow(clippy::disallowed_methods)] // a plain test thread waits for `unshare` to exec
    fn a_real_namespace_is_read_through_kept_descriptors_until_its_process_is_gone() {
        use std::process::{Command, Stdio};
        let tools = ["unshare", "nsenter", "python3"].iter().all(|t| {
            Command::new(t)
                .arg("--version")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok()
        });
        if !nix::unistd::Uid::effective().is_root() || !tools {
            assert!(
                !crate::test_support::in_ci(),
                "needs root, unshare, nsenter and python3 under CI"
            );
            eprintln!("skipped: needs root, unshare, nsenter and python3");
            return;
        }
        let child = NsChild(
            Command::new("unshare")
                .args(["--net", "sleep", "60"])
                .spawn()
                .expect("unshare"),
        );
        let pid = child.0.id();
        let proc = Path::new("/proc");
        let ours = std::fs::read_link("/proc/self/ns/net").unwrap();
        let t0 = std::time::Instant::now();
        // Until `unshare` has made the namespace and exec'd `sleep` in it.
        while std::fs::read_link(format!("/proc/{pid}/ns/net"))
            .ok()
            .as_ref()
            == Some(&ours)
            || std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default() != "sleep\n"
        {
            assert!(t0.elapsed().as_secs() < 10, "unshare did not start");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        let in_ns = |script: &str| {
            let pid = pid.to_string();
            let ok = Command::new("nsenter")
                .args(["-t", &pid, "-n", "python3", "-c", script])
                .status()
                .unwrap()
                .success();
            assert!(ok, "{script}");
        };
        in_ns("import subprocess; subprocess.run(['ip', 'link', 'set', 'lo', 'up'], check=True)");
        let mut reads = NamespaceReads::default();
        let mut budget = KeepBudget {
            fds: 10,
            files: 10,
            ..KeepBudget::none()
        };
        let mut kept = None;
        let cycle = |reads: &mut NamespaceReads,
                     kept: &mut Option<(u32, NetNs)>,
                     budget: &mut KeepBudget| {
            reads.begin_cycle();
            let ifaces = reads
                .interfaces(proc, pid, kept, false, budget, || Ok(None))
                .unwrap()
                .to_vec();
            reads.end_cycle(budget);
            ifaces
        };
        let first = lo_rx(&cycle(&mut reads, &mut kept, &mut budget));
        assert_eq!(
            reads.kept.counts(),
            (1, 1),
            "its pidfd and its net/dev kept"
        );
        assert_eq!(reads.kept.pidfds(), 1, "the agent's own /proc: a pidfd");
        assert_eq!((budget.fds_used, budget.files_used), (2, 1));
        // 100 datagrams of 1000 bytes to the namespace's own loopback.
        in_ns(
            "import socket\nr = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\nr.bind(('127.0.0.1', 0))\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\nfor _ in range(100): s.sendto(b'x' * 1000, r.getsockname())",
        );
        let after = lo_rx(&cycle(&mut reads, &mut kept, &mut budget));
        assert!(
            after >= first + 100_000,
            "the kept file reads the counters as they are now: {first} then {after}"
        );
        // Its process gone (reaped: its pid may be anyone's now), the namespace is not
        // reported, and everything kept is closed with its room given back.
        drop(child);
        let gone = cycle(&mut reads, &mut kept, &mut budget);
        assert!(gone.is_empty(), "no counters without the process: {gone:?}");
        assert_eq!(kept, None, "cgroup.procs is asked again next cycle");
        assert_eq!(reads.kept.counts(), (0, 0));
        assert_eq!((budget.fds_used, budget.files_used), (0, 0));
    }

    #[test]
    fn reads_the_process_namespace_and_skips_the_host_one() {
        let dir = tempfile::tempdir().unwrap();
        let proc = dir.path();
        std::fs::create_dir_all(proc.join("1/ns")).unwrap();
        std::fs::create_dir_all(proc.join("42/ns")).unwrap();
        std::fs::create_dir_all(proc.join("42/net")).unwrap();
        std::fs::create_dir_all(proc.join("43/ns")).unwrap();
        std::os::unix::fs::symlink("net:[4026531840]", proc.join("1/ns/net")).unwrap();
        std::os::unix::fs::symlink("net:[4026532999]", proc.join("42/ns/net")).unwrap();
        std::os::unix::fs::symlink("net:[4026531840]", proc.join("43/ns/net")).unwrap();
        std::fs::write(
            proc.join("42/net/dev"),
            "Inter-|   Receive                                                |  Transmit\n face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n    lo: 1048576     20    0    0    0     0          0         0  1048576     20    0    0    0     0       0          0\n  eth0:    1000     10    0    0    0     0          0         0      500      5    0    0    0     0       0          0\n",
        )
        .unwrap();
        let mut r = NetReader::default();
        r.begin_cycle();
        let mut out = Vec::new();
        assert!(r.read(proc, 42, &mut out).unwrap());
        assert_eq!(
            out[0],
            IfaceBytes {
                name: "lo".into(),
                receive: 1_048_576,
                transmit: 1_048_576
            }
        );
        assert_eq!(
            out[1],
            IfaceBytes {
                name: "eth0".into(),
                receive: 1000,
                transmit: 500
            }
        );
        assert_eq!(r.netns(proc, 42), NetNs::Own(Some(4026532999)));
        assert_eq!(r.netns(proc, 43), NetNs::Host, "the host's namespace");
        assert_eq!(r.netns(proc, 44), NetNs::Own(None), "no link to read");
        assert_eq!(parse_ns_inode("net:[12]"), Some(12));
        assert_eq!(parse_ns_inode("mnt:[12]"), None);
        let len = out.len();
        assert!(
            !r.read(proc, 43, &mut out).unwrap(),
            "no net/dev for pid 43 in this tree"
        );
        assert!(
            !r.read(proc, 44, &mut out).unwrap(),
            "a vanished process is not an error"
        );
        assert!(r.read(proc, 42, &mut out).unwrap());
        assert_eq!(out.len(), 2 * len, "a read appends");
        std::fs::write(proc.join("42/net/dev"), "h\nh\n  eth0: 1 2\n").unwrap();
        assert!(r.read(proc, 42, &mut out).is_err());
        assert_eq!(out.len(), 2 * len, "an error appends nothing");
    }
}
