//! The network namespaces a kernel network fault acts in: chosen by what users know
//! (`--netns NAME`, `--pid PID`, `--container ID|NAME`, or the pod selectors `--namespace`,
//! `--pod`, `--label`, `--container-name` with `--count`/`--percent`; [`Selector`]), recorded in
//! the journal by inode and by the process each was found through ([`NsRecord`]), found again
//! from that record after a restart ([`NsRecord::open`]), and entered only to open a netlink
//! socket ([`socket_in`]).
//!
//! - **Containers and pods** resolve through the container faults' own lookup
//!   ([`crate::container::select`]: the CRI runtime or the Docker Engine API, the container
//!   guards, the seeded pick) to a process of each picked container — the Engine's main pid,
//!   or on a CRI runtime the first process whose cgroup names the container (the agent needs
//!   the node's PID namespace, `hostPID`) — and so to `/proc/<pid>/ns/net`. The containers of
//!   one pod share its namespace: it is acted in once ([`Places`] holds each namespace once,
//!   by inode). A picked container that shares the agent's own namespace (a `hostNetwork`
//!   pod, `--network host`) refuses the whole fault: it would hit every process on the node.
//! - **Entering**: a netlink socket belongs to the network namespace of the thread that
//!   created it, for its whole life. [`socket_in`] starts a thread, `setns(2)`s it into the
//!   target namespace, creates the socket there and ends; every request then goes over that
//!   socket from the caller's thread. No thread of the agent's stays in another namespace.
//! - **Finding again**: a pid can be reused, so the record's pid is trusted only while
//!   `/proc/<pid>/ns/net` still has the recorded inode; otherwise every process's namespace
//!   is looked at for that inode, and when none has it the namespace is gone — and with it
//!   every qdisc and nftables table a fault put there.
//! - **Capabilities** (measured, docs/adr/0018-netlink-network-faults.md): `CAP_NET_ADMIN` for
//!   tc and nftables; `CAP_SYS_ADMIN` for `setns(2)` into a network namespace; `CAP_SYS_PTRACE`
//!   to open `/proc/<pid>/ns/net` of a process holding capabilities the agent lacks (every
//!   container's). [`require_caps`] refuses a fault before anything is touched when one it
//!   certainly needs is missing; a refused open or setns names the capability too.
//!
//! Not here: the container runtimes ([`crate::container`]) and what a fault does inside the
//! namespace.

use std::fs::{self, File};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use nix::sched::{CloneFlags, setns};
use serde::{Deserialize, Serialize};

use crate::error::FaultError;
use crate::fault::{Env, PodRef};
use crate::select::{Candidate, PodQuery, Selection};

/// Where `ip netns add NAME` puts a named namespace.
const NAMED_DIR: &str = "/run/netns";

/// Capability numbers (`linux/capability.h`).
const CAP_NET_ADMIN: u32 = 12;
const CAP_SYS_ADMIN: u32 = 21;

/// Which namespaces a fault asks for.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Selector<'a> {
    /// The agent's own.
    Own,
    /// A named namespace (`ip netns`).
    Named(&'a str),
    /// The namespace of a process.
    Pid(i32),
    /// The namespaces of containers: the one `--container` names, or those the pod
    /// selectors of `query` pick, on the runtime its sockets name or the one found.
    Containers {
        /// `--container ID|NAME`.
        reference: Option<&'a str>,
        /// The pod selectors, the pick and the runtime sockets.
        query: PodQuery,
    },
}

impl<'a> Selector<'a> {
    /// The selector a spec's `--netns`, `--pid`, `--container` and pod selectors stand for:
    /// at most one of the first three, and the pod selectors only alone (or with
    /// `--container`, which [`crate::container::select`] refuses, naming both).
    pub(crate) fn from_flags(
        kind: &'static str,
        netns: Option<&'a str>,
        pid: Option<i32>,
        container: Option<&'a str>,
        query: PodQuery,
    ) -> Result<Self, FaultError> {
        let by_pods = !query.selector.is_empty();
        match (netns, pid, container, by_pods) {
            (None, None, None, false) => Ok(Selector::Own),
            (Some(n), None, None, false) => Ok(Selector::Named(n)),
            (None, Some(p), None, false) => Ok(Selector::Pid(p)),
            (None, None, reference, _) => Ok(Selector::Containers { reference, query }),
            _ => Err(FaultError::Invalid {
                kind,
                message: "give at most one of --netns, --pid, --container and the pod selectors \
                          (--namespace, --pod, --label, --container-name)"
                    .into(),
            }),
        }
    }

    /// Whether the fault acts outside the agent's own namespace.
    pub(crate) fn is_other(&self) -> bool {
        *self != Selector::Own
    }
}

/// The namespaces a fault acts in, each once, and how pod selectors picked them.
#[derive(Debug)]
pub(crate) struct Places {
    /// The namespaces: `None` is the agent's own.
    pub(crate) namespaces: Vec<Option<NsRecord>>,
    /// The pick of the pod selectors (seed, matches, picks), when they were used.
    pub(crate) selection: Option<Selection>,
}

/// A network namespace as the journal records it: how it was found, and its identity.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NsRecord {
    /// The `ip netns` name it was found by.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The process it was found through (`--pid`, or a container's main process).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<i32>,
    /// The container it was found through: `name (id)`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
    /// That container's pod, when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<PodRef>,
    /// Device number of the namespace file system (nsfs).
    pub dev: u64,
    /// The namespace's inode: its identity while it exists.
    pub inode: u64,
}

impl std::fmt::Display for NsRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (&self.name, &self.pod, &self.container, self.pid) {
            (Some(n), _, _, _) => write!(f, "netns {n}"),
            (None, Some(p), _, _) => write!(f, "the netns of pod {p}"),
            (None, None, Some(c), _) => write!(f, "the netns of container {c}"),
            (None, None, None, Some(p)) => write!(f, "the netns of pid {p}"),
            (None, None, None, None) => write!(f, "netns inode {}", self.inode),
        }
    }
}

/// Whether `name` is usable as an `ip netns` name (no path tricks, no spaces).
pub(crate) fn valid_netns_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// Whether `name` is a plausible interface name (Linux: at most 15 bytes, no `/` or `:`).
pub(crate) fn valid_dev_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 15
        && name
            .bytes()
            .all(|b| b.is_ascii_graphic() && b != b'/' && b != b':')
}

fn named_path(name: &str) -> PathBuf {
    Path::new(NAMED_DIR).join(name)
}

/// `(dev, inode)` of an open namespace file.
fn ids_of(f: &File) -> std::io::Result<(u64, u64)> {
    f.metadata().map(|m| (m.dev(), m.ino()))
}

fn is_denied(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(code) if code == nix::errno::Errno::EACCES as i32 || code == nix::errno::Errno::EPERM as i32
    )
}

fn ptrace_denied(kind: &'static str, path: &Path) -> FaultError {
    FaultError::Unsupported {
        kind,
        message: format!(
            "cannot open {}: permission denied; opening the network namespace of a process \
             that holds capabilities the agent lacks (every container's) needs CAP_SYS_PTRACE \
             (the DaemonSet adds it, docs/SECURITY.md)",
            path.display()
        ),
    }
}

/// Finds the namespaces `sel` names, each once, refusing one that is the agent's own when it
/// was asked for through a process or container (a fault there would hit the whole host),
/// and containers the container guards refuse (the agent's own container or pod, a pod in a
/// protected namespace: the same rule as a container fault's). `[None]` for
/// [`Selector::Own`].
///
/// # Errors
/// [`FaultError::NoTarget`] naming the selector when nothing matches, or naming a container
/// that does not run or whose process cannot be seen; a guard's refusal; a missing
/// capability.
pub(crate) fn resolve(
    kind: &'static str,
    sel: Selector<'_>,
    ctx: &crate::Context,
) -> Result<Places, FaultError> {
    let env = &ctx.env;
    let one = |ns: Option<NsRecord>| Places {
        namespaces: vec![ns],
        selection: None,
    };
    match sel {
        Selector::Own => Ok(one(None)),
        Selector::Named(name) => {
            if !valid_netns_name(name) {
                return Err(FaultError::Invalid {
                    kind,
                    message: format!("--netns {name:?} is not a namespace name"),
                });
            }
            let path = named_path(name);
            let f = File::open(&path).map_err(|e| FaultError::NoTarget {
                kind,
                message: format!(
                    "network namespace {name} does not exist ({}: {e})",
                    path.display()
                ),
            })?;
            let (dev, inode) = ids_of(&f).map_err(|source| FaultError::Io {
                action: "cannot stat",
                path,
                source,
            })?;
            Ok(one(Some(NsRecord {
                name: Some(name.to_owned()),
                pid: None,
                container: None,
                pod: None,
                dev,
                inode,
            })))
        }
        Selector::Pid(pid) => by_pid(kind, pid, None, env).map(|r| one(Some(r))),
        Selector::Containers { reference, query } => of_containers(kind, reference, &query, ctx),
    }
}

/// The namespaces of the containers `--container` or the pod selectors pick, each once.
fn of_containers(
    kind: &'static str,
    reference: Option<&str>,
    query: &PodQuery,
    ctx: &crate::Context,
) -> Result<Places, FaultError> {
    let picked = crate::container::select(ctx, kind, reference, query, false)?;
    let mut found: Vec<NsRecord> = Vec::new();
    for f in &picked.found {
        let c = &f.candidate;
        if !f.seen.running {
            return Err(FaultError::NoTarget {
                kind,
                message: format!(
                    "container {} is not running ({}), so it has no network namespace to act in",
                    c.describe(),
                    f.seen.status
                ),
            });
        }
        let pid = f
            .main_pid
            .or_else(|| {
                picked
                    .members
                    .get(&c.id.to_ascii_lowercase())
                    .and_then(|pids| pids.iter().copied().min())
            })
            .ok_or_else(|| FaultError::NoTarget {
                kind,
                message: format!(
                    "no process of container {} in {}, so its network namespace cannot be found: \
                     the agent needs the node's PID namespace (hostPID) and /proc",
                    c.describe(),
                    ctx.env.proc_root.display()
                ),
            })?;
        let rec = by_pid(kind, pid, Some(c), &ctx.env)?;
        // The containers of one pod share its namespace: it is acted in once.
        if !found
            .iter()
            .any(|r| (r.dev, r.inode) == (rec.dev, rec.inode))
        {
            found.push(rec);
        }
    }
    Ok(Places {
        namespaces: found.into_iter().map(Some).collect(),
        selection: picked.selection,
    })
}

fn by_pid(
    kind: &'static str,
    pid: i32,
    via: Option<&Candidate>,
    env: &Env,
) -> Result<NsRecord, FaultError> {
    if pid <= 0 {
        return Err(FaultError::Invalid {
            kind,
            message: format!("--pid {pid} is not a process id"),
        });
    }
    let path = env.proc_root.join(pid.to_string()).join("ns/net");
    let f = File::open(&path).map_err(|e| {
        if is_denied(&e) {
            ptrace_denied(kind, &path)
        } else {
            FaultError::NoTarget {
                kind,
                message: format!("no process {pid} ({}: {e})", path.display()),
            }
        }
    })?;
    let (dev, inode) = ids_of(&f).map_err(|source| FaultError::Io {
        action: "cannot stat",
        path: path.clone(),
        source,
    })?;
    if own_ids() == Some((dev, inode)) {
        let through = match via {
            Some(c) if c.pod.is_some() => format!("container {} (a hostNetwork pod)", c.describe()),
            Some(c) => format!("container {}", c.describe()),
            None => format!("process {pid}"),
        };
        return Err(FaultError::Invalid {
            kind,
            message: format!(
                "{through} shares the agent's own network namespace (host network): a fault \
                 there would hit every process on the host; to mean that, name no target \
                 (--pid, --container, pod selectors)"
            ),
        });
    }
    let short = |id: &str| id.chars().take(12).collect::<String>();
    Ok(NsRecord {
        name: None,
        pid: Some(pid),
        container: via.map(|c| format!("{} ({})", c.name, short(&c.id))),
        pod: via.and_then(|c| c.pod.clone()),
        dev,
        inode,
    })
}

/// The agent's own network namespace.
fn own_ids() -> Option<(u64, u64)> {
    fs::metadata("/proc/self/ns/net")
        .ok()
        .map(|m| (m.dev(), m.ino()))
}

impl NsRecord {
    fn is(&self, f: &File) -> bool {
        ids_of(f).is_ok_and(|ids| ids == (self.dev, self.inode))
    }

    /// The namespace again, by its inode: through the recorded pid or name when they still
    /// lead to it, else through any process in it. `Ok(None)` when it is gone. A recorded
    /// pid or name that cannot be looked at (a missing capability) is an error, since "gone"
    /// would then be a guess; other processes that cannot be looked at (init, with its own
    /// protections) are passed over.
    pub(crate) fn open(
        &self,
        kind: &'static str,
        proc_root: &Path,
    ) -> Result<Option<File>, FaultError> {
        let direct = self
            .pid
            .map(|p| proc_root.join(p.to_string()).join("ns/net"))
            .into_iter()
            .chain(self.name.as_deref().map(named_path));
        for path in direct {
            match File::open(&path) {
                Ok(f) if self.is(&f) => return Ok(Some(f)),
                Ok(_) => {}
                Err(e) if is_denied(&e) => return Err(ptrace_denied(kind, &path)),
                Err(_) => {}
            }
        }
        let Ok(dir) = fs::read_dir(proc_root) else {
            return Ok(None);
        };
        for entry in dir.flatten() {
            let numeric = entry
                .file_name()
                .to_str()
                .is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit()));
            if !numeric {
                continue;
            }
            let path = entry.path().join("ns/net");
            if fs::metadata(&path).is_ok_and(|m| (m.dev(), m.ino()) == (self.dev, self.inode))
                && let Ok(f) = File::open(&path)
                && self.is(&f)
            {
                return Ok(Some(f));
            }
        }
        Ok(None)
    }
}

/// Where a recorded fault's namespace is now.
#[derive(Debug)]
pub(crate) enum Place {
    /// The agent's own.
    Own,
    /// Another, open.
    In(File),
    /// Gone, and with it whatever a fault put there.
    Gone,
}

/// The namespace of a revert record: by [`NsRecord`], or (records written before namespaces
/// were recorded by inode) by name alone, or the agent's own when neither is given.
pub(crate) fn reopen(
    kind: &'static str,
    ns: Option<&NsRecord>,
    legacy_name: Option<&str>,
    proc_root: &Path,
) -> Result<Place, FaultError> {
    Ok(match (ns, legacy_name) {
        (Some(rec), _) => rec.open(kind, proc_root)?.map_or(Place::Gone, Place::In),
        (None, Some(name)) => File::open(named_path(name)).map_or(Place::Gone, Place::In),
        (None, None) => Place::Own,
    })
}

/// Runs `make` (which creates sockets) on a thread inside namespace `ns`, or on the calling
/// thread when `ns` is `None` (the agent's own); what it creates stays in that namespace.
pub(crate) fn socket_in<T: Send>(
    kind: &'static str,
    ns: Option<&File>,
    make: impl FnOnce() -> std::io::Result<T> + Send,
) -> Result<T, FaultError> {
    let socket_error = |e: std::io::Error| {
        if is_denied(&e) {
            FaultError::Unsupported {
                kind,
                message: format!(
                    "cannot open a netlink socket: {e}; tc and nftables changes need CAP_NET_ADMIN"
                ),
            }
        } else {
            FaultError::Other(format!("{kind}: cannot open a netlink socket: {e}"))
        }
    };
    let Some(ns) = ns else {
        return make().map_err(socket_error);
    };
    std::thread::scope(|s| {
        s.spawn(|| {
            setns(ns, CloneFlags::CLONE_NEWNET).map_err(|errno| {
                if errno == nix::errno::Errno::EPERM {
                    FaultError::Unsupported {
                        kind,
                        message: "entering another network namespace (setns) was refused: it needs CAP_SYS_ADMIN (the DaemonSet adds it, docs/SECURITY.md)".into(),
                    }
                } else {
                    FaultError::Sys {
                        action: format!("{kind}: cannot enter the network namespace"),
                        errno,
                    }
                }
            })?;
            make().map_err(socket_error)
        })
        .join()
        .unwrap_or_else(|_| {
            Err(FaultError::Other(format!(
                "{kind}: the thread entering the network namespace panicked"
            )))
        })
    })
}

/// Runs `make` on a thread in a new, empty network namespace of its own, which ends with the
/// thread's last socket: for support probes that must not touch any real interface.
pub(crate) fn in_throwaway<T: Send>(
    make: impl FnOnce() -> Result<T, FaultError> + Send,
) -> Result<T, FaultError> {
    std::thread::scope(|s| {
        s.spawn(|| {
            nix::sched::unshare(CloneFlags::CLONE_NEWNET).map_err(|errno| FaultError::Sys {
                action: "cannot create a throwaway network namespace to probe kernel support (needs CAP_SYS_ADMIN)".into(),
                errno,
            })?;
            make()
        })
        .join()
        .unwrap_or_else(|_| Err(FaultError::Other("the probe thread panicked".into())))
    })
}

/// The effective capability set in `/proc/self/status` text. Pure.
fn parse_cap_eff(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
}

/// The capabilities in `needed` (name, number) missing from `eff`. Pure.
fn missing(eff: u64, needed: &[(&'static str, u32)]) -> Vec<&'static str> {
    needed
        .iter()
        .filter(|(_, n)| eff & (1u64 << n) == 0)
        .map(|(name, _)| *name)
        .collect()
}

/// Refuses a kernel network fault when this process certainly lacks a capability it needs:
/// `CAP_NET_ADMIN` always, `CAP_SYS_ADMIN` to enter another namespace. (`CAP_SYS_PTRACE`
/// is needed only for some processes; a refused open names it.)
pub(crate) fn require_caps(kind: &'static str, other_ns: bool) -> Result<(), FaultError> {
    let Some(eff) = fs::read_to_string("/proc/self/status")
        .ok()
        .as_deref()
        .and_then(parse_cap_eff)
    else {
        return Ok(());
    };
    let mut needed = vec![("CAP_NET_ADMIN", CAP_NET_ADMIN)];
    if other_ns {
        needed.push(("CAP_SYS_ADMIN", CAP_SYS_ADMIN));
    }
    let lacking = missing(eff, &needed);
    if lacking.is_empty() {
        return Ok(());
    }
    Err(FaultError::Unsupported {
        kind,
        message: format!(
            "this agent lacks {}: kernel network faults program tc and nftables over netlink \
             (CAP_NET_ADMIN) inside the target's network namespace (entering it: CAP_SYS_ADMIN, \
             and CAP_SYS_PTRACE to open another process's namespace); add them to the \
             DaemonSet's securityContext.capabilities or the unit's AmbientCapabilities \
             (docs/SECURITY.md), or use the proxy faults, which need none",
            lacking.join(" and ")
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every capability the kernel faults can need, by number.
    const ALL_NEEDED: [(&str, u32); 3] = [
        ("CAP_NET_ADMIN", CAP_NET_ADMIN),
        ("CAP_SYS_PTRACE", 19),
        ("CAP_SYS_ADMIN", CAP_SYS_ADMIN),
    ];

    #[test]
    fn names_are_checked() {
        assert!(valid_netns_name("fl-test_1"));
        assert!(!valid_netns_name("../etc"));
        assert!(!valid_netns_name("a b"));
        assert!(valid_dev_name("veth0"));
        assert!(!valid_dev_name("averyveryverylongname"));
        assert!(!valid_dev_name("eth0:1"));
    }

    #[test]
    fn at_most_one_selector() {
        let none = PodQuery::default();
        let pods = PodQuery {
            selector: crate::select::PodSelector {
                labels: vec!["app=web".parse().unwrap()],
                ..Default::default()
            },
            ..PodQuery::default()
        };
        let from = |netns, pid, container, q: &PodQuery| {
            Selector::from_flags("netem", netns, pid, container, q.clone())
        };
        assert_eq!(from(None, None, None, &none).unwrap(), Selector::Own);
        assert_eq!(from(None, Some(7), None, &none).unwrap(), Selector::Pid(7));
        assert_eq!(
            from(None, None, None, &pods).unwrap(),
            Selector::Containers {
                reference: None,
                query: pods.clone()
            }
        );
        assert!(matches!(
            from(None, None, Some("web"), &none).unwrap(),
            Selector::Containers {
                reference: Some("web"),
                ..
            }
        ));
        for e in [
            from(Some("a"), None, Some("web"), &none).unwrap_err(),
            from(None, Some(7), None, &pods).unwrap_err(),
            from(Some("a"), None, None, &pods).unwrap_err(),
        ] {
            assert!(e.to_string().contains("at most one"), "{e}");
            assert!(e.to_string().contains("--label"), "{e}");
        }
    }

    #[test]
    fn capabilities_are_read_from_status() {
        let status = "Name:\tx\nCapInh:\t0000000000000000\nCapPrm:\t00000000a80425fb\nCapEff:\t0000000000281020\n";
        let eff = parse_cap_eff(status).unwrap();
        assert!(missing(eff, &ALL_NEEDED).is_empty(), "{eff:x}");
        assert_eq!(
            missing(0x20, &ALL_NEEDED),
            ["CAP_NET_ADMIN", "CAP_SYS_PTRACE", "CAP_SYS_ADMIN"]
        );
        assert_eq!(missing(1 << 12, &ALL_NEEDED[..1]), Vec::<&str>::new());
        assert_eq!(parse_cap_eff("Name:\tx\n"), None);
    }

    #[test]
    fn a_pid_is_trusted_only_while_its_namespace_has_the_recorded_inode() {
        let own = own_ids().unwrap();
        let me = std::process::id() as i32;
        let proc_root = Path::new("/proc");
        let rec = NsRecord {
            name: None,
            pid: Some(me),
            container: None,
            pod: None,
            dev: own.0,
            inode: own.1,
        };
        assert!(rec.open("netem", proc_root).unwrap().is_some());
        // Same pid, another inode (as after pid reuse): not this process's namespace, and no
        // process has that inode, so the namespace is gone.
        let reused = NsRecord {
            inode: own.1.wrapping_add(0x7fff_0000),
            ..rec.clone()
        };
        assert!(reused.open("netem", proc_root).unwrap().is_none());
        // A dead pid whose namespace another process still holds: found by inode.
        let moved = NsRecord {
            pid: Some(i32::MAX),
            ..rec
        };
        assert!(moved.open("netem", proc_root).unwrap().is_some());
    }
}
