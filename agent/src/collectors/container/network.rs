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
//! network metrics. Containers that share one namespace
//! (the containers of a Kubernetes pod, `--network container:<x>`) each report the same
//! interface counters: summing `container.network.io` over such containers counts the shared
//! traffic once per container.

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

    /// Whether `pid` is in the host's network namespace. A container's namespace does not
    /// change while its process lives, so the collector asks once per process.
    pub fn in_host_netns(&mut self, proc: &Path, pid: u32) -> bool {
        self.set_path(proc, pid, "ns/net");
        match (&self.host_netns, std::fs::read_link(&self.path)) {
            (Some(host), Ok(ns)) => &ns == host,
            _ => false,
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

    /// The interfaces of `pid`'s network namespace into `out` (cleared first). Returns
    /// `Ok(false)` when the process is gone.
    pub fn read(
        &mut self,
        proc: &Path,
        pid: u32,
        out: &mut Vec<IfaceBytes>,
    ) -> Result<bool, CollectError> {
        out.clear();
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
        assert!(
            !r.read(proc, 43, &mut out).unwrap(),
            "host namespace is skipped"
        );
        assert!(
            !r.read(proc, 44, &mut out).unwrap(),
            "a vanished process is not an error"
        );
        std::fs::write(proc.join("42/net/dev"), "h\nh\n  eth0: 1 2\n").unwrap();
        assert!(r.read(proc, 42, &mut out).is_err());
    }
}
