use super::*;
use crate::collectors::host::test_support::{metric, read, run, value};

#[test]
fn real_stat_parses_total_per_cpu_btime_and_processes() {
    let s = parse_stat(&read("real", "proc/stat")).unwrap();
    assert_eq!(s.per_cpu.len(), 2);
    assert_eq!(s.per_cpu[1].0, 1);
    assert!(s.btime.unwrap() > 1_600_000_000);
    assert!(s.processes.unwrap() > 0);
    // irq + softirq columns fold into interrupt.
    let t = parse_stat("cpu  1 2 3 4 5 6 7 8 9 10\n").unwrap().total;
    assert_eq!(
        t,
        CpuTimes {
            user: 1,
            nice: 2,
            system: 3,
            idle: 4,
            iowait: 5,
            interrupt: 13,
            steal: 8
        }
    );
}

#[test]
fn stat_without_cpu_line_or_with_garbage_is_an_error() {
    assert!(parse_stat("intr 1 2\n").is_err());
    assert!(parse_stat("cpu  1 x 3 4\n").is_err());
    assert!(parse_stat("cpu  1 2\n").is_err());
    assert!(parse_btime("cpu 1 2 3 4\n").is_err());
}

#[test]
fn many_cpus_fixture_has_64_cpus() {
    let s = parse_stat(&read("many-cpus", "proc/stat")).unwrap();
    assert_eq!(s.per_cpu.len(), 64);
    assert_eq!(s.per_cpu[63].0, 63);
}

#[test]
fn cpuinfo_gives_mhz_and_physical_cores() {
    let text = read("real", "proc/cpuinfo");
    let mhz = parse_cpuinfo_mhz(&text);
    assert_eq!(mhz.len(), 2);
    assert!(mhz[0].1 > 100.0);
    assert_eq!(parse_cpuinfo_physical_cores(&text), Some(2));
    let ht = "processor\t: 0\nphysical id\t: 0\ncore id\t: 0\n\nprocessor\t: 1\nphysical id\t: 0\ncore id\t: 0\n";
    assert_eq!(parse_cpuinfo_physical_cores(ht), Some(1));
    assert_eq!(parse_cpuinfo_physical_cores("processor : 0\n"), None);
}

#[test]
fn first_cycle_reports_utilization_since_boot_and_second_cycle_the_delta() {
    let mut c = CpuCollector::new(CpuOptions { per_cpu: true });
    let (b, r) = run(&mut c, "real");
    r.unwrap();
    // Since boot: cpu0's user ticks over all of cpu0's ticks.
    let cpu0 = parse_stat(&read("real", "proc/stat")).unwrap().per_cpu[0].1;
    let u = value(
        &b,
        "system.cpu.utilization",
        &[("cpu.mode", "user"), ("cpu.logical_number", "0")],
    );
    assert!(
        (u - cpu0.user as f64 / cpu0.total() as f64).abs() < 1e-9,
        "{u}"
    );
    let t = value(
        &b,
        "system.cpu.time",
        &[("cpu.mode", "user"), ("cpu.logical_number", "0")],
    );
    assert!((t - cpu0.user as f64 / 100.0).abs() < 1e-9);
    assert_eq!(metric(&b, "system.cpu.time").points.len(), 14);
    assert_eq!(value(&b, "system.cpu.logical.count", &[]), 2.0);
    assert_eq!(value(&b, "system.cpu.physical.count", &[]), 2.0);
    let f = value(&b, "system.cpu.frequency", &[("cpu.logical_number", "1")]);
    assert!((f - 2_599_998_000.0).abs() < 1.0, "{f}");
    for p in &metric(&b, "system.cpu.utilization").points {
        assert!((0.0..=1.0).contains(&p.value.as_f64()));
    }
    // Same file again: no tick passed, so no utilization points.
    let (b, r) = run(&mut c, "real");
    r.unwrap();
    assert!(b.host_metric("system.cpu.utilization").is_none());
    assert!(b.host_metric("system.cpu.time").is_some());
}

#[test]
fn cpuinfo_frequencies_are_read_once_per_period_and_repeated_in_every_cycle_between() {
    use crate::collectors::host::test_support::{batch, ctx};
    // A copy of the real fixture (no cpufreq directory: frequencies come from cpuinfo)
    // whose cpuinfo can change between cycles.
    let dir = tempfile::tempdir().unwrap();
    let proc = dir.path().join("proc");
    std::fs::create_dir_all(&proc).unwrap();
    for f in ["stat", "cpuinfo"] {
        std::fs::write(proc.join(f), read("real", &format!("proc/{f}"))).unwrap();
    }
    let roots = crate::collectors::Roots {
        proc: proc.clone(),
        sys: dir.path().join("sys"),
        rootfs: dir.path().join("rootfs"),
    };
    let mut c = CpuCollector::new(CpuOptions { per_cpu: true });
    let freq = |c: &mut CpuCollector| {
        let mut b = batch();
        c.collect(&ctx(roots.clone()), &mut b).unwrap();
        value(&b, "system.cpu.frequency", &[("cpu.logical_number", "1")])
    };
    let first = freq(&mut c);
    assert!((first - 2_599_998_000.0).abs() < 1.0, "{first}");
    let changed = read("real", "proc/cpuinfo").replace("2599.998", "1234.500");
    assert_ne!(changed, read("real", "proc/cpuinfo"));
    std::fs::write(proc.join("cpuinfo"), changed).unwrap();
    // Within the period: not read again, and the last figures are recorded again.
    for _ in 0..3 {
        assert_eq!(freq(&mut c), first);
    }
    // Once the period has passed, the new figure is read.
    c.cpuinfo_pace.every = Duration::ZERO;
    let now = freq(&mut c);
    assert!((now - 1_234_500_000.0).abs() < 1.0, "{now}");
}

#[test]
fn machine_wide_mode_has_no_logical_number() {
    let mut c = CpuCollector::new(CpuOptions { per_cpu: false });
    let (b, r) = run(&mut c, "many-cpus");
    r.unwrap();
    let m = metric(&b, "system.cpu.time");
    assert_eq!(m.points.len(), 7);
    assert!(
        m.points
            .iter()
            .all(|p| p.attributes.get("cpu.logical_number").is_none())
    );
    let sum: f64 = metric(&b, "system.cpu.utilization")
        .points
        .iter()
        .map(|p| p.value.as_f64())
        .sum();
    assert!((sum - 1.0).abs() < 1e-9);
    assert_eq!(value(&b, "system.cpu.logical.count", &[]), 64.0);
    // No sysfs topology in this fixture: falls back to cpuinfo.
    assert_eq!(value(&b, "system.cpu.physical.count", &[]), 32.0);
}

fn times() -> impl proptest::strategy::Strategy<Value = CpuTimes> {
    use proptest::prelude::*;
    // Small values (realistic deltas) and huge ones (near-wrap counters) alike.
    let tick = prop_oneof![0u64..1_000, any::<u64>()];
    proptest::array::uniform7(tick).prop_map(|v| CpuTimes {
        user: v[0],
        nice: v[1],
        system: v[2],
        idle: v[3],
        iowait: v[4],
        interrupt: v[5],
        steal: v[6],
    })
}

proptest::proptest! {
    /// Whatever the counters did between two cycles (went forward, went backwards as
    /// iowait can (proc(5)), reset with a CPU hotplug, jumped near `u64::MAX`), the
    /// utilization of each mode is in [0, 1], the modes sum to 1 when any point is
    /// recorded, and a mode whose counter went backwards had no share.
    #[test]
    fn utilization_stays_a_partition_whatever_the_counters_do(
        prev in times(),
        now in times(),
    ) {
        let mut b = crate::collectors::host::test_support::batch();
        record_times(&mut b, None, &now, &prev);
        let Some(m) = b.host_metric("system.cpu.utilization") else {
            // No point only when no mode moved forward.
            for ((_, t), (_, p)) in now.modes().into_iter().zip(prev.modes()) {
                proptest::prop_assert!(t <= p);
            }
            return Ok(());
        };
        proptest::prop_assert_eq!(m.points.len(), 7);
        let mut sum = 0.0;
        for (p, ((_, t), (_, was))) in m.points.iter().zip(now.modes().into_iter().zip(prev.modes())) {
            let v = p.value.as_f64();
            proptest::prop_assert!((0.0..=1.0).contains(&v), "{} out of range", v);
            if t <= was {
                proptest::prop_assert_eq!(v, 0.0);
            }
            sum += v;
        }
        proptest::prop_assert!((sum - 1.0).abs() < 1e-9, "shares sum to {}", sum);
    }
}

#[test]
fn a_mode_going_backwards_does_not_inflate_the_others() {
    // iowait fell by 60 ticks while user and system each rose by 50: 100 ticks passed in
    // the modes that moved, half each (not 50/40 = 1.25 clamped to 1 each).
    let prev = CpuTimes {
        user: 100,
        system: 100,
        iowait: 100,
        ..CpuTimes::default()
    };
    let now = CpuTimes {
        user: 150,
        system: 150,
        iowait: 40,
        ..CpuTimes::default()
    };
    let mut b = crate::collectors::host::test_support::batch();
    record_times(&mut b, None, &now, &prev);
    assert_eq!(
        value(&b, "system.cpu.utilization", &[("cpu.mode", "user")]),
        0.5
    );
    assert_eq!(
        value(&b, "system.cpu.utilization", &[("cpu.mode", "system")]),
        0.5
    );
    assert_eq!(
        value(&b, "system.cpu.utilization", &[("cpu.mode", "iowait")]),
        0.0
    );
}
