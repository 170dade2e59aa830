//! Memory from `/proc/meminfo`.
//!
//! `system.memory.usage` splits `MemTotal` into four states that sum to the limit:
//! `free` (`MemFree`), `buffers` (`Buffers`), `cached` (`Cached + SReclaimable`, as `free(1)`
//! counts it) and `used` (the rest). In the rare case where the kernel's numbers overlap
//! (`used` would be negative, seen in some containers' fake meminfo) `used` is clamped to 0
//! and the sum exceeds the limit.

use faultline_exporters::model::{Attributes, Batch, MetricDesc};

use super::{keyed_lines, parse_u64_field};
use crate::collectors::file::KeptFile;
use crate::collectors::{CollectError, Collector, Context, parse_error};

/// `system.memory.usage`.
pub const MEMORY_USAGE: MetricDesc = MetricDesc::updown(
    "system.memory.usage",
    "By",
    "Memory in use by state (used, free, buffers, cached); the states sum to the limit.",
);
/// `system.memory.limit`.
pub const MEMORY_LIMIT: MetricDesc = MetricDesc::updown(
    "system.memory.limit",
    "By",
    "Total usable memory (MemTotal).",
);
/// `system.memory.utilization`.
pub const MEMORY_UTILIZATION: MetricDesc = MetricDesc::gauge(
    "system.memory.utilization",
    "1",
    "Share of total memory in each state (0 to 1).",
);
/// `system.memory.linux.available`.
pub const MEMORY_AVAILABLE: MetricDesc = MetricDesc::updown(
    "system.memory.linux.available",
    "By",
    "Memory available for new workloads without swapping (MemAvailable).",
);
/// `system.memory.linux.shared`.
pub const MEMORY_SHARED: MetricDesc = MetricDesc::updown(
    "system.memory.linux.shared",
    "By",
    "Shared memory, mostly tmpfs and shared anonymous mappings (Shmem).",
);
/// `system.memory.linux.slab.usage`.
pub const MEMORY_SLAB: MetricDesc = MetricDesc::updown(
    "system.memory.linux.slab.usage",
    "By",
    "Kernel slab memory by state (reclaimable, unreclaimable).",
);

/// Every metric this collector emits.
pub const DESCS: &[&MetricDesc] = &[
    &MEMORY_USAGE,
    &MEMORY_LIMIT,
    &MEMORY_UTILIZATION,
    &MEMORY_AVAILABLE,
    &MEMORY_SHARED,
    &MEMORY_SLAB,
];

/// The `/proc/meminfo` fields used, in bytes. Optional ones are absent on old kernels.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MemInfo {
    /// `MemTotal`.
    pub total: u64,
    /// `MemFree`.
    pub free: u64,
    /// `MemAvailable` (Linux 3.14+).
    pub available: Option<u64>,
    /// `Buffers`.
    pub buffers: u64,
    /// `Cached`.
    pub cached: u64,
    /// `SReclaimable`.
    pub sreclaimable: Option<u64>,
    /// `SUnreclaim`.
    pub sunreclaim: Option<u64>,
    /// `Shmem`.
    pub shmem: Option<u64>,
}

impl MemInfo {
    /// `(system.memory.state, bytes)`; the four states sum to `total` (see module docs).
    pub fn states(&self) -> [(&'static str, u64); 4] {
        let cached = self.cached.saturating_add(self.sreclaimable.unwrap_or(0));
        let used = self
            .total
            .saturating_sub(self.free)
            .saturating_sub(self.buffers)
            .saturating_sub(cached);
        [
            ("used", used),
            ("free", self.free),
            ("buffers", self.buffers),
            ("cached", cached),
        ]
    }
}

/// Parses `/proc/meminfo`. `MemTotal`, `MemFree`, `Buffers` and `Cached` are required.
pub fn parse_meminfo(text: &str) -> Result<MemInfo, String> {
    let mut m = MemInfo::default();
    let mut required = 0u8;
    for (key, rest) in keyed_lines(text, b':') {
        let (slot, bit): (&mut u64, u8) = match key {
            "MemTotal" => (&mut m.total, 1),
            "MemFree" => (&mut m.free, 2),
            "Buffers" => (&mut m.buffers, 4),
            "Cached" => (&mut m.cached, 8),
            "MemAvailable" => (m.available.insert(0), 0),
            "SReclaimable" => (m.sreclaimable.insert(0), 0),
            "SUnreclaim" => (m.sunreclaim.insert(0), 0),
            "Shmem" => (m.shmem.insert(0), 0),
            _ => continue,
        };
        let mut fields = rest.split_ascii_whitespace();
        let n = parse_u64_field(fields.next().unwrap_or(""), key)?;
        *slot = match fields.next() {
            Some("kB") => n.saturating_mul(1024),
            None => n,
            Some(u) => return Err(format!("{key}: unknown unit {u:?}")),
        };
        required |= bit;
    }
    if required != 0b1111 {
        return Err("missing one of MemTotal, MemFree, Buffers, Cached".to_owned());
    }
    Ok(m)
}

/// Collector of `system.memory.*`.
#[derive(Debug, Default)]
pub struct MemoryCollector {
    file: KeptFile,
}

impl Collector for MemoryCollector {
    fn name(&self) -> &'static str {
        "host.memory"
    }

    fn collect(&mut self, ctx: &Context, batch: &mut Batch) -> Result<(), CollectError> {
        let path = ctx.roots.proc("meminfo");
        let text = self.file.read(&path)?;
        let m = parse_meminfo(text).map_err(|e| parse_error(&path, e))?;
        let host = batch.host();
        let states = m.states();
        for (state, bytes) in states {
            host.record(
                &MEMORY_USAGE,
                Attributes::new().with("system.memory.state", state),
                bytes,
            );
        }
        host.record(&MEMORY_LIMIT, Attributes::new(), m.total);
        if m.total > 0 {
            for (state, bytes) in states {
                let attrs = Attributes::new().with("system.memory.state", state);
                host.record(&MEMORY_UTILIZATION, attrs, bytes as f64 / m.total as f64);
            }
        }
        if let Some(a) = m.available {
            host.record(&MEMORY_AVAILABLE, Attributes::new(), a);
        }
        if let Some(s) = m.shmem {
            host.record(&MEMORY_SHARED, Attributes::new(), s);
        }
        for (state, v) in [
            ("reclaimable", m.sreclaimable),
            ("unreclaimable", m.sunreclaim),
        ] {
            if let Some(v) = v {
                host.record(
                    &MEMORY_SLAB,
                    Attributes::new().with("system.memory.linux.slab.state", state),
                    v,
                );
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collectors::host::test_support::{metric, read, run, value};

    #[test]
    fn real_meminfo_states_sum_to_total() {
        let m = parse_meminfo(&read("real", "proc/meminfo")).unwrap();
        assert!(m.total > 0 && m.available.is_some() && m.sreclaimable.is_some());
        let sum: u64 = m.states().iter().map(|(_, b)| b).sum();
        assert_eq!(sum, m.total);
    }

    #[test]
    fn missing_required_field_or_bad_number_is_an_error() {
        assert!(parse_meminfo("MemTotal: 10 kB\nMemFree: 5 kB\n").is_err());
        assert!(
            parse_meminfo("MemTotal: x kB\nMemFree: 5 kB\nBuffers: 1 kB\nCached: 1 kB\n").is_err()
        );
        let m =
            parse_meminfo("MemTotal: 10 kB\nMemFree: 5 kB\nBuffers: 1 kB\nCached: 1 kB\n").unwrap();
        assert_eq!(m.total, 10240);
        assert_eq!(m.available, None);
    }

    #[test]
    fn overlapping_numbers_clamp_used_to_zero() {
        let m =
            parse_meminfo("MemTotal: 10 kB\nMemFree: 8 kB\nBuffers: 1 kB\nCached: 4 kB\n").unwrap();
        assert_eq!(m.states()[0], ("used", 0));
    }

    #[test]
    fn collector_records_states_limit_and_linux_extras() {
        let (b, r) = run(&mut MemoryCollector::default(), "real");
        r.unwrap();
        let limit = value(&b, "system.memory.limit", &[]);
        let sum: f64 = metric(&b, "system.memory.usage")
            .points
            .iter()
            .map(|p| p.value.as_f64())
            .sum();
        assert_eq!(sum, limit);
        let usum: f64 = metric(&b, "system.memory.utilization")
            .points
            .iter()
            .map(|p| p.value.as_f64())
            .sum();
        assert!((usum - 1.0).abs() < 1e-9);
        assert_eq!(
            value(
                &b,
                "system.memory.linux.slab.usage",
                &[("system.memory.linux.slab.state", "reclaimable")]
            ),
            115_640.0 * 1024.0
        );
        assert!(value(&b, "system.memory.linux.available", &[]) > 0.0);
        assert!(b.host_metric("system.memory.linux.shared").is_some());
    }
}
