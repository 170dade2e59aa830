//! The Kubernetes manifests and the Helm chart as shipped: every object validates against the
//! Kubernetes 1.34 OpenAPI schemas (`kubernetes-validate --strict`, PyPI, pinned in .ci/run),
//! the chart renders with Helm's own engine and passes `helm lint --strict`, and the agent's
//! config embedded in the ConfigMap — plain and Helm-rendered — passes
//! `faultline config validate`.
//!
//! Helm: no `helm` binary can be installed from Debian or PyPI on the project's machines, so
//! the chart is rendered by `deploy/helm/render.py` with the Helm v4 Go SDK that the PyPI
//! package `helm-python-sdk` bundles (README.md, "Deploy", says so).
#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers: a panic is the failure report

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use faultline_tests::deploy::{
    deploy_dir, find_kind, python_modules_available, render_chart, tool_available, yaml_docs,
};
use serde_json::{Value, json};

/// The Kubernetes version the schemas are checked against (a recent one, within the range
/// the pinned kubernetes-validate release carries).
const KUBERNETES_VERSION: &str = "1.34.0";

fn kubernetes_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(deploy_dir().join("kubernetes"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
}

fn validate(test: &str, files: &[PathBuf]) -> bool {
    if !tool_available(
        test,
        "kubernetes-validate (pip install kubernetes-validate==1.34.1)",
        Command::new("python3").args(["-m", "kubernetes_validate", "--version"]),
    ) {
        return false;
    }
    let files: Vec<&PathBuf> = files
        .iter()
        .filter(|f| {
            f.extension().is_some_and(|e| e == "yaml")
                && !std::fs::read_to_string(f).unwrap().trim().is_empty()
        })
        .collect();
    assert!(!files.is_empty());
    let out = Command::new("python3")
        .args([
            "-m",
            "kubernetes_validate",
            "--strict",
            "--kubernetes-version",
            KUBERNETES_VERSION,
        ])
        .args(&files)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "kubernetes-validate failed:\n{text}");
    let passed = text.matches(" passed for resource ").count();
    assert!(passed >= files.len(), "not every file validated:\n{text}");
    eprintln!("{text}");
    true
}

#[test]
fn every_kubernetes_manifest_validates_against_the_schemas() {
    let files = kubernetes_files();
    let kinds: Vec<String> = files
        .iter()
        .flat_map(|f| yaml_docs(f))
        .map(|d| d["kind"].as_str().unwrap_or("?").to_owned())
        .collect();
    for kind in [
        "Namespace",
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "ConfigMap",
        "PriorityClass",
        "DaemonSet",
        "Service",
        "NetworkPolicy",
    ] {
        assert!(kinds.iter().any(|k| k == kind), "no {kind} in {kinds:?}");
    }
    validate("every_kubernetes_manifest_validates", &files);
}

/// The resources derived from docs/PERFORMANCE.md are the same in the DaemonSet, the chart's
/// default values and docs/DEPLOY.md (the chart's rendering is compared with the DaemonSet in
/// `helm_daemonset_matches_the_plain_manifest_where_it_matters`).
#[test]
fn resources_agree_across_the_daemonset_the_chart_values_and_deploy_md() {
    let plain = yaml_docs(&deploy_dir().join("kubernetes/daemonset.yaml"));
    let res =
        &find_kind(&plain, "DaemonSet")["spec"]["template"]["spec"]["containers"][0]["resources"];
    let values = yaml_docs(&deploy_dir().join("helm/faultline/values.yaml"));
    assert_eq!(&values[0]["resources"], res, "values.yaml resources differ");
    let get = |kind: &str, what: &str| res[kind][what].as_str().unwrap().to_owned();
    let mib = |q: String| format!("{} MiB", q.strip_suffix("Mi").unwrap());
    let stated = format!(
        "requests {} CPU / {}, limits {} / {}",
        get("requests", "cpu"),
        mib(get("requests", "memory")),
        get("limits", "cpu"),
        mib(get("limits", "memory")),
    );
    let deploy_md = std::fs::read_to_string(deploy_dir().join("../docs/DEPLOY.md")).unwrap();
    assert!(
        deploy_md.contains(&stated),
        "docs/DEPLOY.md does not state {stated:?}"
    );
    for path in [
        "docs/DEPLOY.md",
        "deploy/kubernetes/daemonset.yaml",
        "deploy/helm/faultline/values.yaml",
    ] {
        let text = std::fs::read_to_string(deploy_dir().join("..").join(path)).unwrap();
        assert!(
            !text.contains("no agent figures"),
            "{path} still says PERFORMANCE.md has no agent figures"
        );
    }
}

/// docs/SECURITY.md's capability table lists exactly what the DaemonSet adds and what the
/// systemd unit's bounding set holds, no more and no less.
#[test]
fn security_md_lists_exactly_the_granted_capabilities() {
    let plain = yaml_docs(&deploy_dir().join("kubernetes/daemonset.yaml"));
    let caps = &find_kind(&plain, "DaemonSet")["spec"]["template"]["spec"]["containers"][0]["securityContext"]
        ["capabilities"];
    assert_eq!(caps["drop"], json!(["ALL"]));
    let mut daemonset: Vec<String> = caps["add"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| format!("CAP_{}", c.as_str().unwrap()))
        .collect();
    daemonset.sort();
    let unit = std::fs::read_to_string(deploy_dir().join("systemd/faultline.service")).unwrap();
    let unit_set = |key: &str| -> Vec<String> {
        let mut v: Vec<String> = unit
            .lines()
            .filter_map(|l| l.strip_prefix(key))
            .flat_map(|l| l.split_whitespace().map(str::to_owned))
            .collect();
        v.sort();
        v
    };
    assert_eq!(
        unit_set("CapabilityBoundingSet="),
        daemonset,
        "unit vs DaemonSet"
    );
    assert_eq!(
        unit_set("AmbientCapabilities="),
        daemonset,
        "unit vs DaemonSet"
    );
    let security = std::fs::read_to_string(deploy_dir().join("../docs/SECURITY.md")).unwrap();
    let section = security
        .split("## What each capability in the DaemonSet allows")
        .nth(1)
        .and_then(|s| s.split("\n## ").next())
        .expect("SECURITY.md has the capability section");
    let mut documented: Vec<String> = section
        .lines()
        .filter_map(|l| l.strip_prefix("| `CAP_"))
        .filter_map(|l| l.split('`').next())
        .map(|c| format!("CAP_{c}"))
        .collect();
    documented.sort();
    assert_eq!(
        documented, daemonset,
        "SECURITY.md's table vs the DaemonSet"
    );
}

/// The least a user must set: the Secret holding the API tokens.
fn default_values() -> Value {
    json!({"api": {"tokens": {"existingSecret": "faultline-api-tokens"}}})
}

#[test]
fn helm_chart_without_api_tokens_is_refused_with_a_clear_message() {
    let test = "helm_chart_without_api_tokens_is_refused";
    if !python_modules_available(test, &["helm_python", "yaml"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new("python3")
        .arg(deploy_dir().join("helm/render.py"))
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success(), "rendered without tokens");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("api.tokens.existingSecret"), "{stderr}");
}

/// Values that switch on every optional part of the chart.
fn full_values() -> Value {
    json!({
        "collectors": {"containers": {"runtime": "docker"}},
        "api": {"tokens": {"tokensYaml": "# tokens\n"}},
        "chaos": {"fillPaths": [{"name": "scratch", "path": "/srv/scratch"}]},
        "backups": [{"name": "dumps", "kind": "files", "path": "/host/root/var/backups", "rpo": "26h"}],
        "prometheus": {"enabled": true},
        "resourceAttributes": {"k8s.cluster.name": "test"},
        "otlp": {"headers": {"x-tenant": "platform"}, "protocol": "http/protobuf",
                 "endpoint": "http://collector:4318"},
    })
}

#[test]
fn helm_chart_renders_lints_and_validates_with_default_and_full_values() {
    let test = "helm_chart_renders_lints_and_validates";
    if !python_modules_available(test, &["helm_python", "yaml"]) {
        return;
    }
    for (name, values) in [("default", default_values()), ("full", full_values())] {
        let dir = tempfile::tempdir().unwrap();
        let files = render_chart(dir.path(), &values);
        let rendered: Vec<PathBuf> = files
            .into_iter()
            .filter(|f| f.extension().is_some_and(|e| e == "yaml"))
            .collect();
        let docs: Vec<Value> = rendered.iter().flat_map(|f| yaml_docs(f)).collect();
        let kinds: Vec<&str> = docs.iter().filter_map(|d| d["kind"].as_str()).collect();
        eprintln!("{name} values render: {kinds:?}");
        for kind in [
            "DaemonSet",
            "ConfigMap",
            "Service",
            "NetworkPolicy",
            "ClusterRole",
        ] {
            assert!(kinds.contains(&kind), "{name}: no {kind}");
        }
        assert_eq!(
            kinds.contains(&"Secret"),
            name == "full",
            "{name}: the token Secret is rendered only from api.tokens.tokensYaml"
        );
        if !validate(test, &rendered) {
            return;
        }
    }
}

/// The chart's DaemonSet runs the pod exactly like the plain manifest: same host namespaces,
/// security context and host mounts.
#[test]
fn helm_daemonset_matches_the_plain_manifest_where_it_matters() {
    let test = "helm_daemonset_matches_the_plain_manifest";
    if !python_modules_available(test, &["helm_python", "yaml"]) {
        return;
    }
    let plain = yaml_docs(&deploy_dir().join("kubernetes/daemonset.yaml"));
    let plain = find_kind(&plain, "DaemonSet");
    let dir = tempfile::tempdir().unwrap();
    let files = render_chart(dir.path(), &default_values());
    let docs: Vec<Value> = files
        .iter()
        .filter(|f| f.extension().is_some_and(|e| e == "yaml"))
        .flat_map(|f| yaml_docs(f))
        .collect();
    let helm = find_kind(&docs, "DaemonSet");
    let pod = |d: &Value| d["spec"]["template"]["spec"].clone();
    let (p, h) = (pod(plain), pod(helm));
    for key in [
        "hostPID",
        "hostNetwork",
        "tolerations",
        "securityContext",
        "priorityClassName",
    ] {
        assert_eq!(p[key], h[key], "pod spec {key} differs");
    }
    let c = |s: &Value| s["containers"][0].clone();
    let (pc, hc) = (c(&p), c(&h));
    for key in [
        "securityContext",
        "ports",
        "livenessProbe",
        "readinessProbe",
        "resources",
        "args",
    ] {
        assert_eq!(pc[key], hc[key], "container {key} differs");
    }
    let host_paths = |s: &Value| -> Vec<(String, String)> {
        let mut v: Vec<(String, String)> = s["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|v| v["hostPath"].is_object())
            .map(|v| {
                let name = v["name"].as_str().unwrap();
                let path = v["hostPath"]["path"].as_str().unwrap().to_owned();
                let mount = s["containers"][0]["volumeMounts"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|m| m["name"] == name)
                    .unwrap()["mountPath"]
                    .as_str()
                    .unwrap()
                    .to_owned();
                (path, mount)
            })
            .collect();
        v.sort();
        v
    };
    assert_eq!(host_paths(&p), host_paths(&h));
}

/// The headless Service a game day finds the agents through (`agents: {dns: …}`,
/// docs/adr/0017) in `docs`: no cluster IP (one DNS record per pod), only ready pods
/// (`publishNotReadyAddresses` unset: an agent failing `/readyz` is not listed), selecting
/// exactly the DaemonSet's pods, on the container port named `api`, 9465.
fn assert_headless_api_service(what: &str, docs: &[Value], name: &str) {
    let service = docs
        .iter()
        .find(|d| d["kind"] == "Service" && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("{what}: no Service {name}"));
    let spec = &service["spec"];
    assert_eq!(spec["clusterIP"], "None", "{what}: not headless: {spec:#}");
    assert_ne!(spec["publishNotReadyAddresses"], true, "{what}: {spec:#}");
    let daemonset = find_kind(docs, "DaemonSet");
    let pod_labels = &daemonset["spec"]["template"]["metadata"]["labels"];
    let selector = spec["selector"].as_object().unwrap();
    assert!(
        !selector.is_empty(),
        "{what}: the Service selects every pod"
    );
    for (k, v) in selector {
        assert_eq!(
            &pod_labels[k], v,
            "{what}: the pods lack the Service's {k}={v}"
        );
    }
    assert_eq!(
        spec["selector"], daemonset["spec"]["selector"]["matchLabels"],
        "{what}: the Service and the DaemonSet select different pods"
    );
    let ports = spec["ports"].as_array().unwrap();
    assert_eq!(ports.len(), 1, "{what}: {ports:?}");
    assert_eq!(ports[0]["port"], 9465, "{what}");
    assert_eq!(ports[0]["name"], "api", "{what}");
    assert_eq!(ports[0]["protocol"], "TCP", "{what}");
    let target = ports[0]["targetPort"].as_str().unwrap();
    let container_port = daemonset["spec"]["template"]["spec"]["containers"][0]["ports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == target)
        .unwrap_or_else(|| panic!("{what}: no container port named {target}"));
    assert_eq!(container_port["containerPort"], 9465, "{what}");
    assert_eq!(
        service["metadata"]["namespace"], daemonset["metadata"]["namespace"],
        "{what}"
    );
}

#[test]
fn the_headless_api_service_selects_the_daemonset_pods_plain_and_in_the_chart() {
    let test = "the_headless_api_service_selects_the_daemonset_pods";
    if !python_modules_available(test, &["yaml"]) {
        return;
    }
    let plain: Vec<Value> = kubernetes_files()
        .iter()
        .flat_map(|f| yaml_docs(f))
        .collect();
    assert_headless_api_service("deploy/kubernetes", &plain, "faultline-api");
    validate(
        test,
        &[
            deploy_dir().join("kubernetes/service.yaml"),
            deploy_dir().join("kubernetes/daemonset.yaml"),
        ],
    );
    if !python_modules_available(test, &["helm_python"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let docs: Vec<Value> = render_chart(dir.path(), &default_values())
        .iter()
        .filter(|f| f.extension().is_some_and(|e| e == "yaml"))
        .flat_map(|f| yaml_docs(f))
        .collect();
    assert_headless_api_service("the Helm chart", &docs, "faultline-api");
}

/// Runs `faultline config validate` on `yaml` as the pod would see it. The validator checks
/// that `proc_root`, `sys_root`, `rootfs` and `cgroup_root` exist; in the pod they are the
/// host mounts under `/host`, so here `/host/` is rewritten to a scratch directory whose
/// `proc`, `sys`, `root` and `run` point at this machine's (nothing else in the text changes).
/// The config also runs for real in the DaemonSet-like container of `deploy_image.rs`.
///
/// `drill_scenarios` is the data of the chart's drills ConfigMap, if any: its files are
/// written to a scratch directory standing in for the pod's `/etc/faultline-drills/` mount.
async fn validate_config(what: &str, yaml: &str, drill_scenarios: Option<&Value>) {
    let dir = tempfile::tempdir().unwrap();
    let host = dir.path().join("host");
    std::fs::create_dir(&host).unwrap();
    for (name, target) in [
        ("proc", "/proc"),
        ("sys", "/sys"),
        ("root", "/"),
        ("run", "/run"),
    ] {
        std::os::unix::fs::symlink(target, host.join(name)).unwrap();
    }
    assert!(yaml.contains("proc_root: /host/proc"), "{what}: {yaml}");
    // The token Secret's mount, with a tokens file like the one README.md has users create.
    let tokens = dir.path().join("faultline-api");
    std::fs::create_dir(&tokens).unwrap();
    std::fs::write(tokens.join("tokens.yaml"), TOKENS_YAML).unwrap();
    assert!(
        yaml.contains("tokens_file: /etc/faultline-api/tokens.yaml"),
        "{what}: {yaml}"
    );
    let drills = dir.path().join("faultline-drills");
    std::fs::create_dir(&drills).unwrap();
    for (file, text) in drill_scenarios
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
    {
        std::fs::write(drills.join(file), text.as_str().unwrap()).unwrap();
    }
    let yaml = &yaml
        .replace("/host/", &format!("{}/", host.display()))
        .replace("/etc/faultline-api/", &format!("{}/", tokens.display()))
        .replace("/etc/faultline-drills/", &format!("{}/", drills.display()));
    let file = dir.path().join("faultline.yaml");
    std::fs::write(&file, yaml).unwrap();
    // The DaemonSet's environment: HOST_IP is substituted into the kubelet endpoint.
    let out = run_cli_env(&file).await;
    assert!(
        out.status.success(),
        "{what}: faultline config validate refused it:\n{}\n---\n{yaml}",
        String::from_utf8_lossy(&out.stderr)
    );
    // And the bad-input path: one unknown key is refused, naming the field.
    let broken = yaml.replacen("interval:", "intervall:", 1);
    std::fs::write(&file, broken).unwrap();
    let out = run_cli_env(&file).await;
    assert_eq!(out.status.code(), Some(2), "{what}: a typo was accepted");
}

async fn run_cli_env(file: &Path) -> std::process::Output {
    // run_cli scrubs the environment; the one variable the config refers to is set here.
    let bin = faultline_tests::agent_binary();
    let out = tokio::process::Command::new(bin)
        .args(["config", "validate"])
        .arg(file)
        .env("HOST_IP", "10.0.0.7")
        .env("POD_IP", "127.0.0.1")
        .env("NODE_NAME", "node-a")
        .output();
    tokio::time::timeout(Duration::from_secs(30), out)
        .await
        .unwrap()
        .unwrap()
}

/// A tokens file as the Secret holds it.
const TOKENS_YAML: &str = "- name: sre\n  role: operator\n  token: 0123456789abcdef0123\n";

fn configmap_config(docs: &[Value]) -> String {
    find_kind(docs, "ConfigMap")["data"]["faultline.yaml"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn configmap_config_passes_faultline_config_validate() {
    if !python_modules_available("configmap_config_passes_validate", &["yaml"]) {
        return;
    }
    let docs = yaml_docs(&deploy_dir().join("kubernetes/configmap.yaml"));
    let config = configmap_config(&docs);
    assert!(config.contains("proc_root: /host/proc"), "{config}");
    validate_config("deploy/kubernetes/configmap.yaml", &config, None).await;
}

#[tokio::test]
async fn helm_rendered_configs_pass_faultline_config_validate() {
    let test = "helm_rendered_configs_pass_validate";
    if !python_modules_available(test, &["helm_python", "yaml"]) {
        return;
    }
    for (name, values) in [("default", default_values()), ("full", full_values())] {
        let dir = tempfile::tempdir().unwrap();
        let files = render_chart(dir.path(), &values);
        let cm = files
            .iter()
            .find(|f| f.ends_with("templates/configmap.yaml"))
            .unwrap();
        let config = configmap_config(&yaml_docs(cm));
        if name == "full" {
            assert!(config.contains("x-tenant"), "{config}");
            assert!(config.contains("dumps"), "{config}");
        }
        validate_config(&format!("helm ({name} values)"), &config, None).await;
    }
}

/// A scenario as a user would put it into `drills.scenarios`.
const CHART_SCENARIO: &str = "name: cache-restart
probe_interval: 500ms
steady_state:
  - name: cache
    tcp: { address: \"127.0.0.1:6379\", timeout: 1s }
faults:
  - at: 1s
    fault: { kind: process-kill, cmdline: \"^redis-server\", duration: 1s }
recovery: { strategy: self-heal, consecutive: 3, timeout: 2m }
objectives: { rto: 1m }
";

/// A chart with one scenario in `drills.scenarios` and a schedule naming it: the scenario is
/// in a ConfigMap mounted read-only at /etc/faultline-drills, the config's schedule points at
/// the mounted file, every object validates against the schemas, and `faultline config
/// validate` — which loads and checks each scheduled scenario — accepts the config with the
/// ConfigMap's files where the pod sees them. A schedule naming no known scenario is refused
/// at render time.
#[tokio::test]
async fn helm_chart_mounts_drill_scenarios_for_its_schedules() {
    let test = "helm_chart_mounts_drill_scenarios";
    if !python_modules_available(test, &["helm_python", "yaml"]) {
        return;
    }
    let mut values = default_values();
    values["drills"] = json!({
        "scenarios": {"cache-restart.yaml": CHART_SCENARIO},
        "schedules": [{"name": "weekly-cache", "scenario": "cache-restart.yaml",
                       "schedule": "0 10 * * 3", "timezone": "UTC", "jitter": "10m"}],
    });
    let dir = tempfile::tempdir().unwrap();
    let files = render_chart(dir.path(), &values);
    let docs: Vec<Value> = files
        .iter()
        .filter(|f| f.extension().is_some_and(|e| e == "yaml"))
        .flat_map(|f| yaml_docs(f))
        .collect();
    let scenarios = docs
        .iter()
        .find(|d| d["kind"] == "ConfigMap" && d["metadata"]["name"] == "faultline-drills")
        .unwrap_or_else(|| panic!("no faultline-drills ConfigMap"));
    assert_eq!(
        scenarios["data"]["cache-restart.yaml"].as_str(),
        Some(CHART_SCENARIO),
        "the scenario is not carried verbatim"
    );
    let pod = &find_kind(&docs, "DaemonSet")["spec"]["template"]["spec"];
    let volume = pod["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["configMap"]["name"] == "faultline-drills")
        .unwrap_or_else(|| panic!("no volume of the drills ConfigMap: {pod:#}"));
    let mount = pod["containers"][0]["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == volume["name"])
        .unwrap_or_else(|| panic!("the drills volume is not mounted: {pod:#}"));
    assert_eq!(mount["mountPath"], "/etc/faultline-drills");
    assert_eq!(mount["readOnly"], true);
    let config = configmap_config(
        &docs
            .iter()
            .filter(|d| d["metadata"]["name"] == "faultline-config")
            .cloned()
            .collect::<Vec<_>>(),
    );
    let agent_config: Vec<Value> = serde_json::from_str(&faultline_tests::python3(
        "import json, sys, yaml; print(json.dumps([yaml.safe_load(sys.stdin.read())]))",
        &[],
        Some(&config),
    ))
    .unwrap();
    assert_eq!(
        agent_config[0]["drills"],
        json!([{"name": "weekly-cache", "scenario": "/etc/faultline-drills/cache-restart.yaml",
                "schedule": "0 10 * * 3", "timezone": "UTC", "jitter": "10m"}]),
        "{config}"
    );
    validate(test, &files);
    validate_config("helm (a drill scenario)", &config, Some(&scenarios["data"])).await;

    // The schedule must name a scenario of drills.scenarios (or an absolute path).
    values["drills"]["schedules"][0]["scenario"] = json!("missing.yaml");
    let out = Command::new("python3")
        .arg(deploy_dir().join("helm/render.py"))
        .arg(dir.path().join("refused"))
        .arg("--set-json")
        .arg(values.to_string())
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "rendered a schedule without its scenario"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("drills.schedules[0].scenario \"missing.yaml\""),
        "{stderr}"
    );
}

/// The pod spec mounts the directory of each socket `containers.cri` looks for by default
/// ([`faultline_chaos::cri::DEFAULT_SOCKETS`], the list the agent itself uses) read-only at
/// the node's own path, from a host path that a node without that runtime gets as an empty
/// directory rather than a failing pod.
fn assert_cri_sockets_mounted(what: &str, pod: &Value) {
    let mounts = pod["containers"][0]["volumeMounts"].as_array().unwrap();
    let volumes = pod["volumes"].as_array().unwrap();
    for socket in faultline_chaos::cri::DEFAULT_SOCKETS {
        let dir = Path::new(socket).parent().unwrap().to_str().unwrap();
        let mount = mounts
            .iter()
            .find(|m| m["mountPath"] == dir)
            .unwrap_or_else(|| panic!("{what}: nothing mounted at {dir} for {socket}"));
        assert_eq!(mount["readOnly"], true, "{what}: {mount}");
        assert_eq!(
            mount["mountPropagation"], "HostToContainer",
            "{what}: the runtime's container mounts below {dir} must not be held: {mount}"
        );
        let volume = volumes
            .iter()
            .find(|v| v["name"] == mount["name"])
            .unwrap_or_else(|| panic!("{what}: no volume {}", mount["name"]));
        assert_eq!(
            volume["hostPath"],
            json!({"path": dir, "type": "DirectoryOrCreate"}),
            "{what}"
        );
    }
}

/// The CRI sockets reach the agent in the plain DaemonSet and in the chart's, and the shipped
/// configs turn the CRI source on and leave the socket to the agent's detection.
#[test]
fn daemonsets_mount_each_default_cri_socket_read_only_where_the_agent_looks() {
    let test = "daemonsets_mount_each_default_cri_socket";
    if !python_modules_available(test, &["yaml"]) {
        return;
    }
    let plain = yaml_docs(&deploy_dir().join("kubernetes/daemonset.yaml"));
    assert_cri_sockets_mounted(
        "daemonset.yaml",
        &find_kind(&plain, "DaemonSet")["spec"]["template"]["spec"],
    );
    let mut configs = vec![(
        "configmap.yaml".to_owned(),
        configmap_config(&yaml_docs(&deploy_dir().join("kubernetes/configmap.yaml"))),
    )];
    if python_modules_available(test, &["helm_python", "yaml"]) {
        let dir = tempfile::tempdir().unwrap();
        let docs: Vec<Value> = render_chart(dir.path(), &default_values())
            .iter()
            .filter(|f| f.extension().is_some_and(|e| e == "yaml"))
            .flat_map(|f| yaml_docs(f))
            .collect();
        assert_cri_sockets_mounted(
            "the chart's DaemonSet",
            &find_kind(&docs, "DaemonSet")["spec"]["template"]["spec"],
        );
        configs.push(("the chart's ConfigMap".to_owned(), configmap_config(&docs)));
    }
    for (what, text) in configs {
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), &text).unwrap();
        let containers = &yaml_docs(file.path())[0]["containers"];
        assert_eq!(containers["cri"]["enabled"], true, "{what}: {containers}");
        assert!(
            containers["cri"].get("socket").is_none(),
            "{what}: the socket is found at the mounted default path: {containers}"
        );
        assert_eq!(
            containers["kubelet"]["enabled"], false,
            "{what}: the kubelet is only the fallback: {containers}"
        );
    }
}
