use super::*;

fn parse(yaml: &str) -> Result<crate::config::Loaded, ConfigError> {
    crate::config::parse(yaml, "t.yaml")
}

fn invalid(yaml: &str) -> (usize, String, String) {
    match parse(yaml) {
        Err(ConfigError::Invalid {
            line,
            field,
            message,
            ..
        }) => (line, field, message),
        other => panic!("expected an invalid config, got {other:?}"),
    }
}

#[test]
fn the_issue_example_parses_as_written() {
    let yaml = "backups:\n  - name: app-files\n    kind: restic\n    repository: /srv/restic/app\n    password_file: /etc/faultline/restic.pass\n    rpo: 26h\n";
    let l = parse(yaml).unwrap();
    let b = &l.config.backups[0];
    assert_eq!(b.name, "app-files");
    assert_eq!(b.kind, SourceKind::Restic);
    assert_eq!(b.rpo.0, Duration::from_secs(26 * 3600));
    assert_eq!(b.freshness, FreshnessConfig::default());
    assert!(b.restore.is_none());
}

#[test]
fn every_kind_parses() {
    let yaml = r#"
backups:
  - name: r
    kind: restic
    repository: /r
    password_env: RP
    rpo: 1h
    integrity: { read_data_subsets: 7, every: 1d }
    restore: { every: 7d, expect_paths: [/etc/hosts], manifest: /m, sample: 3 }
  - name: b
    kind: borg
    repository: /b
    rpo: 1h
    integrity: { max_duration: 10m }
  - name: p
    kind: pgbackrest
    stanza: main
    user: postgres
    rpo: 1d
    rto: 30m
    restore: { query: "select count(*) from t", expect: ">= 1000" }
  - name: f
    kind: files
    path: /var/backups
    glob: "*.sql.gz"
    rpo: 1d
  - name: c
    kind: command
    list_command: [/bin/echo, "[]"]
    check_command: ["true"]
    rpo: 1d
"#;
    let l = parse(yaml).unwrap();
    assert_eq!(l.config.backups.len(), 5);
    let p = &l.config.backups[2];
    assert_eq!(
        p.restore.as_ref().unwrap().expect,
        Some(Predicate::Ge(1000.0))
    );
}

#[test]
fn errors_name_the_field_and_line() {
    let (line, field, msg) = invalid(
        "backups:\n  - name: a\n    kind: restic\n    repository: /r\n    rpo: 1h\n  - name: b\n    kind: restic\n    repository: /r\n    password_file: /p\n    stanza: x\n    rpo: 1h\n",
    );
    assert_eq!(field, "backups[0].password_file");
    assert_eq!(line, 2);
    assert!(msg.contains("password_env"), "{msg}");
    let (line, field, msg) = invalid(
        "backups:\n  - name: b\n    kind: restic\n    repository: /r\n    password_file: /p\n    stanza: x\n    rpo: 1h\n",
    );
    assert_eq!((line, field.as_str()), (6, "backups[0].stanza"));
    assert!(msg.contains("not used by kind restic"), "{msg}");
    let (_, field, _) = invalid(
        "backups:\n  - name: b\n    kind: restic\n    repository: /r\n    password_file: /p\n    rpo: 1h\n    integrity:\n      read_data_subsets: 0\n",
    );
    assert_eq!(field, "backups[0].integrity.read_data_subsets");
    let (_, field, msg) = invalid(
        "backups:\n  - name: x\n    kind: files\n    path: /tmp\n    rpo: 1h\n  - name: x\n    kind: files\n    path: /tmp\n    rpo: 1h\n",
    );
    assert_eq!(field, "backups[1].name");
    assert!(msg.contains("more than one"), "{msg}");
}

#[test]
fn serde_errors_for_typos_bad_durations_and_predicates() {
    let (_, field, _) =
        invalid("backups:\n  - name: b\n    kind: restic\n    repositry: /r\n    rpo: 1h\n");
    assert!(field.contains("repositry"), "{field}");
    let (_, _, msg) =
        invalid("backups:\n  - name: b\n    kind: files\n    path: /tmp\n    rpo: soon\n");
    assert!(msg.contains("invalid duration"), "{msg}");
    let (_, _, msg) = invalid(
        "backups:\n  - name: p\n    kind: pgbackrest\n    stanza: s\n    rpo: 1h\n    restore: {query: x, expect: \"~ 3\"}\n",
    );
    assert!(msg.contains("not a predicate"), "{msg}");
    let (_, _, msg) = invalid("backups:\n  - name: p\n    kind: tape\n    rpo: 1h\n");
    assert!(msg.contains("unknown variant"), "{msg}");
}

#[test]
fn predicates() {
    assert!(Predicate::parse(">= 10").unwrap().holds("10"));
    assert!(!Predicate::parse("> 10").unwrap().holds("10"));
    assert!(!Predicate::parse("> 10").unwrap().holds("many"));
    assert!(Predicate::parse("== 1.0").unwrap().holds("1"));
    assert!(Predicate::parse("== ok").unwrap().holds(" ok\n"));
    assert!(Predicate::parse("!= 0").unwrap().holds("3"));
    assert!(Predicate::parse("contains abc").unwrap().holds("xabcx"));
    assert!(!Predicate::parse("nonempty").unwrap().holds("  "));
    assert!(Predicate::parse(">= x").is_err());
    assert_eq!(Predicate::parse(" <= 5 ").unwrap().to_string(), "<= 5");
}

/// The `backups:` examples the user reads — this module's docs and the commented block of
/// the embedded default config — must load as written, one source of every kind.
#[test]
fn documented_examples_load_and_cover_every_kind() {
    let here = include_str!("../config.rs");
    let doc: String = here
        .lines()
        .filter_map(|l| l.strip_prefix("//!"))
        .skip_while(|l| !l.contains("```yaml"))
        .skip(1)
        .take_while(|l| !l.contains("```"))
        .map(|l| format!("{}\n", l.strip_prefix(' ').unwrap_or(l)))
        .collect();
    let default = crate::config::DEFAULT_CONFIG_YAML;
    let commented: String = default
        .lines()
        .skip_while(|l| !l.contains("kinds: restic, borg, pgbackrest, files, command"))
        .skip(1)
        .take_while(|l| l.starts_with("#  "))
        .map(|l| format!("{}\n", &l[1..]))
        .collect();
    for (what, yaml) in [
        ("backup/config.rs docs", doc),
        ("default.yaml", format!("backups:\n{commented}")),
    ] {
        let l = parse(&yaml).unwrap_or_else(|e| panic!("{what}: {e}\n{yaml}"));
        let mut kinds: Vec<&str> = l.config.backups.iter().map(|b| b.kind.as_str()).collect();
        kinds.sort_unstable();
        assert_eq!(
            kinds,
            ["borg", "command", "files", "pgbackrest", "restic"],
            "{what}"
        );
    }
}
