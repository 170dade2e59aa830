//! One container collection cycle over synthetic cgroup trees of 10, 100 and 1000 containers,
//! in the cgroup v2 layout (Kubernetes systemd shape, two containers per pod) and the v1
//! layout (Docker cgroupfs shape), each container with its full set of control files and a
//! process with a `/proc/<pid>/net/dev`: in v2 the two containers of a pod share the pod's
//! network namespace (as on a Kubernetes node; since 2026-12-04, before which each had its
//! own), in v1 every container has its own.
//!
//! Run: `cargo bench -p faultline-benches --bench containers`. Besides criterion's wall-clock
//! figures it prints, per tree, the CPU time of one cycle (from `/proc/thread-self/schedstat`
//! over 50 cycles: the collector is single-threaded) and the resident memory the collector
//! adds (RSS after building it and running 3 cycles, holding the last batch, minus RSS
//! before). `FAULTLINE_BENCH_TREES=v1/1000` measures only the trees whose name contains that
//! text, so that each tree's memory is measured in a fresh process. Figures go to docs/PERFORMANCE.md with the date and the command.
//!
//! The synthetic trees are regular files in a temporary directory: reading them costs the
//! system calls but not the kernel's work of producing cgroup files (`memory.stat` is the
//! expensive one on a real cgroupfs, and every open allocates a `seq_file`), so real hosts
//! cost more per container. The **real** trees (`FAULTLINE_BENCH_TREES=real/1000`, also
//! `real/10` and `real/100`; only when asked for by name, as they need root) are real cgroups
//! with a sleeping process each, made and removed by the bench itself (`real.rs` says how),
//! read with the collector's roots at the real `/proc`, `/sys` and `/`.
//!
//! Settings, each an environment variable: `FAULTLINE_BENCH_KEEP_FILES=1`
//! (`containers.keep_files_open: true`), `FAULTLINE_BENCH_KEPT_MEMORY=<size>`
//! (`containers.kept_files_memory`), `FAULTLINE_BENCH_BUSY=1` (real trees: the second
//! container of each pod wakes twice a second), `FAULTLINE_BENCH_INTERVAL_MS=<ms>` (a pause
//! before each of the 50 cycles whose CPU time is measured: with busy containers, 1000 makes
//! every cycle see them move, as the agent's 10 s cycles would; back to back, cycles of
//! 50 ms see a container waking twice a second move in one cycle of ten).

#![allow(clippy::expect_used, clippy::unwrap_used)] // A benchmark that cannot build its tree has nothing to measure.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use faultline_agent::collectors::container::cgroup::Hierarchy;
use faultline_agent::collectors::container::metadata::{ContainerMeta, MetadataCache};
use faultline_agent::collectors::container::paths::Runtime;
use faultline_agent::collectors::container::{ContainerCollector, ContainerConfig};
use faultline_agent::collectors::{Collector, Context, Roots};
use faultline_benches::thread_cpu_ns;
use faultline_exporters::model::{Attributes, Batch, Resource, now_unix_nanos};

const PSI: &str = "some avg10=0.12 avg60=0.05 avg300=0.01 total=332412\nfull avg10=0.10 avg60=0.04 avg300=0.01 total=329402\n";
const NET_HDR: &str = "Inter-|   Receive                                                |  Transmit\n face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n";

fn id(i: usize) -> String {
    format!("{i:064x}")
}

fn uid(i: usize) -> String {
    format!("{:08x}-0000-4000-8000-{:012x}", i, i)
}

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

fn v2_memory_stat(i: usize) -> String {
    let mut s = String::new();
    for (k, v) in [
        ("anon", 67_108_864 + i),
        ("file", 4_000_000),
        ("kernel", 300_000),
        ("kernel_stack", 32_768),
        ("pagetables", 200_000),
        ("sec_pagetables", 0),
        ("percpu", 1_000),
        ("sock", 0),
        ("vmalloc", 0),
        ("shmem", 0),
        ("zswap", 0),
        ("zswapped", 0),
        ("file_mapped", 1_236_992),
        ("file_dirty", 0),
        ("file_writeback", 0),
        ("swapcached", 0),
        ("anon_thp", 0),
        ("file_thp", 0),
        ("shmem_thp", 0),
        ("inactive_anon", 67_108_864),
        ("active_anon", 4_096),
        ("inactive_file", 2_000_000),
        ("active_file", 2_000_000),
        ("unevictable", 0),
        ("slab_reclaimable", 100_000),
        ("slab_unreclaimable", 100_000),
        ("slab", 200_000),
        ("workingset_refault_anon", 0),
        ("workingset_refault_file", 0),
        ("workingset_activate_anon", 0),
        ("workingset_activate_file", 0),
        ("workingset_restore_anon", 0),
        ("workingset_restore_file", 0),
        ("workingset_nodereclaim", 0),
        ("pgscan", 0),
        ("pgsteal", 0),
        ("pgfault", 9_547),
        ("pgmajfault", 23),
        ("pgrefill", 0),
        ("pgactivate", 0),
        ("pgdeactivate", 0),
        ("pglazyfree", 0),
        ("pglazyfreed", 0),
        ("thp_fault_alloc", 0),
    ] {
        writeln!(s, "{k} {v}").unwrap();
    }
    s
}

fn v1_memory_stat(i: usize) -> String {
    let mut s = String::new();
    let fields = [
        ("cache", 5_533_696),
        ("rss", 33_792_000 + i),
        ("rss_huge", 0),
        ("shmem", 0),
        ("mapped_file", 1_236_992),
        ("dirty", 0),
        ("writeback", 0),
        ("workingset_refault_anon", 0),
        ("workingset_refault_file", 0),
        ("swap", 0),
        ("swapcached", 0),
        ("pgpgin", 10_601),
        ("pgpgout", 1_000),
        ("pgfault", 9_547),
        ("pgmajfault", 23),
        ("inactive_anon", 33_787_904),
        ("active_anon", 4_096),
        ("inactive_file", 5_533_696),
        ("active_file", 0),
        ("unevictable", 0),
    ];
    for (k, v) in fields {
        writeln!(s, "{k} {v}").unwrap();
    }
    writeln!(
        s,
        "hierarchical_memory_limit 134217728\nhierarchical_memsw_limit 268435456"
    )
    .unwrap();
    for (k, v) in fields {
        writeln!(s, "total_{k} {v}").unwrap();
    }
    s
}

/// `/proc/<pid>` of a container's process, in network namespace number `netns` (the
/// inode its `ns/net` link shows).
fn proc_entries(root: &Path, pid: usize, netns: usize) {
    let dir = root.join(format!("proc/{pid}"));
    std::fs::create_dir_all(dir.join("ns")).unwrap();
    std::os::unix::fs::symlink(
        format!("net:[{}]", 4_026_532_000 + netns),
        dir.join("ns/net"),
    )
    .unwrap();
    write(
        &dir.join("net/dev"),
        &format!(
            "{NET_HDR}    lo: 1048576 20 0 0 0 0 0 0 1048576 20 0 0 0 0 0 0\n  eth0: {pid} 10 0 0 0 0 0 0 500 5 0 0 0 0 0 0\n"
        ),
    );
}

fn common(root: &Path) {
    std::fs::create_dir_all(root.join("proc/1/ns")).unwrap();
    std::os::unix::fs::symlink("net:[4026531840]", root.join("proc/1/ns/net")).unwrap();
    std::fs::create_dir_all(root.join("sys/dev/block")).unwrap();
    std::os::unix::fs::symlink(
        "../../devices/virtual/block/vda",
        root.join("sys/dev/block/254:0"),
    )
    .unwrap();
}

/// A v2 tree: `kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod<uid>.slice/
/// cri-containerd-<id>.scope`, two containers per pod, plus a few system services.
fn v2_tree(root: &Path, n: usize) {
    common(root);
    let cg = root.join("sys/fs/cgroup");
    write(
        &cg.join("cgroup.controllers"),
        "cpuset cpu io memory hugetlb pids rdma misc\n",
    );
    for s in [
        "ssh.service",
        "systemd-journald.service",
        "containerd.service",
        "kubelet.service",
    ] {
        write(
            &cg.join("system.slice").join(s).join("cpu.stat"),
            "usage_usec 1\nuser_usec 1\nsystem_usec 0\n",
        );
    }
    for i in 0..n {
        let pod = uid(i / 2).replace('-', "_");
        let dir = cg.join(format!(
            "kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{pod}.slice/cri-containerd-{}.scope",
            id(i)
        ));
        let pid = 10_000 + i;
        write(
            &dir.join("cpu.stat"),
            &format!(
                "usage_usec {}\nuser_usec {}\nsystem_usec 100000\nnice_usec 0\nnr_periods 100\nnr_throttled 7\nthrottled_usec 250000\nnr_bursts 0\nburst_usec 0\n",
                1_100_000 + i,
                1_000_000 + i
            ),
        );
        write(&dir.join("cpu.max"), "50000 100000\n");
        write(
            &dir.join("memory.current"),
            &format!("{}\n", 70_000_000 + i),
        );
        write(&dir.join("memory.stat"), &v2_memory_stat(i));
        write(&dir.join("memory.max"), "134217728\n");
        write(
            &dir.join("memory.events"),
            "low 0\nhigh 0\nmax 0\noom 0\noom_kill 0\noom_group_kill 0\n",
        );
        write(
            &dir.join("io.stat"),
            "254:0 rbytes=4096 wbytes=10485760 rios=1 wios=80 dbytes=0 dios=0\n",
        );
        write(&dir.join("pids.current"), "3\n");
        write(&dir.join("pids.max"), "1024\n");
        for f in ["cpu.pressure", "memory.pressure", "io.pressure"] {
            write(&dir.join(f), PSI);
        }
        write(&dir.join("cgroup.procs"), &format!("{pid}\n"));
        // A pod's containers share its network namespace, as on a Kubernetes node.
        proc_entries(root, pid, i / 2);
    }
}

/// A v1 tree in the Docker cgroupfs shape: `<controller>/docker/<id>` in cpu, cpuacct,
/// memory, blkio, pids (separate controllers, as on this project's hosts).
fn v1_tree(root: &Path, n: usize) {
    common(root);
    let cg = root.join("sys/fs/cgroup");
    for c in ["cpu", "cpuacct", "memory", "blkio", "pids", "systemd"] {
        write(&cg.join(c).join("cgroup.procs"), "1\n");
    }
    for i in 0..n {
        let rel = format!("docker/{}", id(i));
        let pid = 10_000 + i;
        let d = |c: &str| cg.join(c).join(&rel);
        write(
            &d("cpuacct").join("cpuacct.usage"),
            &format!("{}\n", 5_000_000_000u64 + i as u64),
        );
        write(&d("cpuacct").join("cpuacct.usage_user"), "4000000000\n");
        write(&d("cpuacct").join("cpuacct.usage_sys"), "1000000000\n");
        write(
            &d("cpu").join("cpu.stat"),
            "nr_periods 100\nnr_throttled 7\nthrottled_time 250000000\nnr_bursts 0\nburst_time 0\n",
        );
        write(&d("cpu").join("cpu.cfs_quota_us"), "50000\n");
        write(&d("cpu").join("cpu.cfs_period_us"), "100000\n");
        write(
            &d("memory").join("memory.usage_in_bytes"),
            &format!("{}\n", 40_000_000 + i),
        );
        write(&d("memory").join("memory.limit_in_bytes"), "134217728\n");
        write(&d("memory").join("memory.stat"), &v1_memory_stat(i));
        write(
            &d("memory").join("memory.oom_control"),
            "oom_kill_disable 0\nunder_oom 0\noom_kill 0\n",
        );
        write(&d("memory").join("cgroup.procs"), &format!("{pid}\n"));
        write(
            &d("blkio").join("blkio.throttle.io_service_bytes_recursive"),
            "254:0 Read 4096\n254:0 Write 10485760\n254:0 Sync 10489856\n254:0 Async 0\n254:0 Discard 0\n254:0 Total 10489856\nTotal 10489856\n",
        );
        write(&d("pids").join("pids.current"), "3\n");
        write(&d("pids").join("pids.max"), "max\n");
        // Docker: each container its own namespace.
        proc_entries(root, pid, pid);
    }
}

#[path = "containers/real.rs"]
mod real;

/// What a tree is made of; dropping it removes it.
#[allow(dead_code)] // Held for its `Drop`.
enum Made {
    Synthetic(tempfile::TempDir),
    Real(real::RealTree),
}

struct Setup {
    _made: Made,
    ctx: Context,
    hierarchy: Hierarchy,
    ids: Vec<String>,
}

fn setup(layout: &str, n: usize) -> Setup {
    if layout == "real" {
        let busy = std::env::var("FAULTLINE_BENCH_BUSY").is_ok_and(|v| v == "1");
        let tree = match real::RealTree::create(busy, n, id, uid) {
            Ok(t) => t,
            Err(e) => panic!("{e}"),
        };
        return Setup {
            ctx: Context {
                roots: Roots {
                    proc: PathBuf::from("/proc"),
                    sys: PathBuf::from("/sys"),
                    rootfs: PathBuf::from("/"),
                },
                boot_time_unix_nanos: 1,
            },
            hierarchy: tree.hierarchy().clone(),
            ids: tree.ids().to_vec(),
            _made: Made::Real(tree),
        };
    }
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    match layout {
        "v2" => v2_tree(&root, n),
        _ => v1_tree(&root, n),
    }
    let roots = Roots {
        proc: root.join("proc"),
        sys: root.join("sys"),
        rootfs: root.clone(),
    };
    Setup {
        ctx: Context {
            roots,
            boot_time_unix_nanos: 1,
        },
        hierarchy: Hierarchy::detect(&root.join("sys/fs/cgroup")).unwrap(),
        ids: (0..n).map(id).collect(),
        _made: Made::Synthetic(dir),
    }
}

fn host() -> Arc<Resource> {
    Arc::new(Resource {
        attributes: Attributes::new()
            .with("service.name", "faultline")
            .with("service.version", "0.1.0")
            .with(
                "service.instance.id",
                "3d1219c7-c4c5-404a-aa1f-6d2a48adfda4",
            )
            .with("host.name", "node-1")
            .with("host.id", "3d1219c7c4c5404aaa1f6d2a48adfda4")
            .with("host.arch", "amd64")
            .with("os.type", "linux"),
    })
}

fn collector(s: &Setup) -> ContainerCollector {
    let h = s.hierarchy.clone();
    let cache = Arc::new(MetadataCache::default());
    // Every container named, as with a reachable runtime.
    for (i, id) in s.ids.iter().enumerate() {
        cache.docker_upsert(
            id.clone(),
            ContainerMeta {
                name: Some(format!("app-{i}")),
                image_name: Some("registry.example/team/app".into()),
                image_tags: vec!["1.2.3".into()],
                runtime: Some(Runtime::Containerd),
                ..ContainerMeta::default()
            },
        );
    }
    // As `faultline run` does when it starts the container collector.
    faultline_agent::collectors::container::raise_open_file_limit();
    // `FAULTLINE_BENCH_KEEP_FILES=1`: measure `containers.keep_files_open: true`.
    let mut cfg = ContainerConfig {
        keep_files_open: std::env::var("FAULTLINE_BENCH_KEEP_FILES").is_ok_and(|v| v == "1"),
        ..ContainerConfig::default()
    };
    // `FAULTLINE_BENCH_KEPT_MEMORY=<size>`: another `containers.kept_files_memory`.
    if let Ok(v) = std::env::var("FAULTLINE_BENCH_KEPT_MEMORY") {
        cfg.kept_files_memory = v.parse().unwrap();
    }
    ContainerCollector::with_cache(h, host(), cache, &cfg)
}

fn cycle(c: &mut ContainerCollector, ctx: &Context, host: &Arc<Resource>) -> Batch {
    let mut b = Batch::new(now_unix_nanos(), host.clone(), 1);
    c.collect(ctx, &mut b).unwrap();
    b
}

/// This process's resident set, bytes.
fn rss_bytes() -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap();
    let kb: u64 = s
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .unwrap()
        .trim()
        .trim_end_matches(" kB")
        .trim()
        .parse()
        .unwrap();
    kb * 1024
}

/// Kernel memory charged to this process's memory cgroup, bytes, where the kernel says:
/// v1 `memory.kmem.usage_in_bytes`, v2 the `kernel` line of `memory.stat`. Kept cgroup files
/// hold theirs there (a `seq_file` page each); so does anything else in the same cgroup.
fn kmem_bytes() -> Option<u64> {
    let cgroups = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    for line in cgroups.lines() {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        if controllers.split(',').any(|c| c == "memory") {
            let f = format!("/sys/fs/cgroup/memory{path}/memory.kmem.usage_in_bytes");
            return std::fs::read_to_string(f).ok()?.trim().parse().ok();
        }
        if controllers.is_empty()
            && let Ok(stat) = std::fs::read_to_string(format!("/sys/fs/cgroup{path}/memory.stat"))
        {
            return stat
                .lines()
                .find_map(|l| l.strip_prefix("kernel "))
                .and_then(|v| v.trim().parse().ok());
        }
    }
    None
}

/// The trees to measure: all synthetic ones, or those whose name contains
/// `FAULTLINE_BENCH_TREES` (for example `v1/1000`), so that one tree's memory can be measured
/// in a process of its own. A real tree only when the variable names it (`real/1000`).
fn wanted(name: &str) -> bool {
    match std::env::var("FAULTLINE_BENCH_TREES") {
        Ok(f) => name.contains(f.as_str()),
        Err(_) => !name.starts_with("real"),
    }
}

fn containers(c: &mut Criterion) {
    let host = host();
    if ["real/10", "real/100", "real/1000"]
        .iter()
        .any(|t| wanted(t))
    {
        // Before any other thread starts: a Ctrl-C then removes the real tree too.
        real::guard_signals();
    }
    for layout in ["v2", "v1", "real"] {
        for n in [10usize, 100, 1000] {
            if !wanted(&format!("{layout}/{n}")) {
                continue;
            }
            let s = setup(layout, n);
            // Memory the collector adds: its state plus one batch.
            let (rss0, kmem0) = (rss_bytes(), kmem_bytes());
            let mut col = collector(&s);
            let mut last = None;
            for _ in 0..3 {
                // As in the agent: a cycle's batch is exported and dropped before the next.
                drop(last.take());
                last = Some(cycle(&mut col, &s.ctx, &host));
            }
            let (rss1, kmem1) = (rss_bytes(), kmem_bytes());
            let kmem = match (kmem0, kmem1) {
                (Some(a), Some(b)) => format!(
                    ", {:+.1} MiB kernel memory (the memory cgroup's)",
                    (b as f64 - a as f64) / (1024.0 * 1024.0)
                ),
                _ => String::new(),
            };
            let batch = last.unwrap();
            assert_eq!(batch.resources.len(), n + 1, "every container reported");
            let points = batch.point_count();
            drop(batch);
            // CPU per cycle.
            let cycles = 50;
            // `FAULTLINE_BENCH_INTERVAL_MS=<ms>`: that long between the measured cycles (the
            // sleep uses no CPU of this thread), so that the containers' own activity between
            // two cycles is as between two of the agent's, not a back-to-back cycle's worth.
            let pause = std::env::var("FAULTLINE_BENCH_INTERVAL_MS")
                .ok()
                .map(|ms| std::time::Duration::from_millis(ms.parse().unwrap()));
            let t0 = thread_cpu_ns();
            for _ in 0..cycles {
                if let Some(p) = pause {
                    #[allow(clippy::disallowed_methods)] // The bench's own thread, no runtime.
                    std::thread::sleep(p);
                }
                std::hint::black_box(cycle(&mut col, &s.ctx, &host));
            }
            let cpu_ms = (thread_cpu_ns() - t0) as f64 / cycles as f64 / 1e6;
            println!(
                "containers/{layout}/{n}: {cpu_ms:.2} ms CPU per cycle, {points} points, +{:.1} MiB RSS (collector state + one batch){kmem}",
                rss1.saturating_sub(rss0) as f64 / (1024.0 * 1024.0)
            );
            c.bench_function(&format!("containers/{layout}/{n}"), |b| {
                b.iter(|| cycle(&mut col, &s.ctx, &host))
            });
        }
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20);
    targets = containers
}
criterion_main!(benches);
