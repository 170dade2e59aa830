//! Rotating the API's tokens file without a restart: a changed file is picked up (polled),
//! the old token is refused and the new one accepted; a broken file keeps the tokens in
//! force and logs why; with polling off, SIGHUP reloads.

// Test helpers outside `#[test]` functions fail loudly by design.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::time::Duration;

use faultline_tests::api::{OPERATOR, VIEWER, http, replace_file, start_agent, write_tokens};
use faultline_tests::drill::poll_for;
use nix::sys::signal::{self, Signal};

const NEW_OPERATOR: &str = "rotated-operator-token-9876543210";

fn status(addr: &str, token: &str) -> u16 {
    http(addr, "GET", "/v1/faults", Some(token), "").0
}

/// Whatever the tokens file says now is in force within this time (the agent polls every
/// 200 ms here; the margin is for a loaded CI machine).
const RELOAD_WITHIN: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_tokens_file_is_reloaded_and_a_broken_one_keeps_the_old_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = write_tokens(dir.path());
    let (agent, addr) = start_agent(&tokens, "  tokens_reload_interval: 200ms\n", "");
    assert_eq!(status(&addr, OPERATOR), 200);
    assert_eq!(status(&addr, VIEWER), 200);

    // Rotation: the operator token is replaced, the viewer goes away.
    replace_file(
        &tokens,
        &format!("- {{name: ops, role: operator, token: {NEW_OPERATOR}}}\n"),
    );
    let rotated = poll_for(RELOAD_WITHIN, || {
        (status(&addr, NEW_OPERATOR) == 200).then_some(())
    });
    assert!(
        rotated.is_some(),
        "new token not accepted:\n{}",
        agent.stderr()
    );
    assert_eq!(
        status(&addr, OPERATOR),
        401,
        "the old operator token still works"
    );
    assert_eq!(
        status(&addr, VIEWER),
        401,
        "the removed viewer token still works"
    );
    // The new token really is an operator: a malformed fault is a 400, not a 401/403.
    assert_eq!(
        http(&addr, "POST", "/v1/faults", Some(NEW_OPERATOR), "{").0,
        400
    );
    assert!(agent.stderr().contains("API tokens reloaded"));

    // A broken file (a token too short): refused with a clear error, the tokens stay.
    replace_file(&tokens, "- {name: ops, role: operator, token: short}\n");
    assert!(
        agent
            .wait_for_stderr("API tokens NOT reloaded", RELOAD_WITHIN)
            .await,
        "no error about the broken file:\n{}",
        agent.stderr()
    );
    let err = agent.stderr();
    assert!(
        err.contains("tokens.yaml") && err.contains("shorter than 16"),
        "the error does not say which file and why:\n{err}"
    );
    assert_eq!(status(&addr, NEW_OPERATOR), 200);
    assert_eq!(status(&addr, OPERATOR), 401);

    // A file that is not YAML at all, then deleted: the same. Each is seen to be re-read (a
    // new refusal in the log) before the old tokens are checked, so a reloader that stopped
    // reading cannot pass.
    for (what, change) in [("not YAML", Some("{{{ not yaml")), ("deleted", None)] {
        let refusals = refusals(&agent.stderr());
        match change {
            Some(text) => replace_file(&tokens, text),
            None => std::fs::remove_file(&tokens).unwrap(),
        }
        assert!(
            poll_for(RELOAD_WITHIN, || {
                (refusals_of(&agent) > refusals).then_some(())
            })
            .is_some(),
            "the {what} tokens file was never re-read and refused:\n{}",
            agent.stderr()
        );
        assert_eq!(
            status(&addr, NEW_OPERATOR),
            200,
            "{what}: the tokens were lost"
        );
    }
    assert_eq!(
        http(&addr, "GET", "/healthz", None, "").0,
        200,
        "the agent stopped serving"
    );
    // And reloading goes on after the broken files: a good file takes effect again.
    replace_file(
        &tokens,
        &format!("- {{name: ops, role: operator, token: {OPERATOR}}}\n"),
    );
    assert!(
        poll_for(RELOAD_WITHIN, || (status(&addr, OPERATOR) == 200)
            .then_some(()))
        .is_some(),
        "a good file after the broken ones was not reloaded:\n{}",
        agent.stderr()
    );
    assert_eq!(status(&addr, NEW_OPERATOR), 401);
}

/// How many times the agent has refused a tokens file so far.
fn refusals(stderr: &str) -> usize {
    stderr.matches("API tokens NOT reloaded").count()
}

fn refusals_of(agent: &faultline_tests::Agent) -> usize {
    refusals(&agent.stderr())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_tokens_file_when_polling_is_off() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = write_tokens(dir.path());
    let (agent, addr) = start_agent(&tokens, "  tokens_reload_interval: 0s\n", "");
    assert_eq!(status(&addr, OPERATOR), 200);

    replace_file(
        &tokens,
        &format!("- {{name: ops, role: operator, token: {NEW_OPERATOR}}}\n"),
    );
    // No polling: nothing changes until the signal (checked for longer than a poll would take).
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(status(&addr, OPERATOR), 200, "reloaded without SIGHUP");
    assert_eq!(status(&addr, NEW_OPERATOR), 401);

    signal::kill(agent.pid().unwrap(), Signal::SIGHUP).unwrap();
    let rotated = poll_for(RELOAD_WITHIN, || {
        (status(&addr, NEW_OPERATOR) == 200).then_some(())
    });
    assert!(
        rotated.is_some(),
        "SIGHUP did not reload:\n{}",
        agent.stderr()
    );
    assert_eq!(status(&addr, OPERATOR), 401);
    assert!(agent.stderr().contains("SIGHUP"), "{}", agent.stderr());
}
