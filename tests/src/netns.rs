//! Network namespaces a test creates for itself — two joined by a veth pair — so kernel
//! network faults (tc qdiscs, nftables rules) and their traffic never touch the host's own
//! network. [`NetnsPair`] deletes both namespaces (and with them the veth pair, every qdisc and
//! every nft table inside) on drop, also when the test fails.
//!
//! [`in_netns`] runs a closure on a fresh thread that has entered a namespace (setns), so a
//! socket created there lives in that namespace even after the thread is gone — a listener
//! made in `b` can be used from anywhere, a connect made from `a` leaves through `a`'s veth.
//!
//! Addresses: `a` is 10.77.0.1/24 on `veth-a`, `b` is 10.77.0.2/24 on `veth-b`. They exist only
//! inside the two namespaces, so pairs of parallel tests do not collide.

use std::fs::File;
use std::net::Ipv4Addr;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};

use nix::sched::{CloneFlags, setns};

/// Two namespaces `a` and `b`, joined by `veth-a` ⇄ `veth-b`.
#[derive(Debug)]
pub struct NetnsPair {
    /// Name of the first namespace.
    pub a: String,
    /// Name of the second namespace.
    pub b: String,
}

/// The address of `a`'s end.
pub const ADDR_A: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);
/// The address of `b`'s end.
pub const ADDR_B: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 2);

fn ip(args: &[&str]) -> Output {
    let out = Command::new("ip")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("ip {args:?}: {e}"));
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Whether namespaces and veth pairs can be made here (root and iproute2).
pub fn available() -> bool {
    crate::chaos::is_root()
        && Command::new("ip")
            .arg("-V")
            .output()
            .is_ok_and(|o| o.status.success())
}

/// Whether the kernel network faults can be tested here: root with iproute2 and nft, each
/// checked with [`crate::chaos::require`] (a missing one skips, or fails under CI).
pub fn require_kernel_tools() -> bool {
    crate::chaos::require(available(), "root with iproute2 (network namespaces)")
        && crate::chaos::require(
            Command::new("nft").arg("--version").output().is_ok(),
            "nft (nftables)",
        )
}

impl NetnsPair {
    /// Creates the pair; `tag` goes into the names (`fl-<tag>-<pid>-<n>-a`).
    pub fn create(tag: &str) -> Self {
        static N: AtomicU32 = AtomicU32::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let base = format!("fl-{tag}-{}-{n}", std::process::id());
        let pair = NetnsPair {
            a: format!("{base}-a"),
            b: format!("{base}-b"),
        };
        ip(&["netns", "add", &pair.a]);
        ip(&["netns", "add", &pair.b]);
        ip(&[
            "link", "add", "veth-a", "netns", &pair.a, "type", "veth", "peer", "name", "veth-b",
            "netns", &pair.b,
        ]);
        for (ns, dev, addr) in [(&pair.a, "veth-a", ADDR_A), (&pair.b, "veth-b", ADDR_B)] {
            ip(&["-n", ns, "addr", "add", &format!("{addr}/24"), "dev", dev]);
            ip(&["-n", ns, "link", "set", dev, "up"]);
            ip(&["-n", ns, "link", "set", "lo", "up"]);
        }
        pair
    }

    /// `ip netns exec NS program args…`, its output (not checked).
    pub fn exec(ns: &str, program: &str, args: &[&str]) -> Output {
        Command::new("ip")
            .args(["netns", "exec", ns, program])
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("ip netns exec {ns} {program}: {e}"))
    }

    /// `nft list ruleset` inside `ns`.
    pub fn nft_ruleset(ns: &str) -> String {
        String::from_utf8_lossy(&Self::exec(ns, "nft", &["list", "ruleset"]).stdout).into_owned()
    }

    /// `tc qdisc show` inside `ns`.
    pub fn qdiscs(ns: &str) -> String {
        String::from_utf8_lossy(&Self::exec(ns, "tc", &["qdisc", "show"]).stdout).into_owned()
    }
}

impl Drop for NetnsPair {
    fn drop(&mut self) {
        for ns in [&self.a, &self.b] {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
    }
}

/// Runs `f` on a new thread inside namespace `ns`; sockets it creates stay in `ns`.
pub fn in_netns<T: Send>(ns: &str, f: impl FnOnce() -> T + Send) -> T {
    in_netns_at(&format!("/run/netns/{ns}"), f)
}

/// [`in_netns`] for the network namespace of process `pid` (a container's main process).
pub fn in_netns_of<T: Send>(pid: i32, f: impl FnOnce() -> T + Send) -> T {
    in_netns_at(&format!("/proc/{pid}/ns/net"), f)
}

fn in_netns_at<T: Send>(path: &str, f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| {
        s.spawn(|| {
            let file = File::open(path).unwrap_or_else(|e| panic!("open {path}: {e}"));
            setns(&file, CloneFlags::CLONE_NEWNET).unwrap_or_else(|e| panic!("setns {path}: {e}"));
            f()
        })
        .join()
        .unwrap_or_else(|_| panic!("thread in {path} panicked"))
    })
}

/// `nsenter --net=/proc/PID/ns/net program args…`: a tool (tc, nft) run by the test inside the
/// network namespace of process `pid`; its output, whatever its exit status (see
/// [`observe_in_netns_of`] for an observation that must succeed).
pub fn exec_in_netns_of(pid: i32, program: &str, args: &[&str]) -> Output {
    Command::new("nsenter")
        .arg(format!("--net=/proc/{pid}/ns/net"))
        .arg(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("nsenter --net=/proc/{pid}/ns/net {program}: {e}"))
}

/// [`exec_in_netns_of`] for an observation the test relies on (`tc qdisc show`, `nft list
/// ruleset`): its standard output, and a panic naming the tool when it fails, so that a failed
/// look never passes for an empty namespace.
pub fn observe_in_netns_of(pid: i32, program: &str, args: &[&str]) -> String {
    let out = exec_in_netns_of(pid, program, args);
    assert!(
        out.status.success(),
        "{program} {} in the namespace of pid {pid} failed ({}): {}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Whether netem works here (sch_netem), tried by the test itself, independently of
/// faultline, on `lo` in the pair's namespace `b`.
pub fn netem_available(pair: &NetnsPair) -> bool {
    let out = NetnsPair::exec(
        &pair.b,
        "tc",
        &["qdisc", "add", "dev", "lo", "root", "netem", "delay", "1ms"],
    );
    let _ = NetnsPair::exec(&pair.b, "tc", &["qdisc", "del", "dev", "lo", "root"]);
    out.status.success()
}
