//! Uptime from the first field of `/proc/uptime` (seconds since boot, with hundredths).

use faultline_exporters::model::{Attributes, Batch, MetricDesc};

use crate::collectors::file::KeptFile;
use crate::collectors::{CollectError, Collector, Context, parse_error};

/// `system.uptime`.
pub const UPTIME: MetricDesc =
    MetricDesc::gauge("system.uptime", "s", "Seconds since the host booted.");

/// Every metric this collector emits.
pub const DESCS: &[&MetricDesc] = &[&UPTIME];

/// Parses `/proc/uptime`: `uptime idle` in seconds; returns the uptime.
pub fn parse_uptime(text: &str) -> Result<f64, String> {
    let first = text.split_ascii_whitespace().next().ok_or("empty file")?;
    first
        .parse::<f64>()
        .ok()
        .filter(|v| v.is_finite() && *v >= 0.0)
        .ok_or_else(|| format!("uptime: expected seconds, found {first:?}"))
}

/// Collector of `system.uptime`.
#[derive(Debug, Default)]
pub struct UptimeCollector {
    file: KeptFile,
}

impl Collector for UptimeCollector {
    fn name(&self) -> &'static str {
        "host.uptime"
    }

    fn collect(&mut self, ctx: &Context, batch: &mut Batch) -> Result<(), CollectError> {
        let path = ctx.roots.proc("uptime");
        let text = self.file.read(&path)?;
        let up = parse_uptime(text).map_err(|e| parse_error(&path, e))?;
        batch.host().record(&UPTIME, Attributes::new(), up);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collectors::host::test_support::{run, value};

    #[test]
    fn uptime_is_the_first_field() {
        assert_eq!(parse_uptime("445.79 316.10\n"), Ok(445.79));
        assert!(parse_uptime("").is_err());
        assert!(parse_uptime("abc 1").is_err());
        assert!(parse_uptime("-1 1").is_err());
        let (b, r) = run(&mut UptimeCollector::default(), "real");
        r.unwrap();
        assert!(value(&b, "system.uptime", &[]) > 0.0);
    }
}
