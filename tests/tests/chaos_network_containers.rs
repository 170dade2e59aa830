//! Kernel network faults inside Docker containers' own network namespaces, by `--container`,
//! applied by the real `faultline fault inject` with a `PATH` that has no `tc`, `nft` or `ip`
//! (the agent programs the kernel over netlink itself).
//!
//! Topology: three containers of the project's `FROM scratch` workload image on a Docker
//! network the test creates (`--internal`, a 10.78.x.0/24 subnet of its own, removed on drop):
//! `web` (the target), `other` (a second container that must stay unaffected) and `peer`.
//! Evidence is the test's own: a throughput client and TCP connects made by threads of the
//! test process that `setns(2)` into a container's namespace, a listener the test binds in
//! `peer`'s namespace, and `tc`/`nft` run by the test through `nsenter` (tools are fine in the
//! test, not in the agent).
//!
//! Margins: rates within 0.8–1.1 MB/s for 8 mbit (payload ~96 % of the wire rate, tbf's bucket
//! and a loaded 2-core machine), unaffected traffic at least 3× faster; a partition's connect
//! must time out (700 ms) where the rule applies and succeed elsewhere.
//!
//! Needs root, Docker and nsenter/tc/nft for the test's own observations: skips without them,
//! fails under CI (`faultline_tests::in_ci`).
#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers: a panic is the failure report
#![allow(clippy::disallowed_methods)] // std::thread::sleep in synchronous polling helpers

use std::io::ErrorKind;
use std::process::Command;
use std::time::{Duration, Instant};

use faultline_tests::chaos::{Bg, Scratch, wait_until};
use faultline_tests::docker::{Container, Topology, docker_available, pid_of};
use faultline_tests::netns::{
    assert_8mbit_against, exec_in_netns_of, netem_available_at, nft_ruleset_of, of_pid,
    require_observation_tools, tc_tree_of,
};
use nix::sys::signal::Signal;

/// A `PATH` where no `tc`, `nft` or `ip` can be found.
const NO_TOOLS: [(&str, &str); 1] = [("PATH", "/nonexistent-faultline-no-tools")];

fn available(test: &str) -> bool {
    require_observation_tools() && docker_available(test)
}

fn text(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The qdiscs, classes and filters on `eth0` inside `pid`'s namespace, as the test sees them.
fn tc_tree(pid: i32) -> String {
    tc_tree_of(pid, "eth0")
}

fn nft_ruleset(pid: i32) -> String {
    nft_ruleset_of(pid)
}

fn applied(s: &Scratch, kind: &str, bg: &Bg) {
    assert!(
        s.wait_applied(kind, Duration::from_secs(15)).is_some(),
        "{kind} not applied: {}",
        bg.stderr()
    );
}

fn stop(bg: Bg) {
    bg.stop_ok(Duration::from_secs(10));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_by_container_limits_that_container_and_not_a_second_one_without_tc() {
    let test = "rate_limit_by_container";
    if !available(test) {
        return;
    }
    let t = Topology::start("rate").await;
    let before = t.throughput(t.web_pid, 7101, 4_000_000);
    let s = Scratch::new("");
    let web = t.web.name.clone();
    let args = [
        "fault",
        "inject",
        "rate-limit",
        "--container",
        &web,
        "--rate",
        "8mbit",
        "--duration",
        "60s",
    ];
    let bg = s.spawn_env("rate", &args, &NO_TOOLS);
    applied(&s, "rate-limit", &bg);
    let entry = &s.journal_entries()[0];
    let ns = &entry["record"]["state"]["ns"];
    assert_eq!(
        ns["pid"], t.web_pid,
        "found through the container's pid: {entry}"
    );
    let inode = std::fs::metadata(format!("/proc/{}/ns/net", t.web_pid)).unwrap();
    assert_eq!(
        ns["inode"],
        std::os::unix::fs::MetadataExt::ino(&inode),
        "recorded by inode"
    );
    assert!(
        tc_tree(t.web_pid).contains("qdisc tbf"),
        "{}",
        tc_tree(t.web_pid)
    );
    assert!(
        !tc_tree(t.other_pid).contains("tbf") && !tc_tree(t.peer_pid).contains("tbf"),
        "the fault reached another namespace"
    );
    let limited = t.throughput(t.web_pid, 7102, 1_500_000);
    let other = t.throughput(t.other_pid, 7103, 4_000_000);
    eprintln!("web before: {:.1} MB/s", before / 1e6);
    assert_8mbit_against(limited, other, "web, and the other container");
    stop(bg);
    assert!(
        !tc_tree(t.web_pid).contains("tbf"),
        "{}",
        tc_tree(t.web_pid)
    );
    let after = t.throughput(t.web_pid, 7104, 4_000_000);
    assert!(
        after > 3.0 * limited,
        "still limited after revert: {after:.0} B/s"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partition_by_container_drops_exactly_the_selected_traffic() {
    let test = "partition_by_container";
    if !available(test) {
        return;
    }
    let t = Topology::start("part").await;
    let _cut = t.listen_on_peer(7201);
    let _open = t.listen_on_peer(7202);
    let wait = Duration::from_millis(700);
    let s = Scratch::new("");
    let (web, dest) = (t.web.name.clone(), t.peer_ip().to_string());
    let args = [
        "fault",
        "inject",
        "partition",
        "--container",
        &web,
        "--dest",
        &dest,
        "--port",
        "7201",
        "--protocol",
        "tcp",
        "--duration",
        "60s",
    ];
    let bg = s.spawn_env("part", &args, &NO_TOOLS);
    applied(&s, "partition", &bg);
    let e = t
        .connect(t.web_pid, 7201, wait)
        .expect_err("web → peer:7201 must be cut");
    assert_eq!(e.kind(), ErrorKind::TimedOut, "{e}");
    t.connect(t.web_pid, 7202, wait)
        .expect("web → peer:7202 is not selected");
    t.connect(t.other_pid, 7201, wait)
        .expect("other → peer:7201 is another namespace");
    let rules = nft_ruleset(t.web_pid);
    assert!(rules.contains("table inet faultline_partition_"), "{rules}");
    assert!(
        rules.contains(&format!("ip daddr {dest} tcp dport 7201 drop")),
        "nft lists the rule as written: {rules}"
    );
    assert!(!nft_ruleset(t.other_pid).contains("faultline"));
    stop(bg);
    t.connect(t.web_pid, 7201, wait)
        .expect("7201 works after revert");
    assert!(!nft_ruleset(t.web_pid).contains("faultline"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn netem_by_container_delays_or_is_refused_naming_sch_netem() {
    let test = "netem_by_container";
    if !available(test) {
        return;
    }
    let t = Topology::start("netem").await;
    let _l = t.listen_on_peer(7301);
    let s = Scratch::new("");
    let web = t.web.name.clone();
    let args = [
        "fault",
        "inject",
        "netem",
        "--container",
        &web,
        "--delay",
        "100ms",
        "--duration",
        "60s",
    ];
    if !netem_available_at(&of_pid(t.peer_pid)) {
        let out = s.run(&args);
        let err = text(&out);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(err.contains("sch_netem"), "names the module: {err}");
        assert!(s.journal_entries().is_empty());
        assert!(!tc_tree(t.web_pid).contains("netem"));
        println!("NOT TESTED here: sch_netem missing (the refusal was checked instead)");
        return;
    }
    // A TCP handshake from web: its SYN leaves through web's eth0, so it carries the delay.
    let rtt = || {
        let started = Instant::now();
        let _c = t.connect(t.web_pid, 7301, Duration::from_secs(3)).unwrap();
        started.elapsed()
    };
    let bg = s.spawn_env("netem", &args, &NO_TOOLS);
    applied(&s, "netem", &bg);
    let delayed = rtt();
    assert!(
        delayed >= Duration::from_millis(95),
        "handshake took {delayed:?}"
    );
    stop(bg);
    assert!(rtt() < Duration::from_millis(50));
}

/// An htb tree of the test's own on `eth0` of `pid`'s namespace: root 1: (default 10), class
/// 1:1, classes 1:10 and 1:20, a pfifo under 1:20 and a u32 filter to it.
fn configure_htb(pid: i32) {
    for cmd in [
        "qdisc add dev eth0 root handle 1: htb default 10",
        "class add dev eth0 parent 1: classid 1:1 htb rate 100mbit",
        "class add dev eth0 parent 1:1 classid 1:10 htb rate 50mbit ceil 100mbit",
        "class add dev eth0 parent 1:1 classid 1:20 htb rate 10mbit",
        "qdisc add dev eth0 parent 1:20 handle 20: pfifo limit 50",
        "filter add dev eth0 parent 1: protocol ip prio 1 u32 match ip dst 10.99.0.0/24 flowid 1:20",
    ] {
        let args: Vec<&str> = cmd.split(' ').collect();
        let out = exec_in_netns_of(pid, "tc", &args);
        assert!(out.status.success(), "tc {cmd}: {}", text(&out));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configured_htb_tree_comes_back_byte_for_byte_after_revert_and_after_sigkill() {
    let test = "configured_root_is_restored";
    if !available(test) {
        return;
    }
    let t = Topology::start("snap").await;
    configure_htb(t.web_pid);
    let original = tc_tree(t.web_pid);
    assert!(original.contains("qdisc htb 1: root") && original.contains("class htb 1:20"));
    let s = Scratch::new("");
    let web = t.web.name.clone();
    let args = [
        "fault",
        "inject",
        "rate-limit",
        "--container",
        &web,
        "--rate",
        "8mbit",
        "--duration",
        "60s",
    ];
    // A clean revert (SIGTERM), then a crash (SIGKILL) and `fault revert --all`.
    for crash in [false, true] {
        let bg = s.spawn_env(if crash { "crash" } else { "clean" }, &args, &NO_TOOLS);
        applied(&s, "rate-limit", &bg);
        let during = tc_tree(t.web_pid);
        assert!(
            during.contains("qdisc tbf") && !during.contains("htb 1:"),
            "{during}"
        );
        let entry = &s.journal_entries()[0];
        assert!(
            entry["record"]["state"]["snapshot"]["qdiscs"].is_array(),
            "the tree is journaled: {entry}"
        );
        if crash {
            let mut bg = bg;
            bg.signal(Signal::SIGKILL);
            bg.wait_exit(Duration::from_secs(5)).expect("killed");
            assert!(
                tc_tree(t.web_pid).contains("qdisc tbf"),
                "the fault outlives its injector"
            );
            let mut revert = s.command(&["fault", "revert", "--all"]);
            revert.envs(NO_TOOLS);
            let out = revert.output().unwrap();
            assert!(out.status.success(), "{}", text(&out));
        } else {
            stop(bg);
        }
        let back = tc_tree(t.web_pid);
        assert_eq!(
            back, original,
            "crash={crash}: the tree differs after revert"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkilled_injectors_are_reverted_within_a_second_and_a_removed_container_counts_as_reverted()
 {
    let test = "sigkilled_container_faults";
    if !available(test) {
        return;
    }
    let t = Topology::start("crash").await;
    let _l = t.listen_on_peer(7401);
    let s = Scratch::new("");
    let (web, other, dest) = (
        t.web.name.clone(),
        t.other.name.clone(),
        t.peer_ip().to_string(),
    );
    let mut part = s.spawn_env(
        "part",
        &[
            "fault",
            "inject",
            "partition",
            "--container",
            &web,
            "--dest",
            &dest,
            "--duration",
            "60s",
        ],
        &NO_TOOLS,
    );
    applied(&s, "partition", &part);
    let mut rate = s.spawn_env(
        "rate",
        &[
            "fault",
            "inject",
            "rate-limit",
            "--container",
            &web,
            "--rate",
            "1mbit",
            "--duration",
            "60s",
        ],
        &NO_TOOLS,
    );
    applied(&s, "rate-limit", &rate);
    let mut gone = s.spawn_env(
        "gone",
        &[
            "fault",
            "inject",
            "rate-limit",
            "--container",
            &other,
            "--rate",
            "1mbit",
            "--duration",
            "60s",
        ],
        &NO_TOOLS,
    );
    assert!(
        wait_until(Duration::from_secs(15), || s.journal_entries().len() == 3
            && s.journal_entries().iter().all(|e| e["phase"] == "applied")),
        "{}",
        gone.stderr()
    );
    for bg in [&mut part, &mut rate, &mut gone] {
        bg.signal(Signal::SIGKILL);
        bg.wait_exit(Duration::from_secs(5)).expect("killed");
    }
    assert!(nft_ruleset(t.web_pid).contains("faultline_"));
    assert!(tc_tree(t.web_pid).contains("qdisc tbf"));
    // `other` is removed while its fault is journaled: its namespace is gone with it.
    let other_pid = t.other_pid;
    let rm = Command::new("docker")
        .args(["rm", "-f", &t.other.id])
        .output()
        .unwrap();
    assert!(rm.status.success(), "{}", text(&rm));
    assert!(wait_until(Duration::from_secs(10), || {
        !std::path::Path::new(&format!("/proc/{other_pid}")).exists()
    }));

    let started = Instant::now();
    let mut revert = s.command(&["fault", "revert", "--all"]);
    revert.envs(NO_TOOLS);
    let out = revert.output().unwrap();
    let took = started.elapsed();
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        report.matches(": reverted").count(),
        3,
        "all three: {report}"
    );
    assert!(!nft_ruleset(t.web_pid).contains("faultline"));
    assert!(!tc_tree(t.web_pid).contains("tbf"));
    assert!(took < Duration::from_secs(1), "revert --all took {took:?}");
    assert!(s.journal_entries().is_empty());
    t.connect(t.web_pid, 7401, Duration::from_secs(1))
        .expect("web reaches peer again");
    eprintln!("revert --all after SIGKILL: {took:?}");
}

/// A network fault by `--container` goes through the container guards like a container
/// fault: a container of a pod in a protected namespace (`kube-system` by default, named by
/// the kubelet's labels) is refused naming the guard, and nothing is installed in its
/// namespace.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_network_fault_on_a_protected_namespaces_container_is_refused_naming_the_guard() {
    let test = "network_fault_protected_namespace";
    if !available(test) {
        return;
    }
    let labels: Vec<String> = [
        "io.kubernetes.pod.namespace=kube-system",
        "io.kubernetes.pod.name=coredns-0",
        "io.kubernetes.container.name=coredns",
    ]
    .iter()
    .flat_map(|l| ["--label".to_owned(), (*l).to_owned()])
    .collect();
    let system = Container::run("netguard-system", &labels, &["--listen", "0.0.0.0:7000"]).await;
    system.wait_ready(Duration::from_secs(20)).await;
    let pid = pid_of(&system).await;
    let before = tc_tree(pid);
    let s = Scratch::new("");
    let out = s.run(&[
        "fault",
        "inject",
        "rate-limit",
        "--container",
        &system.name,
        "--rate",
        "8mbit",
        "--duration",
        "60s",
    ]);
    let err = text(&out);
    assert_eq!(out.status.code(), Some(3), "refused by a guard: {err}");
    assert!(
        err.contains("protected-namespace"),
        "names the guard: {err}"
    );
    assert!(err.contains("kube-system"), "names the namespace: {err}");
    assert!(s.journal_entries().is_empty());
    assert_eq!(
        tc_tree(pid),
        before,
        "nothing installed in the container's namespace"
    );
}
