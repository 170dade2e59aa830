//! Load averages from `/proc/loadavg`.
//!
//! Outside the semantic conventions registry: the names and the `{thread}` unit are the
//! OpenTelemetry collector's hostmetrics receiver's (`system.cpu.load_average.1m` …). Linux's
//! load counts runnable and uninterruptible (`D`) tasks, threads included.

use faultline_exporters::model::{Attributes, Batch, MetricDesc};

use crate::collectors::file::KeptFile;
use crate::collectors::{CollectError, Collector, Context, parse_error};

/// `system.cpu.load_average.1m`.
pub const LOAD_1M: MetricDesc = MetricDesc::gauge(
    "system.cpu.load_average.1m",
    "{thread}",
    "Average number of runnable and uninterruptible threads over the last minute (Linux load average).",
);
/// `system.cpu.load_average.5m`.
pub const LOAD_5M: MetricDesc = MetricDesc::gauge(
    "system.cpu.load_average.5m",
    "{thread}",
    "Average number of runnable and uninterruptible threads over the last 5 minutes (Linux load average).",
);
/// `system.cpu.load_average.15m`.
pub const LOAD_15M: MetricDesc = MetricDesc::gauge(
    "system.cpu.load_average.15m",
    "{thread}",
    "Average number of runnable and uninterruptible threads over the last 15 minutes (Linux load average).",
);

/// Every metric this collector emits.
pub const DESCS: &[&MetricDesc] = &[&LOAD_1M, &LOAD_5M, &LOAD_15M];

/// Parses `/proc/loadavg`: the 1, 5 and 15 minute averages.
pub fn parse_loadavg(text: &str) -> Result<[f64; 3], String> {
    let mut f = text.split_ascii_whitespace();
    let mut out = [0.0; 3];
    for (slot, what) in out.iter_mut().zip(["1m", "5m", "15m"]) {
        let v = f.next().ok_or_else(|| format!("missing {what} average"))?;
        *slot = v
            .parse()
            .map_err(|_| format!("{what} average: expected a number, found {v:?}"))?;
    }
    Ok(out)
}

/// Collector of `system.cpu.load_average.*`.
#[derive(Debug, Default)]
pub struct LoadCollector {
    file: KeptFile,
}

impl Collector for LoadCollector {
    fn name(&self) -> &'static str {
        "host.load"
    }

    fn collect(&mut self, ctx: &Context, batch: &mut Batch) -> Result<(), CollectError> {
        let path = ctx.roots.proc("loadavg");
        let text = self.file.read(&path)?;
        let l = parse_loadavg(text).map_err(|e| parse_error(&path, e))?;
        let host = batch.host();
        for (desc, v) in [&LOAD_1M, &LOAD_5M, &LOAD_15M].into_iter().zip(l) {
            host.record(desc, Attributes::new(), v);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collectors::host::test_support::{read, run, value};

    #[test]
    fn loadavg_parses_three_averages() {
        assert_eq!(
            parse_loadavg("2.17 1.38 0.60 3/144 10921\n"),
            Ok([2.17, 1.38, 0.60])
        );
        assert!(parse_loadavg("2.17 1.38").is_err());
        assert!(parse_loadavg("a b c").is_err());
        assert!(parse_loadavg(&read("real", "proc/loadavg")).is_ok());
        let (b, r) = run(&mut LoadCollector::default(), "real");
        r.unwrap();
        assert_eq!(
            value(&b, "system.cpu.load_average.15m", &[]),
            parse_loadavg(&read("real", "proc/loadavg")).unwrap()[2]
        );
    }
}
