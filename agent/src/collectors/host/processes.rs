//! Processes: counts by state from `{proc}/<pid>/stat`, and processes created since boot from
//! the `processes` line of `{proc}/stat`.
//!
//! The scan is the expensive part of a host cycle (the kernel formats each `stat` file), so it
//! is kept lean: one reusable path buffer, and a single `read` of the file's first 512 bytes
//! into a stack buffer (the state follows the command name, at most 64 bytes, so it is always
//! in that prefix, and no second `read` to see end-of-file is needed). Only the state
//! character after the last `)` of the prefix is parsed (the command name may itself contain
//! `)` and spaces; no later field can). Only thread-group leaders are listed in `/proc`, so threads are not counted.
//! Processes that exit during the scan are skipped silently. States: `R` running; `S`, `D`
//! and `I` sleeping; `T` and `t` stopped; `Z` defunct; `X` (dead, being reaped) and unknown
//! letters are not counted.

use std::io::Read;
use std::path::PathBuf;

use faultline_exporters::model::{Attributes, Batch, MetricDesc};

use super::cpu::ProcStat;
use super::cpu::parse_stat_into;
use crate::collectors::{CollectError, Collector, Context, parse_error, read_into};

/// `system.process.count`.
pub const PROCESS_COUNT: MetricDesc = MetricDesc::updown(
    "system.process.count",
    "{process}",
    "Processes by state (running, sleeping, stopped, defunct).",
);
/// `system.process.created`.
pub const PROCESS_CREATED: MetricDesc = MetricDesc::counter(
    "system.process.created",
    "{process}",
    "Processes and threads created (forks) since boot.",
);

/// Every metric this collector emits.
pub const DESCS: &[&MetricDesc] = &[&PROCESS_COUNT, &PROCESS_CREATED];

/// `process.state` values, in report order.
pub const STATES: [&str; 4] = ["running", "sleeping", "stopped", "defunct"];

/// The index in [`STATES`] of a `/proc/<pid>/stat` line's state, `None` for states not
/// reported (`X`, unknown). Errors when the line has no `)` followed by a state.
pub fn parse_pid_stat_state(stat: &[u8]) -> Result<Option<usize>, String> {
    let close = stat
        .iter()
        .rposition(|b| *b == b')')
        .ok_or("no ')' after the command name")?;
    let state = stat
        .get(close + 2)
        .copied()
        .ok_or("no state after the command name")?;
    Ok(match state {
        b'R' => Some(0),
        b'S' | b'D' | b'I' => Some(1),
        b'T' | b't' => Some(2),
        b'Z' => Some(3),
        _ => None,
    })
}

/// Collector of `system.process.count` and `system.process.created`.
#[derive(Debug, Default)]
pub struct ProcessesCollector {
    buf: String,
    stat: ProcStat,
    path: PathBuf,
}

/// Bytes read from each `/proc/<pid>/stat`: comfortably past the state field.
const STAT_PREFIX: usize = 512;

impl ProcessesCollector {
    /// Scans `{proc}/[0-9]*/stat`, returning counts per [`STATES`] entry.
    fn scan(&mut self, ctx: &Context) -> Result<[u64; 4], CollectError> {
        let mut counts = [0u64; 4];
        let dir = std::fs::read_dir(&ctx.roots.proc).map_err(|source| CollectError::Read {
            path: ctx.roots.proc.clone(),
            source,
        })?;
        for entry in dir {
            let Ok(entry) = entry else { continue };
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if name.is_empty() || !name.bytes().all(|b| b.is_ascii_digit()) {
                continue;
            }
            self.path.clear();
            self.path.push(&ctx.roots.proc);
            self.path.push(name);
            self.path.push("stat");
            // The process may have exited since the directory was listed.
            let Ok(mut f) = std::fs::File::open(&self.path) else {
                continue;
            };
            let mut bytes = [0u8; STAT_PREFIX];
            let Ok(n) = f.read(&mut bytes) else { continue };
            if n == 0 {
                continue;
            }
            let state =
                parse_pid_stat_state(&bytes[..n]).map_err(|e| parse_error(&self.path, e))?;
            if let Some(i) = state {
                counts[i] += 1;
            }
        }
        Ok(counts)
    }
}

impl Collector for ProcessesCollector {
    fn name(&self) -> &'static str {
        "host.processes"
    }

    fn collect(&mut self, ctx: &Context, batch: &mut Batch) -> Result<(), CollectError> {
        let path = ctx.roots.proc("stat");
        read_into(&path, &mut self.buf)?;
        parse_stat_into(&self.buf, &mut self.stat).map_err(|e| parse_error(&path, e))?;
        if let Some(created) = self.stat.processes {
            batch
                .host()
                .record(&PROCESS_CREATED, Attributes::new(), created);
        }
        let counts = self.scan(ctx)?;
        let host = batch.host();
        for (state, n) in STATES.iter().zip(counts) {
            host.record(
                &PROCESS_COUNT,
                Attributes::new().with("process.state", *state),
                n,
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collectors::host::test_support::{read, run, value};

    #[test]
    fn state_is_the_char_after_the_last_paren() {
        assert_eq!(parse_pid_stat_state(b"1 (init) S 0 1"), Ok(Some(1)));
        assert_eq!(parse_pid_stat_state(b"9 (a) b) (c) Z 1 0"), Ok(Some(3)));
        assert_eq!(parse_pid_stat_state(b"9 (x) t 1"), Ok(Some(2)));
        assert_eq!(parse_pid_stat_state(b"9 (x) X 1"), Ok(None));
        assert!(parse_pid_stat_state(b"9 (x").is_err());
        assert!(parse_pid_stat_state(b"9 (x)").is_err());
        let real = read("real", "proc/1/stat");
        assert_eq!(parse_pid_stat_state(real.as_bytes()), Ok(Some(1)));
    }

    #[test]
    fn collector_counts_fixture_processes_by_state() {
        let (b, r) = run(&mut ProcessesCollector::default(), "real");
        r.unwrap();
        assert_eq!(
            value(&b, "system.process.count", &[("process.state", "running")]),
            1.0
        );
        assert_eq!(
            value(&b, "system.process.count", &[("process.state", "stopped")]),
            1.0
        );
        assert_eq!(
            value(&b, "system.process.count", &[("process.state", "defunct")]),
            1.0
        );
        assert!(value(&b, "system.process.count", &[("process.state", "sleeping")]) >= 5.0);
        assert!(value(&b, "system.process.created", &[]) > 0.0);
    }
}
