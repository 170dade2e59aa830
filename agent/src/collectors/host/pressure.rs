//! Pressure stall information (PSI) from `{proc}/pressure/{cpu,memory,io}`.
//!
//! Outside the semantic conventions registry, named under `system.linux.pressure.*`:
//! `stall_time` is the kernel's cumulative `total` (microseconds, reported in seconds) and
//! `avg10`/`avg60`/`avg300` are the kernel's running averages as it prints them: a
//! percentage of wall time (0 to 100) during which some (or all, `full`) non-idle tasks were
//! stalled on the resource. System-wide `cpu` `full` is reported as the kernel prints it
//! (zero on kernels that print it at all).
//!
//! A kernel without PSI (no `CONFIG_PSI`, or booted with `psi=0`) has no `/proc/pressure`.
//! That is detected on the first cycle, logged once at info level, and from then on the
//! collector records nothing and returns `Ok`: a missing feature is not a failing collector.

use std::io;

use faultline_exporters::model::{Attributes, Batch, MetricDesc};

use super::parse_u64_field;
use crate::collectors::file::KeptFile;
use crate::collectors::{CollectError, Collector, Context, parse_error};

/// `system.linux.pressure.stall_time`.
pub const PSI_STALL_TIME: MetricDesc = MetricDesc::counter(
    "system.linux.pressure.stall_time",
    "s",
    "Total time tasks were stalled waiting for a resource (Linux PSI), by resource and kind (some, full).",
);
/// `system.linux.pressure.avg10`.
pub const PSI_AVG10: MetricDesc = MetricDesc::gauge(
    "system.linux.pressure.avg10",
    "%",
    "Share of the last 10 seconds tasks were stalled on the resource, in percent (Linux PSI avg10).",
);
/// `system.linux.pressure.avg60`.
pub const PSI_AVG60: MetricDesc = MetricDesc::gauge(
    "system.linux.pressure.avg60",
    "%",
    "Share of the last 60 seconds tasks were stalled on the resource, in percent (Linux PSI avg60).",
);
/// `system.linux.pressure.avg300`.
pub const PSI_AVG300: MetricDesc = MetricDesc::gauge(
    "system.linux.pressure.avg300",
    "%",
    "Share of the last 300 seconds tasks were stalled on the resource, in percent (Linux PSI avg300).",
);

/// Every metric this collector emits.
pub const DESCS: &[&MetricDesc] = &[&PSI_STALL_TIME, &PSI_AVG10, &PSI_AVG60, &PSI_AVG300];

/// The resources read, as file names and attribute values.
const RESOURCES: [&str; 3] = ["cpu", "memory", "io"];

/// One `some` or `full` line.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct PsiLine {
    /// `avg10`, percent.
    pub avg10: f64,
    /// `avg60`, percent.
    pub avg60: f64,
    /// `avg300`, percent.
    pub avg300: f64,
    /// `total`, microseconds.
    pub total_us: u64,
}

/// One pressure file.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Pressure {
    /// The `some` line.
    pub some: Option<PsiLine>,
    /// The `full` line (absent for `cpu` before Linux 5.13).
    pub full: Option<PsiLine>,
}

/// Parses a pressure file: `some|full avg10=… avg60=… avg300=… total=…` lines.
pub fn parse_pressure(text: &str) -> Result<Pressure, String> {
    let mut p = Pressure::default();
    for line in text.lines() {
        let mut f = line.split_ascii_whitespace();
        let slot = match f.next() {
            Some("some") => &mut p.some,
            Some("full") => &mut p.full,
            Some(other) => return Err(format!("unknown line kind {other:?}")),
            None => continue,
        };
        let mut l = PsiLine::default();
        let mut seen = 0u8;
        for kv in f {
            let (k, v) = kv
                .split_once('=')
                .ok_or_else(|| format!("expected key=value, found {kv:?}"))?;
            let avg = |v: &str| {
                v.parse::<f64>()
                    .map_err(|_| format!("{k}: expected a number, found {v:?}"))
            };
            match k {
                "avg10" => (l.avg10, seen) = (avg(v)?, seen | 1),
                "avg60" => (l.avg60, seen) = (avg(v)?, seen | 2),
                "avg300" => (l.avg300, seen) = (avg(v)?, seen | 4),
                "total" => (l.total_us, seen) = (parse_u64_field(v, "total")?, seen | 8),
                _ => {}
            }
        }
        if seen != 0b1111 {
            return Err(format!("incomplete line {line:?}"));
        }
        *slot = Some(l);
    }
    if p.some.is_none() {
        return Err("no \"some\" line".to_owned());
    }
    Ok(p)
}

/// Collector of `system.linux.pressure.*`.
#[derive(Debug, Default)]
pub struct PressureCollector {
    files: [KeptFile; 3],
    absent: bool,
}

impl Collector for PressureCollector {
    fn name(&self) -> &'static str {
        "host.pressure"
    }

    fn collect(&mut self, ctx: &Context, batch: &mut Batch) -> Result<(), CollectError> {
        if self.absent {
            return Ok(());
        }
        for (resource, file) in RESOURCES.into_iter().zip(&mut self.files) {
            let path = ctx.roots.proc("pressure").join(resource);
            let text = match file.read(&path) {
                Ok(text) => text,
                Err(CollectError::Read { source, .. })
                    if matches!(
                        source.kind(),
                        io::ErrorKind::NotFound | io::ErrorKind::Unsupported
                    ) || source.raw_os_error() == Some(nix::libc::EOPNOTSUPP) =>
                {
                    if resource == RESOURCES[0] {
                        self.absent = true;
                        tracing::info!(
                            path = %path.display(),
                            "pressure stall information unavailable (kernel without PSI or booted with psi=0); pressure metrics disabled"
                        );
                        return Ok(());
                    }
                    // A single resource missing on a PSI kernel is unexpected: report it.
                    return Err(CollectError::Read { path, source });
                }
                Err(e) => return Err(e),
            };
            let p = parse_pressure(text).map_err(|e| parse_error(&path, e))?;
            let host = batch.host();
            for (kind, line) in [("some", p.some), ("full", p.full)] {
                let Some(l) = line else { continue };
                let attrs = || {
                    Attributes::of([
                        ("system.linux.pressure.resource", resource.into()),
                        ("system.linux.pressure.kind", kind.into()),
                    ])
                };
                host.record(&PSI_STALL_TIME, attrs(), l.total_us as f64 / 1e6);
                host.record(&PSI_AVG10, attrs(), l.avg10);
                host.record(&PSI_AVG60, attrs(), l.avg60);
                host.record(&PSI_AVG300, attrs(), l.avg300);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collectors::host::test_support::{read, run, value};

    #[test]
    fn pressure_files_parse() {
        let p = parse_pressure(&read("real", "proc/pressure/memory")).unwrap();
        assert!(p.some.is_some() && p.full.is_some());
        let p = parse_pressure("some avg10=1.50 avg60=0.00 avg300=0.00 total=2500000\n").unwrap();
        assert_eq!(p.some.unwrap().avg10, 1.5);
        assert_eq!(p.full, None);
        assert!(parse_pressure("some avg10=1.50 avg60=0.00 total=1\n").is_err());
        assert!(parse_pressure("full avg10=0 avg60=0 avg300=0 total=0\n").is_err());
        assert!(parse_pressure("some avg10=x avg60=0 avg300=0 total=0\n").is_err());
        assert!(parse_pressure("other avg10=0\n").is_err());
    }

    #[test]
    fn collector_reports_seconds_and_percent() {
        let (b, r) = run(&mut PressureCollector::default(), "real");
        r.unwrap();
        let m = b.host_metric("system.linux.pressure.stall_time").unwrap();
        assert_eq!(m.points.len(), 6);
        let total = parse_pressure(&read("real", "proc/pressure/cpu"))
            .unwrap()
            .some
            .unwrap()
            .total_us;
        let v = value(
            &b,
            "system.linux.pressure.stall_time",
            &[
                ("system.linux.pressure.resource", "cpu"),
                ("system.linux.pressure.kind", "some"),
            ],
        );
        assert!((v - total as f64 / 1e6).abs() < 1e-9);
    }

    #[test]
    fn missing_pressure_dir_records_nothing_and_is_not_an_error() {
        let mut c = PressureCollector::default();
        for _ in 0..2 {
            let (b, r) = run(&mut c, "no-pressure");
            r.unwrap();
            assert_eq!(b.point_count(), 0);
        }
        assert!(c.absent);
    }
}
