//! `faultline fault inject|list|revert` through a running agent: the CLI finds the agent from
//! the config's `api:` section, goes through its API (the agent's engine holds the fault and
//! lists it), says which path it took, never falls back once an agent answered, and runs
//! in-process with the journal in `--state-dir` when no agent is reachable. Only the test's
//! own `sleep` processes are paused.

// Test helpers outside `#[test]` functions fail loudly by design.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::time::Duration;

use faultline_tests::Agent;
use faultline_tests::chaos::{Scratch, Victim, state, wait_until};
use faultline_tests::drill::{
    VIEWER_TOKEN, api_call, api_section, poll_for, wait_listening, write_tokens,
};

const VIA_AGENT: &str = "going through the running agent's API";
const IN_PROCESS: &str = "running in-process";

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn paused(pid: i32) -> bool {
    state(pid) == Some('T')
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_cli_goes_through_the_running_agent_and_in_process_without_one() {
    let tmp = tempfile::tempdir().unwrap();
    let tokens = write_tokens(tmp.path());
    let api = format!("127.0.0.1:{}", faultline_tests::backup::free_port());
    let api_yaml = api_section(&api, &tokens, &[]);
    // The CLI's own config and state dir (a different state dir than the agent's: the
    // journal there must stay empty while the agent holds the fault).
    let cli = Scratch::new(&api_yaml);
    let mut agent = Agent::start(&format!(
        "interval: 1s\nexport:\n  otlp:\n    enabled: false\n{api_yaml}"
    ));
    assert!(
        wait_listening(&api),
        "the API did not come up:\n{}",
        agent.stderr()
    );

    // inject through the agent, held in the foreground by the CLI.
    let victim = Victim::sleep();
    let pid = victim.pid().to_string();
    let mut inject = cli.spawn(
        "inject",
        &[
            "fault",
            "inject",
            "process-pause",
            "--pid",
            &pid,
            "--duration",
            "30s",
        ],
    );
    assert!(
        wait_until(Duration::from_secs(15), || paused(victim.pid())),
        "the victim was not paused: {}",
        inject.stderr()
    );
    assert!(inject.stderr().contains(VIA_AGENT), "{}", inject.stderr());
    assert!(!inject.stderr().contains(IN_PROCESS), "{}", inject.stderr());
    // The agent's engine holds it (requested with the config's operator token); it is
    // listed once the apply returned, a moment after the SIGSTOP.
    let faults = poll_for(Duration::from_secs(10), || {
        let (st, body) = api_call(&api, "GET", "/v1/faults", Some(VIEWER_TOKEN), "");
        assert_eq!(st, 200, "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        v.as_array().filter(|a| !a.is_empty()).cloned()
    })
    .expect("the agent does not list the fault");
    assert_eq!(faults.len(), 1, "{faults:?}");
    assert_eq!(faults[0]["kind"], "process-pause");
    assert_eq!(faults[0]["requester"]["token"], "ops", "{faults:?}");
    let id = faults[0]["id"].as_str().unwrap().to_owned();
    assert!(
        wait_until(Duration::from_secs(5), || inject.stdout().contains(&id)),
        "inject did not print the id: {}",
        inject.stdout()
    );
    // …and nothing ran in the CLI's process: its journal is empty.
    assert!(
        cli.journal_entries().is_empty(),
        "{:?}",
        cli.journal_entries()
    );

    // list through the agent shows it.
    let out = cli.run(&["fault", "list"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains(&id), "{}", text(&out.stdout));
    assert!(text(&out.stderr).contains(VIA_AGENT));

    // A dry run through the agent applies nothing; a guard refusal is exit 3.
    let out = cli.run(&[
        "fault",
        "inject",
        "--dry-run",
        "process-kill",
        "--pid",
        &pid,
        "--duration",
        "1s",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("dry run, nothing applied"));
    let out = cli.run(&[
        "fault",
        "inject",
        "process-kill",
        "--pid",
        "1",
        "--duration",
        "5s",
    ]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("pid-1"), "{}", text(&out.stderr));

    // A wrong token is refused by the agent: exit 1, and no in-process fallback.
    let mut cmd = cli.command(&["fault", "list"]);
    cmd.env("FAULTLINE_TOKEN", "wrong-token-0123456789");
    let out = cmd.output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("401"), "{}", text(&out.stderr));
    assert!(!text(&out.stderr).contains(IN_PROCESS));

    // revert ID through the agent resumes the process; the holding CLI sees it end.
    let out = cli.run(&["fault", "revert", &id]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains(&format!("{id}: reverted")));
    assert!(!paused(victim.pid()), "revert left the victim stopped");
    let status = inject.wait_exit(Duration::from_secs(10));
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(0),
        "{}",
        inject.stderr()
    );
    assert!(inject.stdout().contains(&format!("fault {id} reverted")));
    let (_, body) = api_call(&api, "GET", "/v1/faults", Some(VIEWER_TOKEN), "");
    assert_eq!(body.trim(), "[]");
    let out = cli.run(&["fault", "revert", &id]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "reverting twice: {}",
        text(&out.stderr)
    );

    // No agent any more: the same commands run in-process, with the CLI's journal.
    assert!(agent.terminate(Duration::from_secs(15)).await.is_some());
    let mut inject = cli.spawn(
        "inject-local",
        &[
            "fault",
            "inject",
            "process-pause",
            "--pid",
            &pid,
            "--duration",
            "30s",
        ],
    );
    assert!(
        wait_until(Duration::from_secs(15), || paused(victim.pid())),
        "in-process: the victim was not paused: {}",
        inject.stderr()
    );
    assert!(inject.stderr().contains(IN_PROCESS), "{}", inject.stderr());
    assert!(!inject.stderr().contains(VIA_AGENT));
    assert_eq!(
        cli.journal_entries().len(),
        1,
        "the in-process fault is journaled"
    );
    let out = cli.run(&["fault", "revert", "--all"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains(IN_PROCESS));
    assert!(!paused(victim.pid()));
    assert!(cli.journal_entries().is_empty());
    // The in-process holder notices its fault is gone and ends.
    inject.signal(nix::sys::signal::Signal::SIGTERM);
    assert!(inject.wait_exit(Duration::from_secs(10)).is_some());
}
