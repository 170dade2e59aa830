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

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::collectors::host::network::parse_net_dev;
use crate::collectors::{CollectError, parse_error};

use super::cgroup::{ReadBuf, read_path};

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
        let host = self
            .host_netns
            .get_or_insert_with(|| std::fs::read_link(proc.join("1/ns/net")).ok());
        match (&*host, std::fs::read_link(&self.path)) {
            (Some(host), Ok(ns)) if &ns == host => NetNs::Host,
            (_, Ok(ns)) => NetNs::Own(ns.to_str().and_then(parse_ns_inode)),
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
    /// Returns `Ok(false)` when the process is gone.
    pub fn read(
        &mut self,
        proc: &Path,
        pid: u32,
        out: &mut Vec<IfaceBytes>,
    ) -> Result<bool, CollectError> {
        self.set_path(proc, pid, "net/dev");
        if !read_path(&self.path, &mut self.buf, NET_DEV_MAX_LINE)? {
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

/// One cycle's network reads: the interfaces of every namespace read so far, in a row, and
/// where each namespace's are (by its inode), so that the containers of a pod, which share
/// one namespace, read it once.
#[derive(Debug, Default)]
pub(super) struct NamespaceReads {
    reader: NetReader,
    read: Vec<IfaceBytes>,
    pub(super) by_ns: HashMap<u64, (usize, usize)>,
}

impl NamespaceReads {
    /// Once per cycle: forgets the last cycle's reads and the host's namespace.
    pub(super) fn begin_cycle(&mut self) {
        self.reader.begin_cycle();
        self.read.clear();
        self.by_ns.clear();
    }

    /// The interfaces of a container whose process `pid` was found in its cgroup: none for
    /// the host's namespace. `kept` is the container's (pid, namespace), looked up once per
    /// process and updated when the process turns out to be gone or elsewhere; when no
    /// process can be read it is cleared (unless it is the host's), so that the next cycle
    /// reads `cgroup.procs` again. `first_pid` reads `cgroup.procs` for a live process, at
    /// most once, and only when the cycle has not read it already (`procs_read`).
    pub(super) fn interfaces(
        &mut self,
        proc: &Path,
        mut pid: u32,
        kept: &mut Option<(u32, NetNs)>,
        procs_read: bool,
        mut first_pid: impl FnMut() -> Result<Option<u32>, CollectError>,
    ) -> Result<&[IfaceBytes], CollectError> {
        let netns = match *kept {
            Some((p, ns)) if p == pid => ns,
            _ => {
                let ns = self.reader.netns(proc, pid);
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
            if let Some(range) = ns_id.and_then(|id| self.by_ns.get(&id).copied()) {
                // Only if this container's process is alive and still in it (a dead pid's
                // namespace may be gone and its inode reused): one `readlink`, cheaper than
                // reading `net/dev`.
                let now = self.reader.netns(proc, pid);
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
                    // Gone: the read below finds no process and asks `cgroup.procs` for one.
                    NetNs::Own(None) => ns_id = None,
                }
            }
            let start = self.read.len();
            if self.reader.read(proc, pid, &mut self.read)? {
                let range = (start, self.read.len());
                if let Some(id) = ns_id {
                    self.by_ns.insert(id, range);
                }
                break Some(range);
            }
            if retried || procs_read {
                break None;
            }
            retried = true;
            match first_pid()? {
                Some(p) if p != pid => {
                    pid = p;
                    let ns = self.reader.netns(proc, pid);
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
