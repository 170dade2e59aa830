//! CPU: time per mode and utilization from `/proc/stat`, logical and physical CPU counts, and
//! the current frequency where the kernel exposes it.
//!
//! Times are in `USER_HZ` ticks (100 per second on every Linux ABI). `guest` and `guest_nice`
//! are already included in `user` and `nice`, so they are not reported apart. `interrupt` is
//! `irq + softirq`. Utilization is the share of each mode in the ticks that passed since the
//! previous cycle; on the first cycle "previous" is all zeros, so a single `collect` reports
//! the average since boot without sleeping. When no tick passed between two cycles no
//! utilization point is recorded for that CPU.
//!
//! Physical cores are the unique `(physical_package_id, core_id)` pairs under
//! `/sys/devices/system/cpu/cpu*/topology`, falling back to `/proc/cpuinfo`; they are read once
//! and again only when the number of logical CPUs changes (hotplug). Frequency comes from
//! `cpufreq/scaling_cur_freq` (kHz) per CPU, or `cpu MHz` in `/proc/cpuinfo` when there is no
//! cpufreq driver (virtual machines); with neither, no frequency is reported. The
//! `/proc/cpuinfo` fallback is read at most once per [`CPUINFO_EVERY`] and its last figures
//! are recorded in every cycle between, so the series stay continuous (as
//! [`crate::collectors::Throttled`] does for the scans): the kernel formats every CPU's full
//! description for each read (`show_cpuinfo` was 3 % of the agent's CPU time on 2 CPUs, and
//! the file grows by ~1.3 KiB per CPU), where a virtual machine's figure — the usual reason
//! there is no cpufreq driver — rarely changes.

use std::collections::HashSet;
use std::time::Duration;

use faultline_exporters::model::{Attributes, Batch, MetricDesc};

use super::{keyed_lines, parse_u64_field};
use crate::collectors::file::KeptFile;
use crate::collectors::{CollectError, Collector, Context, Pace, parse_error, read_into};

/// `system.cpu.time`.
pub const CPU_TIME: MetricDesc = MetricDesc::counter(
    "system.cpu.time",
    "s",
    "Seconds each logical CPU spent in each mode.",
);
/// `system.cpu.utilization`.
pub const CPU_UTILIZATION: MetricDesc = MetricDesc::gauge(
    "system.cpu.utilization",
    "1",
    "Share of CPU time spent in each mode since the previous collection (0 to 1).",
);
/// `system.cpu.logical.count`.
pub const CPU_LOGICAL_COUNT: MetricDesc = MetricDesc::updown(
    "system.cpu.logical.count",
    "{cpu}",
    "Number of logical (online) CPUs.",
);
/// `system.cpu.physical.count`.
pub const CPU_PHYSICAL_COUNT: MetricDesc = MetricDesc::updown(
    "system.cpu.physical.count",
    "{cpu}",
    "Number of physical CPU cores.",
);
/// `system.cpu.frequency`.
pub const CPU_FREQUENCY: MetricDesc = MetricDesc::gauge(
    "system.cpu.frequency",
    "Hz",
    "Current frequency of each logical CPU, where the kernel exposes it.",
);

/// Every metric this collector emits.
pub const DESCS: &[&MetricDesc] = &[
    &CPU_TIME,
    &CPU_UTILIZATION,
    &CPU_LOGICAL_COUNT,
    &CPU_PHYSICAL_COUNT,
    &CPU_FREQUENCY,
];

/// Ticks per second of `/proc/stat` (`USER_HZ`), fixed by the kernel ABI.
const USER_HZ: f64 = 100.0;

/// Cumulative ticks of one CPU (or all of them) per mode.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CpuTimes {
    /// `user` (includes `guest`).
    pub user: u64,
    /// `nice` (includes `guest_nice`).
    pub nice: u64,
    /// `system`.
    pub system: u64,
    /// `idle`.
    pub idle: u64,
    /// `iowait`.
    pub iowait: u64,
    /// `irq + softirq`.
    pub interrupt: u64,
    /// `steal`.
    pub steal: u64,
}

impl CpuTimes {
    /// `(cpu.mode, ticks)` in report order.
    fn modes(&self) -> [(&'static str, u64); 7] {
        [
            ("user", self.user),
            ("system", self.system),
            ("nice", self.nice),
            ("idle", self.idle),
            ("iowait", self.iowait),
            ("interrupt", self.interrupt),
            ("steal", self.steal),
        ]
    }

    #[cfg(test)]
    fn total(&self) -> u64 {
        self.modes()
            .iter()
            .map(|(_, t)| *t)
            .fold(0u64, u64::saturating_add)
    }
}

/// The parts of `/proc/stat` the host collectors use.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProcStat {
    /// The machine-wide `cpu` line.
    pub total: CpuTimes,
    /// The `cpuN` lines: `(N, times)`, in file order.
    pub per_cpu: Vec<(u32, CpuTimes)>,
    /// `btime`: boot time, Unix seconds.
    pub btime: Option<u64>,
    /// `processes`: forks since boot.
    pub processes: Option<u64>,
}

/// Parses `/proc/stat` into `out` (cleared first; its vector is reused between cycles).
pub fn parse_stat_into(text: &str, out: &mut ProcStat) -> Result<(), String> {
    out.per_cpu.clear();
    out.btime = None;
    out.processes = None;
    let mut saw_total = false;
    for line in text.lines() {
        let Some((key, rest)) = line.split_once(' ') else {
            continue;
        };
        if let Some(n) = key.strip_prefix("cpu") {
            let times = parse_cpu_fields(rest).map_err(|e| format!("{key}: {e}"))?;
            if n.is_empty() {
                out.total = times;
                saw_total = true;
            } else {
                let n = n
                    .parse::<u32>()
                    .map_err(|_| format!("bad CPU line {key:?}"))?;
                out.per_cpu.push((n, times));
            }
        } else if key == "btime" {
            out.btime = Some(parse_u64_field(rest.trim(), "btime")?);
        } else if key == "processes" {
            out.processes = Some(parse_u64_field(rest.trim(), "processes")?);
        }
    }
    if !saw_total {
        return Err("no \"cpu\" line".to_owned());
    }
    Ok(())
}

/// Parses `/proc/stat` into a fresh value.
pub fn parse_stat(text: &str) -> Result<ProcStat, String> {
    let mut s = ProcStat::default();
    parse_stat_into(text, &mut s)?;
    Ok(s)
}

/// Only the `btime` line of `/proc/stat`, Unix seconds.
pub fn parse_btime(text: &str) -> Result<u64, String> {
    text.lines()
        .find_map(|l| l.strip_prefix("btime "))
        .ok_or_else(|| "no btime line".to_owned())
        .and_then(|v| parse_u64_field(v.trim(), "btime"))
}

fn parse_cpu_fields(rest: &str) -> Result<CpuTimes, String> {
    // user nice system idle iowait irq softirq steal guest guest_nice; kernels before 2.6.33
    // have fewer columns, missing ones count as zero.
    let mut v = [0u64; 8];
    let mut n = 0;
    for (slot, field) in v.iter_mut().zip(rest.split_ascii_whitespace()) {
        *slot = parse_u64_field(field, "cpu ticks")?;
        n += 1;
    }
    if n < 4 {
        return Err(format!("expected at least 4 tick columns, found {n}"));
    }
    Ok(CpuTimes {
        user: v[0],
        nice: v[1],
        system: v[2],
        idle: v[3],
        iowait: v[4],
        interrupt: v[5].saturating_add(v[6]),
        steal: v[7],
    })
}

/// Parses `/proc/cpuinfo`: `(processor, cpu MHz)` for each processor that has a MHz line.
pub fn parse_cpuinfo_mhz(text: &str) -> Vec<(u32, f64)> {
    let mut out = Vec::new();
    let mut current: Option<u32> = None;
    for (k, v) in keyed_lines(text, b':') {
        match k.trim_end() {
            "processor" => current = v.trim().parse().ok(),
            "cpu MHz" => {
                if let (Some(p), Ok(mhz)) = (current, v.trim().parse::<f64>()) {
                    out.push((p, mhz));
                }
            }
            _ => {}
        }
    }
    out
}

/// Counts unique `(physical id, core id)` pairs in `/proc/cpuinfo`; `None` when the file has
/// no such lines (some architectures).
pub fn parse_cpuinfo_physical_cores(text: &str) -> Option<usize> {
    let mut pairs = HashSet::new();
    let mut package: Option<&str> = None;
    for (k, v) in keyed_lines(text, b':') {
        match k.trim_end() {
            "processor" => package = None,
            "physical id" => package = Some(v.trim()),
            "core id" => {
                if let Some(p) = package {
                    pairs.insert((p, v.trim()));
                }
            }
            _ => {}
        }
    }
    (!pairs.is_empty()).then_some(pairs.len())
}

/// Options of the CPU collector.
#[derive(Clone, Copy, Debug)]
pub struct CpuOptions {
    /// Report per logical CPU (`cpu.logical_number`) rather than machine-wide.
    pub per_cpu: bool,
}

/// Frequencies from `/proc/cpuinfo` are read at most this often (see the module docs).
pub const CPUINFO_EVERY: Duration = Duration::from_secs(60);

/// Where frequencies come from, decided on the first cycle.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum FreqSource {
    Undecided,
    Cpufreq,
    Cpuinfo,
    None,
}

/// Collector of `system.cpu.*`.
#[derive(Debug)]
pub struct CpuCollector {
    opts: CpuOptions,
    stat_file: KeptFile,
    cpuinfo: KeptFile,
    small: String,
    stat: ProcStat,
    prev_total: CpuTimes,
    prev_per_cpu: Vec<(u32, CpuTimes)>,
    physical: Option<(usize, Option<usize>)>,
    freq: FreqSource,
    /// The last frequencies read from `/proc/cpuinfo` (MHz per logical CPU), and when to read
    /// them again.
    cpuinfo_mhz: Vec<(u32, f64)>,
    cpuinfo_pace: Pace,
}

impl CpuCollector {
    /// A collector with no previous sample.
    pub fn new(opts: CpuOptions) -> Self {
        Self {
            opts,
            stat_file: KeptFile::default(),
            // A CPU's record (its flags line above all) can pass a kilobyte.
            cpuinfo: KeptFile::long_records(),
            small: String::new(),
            stat: ProcStat::default(),
            prev_total: CpuTimes::default(),
            prev_per_cpu: Vec::new(),
            physical: None,
            freq: FreqSource::Undecided,
            cpuinfo_mhz: Vec::new(),
            cpuinfo_pace: Pace::new(CPUINFO_EVERY),
        }
    }

    fn physical_cores(&mut self, ctx: &Context, logical: usize) -> Option<usize> {
        if let Some((n, cores)) = self.physical
            && n == logical
        {
            return cores;
        }
        let cores = self.read_physical_cores(ctx);
        self.physical = Some((logical, cores));
        cores
    }

    fn read_physical_cores(&mut self, ctx: &Context) -> Option<usize> {
        let mut pairs = HashSet::new();
        for &(n, _) in &self.stat.per_cpu {
            let base = ctx
                .roots
                .sys(&format!("devices/system/cpu/cpu{n}/topology"));
            let pkg = read_into(&base.join("physical_package_id"), &mut self.small)
                .ok()
                .map(|()| self.small.trim().to_owned());
            let core = read_into(&base.join("core_id"), &mut self.small)
                .ok()
                .map(|()| self.small.trim().to_owned());
            if let (Some(p), Some(c)) = (pkg, core) {
                pairs.insert((p, c));
            }
        }
        if !pairs.is_empty() {
            return Some(pairs.len());
        }
        read_into(&ctx.roots.proc("cpuinfo"), &mut self.small).ok()?;
        parse_cpuinfo_physical_cores(&self.small)
    }

    fn record_frequency(&mut self, ctx: &Context, batch: &mut Batch) {
        if self.freq == FreqSource::Undecided {
            let first = self.stat.per_cpu.first().map_or(0, |(n, _)| *n);
            let probe = ctx.roots.sys(&format!(
                "devices/system/cpu/cpu{first}/cpufreq/scaling_cur_freq"
            ));
            self.freq = if probe.exists() {
                FreqSource::Cpufreq
            } else {
                FreqSource::Cpuinfo
            };
        }
        match self.freq {
            FreqSource::Cpufreq => {
                for &(n, _) in &self.stat.per_cpu {
                    let p = ctx.roots.sys(&format!(
                        "devices/system/cpu/cpu{n}/cpufreq/scaling_cur_freq"
                    ));
                    // A CPU without a policy (offline, or no driver) simply has no point.
                    if read_into(&p, &mut self.small).is_ok()
                        && let Ok(khz) = self.small.trim().parse::<u64>()
                    {
                        let attrs = Attributes::new().with("cpu.logical_number", i64::from(n));
                        batch
                            .host()
                            .record(&CPU_FREQUENCY, attrs, khz.saturating_mul(1000));
                    }
                }
            }
            FreqSource::Cpuinfo => {
                if self.cpuinfo_pace.due() {
                    let Ok(text) = self.cpuinfo.read(&ctx.roots.proc("cpuinfo")) else {
                        self.freq = FreqSource::None;
                        return;
                    };
                    self.cpuinfo_mhz = parse_cpuinfo_mhz(text);
                    self.cpuinfo_pace.done();
                    if self.cpuinfo_mhz.is_empty() {
                        // No MHz lines (e.g. arm64): do not read the file again.
                        self.freq = FreqSource::None;
                    }
                }
                for &(n, mhz) in &self.cpuinfo_mhz {
                    let attrs = Attributes::new().with("cpu.logical_number", i64::from(n));
                    batch.host().record(&CPU_FREQUENCY, attrs, mhz * 1e6);
                }
            }
            FreqSource::None | FreqSource::Undecided => {}
        }
    }
}

fn record_times(batch: &mut Batch, cpu: Option<u32>, now: &CpuTimes, prev: &CpuTimes) {
    let attrs = |mode: &'static str| match cpu {
        Some(n) => Attributes::of([
            ("cpu.mode", mode.into()),
            ("cpu.logical_number", i64::from(n).into()),
        ]),
        None => Attributes::of([("cpu.mode", mode.into())]),
    };
    let host = batch.host();
    for (mode, ticks) in now.modes() {
        host.record(&CPU_TIME, attrs(mode), ticks as f64 / USER_HZ);
    }
    // A mode's counter can go backwards (iowait does, proc(5); a hotplugged CPU restarts
    // from zero): such a mode had no ticks in the interval, and the shares are of the ticks
    // the other modes gained, so they still sum to 1 (the difference of the totals would
    // make them sum to more).
    let mut deltas = [0u64; 7];
    for (d, ((_, t), (_, p))) in deltas
        .iter_mut()
        .zip(now.modes().into_iter().zip(prev.modes()))
    {
        *d = t.saturating_sub(p);
    }
    let elapsed: f64 = deltas.iter().map(|&d| d as f64).sum();
    if elapsed == 0.0 {
        return;
    }
    for ((mode, _), d) in now.modes().into_iter().zip(deltas) {
        host.record(&CPU_UTILIZATION, attrs(mode), d as f64 / elapsed);
    }
}

impl Collector for CpuCollector {
    fn name(&self) -> &'static str {
        "host.cpu"
    }

    fn collect(&mut self, ctx: &Context, batch: &mut Batch) -> Result<(), CollectError> {
        let path = ctx.roots.proc("stat");
        let text = self.stat_file.read(&path)?;
        parse_stat_into(text, &mut self.stat).map_err(|e| parse_error(&path, e))?;

        if self.opts.per_cpu {
            for &(n, now) in &self.stat.per_cpu {
                let prev = self
                    .prev_per_cpu
                    .iter()
                    .find(|(m, _)| *m == n)
                    .map_or_else(CpuTimes::default, |(_, t)| *t);
                record_times(batch, Some(n), &now, &prev);
            }
            self.prev_per_cpu.clone_from(&self.stat.per_cpu);
        } else {
            record_times(batch, None, &self.stat.total, &self.prev_total);
            self.prev_total = self.stat.total;
        }

        let logical = self.stat.per_cpu.len();
        batch
            .host()
            .record(&CPU_LOGICAL_COUNT, Attributes::new(), logical as u64);
        if let Some(cores) = self.physical_cores(ctx, logical) {
            batch
                .host()
                .record(&CPU_PHYSICAL_COUNT, Attributes::new(), cores as u64);
        }
        self.record_frequency(ctx, batch);
        Ok(())
    }
}

#[cfg(test)]
mod tests;
