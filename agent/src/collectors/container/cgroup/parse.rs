//! Pure functions over cgroup control files: each parser takes a file's text and returns its
//! figures or an error message naming what was wrong (the caller adds the path), and
//! [`adjust_cputime`] splits a total CPU time into modes. No I/O here: the reads around them
//! are in `read.rs`; the fuzz targets (`tests/fuzz`) call them too.

use super::{IoDevice, Throttling};

/// Limits at or above this are "no limit" (cgroup v1 prints `PAGE_COUNTER_MAX` pages as bytes:
/// 9223372036854771712 on 4 KiB pages).
const V1_UNLIMITED: u64 = 1 << 62;

fn num(s: &str, what: &str) -> Result<u64, String> {
    s.parse::<u64>()
        .map_err(|_| format!("{what}: expected an unsigned integer, found {s:?}"))
}

/// Calls `f(key, value)` for each `key value` line (`cpu.stat`, `memory.stat`, …).
fn for_each_kv(
    text: &str,
    mut f: impl FnMut(&str, &str) -> Result<(), String>,
) -> Result<(), String> {
    for line in text.lines() {
        let mut it = line.split_ascii_whitespace();
        let (Some(k), Some(v)) = (it.next(), it.next()) else {
            if line.trim().is_empty() {
                continue;
            }
            return Err(format!("expected \"key value\", found {line:?}"));
        };
        f(k, v)?;
    }
    Ok(())
}

/// A file holding one unsigned integer (`cpuacct.usage`, `memory.current`, `pids.current`).
pub fn parse_u64(text: &str) -> Result<u64, String> {
    num(text.trim(), "value")
}

/// A limit file: an integer, or `max` for none (`memory.max`, `pids.max`). v1 memory limits
/// at [`V1_UNLIMITED`] or above also mean none.
pub fn parse_limit(text: &str) -> Result<Option<u64>, String> {
    match text.trim() {
        "max" => Ok(None),
        s => num(s, "limit").map(|v| (v < V1_UNLIMITED).then_some(v)),
    }
}

/// cgroup v2 `cpu.stat`: (usage, user, system) in nanoseconds and throttling.
pub fn parse_cpu_stat_v2(text: &str) -> Result<(u64, u64, u64, Option<Throttling>), String> {
    let (mut usage, mut user, mut system) = (None, None, None);
    let mut t = Throttling::default();
    let mut has_t = false;
    for_each_kv(text, |k, v| {
        match k {
            "usage_usec" => usage = Some(num(v, k)?.saturating_mul(1000)),
            "user_usec" => user = Some(num(v, k)?.saturating_mul(1000)),
            "system_usec" => system = Some(num(v, k)?.saturating_mul(1000)),
            "nr_periods" => (t.periods, has_t) = (num(v, k)?, true),
            "nr_throttled" => t.throttled_periods = num(v, k)?,
            "throttled_usec" => t.throttled_ns = num(v, k)?.saturating_mul(1000),
            _ => {}
        }
        Ok(())
    })?;
    match (usage, user, system) {
        (Some(a), Some(b), Some(c)) => Ok((a, b, c, has_t.then_some(t))),
        _ => Err("missing usage_usec, user_usec or system_usec".to_owned()),
    }
}

/// cgroup v1 `cpu.stat` (CFS throttling; `throttled_time` is in nanoseconds).
pub fn parse_cpu_stat_v1(text: &str) -> Result<Throttling, String> {
    let mut t = Throttling::default();
    let mut seen = 0u8;
    for_each_kv(text, |k, v| {
        match k {
            "nr_periods" => (t.periods, seen) = (num(v, k)?, seen | 1),
            "nr_throttled" => (t.throttled_periods, seen) = (num(v, k)?, seen | 2),
            "throttled_time" => (t.throttled_ns, seen) = (num(v, k)?, seen | 4),
            _ => {}
        }
        Ok(())
    })?;
    if seen != 0b111 {
        return Err("missing nr_periods, nr_throttled or throttled_time".to_owned());
    }
    Ok(t)
}

/// cgroup v1 `cpuacct.stat`: (user, system) in `USER_HZ` ticks.
pub fn parse_cpuacct_stat(text: &str) -> Result<(u64, u64), String> {
    let (mut user, mut system) = (None, None);
    for_each_kv(text, |k, v| {
        match k {
            "user" => user = Some(num(v, k)?),
            "system" => system = Some(num(v, k)?),
            _ => {}
        }
        Ok(())
    })?;
    user.zip(system)
        .ok_or_else(|| "missing user or system".to_owned())
}

/// `memory.stat`: (inactive file, rss). v2 reads `inactive_file` and `anon`; v1 the
/// hierarchical `total_inactive_file` and `total_rss`.
pub fn parse_memory_stat(text: &str, v2: bool) -> Result<(u64, u64), String> {
    let (inactive_key, rss_key) = if v2 {
        ("inactive_file", "anon")
    } else {
        ("total_inactive_file", "total_rss")
    };
    let (mut inactive, mut rss) = (None, None);
    for_each_kv(text, |k, v| {
        if k == inactive_key {
            inactive = Some(num(v, k)?);
        } else if k == rss_key {
            rss = Some(num(v, k)?);
        }
        Ok(())
    })?;
    inactive
        .zip(rss)
        .ok_or_else(|| format!("missing {inactive_key} or {rss_key}"))
}

/// The `oom_kill` counter of v2 `memory.events` or v1 `memory.oom_control` (Linux 4.13+);
/// `None` when the kernel does not print it.
pub fn parse_oom_kill(text: &str) -> Result<Option<u64>, String> {
    let mut out = None;
    for_each_kv(text, |k, v| {
        if k == "oom_kill" {
            out = Some(num(v, k)?);
        }
        Ok(())
    })?;
    Ok(out)
}

/// cgroup v2 `cpu.max`: `max 100000` (none) or `<quota> <period>` in microseconds → CPUs.
pub fn parse_cpu_max(text: &str) -> Result<Option<f64>, String> {
    let mut it = text.split_ascii_whitespace();
    let (Some(quota), Some(period)) = (it.next(), it.next()) else {
        return Err(format!("expected \"<quota|max> <period>\", found {text:?}"));
    };
    if quota == "max" {
        return Ok(None);
    }
    quota_period(num(quota, "quota")? as i64, num(period, "period")?)
}

/// v1 `cpu.cfs_quota_us` (−1 for none) and `cpu.cfs_period_us` → CPUs.
pub fn parse_cfs_quota(quota: &str, period: &str) -> Result<Option<f64>, String> {
    let q: i64 = quota
        .trim()
        .parse()
        .map_err(|_| format!("cfs_quota_us: expected an integer, found {quota:?}"))?;
    quota_period(q, num(period.trim(), "cfs_period_us")?)
}

fn quota_period(quota: i64, period: u64) -> Result<Option<f64>, String> {
    if quota < 0 {
        return Ok(None);
    }
    if period == 0 {
        return Err("period is 0".to_owned());
    }
    Ok(Some(quota as f64 / period as f64))
}

fn major_minor(s: &str) -> Result<(u32, u32), String> {
    let (a, b) = s
        .split_once(':')
        .ok_or_else(|| format!("expected major:minor, found {s:?}"))?;
    let p = |x: &str| {
        x.parse::<u32>()
            .map_err(|_| format!("expected major:minor, found {s:?}"))
    };
    Ok((p(a)?, p(b)?))
}

/// cgroup v2 `io.stat`: `MAJ:MIN rbytes=… wbytes=… rios=… …` per device.
pub fn parse_io_stat(text: &str) -> Result<Vec<IoDevice>, String> {
    let mut out = Vec::new();
    parse_io_stat_into(text, &mut out)?;
    Ok(out)
}

/// [`parse_io_stat`] into a reused vector (cleared first).
pub fn parse_io_stat_into(text: &str, out: &mut Vec<IoDevice>) -> Result<(), String> {
    out.clear();
    for line in text.lines() {
        let mut it = line.split_ascii_whitespace();
        let Some(dev) = it.next() else { continue };
        let (major, minor) = major_minor(dev)?;
        let mut d = IoDevice {
            major,
            minor,
            ..IoDevice::default()
        };
        for kv in it {
            let Some((k, v)) = kv.split_once('=') else {
                return Err(format!("{dev}: expected key=value, found {kv:?}"));
            };
            match k {
                "rbytes" => d.read_bytes = num(v, k)?,
                "wbytes" => d.write_bytes = num(v, k)?,
                _ => {}
            }
        }
        out.push(d);
    }
    Ok(())
}

/// cgroup v1 `blkio.throttle.io_service_bytes[_recursive]`: `MAJ:MIN Read|Write|… N` lines
/// and a final `Total N`.
pub fn parse_blkio(text: &str) -> Result<Vec<IoDevice>, String> {
    let mut out = Vec::new();
    parse_blkio_into(text, &mut out)?;
    Ok(out)
}

/// [`parse_blkio`] into a reused vector (cleared first).
pub fn parse_blkio_into(text: &str, out: &mut Vec<IoDevice>) -> Result<(), String> {
    out.clear();
    for line in text.lines() {
        let mut it = line.split_ascii_whitespace();
        let (Some(dev), Some(op)) = (it.next(), it.next()) else {
            continue;
        };
        if dev == "Total" {
            continue;
        }
        let value = it.next().ok_or_else(|| format!("{dev} {op}: no value"))?;
        let (major, minor) = major_minor(dev)?;
        let idx = match out
            .iter()
            .position(|d| d.major == major && d.minor == minor)
        {
            Some(i) => i,
            None => {
                out.push(IoDevice {
                    major,
                    minor,
                    ..IoDevice::default()
                });
                out.len() - 1
            }
        };
        match op {
            "Read" => out[idx].read_bytes = num(value, op)?,
            "Write" => out[idx].write_bytes = num(value, op)?,
            _ => {}
        }
    }
    Ok(())
}

/// Splits the precise total CPU time `total` into (user, system) in the proportion of the
/// tick-sampled `user` and `system`, keeping both monotonic across calls through `prev` —
/// the kernel's own `cputime_adjust`, which cgroup v2 `cpu.stat` and `/proc/<pid>/stat`
/// already apply. cgroup v1 `cpuacct.usage_user`/`usage_sys` are not adjusted (their sum
/// drifts from `cpuacct.usage` by about 1 %), so the collector applies it: the modes then sum
/// to exactly the total that `cpuacct.usage` and Docker's stats report. On input that already
/// sums to `total` (v2) it changes nothing.
pub fn adjust_cputime(total: u64, user: u64, system: u64, prev: &mut (u64, u64)) -> (u64, u64) {
    let (pu, ps) = *prev;
    if pu.saturating_add(ps) >= total {
        return *prev;
    }
    let sum = u128::from(user) + u128::from(system);
    let mut s = (u128::from(system) * u128::from(total))
        .checked_div(sum)
        .map_or(0, |v| u64::try_from(v).unwrap_or(total));
    let mut u = total - s.min(total);
    s = s.min(total);
    if s < ps {
        s = ps;
        u = total - s;
    } else if u < pu {
        u = pu;
        s = total - u;
    }
    *prev = (u, s);
    (u, s)
}

/// The first PID in a `cgroup.procs` / `tasks` file.
pub fn parse_first_pid(text: &str) -> Result<Option<u32>, String> {
    match text.split_ascii_whitespace().next() {
        None => Ok(None),
        Some(s) => s
            .parse::<u32>()
            .map(Some)
            .map_err(|_| format!("expected a PID, found {s:?}")),
    }
}
