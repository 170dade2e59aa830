//! Network namespaces a test creates for itself — two joined by a veth pair — so kernel
//! network faults (tc qdiscs, nftables rules) and their traffic never touch the host's own
//! network. [`NetnsPair`] deletes both namespaces (and with them the veth pair, every qdisc and
//! every nft table inside) on drop, also when the test fails.
//!
//! [`in_netns`] runs a closure on a fresh thread that has entered a namespace (setns), so a
//! socket created there lives in that namespace even after the thread is gone — a listener
//! made in `b` can be used from anywhere, a connect made from `a` leaves through `a`'s veth.
//! On that: the test's own traffic between namespaces, each named by its path (`/proc/<pid>/ns/net`
//! of a container's process: [`of_pid`]; `/run/netns/<name>`: [`named`]) — a listener
//! ([`listen_in`]), a connect ([`connect_from`]) and a throughput client ([`throughput`]).
//! [`Netns`] is one namespace of the test's own (a container runtime's "node" network, say).
//!
//! Addresses: `a` is 10.77.0.1/24 on `veth-a`, `b` is 10.77.0.2/24 on `veth-b`. They exist only
//! inside the two namespaces, so pairs of parallel tests do not collide.

use std::fs::File;
use std::io::{Read as _, Write as _};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

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

/// A name of this process's own for a namespace: `fl-<tag>-<pid>-<n>`.
fn unique_name(tag: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    format!("fl-{tag}-{}-{n}", std::process::id())
}

/// One named network namespace of the test's own with only `lo` (up); deleted on drop, with
/// whatever was made in it.
#[derive(Debug)]
pub struct Netns {
    /// Its `ip netns` name.
    pub name: String,
}

impl Netns {
    /// Creates it; `tag` goes into the name (`fl-<tag>-<pid>-<n>`).
    pub fn create(tag: &str) -> Self {
        let ns = Netns {
            name: unique_name(tag),
        };
        ip(&["netns", "add", &ns.name]);
        ip(&["-n", &ns.name, "link", "set", "lo", "up"]);
        ns
    }

    /// Its path, as [`in_netns_path`] and the traffic helpers take it.
    pub fn path(&self) -> String {
        named(&self.name)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

impl NetnsPair {
    /// Creates the pair; `tag` goes into the names (`fl-<tag>-<pid>-<n>-a`).
    pub fn create(tag: &str) -> Self {
        let base = unique_name(tag);
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

/// The path of the namespace `ip netns` calls `name`.
pub fn named(name: &str) -> String {
    format!("/run/netns/{name}")
}

/// The path of process `pid`'s network namespace.
pub fn of_pid(pid: i32) -> String {
    format!("/proc/{pid}/ns/net")
}

/// Runs `f` on a new thread inside namespace `ns`; sockets it creates stay in `ns`.
pub fn in_netns<T: Send>(ns: &str, f: impl FnOnce() -> T + Send) -> T {
    in_netns_path(&named(ns), f)
}

/// [`in_netns`] for the network namespace of process `pid` (a container's main process).
pub fn in_netns_of<T: Send>(pid: i32, f: impl FnOnce() -> T + Send) -> T {
    in_netns_path(&of_pid(pid), f)
}

/// [`in_netns`] for the namespace at `path` ([`named`], [`of_pid`]).
pub fn in_netns_path<T: Send>(path: &str, f: impl FnOnce() -> T + Send) -> T {
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
    exec_in_netns_at(&of_pid(pid), program, args)
}

/// [`exec_in_netns_of`] for the namespace at `path` ([`named`], [`of_pid`]).
pub fn exec_in_netns_at(path: &str, program: &str, args: &[&str]) -> Output {
    Command::new("nsenter")
        .arg(format!("--net={path}"))
        .arg(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("nsenter --net={path} {program}: {e}"))
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

/// A listener the test binds in namespace `ns` (a path) on all addresses, port `port`.
pub fn listen_in(ns: &str, port: u16) -> TcpListener {
    in_netns_path(ns, || {
        TcpListener::bind((Ipv4Addr::UNSPECIFIED, port))
            .unwrap_or_else(|e| panic!("bind :{port} in {ns}: {e}"))
    })
}

/// A TCP connect to `to` made from namespace `from` (a path): its packets leave through
/// that namespace's interfaces and rules.
pub fn connect_from(from: &str, to: SocketAddr, timeout: Duration) -> std::io::Result<TcpStream> {
    in_netns_path(from, || TcpStream::connect_timeout(&to, timeout))
}

/// Bytes per second of `bytes` sent from namespace `from` to a receiver the test binds in
/// namespace `to` at `addr` (an address of that namespace): measured by the receiver from its
/// first read to the end of the stream, so the connection's set-up does not count.
pub fn throughput(from: &str, to: &str, addr: SocketAddr, bytes: usize) -> f64 {
    let l = listen_in(to, addr.port());
    let recv = std::thread::spawn(move || {
        let (mut s, _) = l.accept().unwrap_or_else(|e| panic!("accept: {e}"));
        let mut buf = vec![0u8; 64 * 1024];
        let (mut got, mut first) = (0usize, None::<(Instant, usize)>);
        loop {
            let n = s.read(&mut buf).unwrap_or_else(|e| panic!("read: {e}"));
            if n == 0 {
                break;
            }
            got += n;
            first.get_or_insert((Instant::now(), n));
        }
        let (t0, n0) = first.unwrap_or_else(|| panic!("nothing received"));
        (got - n0) as f64 / t0.elapsed().as_secs_f64()
    });
    let mut c = connect_from(from, addr, Duration::from_secs(2))
        .unwrap_or_else(|e| panic!("connect {addr} from {from}: {e}"));
    c.write_all(&vec![5u8; bytes])
        .unwrap_or_else(|e| panic!("send to {addr} from {from}: {e}"));
    drop(c);
    recv.join()
        .unwrap_or_else(|_| panic!("the receiver panicked"))
}

/// `tc qdisc show`, `tc class show` and `tc filter show` of `dev` inside `pid`'s namespace,
/// concatenated, as the test's own `tc` sees them ([`observe_in_netns_of`]: a failed look
/// panics).
pub fn tc_tree_of(pid: i32, dev: &str) -> String {
    ["qdisc", "class", "filter"]
        .map(|what| observe_in_netns_of(pid, "tc", &[what, "show", "dev", dev]))
        .concat()
}

/// `nft list ruleset` inside `pid`'s namespace, as the test's own `nft` sees it.
pub fn nft_ruleset_of(pid: i32) -> String {
    observe_in_netns_of(pid, "nft", &["list", "ruleset"])
}

/// The margins of every 8 mbit rate-limit test, stated once: what passes a tbf of 8 mbit
/// (1.0 MB/s on the wire) arrives at ~96 % of that as payload; with tbf's bucket and a loaded
/// 2-core machine, 0.8–1.1 MB/s. What the limit must not reach (`unaffected`: another
/// namespace, or the same one before and after) runs at least 3× faster. Prints both, `what`
/// saying where they were measured.
pub fn assert_8mbit_against(limited: f64, unaffected: f64, what: &str) {
    eprintln!(
        "{what}: limited to 8mbit {:.3} MB/s, unaffected {:.1} MB/s",
        limited / 1e6,
        unaffected / 1e6
    );
    assert!(
        (0.8e6..=1.1e6).contains(&limited),
        "{what}: {limited:.0} B/s for 8mbit"
    );
    assert!(
        unaffected > 3.0 * limited,
        "{what}: the unaffected traffic was limited too: {unaffected:.0} B/s"
    );
}

/// Whether the test itself can look into namespaces: root, and `nsenter`, `tc` and `nft` for
/// its own observations ([`crate::chaos::require`]: skips without them, or fails under CI).
pub fn require_observation_tools() -> bool {
    let tools = ["nsenter", "tc", "nft"]
        .iter()
        .all(|t| Command::new(t).arg("--version").output().is_ok());
    crate::chaos::require(crate::chaos::is_root(), "root")
        && crate::chaos::require(tools, "nsenter, tc and nft (the test's own observations)")
}

/// Whether this kernel has `sch_netem`, tried by the test itself, independently of
/// faultline: its own `tc` adds one on `lo` of the namespace at `path` ([`named`],
/// [`of_pid`]: a namespace of the test's own) and takes it away again.
pub fn netem_available_at(path: &str) -> bool {
    let added = exec_in_netns_at(
        path,
        "tc",
        &["qdisc", "add", "dev", "lo", "root", "netem", "delay", "1ms"],
    )
    .status
    .success();
    let _ = exec_in_netns_at(path, "tc", &["qdisc", "del", "dev", "lo", "root"]);
    added
}

/// [`netem_available_at`] in the pair's namespace `b`.
pub fn netem_available(pair: &NetnsPair) -> bool {
    netem_available_at(&named(&pair.b))
}
