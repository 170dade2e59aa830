//! `faultline status [--format table|json]`: asks the agent running on this node's state
//! directory how it is, through its local socket (`<state-dir>/agent.sock`, mode 0600: no
//! token, the file's owner may ask), and prints the answer as a table that fits 80 columns
//! or as the documented JSON (docs/STATUS.md).
//!
//! Exit codes: 0 the agent answered, 3 no agent runs on this state directory (one line says
//! so), 1 anything else (a socket that refuses this user, an answer that does not parse).

use std::io::{Read as _, Write as _};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use clap::ValueEnum;
use faultline_exporters::repeat::{human, human_bytes};

use crate::outcome::{EXIT_FAILURE, EXIT_NO_AGENT};
use crate::status::{SOCKET_NAME, Status};
use crate::timefmt::format_utc;

/// How `faultline status` prints.
#[derive(Clone, Copy, Debug, Default, ValueEnum)]
pub enum StatusFormat {
    /// For people, 80 columns.
    #[default]
    Table,
    /// The stable JSON form (docs/STATUS.md).
    Json,
}

/// How long the agent has to answer.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

/// Width the table keeps to.
const WIDTH: usize = 80;

/// Runs `faultline status`.
pub fn run(state_dir: &Path, format: StatusFormat) -> ExitCode {
    let socket = state_dir.join(SOCKET_NAME);
    let status = match ask(&socket) {
        Ok(s) => s,
        Err(Asked::NoAgent) => {
            eprintln!(
                "faultline: no agent is running on {} (no answer on {}); start one with `faultline run` or pass its --state-dir",
                state_dir.display(),
                socket.display()
            );
            return ExitCode::from(EXIT_NO_AGENT);
        }
        Err(Asked::Failed(why)) => {
            eprintln!(
                "faultline: cannot ask the agent at {}: {why}",
                socket.display()
            );
            return ExitCode::from(EXIT_FAILURE);
        }
    };
    let out = match format {
        StatusFormat::Json => match serde_json::to_string_pretty(&status) {
            Ok(s) => s + "\n",
            Err(e) => {
                eprintln!("faultline: cannot encode the status: {e}");
                return ExitCode::from(EXIT_FAILURE);
            }
        },
        StatusFormat::Table => table(&status, crate::status::now_unix()),
    };
    let mut stdout = std::io::stdout().lock();
    if stdout
        .write_all(out.as_bytes())
        .and_then(|()| stdout.flush())
        .is_err()
    {
        return ExitCode::from(EXIT_FAILURE);
    }
    ExitCode::SUCCESS
}

enum Asked {
    /// No socket, or nobody listens on it.
    NoAgent,
    Failed(String),
}

fn ask(socket: &Path) -> Result<Status, Asked> {
    use std::io::ErrorKind;
    let mut stream = UnixStream::connect(socket).map_err(|e| match e.kind() {
        ErrorKind::NotFound | ErrorKind::ConnectionRefused => Asked::NoAgent,
        ErrorKind::PermissionDenied => Asked::Failed(format!(
            "{e} (the socket belongs to the agent's user: run this as that user or root)"
        )),
        _ => Asked::Failed(e.to_string()),
    })?;
    stream
        .set_read_timeout(Some(ANSWER_TIMEOUT))
        .map_err(|e| Asked::Failed(e.to_string()))?;
    let mut body = Vec::new();
    stream
        .read_to_end(&mut body)
        .map_err(|e| Asked::Failed(format!("no answer: {e}")))?;
    serde_json::from_slice(&body).map_err(|e| {
        Asked::Failed(format!(
            "the answer is not a status this faultline understands ({e}); is the agent another version?"
        ))
    })
}

/// Cuts `line` to the table's width.
fn fit(line: &str) -> String {
    if line.chars().count() <= WIDTH {
        return line.to_owned();
    }
    let mut s: String = line.chars().take(WIDTH - 1).collect();
    s.push('…');
    s
}

fn secs(s: f64) -> String {
    human(Duration::from_secs_f64(s.max(0.0)))
}

fn opt_secs(s: Option<f64>) -> String {
    s.map_or_else(|| "-".to_owned(), secs)
}

/// The table, every line at most [`WIDTH`] columns.
pub fn table(s: &Status, now: f64) -> String {
    let mut l: Vec<String> = Vec::new();
    let a = &s.agent;
    l.push(format!(
        "faultline {}, up {}, collecting every {}",
        a.version,
        secs(a.uptime_seconds),
        secs(a.interval_seconds)
    ));
    l.push(format!("  config     {}", a.config_file));
    l.push(format!("  state dir  {}", a.state_dir));

    l.push(String::new());
    match &s.export {
        None => l.push("EXPORT  off (export.otlp.enabled: false)".to_owned()),
        Some(e) => {
            let health = if e.healthy {
                "healthy".to_owned()
            } else {
                format!("FAILING ({} attempts)", e.failing_attempts)
            };
            l.push(format!("EXPORT  {health}  to {}", e.endpoint));
            l.push(format!(
                "  last success  {}",
                e.last_success_unix.map_or_else(
                    || "never".to_owned(),
                    |t| format!("{} ({} ago)", format_utc(t), secs(now - t))
                )
            ));
            if let Some(err) = &e.last_error {
                l.push(format!("  last error    {err}"));
            }
            l.push(format!(
                "  backlog       {} batches, {}, oldest {}",
                e.backlog_batches,
                human_bytes(e.backlog_bytes),
                opt_secs(e.oldest_batch_age_seconds)
            ));
            l.push(format!(
                "  queue         {}",
                e.queue_dir
                    .as_deref()
                    .map_or_else(|| "in memory".to_owned(), |d| format!("on disk at {d}"))
            ));
            l.push(format!(
                "  points        {} sent, {} dropped",
                e.sent_points, e.dropped_points
            ));
        }
    }

    l.push(String::new());
    l.push(format!(
        "{:<28} {:>9} {:>7}  LAST ERROR",
        "COLLECTOR", "LAST RUN", "ERRORS"
    ));
    for c in &s.collectors {
        l.push(format!(
            "{:<28} {:>9} {:>7}  {}",
            c.name,
            opt_secs(c.last_duration_seconds),
            c.errors,
            c.last_error.as_deref().unwrap_or("")
        ));
    }

    l.push(String::new());
    if s.faults.is_empty() {
        l.push("FAULTS  none active".to_owned());
    } else {
        l.push(format!(
            "{:<28} {:<14} {:>9}  CHECK",
            "FAULT", "KIND", "TIME LEFT"
        ));
        for f in &s.faults {
            l.push(format!(
                "{:<28} {:<14} {:>9}  {}",
                f.id,
                f.kind,
                secs(f.time_left_seconds),
                f.check.as_deref().unwrap_or("not checked")
            ));
        }
    }

    l.push(String::new());
    let d = &s.drills;
    if d.running.is_empty() && d.last.is_empty() {
        l.push("DRILLS  none run yet".to_owned());
    } else {
        l.push(format!(
            "{:<24} {:<18} {:>8} {:>8}  WHEN",
            "DRILL SCENARIO", "VERDICT", "RTO", "RPO"
        ));
        for r in d.running.iter().chain(&d.last) {
            let when = r.finished_at.unwrap_or(r.started_at);
            l.push(format!(
                "{:<24} {:<18} {:>8} {:>8}  {} ago",
                r.scenario,
                r.verdict.as_str(),
                opt_secs(r.rto_seconds),
                opt_secs(r.rpo_seconds),
                secs(now - when)
            ));
        }
    }
    l.push(match &d.next {
        Some(n) => format!(
            "  next scheduled  {} at {} (in {})",
            n.name,
            format_utc(n.at_unix),
            secs(n.at_unix - now)
        ),
        None => "  next scheduled  none".to_owned(),
    });

    l.push(String::new());
    if s.backups.is_empty() {
        l.push("BACKUPS  no sources configured".to_owned());
    } else {
        l.push(format!(
            "{:<20} {:<10} {:<10} {:>8} {:>8}  CHECKS",
            "BACKUP SOURCE", "KIND", "STATUS", "AGE", "RPO"
        ));
        for b in &s.backups {
            let status = match b.healthy {
                Some(true) => "healthy",
                Some(false) => "UNHEALTHY",
                None => "unchecked",
            };
            let checks: Vec<String> = b
                .checks
                .iter()
                .map(|c| format!("{} {}", c.check, c.status))
                .collect();
            l.push(format!(
                "{:<20} {:<10} {:<10} {:>8} {:>8}  {}",
                b.source,
                b.kind,
                status,
                opt_secs(b.age_seconds),
                secs(b.rpo_seconds),
                checks.join(", ")
            ));
            for c in b.checks.iter().filter(|c| c.error.is_some()) {
                l.push(format!(
                    "  {} {}: {}",
                    c.check,
                    c.status,
                    c.error.as_deref().unwrap_or("")
                ));
            }
        }
    }
    let mut out = String::new();
    for line in l {
        out.push_str(&fit(&line));
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::*;

    fn sample() -> Status {
        Status {
            agent: AgentStatus {
                version: "1.2.3".into(),
                uptime_seconds: 130.4,
                config_file: "/etc/faultline/a-very-long-path/that/goes/on/and/on/and/on/config.yaml".into(),
                state_dir: "/var/lib/faultline".into(),
                interval_seconds: 10.0,
            },
            collectors: vec![CollectorStatus {
                name: "host.filesystem".into(),
                last_duration_seconds: Some(0.0123),
                errors: 3,
                last_error: Some("cannot read /proc/self/mountinfo: permission denied, and a long tail of words".into()),
            }],
            export: Some(ExportStatus {
                endpoint: "http://127.0.0.1:4317".into(),
                healthy: false,
                failing_attempts: 12,
                last_success_unix: None,
                last_error: Some("transport error: connection refused".into()),
                backlog_batches: 12,
                backlog_bytes: 480_000,
                oldest_batch_age_seconds: Some(125.0),
                queue_dir: Some("/var/lib/faultline/queue".into()),
                sent_points: 0,
                dropped_points: 0,
            }),
            faults: vec![FaultStatus {
                id: "f-1795747223000-abcd".into(),
                kind: "process-pause".into(),
                targets: vec!["pid 4242".into()],
                time_left_seconds: 55.2,
                check: Some("in-effect".into()),
                check_detail: Some("stopped".into()),
            }],
            drills: DrillsStatus {
                running: vec![],
                last: vec![DrillStatus {
                    id: "drill-1-abcd".into(),
                    scenario: "redis-self-heal".into(),
                    verdict: crate::drill::report::Verdict::SteadyStateFailed,
                    started_at: 1000.0,
                    finished_at: Some(1010.0),
                    rto_seconds: Some(1.234),
                    rpo_seconds: Some(0.5),
                }],
                next: None,
            },
            backups: vec![BackupStatus {
                source: "nightly-files".into(),
                kind: "files".into(),
                healthy: Some(false),
                age_seconds: None,
                rpo_seconds: 86400.0,
                checks: vec![BackupCheckStatus {
                    check: "freshness".into(),
                    status: "unhealthy".into(),
                    at_unix: 1000.0,
                    summary: "no backups".into(),
                    error: Some("cannot read directory /srv/backups: No such file or directory (os error 2)".into()),
                }],
            }],
        }
    }

    #[test]
    fn the_table_fits_80_columns_and_shows_every_part() {
        let t = table(&sample(), 2000.0);
        for line in t.lines() {
            assert!(
                line.chars().count() <= 80,
                "{} columns: {line}",
                line.chars().count()
            );
        }
        for part in [
            "faultline 1.2.3, up 2m10s",
            "FAILING (12 attempts)",
            "12 batches, 468.8 KiB, oldest 2m5s",
            "host.filesystem",
            "process-pause",
            "in-effect",
            "redis-self-heal",
            "steady-state-failed",
            "1.2s",
            "nightly-files",
            "UNHEALTHY",
        ] {
            assert!(t.contains(part), "{part:?} missing from\n{t}");
        }
    }

    #[test]
    fn the_json_form_round_trips_and_refuses_unknown_fields() {
        let s = sample();
        let text = serde_json::to_string(&s).unwrap();
        assert_eq!(serde_json::from_str::<Status>(&text).unwrap(), s);
        let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
        v["export"]["surprise"] = 1.into();
        assert!(serde_json::from_value::<Status>(v).is_err());
    }
}
