//! The API under load: the real agent, 200 concurrent clients on loopback for a bounded time
//! (`FAULTLINE_API_LOAD_SECS`, default 30), mixing viewer reads, operator fault injections
//! on the test's own `sleep` child, malformed bodies, and unauthenticated and wrong-role
//! requests. Proves: every request is answered with the status its kind calls for, the
//! agent still serves `/healthz` afterwards, its memory stays within a stated bound, and no
//! unauthenticated or unauthorised request changed anything (the agent's own audit log shows
//! every applied fault came from the operator, on the operator's target, one per 201).
//!
//! Also: the connection limit (`api.max_connections`: the next connection gets a 503 naming
//! the setting) and the read timeout (`api.read_timeout`: silent and half-sent requests are
//! closed, freeing their slots).
//!
//! Only the test's own `sleep` processes are paused, each for 100 ms.

// Test helpers outside `#[test]` functions fail loudly by design.
#![allow(clippy::expect_used, clippy::unwrap_used)]
#![allow(clippy::disallowed_methods)] // std::thread::sleep: the watcher and sampler are plain threads

use std::collections::BTreeMap;
use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use faultline_tests::api::{
    OPERATOR, VIEWER, raw, start_agent, start_agent_with_env, try_http, write_tokens,
};
use faultline_tests::chaos::{Victim, state};
use faultline_tests::drill::poll_for;

const CLIENTS: usize = 200;

/// How far the agent's resident memory may grow over the whole load: 200 connections'
/// buffers and allocator slack, reached in the first seconds. The agent idles at ~24 MiB
/// (debug build) and grew by ~11 MiB under this load here (2026-12-04).
const RSS_GROWTH_BOUND_KIB: u64 = 32 * 1024;

/// How far the peak may rise from the load's first half to its second: by then every
/// connection, buffer and arena exists, so what still grows grows with the requests. Each
/// half is tens of thousands of requests (80 000–90 000 in CI, 2026-12-07); a leak of 100
/// bytes per request would add more than this. Alone on a quiet host the second half's peak
/// was 3.7 MiB below to 1.4 MiB above the first's (five runs, the agent's threads peaking at
/// 32 in the first half and staying there); in a CI run with the other test binaries beside
/// it, 4.9 MiB above (and 4.2 MiB in an earlier session's): the peak also follows how many
/// requests are in flight at once when the host is loaded, which a 4 MiB bound did not leave
/// room for.
const SECOND_HALF_GROWTH_BOUND_KIB: u64 = 8 * 1024;

fn load_secs() -> u64 {
    std::env::var("FAULTLINE_API_LOAD_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(30)
}

/// The agent's resident memory (KiB) and thread count, from its `/proc/<pid>/status`.
fn status(pid: i32) -> (u64, u64) {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    faultline_tests::soak::parse_status(&text).unwrap()
}

fn rss_kib(pid: i32) -> u64 {
    status(pid).0
}

/// One kind of request in the mix: what is sent, and which statuses are correct for it.
struct Kind {
    name: &'static str,
    method: &'static str,
    path: &'static str,
    token: Option<&'static str>,
    body: String,
    /// Sent by someone who may not change anything.
    unauthorised: bool,
    expect: &'static [u16],
}

fn mix(ok_pid: i32, forbidden_pid: i32) -> Vec<Kind> {
    let pause =
        |pid: i32| format!("{{\"kind\":\"process-pause\",\"pid\":{pid},\"duration\":\"100ms\"}}");
    let k = |name, method, path, token, body: String, unauthorised, expect| Kind {
        name,
        method,
        path,
        token,
        body,
        unauthorised,
        expect,
    };
    vec![
        k(
            "viewer lists faults",
            "GET",
            "/v1/faults",
            Some(VIEWER),
            String::new(),
            false,
            &[200],
        ),
        k(
            "viewer lists drills",
            "GET",
            "/v1/drills",
            Some(VIEWER),
            String::new(),
            false,
            &[200],
        ),
        k(
            "operator lists faults",
            "GET",
            "/v1/faults",
            Some(OPERATOR),
            String::new(),
            false,
            &[200],
        ),
        k(
            "health",
            "GET",
            "/healthz",
            None,
            String::new(),
            false,
            &[200],
        ),
        // Guards may refuse (concurrency limit, target already paused): 422 / 400 with a reason;
        // a fault whose check after apply failed is reverted and answered 409.
        k(
            "operator pauses its victim",
            "POST",
            "/v1/faults",
            Some(OPERATOR),
            pause(ok_pid),
            false,
            &[201, 400, 409, 422],
        ),
        k(
            "operator: malformed JSON",
            "POST",
            "/v1/faults",
            Some(OPERATOR),
            "{\"kind\":".into(),
            false,
            &[400],
        ),
        k(
            "operator: unknown kind",
            "POST",
            "/v1/faults",
            Some(OPERATOR),
            "{\"kind\":\"reboot\"}".into(),
            false,
            &[400],
        ),
        k(
            "operator: bad drill YAML",
            "POST",
            "/v1/drills",
            Some(OPERATOR),
            "name: [unclosed".into(),
            false,
            &[400],
        ),
        k(
            "operator: unknown drill",
            "POST",
            "/v1/drills",
            Some(OPERATOR),
            "{\"scenario\":\"nope\"}".into(),
            false,
            &[404],
        ),
        k(
            "operator: delete unknown fault",
            "DELETE",
            "/v1/faults/f-nonexistent",
            Some(OPERATOR),
            String::new(),
            false,
            &[400, 404],
        ),
        k(
            "no token reads",
            "GET",
            "/v1/faults",
            None,
            String::new(),
            true,
            &[401],
        ),
        k(
            "no token injects",
            "POST",
            "/v1/faults",
            None,
            pause(forbidden_pid),
            true,
            &[401],
        ),
        k(
            "wrong token injects",
            "POST",
            "/v1/faults",
            Some("wrong-token-0123456789abcdef"),
            pause(forbidden_pid),
            true,
            &[401],
        ),
        k(
            "viewer injects",
            "POST",
            "/v1/faults",
            Some(VIEWER),
            pause(forbidden_pid),
            true,
            &[403],
        ),
        k(
            "viewer pulls the kill switch",
            "POST",
            "/v1/abort",
            Some(VIEWER),
            String::new(),
            true,
            &[403],
        ),
        k(
            "viewer starts a drill",
            "POST",
            "/v1/drills",
            Some(VIEWER),
            "{\"scenario\":\"x\"}".into(),
            true,
            &[403],
        ),
        k(
            "no token deletes",
            "DELETE",
            "/v1/faults/f-1",
            None,
            String::new(),
            true,
            &[401],
        ),
        k(
            "viewer: malformed JSON",
            "POST",
            "/v1/faults",
            Some(VIEWER),
            "{{{{".into(),
            true,
            &[403],
        ),
    ]
}

#[derive(Default)]
struct Tally {
    /// (kind, status) → count.
    statuses: BTreeMap<(&'static str, u16), u64>,
    /// Requests with a wrong status or no answer: (kind, what happened).
    wrong: Vec<(&'static str, String)>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_clients_mixed_requests_every_one_answered_nothing_changed_by_the_unauthorised()
{
    let dir = tempfile::tempdir().unwrap();
    let tokens = write_tokens(dir.path());
    // glibc gives threads that contend for the heap arenas of their own (up to 8 per core),
    // created lazily. On a loaded 2-core CI host the second half's peak rose by ~4 MiB in 1
    // run in 3, most likely (not proven) the blocking pool's threads reaching new arenas late
    // in the run. Two arenas take that variance out of a test whose subject is memory that
    // grows with the requests; a leak stays in the heap whatever the arena count.
    let (agent, addr) = start_agent_with_env(
        "interval: 1s\nexport:\n  otlp:\n    enabled: false\n",
        &tokens,
        "",
        "logging: {level: info, format: json}\nchaos: {max_concurrent: 8}\n",
        &[("MALLOC_ARENA_MAX", "2")],
    );
    // The victims start once the agent is up (its first start may include a build that
    // outlasts `sleep 300`).
    let ok_victim = Victim::sleep();
    let forbidden_victim = Victim::sleep();
    let pid = agent.pid().unwrap().as_raw();
    // Warm up (first requests allocate the server's structures), then the baseline.
    for _ in 0..20 {
        try_http(&addr, "GET", "/v1/faults", Some(VIEWER), "").unwrap();
    }
    let rss_before = rss_kib(pid);

    let kinds = Arc::new(mix(ok_victim.pid(), forbidden_victim.pid()));
    let tally = Arc::new(Mutex::new(Tally::default()));
    let stop = Arc::new(AtomicBool::new(false));
    // The peak RSS and thread count of the load's first half and of its second.
    let peaks = Arc::new([AtomicU64::new(0), AtomicU64::new(0)]);
    let tpeaks = Arc::new([AtomicU64::new(0), AtomicU64::new(0)]);
    let secs = load_secs();
    let started = Instant::now();
    let midpoint = started + Duration::from_secs(secs) / 2;
    let deadline = started + Duration::from_secs(secs);

    // The forbidden victim is watched throughout: it must never be seen stopped.
    let watcher = {
        let (stop, fpid) = (stop.clone(), forbidden_victim.pid());
        std::thread::spawn(move || {
            let mut seen_stopped = 0u32;
            while !stop.load(Ordering::SeqCst) {
                if state(fpid) == Some('T') {
                    seen_stopped += 1;
                }
                std::thread::sleep(Duration::from_millis(2));
            }
            seen_stopped
        })
    };
    let sampler = {
        let (stop, peaks, tpeaks) = (stop.clone(), peaks.clone(), tpeaks.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                let half = usize::from(Instant::now() >= midpoint);
                let (rss, threads) = status(pid);
                peaks[half].fetch_max(rss, Ordering::SeqCst);
                tpeaks[half].fetch_max(threads, Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    };
    let clients: Vec<_> = (0..CLIENTS)
        .map(|i| {
            let (kinds, tally, addr) = (kinds.clone(), tally.clone(), addr.clone());
            std::thread::spawn(move || {
                let mut n = i;
                while Instant::now() < deadline {
                    let k = &kinds[n % kinds.len()];
                    n += 7; // co-prime with the mix length: every client cycles through all
                    let got = try_http(&addr, k.method, k.path, k.token, &k.body);
                    let mut t = tally.lock().unwrap();
                    match got {
                        Ok((status, _)) if k.expect.contains(&status) => {
                            *t.statuses.entry((k.name, status)).or_default() += 1;
                        }
                        Ok((status, body)) => t.wrong.push((k.name, format!("{status}: {body}"))),
                        Err(e) => t.wrong.push((k.name, format!("no answer: {e}"))),
                    }
                }
            })
        })
        .collect();
    for c in clients {
        c.join().unwrap();
    }
    stop.store(true, Ordering::SeqCst);
    let stopped_seen = watcher.join().unwrap();
    sampler.join().unwrap();

    // Every fault is reverted on its own (100 ms each); then the agent is idle again.
    let idle = poll_for(Duration::from_secs(30), || {
        let (s, body) = try_http(&addr, "GET", "/v1/faults", Some(VIEWER), "").ok()?;
        (s == 200 && body.trim() == "[]").then_some(())
    });
    assert!(idle.is_some(), "faults still active after the load");
    assert_eq!(
        try_http(&addr, "GET", "/healthz", None, "").unwrap().0,
        200,
        "the agent stopped serving"
    );
    let rss_after = rss_kib(pid);
    let [first_half, second_half] = [0, 1].map(|h| peaks[h].load(Ordering::SeqCst));
    let [first_threads, second_threads] = [0, 1].map(|h| tpeaks[h].load(Ordering::SeqCst));
    let peak = first_half.max(second_half);

    let t = tally.lock().unwrap();
    let total: u64 = t.statuses.values().sum::<u64>() + t.wrong.len() as u64;
    let mut summary = String::new();
    for ((name, status), n) in &t.statuses {
        summary.push_str(&format!("  {name}: {status} × {n}\n"));
    }
    eprintln!(
        "{total} requests in {secs} s from {CLIENTS} clients; agent RSS {rss_before} KiB before, peak {first_half} KiB in the first half and {second_half} KiB in the second, {rss_after} KiB after\n{summary}"
    );
    assert!(
        t.wrong.is_empty(),
        "{} of {total} requests got a wrong or no answer, e.g. {:?}",
        t.wrong.len(),
        &t.wrong[..t.wrong.len().min(10)]
    );
    // Every kind was exercised many times, not only the cheap ones.
    for k in kinds.iter() {
        let n: u64 = t
            .statuses
            .iter()
            .filter(|((name, _), _)| *name == k.name)
            .map(|(_, n)| n)
            .sum();
        assert!(n >= 5, "{:?} ran only {n} times", k.name);
    }
    assert!(
        rss_after <= rss_before + RSS_GROWTH_BOUND_KIB,
        "agent RSS grew from {rss_before} KiB to {rss_after} KiB (bound: +{RSS_GROWTH_BOUND_KIB} KiB)"
    );
    assert!(
        peak <= rss_before + RSS_GROWTH_BOUND_KIB,
        "agent RSS peaked at {peak} KiB from {rss_before} KiB (bound: +{RSS_GROWTH_BOUND_KIB} KiB)"
    );
    assert!(
        first_half > 0 && second_half > 0,
        "the sampler saw only one half of the load ({first_half} / {second_half} KiB)"
    );
    assert!(
        second_half <= first_half + SECOND_HALF_GROWTH_BOUND_KIB,
        "agent RSS still grew under steady load: peak {first_half} KiB in the first half, \
         {second_half} KiB in the second (bound: +{SECOND_HALF_GROWTH_BOUND_KIB} KiB; the \
         agent's threads peaked at {first_threads} and {second_threads}): memory that grows \
         with the requests"
    );

    // Nothing the unauthorised sent changed anything: the forbidden victim was never seen
    // stopped, and every fault the agent applied (its audit log) was the operator's, on the
    // operator's victim, exactly one per 201 the operator got.
    assert_eq!(stopped_seen, 0, "the forbidden victim was stopped");
    assert!(
        state(forbidden_victim.pid()).is_some(),
        "the forbidden victim is gone"
    );
    let created = t
        .statuses
        .get(&("operator pauses its victim", 201))
        .copied()
        .unwrap_or(0);
    assert!(created > 0, "no fault was ever injected:\n{summary}");
    let log = agent.stderr();
    let applies: Vec<serde_json::Value> = log
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["fields"]["message"] == "fault audit" && v["fields"]["action"] == "Apply")
        .collect();
    for a in &applies {
        assert_eq!(a["fields"]["requester"], "api:ops", "{a}");
        let targets = a["fields"]["targets"].as_str().unwrap_or_default();
        let numbers: Vec<i32> = targets
            .split(|c: char| !c.is_ascii_digit())
            .filter_map(|n| n.parse().ok())
            .collect();
        assert!(
            numbers.contains(&ok_victim.pid()) && !numbers.contains(&forbidden_victim.pid()),
            "applied to {targets:?}, expected pid {} only",
            ok_victim.pid()
        );
    }
    // An apply whose check right after it failed (another request's revert resumed the
    // shared victim in between) was reverted by the engine and answered 409: a fault that
    // was created is one whose first check saw it in effect.
    let mut first_check: std::collections::BTreeMap<String, bool> =
        std::collections::BTreeMap::new();
    for v in log
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["fields"]["message"] == "fault audit" && v["fields"]["action"] == "Check")
    {
        let id = v["fields"]["fault_id"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        first_check.entry(id).or_insert(v["level"] == "INFO");
    }
    let in_effect = applies
        .iter()
        .filter(|a| {
            first_check.get(a["fields"]["fault_id"].as_str().unwrap_or_default()) == Some(&true)
        })
        .count();
    assert_eq!(
        in_effect as u64, created,
        "applied faults seen in effect by the check after apply (audit log) vs 201 answers"
    );
    let reverted_at_once = applies.len() - in_effect;
    let answered_409 = t
        .statuses
        .get(&("operator pauses its victim", 409))
        .copied()
        .unwrap_or(0);
    assert!(
        reverted_at_once as u64 <= answered_409,
        "{reverted_at_once} faults were not in effect after apply but only {answered_409} requests got 409"
    );
    let unauthorised_kinds: Vec<&str> = kinds
        .iter()
        .filter(|k| k.unauthorised)
        .map(|k| k.name)
        .collect();
    for (name, status) in t.statuses.keys() {
        if unauthorised_kinds.contains(name) {
            assert!(matches!(status, 401 | 403), "{name} got {status}");
        }
    }
    assert_eq!(
        state(ok_victim.pid()),
        Some('S'),
        "the operator's victim is left paused"
    );
}

/// Sends part of a request and waits for the server to close the connection.
fn closed_within(mut s: TcpStream, limit: Duration) -> bool {
    s.set_read_timeout(Some(limit)).unwrap();
    let mut buf = [0u8; 256];
    let started = Instant::now();
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {} // an error response (408) before the close is fine
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
            Err(_) => return false,
        }
        if started.elapsed() >= limit {
            return false;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_limit_answers_503_and_read_timeout_frees_the_slots() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = write_tokens(dir.path());
    let (agent, addr) = start_agent(&tokens, "  max_connections: 4\n  read_timeout: 1s\n", "");
    // Four clients hold every slot: two silent, one half a request line, one half the headers.
    let silent1 = TcpStream::connect(&addr).unwrap();
    let silent2 = TcpStream::connect(&addr).unwrap();
    let mut partial = TcpStream::connect(&addr).unwrap();
    partial.write_all(b"PRI * HTTP/2").unwrap(); // the start of the HTTP/2 preface
    let mut headers = TcpStream::connect(&addr).unwrap();
    headers
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    // Give the server a moment to accept all four before the fifth.
    tokio::time::sleep(Duration::from_millis(200)).await;

    let (status, body) = raw(
        &addr,
        "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .unwrap_or((0, String::new()));
    assert_eq!(status, 503, "the fifth connection was not refused: {body}");
    assert!(body.contains("api.max_connections"), "{body}");

    // read_timeout is 1 s; 15 s is the margin for a loaded machine.
    let limit = Duration::from_secs(15);
    for (name, s) in [
        ("silent", silent1),
        ("silent", silent2),
        ("half preface", partial),
        ("half headers", headers),
    ] {
        assert!(
            closed_within(s, limit),
            "the {name} connection was not closed"
        );
    }
    // The slots are free again.
    let again = poll_for(Duration::from_secs(10), || {
        try_http(&addr, "GET", "/healthz", None, "")
            .ok()
            .filter(|(s, _)| *s == 200)
    });
    assert!(
        again.is_some(),
        "the API did not serve again:\n{}",
        agent.stderr()
    );

    // A body that stops half way: 408 naming the setting.
    let mut s = TcpStream::connect(&addr).unwrap();
    write!(
        s,
        "POST /v1/faults HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {OPERATOR}\r\nContent-Length: 100\r\n\r\n{{\"kind\""
    )
    .unwrap();
    s.set_read_timeout(Some(limit)).unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    assert!(out.starts_with("HTTP/1.1 408"), "{out}");
    assert!(out.contains("api.read_timeout"), "{out}");
}
