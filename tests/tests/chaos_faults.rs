//! Fault injection through the real `faultline` binary, every effect observed by something
//! other than faultline: the target's exit status, `/proc/<pid>/stat` (state T, RSS) and
//! `/proc/<pid>/task/<tid>/stat` (each stress worker's CPU time),
//! `/proc/<pid>/io`, `statvfs(2)` of a tmpfs the test mounted itself.
//!
//! Safety: tests signal only their own children, fill only their own tmpfs, and clean up on
//! failure (the fixtures in `faultline_tests::chaos` do it on drop).

use std::os::unix::process::ExitStatusExt;
use std::time::{Duration, Instant};

use faultline_tests::chaos::{
    Scratch, ThreadTimes, Tmpfs, Victim, helper_pids, is_root, require, running, stat, state,
    threads, wait_until,
};
use nix::sys::signal::Signal;

const T: Duration = Duration::from_secs(10);

fn code(out: &std::process::Output) -> Option<i32> {
    out.status.code()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn process_kill_delivers_the_signal_the_target_exit_status_shows() {
    let s = Scratch::new("");
    let mut victim = Victim::sleep();
    let pid = victim.pid().to_string();
    let out = s.run(&[
        "fault",
        "inject",
        "process-kill",
        "--pid",
        &pid,
        "--signal",
        "TERM",
        "--duration",
        "5s",
    ]);
    assert_eq!(code(&out), Some(0), "{}", text(&out.stderr));
    let status = victim.wait_exit(T).expect("the victim exits");
    assert_eq!(status.signal(), Some(libc_sigterm()), "{status:?}");
    assert!(
        s.journal_entries().is_empty(),
        "an instant fault leaves no journal entry"
    );
}

fn libc_sigterm() -> i32 {
    Signal::SIGTERM as i32
}

#[test]
fn process_pause_stops_the_target_then_resumes_it_at_the_deadline() {
    let s = Scratch::new("");
    let victim = Victim::sleep();
    let pid = victim.pid();
    let mut bg = s.spawn(
        "pause",
        &[
            "fault",
            "inject",
            "process-pause",
            "--pid",
            &pid.to_string(),
            "--duration",
            "1500ms",
        ],
    );
    assert!(
        wait_until(T, || state(pid) == Some('T')),
        "target never stopped: {:?}\n{}",
        state(pid),
        bg.stderr()
    );
    let stopped_at = Instant::now();
    assert!(
        wait_until(T, || matches!(state(pid), Some('S' | 'R'))),
        "target never resumed"
    );
    let held = stopped_at.elapsed();
    let status = bg.wait_exit(T).expect("inject exits after the deadline");
    assert!(status.success(), "{status:?}\n{}", bg.stderr());
    // Observed from outside with 10 ms polling: the stop lasted about the 1.5 s asked for.
    assert!(
        held >= Duration::from_millis(1300) && held <= Duration::from_millis(2500),
        "held {held:?}"
    );
    assert!(bg.stdout().contains("reverted"), "{}", bg.stdout());
    assert!(s.journal_entries().is_empty());
    eprintln!("pause held for {held:?} (asked 1.5s)");
}

#[test]
fn protected_process_and_pid_1_are_refused_naming_the_guard() {
    let s = Scratch::new("chaos:\n  protected_processes: [sleep]\n");
    let victim = Victim::sleep();
    let pid = victim.pid().to_string();
    for args in [
        vec![
            "fault",
            "inject",
            "process-kill",
            "--pid",
            &pid,
            "--duration",
            "5s",
        ],
        vec![
            "fault",
            "inject",
            "process-pause",
            "--name",
            "sleep",
            "--mode",
            "all",
            "--duration",
            "5s",
        ],
    ] {
        let out = s.run(&args);
        assert_eq!(code(&out), Some(3), "{args:?}: {}", text(&out.stderr));
        assert!(
            text(&out.stderr).contains("refused by guard protected-process"),
            "{}",
            text(&out.stderr)
        );
    }
    assert!(
        running(victim.pid()) && state(victim.pid()) != Some('T'),
        "the protected victim was touched"
    );
    let out = s.run(&[
        "fault",
        "inject",
        "process-kill",
        "--pid",
        "1",
        "--duration",
        "5s",
    ]);
    assert_eq!(code(&out), Some(3));
    assert!(
        text(&out.stderr).contains("refused by guard pid-1"),
        "{}",
        text(&out.stderr)
    );
    let out = s.run(&[
        "fault",
        "inject",
        "cpu-stress",
        "--load",
        "10",
        "--duration",
        "2h",
    ]);
    assert_eq!(code(&out), Some(3));
    assert!(
        text(&out.stderr).contains("refused by guard max-duration"),
        "{}",
        text(&out.stderr)
    );
    assert!(s.journal_entries().is_empty(), "refusals journal nothing");
}

#[test]
fn cpu_stress_runs_the_asked_workers_each_at_the_asked_load_and_dies_on_sigterm() {
    const WORKERS: usize = 2;
    const LOAD: f64 = 50.0;
    let s = Scratch::new("");
    let mut bg = s.spawn(
        "cpu",
        &[
            "fault",
            "inject",
            "cpu-stress",
            "--workers",
            &WORKERS.to_string(),
            "--load",
            &LOAD.to_string(),
            "--duration",
            "30s",
        ],
    );
    let entry = s
        .wait_applied("cpu-stress", T)
        .unwrap_or_else(|| panic!("not applied: {}", bg.stderr()));
    // One helper process whose worker threads (`cpu-<i>`) are exactly the asked number.
    let helpers = helper_pids(&entry);
    assert_eq!(helpers.len(), 1, "{entry:#}");
    let helper = helpers[0];
    let workers = |pid: i32| -> Vec<ThreadTimes> {
        threads(pid)
            .into_iter()
            .filter(|t| t.comm.starts_with("cpu-"))
            .collect()
    };
    let before = workers(helper);
    assert_eq!(before.len(), WORKERS, "{:?}", threads(helper));
    let t0 = Instant::now();
    wait_until(Duration::from_secs(3), || false);
    let after = workers(helper);
    let secs = t0.elapsed().as_secs_f64();
    assert_eq!(
        after.iter().map(|w| w.tid).collect::<Vec<_>>(),
        before.iter().map(|w| w.tid).collect::<Vec<_>>(),
        "the same worker threads for the whole window"
    );
    // Each worker's own times over the 3 s window, as a share of one CPU:
    // - used: utime + stime of /proc/<pid>/task/<tid>/stat. The duty cycle is wall-clock
    //   based (busy 50 ms of every 100 ms), so a worker preempted while "busy" gets less,
    //   never more: on this 2-core machine shared with other builds (load 4–6, the other
    //   chaos tests beside it) we measured 22–49%. Asserted: at most LOAD + 10 (the cap;
    //   ticks and the loop's last round add a few points) and at least 10 (real load even
    //   on a crowded machine).
    // - asked: used + the time it waited for a CPU while runnable (schedstat's run-queue
    //   delay), i.e. the duty cycle itself, whatever the machine's load. Measured 49.7–55.7%
    //   while "used" ranged 22–49%. Asserted: LOAD − 10 to LOAD + 20. Ticks cost 0.3 points
    //   (1 tick over 3 s); the wider upper side is the run-queue wait after each wake-up,
    //   which counts here although it falls outside the busy 50 ms and grows with the load.
    let hz = faultline_tests::procfs::clock_ticks() as f64;
    for (w0, w1) in before.iter().zip(&after) {
        let used = (w1.cpu_ticks - w0.cpu_ticks) as f64 / hz / secs * 100.0;
        let waited = (w1.runqueue_ns - w0.runqueue_ns) as f64 / 1e9 / secs * 100.0;
        let asked = used + waited;
        eprintln!(
            "cpu-stress {WORKERS}×{LOAD}%: worker {} used {used:.1}% of a CPU, waited {waited:.1}% → asked {asked:.1}%",
            w0.tid
        );
        assert!(
            (10.0..=LOAD + 10.0).contains(&used),
            "worker {} used {used:.1}%, asked {LOAD}%",
            w0.tid
        );
        assert!(
            (LOAD - 10.0..=LOAD + 20.0).contains(&asked),
            "worker {} busy (used + waiting) {asked:.1}%, asked {LOAD}% (-10/+20)",
            w0.tid
        );
    }
    bg.signal(Signal::SIGTERM);
    assert!(
        bg.wait_exit(T).is_some_and(|s| s.success()),
        "{}",
        bg.stderr()
    );
    assert!(!running(helper), "stress helper survived the revert");
    assert!(s.journal_entries().is_empty());
}

#[test]
fn memory_stress_worker_holds_the_bytes_and_dies_on_sigint() {
    let s = Scratch::new("");
    let mut bg = s.spawn(
        "mem",
        &[
            "fault",
            "inject",
            "memory-stress",
            "--bytes",
            "64MiB",
            "--duration",
            "30s",
        ],
    );
    let entry = s
        .wait_applied("memory-stress", T)
        .unwrap_or_else(|| panic!("not applied: {}", bg.stderr()));
    let helper = helper_pids(&entry)[0];
    let (_, _, rss_pages) = stat(helper).expect("helper running");
    let rss = rss_pages * 4096;
    eprintln!("memory-stress 64MiB: helper RSS {} MiB", rss >> 20);
    assert!(rss >= 64 << 20, "RSS {rss} below 64 MiB");
    bg.signal(Signal::SIGINT);
    assert!(
        bg.wait_exit(T).is_some_and(|s| s.success()),
        "{}",
        bg.stderr()
    );
    assert!(!running(helper));
}

#[test]
fn disk_fill_reaches_the_target_usage_and_the_floor_holds() {
    if !require(is_root(), "root (to mount a test tmpfs)") {
        return;
    }
    let fs = Tmpfs::mount("32m");
    let s = Scratch::new("chaos:\n  disk_free_floor: 30%\n");
    let path = fs.path().to_string_lossy().into_owned();
    let before = fs.used_percent();
    let (mut bg, _) = s.inject_disk_fill(fs.path(), ["--percent", "50"], "30s", T);
    let used = fs.used_percent();
    eprintln!("disk-fill 50%: statvfs shows {used:.2}% used (was {before:.2}%)");
    assert!((used - 50.0).abs() <= 1.0, "used {used}%");
    // Asking for more than the floor allows is refused, and nothing is created.
    let out = s.run(&[
        "fault",
        "inject",
        "disk-fill",
        "--path",
        &path,
        "--percent",
        "90",
        "--duration",
        "5s",
    ]);
    assert_eq!(code(&out), Some(3), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("refused by guard disk-free-floor"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(fs.files().len(), 1, "{:?}", fs.files());
    bg.signal(Signal::SIGTERM);
    assert!(
        bg.wait_exit(T).is_some_and(|s| s.success()),
        "{}",
        bg.stderr()
    );
    assert!(fs.files().is_empty(), "fill file left: {:?}", fs.files());
    assert!((fs.used_percent() - before).abs() < 0.5);
}

#[test]
fn disk_io_helper_writes_at_the_rate() {
    if !require(is_root(), "root (to mount a test tmpfs)") {
        return;
    }
    let fs = Tmpfs::mount("16m");
    let s = Scratch::new("chaos:\n  disk_free_floor: 10%\n");
    let path = fs.path().to_string_lossy().into_owned();
    let mut bg = s.spawn(
        "io",
        &[
            "fault",
            "inject",
            "disk-io",
            "--path",
            &path,
            "--write-rate",
            "2MiB",
            "--duration",
            "30s",
        ],
    );
    let entry = s
        .wait_applied("disk-io", T)
        .unwrap_or_else(|| panic!("not applied: {}", bg.stderr()));
    let helper = helper_pids(&entry)[0];
    let wchar = || {
        std::fs::read_to_string(format!("/proc/{helper}/io"))
            .ok()
            .and_then(|t| {
                t.lines().find_map(|l| {
                    l.strip_prefix("wchar: ")
                        .and_then(|v| v.trim().parse::<u64>().ok())
                })
            })
            .unwrap_or(0)
    };
    let (w0, t0) = (wchar(), Instant::now());
    wait_until(Duration::from_secs(2), || false);
    let rate = (wchar() - w0) as f64 / t0.elapsed().as_secs_f64();
    eprintln!(
        "disk-io 2MiB/s: helper wrote {:.2} MiB/s (/proc/<pid>/io wchar)",
        rate / f64::from(1 << 20)
    );
    assert!((1.5e6..=3.0e6).contains(&rate), "rate {rate} B/s");
    bg.signal(Signal::SIGTERM);
    assert!(
        bg.wait_exit(T).is_some_and(|s| s.success()),
        "{}",
        bg.stderr()
    );
    assert!(!running(helper));
    assert!(fs.files().is_empty(), "{:?}", fs.files());
}
