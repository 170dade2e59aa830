//! The shipped image, run the way the shipped DaemonSet runs it, proves the image and its
//! mounts work: the image comes from `deploy/docker/build-local.sh` (static binary, FROM
//! scratch), and the `docker run` arguments are derived from `deploy/kubernetes/daemonset.yaml`
//! itself — host PID and network namespaces, every hostPath mount at its mountPath with its
//! read-only flag (the host root with rslave propagation), read-only root filesystem, the
//! user, `--cap-drop=ALL` plus exactly the listed capabilities, no-new-privileges — and the
//! config from `deploy/kubernetes/configmap.yaml` with only what a test must change (OTLP to
//! the test's receiver on 127.0.0.1, one-second cycles, Docker names since this host's
//! runtime is Docker). The state hostPath is replaced by a temporary directory.
//!
//! Asserted: the agent reports the HOST (host.id = the host's /etc/machine-id,
//! system.memory.limit = the host's MemTotal, the process count near the host's own count,
//! the host's network interfaces), a sibling container of the test as its own resource with
//! its Docker name, and a process fault (pause of a process the test started on the host) and
//! a disk fault (fill of a tmpfs the test mounted and passed in read-write, as the DaemonSet's
//! fill example does) apply and revert from inside the container (`docker exec`).
//!
//! Network faults from the image, with only the DaemonSet's capabilities, hostPID and mounts,
//! against containers of the test's own on a Docker network of their own (`web`, a second
//! container `other`, and `peer`; `faultline_tests::docker::Topology`), each found through the
//! Docker socket under `/host/run` and acted on in its own network namespace:
//! `rate-limit --container web --rate 8mbit` holds web's traffic to peer at 0.8–1.1 MB/s as the
//! test's own client measures it from inside web's namespace (payload ~96 % of the wire rate,
//! tbf's bucket, a loaded machine), while other's is at least 3× faster; `partition --container
//! web --dest peer --port P1` makes web's connects to P1 time out (700 ms) while web → P2 and
//! other → P1 connect; `netem --delay 100ms` adds at least 95 ms to a TCP handshake where the
//! kernel has `sch_netem`, and is refused naming `sch_netem` where it has not (this machine).
//! Both kernel faults are reverted from inside (`fault revert --all`, the agent's kill switch).
//! The image's filesystem (`docker export`) holds no `tc`, `nft` or `ip`.
//!
//! Safety: only the test's own processes, tmpfs, containers and their network namespaces are
//! touched; all are removed on drop, also on failure. Needs root (tmpfs), Docker and
//! nsenter/tc/nft (the test's own observations); skips without them, fails under CI.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers: a panic is the failure report

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use faultline_tests::chaos::{Tmpfs, Victim, is_root, require, state, wait_until};
use faultline_tests::deploy::{DockerRun, agent_image, deploy_dir, find_kind, yaml_docs};
use faultline_tests::docker::{Container, Topology, docker_available};
use faultline_tests::netns::{
    assert_8mbit_against, netem_available_at, nft_ruleset_of, of_pid, require_observation_tools,
    tc_tree_of,
};
use faultline_tests::{OtlpReceiver, Received};
use serde_json::{Value, json};

/// The docker run arguments the DaemonSet's pod spec stands for.
struct PodRun {
    /// Everything before the image.
    args: Vec<String>,
    caps: Vec<String>,
    /// The container's args (after the image).
    cmd: Vec<String>,
}

/// `stand_ins` holds empty directories for `DirectoryOrCreate` host paths this machine does
/// not have (the kubelet would make them on the node; the test does not make them here).
fn pod_run(
    ds: &Value,
    config_dir: &Path,
    state_dir: &Path,
    tokens_dir: &Path,
    fill: &Path,
    stand_ins: &Path,
) -> PodRun {
    let pod = &ds["spec"]["template"]["spec"];
    let c = &pod["containers"][0];
    let sc = &c["securityContext"];
    let mut args: Vec<String> = Vec::new();
    assert_eq!(pod["hostPID"], true);
    args.push("--pid=host".into());
    if pod["hostNetwork"] == true {
        // Also how the container reaches the receiver on 127.0.0.1.
        args.push("--network=host".into());
    }
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    args.push("--read-only".into());
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    args.push("--security-opt=no-new-privileges".into());
    assert_eq!(sc["privileged"], false);
    let user = format!(
        "{}:{}",
        sc["runAsUser"].as_i64().unwrap(),
        sc["runAsGroup"].as_i64().unwrap()
    );
    args.push(format!("--user={user}"));
    assert_eq!(sc["capabilities"]["drop"], json!(["ALL"]));
    args.push("--cap-drop=ALL".into());
    let caps: Vec<String> = sc["capabilities"]["add"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect();
    for cap in &caps {
        args.push(format!("--cap-add={cap}"));
    }
    for e in c["env"].as_array().unwrap() {
        let name = e["name"].as_str().unwrap();
        let value = match (e["value"].as_str(), name) {
            (Some(v), _) => v.to_owned(),
            (None, "NODE_NAME") => "deploy-test-node".to_owned(),
            (None, "HOST_IP" | "POD_IP") => "127.0.0.1".to_owned(),
            // The downward API's pod identity (the agent-pod guard of container faults).
            (None, "POD_NAMESPACE") => "faultline".to_owned(),
            (None, "POD_NAME") => "faultline-deploy-test".to_owned(),
            (None, other) => panic!("env {other}: no stand-in for {e}"),
        };
        args.push(format!("--env={name}={value}"));
    }
    for v in pod["volumes"].as_array().unwrap() {
        let name = v["name"].as_str().unwrap();
        let Some(m) = c["volumeMounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["name"] == name)
        else {
            continue;
        };
        let dst = m["mountPath"].as_str().unwrap();
        let ro = m["readOnly"] == true;
        let src = if name == "config" {
            config_dir.to_path_buf()
        } else if name == "state" {
            state_dir.to_path_buf()
        } else if v["hostPath"].is_object() {
            let path = Path::new(v["hostPath"]["path"].as_str().unwrap());
            if v["hostPath"]["type"] == "DirectoryOrCreate" && !path.exists() {
                let empty = stand_ins.join(name);
                std::fs::create_dir_all(&empty).unwrap();
                empty
            } else {
                path.to_path_buf()
            }
        } else if v["secret"]["secretName"] == "faultline-api-tokens" {
            tokens_dir.to_path_buf()
        } else {
            panic!("volume {name}: no stand-in for {v}");
        };
        let mut mount = format!("--mount=type=bind,src={},dst={dst}", src.display());
        if ro {
            mount.push_str(",readonly");
        }
        if m["mountPropagation"] == "HostToContainer" {
            if propagation_possible(&src) {
                mount.push_str(",bind-propagation=rslave");
            } else {
                // Docker refuses rslave from a private mount (systemd hosts, Kubernetes
                // nodes, make / shared; this machine's / is private).
                eprintln!(
                    "{} is a private mount here: HostToContainer propagation not reproduced",
                    src.display()
                );
            }
        }
        args.push(mount);
    }
    // The DaemonSet's commented disk-fill example: a node directory mounted read-write.
    args.push(format!(
        "--mount=type=bind,src={},dst=/host/fill/test",
        fill.display()
    ));
    let cmd = c["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_owned())
        .collect();
    PodRun { args, caps, cmd }
}

/// Whether the mount holding `path` (its mount point exactly) is shared or a slave, which
/// Docker's `bind-propagation=rslave` requires.
fn propagation_possible(path: &Path) -> bool {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    info.lines()
        .rfind(|l| l.split(' ').nth(4) == Some(&*path.to_string_lossy()))
        .is_some_and(|l| {
            let optional = l.split(" - ").next().unwrap_or("");
            optional.contains("shared:") || optional.contains("master:")
        })
}

fn resource_of(reqs: &[Received], pred: impl Fn(&Value) -> bool) -> Option<Value> {
    for r in reqs {
        for rm in &r.request.resource_metrics {
            let attrs: serde_json::Map<String, Value> = rm
                .resource
                .as_ref()
                .map(|res| {
                    faultline_tests::receiver::attribute_map(&res.attributes)
                        .into_iter()
                        .map(|(k, v)| (k, Value::String(v)))
                        .collect()
                })
                .unwrap_or_default();
            let attrs = Value::Object(attrs);
            if pred(&attrs) {
                return Some(attrs);
            }
        }
    }
    None
}

/// The status line of `GET path` on 127.0.0.1:`port` (HTTP/1.1, no keep-alive), or the error.
fn http_status(port: u64, path: &str) -> String {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", u16::try_from(port).unwrap()))
    else {
        return "connection refused".into();
    };
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    if s.write_all(req.as_bytes()).is_err() {
        return "write failed".into();
    }
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    String::from_utf8_lossy(&buf)
        .lines()
        .next()
        .unwrap_or("")
        .to_owned()
}

/// The real uid of `pid`.
fn owner(pid: i32) -> Option<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with("Uid:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

fn host_mem_total_bytes() -> f64 {
    let text = std::fs::read_to_string("/proc/meminfo").unwrap();
    let kib: f64 = text
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap();
    kib * 1024.0
}

fn host_process_count() -> usize {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .bytes()
                .all(|b| b.is_ascii_digit())
        })
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image_run_like_the_daemonset_reports_the_host_and_siblings_and_faults_revert() {
    let test = "image_run_like_the_daemonset";
    if !docker_available(test) || !require(is_root(), "root (tmpfs mount for the disk fault)") {
        return;
    }
    if !require_observation_tools() {
        return;
    }
    if !faultline_tests::deploy::python_modules_available(test, &["yaml"]) {
        return;
    }
    let ds_docs = yaml_docs(&deploy_dir().join("kubernetes/daemonset.yaml"));
    let ds = find_kind(&ds_docs, "DaemonSet");
    let cm_docs = yaml_docs(&deploy_dir().join("kubernetes/configmap.yaml"));
    let shipped = find_kind(&cm_docs, "ConfigMap")["data"]["faultline.yaml"]
        .as_str()
        .unwrap()
        .to_owned();

    let receiver = OtlpReceiver::start().await.unwrap();
    let config = faultline_tests::deploy::patch_yaml(
        &shipped,
        &json!({
            "interval": "1s",
            "host": {"scan_interval": "0s"},
            "containers": {"docker": {"enabled": true}, "kubelet": {"enabled": false}},
            "export": {"otlp": {"endpoint": receiver.grpc_endpoint(), "compression": "none"}},
        }),
    );
    let scratch = tempfile::tempdir().unwrap();
    let config_dir = scratch.path().join("config");
    let state_dir = scratch.path().join("state");
    std::fs::create_dir_all(&config_dir).unwrap();
    std::fs::create_dir_all(&state_dir).unwrap();
    std::fs::write(config_dir.join("faultline.yaml"), &config).unwrap();
    let tokens_dir = scratch.path().join("tokens");
    std::fs::create_dir_all(&tokens_dir).unwrap();
    std::fs::write(
        tokens_dir.join("tokens.yaml"),
        "- name: sre\n  role: operator\n  token: 0123456789abcdef0123\n",
    )
    .unwrap();
    let fill = Tmpfs::mount("16m");

    let sibling = Container::run("deploy-sibling", &[], &["--mem", "16MiB"]).await;
    sibling.wait_ready(Duration::from_secs(30)).await;

    let stand_ins = scratch.path().join("host-paths");
    let run = pod_run(
        ds,
        &config_dir,
        &state_dir,
        &tokens_dir,
        fill.path(),
        &stand_ins,
    );
    eprintln!(
        "docker run {} <image> {}",
        run.args.join(" "),
        run.cmd.join(" ")
    );
    let name = format!("faultline-test-{}-daemonset", std::process::id());
    let mut args = run.args.clone();
    args.push(agent_image().to_owned());
    args.extend(run.cmd.iter().cloned());
    let agent = DockerRun::start(&name, &args);

    // The host, not the container.
    let machine_id = std::fs::read_to_string("/etc/machine-id")
        .unwrap()
        .trim()
        .to_owned();
    let reqs = receiver
        .wait_for(
            |r| {
                resource_of(r, |a| a["host.id"] == machine_id.as_str()).is_some()
                    && r.iter()
                        .flat_map(Received::points)
                        .any(|p| p.name == "system.process.count")
                    && resource_of(r, |a| a["container.id"] == sibling.id.as_str()).is_some()
            },
            Duration::from_secs(60),
        )
        .await;
    let host = resource_of(&reqs, |a| a["host.id"] == machine_id.as_str()).unwrap();
    assert_eq!(host["k8s.node.name"], "deploy-test-node", "{host}");

    let points: Vec<_> = reqs.iter().flat_map(Received::points).collect();
    let last = |name: &str| -> f64 {
        points
            .iter()
            .rev()
            .find(|p| p.name == name && !p.resource.contains_key("container.id"))
            .unwrap_or_else(|| panic!("no {name}"))
            .value
    };
    let mem_limit = last("system.memory.limit");
    assert_eq!(mem_limit, host_mem_total_bytes(), "system.memory.limit");
    let newest = points
        .iter()
        .filter(|p| p.name == "system.process.count")
        .map(|p| p.time_unix_nano)
        .max()
        .unwrap();
    let procs: f64 = points
        .iter()
        .filter(|p| p.name == "system.process.count" && p.time_unix_nano == newest)
        .map(|p| p.value)
        .sum();
    let ours = host_process_count() as f64;
    // A container's own PID namespace would show a handful; the host has `ours` (± churn).
    assert!(
        (procs - ours).abs() <= (ours * 0.25).max(20.0),
        "system.process.count {procs} vs the host's {ours}"
    );
    let host_ifaces: Vec<String> = std::fs::read_to_string("/proc/net/dev")
        .unwrap()
        .lines()
        .skip(2)
        .filter_map(|l| l.split(':').next().map(|s| s.trim().to_owned()))
        .collect();
    let reported: std::collections::BTreeSet<&str> = points
        .iter()
        .filter(|p| p.name == "system.network.io")
        .filter_map(|p| {
            p.attributes
                .get("network.interface.name")
                .map(String::as_str)
        })
        .collect();
    for i in &host_ifaces {
        assert!(
            reported.contains(i.as_str()),
            "host interface {i} not reported: {reported:?}"
        );
    }

    // The probes: /healthz and /readyz on the port the DaemonSet's probes use (the API on the
    // node's address: POD_IP stands for it).
    let c = &ds["spec"]["template"]["spec"]["containers"][0];
    let port = c["ports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == c["livenessProbe"]["httpGet"]["port"])
        .unwrap()["containerPort"]
        .as_u64()
        .unwrap();
    for probe in ["livenessProbe", "readinessProbe"] {
        let path = c[probe]["httpGet"]["path"].as_str().unwrap();
        let mut status = String::new();
        let ok = wait_until(Duration::from_secs(20), || {
            status = http_status(port, path);
            status.contains(" 200 ")
        });
        assert!(ok, "{probe} GET {path} on :{port}: {status:?}");
    }

    // The sibling container, named through the Docker socket under /host/run.
    let sib = resource_of(&reqs, |a| a["container.id"] == sibling.id.as_str()).unwrap();
    assert_eq!(sib["container.name"], sibling.name.as_str(), "{sib}");

    // Which collectors failed with only the listed capabilities (printed for docs/DEPLOY.md).
    let errors: Vec<String> = points
        .iter()
        .filter(|p| p.name == "faultline.collector.errors" && p.value > 0.0)
        .map(|p| format!("{:?}={}", p.attributes.get("faultline.collector"), p.value))
        .collect();
    let rss = last("faultline.agent.memory.rss");
    eprintln!(
        "caps {:?}: collector errors {errors:?}; agent RSS {:.1} MiB; host processes {procs} (test saw {ours})",
        run.caps,
        rss / (1 << 20) as f64
    );
    assert!(
        errors.is_empty(),
        "collectors failed in the DaemonSet setup: {errors:?}\n{}",
        agent.logs()
    );

    // A process fault from inside: pause a process this test started on the host, running as
    // another user (nobody), so the signal needs the CAP_KILL the DaemonSet lists.
    let victim = Victim::spawn(Command::new("setpriv").args([
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        "sleep",
        "300",
    ]));
    assert!(
        wait_until(Duration::from_secs(5), || owner(victim.pid())
            == Some(65534)),
        "the victim did not become nobody"
    );
    let pid = victim.pid();
    let started = Instant::now();
    let mut exec = tokio::process::Command::from(agent.exec(&[
        "/faultline",
        "fault",
        "inject",
        "--config",
        "/etc/faultline/faultline.yaml",
        "process-pause",
        "--pid",
        &pid.to_string(),
        "--duration",
        "3s",
    ]));
    let pause = exec
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    assert!(
        wait_until(Duration::from_secs(15), || state(pid) == Some('T')),
        "the host process was never paused"
    );
    assert!(
        wait_until(Duration::from_secs(15), || matches!(
            state(pid),
            Some('S' | 'R')
        )),
        "the host process was never resumed"
    );
    let held = started.elapsed();
    let out = pause.wait_with_output().await.unwrap();
    assert!(
        out.status.success(),
        "fault inject process-pause: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("process pause from the container: stopped and resumed within {held:?} (asked 3 s)");

    // A disk fault from inside: fill the tmpfs the test passed in, then revert.
    let fill_cmd = agent
        .exec(&[
            "/faultline",
            "fault",
            "inject",
            "--config",
            "/etc/faultline/faultline.yaml",
            "disk-fill",
            "--path",
            "/host/fill/test",
            "--percent",
            "60",
            "--duration",
            "3s",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    assert!(
        wait_until(Duration::from_secs(15), || fill.used_percent() >= 55.0),
        "the tmpfs never filled: {:.1}%",
        fill.used_percent()
    );
    let out = fill_cmd.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "fault inject disk-fill: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        fill.used_percent() < 5.0,
        "not reverted: {:.1}%",
        fill.used_percent()
    );
    assert!(
        fill.files().is_empty(),
        "fill files left: {:?}",
        fill.files()
    );

    let network = Instant::now();
    network_faults_from_the_image(&agent).await;
    image_has_no_tc_nft_or_ip(&agent);
    eprintln!("network faults from the image: {:?}", network.elapsed());

    // The telemetry needs no capability at all: one cycle with --cap-drop=ALL and nothing
    // added reports the same collectors without an error (this is why the DaemonSet lists
    // only KILL).
    let mut bare: Vec<String> = run
        .args
        .iter()
        .filter(|a| !a.starts_with("--cap-add="))
        .cloned()
        .collect();
    bare.insert(0, "--rm".into());
    bare.insert(0, "run".into());
    bare.push(agent_image().to_owned());
    bare.extend(
        [
            "collect",
            "--once",
            "--config",
            "/etc/faultline/faultline.yaml",
        ]
        .map(String::from),
    );
    let out = Command::new("docker").args(&bare).output().unwrap();
    assert!(
        out.status.success(),
        "collect --once without capabilities: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let once: Value = serde_json::from_slice(&out.stdout).unwrap();
    let text = once.to_string();
    for metric in [
        "system.process.count",
        "system.network.connection.count",
        "container.network.io",
        "system.filesystem.usage",
    ] {
        assert!(
            text.contains(&format!("\"{metric}\"")),
            "no {metric} without capabilities"
        );
    }
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains("collector failed"),
        "a collector failed without capabilities: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The journal lives in the state mount (so it survives a pod restart) and is empty now.
    let journal = state_dir.join("faults/journal");
    assert!(journal.is_dir(), "no journal under the state mount");
    assert_eq!(std::fs::read_dir(&journal).unwrap().count(), 0);
    drop(agent);
}

/// `faultline fault inject <args>` run inside the agent's container (through its API, as the
/// mounted config enables it), in the background; `args` split at spaces.
fn inject_from(agent: &DockerRun, args: &str) -> std::process::Child {
    let mut full = vec![
        "/faultline",
        "fault",
        "inject",
        "--config",
        "/etc/faultline/faultline.yaml",
    ];
    full.extend(args.split(' '));
    agent
        .exec(&full)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn output_text(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `faultline fault revert --all` inside the agent's container (the agent's kill switch,
/// through its API), which must succeed.
fn revert_all_from(agent: &DockerRun) {
    let out = agent
        .exec(&[
            "/faultline",
            "fault",
            "revert",
            "--all",
            "--config",
            "/etc/faultline/faultline.yaml",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "fault revert --all: {}",
        output_text(&out)
    );
}

/// See the module docs: rate-limit and partition by `--container`, measured by the test's own
/// clients, reverted from inside; netem delayed or refused naming `sch_netem`.
async fn network_faults_from_the_image(agent: &DockerRun) {
    let t = Topology::start("deploy").await;
    let (web, peer) = (t.web.name.clone(), t.peer_ip().to_string());
    let wait = Duration::from_millis(700);
    let _cut = t.listen_on_peer(7211);
    let _open = t.listen_on_peer(7212);
    let rate = inject_from(
        agent,
        &format!("rate-limit --container {web} --rate 8mbit --duration 60s"),
    );
    let part = inject_from(
        agent,
        &format!(
            "partition --container {web} --dest {peer} --port 7211 --protocol tcp --duration 60s"
        ),
    );
    let applied = wait_until(Duration::from_secs(30), || {
        tc_tree_of(t.web_pid, "eth0").contains("qdisc tbf")
            && nft_ruleset_of(t.web_pid).contains("faultline_partition_")
    });
    if !applied {
        // What the injectors said (a refusal names its reason), not the agent's whole log.
        let said: Vec<String> = [rate, part]
            .into_iter()
            .map(|mut c| {
                let _ = c.kill();
                output_text(&c.wait_with_output().unwrap())
            })
            .collect();
        panic!("not applied in web's namespace: {said:#?}");
    }
    for other in [t.other_pid, t.peer_pid] {
        assert!(
            !tc_tree_of(other, "eth0").contains("tbf"),
            "the rate limit reached another namespace"
        );
        assert!(
            !nft_ruleset_of(other).contains("faultline"),
            "the partition reached another namespace"
        );
    }
    let (limited, unaffected) = std::thread::scope(|sc| {
        let rates = sc.spawn(|| {
            (
                t.throughput(t.web_pid, 7201, 1_500_000),
                t.throughput(t.other_pid, 7202, 4_000_000),
            )
        });
        let e = t
            .connect(t.web_pid, 7211, wait)
            .expect_err("web → peer:7211 must be cut");
        assert_eq!(e.kind(), std::io::ErrorKind::TimedOut, "{e}");
        t.connect(t.web_pid, 7212, wait)
            .expect("web → peer:7212 is not selected");
        t.connect(t.other_pid, 7211, wait)
            .expect("other → peer:7211 is another namespace");
        rates.join().unwrap()
    });
    assert_8mbit_against(
        limited,
        unaffected,
        "from the image: web, and the other container",
    );
    revert_all_from(agent);
    for held in [rate, part] {
        let out = held.wait_with_output().unwrap();
        assert!(out.status.success(), "fault inject: {}", output_text(&out));
    }
    assert!(
        !tc_tree_of(t.web_pid, "eth0").contains("tbf"),
        "rate limit left"
    );
    assert!(
        !nft_ruleset_of(t.web_pid).contains("faultline"),
        "partition left"
    );
    t.connect(t.web_pid, 7211, wait)
        .expect("web → peer:7211 after revert");

    // netem: delay where the kernel has sch_netem, else refused naming it.
    let netem_here = netem_available_at(&of_pid(t.peer_pid));
    let netem = inject_from(
        agent,
        &format!("netem --container {web} --delay 100ms --duration 60s"),
    );
    if !netem_here {
        let out = netem.wait_with_output().unwrap();
        let err = output_text(&out);
        assert!(!out.status.success(), "{err}");
        assert!(err.contains("sch_netem"), "names the module: {err}");
        assert!(!tc_tree_of(t.web_pid, "eth0").contains("netem"));
        eprintln!("netem from the image: refused naming sch_netem (this kernel has none)");
        return;
    }
    assert!(
        wait_until(Duration::from_secs(30), || tc_tree_of(t.web_pid, "eth0")
            .contains("netem")),
        "netem not applied"
    );
    // A TCP handshake from web: its SYN leaves through web's eth0, so it carries the delay.
    let handshake = || {
        let started = Instant::now();
        let _c = t.connect(t.web_pid, 7212, Duration::from_secs(3)).unwrap();
        started.elapsed()
    };
    let delayed = handshake();
    assert!(
        delayed >= Duration::from_millis(95),
        "handshake took {delayed:?}"
    );
    revert_all_from(agent);
    let _ = netem.wait_with_output();
    assert!(!tc_tree_of(t.web_pid, "eth0").contains("netem"));
}

/// The image the DaemonSet runs holds no `tc`, `nft` or `ip` (its whole filesystem, as
/// `docker export` of the running container lists it): network faults work without them.
fn image_has_no_tc_nft_or_ip(agent: &DockerRun) {
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!("docker export {} | tar -t", agent.id))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", output_text(&out));
    let files = String::from_utf8_lossy(&out.stdout);
    assert!(files.lines().any(|f| f == "faultline"), "{files}");
    let tools: Vec<&str> = files
        .lines()
        .filter(|f| {
            let name = f.trim_end_matches('/').rsplit('/').next().unwrap_or("");
            matches!(name, "tc" | "nft" | "ip")
        })
        .collect();
    assert!(tools.is_empty(), "the image holds {tools:?}");
}
