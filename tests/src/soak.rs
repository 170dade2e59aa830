//! Readings for the soak (`tests/soak.rs`): what a long-running `faultline run` holds, read
//! by the test itself — `/proc/<pid>` for descriptors, memory and threads, a `/proc` scan for
//! the agent's helper processes, the state directory for journal entries and the disk queue,
//! `tc`/`nft` in the test's namespace and `nft` on the host — one [`Sample`] per tick, written
//! as CSV ([`Sample::CSV_HEADER`], [`Sample::csv_row`]) for `benches/soak/plot.py`.
//!
//! [`growth`] is the pure part: the maximum of a window of a series, so the soak's bounds
//! ("the last third's peak is no higher than the first third's plus a margin") are one
//! expression each and unit-tested here.
//!
//! Not here: the bounds' values and why (the soak's module docs), or anything the agent
//! reports about itself.

use std::fs;
use std::path::Path;

/// One row of the soak's series.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Sample {
    /// Seconds since the soak started.
    pub t_s: f64,
    /// Open file descriptors of the agent (`/proc/<pid>/fd` entries).
    pub fds: u64,
    /// Resident memory of the agent (`VmRSS`), KiB.
    pub rss_kib: u64,
    /// Threads of the agent (`Threads`).
    pub threads: u64,
    /// Live helper processes whose `--parent` is the agent ([`helper_pids`]).
    pub helpers: u64,
    /// Fault journal entries (`<state>/faults/journal/*.json`).
    pub journal: u64,
    /// Qdiscs in the test's namespace (lines of `tc qdisc show`).
    pub qdiscs: u64,
    /// nftables tables in the test's namespace.
    pub nft_ns: u64,
    /// nftables tables on the host named with faultline's prefix (`faultline_`).
    pub nft_host: u64,
    /// Bytes in the disk queue's directory (`<state>/queue`).
    pub queue_bytes: u64,
    /// Inject/revert cycles completed so far (API and CLI).
    pub cycles: u64,
    /// Whether the OTLP receiver was up at the time.
    pub receiver_up: bool,
}

impl Sample {
    /// The CSV header, matching [`Sample::csv_row`].
    pub const CSV_HEADER: &'static str = "t_s,fds,rss_kib,threads,helpers,journal,qdiscs_ns,nft_tables_ns,nft_tables_host,queue_bytes,cycles,receiver_up";

    /// The row, without a line end.
    pub fn csv_row(&self) -> String {
        format!(
            "{:.1},{},{},{},{},{},{},{},{},{},{},{}",
            self.t_s,
            self.fds,
            self.rss_kib,
            self.threads,
            self.helpers,
            self.journal,
            self.qdiscs,
            self.nft_ns,
            self.nft_host,
            self.queue_bytes,
            self.cycles,
            u8::from(self.receiver_up)
        )
    }
}

/// `VmRSS` (KiB) and `Threads` from the text of a `/proc/<pid>/status` file. Pure.
pub fn parse_status(text: &str) -> Option<(u64, u64)> {
    let field = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|v| v.parse().ok())
    };
    Some((field("VmRSS:")?, field("Threads:")?))
}

/// Open descriptors, RSS (KiB) and threads of `pid`; `None` once it is gone.
pub fn process(pid: i32) -> Option<(u64, u64, u64)> {
    let fds = fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count() as u64;
    let (rss, threads) = parse_status(&fs::read_to_string(format!("/proc/{pid}/status")).ok()?)?;
    Some((fds, rss, threads))
}

/// Whether a command line (NUL-separated, as `/proc/<pid>/cmdline` has it) is a chaos helper
/// (`… __chaos-worker … --parent <parent> …`) of `parent`. Pure.
pub fn is_helper_of(cmdline: &[u8], parent: i32) -> bool {
    crate::chaos::helper_parent(cmdline) == Some(parent)
}

/// Live helper processes of the agent `parent`, found by scanning every `/proc/<pid>/cmdline`
/// (zombies have an empty one and do not count; an exited helper not yet reaped is the
/// agent's business, a running one is a leak once its fault is over).
pub fn helper_pids(parent: i32) -> Vec<i32> {
    crate::chaos::proc_pids()
        .into_iter()
        .filter(|pid| {
            fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|raw| is_helper_of(&raw, parent))
        })
        .collect()
}

/// Files in `dir` whose name ends with `suffix` (0 when it does not exist).
pub fn count_files(dir: &Path, suffix: &str) -> u64 {
    fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .filter(|e| e.file_name().to_string_lossy().ends_with(suffix))
                .count() as u64
        })
        .unwrap_or(0)
}

/// Total size of the regular files directly in `dir` (0 when it does not exist).
pub fn dir_bytes(dir: &Path) -> u64 {
    fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .filter_map(|e| e.metadata().ok())
                .filter(|m| m.is_file())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

/// The names of the nftables tables in `nft list tables` output (`table inet NAME` → NAME).
/// Pure.
pub fn nft_table_names(listing: &str) -> Vec<String> {
    listing
        .lines()
        .filter_map(|l| l.trim().strip_prefix("table "))
        .filter_map(|rest| rest.split_whitespace().nth(1))
        .map(str::to_owned)
        .collect()
}

/// `nft list tables` on the host (empty when nft is missing or fails).
pub fn host_nft_tables() -> Vec<String> {
    std::process::Command::new("nft")
        .args(["list", "tables"])
        .output()
        .map(|o| nft_table_names(&String::from_utf8_lossy(&o.stdout)))
        .unwrap_or_default()
}

/// Windows of a series, for the soak's growth bounds. Pure.
pub mod growth {
    /// The largest value among the samples whose position lies in `[from, to)` of the whole
    /// run, as fractions (`0.0..1.0/3.0` is the first third); 0 when the window is empty.
    pub fn max_in(values: &[u64], from: f64, to: f64) -> u64 {
        let n = values.len() as f64;
        values
            .iter()
            .enumerate()
            .filter(|(i, _)| {
                let at = *i as f64 / n;
                at >= from && at < to
            })
            .map(|(_, v)| *v)
            .max()
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_fields_are_read_and_missing_ones_are_none() {
        let text = "Name:\tfaultline\nVmPeak:\t  99 kB\nVmRSS:\t   20480 kB\nThreads:\t12\n";
        assert_eq!(parse_status(text), Some((20480, 12)));
        assert_eq!(parse_status("Name:\tx\nThreads:\t3\n"), None);
    }

    #[test]
    fn helpers_match_on_the_worker_argument_and_the_exact_parent() {
        let cmdline = |args: &[&str]| args.join("\0").into_bytes();
        let helper = |parent: &str| {
            let worker = faultline_chaos::WORKER_ARG;
            cmdline(&[
                "/usr/bin/faultline",
                worker,
                "--parent",
                parent,
                "cpu",
                "--load",
                "20",
                "",
            ])
        };
        assert!(is_helper_of(&helper("4242"), 4242));
        assert!(!is_helper_of(&helper("42421"), 4242));
        let run = cmdline(&["/usr/bin/faultline", "run", "--parent", "4242", ""]);
        assert!(!is_helper_of(&run, 4242));
        assert!(!is_helper_of(b"", 4242));
    }

    #[test]
    fn table_names_come_from_the_listing() {
        let l = "table ip nat\ntable inet faultline_partition_0a1b2c3d\n\n";
        assert_eq!(nft_table_names(l), ["nat", "faultline_partition_0a1b2c3d"]);
    }

    #[test]
    fn windows_take_the_maximum_of_their_share() {
        let v = [1, 5, 2, 9, 3, 4];
        assert_eq!(growth::max_in(&v, 0.0, 1.0 / 3.0), 5);
        assert_eq!(growth::max_in(&v, 2.0 / 3.0, 1.0), 4);
        assert_eq!(growth::max_in(&v, 0.5, 1.0), 9);
        assert_eq!(growth::max_in(&[], 0.0, 1.0), 0);
    }

    #[test]
    fn rows_match_the_header() {
        let row = Sample::default().csv_row();
        assert_eq!(
            row.split(',').count(),
            Sample::CSV_HEADER.split(',').count()
        );
    }
}
