//! Crash safety and the kill switch, observed from outside faultline.
//!
//! - After a SIGKILL of every `faultline fault inject` holding a fault, stress helpers are
//!   gone at once (PR_SET_PDEATHSIG), and a restarted `faultline run` on the same state dir
//!   reverts the rest within 1 s (paused process running, fill and I/O files gone, journal
//!   empty) and reports each fault as recovered.
//! - The engine's kill switch (`abort_all`) reverts every local fault within 100 ms.

use std::time::{Duration, Instant};

use faultline_chaos::{Audit, ChaosConfig, Engine, Env, FaultSpec, Journal, Requester};
use faultline_tests::chaos::{
    Bg, HelperWatch, Scratch, Tmpfs, Victim, helper_pids, is_root, require, running, runtime,
    state, wait_until,
};
use nix::sys::signal::Signal;

const T: Duration = Duration::from_secs(10);

#[test]
fn sigkilled_faults_are_reverted_by_the_next_start_within_one_second() {
    let root = is_root();
    require(root, "root (disk faults on a test tmpfs)");
    let fs = root.then(|| Tmpfs::mount("32m"));
    let s = Scratch::new("chaos:\n  disk_free_floor: 10%\n");
    let victim = Victim::sleep();
    let vpid = victim.pid().to_string();
    let mut kinds: Vec<(&str, Vec<String>)> = vec![
        ("process-pause", vec!["--pid".into(), vpid.clone()]),
        (
            "cpu-stress",
            vec!["--workers".into(), "1".into(), "--load".into(), "20".into()],
        ),
        ("memory-stress", vec!["--bytes".into(), "16MiB".into()]),
    ];
    if let Some(fs) = &fs {
        let p = fs.path().to_string_lossy().into_owned();
        kinds.push((
            "disk-fill",
            vec!["--path".into(), p.clone(), "--percent".into(), "40".into()],
        ));
        kinds.push((
            "disk-io",
            vec!["--path".into(), p, "--write-rate".into(), "1MiB".into()],
        ));
    }
    let mut held: Vec<Bg> = Vec::new();
    let mut helpers = Vec::new();
    for (kind, opts) in &kinds {
        let mut args: Vec<&str> = vec!["fault", "inject", kind];
        args.extend(opts.iter().map(String::as_str));
        args.extend(["--duration", "60s"]);
        let bg = s.spawn(kind, &args);
        let entry = s
            .wait_applied(kind, T)
            .unwrap_or_else(|| panic!("{kind} not applied: {}", bg.stderr()));
        helpers.extend(helper_pids(&entry));
        held.push(bg);
    }
    assert_eq!(state(victim.pid()), Some('T'));
    if let Some(fs) = &fs {
        assert_eq!(fs.files().len(), 2, "{:?}", fs.files());
    }
    for bg in &mut held {
        bg.signal(Signal::SIGKILL);
        bg.wait_exit(T);
    }
    // Helpers die with their agent (PR_SET_PDEATHSIG), before any recovery.
    assert!(
        wait_until(Duration::from_secs(1), || helpers
            .iter()
            .all(|p| !running(*p))),
        "helpers survived SIGKILL of the agent: {helpers:?}"
    );
    // What only the journal can undo is still there.
    assert_eq!(
        state(victim.pid()),
        Some('T'),
        "the pause should still hold before recovery"
    );
    assert_eq!(s.journal_entries().len(), kinds.len());

    let started = Instant::now();
    let mut agent = s.spawn("run", &["run"]);
    let reverted = wait_until(Duration::from_secs(5), || {
        matches!(state(victim.pid()), Some('S' | 'R'))
            && fs.as_ref().is_none_or(|fs| fs.files().is_empty())
            && s.journal_entries().is_empty()
    });
    let took = started.elapsed();
    assert!(
        reverted,
        "not reverted: state {:?}, journal {:?}\n{}",
        state(victim.pid()),
        s.journal_entries(),
        agent.stderr()
    );
    eprintln!(
        "recovery after restart took {took:?} for {} faults (including process start)",
        kinds.len()
    );
    assert!(took < Duration::from_secs(1), "recovery took {took:?}");
    assert!(
        wait_until(T, || agent
            .stderr()
            .matches("fault recovered: reverted")
            .count()
            == kinds.len()),
        "{}",
        agent.stderr()
    );
    for (kind, _) in &kinds {
        let log = agent.stderr();
        let reported = log
            .lines()
            .any(|l| l.contains("fault recovered: reverted") && l.contains(&format!("{kind}-")));
        assert!(reported, "{kind} not reported as recovered:\n{log}");
    }
    agent.signal(Signal::SIGTERM);
    assert!(agent.wait_exit(T).is_some(), "agent did not stop");
}

#[test]
fn journal_revert_all_reverts_a_fault_held_by_a_dead_cli_and_is_idempotent() {
    let s = Scratch::new("");
    let victim = Victim::sleep();
    let mut bg = s.spawn(
        "pause",
        &[
            "fault",
            "inject",
            "process-pause",
            "--pid",
            &victim.pid().to_string(),
            "--duration",
            "60s",
        ],
    );
    s.wait_applied("process-pause", T)
        .unwrap_or_else(|| panic!("{}", bg.stderr()));
    bg.signal(Signal::SIGKILL);
    bg.wait_exit(T);
    let list = s.run(&["fault", "list"]);
    let listed = String::from_utf8_lossy(&list.stdout).into_owned();
    assert!(
        listed.contains("process-pause") && listed.contains("dead"),
        "{listed}"
    );
    let out = s.run(&["fault", "revert", "--all"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("reverted"));
    assert!(matches!(state(victim.pid()), Some('S' | 'R')));
    let again = s.run(&["fault", "revert", "--all"]);
    assert!(again.status.success());
    assert!(
        String::from_utf8_lossy(&again.stdout).contains("no faults"),
        "{}",
        String::from_utf8_lossy(&again.stdout)
    );
}

#[test]
fn kill_switch_reverts_every_local_fault_within_100ms() {
    let dir = tempfile::tempdir().unwrap();
    let mut helpers = HelperWatch::new(dir.path());
    let worker = helpers.worker_command();
    let env = Env::detect("/proc".into(), worker);
    let engine = Engine::new(
        ChaosConfig::default(),
        env,
        Journal::open(dir.path()).unwrap(),
        Audit::default(),
    );
    let victims: Vec<Victim> = (0..3).map(|_| Victim::sleep()).collect();
    let rt = runtime();
    let spec = |json: String| -> FaultSpec { serde_json::from_str(&json).unwrap() };
    let helpers: Vec<i32> = rt.block_on(async {
        let mut helpers = Vec::new();
        for v in &victims {
            let s = spec(format!(
                r#"{{"kind":"process-pause","pid":{},"duration":"60s"}}"#,
                v.pid()
            ));
            engine.inject(s, Requester::cli()).await.unwrap();
        }
        for json in [
            r#"{"kind":"cpu-stress","workers":1,"load":10,"duration":"60s"}"#,
            r#"{"kind":"memory-stress","bytes":"8MiB","duration":"60s"}"#,
        ] {
            let f = engine
                .inject(spec(json.into()), Requester::cli())
                .await
                .unwrap();
            helpers.extend(f.record.helpers.iter().map(|h| h.pid));
        }
        helpers
    });
    assert!(victims.iter().all(|v| state(v.pid()) == Some('T')));
    assert!(helpers.iter().all(|p| running(*p)));
    let started = Instant::now();
    let results = rt.block_on(engine.abort_all(Requester::agent("kill-switch")));
    let took = started.elapsed();
    // Observed after the call returned: nothing still stopped, no helper alive.
    let resumed = victims
        .iter()
        .all(|v| matches!(state(v.pid()), Some('S' | 'R')));
    let helpers_gone = helpers.iter().all(|p| !running(*p));
    eprintln!("kill switch: {} faults reverted in {took:?}", results.len());
    assert_eq!(results.len(), 5);
    assert!(results.iter().all(|(_, r)| r.is_ok()), "{results:?}");
    assert!(
        resumed && helpers_gone,
        "resumed {resumed}, helpers gone {helpers_gone}"
    );
    assert!(
        took < Duration::from_millis(100),
        "kill switch took {took:?}"
    );
    assert!(engine.list().is_empty());
    assert_eq!(
        std::fs::read_dir(engine.journal().dir()).unwrap().count(),
        0
    );
}
