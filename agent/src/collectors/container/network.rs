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
//! container.

use std::path::{Path, PathBuf};

use crate::collectors::host::network::parse_net_dev;
use crate::collectors::{CollectError, parse_error};

use super::cgroup::{ReadBuf, read_path};

/// Reads container network counters; keeps its buffers between cycles.
#[derive(Debug, Default)]
pub struct NetReader {
    host_netns: Option<PathBuf>,
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
    /// Once per cycle: remembers the host's network namespace (that of PID 1 under `proc`).
    pub fn begin_cycle(&mut self, proc: &Path) {
        self.host_netns = std::fs::read_link(proc.join("1/ns/net")).ok();
    }

    /// Which network namespace `pid` is in. A container's namespace does not change while its
    /// process lives, so the collector asks once per process.
    pub fn netns(&mut self, proc: &Path, pid: u32) -> NetNs {
        self.set_path(proc, pid, "ns/net");
        match (&self.host_netns, std::fs::read_link(&self.path)) {
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
        if !read_path(&self.path, &mut self.buf)? {
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
        r.begin_cycle(proc);
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
