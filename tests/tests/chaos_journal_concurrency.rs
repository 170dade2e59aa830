//! Many `faultline fault inject` processes started at the same moment on one fresh state dir
//! (a game day, a drill schedule and an operator acting at once) all succeed and all revert.
//!
//! Each process creates the state and journal directories and sweeps the journal when it
//! starts; none of that may break another process's write. Evidence is the test's own: each
//! victim's `/proc/<pid>/stat` state seen `T` while its fault holds and running after, the
//! exit codes, and the journal directory listing.

use std::collections::HashSet;
use std::process::{Child, Stdio};
use std::time::Duration;

use faultline_tests::agent::faultline_command;
use faultline_tests::chaos::{Scratch, Victim, state, wait_until};

const PROCESSES: usize = 20;
const ROUNDS: usize = 20;

#[test]
fn twenty_concurrent_injects_on_a_fresh_state_dir_all_apply_and_revert_over_twenty_rounds() {
    let s = Scratch::new("");
    let mut failures = Vec::new();
    for round in 0..ROUNDS {
        // Not created: every process races to create it and its journal.
        let state_dir = s.path().join(format!("fresh-{round}"));
        let victims: Vec<Victim> = (0..PROCESSES).map(|_| Victim::sleep()).collect();
        let mut injects: Vec<(i32, Child)> = victims
            .iter()
            .map(|v| {
                let child = faultline_command()
                    .arg("--state-dir")
                    .arg(&state_dir)
                    .args(["fault", "inject", "process-pause", "--pid"])
                    .arg(v.pid().to_string())
                    .args(["--duration", "1s", "--config"])
                    .arg(s.path().join("faultline.yaml"))
                    .env_remove("FAULTLINE_CONFIG")
                    .env_remove("FAULTLINE_STATE_DIR")
                    .env_remove("RUST_LOG")
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::piped())
                    .spawn()
                    .unwrap_or_else(|e| panic!("spawn faultline: {e}"));
                (v.pid(), child)
            })
            .collect();
        // Watch every victim stop while the injects run.
        let mut seen_paused = HashSet::new();
        let all_ended = wait_until(Duration::from_secs(20), || {
            for v in &victims {
                if state(v.pid()) == Some('T') {
                    seen_paused.insert(v.pid());
                }
            }
            injects
                .iter_mut()
                .all(|(_, c)| c.try_wait().ok().flatten().is_some())
        });
        if !all_ended {
            for (_, c) in &mut injects {
                let _ = c.kill();
            }
        }
        assert!(
            all_ended,
            "round {round}: an inject did not end within 20 s"
        );
        for (pid, child) in injects.drain(..) {
            let out = child
                .wait_with_output()
                .unwrap_or_else(|e| panic!("wait faultline: {e}"));
            if !out.status.success() {
                failures.push(format!(
                    "round {round}, victim {pid}: {} — {}",
                    out.status,
                    String::from_utf8_lossy(&out.stderr)
                        .lines()
                        .rfind(|l| l.starts_with("faultline:"))
                        .unwrap_or("(no error line)")
                ));
            }
        }
        for v in &victims {
            assert!(
                seen_paused.contains(&v.pid()) || !failures.is_empty(),
                "round {round}: victim {} was never seen stopped",
                v.pid()
            );
            assert!(
                wait_until(Duration::from_secs(5), || state(v.pid())
                    .is_some_and(|st| st != 'T')),
                "round {round}: victim {} still stopped after its inject ended",
                v.pid()
            );
        }
        let journal = state_dir.join("faults/journal");
        let left: Vec<String> = std::fs::read_dir(&journal)
            .unwrap_or_else(|e| panic!("{}: {e}", journal.display()))
            .map(|d| {
                d.map_or_else(
                    |e| e.to_string(),
                    |d| d.file_name().to_string_lossy().into(),
                )
            })
            .collect();
        assert!(
            left.is_empty(),
            "round {round}: journal not empty: {left:?}"
        );
    }
    assert!(
        failures.is_empty(),
        "{} of {} injects failed:\n{}",
        failures.len(),
        PROCESSES * ROUNDS,
        failures.join("\n")
    );
}
