//! Reading one container's control files into a [`Sample`]: which files each layout has
//! (v2 in the container's directory, v1 in each controller's, hybrid's pressure files in
//! `unified/`), which of them a cycle reads ([`Reads`]), and which figure each gives.

use crate::collectors::file::ReadBuf;
use crate::collectors::host::pressure::parse_pressure;
use crate::collectors::{CollectError, parse_error};

use super::files::{Files, dir, slot};
use super::parse::{
    parse_blkio_into, parse_cfs_quota, parse_cpu_max, parse_cpu_stat_v1, parse_cpu_stat_v2,
    parse_cpuacct_stat, parse_first_pid, parse_io_stat_into, parse_limit, parse_memory_stat,
    parse_oom_kill, parse_u64,
};
use super::{Hierarchy, KeepBudget, KeptFds, Layout, Memory, ReadOutcome, Reads, Sample, V1Dirs};

impl Hierarchy {
    /// Reads one container's files into `out` (reset first, keeping its allocations); `buf`
    /// is scratch; `what` says which of the optional files to read; `kept` holds the
    /// container's descriptors kept between cycles ([`KeptFds`]), within `budget`.
    pub fn read(
        &self,
        rel: &str,
        kept: &mut KeptFds,
        budget: &mut KeepBudget,
        buf: &mut ReadBuf,
        out: &mut Sample,
        what: Reads,
    ) -> Result<ReadOutcome, CollectError> {
        let pressure = what.pressure.contains(&true);
        let io = std::mem::take(&mut out.io);
        *out = Sample::default();
        out.io = io;
        out.io.clear();
        kept.begin_read();
        let outcome = match self.layout {
            Layout::V2 => match &self.unified {
                Some(u) => read_v2(
                    &mut kept.files(budget, dir::UNIFIED, Some(u), rel),
                    buf,
                    out,
                    what,
                ),
                None => Ok(ReadOutcome::Gone),
            },
            Layout::V1 | Layout::Hybrid => {
                let outcome = read_v1(&self.v1, rel, kept, budget, buf, out, what);
                if let (Ok(ReadOutcome::Read), Some(u), true) = (&outcome, &self.unified, pressure)
                {
                    // Hybrid: the unified hierarchy has no controllers but keeps per-cgroup
                    // pressure files where the runtime created the cgroup there too.
                    read_pressure(
                        &mut kept.files(budget, dir::UNIFIED, Some(u), rel),
                        buf,
                        out,
                        what.pressure,
                    )
                    .map(|()| ReadOutcome::Read)
                } else {
                    outcome
                }
            }
        };
        kept.end_read(budget);
        outcome
    }

    /// The first process of a container (`cgroup.procs`), read on its own when the one the
    /// collector kept has gone; `buf` is scratch.
    pub fn first_pid(&self, rel: &str, buf: &mut ReadBuf) -> Result<Option<u32>, CollectError> {
        let dirs = match self.layout {
            Layout::V2 => [self.unified.as_ref(), None],
            Layout::V1 | Layout::Hybrid => [self.v1.memory.as_ref(), self.v1.pids.as_ref()],
        };
        for root in dirs.into_iter().flatten() {
            // Opened and closed now: a container's kept descriptors are not at hand here.
            let (mut once, mut nothing) = (KeptFds::default(), KeepBudget::none());
            if let Some(pid) = once
                .files(&mut nothing, dir::UNIFIED, Some(root), rel)
                .parse(None, "cgroup.procs", buf, parse_first_pid)?
                .flatten()
            {
                return Ok(Some(pid));
            }
        }
        Ok(None)
    }
}

/// The pressure files `which` says, of `cpu`, `memory` and `io`; `cpu.pressure` not where
/// the container used no CPU time since its idle figures were read (`out.idle_skipped`).
fn read_pressure(
    files: &mut Files<'_>,
    buf: &mut ReadBuf,
    out: &mut Sample,
    which: [bool; 3],
) -> Result<(), CollectError> {
    let [cpu, memory, io] = which;
    let which = [cpu && !out.idle_skipped, memory, io];
    out.pressure_read = which;
    for (((out, file), slot), read) in out
        .pressure
        .iter_mut()
        .zip(["cpu.pressure", "memory.pressure", "io.pressure"])
        .zip(slot::PRESSURE)
        .zip(which)
    {
        if read {
            *out = files.parse(Some(slot), file, buf, parse_pressure)?;
        }
    }
    Ok(())
}

fn read_v2(
    d: &mut Files<'_>,
    buf: &mut ReadBuf,
    out: &mut Sample,
    what: Reads,
) -> Result<ReadOutcome, CollectError> {
    let Reads {
        pressure,
        limits,
        pid,
        oom_events,
        memory_stat,
        ..
    } = what;
    // cpu.stat exists in every v2 cgroup whatever the enabled controllers: its absence means
    // the cgroup is gone.
    let Some((total, user, system, throttling)) =
        d.parse(Some(slot::CPU_STAT), "cpu.stat", buf, parse_cpu_stat_v2)?
    else {
        return Ok(ReadOutcome::Gone);
    };
    out.cpu_total_ns = Some(total);
    out.cpu_user_ns = Some(user);
    out.cpu_system_ns = Some(system);
    out.throttling = throttling;
    out.idle_skipped = what.unless_cpu_total == Some(total);
    if limits {
        out.cpu_limit = d.parse(None, "cpu.max", buf, parse_cpu_max)?.flatten();
    }
    if let Some(usage) = d.parse(Some(slot::MEMORY_CURRENT), "memory.current", buf, parse_u64)? {
        let (inactive_file, rss) = if memory_stat.wants(usage, out.cpu_total_ns) {
            d.parse(Some(slot::MEMORY_STAT), "memory.stat", buf, |t| {
                parse_memory_stat(t, true)
            })?
            .unwrap_or((0, 0))
        } else {
            out.memory_stat_skipped = true;
            (0, 0)
        };
        let limit = if limits {
            d.parse(None, "memory.max", buf, parse_limit)?.flatten()
        } else {
            None
        };
        out.memory = Some(Memory {
            usage,
            inactive_file,
            rss,
            limit,
        });
        if oom_events {
            out.oom_kills = d
                .parse(
                    Some(slot::MEMORY_EVENTS),
                    "memory.events",
                    buf,
                    parse_oom_kill,
                )?
                .flatten();
        }
    }
    let mut io = std::mem::take(&mut out.io);
    if d.parse(Some(slot::IO_STAT), "io.stat", buf, |t| {
        parse_io_stat_into(t, &mut io)
    })?
    .is_none()
    {
        io.clear();
    }
    out.io = io;
    if !out.idle_skipped {
        out.pids_current = d.parse(Some(slot::PIDS_CURRENT), "pids.current", buf, parse_u64)?;
    }
    if limits {
        out.pids_limit = d.parse(None, "pids.max", buf, parse_limit)?.flatten();
    }
    if pressure.contains(&true) {
        read_pressure(d, buf, out, pressure)?;
    }
    if pid {
        out.pid = d
            .parse(None, "cgroup.procs", buf, parse_first_pid)?
            .flatten();
    }
    Ok(ReadOutcome::Read)
}

fn read_v1(
    v1: &V1Dirs,
    rel: &str,
    kept: &mut KeptFds,
    budget: &mut KeepBudget,
    buf: &mut ReadBuf,
    out: &mut Sample,
    what: Reads,
) -> Result<ReadOutcome, CollectError> {
    let Reads {
        limits,
        pid,
        oom_events,
        memory_stat,
        ..
    } = what;
    let mut any = false;
    // With `cpu,cpuacct` co-mounted both names lead to the same directory: one `Files`.
    let co_mounted = v1.cpu == v1.cpuacct;
    {
        let mut acct = kept.files(budget, dir::CPUACCT, v1.cpuacct.as_deref(), rel);
        if let Some(total) =
            acct.parse(Some(slot::CPUACCT_USAGE), "cpuacct.usage", buf, parse_u64)?
        {
            any = true;
            out.cpu_total_ns = Some(total);
            out.idle_skipped = what.unless_cpu_total == Some(total);
            // The user/system proportion only: the collector scales it to the precise total
            // (`adjust_cputime`), so the tick-based cpuacct.stat is as good as the newer
            // cpuacct.usage_user/usage_sys (tick-based too) and is one file instead of two.
            // Not read when no CPU time was used since it was (`Reads::unless_cpu_total`).
            if !out.idle_skipped
                && let Some((u, s)) = acct.parse(
                    Some(slot::CPUACCT_STAT),
                    "cpuacct.stat",
                    buf,
                    parse_cpuacct_stat,
                )?
            {
                let tick_ns = 1_000_000_000 / user_hz();
                (out.cpu_user_ns, out.cpu_system_ns) = (
                    Some(u.saturating_mul(tick_ns)),
                    Some(s.saturating_mul(tick_ns)),
                );
            }
        }
        if co_mounted {
            read_v1_cpu(&mut acct, buf, out, what)?;
        }
    }
    if !co_mounted {
        read_v1_cpu(
            &mut kept.files(budget, dir::CPU, v1.cpu.as_deref(), rel),
            buf,
            out,
            what,
        )?;
    }
    {
        let mut d = kept.files(budget, dir::MEMORY, v1.memory.as_deref(), rel);
        if let Some(usage) = d.parse(
            Some(slot::MEMORY_USAGE),
            "memory.usage_in_bytes",
            buf,
            parse_u64,
        )? {
            any = true;
            let (inactive_file, rss) = if memory_stat.wants(usage, out.cpu_total_ns) {
                d.parse(Some(slot::V1_MEMORY_STAT), "memory.stat", buf, |t| {
                    parse_memory_stat(t, false)
                })?
                .unwrap_or((0, 0))
            } else {
                out.memory_stat_skipped = true;
                (0, 0)
            };
            let limit = if limits {
                d.parse(None, "memory.limit_in_bytes", buf, parse_limit)?
                    .flatten()
            } else {
                None
            };
            out.memory = Some(Memory {
                usage,
                inactive_file,
                rss,
                limit,
            });
            if oom_events {
                out.oom_kills = d
                    .parse(
                        Some(slot::OOM_CONTROL),
                        "memory.oom_control",
                        buf,
                        parse_oom_kill,
                    )?
                    .flatten();
            }
        }
        if pid {
            out.pid = d
                .parse(None, "cgroup.procs", buf, parse_first_pid)?
                .flatten();
        }
    }
    if !out.idle_skipped {
        let mut d = kept.files(budget, dir::BLKIO, v1.blkio.as_deref(), rel);
        let mut v = std::mem::take(&mut out.io);
        v.clear();
        let found = d
            .parse(
                Some(slot::BLKIO_RECURSIVE),
                "blkio.throttle.io_service_bytes_recursive",
                buf,
                |t| parse_blkio_into(t, &mut v),
            )?
            .is_some()
            || d.parse(
                Some(slot::BLKIO),
                "blkio.throttle.io_service_bytes",
                buf,
                |t| parse_blkio_into(t, &mut v),
            )?
            .is_some();
        if !found {
            v.clear();
        }
        out.io = v;
    }
    {
        let mut d = kept.files(budget, dir::PIDS, v1.pids.as_deref(), rel);
        if !out.idle_skipped {
            out.pids_current =
                d.parse(Some(slot::V1_PIDS_CURRENT), "pids.current", buf, parse_u64)?;
            any |= out.pids_current.is_some();
        }
        if limits {
            out.pids_limit = d.parse(None, "pids.max", buf, parse_limit)?.flatten();
        }
        if pid && out.pid.is_none() {
            out.pid = d
                .parse(None, "cgroup.procs", buf, parse_first_pid)?
                .flatten();
        }
    }
    Ok(if any {
        ReadOutcome::Read
    } else {
        ReadOutcome::Gone
    })
}

/// v1 `cpu` controller files: throttling when asked for, and the CFS quota with the limits.
fn read_v1_cpu(
    d: &mut Files<'_>,
    buf: &mut ReadBuf,
    out: &mut Sample,
    what: Reads,
) -> Result<(), CollectError> {
    let limits = what.limits;
    if what.throttling {
        out.throttling = d.parse(Some(slot::V1_CPU_STAT), "cpu.stat", buf, parse_cpu_stat_v1)?;
    }
    if limits
        && let Some(quota) = d.parse(None, "cpu.cfs_quota_us", buf, |t| {
            Ok(t.trim().parse::<i64>())
        })?
    {
        let quota =
            quota.map_err(|_| parse_error(&d.path("cpu.cfs_quota_us"), "expected an integer"))?;
        out.cpu_limit = d
            .parse(None, "cpu.cfs_period_us", buf, |p| {
                parse_cfs_quota(&quota.to_string(), p)
            })?
            .flatten();
    }
    Ok(())
}

/// `USER_HZ`, the unit of `cpuacct.stat` (100 on every Linux architecture in use).
fn user_hz() -> u64 {
    nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .and_then(|v| u64::try_from(v).ok())
        .filter(|v| *v > 0)
        .unwrap_or(100)
}
