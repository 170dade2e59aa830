//! From a container's [`Sample`] to points in its batch entry, one function per metric
//! family ([`super::descriptors`]). Figures the sample lacks (a file absent, no limit) are
//! left out, not recorded as zero.

use std::collections::HashMap;

use faultline_exporters::model::{AttrValue, Attributes, ResourceMetrics};

use super::cgroup::{IoDevice, Sample};
use super::descriptors::{
    CPU_LIMIT, CPU_THROTTLED_PERIODS, CPU_THROTTLED_TIME, CPU_THROTTLING_PERIODS, CPU_TIME,
    CPU_USAGE, DISK_IO, MEMORY_AVAILABLE, MEMORY_LIMIT, MEMORY_RSS, MEMORY_USAGE,
    MEMORY_WORKING_SET, NETWORK_IO, OOM_KILLS, PIDS_COUNT, PIDS_LIMIT, PSI_STALL_TIME, UPTIME,
};
use super::network::IfaceBytes;
use crate::collectors::Roots;

fn mode_attrs(mode: &'static str) -> Attributes {
    attrs([("cpu.mode", mode.into())])
}

/// Point attributes in a vector of exactly their size: at 1000 containers a batch holds
/// tens of thousands of them, and a growing vector would reserve four slots for one or two.
fn attrs<const N: usize>(pairs: [(&'static str, AttrValue); N]) -> Attributes {
    Attributes(
        pairs
            .into_iter()
            .map(|(k, v)| (std::borrow::Cow::Borrowed(k), v))
            .collect(),
    )
}

/// CPU time by mode (or in total where the modes are unknown), its rate since `prev` (time,
/// user, system), the CPU limit and CFS throttling.
pub(super) fn cpu(rm: &mut ResourceMetrics, s: &Sample, prev: Option<(u64, u64, u64)>, now: u64) {
    if let (Some(u), Some(sy)) = (s.cpu_user_ns, s.cpu_system_ns) {
        rm.record(&CPU_TIME, mode_attrs("user"), u as f64 / 1e9);
        rm.record(&CPU_TIME, mode_attrs("system"), sy as f64 / 1e9);
        if let Some((t0, u0, s0)) = prev {
            let dt = now.saturating_sub(t0) as f64;
            if dt > 0.0 {
                rm.record(
                    &CPU_USAGE,
                    mode_attrs("user"),
                    u.saturating_sub(u0) as f64 / dt,
                );
                rm.record(
                    &CPU_USAGE,
                    mode_attrs("system"),
                    sy.saturating_sub(s0) as f64 / dt,
                );
            }
        }
    } else if let Some(t) = s.cpu_total_ns {
        rm.record(&CPU_TIME, Attributes::new(), t as f64 / 1e9);
    }
    if let Some(l) = s.cpu_limit {
        rm.record(&CPU_LIMIT, Attributes::new(), l);
    }
    if let Some(t) = s.throttling {
        rm.record(&CPU_THROTTLING_PERIODS, Attributes::new(), t.periods);
        rm.record(
            &CPU_THROTTLED_PERIODS,
            Attributes::new(),
            t.throttled_periods,
        );
        rm.record(
            &CPU_THROTTLED_TIME,
            Attributes::new(),
            t.throttled_ns as f64 / 1e9,
        );
    }
}

/// Memory usage, working set, RSS, what is left below the limit, the limit, and OOM kills.
pub(super) fn memory(rm: &mut ResourceMetrics, s: &Sample) {
    if let Some(m) = s.memory {
        rm.record(&MEMORY_USAGE, Attributes::new(), m.usage);
        rm.record(&MEMORY_WORKING_SET, Attributes::new(), m.working_set());
        rm.record(&MEMORY_RSS, Attributes::new(), m.rss);
        if let Some(av) = m.available() {
            rm.record(&MEMORY_AVAILABLE, Attributes::new(), av);
        }
        if let Some(l) = m.limit {
            rm.record(&MEMORY_LIMIT, Attributes::new(), l);
        }
    }
    if let Some(k) = s.oom_kills {
        rm.record(&OOM_KILLS, Attributes::new(), k);
    }
}

/// Tasks and the task limit.
pub(super) fn tasks(rm: &mut ResourceMetrics, s: &Sample) {
    if let Some(p) = s.pids_current {
        rm.record(&PIDS_COUNT, Attributes::new(), p);
    }
    if let Some(p) = s.pids_limit {
        rm.record(&PIDS_LIMIT, Attributes::new(), p);
    }
}

/// Cumulative stall time per resource and kind (`some`, `full`).
pub(super) fn pressure(rm: &mut ResourceMetrics, s: &Sample) {
    for (resource, p) in ["cpu", "memory", "io"].into_iter().zip(&s.pressure) {
        let Some(p) = p else { continue };
        for (kind, line) in [("some", p.some), ("full", p.full)] {
            let Some(l) = line else { continue };
            let a = attrs([
                ("system.linux.pressure.resource", resource.into()),
                ("system.linux.pressure.kind", kind.into()),
            ]);
            rm.record(&PSI_STALL_TIME, a, l.total_us as f64 / 1e6);
        }
    }
}

/// Time since the container's `start`.
pub(super) fn uptime(rm: &mut ResourceMetrics, now: u64, start: u64) {
    rm.record(
        &UPTIME,
        Attributes::new(),
        now.saturating_sub(start) as f64 / 1e9,
    );
}

/// Bytes read and written per block device, named from `{sys}/dev/block` (cached in
/// `devices`).
pub(super) fn disk(
    rm: &mut ResourceMetrics,
    io: &[IoDevice],
    devices: &mut HashMap<(u32, u32), String>,
    roots: &Roots,
) {
    for d in io {
        let dev = device_name(devices, roots, d.major, d.minor);
        for (dir, v) in [("read", d.read_bytes), ("write", d.write_bytes)] {
            let a = attrs([
                ("disk.io.direction", dir.into()),
                ("system.device", dev.to_owned().into()),
            ]);
            rm.record(&DISK_IO, a, v);
        }
    }
}

/// Bytes received and transmitted per interface of the container's network namespace.
pub(super) fn network(rm: &mut ResourceMetrics, ifaces: &[IfaceBytes]) {
    for i in ifaces {
        for (dir, v) in [("receive", i.receive), ("transmit", i.transmit)] {
            let a = attrs([
                ("network.interface.name", i.name.clone().into()),
                ("network.io.direction", dir.into()),
            ]);
            rm.record(&NETWORK_IO, a, v);
        }
    }
}

/// The device name of `major:minor` from `{sys}/dev/block`, cached in `devices`.
fn device_name<'a>(
    devices: &'a mut HashMap<(u32, u32), String>,
    roots: &Roots,
    major: u32,
    minor: u32,
) -> &'a str {
    devices.entry((major, minor)).or_insert_with(|| {
        std::fs::read_link(roots.sys(&format!("dev/block/{major}:{minor}")))
            .ok()
            .and_then(|p| p.file_name().and_then(|n| n.to_str()).map(str::to_owned))
            .unwrap_or_else(|| format!("{major}:{minor}"))
    })
}
