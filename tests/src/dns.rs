//! A DNS server of the test's own: Debian's dnsmasq on a free 127.0.0.1 port, answering
//! only the records the test gives it (no upstream, no `/etc/hosts`, no config file, no DHCP,
//! authoritative for the test's domain so that any other name there is NXDOMAIN). The
//! machine's resolver is never touched: a client reaches this server only by being pointed
//! at it (`agents.resolver` of a game day). Killed and reaped on drop, also when a test fails.
//!
//! [`dnsmasq_available`] is the skip gate: without dnsmasq a test prints SKIPPED, under CI
//! it fails (`.ci/run` installs `dnsmasq-base`).

use std::net::{IpAddr, TcpListener, TcpStream, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tempfile::TempDir;

use crate::drill::poll_for;
use crate::in_ci as on_ci;

/// Whether dnsmasq can run here; prints why `test` is skipped when not, or panics under CI.
pub fn dnsmasq_available(test: &str) -> bool {
    let out = Command::new("dnsmasq")
        .arg("--version")
        .stdin(Stdio::null())
        .output();
    if matches!(out, Ok(ref o) if o.status.success()) {
        return true;
    }
    assert!(
        !on_ci(),
        "{test}: dnsmasq is required under CI but cannot run ({out:?}; .ci/run installs dnsmasq-base)"
    );
    eprintln!("SKIPPED {test}: dnsmasq is not installed (apt-get install dnsmasq-base)");
    false
}

/// A running dnsmasq. Dropping it kills it.
#[derive(Debug)]
pub struct Dnsmasq {
    child: Child,
    port: u16,
    dir: TempDir,
}

impl Dnsmasq {
    /// Starts dnsmasq on 127.0.0.1 answering `records` (name, address; a name may come
    /// several times) and NXDOMAIN for any other name under `domain`.
    ///
    /// # Panics
    /// When it cannot be started or does not answer within 10 s (its log is in the message).
    pub fn start(domain: &str, records: &[(&str, IpAddr)]) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("faultline-dns-")
            .tempdir()
            .unwrap_or_else(|e| panic!("tempdir: {e}"));
        let port = free_udp_and_tcp_port();
        let log = dir.path().join("dnsmasq.log");
        let mut cmd = crate::ending_with_test("dnsmasq");
        cmd.args([
            "--keep-in-foreground",
            "--conf-file=/dev/null",
            "--no-resolv",
            "--no-hosts",
            "--no-poll",
            "--pid-file=",
            "--listen-address=127.0.0.1",
            "--bind-interfaces",
            "--log-queries",
        ])
        .arg(format!("--port={port}"))
        .arg(format!("--local=/{domain}/"))
        .arg(format!("--log-facility={}", log.display()));
        for (name, ip) in records {
            cmd.arg(format!("--host-record={name},{ip}"));
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {cmd:?}: {e}"));
        let mut me = Self { child, port, dir };
        let up = poll_for(Duration::from_secs(10), || {
            TcpStream::connect(("127.0.0.1", port)).ok()
        });
        if up.is_none() {
            let status = me.child.try_wait();
            panic!(
                "dnsmasq did not answer on 127.0.0.1:{port} ({status:?}):\n{}",
                me.log()
            );
        }
        me
    }

    /// `127.0.0.1:<port>`.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// What it logged (every query: `--log-queries`).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("dnsmasq.log")
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port free for both UDP and TCP on 127.0.0.1 (bound and released).
///
/// # Panics
/// When none is found in 50 tries.
pub fn free_udp_and_tcp_port() -> u16 {
    for _ in 0..50 {
        let Ok(udp) = UdpSocket::bind("127.0.0.1:0") else {
            continue;
        };
        let Ok(port) = udp.local_addr().map(|a| a.port()) else {
            continue;
        };
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no port free for both UDP and TCP on 127.0.0.1");
}

/// A TCP port free on every one of `ips` (loopback addresses: the whole of 127.0.0.0/8 is
/// the machine's own), for agents that listen on the same port at different addresses.
///
/// # Panics
/// When none is found in 50 tries.
pub fn free_port_on(ips: &[IpAddr]) -> u16 {
    for _ in 0..50 {
        let port = crate::backup::free_port();
        if ips.iter().all(|ip| TcpListener::bind((*ip, port)).is_ok()) {
            return port;
        }
    }
    panic!("no port free on every one of {ips:?}");
}
