//! The same assertions on cgroup v1, v2 and hybrid fixture trees
//! (`agent/tests/fixtures/cgroup-*`): values equal to the files, attributes from the
//! metadata cache, container churn (new, stopped, restarted). The runtimes' path shapes
//! beyond Docker's and containerd's are on a tree too: CRI-O and Podman (systemd) on v2,
//! Podman (cgroupfs) on v1, each next to its conmon monitor's cgroup where one exists.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use faultline_exporters::model::{AttrValue, Attributes, Batch, Metric, ResourceMetrics};

use super::metadata::{ContainerMeta, PodMeta};
use super::paths::Runtime;
use super::*;
use crate::collectors::host::test_support::fixture_dir;
use crate::collectors::{CollectError, Collector, Context};

const A: &str = "4a57c14d26338e3942ed0c74fa408ccc2b867eb66855835dbda05e806e749147";
const B: &str = "9f8e7d6c5b4a39281706f5e4d3c2b1a09f8e7d6c5b4a39281706f5e4d3c2b1a0";
const C: &str = "c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00";
const UID: &str = "0f1e2d3c-4b5a-6978-8a9b-acbdcedf0011";
/// The CRI-O container of the v2 tree (`crio-<id>.scope`) and its pod's UID.
const CRIO: &str = "c2105eedc2105eedc2105eedc2105eedc2105eedc2105eedc2105eedc2105eed";
const CRIO_POD_UID: &str = "7c6b5a49-3827-4160-9f8e-7d6c5b4a3928";
/// The Podman container: `machine.slice/libpod-<id>.scope` on v2,
/// `libpod_parent/libpod-<id>` on v1, with the same figures in both trees.
const PODMAN: &str = "ba5eba11ba5eba11ba5eba11ba5eba11ba5eba11ba5eba11ba5eba11ba5eba11";
const T0: u64 = 1_800_000_000_000_000_000;

/// Copies a fixture tree, keeping symlinks, so a test can change it.
fn copy_tree(src: &Path, dst: &Path) {
    std::fs::create_dir_all(dst).unwrap();
    for e in std::fs::read_dir(src).unwrap() {
        let e = e.unwrap();
        let (from, to) = (e.path(), dst.join(e.file_name()));
        let ft = e.file_type().unwrap();
        if ft.is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(&from).unwrap(), &to).unwrap();
        } else if ft.is_dir() {
            copy_tree(&from, &to);
        } else {
            std::fs::copy(&from, &to).unwrap();
        }
    }
}

struct Fixture {
    _dir: tempfile::TempDir,
    root: PathBuf,
    collector: ContainerCollector,
    cache: Arc<MetadataCache>,
}

impl Fixture {
    fn new(name: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join(name);
        copy_tree(&fixture_dir(name), &root);
        let hierarchy = Hierarchy::detect(&root.join("sys/fs/cgroup")).unwrap();
        let host = Arc::new(Resource {
            attributes: Attributes::new()
                .with("service.name", "faultline")
                .with("host.name", "node-1"),
        });
        let cache = Arc::new(MetadataCache::default());
        let collector = ContainerCollector::with_cache(
            hierarchy,
            host,
            cache.clone(),
            &ContainerConfig::default(),
        );
        Self {
            _dir: dir,
            root,
            collector,
            cache,
        }
    }

    fn cycle(&mut self, at: u64) -> (Batch, Result<(), CollectError>) {
        let roots = Roots {
            proc: self.root.join("proc"),
            sys: self.root.join("sys"),
            rootfs: self.root.join("rootfs"),
        };
        let ctx = Context {
            roots,
            boot_time_unix_nanos: 1,
        };
        let mut b = Batch::new(at, Arc::new(Resource::default()), 1);
        let r = self.collector.collect(&ctx, &mut b);
        (b, r)
    }

    /// The container's control file `name`, in whichever of its directories has it.
    fn file_of(&self, id: &str, name: &str) -> PathBuf {
        self.dirs_of(id)
            .into_iter()
            .map(|d| d.join(name))
            .find(|p| p.exists())
            .unwrap_or_else(|| panic!("{id} has no {name}"))
    }

    /// Every directory of container `id` in every hierarchy.
    fn dirs_of(&self, id: &str) -> Vec<PathBuf> {
        let mut out = Vec::new();
        find_dirs(&self.root.join("sys/fs/cgroup"), id, &mut out);
        out
    }
}

fn find_dirs(dir: &Path, name: &str, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        if !e.file_type().unwrap().is_dir() {
            continue;
        }
        let n = e.file_name().to_string_lossy().into_owned();
        if n.contains(name) {
            out.push(e.path());
        } else {
            find_dirs(&e.path(), name, out);
        }
    }
}

fn resource<'a>(b: &'a Batch, id: &str) -> Option<&'a ResourceMetrics> {
    b.resources.iter().find(|r| {
        r.resource
            .attributes
            .get("container.id")
            .map(AttrValue::to_text)
            .as_deref()
            == Some(id)
    })
}

fn attr(r: &ResourceMetrics, key: &str) -> Option<String> {
    r.resource
        .attributes
        .get(key)
        .map(|v| v.to_text().into_owned())
}

fn metric<'a>(r: &'a ResourceMetrics, name: &str) -> Option<&'a Metric> {
    r.metrics.iter().find(|m| m.name == name)
}

/// Bytes received on `eth0` as container `id` reports them.
fn eth0_rx(b: &Batch, id: &str) -> f64 {
    value(
        resource(b, id).unwrap(),
        "container.network.io",
        &[
            ("network.interface.name", "eth0"),
            ("network.io.direction", "receive"),
        ],
    )
}

fn value(r: &ResourceMetrics, name: &str, attrs: &[(&str, &str)]) -> f64 {
    let m = metric(r, name).unwrap_or_else(|| panic!("{name} missing"));
    let hits: Vec<_> = m
        .points
        .iter()
        .filter(|p| {
            attrs
                .iter()
                .all(|(k, v)| p.attributes.get(k).map(AttrValue::to_text).as_deref() == Some(*v))
        })
        .collect();
    assert_eq!(hits.len(), 1, "{name} {attrs:?}: {:?}", m.points);
    hits[0].value.as_f64()
}

fn docker_meta() -> ContainerMeta {
    ContainerMeta {
        name: Some("web-1".into()),
        image_name: Some("faultline-workload".into()),
        image_tags: vec!["test".into()],
        runtime: Some(Runtime::Docker),
        labels: vec![("team".into(), "sre".into())],
        k8s: metadata::K8sMeta::default(),
    }
}

/// The `container.id` of every resource in `b` that has one, sorted (a container reported
/// twice appears twice).
fn container_ids(b: &Batch) -> Vec<String> {
    let mut ids: Vec<String> = b
        .resources
        .iter()
        .filter_map(|r| attr(r, "container.id"))
        .collect();
    ids.sort();
    ids
}

/// The assertions every layout must pass; `k8s_id` is the layout's Kubernetes container,
/// `containers` the number of containers in the tree.
fn check_layout(name: &str, layout: cgroup::Layout, k8s_id: &str, psi: bool, containers: usize) {
    let mut f = Fixture::new(name);
    assert_eq!(f.collector.hierarchy().layout, layout);
    f.cache.docker_upsert(A.into(), docker_meta());
    f.cache.kubelet_replace(
        vec![],
        vec![(
            UID.into(),
            PodMeta {
                name: "web-7d9".into(),
                namespace: "prod".into(),
            },
        )],
    );
    let (b, r) = f.cycle(T0);
    r.unwrap();
    assert_eq!(
        b.resources.len(),
        1 + containers,
        "host + {containers} containers; services, pod directories and monitors are not containers"
    );

    let a = resource(&b, A).unwrap();
    assert_eq!(
        attr(a, "service.name").as_deref(),
        Some("faultline"),
        "host attributes are repeated"
    );
    assert_eq!(attr(a, "host.name").as_deref(), Some("node-1"));
    assert_eq!(attr(a, "container.name").as_deref(), Some("web-1"));
    assert_eq!(
        attr(a, "container.image.name").as_deref(),
        Some("faultline-workload")
    );
    assert_eq!(
        a.resource.attributes.get("container.image.tags"),
        Some(&AttrValue::StrArray(vec!["test".into()]))
    );
    assert_eq!(attr(a, "container.runtime.name").as_deref(), Some("docker"));
    assert_eq!(attr(a, "container.label.team").as_deref(), Some("sre"));
    assert_eq!(attr(a, "k8s.pod.uid"), None);
    // CPU: the modes sum to the total usage file (5 s).
    assert_eq!(value(a, "container.cpu.time", &[("cpu.mode", "user")]), 4.0);
    assert_eq!(
        value(a, "container.cpu.time", &[("cpu.mode", "system")]),
        1.0
    );
    assert!(
        metric(a, "container.cpu.usage").is_none(),
        "a rate needs two cycles"
    );
    assert_eq!(value(a, "container.cpu.limit", &[]), 0.5);
    assert_eq!(
        value(a, "container.cpu.throttling_data.periods", &[]),
        100.0
    );
    assert_eq!(
        value(a, "container.cpu.throttling_data.throttled_periods", &[]),
        7.0
    );
    assert_eq!(
        value(a, "container.cpu.throttling_data.throttled_time", &[]),
        0.25
    );
    // Memory.
    assert_eq!(value(a, "container.memory.usage", &[]), 70_000_000.0);
    assert_eq!(value(a, "container.memory.working_set", &[]), 68_000_000.0);
    assert_eq!(value(a, "container.memory.rss", &[]), 67_108_864.0);
    assert_eq!(value(a, "container.memory.limit", &[]), 134_217_728.0);
    assert_eq!(
        value(a, "container.memory.available", &[]),
        134_217_728.0 - 68_000_000.0
    );
    assert_eq!(value(a, "container.memory.oom_kills", &[]), 1.0);
    // Disk: 10 MiB written to 254:0, named from /sys/dev/block.
    assert_eq!(
        value(
            a,
            "container.disk.io",
            &[("system.device", "vda"), ("disk.io.direction", "write")]
        ),
        10_485_760.0
    );
    assert_eq!(
        value(
            a,
            "container.disk.io",
            &[("system.device", "vda"), ("disk.io.direction", "read")]
        ),
        4096.0
    );
    assert_eq!(value(a, "container.pids.count", &[]), 3.0);
    assert!(
        metric(a, "container.pids.limit").is_none(),
        "pids.max is max"
    );
    // Network from the container's own namespace.
    assert_eq!(
        value(
            a,
            "container.network.io",
            &[
                ("network.interface.name", "lo"),
                ("network.io.direction", "receive")
            ]
        ),
        1_048_576.0
    );
    assert_eq!(
        value(
            a,
            "container.network.io",
            &[
                ("network.interface.name", "eth0"),
                ("network.io.direction", "transmit")
            ]
        ),
        500.0
    );
    // Pressure only where cgroup2 has the container.
    assert_eq!(
        metric(a, "container.linux.pressure.stall_time").is_some(),
        psi,
        "{name}"
    );
    if psi {
        let v = value(
            a,
            "container.linux.pressure.stall_time",
            &[
                ("system.linux.pressure.resource", "cpu"),
                ("system.linux.pressure.kind", "some"),
            ],
        );
        assert!((v - 0.332412).abs() < 1e-9);
    }
    // Start time: the cgroup directory's creation (modification) time; uptime from it.
    let start = cgroup::dir_time_unix_nanos(
        &f.collector
            .hierarchy()
            .walk_root()
            .unwrap()
            .join(f.collector.tracked.keys().find(|k| k.contains(A)).unwrap()),
    )
    .unwrap();
    let cpu = metric(a, "container.cpu.time").unwrap();
    assert!(cpu.points.iter().all(|p| p.start_unix_nanos == start));
    assert!((value(a, "container.uptime", &[]) - (T0 - start) as f64 / 1e9).abs() < 1e-6);

    // The Kubernetes container: pod UID from the path, names from the kubelet's pod list.
    let k = resource(&b, k8s_id).unwrap();
    assert_eq!(attr(k, "k8s.pod.uid").as_deref(), Some(UID));
    assert_eq!(attr(k, "k8s.pod.name").as_deref(), Some("web-7d9"));
    assert_eq!(attr(k, "k8s.namespace.name").as_deref(), Some("prod"));
    assert_eq!(attr(k, "container.name"), None, "no source names it");
    let total = value(k, "container.cpu.time", &[("cpu.mode", "user")])
        + value(k, "container.cpu.time", &[("cpu.mode", "system")]);
    assert!((total - 2.5).abs() < 1e-9, "{total}");
    assert!(
        metric(k, "container.memory.available").is_none()
            && metric(k, "container.memory.limit").is_none(),
        "no memory limit"
    );
    assert!(metric(k, "container.cpu.limit").is_none(), "no CPU limit");
    assert_eq!(value(k, "container.pids.limit", &[]), 1024.0);
    assert!(
        metric(k, "container.network.io").is_none(),
        "host network namespace: no container network metrics"
    );

    // Second cycle 10 s later with 1 s more user time: a rate, and the same resource Arc.
    let a_res = a.resource.clone();
    add_user_cpu(&f, A, 1);
    let (b2, r) = f.cycle(T0 + 10_000_000_000);
    r.unwrap();
    let a2 = resource(&b2, A).unwrap();
    assert!(
        Arc::ptr_eq(&a_res, &a2.resource),
        "unchanged metadata: the resource is reused, not rebuilt"
    );
    assert!((value(a2, "container.cpu.usage", &[("cpu.mode", "user")]) - 0.1).abs() < 1e-9);
    assert_eq!(
        value(a2, "container.cpu.usage", &[("cpu.mode", "system")]),
        0.0
    );

    // Renamed: the resource is rebuilt with the new name.
    f.cache.docker_upsert(
        A.into(),
        ContainerMeta {
            name: Some("web-2".into()),
            ..docker_meta()
        },
    );
    let (b3, _) = f.cycle(T0 + 20_000_000_000);
    assert_eq!(
        attr(resource(&b3, A).unwrap(), "container.name").as_deref(),
        Some("web-2")
    );

    // Stopped: its series end at once.
    let saved = tempfile::tempdir().unwrap();
    let dirs = f.dirs_of(A);
    assert!(!dirs.is_empty());
    for (i, d) in dirs.iter().enumerate() {
        copy_tree(d, &saved.path().join(i.to_string()));
        std::fs::remove_dir_all(d).unwrap();
    }
    let (b4, r) = f.cycle(T0 + 30_000_000_000);
    r.unwrap();
    assert!(
        resource(&b4, A).is_none(),
        "a stopped container is not reported"
    );
    assert!(resource(&b4, k8s_id).is_some());
    assert_eq!(
        f.collector.tracked_count(),
        containers - 1,
        "no state is kept for it either"
    );

    // Restarted: same path, new directory, new start time.
    for (i, d) in dirs.iter().enumerate() {
        copy_tree(&saved.path().join(i.to_string()), d);
        let later =
            SystemTime::UNIX_EPOCH + Duration::from_nanos(start) + Duration::from_secs(3600);
        std::fs::File::open(d).unwrap().set_modified(later).unwrap();
    }
    let (b5, r) = f.cycle(T0 + 40_000_000_000);
    r.unwrap();
    let a5 = resource(&b5, A).unwrap();
    let new_start = metric(a5, "container.cpu.time").unwrap().points[0].start_unix_nanos;
    assert_eq!(
        new_start,
        start + 3_600_000_000_000,
        "a restarted container has a new start time"
    );
    assert!(
        metric(a5, "container.cpu.usage").is_none(),
        "no rate across a restart"
    );
}

/// Adds `secs` of user CPU time to container `id` in whichever file the layout has.
fn add_user_cpu(f: &Fixture, id: &str, secs: u64) {
    for d in f.dirs_of(id) {
        let v2 = d.join("cpu.stat");
        if let Ok(text) = std::fs::read_to_string(&v2)
            && text.contains("user_usec")
        {
            let text = text
                .lines()
                .map(|l| match l.split_once(' ') {
                    Some((k @ ("user_usec" | "usage_usec"), v)) => {
                        format!("{k} {}", v.parse::<u64>().unwrap() + secs * 1_000_000)
                    }
                    _ => l.to_owned(),
                })
                .collect::<Vec<_>>()
                .join("\n");
            std::fs::write(&v2, text + "\n").unwrap();
        }
        let stat = d.join("cpuacct.stat");
        if let Ok(text) = std::fs::read_to_string(&stat) {
            let text = text
                .lines()
                .map(|l| match l.split_once(' ') {
                    Some(("user", v)) => {
                        format!("user {}", v.parse::<u64>().unwrap() + secs * 100)
                    }
                    _ => l.to_owned(),
                })
                .collect::<Vec<_>>()
                .join("\n");
            std::fs::write(&stat, text + "\n").unwrap();
        }
        for file in ["cpuacct.usage_user", "cpuacct.usage"] {
            let p = d.join(file);
            if let Ok(text) = std::fs::read_to_string(&p) {
                let v: u64 = text.trim().parse().unwrap();
                std::fs::write(&p, format!("{}\n", v + secs * 1_000_000_000)).unwrap();
            }
        }
    }
}

#[test]
fn cgroup_v2_fixture() {
    check_layout("cgroup-v2", cgroup::Layout::V2, B, true, 4);
    // The runtime comes from the path where metadata is missing.
    let mut f = Fixture::new("cgroup-v2");
    let (b, _) = f.cycle(T0);
    assert_eq!(
        attr(resource(&b, B).unwrap(), "container.runtime.name").as_deref(),
        Some("containerd")
    );
    assert_eq!(
        attr(resource(&b, A).unwrap(), "container.name"),
        None,
        "reported by ID without metadata"
    );
}

#[test]
fn cgroup_v1_fixture() {
    check_layout("cgroup-v1", cgroup::Layout::V1, C, false, 3);
}

#[test]
fn cgroup_hybrid_fixture() {
    check_layout("cgroup-hybrid", cgroup::Layout::Hybrid, C, true, 2);
}

/// The Podman container's figures, the same in the v1 and v2 trees; `psi`: whether the
/// layout has pressure files.
fn check_podman(b: &Batch, psi: bool) {
    let p = resource(b, PODMAN).unwrap();
    assert_eq!(attr(p, "container.runtime.name").as_deref(), Some("podman"));
    assert_eq!(attr(p, "k8s.pod.uid"), None, "not under kubepods");
    assert_eq!(
        attr(p, "container.name"),
        None,
        "no metadata source names Podman containers"
    );
    assert_eq!(value(p, "container.cpu.time", &[("cpu.mode", "user")]), 1.0);
    assert_eq!(
        value(p, "container.cpu.time", &[("cpu.mode", "system")]),
        0.5
    );
    assert_eq!(value(p, "container.cpu.limit", &[]), 2.0);
    assert_eq!(value(p, "container.cpu.throttling_data.periods", &[]), 40.0);
    assert_eq!(
        value(p, "container.cpu.throttling_data.throttled_periods", &[]),
        2.0
    );
    assert_eq!(
        value(p, "container.cpu.throttling_data.throttled_time", &[]),
        0.03
    );
    assert_eq!(value(p, "container.memory.usage", &[]), 40_000_000.0);
    assert_eq!(value(p, "container.memory.working_set", &[]), 34_000_000.0);
    assert_eq!(value(p, "container.memory.rss", &[]), 32_000_000.0);
    assert_eq!(value(p, "container.memory.limit", &[]), 268_435_456.0);
    assert_eq!(
        value(p, "container.memory.available", &[]),
        268_435_456.0 - 34_000_000.0
    );
    assert_eq!(value(p, "container.memory.oom_kills", &[]), 0.0);
    assert_eq!(
        value(
            p,
            "container.disk.io",
            &[("system.device", "vda"), ("disk.io.direction", "read")]
        ),
        65_536.0
    );
    assert_eq!(
        value(
            p,
            "container.disk.io",
            &[("system.device", "vda"), ("disk.io.direction", "write")]
        ),
        131_072.0
    );
    assert_eq!(value(p, "container.pids.count", &[]), 4.0);
    assert_eq!(value(p, "container.pids.limit", &[]), 2048.0);
    // pid 4545's own namespace.
    assert_eq!(
        value(
            p,
            "container.network.io",
            &[
                ("network.interface.name", "eth0"),
                ("network.io.direction", "receive")
            ]
        ),
        5000.0
    );
    assert_eq!(
        value(
            p,
            "container.network.io",
            &[
                ("network.interface.name", "eth0"),
                ("network.io.direction", "transmit")
            ]
        ),
        2500.0
    );
    assert_eq!(
        metric(p, "container.linux.pressure.stall_time").is_some(),
        psi
    );
    if psi {
        assert_eq!(
            value(
                p,
                "container.linux.pressure.stall_time",
                &[
                    ("system.linux.pressure.resource", "cpu"),
                    ("system.linux.pressure.kind", "some"),
                ],
            ),
            0.064
        );
    }
}

#[test]
fn cri_o_and_podman_systemd_containers_are_found_on_the_v2_tree_with_the_files_figures() {
    let mut f = Fixture::new("cgroup-v2");
    let (b, r) = f.cycle(T0);
    r.unwrap();
    let mut want = vec![A, B, CRIO, PODMAN];
    want.sort_unstable();
    assert_eq!(
        container_ids(&b),
        want,
        "each container once; crio-conmon-<id>.scope and libpod-conmon-<id>.scope are \
         monitors, not containers"
    );

    // CRI-O under a besteffort pod: runtime and pod UID from the path alone.
    let c = resource(&b, CRIO).unwrap();
    assert_eq!(attr(c, "container.runtime.name").as_deref(), Some("cri-o"));
    assert_eq!(attr(c, "k8s.pod.uid").as_deref(), Some(CRIO_POD_UID));
    assert_eq!(
        attr(c, "k8s.pod.name"),
        None,
        "no kubelet answer in this test"
    );
    assert_eq!(value(c, "container.cpu.time", &[("cpu.mode", "user")]), 3.0);
    assert_eq!(
        value(c, "container.cpu.time", &[("cpu.mode", "system")]),
        0.75
    );
    assert!(metric(c, "container.cpu.limit").is_none(), "cpu.max is max");
    assert!(
        metric(c, "container.cpu.throttling_data.periods").is_none(),
        "no CFS quota, no nr_periods in cpu.stat"
    );
    assert_eq!(value(c, "container.memory.usage", &[]), 30_000_000.0);
    assert_eq!(value(c, "container.memory.working_set", &[]), 25_000_000.0);
    assert_eq!(value(c, "container.memory.rss", &[]), 24_000_000.0);
    assert!(
        metric(c, "container.memory.limit").is_none()
            && metric(c, "container.memory.available").is_none(),
        "memory.max is max"
    );
    assert_eq!(value(c, "container.memory.oom_kills", &[]), 0.0);
    assert_eq!(
        value(
            c,
            "container.disk.io",
            &[("system.device", "sdb"), ("disk.io.direction", "read")]
        ),
        8192.0
    );
    assert_eq!(
        value(
            c,
            "container.disk.io",
            &[("system.device", "sdb"), ("disk.io.direction", "write")]
        ),
        4096.0
    );
    assert_eq!(value(c, "container.pids.count", &[]), 2.0);
    assert!(
        metric(c, "container.pids.limit").is_none(),
        "pids.max is max"
    );
    // pid 4444's own namespace.
    assert_eq!(
        value(
            c,
            "container.network.io",
            &[
                ("network.interface.name", "eth0"),
                ("network.io.direction", "receive")
            ]
        ),
        3000.0
    );
    assert_eq!(
        value(
            c,
            "container.network.io",
            &[
                ("network.interface.name", "lo"),
                ("network.io.direction", "transmit")
            ]
        ),
        2048.0
    );
    assert_eq!(
        value(
            c,
            "container.linux.pressure.stall_time",
            &[
                ("system.linux.pressure.resource", "cpu"),
                ("system.linux.pressure.kind", "some"),
            ],
        ),
        0.125
    );

    check_podman(&b, true);
}

#[test]
fn podman_cgroupfs_container_is_found_on_the_v1_tree_with_the_files_figures() {
    let mut f = Fixture::new("cgroup-v1");
    let (b, r) = f.cycle(T0);
    r.unwrap();
    let mut want = vec![A, C, PODMAN];
    want.sort_unstable();
    assert_eq!(
        container_ids(&b),
        want,
        "libpod_parent itself is not a container"
    );
    check_podman(&b, false);
}

/// What a CRI listing says about a containerd container of pod `web-7d9`.
fn cri_meta(runtime: Runtime) -> ContainerMeta {
    ContainerMeta {
        name: Some("app".into()),
        image_name: Some("docker.io/library/web".into()),
        image_tags: vec!["1.2".into()],
        runtime: Some(runtime),
        labels: vec![("app".into(), "web".into())],
        k8s: metadata::K8sMeta {
            pod_name: Some("web-7d9".into()),
            pod_uid: Some(UID.into()),
            namespace: Some("shop".into()),
            container_name: Some("app".into()),
        },
    }
}

#[test]
fn cri_names_its_containers_before_the_kubelet_and_after_docker() {
    let mut f = Fixture::new("cgroup-v2");
    f.cache.cri_replace(vec![
        (B.into(), cri_meta(Runtime::Containerd)),
        (CRIO.into(), cri_meta(Runtime::CriO)),
        (A.into(), cri_meta(Runtime::Containerd)),
    ]);
    f.cache.docker_upsert(A.into(), docker_meta());
    f.cache.kubelet_replace(
        vec![(
            B.into(),
            ContainerMeta {
                name: Some("from-kubelet".into()),
                ..cri_meta(Runtime::Containerd)
            },
        )],
        vec![],
    );
    let (b, r) = f.cycle(T0);
    r.unwrap();
    let k = resource(&b, B).unwrap();
    for (key, want) in [
        ("container.name", "app"),
        ("k8s.pod.name", "web-7d9"),
        ("k8s.pod.uid", UID),
        ("k8s.namespace.name", "shop"),
        ("k8s.container.name", "app"),
        ("container.image.name", "docker.io/library/web"),
        ("container.runtime.name", "containerd"),
        ("container.label.app", "web"),
    ] {
        assert_eq!(attr(k, key).as_deref(), Some(want), "{key}");
    }
    assert_eq!(
        attr(resource(&b, CRIO).unwrap(), "container.runtime.name").as_deref(),
        Some("cri-o")
    );
    assert_eq!(
        attr(resource(&b, A).unwrap(), "container.name").as_deref(),
        Some("web-1"),
        "Docker's entry comes first"
    );

    // The CRI forgets B (listed again without it): the kubelet's answer names it.
    f.cache
        .cri_replace(vec![(CRIO.into(), cri_meta(Runtime::CriO))]);
    let (b, _) = f.cycle(T0 + 1);
    assert_eq!(
        attr(resource(&b, B).unwrap(), "container.name").as_deref(),
        Some("from-kubelet")
    );
}

#[test]
fn a_podman_container_named_by_the_docker_api_is_podmans() {
    let mut f = Fixture::new("cgroup-v2");
    f.cache.docker_upsert(PODMAN.into(), docker_meta());
    let (b, _) = f.cycle(T0);
    let p = resource(&b, PODMAN).unwrap();
    assert_eq!(attr(p, "container.name").as_deref(), Some("web-1"));
    assert_eq!(
        attr(p, "container.runtime.name").as_deref(),
        Some("podman"),
        "the cgroup path (libpod-<id>.scope) names the runtime, not the API that answered"
    );
}

/// Fixture `f`'s containerd container B (`cri-containerd-<B>.scope`), moved away: returns
/// where it was and a copy of it.
fn take_away_containerd_b(f: &Fixture) -> (PathBuf, tempfile::TempDir) {
    let dir = f
        .dirs_of(B)
        .into_iter()
        .find(|d| {
            d.file_name()
                .unwrap()
                .to_str()
                .unwrap()
                .starts_with("cri-containerd-")
        })
        .unwrap();
    let saved = tempfile::tempdir().unwrap();
    copy_tree(&dir, saved.path());
    std::fs::remove_dir_all(&dir).unwrap();
    (dir, saved)
}

#[test]
fn a_new_container_is_held_back_one_cycle_while_the_cri_may_name_it() {
    let mut f = Fixture::new("cgroup-v2");
    let (dir, saved) = take_away_containerd_b(&f);
    f.cache.cri_replace(vec![]);
    let (b, _) = f.cycle(T0);
    assert!(resource(&b, B).is_none());
    copy_tree(saved.path(), &dir);
    let (b, _) = f.cycle(T0 + 1);
    assert!(
        resource(&b, B).is_none(),
        "first seen and unnamed: the CRI's next listing may name it"
    );
    f.cache
        .cri_replace(vec![(B.into(), cri_meta(Runtime::Containerd))]);
    let (b, _) = f.cycle(T0 + 2);
    assert_eq!(
        attr(resource(&b, B).unwrap(), "k8s.pod.name").as_deref(),
        Some("web-7d9")
    );

    // With the CRI failing, a new container is reported by ID at once.
    let mut f = Fixture::new("cgroup-v2");
    let (dir, saved) = take_away_containerd_b(&f);
    f.cache.cri_replace(vec![]);
    f.cache.set_cri_failing();
    let _ = f.cycle(T0);
    copy_tree(saved.path(), &dir);
    let (b, _) = f.cycle(T0 + 1);
    assert!(resource(&b, B).is_some());
}

#[test]
fn a_new_container_appears_in_the_next_cycle() {
    let mut f = Fixture::new("cgroup-v2");
    let dirs = f.dirs_of(A);
    let saved = tempfile::tempdir().unwrap();
    copy_tree(&dirs[0], saved.path());
    std::fs::remove_dir_all(&dirs[0]).unwrap();
    let (b, _) = f.cycle(T0);
    assert!(resource(&b, A).is_none());
    copy_tree(saved.path(), &dirs[0]);
    let (b, _) = f.cycle(T0 + 1);
    assert!(resource(&b, A).is_some());
}

#[test]
fn network_bytes_follow_the_container_to_its_next_process_in_the_same_cycle() {
    let mut f = Fixture::new("cgroup-v2");
    let rx = |b: &Batch| eth0_rx(b, A);
    let (b, r) = f.cycle(T0);
    r.unwrap();
    assert_eq!(rx(&b), 1000.0, "pid 4242's namespace");
    // Between limit refreshes the collector keeps the pid instead of reading
    // cgroup.procs. The process exits and another takes its place in the container.
    let proc = f.root.join("proc");
    copy_tree(&proc.join("4242"), &proc.join("5151"));
    // In a namespace of its own (the same namespace would show the same counters).
    let link = proc.join("5151/ns/net");
    std::fs::remove_file(&link).unwrap();
    std::os::unix::fs::symlink("net:[4026537777]", &link).unwrap();
    assert_eq!(
        f.collector.net.kept.counts(),
        (3, 3),
        "three processes, three namespaces"
    );
    let dev = proc.join("5151/net/dev");
    let text = std::fs::read_to_string(&dev).unwrap();
    std::fs::write(&dev, text.replace("eth0:     1000", "eth0:     7777")).unwrap();
    std::fs::remove_dir_all(proc.join("4242")).unwrap();
    let procs = f.file_of(A, "cgroup.procs");
    std::fs::write(&procs, "5151\n").unwrap();
    let (b, r) = f.cycle(T0 + 10_000_000_000);
    r.unwrap();
    assert_eq!(rx(&b), 7777.0, "the new process's namespace, without a gap");
    assert_eq!(
        f.collector.net.kept.counts(),
        (3, 3),
        "the gone process's directory and namespace file closed, the new one's kept"
    );
    // Read through the kept file from now on: what it says now, not at its opening.
    std::fs::write(&dev, text.replace("eth0:     1000", "eth0:     8888")).unwrap();
    let (b, r) = f.cycle(T0 + 20_000_000_000);
    r.unwrap();
    assert_eq!(rx(&b), 8888.0, "and kept");
}

#[test]
fn memory_events_is_read_again_only_after_it_changed_or_as_a_backstop_with_the_limits() {
    // kernfs reports a changed file but not a removed one, unlike the fixture's
    // filesystem: every removal below keeps a hard link to the watched file, so that no
    // watch ends on its own and only the collector's own handling is tested.
    let mut f = Fixture::new("cgroup-v2");
    // No kept files: a removed fixture file stays readable through a kept descriptor, where
    // kernfs answers `ENODEV` (the kept descriptors' own test covers that path).
    f.collector.fds.files = 0;
    let keep = tempfile::tempdir_in(&f.root).unwrap();
    let events = f.file_of(A, "memory.events");
    let dir_a = events.parent().unwrap().to_path_buf();
    let text = |n: u64| format!("low 0\nhigh 0\nmax 4\noom 2\noom_kill {n}\noom_group_kill 0\n");
    let ooms = |b: &Batch| {
        metric(resource(b, A).unwrap(), "container.memory.oom_kills")
            .map(|_| value(resource(b, A).unwrap(), "container.memory.oom_kills", &[]))
    };
    let watched = |f: &Fixture| {
        let t = f
            .collector
            .tracked
            .values()
            .find(|t| t.path.id == A)
            .unwrap();
        (t.oom.is_watched(), t.oom.is_stale())
    };
    let mut at = T0;
    let mut cycle = |f: &mut Fixture| {
        let (b, r) = f.cycle(at);
        r.unwrap();
        at += 10_000_000_000;
        b
    };
    // Cycle 1: watched before its first read.
    let first = ooms(&cycle(&mut f)).unwrap() as u64;
    assert_eq!(watched(&f), (true, false));
    // Cycle 2: a write raises an event: the new count is read.
    std::fs::write(&events, text(first + 3)).unwrap();
    assert_eq!(ooms(&cycle(&mut f)), Some((first + 3) as f64));
    // A new file put in place without an event on the watched one: not read until the
    // limits are due again (in the container's phase, at most LIMITS_EVERY cycles after the
    // last read), then read as a backstop.
    std::fs::hard_link(&events, keep.path().join("a-old")).unwrap();
    std::fs::write(dir_a.join("events.new"), text(first + 50)).unwrap();
    std::fs::rename(dir_a.join("events.new"), &events).unwrap();
    let limits_due_next = |f: &Fixture| {
        let t = f
            .collector
            .tracked
            .values()
            .find(|t| t.path.id == A)
            .unwrap();
        t.limits_due(f.collector.cycle + 1)
    };
    let mut skipped = 0;
    while !limits_due_next(&f) {
        skipped += 1;
        assert!(
            skipped < LIMITS_EVERY,
            "the limits are due within the period"
        );
        assert_eq!(
            ooms(&cycle(&mut f)),
            Some((first + 3) as f64),
            "cycle {}: not due",
            f.collector.cycle
        );
        assert_eq!(watched(&f), (true, false), "cycle {}", f.collector.cycle);
    }
    let b = cycle(&mut f);
    assert_eq!(ooms(&b), Some((first + 50) as f64), "read with the limits");
    // The memory controller disabled: no count, and the watch (on a file kernfs would
    // not report gone) is dropped; enabled again: the new file is read and watched.
    let current = std::fs::read_to_string(dir_a.join("memory.current")).unwrap();
    std::fs::hard_link(&events, keep.path().join("a-off")).unwrap();
    std::fs::remove_file(&events).unwrap();
    std::fs::remove_file(dir_a.join("memory.current")).unwrap();
    assert_eq!(ooms(&cycle(&mut f)), None, "no memory controller, no count");
    assert!(!watched(&f).0, "the watch is dropped");
    std::fs::write(dir_a.join("memory.current"), current).unwrap();
    std::fs::write(&events, text(first + 7)).unwrap();
    assert_eq!(
        ooms(&cycle(&mut f)),
        Some((first + 7) as f64),
        "the new file is read"
    );
    assert_eq!(watched(&f), (true, false), "and watched again");
    std::fs::write(&events, text(first + 8)).unwrap();
    assert_eq!(
        ooms(&cycle(&mut f)),
        Some((first + 8) as f64),
        "through the new watch"
    );
    // A container gone: the collector ends its watch (kernfs would not).
    let held = |f: &Fixture| f.collector.oom_watch.as_ref().unwrap().len();
    let before = held(&f);
    let dir_b = f
        .file_of(B, "memory.events")
        .parent()
        .unwrap()
        .to_path_buf();
    std::fs::hard_link(dir_b.join("memory.events"), keep.path().join("b")).unwrap();
    std::fs::remove_dir_all(&dir_b).unwrap();
    let b = cycle(&mut f);
    assert!(resource(&b, B).is_none());
    assert_eq!(held(&f), before - 1);
}

/// Rewrites `key`'s value in a `key value` control file of container `id`.
fn set_key(f: &Fixture, id: &str, file: &str, key: &str, value: u64) {
    let path = f.file_of(id, file);
    let text = std::fs::read_to_string(&path).unwrap();
    let mut found = false;
    let text: String = text
        .lines()
        .map(|l| match l.split_once(' ') {
            Some((k, _)) if k == key => {
                found = true;
                format!("{k} {value}\n")
            }
            _ => format!("{l}\n"),
        })
        .collect();
    assert!(found, "{key} in {}", path.display());
    std::fs::write(&path, text).unwrap();
}

#[test]
fn v1_costly_files_are_read_only_when_their_figures_may_have_moved_and_kept_in_between() {
    let mut f = Fixture::new("cgroup-v1");
    let vmstat = f.root.join("proc/vmstat");
    std::fs::write(&vmstat, "pgfault 10\noom_kill 5\n").unwrap();
    let mut at = T0;
    let mut cycle = |f: &mut Fixture| {
        let (b, r) = f.cycle(at);
        r.unwrap();
        at += 10_000_000_000;
        b
    };
    let limits_due_next = |f: &Fixture, id: &str| {
        let t = f
            .collector
            .tracked
            .values()
            .find(|t| t.path.id == id)
            .unwrap();
        t.limits_due(f.collector.cycle + 1)
    };
    // Until the next cycle reads neither container's limits (the backstop of every skip).
    let to_a_quiet_cycle = |f: &mut Fixture, cycle: &mut dyn FnMut(&mut Fixture) -> Batch| {
        while limits_due_next(f, A) || limits_due_next(f, C) {
            cycle(f);
        }
    };
    let figure = |b: &Batch, id: &str, name: &str| value(resource(b, id).unwrap(), name, &[]);
    let b = cycle(&mut f);
    assert_eq!(figure(&b, A, "container.memory.rss"), 67_108_864.0);
    assert_eq!(figure(&b, A, "container.memory.oom_kills"), 1.0);
    assert_eq!(
        figure(&b, A, "container.cpu.throttling_data.throttled_periods"),
        7.0
    );
    assert_eq!(
        figure(&b, C, "container.cpu.throttling_data.throttled_periods"),
        0.0
    );
    to_a_quiet_cycle(&mut f, &mut cycle);
    // The files change, but nothing that moves them did: A used no CPU time and its usage
    // stands, the host counted no OOM kill, C has no CPU quota. Only A's throttling (it has
    // a quota) is read; the rest is as last read, every metric still recorded.
    set_key(&f, A, "memory.stat", "total_rss", 1_000);
    set_key(&f, A, "memory.oom_control", "oom_kill", 9);
    set_key(&f, A, "cpu.stat", "nr_throttled", 8);
    set_key(&f, C, "cpu.stat", "nr_throttled", 3);
    set_key(&f, A, "cpuacct.stat", "system", 500);
    let blkio = f.file_of(A, "blkio.throttle.io_service_bytes_recursive");
    let blkio_text = std::fs::read_to_string(&blkio).unwrap();
    std::fs::write(
        &blkio,
        blkio_text.replace("Write 10485760", "Write 20971520"),
    )
    .unwrap();
    let user = |b: &Batch| {
        value(
            resource(b, A).unwrap(),
            "container.cpu.time",
            &[("cpu.mode", "user")],
        )
    };
    let written = |b: &Batch| {
        value(
            resource(b, A).unwrap(),
            "container.disk.io",
            &[("system.device", "vda"), ("disk.io.direction", "write")],
        )
    };
    std::fs::write(f.file_of(A, "pids.current"), "9\n").unwrap();
    let user_before = user(&b);
    let b = cycle(&mut f);
    assert_eq!(
        figure(&b, A, "container.pids.count"),
        3.0,
        "no CPU time used: pids.current skipped"
    );
    assert_eq!(
        user(&b),
        user_before,
        "no CPU time used: cpuacct.stat skipped"
    );
    assert_eq!(written(&b), 10_485_760.0, "no CPU time used: blkio skipped");
    assert_eq!(
        figure(&b, A, "container.memory.rss"),
        67_108_864.0,
        "memory.stat skipped"
    );
    assert_eq!(
        figure(&b, A, "container.memory.oom_kills"),
        1.0,
        "oom_control skipped"
    );
    assert_eq!(
        figure(&b, A, "container.cpu.throttling_data.throttled_periods"),
        8.0,
        "a quota: cpu.stat read"
    );
    assert_eq!(
        figure(&b, C, "container.cpu.throttling_data.throttled_periods"),
        0.0,
        "no quota: cpu.stat skipped"
    );
    // An OOM kill on the host: the count is read. CPU time used: memory.stat, the split,
    // blkio and the task count are read. (The files change after the quiet-making cycles,
    // which may have read the earlier changes at a limits read or a backstop.)
    to_a_quiet_cycle(&mut f, &mut cycle);
    std::fs::write(&vmstat, "pgfault 10\noom_kill 6\n").unwrap();
    set_key(&f, A, "memory.oom_control", "oom_kill", 12);
    set_key(&f, A, "memory.stat", "total_rss", 1_500);
    set_key(&f, A, "cpuacct.stat", "user", 900);
    set_key(&f, A, "cpuacct.stat", "system", 100);
    std::fs::write(
        &blkio,
        blkio_text.replace("Write 10485760", "Write 31457280"),
    )
    .unwrap();
    std::fs::write(f.file_of(A, "pids.current"), "11\n").unwrap();
    add_user_cpu(&f, A, 1);
    let b = cycle(&mut f);
    assert_eq!(
        figure(&b, A, "container.memory.oom_kills"),
        12.0,
        "host count moved"
    );
    assert_eq!(written(&b), 31_457_280.0, "CPU time used: blkio read");
    assert_eq!(
        figure(&b, A, "container.pids.count"),
        11.0,
        "CPU time used: pids.current read"
    );
    // 6 s in all, split 1000:100 ticks as read now: 5.45 s user, but system time never goes
    // back below its last 1 s: 5 s user. A split not read (400:100, or 400:500 if a backstop
    // read that one) would give 4.8 s or 4 s.
    assert_eq!(user(&b), 5.0, "CPU time used: cpuacct.stat read");
    assert_eq!(
        figure(&b, A, "container.memory.rss"),
        1_500.0,
        "CPU time moved"
    );
    // Usage moved alone: memory.stat is read.
    to_a_quiet_cycle(&mut f, &mut cycle);
    set_key(&f, A, "memory.stat", "total_rss", 2_000);
    std::fs::write(f.file_of(A, "memory.usage_in_bytes"), "70004096\n").unwrap();
    let b = cycle(&mut f);
    assert_eq!(
        figure(&b, A, "container.memory.rss"),
        2_000.0,
        "usage moved"
    );
    // Nothing moved, but a backstop is due: memory.stat is read with the limits, the files
    // whose skip rests on the kernel's accounting at the rarer backstop.
    let due_next = |f: &Fixture, id: &str, backstop: bool| {
        let t = f
            .collector
            .tracked
            .values()
            .find(|t| t.path.id == id)
            .unwrap();
        let next = f.collector.cycle + 1;
        if backstop {
            t.backstop_due(next)
        } else {
            t.limits_due(next)
        }
    };
    // Each case: the file changes right after a cycle of its kind, is not read until the
    // next one (within the period), and is read then.
    type Case<'a> = (&'a str, bool, &'a str, &'a str, u64, &'a str);
    let cases: [Case; 3] = [
        (
            A,
            false,
            "memory.stat",
            "total_rss",
            3_000,
            "container.memory.rss",
        ),
        (
            A,
            true,
            "memory.oom_control",
            "oom_kill",
            10,
            "container.memory.oom_kills",
        ),
        (
            C,
            true,
            "cpu.stat",
            "nr_throttled",
            4,
            "container.cpu.throttling_data.throttled_periods",
        ),
    ];
    for (id, backstop, file, key, new, metric) in cases {
        let what = format!("{file} of {id}");
        let mut b = cycle(&mut f);
        while due_next(&f, id, backstop) {
            b = cycle(&mut f);
        }
        let old = figure(&b, id, metric);
        assert_ne!(old, new as f64, "{what}");
        set_key(&f, id, file, key, new);
        let mut cycles = 0;
        while !due_next(&f, id, backstop) {
            assert_eq!(figure(&cycle(&mut f), id, metric), old, "{what}: not yet");
            cycles += 1;
            assert!(cycles <= BACKSTOP_EVERY, "{what}: due within its period");
        }
        assert_eq!(
            figure(&cycle(&mut f), id, metric),
            new as f64,
            "{what}: read when due"
        );
    }
    // Without the host's count, the OOM count is read every cycle.
    std::fs::remove_file(&vmstat).unwrap();
    to_a_quiet_cycle(&mut f, &mut cycle);
    set_key(&f, A, "memory.oom_control", "oom_kill", 11);
    let b = cycle(&mut f);
    assert_eq!(
        figure(&b, A, "container.memory.oom_kills"),
        11.0,
        "no host count"
    );
}

#[test]
fn the_hosts_counters_are_read_only_while_there_are_containers_to_gate() {
    let mut f = Fixture::new("cgroup-v1");
    std::fs::write(f.root.join("proc/vmstat"), "oom_kill 5\n").unwrap();
    let (_, r) = f.cycle(T0);
    r.unwrap();
    assert_eq!(f.collector.counters.now.ooms, Some(5));
    for id in [A, C, PODMAN] {
        for d in f.dirs_of(id) {
            std::fs::remove_dir_all(d).unwrap();
        }
    }
    let (b, r) = f.cycle(T0 + 10_000_000_000);
    r.unwrap();
    assert_eq!(b.resources.len(), 1, "the host alone");
    assert_eq!(
        f.collector.counters.now,
        memo::HostCounts::default(),
        "no container: /proc/vmstat not read"
    );
}

/// A pressure file's text whose `some` and `full` totals are both `total` microseconds.
fn psi_line(total: u64) -> String {
    format!(
        "some avg10=0.00 avg60=0.00 avg300=0.00 total={total}\nfull avg10=0.00 avg60=0.00 avg300=0.00 total={total}\n"
    )
}

/// The hybrid fixture with the host's pressure files, cycled 10 s apart.
struct PressureCase {
    f: Fixture,
    /// The host's `/proc/pressure`.
    host: PathBuf,
    at: u64,
}

impl PressureCase {
    fn new() -> Self {
        let f = Fixture::new("cgroup-hybrid");
        let host = f.root.join("proc/pressure");
        std::fs::create_dir_all(&host).unwrap();
        for r in ["cpu", "memory", "io"] {
            std::fs::write(host.join(r), psi_line(1_000)).unwrap();
        }
        Self { f, host, at: T0 }
    }

    fn cycle(&mut self) -> Batch {
        let (b, r) = self.f.cycle(self.at);
        r.unwrap();
        self.at += 10_000_000_000;
        b
    }

    /// Cycles until A's next cycle is not one that reads its limits (and with them its
    /// backstop reads).
    fn until_limits_not_next(&mut self) {
        while {
            let c = &self.f.collector;
            let t = c.tracked.values().find(|t| t.path.id == A).unwrap();
            t.limits_due(c.cycle + 1)
        } {
            self.cycle();
        }
    }

    /// A's stall time of resource `r` and `kind`, seconds.
    fn stall(b: &Batch, r: &str, kind: &str) -> f64 {
        value(
            resource(b, A).unwrap(),
            "container.linux.pressure.stall_time",
            &[
                ("system.linux.pressure.resource", r),
                ("system.linux.pressure.kind", kind),
            ],
        )
    }
}

#[test]
fn a_pressure_file_is_read_again_only_after_the_hosts_stall_total_for_it_moved() {
    let mut p = PressureCase::new();
    let stall = PressureCase::stall;
    let b = p.cycle();
    assert!((stall(&b, "memory", "some") - 0.0012).abs() < 1e-9);
    p.until_limits_not_next();
    // The container's file moves, the host's total does not (as the kernel never shows):
    // not read, its last figures recorded.
    let file = p.f.file_of(A, "memory.pressure");
    std::fs::write(&file, psi_line(5_000_000)).unwrap();
    let b = p.cycle();
    assert!(
        (stall(&b, "memory", "some") - 0.0012).abs() < 1e-9,
        "skipped"
    );
    assert!(
        (stall(&b, "memory", "full") - 0.0008).abs() < 1e-9,
        "skipped"
    );
    // A memory stall somewhere on the host: read.
    p.until_limits_not_next();
    std::fs::write(p.host.join("memory"), psi_line(1_001)).unwrap();
    let b = p.cycle();
    assert_eq!(stall(&b, "memory", "some"), 5.0, "the host's total moved");
    assert_eq!(stall(&b, "memory", "full"), 5.0);
    // The other resources' files were not touched: read or not, the same figures.
    assert!((stall(&b, "cpu", "some") - 0.332412).abs() < 1e-9);
}

#[test]
fn cpu_pressure_is_read_again_only_after_the_container_used_cpu_time() {
    let mut p = PressureCase::new();
    let cpu_stall = |b: &Batch| PressureCase::stall(b, "cpu", "some");
    let first = cpu_stall(&p.cycle());
    // Twice: the first read of the task count after the first cycle sets the CPU time the
    // next ones compare with.
    for _ in 0..2 {
        p.until_limits_not_next();
        p.cycle();
    }
    p.until_limits_not_next();
    // A CPU stall somewhere on the host, and the container's file moves, but the container
    // used no CPU time: not read, its last figure recorded.
    let file = p.f.file_of(A, "cpu.pressure");
    std::fs::write(&file, psi_line(5_000_000)).unwrap();
    std::fs::write(p.host.join("cpu"), psi_line(1_001)).unwrap();
    let b = p.cycle();
    assert!(
        (cpu_stall(&b) - first).abs() < 1e-9,
        "skipped: {}",
        cpu_stall(&b)
    );
    // The container ran: read.
    p.until_limits_not_next();
    let usage = p.f.file_of(A, "cpuacct.usage");
    let ns: u64 = std::fs::read_to_string(&usage)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    std::fs::write(&usage, format!("{}\n", ns + 1_000_000)).unwrap();
    std::fs::write(p.host.join("cpu"), psi_line(1_002)).unwrap();
    let b = p.cycle();
    assert_eq!(cpu_stall(&b), 5.0, "the container used CPU time");
}

#[test]
fn containers_sharing_a_network_namespace_read_it_once_and_report_the_same_counters() {
    // Once with A's process dying at the end, once with the CRI-O container's: whatever
    // order the walk takes, one of the two runs has the dead one after the live reader.
    for dies in [A, CRIO] {
        shared_namespace_case(dies);
    }
}

fn shared_namespace_case(dies: &str) {
    let mut f = Fixture::new("cgroup-v2");
    let rx = eth0_rx;
    let (b, r) = f.cycle(T0);
    r.unwrap();
    let (a, crio, podman) = (rx(&b, A), rx(&b, CRIO), rx(&b, PODMAN));
    assert!(a != crio && a != podman, "three namespaces, three figures");
    // The CRI-O container's process joins A's namespace (as a pod's containers share
    // one), but its own net/dev file says otherwise: the kernel would never show that,
    // so whichever container is read second reporting the first one's figure proves
    // the namespace was read once. A new process, so its namespace is looked up again.
    let proc = f.root.join("proc");
    copy_tree(&proc.join("4444"), &proc.join("4646"));
    std::fs::remove_dir_all(proc.join("4444")).unwrap();
    let link = proc.join("4646/ns/net");
    std::fs::remove_file(&link).unwrap();
    std::os::unix::fs::symlink("net:[4026536242]", &link).unwrap();
    let procs = f.file_of(CRIO, "cgroup.procs");
    std::fs::write(&procs, "4646\n").unwrap();
    let (b, r) = f.cycle(T0 + 10_000_000_000);
    r.unwrap();
    let (a2, crio2) = (rx(&b, A), rx(&b, CRIO));
    assert_eq!(a2, crio2, "one namespace, one read, one figure");
    assert!(
        a2 == a || a2 == crio,
        "{a2} is one of the two files' figures"
    );
    assert_eq!(
        rx(&b, PODMAN),
        podman,
        "another namespace is read on its own"
    );
    assert_eq!(
        f.collector.net.by_ns.len(),
        2,
        "A's (and CRI-O's), Podman's"
    );
    // One of the two dies, its cgroup stays a while: it must not go on reporting the
    // namespace it was last seen in; the other now reads the namespace itself.
    let (gone, lives) = if dies == A {
        ("4242", CRIO)
    } else {
        ("4646", A)
    };
    std::fs::remove_dir_all(proc.join(gone)).unwrap();
    let (b, r) = f.cycle(T0 + 20_000_000_000);
    r.unwrap();
    // The namespace is read through the descriptor kept from its first read (the kernel
    // shows one namespace's counters whichever process's file is opened).
    assert_eq!(rx(&b, lives), a2, "{lives} still reports the namespace");
    assert!(
        metric(resource(&b, dies).unwrap(), "container.network.io").is_none(),
        "{dies} without a live process reports no network counters"
    );
}

#[test]
fn kept_descriptors_stay_within_the_budget_read_fresh_figures_and_close_with_their_container() {
    let open =
        |c: &ContainerCollector| -> usize { c.tracked.values().map(|t| t.fds.open_count()).sum() };
    let held = |c: &ContainerCollector| -> (usize, usize) {
        let files: usize = c.tracked.values().map(|t| t.fds.kept_files()).sum();
        let dirs: usize = c.tracked.values().map(|t| t.fds_charged).sum();
        // The network reads' process directories and namespace files.
        let (procs, net_files) = c.net.kept.counts();
        (dirs + files + procs + net_files, files + net_files)
    };
    // The budget's books: what it says is held is what the containers hold, within it.
    let check = |c: &ContainerCollector, what: &str| {
        let (fds, files) = held(c);
        assert_eq!((c.fds.fds_used, c.fds.files_used), (fds, files), "{what}");
        assert!(c.fds.fds_used <= c.fds.fds, "{what}");
        assert!(c.fds.files_used <= c.fds.files, "{what}");
        assert!(open(c) <= c.fds.fds_used, "{what}: {} open", open(c));
        let per = c.hierarchy.kept_fds_per_container(true);
        for t in c.tracked.values() {
            assert!(t.fds.open_count() <= per, "{what}");
            if !t.fds.keeps_dirs() {
                assert_eq!(t.fds.open_count(), t.fds.kept_files(), "{what}");
            }
        }
    };
    for (name, fds, files) in ["cgroup-v2", "cgroup-v1", "cgroup-hybrid"]
        .into_iter()
        .flat_map(|n| [0, 7, usize::MAX].map(|d| (n, d)))
        .flat_map(|(n, d)| [0, 3, usize::MAX].map(|f| (n, d, f)))
    {
        let what = format!("{name}, {fds} descriptors, {files} files");
        let mut f = Fixture::new(name);
        f.collector.fds = cgroup::KeepBudget {
            fds,
            files,
            ..cgroup::KeepBudget::none()
        };
        let (b, r) = f.cycle(T0);
        r.unwrap();
        let cpu0 = value(
            resource(&b, A).unwrap(),
            "container.cpu.time",
            &[("cpu.mode", "user")],
        );
        check(&f.collector, &what);
        let kept_after =
            |c: &ContainerCollector| c.tracked.values().all(|t| t.fds.kept_files() > 0);
        let unbounded = fds == usize::MAX && files == usize::MAX;
        assert!(
            !kept_after(&f.collector),
            "{what}: files are kept from their second read in a row"
        );
        // A kept descriptor reads the file as it is now.
        add_user_cpu(&f, A, 5);
        let (b, r) = f.cycle(T0 + 10_000_000_000);
        r.unwrap();
        let cpu1 = value(
            resource(&b, A).unwrap(),
            "container.cpu.time",
            &[("cpu.mode", "user")],
        );
        assert!(cpu1 > cpu0 + 4.0, "{what}: {cpu0} then {cpu1}");
        check(&f.collector, &what);
        assert_eq!(kept_after(&f.collector), unbounded, "{what}");
        if files == 3 {
            let used = f.collector.fds.files_used;
            assert!(used <= 3, "{what}");
            if fds == usize::MAX {
                assert_eq!(used, 3, "{what}: the file budget is the bound");
            }
        }
        add_user_cpu(&f, A, 5);
        let (b, r) = f.cycle(T0 + 20_000_000_000);
        r.unwrap();
        let cpu2 = value(
            resource(&b, A).unwrap(),
            "container.cpu.time",
            &[("cpu.mode", "user")],
        );
        assert!(cpu2 > cpu1 + 4.0, "{what}: {cpu1} then {cpu2}");
        // Removed while its descriptors are held open: no stale series, nothing kept.
        for d in f.dirs_of(A) {
            std::fs::remove_dir_all(d).unwrap();
        }
        let (b, _) = f.cycle(T0 + 30_000_000_000);
        assert!(resource(&b, A).is_none(), "{what}");
        let (b, _) = f.cycle(T0 + 40_000_000_000);
        assert!(resource(&b, A).is_none(), "{what}");
        let c = &f.collector;
        assert!(!c.tracked.keys().any(|k| k.contains(A)), "{what}");
        check(c, &what);
        // Every container gone: the whole budget is back.
        for id in [B, C, CRIO, PODMAN] {
            for d in f.dirs_of(id) {
                std::fs::remove_dir_all(d).unwrap();
            }
        }
        let _ = f.cycle(T0 + 50_000_000_000);
        let c = &f.collector;
        assert_eq!(c.tracked_count(), 0, "{what}");
        assert_eq!((c.fds.fds_used, c.fds.files_used), (0, 0), "{what}");
    }
}

#[test]
fn unreadable_files_are_errors_but_the_other_containers_are_reported() {
    let mut f = Fixture::new("cgroup-v2");
    let dir = f.dirs_of(A).remove(0);
    std::fs::write(dir.join("memory.current"), "lots\n").unwrap();
    let (b, r) = f.cycle(T0);
    let e = r.unwrap_err().to_string();
    assert!(e.contains("memory.current"), "{e}");
    assert!(resource(&b, B).is_some());
}

#[test]
fn config_defaults_and_validation() {
    let c = ContainerConfig::default();
    assert!(c.enabled && c.docker.enabled && !c.kubelet.enabled && c.labels.is_empty());
    assert!(
        c.cri.enabled && c.cri.socket.is_none(),
        "CRI where its socket exists"
    );
    let roots = Roots {
        proc: "/p".into(),
        sys: "/host/sys".into(),
        rootfs: "/".into(),
    };
    assert_eq!(c.cgroup_root(&roots), PathBuf::from("/host/sys/fs/cgroup"));
    let bad = ContainerConfig {
        cgroup_root: Some("/nonexistent/cgroup".into()),
        ..ContainerConfig::default()
    };
    let (field, e) = bad.validate().unwrap_err();
    assert_eq!(field, "cgroup_root");
    assert!(e.contains("/nonexistent/cgroup"), "{e}");
    let bad = ContainerConfig {
        labels: vec!["a b".into()],
        ..ContainerConfig::default()
    };
    assert!(bad.validate().is_err());
    let y: Result<ContainerConfig, _> = serde_yaml_ng::from_str("enabled: true\nlabelz: []\n");
    assert!(y.unwrap_err().to_string().contains("labelz"));
}

#[test]
fn every_container_metric_is_in_the_metrics_reference() {
    crate::test_support::assert_in_metrics_reference(DESCS.iter().chain(EXTRA_DESCS).copied());
}

#[test]
fn no_cgroup_hierarchy_means_no_collector() {
    let dir = tempfile::tempdir().unwrap();
    let roots = Roots {
        proc: dir.path().into(),
        sys: dir.path().into(),
        rootfs: dir.path().into(),
    };
    let c = ContainerCollector::start(
        &ContainerConfig::default(),
        &roots,
        Arc::new(Resource::default()),
    )
    .unwrap();
    assert!(c.is_none());
}

#[test]
fn a_container_created_after_the_cycles_time_starts_no_later_than_its_first_points() {
    // The fixture's directories were made just now, after this cycle's time (2023): as a
    // container created between a cycle's timestamp and its walk.
    let mut f = Fixture::new("cgroup-v2");
    let (b, _) = f.cycle(1_700_000_000_000_000_000);
    let mut cumulative = 0;
    for r in &b.resources {
        for m in &r.metrics {
            for p in &m.points {
                assert!(
                    p.start_unix_nanos <= b.time_unix_nanos,
                    "{}: start {} after the point's time {}",
                    m.name,
                    p.start_unix_nanos,
                    b.time_unix_nanos
                );
                cumulative += usize::from(p.start_unix_nanos != 0);
            }
        }
    }
    assert!(
        cumulative > 0,
        "the fixture's containers have cumulative points"
    );
}
