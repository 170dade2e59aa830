use super::*;

const FIX: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/backup/");

fn fixture(name: &str) -> String {
    std::fs::read_to_string(format!("{FIX}{name}")).unwrap()
}

#[test]
fn restic_codes_and_old_versions_stderr() {
    assert_eq!(
        interpret(Tool::Restic, Some(12), None, ""),
        Outcome::WrongPassword
    );
    assert_eq!(
        interpret(Tool::Restic, Some(10), None, ""),
        Outcome::RepositoryMissing
    );
    assert_eq!(interpret(Tool::Restic, Some(11), None, ""), Outcome::Locked);
    assert_eq!(
        interpret(
            Tool::Restic,
            Some(1),
            None,
            &fixture("restic-wrong-password.stderr")
        ),
        Outcome::WrongPassword
    );
    assert_eq!(
        interpret(
            Tool::Restic,
            Some(1),
            None,
            &fixture("restic-no-repo.stderr")
        ),
        Outcome::RepositoryMissing
    );
    assert!(matches!(
        interpret(
            Tool::Restic,
            Some(1),
            None,
            "Fatal: repository contains errors"
        ),
        Outcome::Failed(_)
    ));
    assert!(matches!(
        interpret(Tool::Restic, Some(77), None, ""),
        Outcome::Failed(_)
    ));
    assert_eq!(
        interpret(Tool::Restic, None, Some(9), ""),
        Outcome::Signal(9)
    );
}

#[test]
fn borg_codes() {
    assert_eq!(interpret(Tool::Borg, Some(1), None, ""), Outcome::Warning);
    assert_eq!(
        interpret(
            Tool::Borg,
            Some(2),
            None,
            &fixture("borg-wrong-passphrase.stderr")
        ),
        Outcome::WrongPassword
    );
    assert_eq!(
        interpret(Tool::Borg, Some(2), None, &fixture("borg-no-repo.stderr")),
        Outcome::RepositoryMissing
    );
    assert_eq!(
        interpret(Tool::Borg, Some(137), None, ""),
        Outcome::Signal(9)
    );
}

#[test]
fn pgbackrest_codes_carry_the_message() {
    let o = interpret(
        Tool::Pgbackrest,
        Some(55),
        None,
        "ERROR: [055]: unable to load info file\n",
    );
    assert_eq!(
        o,
        Outcome::Failed(
            "pgbackrest: file-missing error (exit 55): unable to load info file".into()
        )
    );
    assert_eq!(
        interpret(Tool::Pgbackrest, Some(50), None, ""),
        Outcome::Locked
    );
    assert!(
        matches!(interpret(Tool::Pgbackrest, Some(200), None, ""), Outcome::Failed(m) if m.contains("unknown"))
    );
}

#[test]
fn tail_keeps_whole_lines_and_char_boundaries() {
    assert_eq!(tail("a\nb\nc", 100), "a\nb\nc");
    assert_eq!(tail("aaaa\nbbbb\ncccc", 7), "cccc");
    let s = "é".repeat(50);
    assert!(tail(&s, 11).len() <= 11);
}

#[tokio::test]
async fn captures_output_and_exit_code() {
    let o = run(
        &ToolCommand::new(Tool::Command, "sh", Duration::from_secs(5))
            .args(["-c", "echo out; echo err >&2; exit 3"]),
    )
    .await
    .unwrap();
    assert_eq!(o.code, Some(3));
    assert_eq!(o.stdout.trim(), "out");
    assert_eq!(o.stderr.trim(), "err");
}

#[tokio::test]
async fn missing_binary_is_named() {
    let e = run(&ToolCommand::new(
        Tool::Restic,
        "/nonexistent/restic",
        Duration::from_secs(5),
    ))
    .await
    .unwrap_err();
    assert!(matches!(e, RunError::NotFound { .. }), "{e}");
    assert!(e.to_string().contains("/nonexistent/restic"));
}

#[tokio::test]
async fn timeout_kills_the_whole_group_even_if_a_grandchild_holds_the_pipe() {
    let started = Instant::now();
    let cmd = ToolCommand::new(Tool::Command, "sh", Duration::from_millis(300))
        .args(["-c", "echo starting >&2; sleep 30 & sleep 30"]);
    let e = run(&cmd).await.unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(10));
    match e {
        RunError::Timeout { stderr, .. } => assert!(stderr.contains("starting"), "{stderr}"),
        other => panic!("{other}"),
    }
}
