//! Independent readings of the host's `/proc`, for comparing the agent's values against.
//!
//! Deliberately tiny and separate from the agent's own parsers: a test that reused them would
//! only prove the agent agrees with itself.

use std::fs;

fn read(path: &str) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {path}: {e}"))
}

/// The value after `key` on the line of `/proc/stat` starting with it.
fn stat_field(key: &str) -> u64 {
    let stat = read("/proc/stat");
    stat.lines()
        .find_map(|l| {
            l.strip_prefix(key)
                .and_then(|rest| rest.trim().parse().ok())
        })
        .unwrap_or_else(|| panic!("/proc/stat has no '{key}' line"))
}

/// Boot time, seconds since the epoch (`btime` in `/proc/stat`).
pub fn boot_time_secs() -> u64 {
    stat_field("btime ")
}

/// Processes and threads created since boot (`processes` in `/proc/stat`).
pub fn processes_created() -> u64 {
    stat_field("processes ")
}

/// Clock ticks per second (`USER_HZ`).
pub fn clock_ticks() -> u64 {
    nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .and_then(|t| u64::try_from(t).ok())
        .unwrap_or(100)
}

/// Total idle time over all CPUs, in seconds (4th field of the `cpu ` line of `/proc/stat`).
pub fn cpu_idle_secs() -> f64 {
    let stat = read("/proc/stat");
    let line = stat
        .lines()
        .find(|l| l.starts_with("cpu "))
        .unwrap_or_default();
    let idle: u64 = line
        .split_whitespace()
        .nth(4)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    // Tick counts stay far below 2^53 for centuries of uptime.
    idle as f64 / clock_ticks() as f64
}

/// Number of `cpuN` lines in `/proc/stat` (online logical CPUs).
pub fn cpu_count() -> usize {
    read("/proc/stat")
        .lines()
        .filter(|l| l.starts_with("cpu") && l.as_bytes().get(3).is_some_and(u8::is_ascii_digit))
        .count()
}

/// A `/proc/meminfo` field, in kB as written there.
pub fn meminfo_kb(key: &str) -> u64 {
    read("/proc/meminfo")
        .lines()
        .find_map(|l| {
            let rest = l.strip_prefix(key)?.strip_prefix(':')?;
            rest.split_whitespace().next()?.parse().ok()
        })
        .unwrap_or_else(|| panic!("/proc/meminfo has no {key}"))
}

/// Receive bytes of interface `iface` from `/proc/net/dev`, if it is listed.
pub fn net_rx_bytes(iface: &str) -> Option<u64> {
    read("/proc/net/dev").lines().find_map(|l| {
        let (name, rest) = l.split_once(':')?;
        (name.trim() == iface).then(|| rest.split_whitespace().next()?.parse().ok())?
    })
}

/// Whether `/proc/swaps` lists at least one swap device.
pub fn has_swap() -> bool {
    fs::read_to_string("/proc/swaps").is_ok_and(|s| s.lines().skip(1).any(|l| !l.trim().is_empty()))
}

/// Whether pressure stall information is readable (`/proc/pressure/cpu`; the directory can
/// exist with PSI disabled, in which case reading fails).
pub fn has_pressure() -> bool {
    fs::read_to_string("/proc/pressure/cpu").is_ok()
}

/// Whether the kernel tells the CPU frequency: a cpufreq driver's `scaling_cur_freq` or a
/// `cpu MHz` line in `/proc/cpuinfo` (virtual machines without cpufreq).
pub fn has_cpu_frequency() -> bool {
    std::path::Path::new("/sys/devices/system/cpu/cpu0/cpufreq/scaling_cur_freq").exists()
        || fs::read_to_string("/proc/cpuinfo")
            .is_ok_and(|s| s.lines().any(|l| l.starts_with("cpu MHz")))
}

/// Metrics the foundation issue requires on every Linux host.
pub const REQUIRED_HOST_METRICS: &[&str] = &[
    "system.cpu.time",
    "system.cpu.utilization",
    "system.cpu.logical.count",
    "system.cpu.physical.count",
    "system.memory.usage",
    "system.memory.limit",
    "system.memory.utilization",
    "system.memory.linux.available",
    "system.memory.linux.shared",
    "system.memory.linux.slab.usage",
    "system.paging.faults",
    "system.paging.operations",
    "system.disk.io",
    "system.disk.operations",
    "system.disk.io_time",
    "system.disk.operation_time",
    "system.disk.merged",
    "system.disk.limit",
    "system.filesystem.usage",
    "system.filesystem.utilization",
    "system.filesystem.limit",
    "system.network.io",
    "system.network.errors",
    "system.network.packet.count",
    "system.network.packet.dropped",
    "system.network.connection.count",
    "system.process.count",
    "system.process.created",
    "system.uptime",
    "system.cpu.load_average.1m",
    "system.cpu.load_average.5m",
    "system.cpu.load_average.15m",
];

/// The required host metrics missing from `names`: [`REQUIRED_HOST_METRICS`], plus swap
/// (`system.paging.usage`, `.utilization`), CPU frequency and PSI where this host has them.
pub fn missing_host_metrics(names: &std::collections::BTreeSet<&str>) -> Vec<String> {
    let mut missing: Vec<String> = REQUIRED_HOST_METRICS
        .iter()
        .filter(|m| !names.contains(*m))
        .map(|m| (*m).to_owned())
        .collect();
    if has_swap() {
        for m in ["system.paging.usage", "system.paging.utilization"] {
            if !names.contains(m) {
                missing.push(format!("{m} (/proc/swaps lists a device)"));
            }
        }
    }
    if has_cpu_frequency() && !names.contains("system.cpu.frequency") {
        missing.push("system.cpu.frequency (the kernel reports a frequency)".to_owned());
    }
    if has_pressure()
        && !names
            .iter()
            .any(|n| n.starts_with("system.linux.pressure."))
    {
        missing.push("system.linux.pressure.* (/proc/pressure is readable)".to_owned());
    }
    missing
}

/// `/etc/machine-id`, trimmed, if present and non-empty.
pub fn machine_id() -> Option<String> {
    let id = fs::read_to_string("/etc/machine-id").ok()?;
    let id = id.trim();
    (!id.is_empty()).then(|| id.to_owned())
}

/// PIDs of the live processes whose command line (`/proc/<pid>/cmdline`, split at NUL) is
/// exactly `argv`. Zombies have an empty command line and so never match; processes that
/// vanish while being read are skipped.
pub fn pids_with_argv(argv: &[&str]) -> Vec<i32> {
    let Ok(dir) = fs::read_dir("/proc") else {
        panic!("reading /proc failed");
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|raw| {
                let args: Vec<&[u8]> = raw
                    .strip_suffix(b"\0")
                    .unwrap_or(&raw)
                    .split(|b| *b == 0)
                    .collect();
                !raw.is_empty()
                    && args.len() == argv.len()
                    && args.iter().zip(argv).all(|(a, b)| *a == b.as_bytes())
            })
        })
        .collect()
}
