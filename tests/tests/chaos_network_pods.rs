//! Kernel network faults on CRI pods picked by pod selectors, through the real `faultline`
//! binary (CLI with a `PATH` without `tc`, `nft` or `ip`, and a running agent's API), against
//! a real containerd the test starts itself with a pod network of its own
//! (`Containerd::start_with_pod_network`: containerd and the CNI bridge live in a network
//! namespace the test created — the pods' "node" — and every pod gets a namespace of its own
//! on that bridge; nothing is changed in the host's namespace).
//!
//! Pods, in a Kubernetes namespace of the test's own: `web-0` (`app=web`, two containers
//! sharing the pod's namespace: `app` and `sidecar`), `api-0` (`app=api`) and, in
//! `kube-system`, `dns-0`. Evidence is the test's own: a throughput client and TCP connects
//! made by threads of the test process that `setns(2)` into a pod's namespace, listeners the
//! test binds in the node's namespace ([`NODE_IP`]), and `tc`/`nft` run by the test through
//! `nsenter` in a pod's namespace.
//!
//! - A label that matches nothing is refused naming the selector; a `kube-system` pod is
//!   refused naming the `protected-namespace` guard (tc and nftables kinds), nothing installed.
//! - At once: `rate-limit --label app=web --rate 8mbit` shapes web's traffic to the node
//!   (0.8–1.1 MB/s: payload ~96 % of the wire rate, tbf's bucket, a loaded 2-core machine)
//!   while api's is at least 3× faster; its journal record holds web's namespace once (two
//!   containers, one namespace). And `partition --pod api-0 --dest NODE --port P1` makes api's
//!   connects to P1 time out (700 ms) while api → P2 and web → P1 connect.
//! - Through the API (`POST /v1/faults`, the same fields in JSON): a rate limit and a
//!   partition on every pod of the namespace (two namespaces each); the agent is SIGKILLed,
//!   api's pod is removed meanwhile, and the restarted agent's journal recovery takes every
//!   rule out of web's namespace within 1 s of the restart (measured from the spawn by the
//!   test's own polling; the revert is a few netlink requests and the start of `faultline run`
//!   takes ~0.1 s here, so 1 s is a margin of about 5×), counting the gone namespace as
//!   reverted.
//!
//! Needs root, containerd, runc, the CNI plugins, Docker (to build the image) and
//! nsenter/tc/nft for the test's own observations: skips without them, fails under CI.
// A test binary: a panic *is* the failure report.
#![allow(clippy::expect_used, clippy::unwrap_used)]
#![allow(clippy::disallowed_methods)] // std::thread::sleep in synchronous polling helpers

use std::io::ErrorKind;
use std::net::SocketAddr;
use std::os::unix::fs::MetadataExt;
use std::time::{Duration, Instant};

use faultline_tests::api::{OPERATOR, http, start_agent, write_tokens};
use faultline_tests::chaos::{Bg, Scratch, wait_until};
use faultline_tests::containerd::{Containerd, IMAGE, NODE_IP, TestPod};
use faultline_tests::netns::{
    assert_8mbit_against, connect_from, listen_in, nft_ruleset_of, of_pid,
    require_observation_tools, tc_tree_of, throughput,
};
use serde_json::{Value, json};

const TEST: &str = "network_faults_by_pod_selectors_on_a_real_containerd";

/// A `PATH` where no `tc`, `nft` or `ip` can be found.
const NO_TOOLS: [(&str, &str); 1] = [("PATH", "/nonexistent-faultline-no-tools")];

/// How long a connect the partition drops is given before it counts as cut.
const CUT: Duration = Duration::from_millis(700);

fn text(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// One pod as the test sees it: a process of it and its network namespace's inode.
struct Seen {
    pid: i32,
    path: String,
    inode: u64,
}

impl Seen {
    fn of(pod: &TestPod) -> Self {
        let pid = *pod
            .pids()
            .first()
            .unwrap_or_else(|| panic!("{}: no process", pod.name));
        let path = of_pid(pid);
        let inode = std::fs::metadata(&path).unwrap().ino();
        Seen { pid, path, inode }
    }

    fn tc(&self) -> String {
        tc_tree_of(self.pid, "eth0")
    }

    fn nft(&self) -> String {
        nft_ruleset_of(self.pid)
    }

    /// Bytes per second from this pod to a receiver in the node's namespace on `port`.
    fn throughput(&self, node: &str, port: u16, bytes: usize) -> f64 {
        throughput(&self.path, node, SocketAddr::from((NODE_IP, port)), bytes)
    }

    fn connect(&self, port: u16) -> std::io::Result<std::net::TcpStream> {
        connect_from(&self.path, SocketAddr::from((NODE_IP, port)), CUT)
    }
}

/// Everything the cases share.
struct Pods<'a> {
    socket: String,
    ns: String,
    node: String,
    web: Seen,
    api: Seen,
    api_pod: &'a TestPod,
    dns: Seen,
}

impl Pods<'_> {
    /// `fault inject <kind…> --cri-socket <this test's containerd> <select…> --duration D`.
    fn inject<'a>(
        &'a self,
        kind: &[&'a str],
        select: &[&'a str],
        duration: &'a str,
    ) -> Vec<&'a str> {
        let mut args = vec!["fault", "inject"];
        args.extend_from_slice(kind);
        args.extend_from_slice(&["--cri-socket", &self.socket]);
        args.extend_from_slice(select);
        args.extend_from_slice(&["--duration", duration]);
        args
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn network_faults_by_pod_selectors_on_a_real_containerd() {
    let started = Instant::now();
    if !require_observation_tools() {
        return;
    }
    let Some(containerd) = Containerd::start_with_pod_network(TEST).await else {
        return;
    };
    let ns = format!("faultline-net-{}", std::process::id());
    let web = containerd
        .run_pod_containers(
            IMAGE,
            &ns,
            "web-0",
            "web",
            &[("app", &[]), ("sidecar", &[])],
        )
        .await;
    let api = containerd.run_pod(&ns, "api-0", "api", "app", &[]).await;
    let dns = containerd
        .run_pod("kube-system", "dns-0", "dns", "dns", &[])
        .await;
    let node = containerd.pod_network().unwrap().node.path();
    let pods = Pods {
        socket: containerd.socket().display().to_string(),
        ns,
        node,
        web: Seen::of(&web),
        api: Seen::of(&api),
        api_pod: &api,
        dns: Seen::of(&dns),
    };
    // The premise: each pod its own namespace, shared by its containers, none the host's.
    let sidecar = *web.pids_of(&web.sidecars[0]).first().unwrap();
    let sidecar_inode = std::fs::metadata(of_pid(sidecar)).unwrap().ino();
    let own = std::fs::metadata("/proc/self/ns/net").unwrap().ino();
    assert_eq!(
        sidecar_inode, pods.web.inode,
        "web's containers share one namespace"
    );
    assert!(pods.web.inode != pods.api.inode && pods.api.inode != own && pods.web.inode != own);
    eprintln!("pods ready after {:?}", started.elapsed());

    nothing_matched_and_kube_system_are_refused(&pods);
    let t = Instant::now();
    label_rate_limit_and_pod_partition_hit_only_their_pods(&pods);
    eprintln!("rate-limit and partition cases: {:?}", t.elapsed());
    let t = Instant::now();
    sigkilled_agent_restarts_and_reverts_every_namespace(&containerd, &pods).await;
    eprintln!("SIGKILL case: {:?}", t.elapsed());
    eprintln!("test body done after {:?}", started.elapsed());
}

fn nothing_matched_and_kube_system_are_refused(p: &Pods<'_>) {
    let s = Scratch::new("");
    let node_ip = NODE_IP.to_string();
    let rate_limit = ["rate-limit", "--rate", "8mbit"];
    let out = s.run(&p.inject(
        &rate_limit,
        &["--namespace", &p.ns, "--label", "app=nope"],
        "30s",
    ));
    let err = text(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("no running container matches the selector")
            && err.contains(&format!("[namespace={} label app=nope]", p.ns)),
        "names the selector: {err}"
    );
    let (tc_before, nft_before) = (p.dns.tc(), p.dns.nft());
    for kind in [&rate_limit[..], &["partition", "--dest", &node_ip]] {
        let args = p.inject(
            kind,
            &["--namespace", "kube-system", "--pod", "dns-0"],
            "30s",
        );
        let out = s.run(&args);
        let err = text(&out);
        assert_eq!(out.status.code(), Some(3), "{}: {err}", kind[0]);
        assert!(
            err.contains("refused by guard protected-namespace")
                && err.contains("kube-system/dns-0"),
            "{}: names the guard and the pod: {err}",
            kind[0]
        );
    }
    assert_eq!(
        p.dns.tc(),
        tc_before,
        "nothing installed in dns-0's namespace"
    );
    assert_eq!(
        p.dns.nft(),
        nft_before,
        "nothing installed in dns-0's namespace"
    );
    assert!(s.journal_entries().is_empty());
}

fn applied(s: &Scratch, kind: &str, bg: &Bg) -> Value {
    s.wait_applied(kind, Duration::from_secs(20))
        .unwrap_or_else(|| panic!("{kind} not applied: {}", bg.stderr()))
}

fn stop(bg: Bg) {
    bg.stop_ok(Duration::from_secs(15));
}

fn label_rate_limit_and_pod_partition_hit_only_their_pods(p: &Pods<'_>) {
    let s = Scratch::new("");
    let node_ip = NODE_IP.to_string();
    let rate = s.spawn_env(
        "rate",
        &p.inject(
            &["rate-limit", "--rate", "8mbit"],
            &["--namespace", &p.ns, "--label", "app=web"],
            "60s",
        ),
        &NO_TOOLS,
    );
    let part = s.spawn_env(
        "part",
        &p.inject(
            &[
                "partition",
                "--dest",
                &node_ip,
                "--port",
                "7611",
                "--protocol",
                "tcp",
            ],
            &["--namespace", &p.ns, "--pod", "api-0"],
            "60s",
        ),
        &NO_TOOLS,
    );
    let entry = applied(&s, "rate-limit", &rate);
    applied(&s, "partition", &part);
    // The test's own evidence first: the traffic, then the rules as tc and nft list them.
    let _cut = listen_in(&p.node, 7611);
    let _open = listen_in(&p.node, 7612);
    let (web_rate, api_rate) = std::thread::scope(|sc| {
        let rates = sc.spawn(|| {
            (
                p.web.throughput(&p.node, 7601, 1_500_000),
                p.api.throughput(&p.node, 7602, 4_000_000),
            )
        });
        let e = p
            .api
            .connect(7611)
            .expect_err("api → node:7611 must be cut");
        assert_eq!(e.kind(), ErrorKind::TimedOut, "{e}");
        p.api
            .connect(7612)
            .expect("api → node:7612 is not selected");
        p.web
            .connect(7611)
            .expect("web → node:7611 is another pod's namespace");
        rates.join().unwrap()
    });
    assert_8mbit_against(web_rate, api_rate, "web by its label, and api");
    assert!(p.web.tc().contains("qdisc tbf"), "{}", p.web.tc());
    assert!(
        !p.api.tc().contains("tbf"),
        "the rate limit reached api: {}",
        p.api.tc()
    );
    let rules = p.api.nft();
    assert!(
        rules.contains(&format!("ip daddr {node_ip} tcp dport 7611 drop")),
        "{rules}"
    );
    assert!(
        !p.web.nft().contains("faultline"),
        "the partition reached web"
    );

    // And the record: web's two containers matched; its namespace is acted in once, found
    // through a process of the pod and recorded by inode and pod.
    let ns = &entry["record"]["state"]["ns"];
    assert_eq!(ns["inode"], p.web.inode, "web's namespace, once: {entry}");
    assert_eq!(ns["pod"]["name"], "web-0", "{entry}");
    assert_eq!(
        entry["targets"].as_array().map(Vec::len),
        Some(1),
        "{entry}"
    );
    assert_eq!(
        entry["selection"]["matched"].as_array().map(Vec::len),
        Some(2),
        "app and sidecar: {entry}"
    );
    stop(rate);
    stop(part);
    assert!(!p.web.tc().contains("tbf"), "{}", p.web.tc());
    assert!(!p.api.nft().contains("faultline"), "{}", p.api.nft());
    p.api.connect(7611).expect("api → node:7611 after revert");
    assert!(s.journal_entries().is_empty());
}

async fn sigkilled_agent_restarts_and_reverts_every_namespace(
    containerd: &Containerd,
    p: &Pods<'_>,
) {
    let dir = tempfile::tempdir().unwrap();
    let tokens = write_tokens(dir.path());
    let (mut agent, addr) = start_agent(&tokens, "", "");
    let post = |spec: Value| {
        let (status, body) = http(
            &addr,
            "POST",
            "/v1/faults",
            Some(OPERATOR),
            &spec.to_string(),
        );
        assert_eq!(status, 201, "{spec}: {body}");
        serde_json::from_str::<Value>(&body).unwrap()
    };
    let every_pod = json!({"cri_socket": p.socket, "namespace": p.ns, "duration": "60s"});
    let with = |extra: Value| {
        let mut spec = every_pod.clone();
        spec.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        spec
    };
    let rate = post(with(json!({"kind": "rate-limit", "rate": "1mbit"})));
    let part = post(with(
        json!({"kind": "partition", "dest": [NODE_IP.to_string()], "port": [7621]}),
    ));
    for fault in [&rate, &part] {
        // Three containers matched (web's two, api's one) in two namespaces.
        assert_eq!(
            fault["selection"]["picked"].as_array().map(Vec::len),
            Some(3),
            "{fault}"
        );
        let targets = fault["targets"].to_string();
        assert_eq!(
            fault["targets"].as_array().map(Vec::len),
            Some(2),
            "{targets}"
        );
        assert!(
            targets.contains(&format!("pod {}/web-0", p.ns))
                && targets.contains(&format!("pod {}/api-0", p.ns)),
            "{targets}"
        );
    }
    for pod in [&p.web, &p.api] {
        assert!(pod.tc().contains("qdisc tbf"), "{}", pod.tc());
        assert!(pod.nft().contains("faultline_partition_"), "{}", pod.nft());
    }
    agent.kill().await;
    let journal = faultline_tests::chaos::journal_entries(&agent.dir().join("state"));
    assert_eq!(journal.len(), 2, "{journal:?}");
    for entry in &journal {
        let namespaces = entry["record"]["state"]["namespaces"].as_array();
        assert_eq!(namespaces.map(Vec::len), Some(2), "{entry}");
    }
    assert!(
        p.web.tc().contains("qdisc tbf"),
        "the faults outlive the agent"
    );
    // api's pod goes while its faults are journaled: its namespace goes with it.
    containerd.remove_pod(p.api_pod).await;
    let api_pid = p.api.pid;
    assert!(
        wait_until(Duration::from_secs(10), || !std::path::Path::new(&format!(
            "/proc/{api_pid}"
        ))
        .exists()),
        "api's processes outlive its pod"
    );

    let restarted = Instant::now();
    agent.restart();
    let clean = wait_until(Duration::from_secs(10), || {
        !p.web.tc().contains("tbf") && !p.web.nft().contains("faultline")
    });
    let took = restarted.elapsed();
    assert!(
        clean,
        "rules left in web's namespace:\n{}{}",
        p.web.tc(),
        p.web.nft()
    );
    eprintln!("SIGKILL + restart: every rule gone from web's namespace {took:?} after the restart");
    assert!(took < Duration::from_secs(1), "took {took:?}");
    assert!(
        wait_until(Duration::from_secs(10), || {
            faultline_tests::chaos::journal_entries(&agent.dir().join("state")).is_empty()
        }),
        "{}",
        agent.stderr()
    );
    // The agent logs each recovered fault after it has emptied the journal: wait for both.
    assert!(
        wait_until(Duration::from_secs(10), || {
            agent.stderr().matches("fault recovered: reverted").count() == 2
        }),
        "both faults, the removed pod's namespace counted as reverted: {}",
        agent.stderr()
    );
    let log = agent.stderr();
    assert!(
        log.contains(&format!("the netns of pod {}/api-0", p.ns)) && log.contains("is gone"),
        "the removed pod's namespace is reported: {log}"
    );
    let _l = listen_in(&p.node, 7621);
    p.web.connect(7621).expect("web reaches the node again");
    drop(agent);
}

/// The drill that docs/DEPLOY.md gives for 100 ms between two pods is a valid scenario as it
/// stands, and picks its pods by selectors.
#[test]
fn the_deploy_docs_drill_between_two_pods_validates() {
    let docs =
        std::fs::read_to_string(faultline_tests::deploy::deploy_dir().join("../docs/DEPLOY.md"))
            .unwrap();
    let start = docs
        .find("# web-db-latency.yaml")
        .expect("docs/DEPLOY.md has the web-db-latency drill");
    let block = &docs[start..];
    let block = &block[..block.find("```").expect("the code block ends")];
    assert!(
        block.contains("kind: netem") && block.contains("label:") && block.contains("delay: 100ms"),
        "{block}"
    );
    let s = Scratch::new("");
    let file = s.path().join("web-db-latency.yaml");
    std::fs::write(&file, block).unwrap();
    let out = s.run(&["drill", "validate", &file.display().to_string()]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("ok (scenario web-db-latency)"),
        "{}",
        text(&out)
    );
}
