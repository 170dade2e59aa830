//! Network faults observed from outside faultline.
//!
//! Proxy: a real TCP client measures what passes through `faultline_chaos::network::Proxy`
//! (round-trip times, bytes per second, resets, EOFs) against a loopback server the test runs.
//! Kernel faults: in two network namespaces the test creates ([`NetnsPair`]), the real
//! `faultline fault inject` applies them and plain sockets, `nft list ruleset` and
//! `tc qdisc show` observe them. Crash safety: the injecting process is SIGKILLed and
//! `faultline fault revert --all` on the same state dir cleans up.
//!
//! Timing margins: the latency median must be within 2 ms of the injected latency (the issue's
//! bar; the proxy's own cost is ~0.1 ms); rates within ±15% (TCP/IP header overhead is ~4%,
//! tbf's bucket and the pacing granularity a few percent more on a loaded 2-core machine).
#![allow(clippy::disallowed_methods)] // std::thread::sleep in synchronous polling helpers
#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers: a panic is the failure report
use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener as StdListener, TcpStream as StdStream};
use std::time::{Duration, Instant};

use faultline_chaos::network::toxic::{Stream, Toxic};
use faultline_chaos::network::{Proxy, ProxySpec};
use faultline_tests::chaos::{Scratch, echo_server as std_echo_server, wait_until};
use faultline_tests::netns::{self, ADDR_B, NetnsPair, in_netns};
use nix::sys::signal::Signal;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// A loopback echo server, stopped with the token.
async fn echo_server(token: &CancellationToken) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let token = token.clone();
    tokio::spawn(async move {
        loop {
            let (mut s, _) = tokio::select! {
                () = token.cancelled() => return,
                r = l.accept() => r.unwrap(),
            };
            tokio::spawn(async move {
                let _ = s.set_nodelay(true);
                let mut buf = vec![0u8; 64 * 1024];
                loop {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => {
                            if s.write_all(&buf[..n]).await.is_err() {
                                return;
                            }
                        }
                    }
                }
            });
        }
    });
    addr
}

/// A loopback server that sends `payload` to every client, then closes.
async fn source_server(token: &CancellationToken, payload: Vec<u8>) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let token = token.clone();
    tokio::spawn(async move {
        loop {
            let (mut s, _) = tokio::select! {
                () = token.cancelled() => return,
                r = l.accept() => r.unwrap(),
            };
            let p = payload.clone();
            tokio::spawn(async move {
                let _ = s.write_all(&p).await;
                let _ = s.shutdown().await;
            });
        }
    });
    addr
}

/// A proxy to `upstream` with one latency toxic.
async fn latency_proxy(
    upstream: SocketAddr,
    stream: Stream,
    latency: Duration,
    jitter: Duration,
    token: &CancellationToken,
) -> Proxy {
    let toxic = Toxic::Latency {
        stream,
        latency,
        jitter,
    };
    proxy(upstream, vec![toxic], token).await
}

async fn proxy(upstream: SocketAddr, toxics: Vec<Toxic>, token: &CancellationToken) -> Proxy {
    let spec = ProxySpec {
        listen: "127.0.0.1:0".parse().unwrap(),
        upstream: upstream.to_string(),
        toxics,
    };
    Proxy::start(&spec, token).await.unwrap()
}

/// Round-trip times of `n` 64-byte echoes over one connection.
async fn round_trips(addr: SocketAddr, n: usize) -> Vec<Duration> {
    let mut c = TcpStream::connect(addr).await.unwrap();
    c.set_nodelay(true).unwrap();
    let msg = [7u8; 64];
    let mut buf = [0u8; 64];
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        c.write_all(&msg).await.unwrap();
        c.read_exact(&mut buf).await.unwrap();
        out.push(t.elapsed());
    }
    out
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latency_toxic_median_round_trip_is_within_2ms_and_jitter_spreads_uniformly() {
    let token = CancellationToken::new();
    let up = echo_server(&token).await;
    let latency = Duration::from_millis(30);

    // Downstream only (the default): the round trip gains the latency once.
    let p = latency_proxy(up, Stream::Downstream, latency, Duration::ZERO, &token).await;
    let mut rtts = round_trips(p.local_addr(), 40).await;
    rtts.sort();
    let median = percentile(&rtts, 0.5);
    assert!(
        (ms(median) - 30.0).abs() < 2.0,
        "median {median:?} not within 2ms of 30ms; all: {rtts:?}"
    );

    // Both directions: twice.
    let p2 = latency_proxy(up, Stream::Both, latency, Duration::ZERO, &token).await;
    let mut both = round_trips(p2.local_addr(), 20).await;
    both.sort();
    let median2 = percentile(&both, 0.5);
    // Two timed stages, each rounded up to tokio's 1 ms timer tick: a 4 ms margin.
    assert!(
        (ms(median2) - 60.0).abs() < 4.0,
        "stream both: median {median2:?} not ~60ms"
    );

    // Jitter 10ms: uniform on [20, 40] ms → std 10/√3 ≈ 5.8 ms, p10..p90 ≈ 16 ms.
    let jitter = Duration::from_millis(10);
    let p3 = latency_proxy(up, Stream::Downstream, latency, jitter, &token).await;
    // 160 samples: the median of n draws from uniform [20, 40] ms has a standard deviation
    // of 20 / (2√n) ms, 0.79 ms here (1.1 ms with 80, when a 2.5 ms bound failed ~3 % of
    // runs on its own); the bound below is 3.8 of them.
    let mut j = round_trips(p3.local_addr(), 160).await;
    j.sort();
    // Never earlier than latency - jitter. A loaded machine only ever adds delay, and in
    // bursts (a mean and standard deviation of 80 samples were pulled 5 ms off by a few
    // 100 ms stalls at load 9 on 2 cores), so the shape is checked by order statistics:
    // uniform on [20, 40] ms has median 30, p90 38 and interquartile range 10.
    let (lo, p90) = (j[0], percentile(&j, 0.9));
    assert!(ms(lo) >= 19.5, "a jittered RTT below 20ms: {lo:?}");
    assert!(
        ms(p90) <= 42.0,
        "90th percentile {p90:?} above 38ms + 4ms; all: {j:?}"
    );
    let median3 = ms(percentile(&j, 0.5));
    assert!(
        (median3 - 30.0).abs() < 3.0,
        "jittered median {median3:.2}ms not ~30ms; all: {j:?}"
    );
    let iqr = ms(percentile(&j, 0.75)) - ms(percentile(&j, 0.25));
    assert!(
        (6.0..=14.0).contains(&iqr),
        "jitter interquartile range {iqr:.2}ms, expected ~10ms (uniform ±10ms); all: {j:?}"
    );
    let spread = ms(percentile(&j, 0.9)) - ms(percentile(&j, 0.1));
    assert!(
        spread > 10.0,
        "p10..p90 spread {spread:.1}ms, expected ~16ms"
    );
    eprintln!(
        "latency 30ms: median {median:?}; both: {median2:?}; jitter 10ms: median {median3:.2}ms iqr {iqr:.2}ms spread {spread:.1}ms"
    );
    token.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bandwidth_toxic_limits_the_bytes_a_client_receives_per_second() {
    let token = CancellationToken::new();
    let total = 1_500_000usize;
    let up = source_server(&token, vec![1u8; total]).await;
    let p = proxy(
        up,
        vec![Toxic::Bandwidth {
            stream: Stream::Downstream,
            rate: 1000,
        }],
        &token,
    )
    .await;
    let mut c = TcpStream::connect(p.local_addr()).await.unwrap();
    let t = Instant::now();
    let mut got = 0usize;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = c.read(&mut buf).await.unwrap();
        if n == 0 {
            break;
        }
        got += n;
    }
    let secs = t.elapsed().as_secs_f64();
    let rate = got as f64 / secs / 1000.0;
    eprintln!("bandwidth 1000 KB/s: received {got} bytes in {secs:.3}s = {rate:.0} KB/s");
    assert_eq!(got, total);
    assert!(
        (850.0..=1100.0).contains(&rate),
        "measured {rate:.0} KB/s for a 1000 KB/s limit"
    );
    token.cancel();
}

#[tokio::test]
async fn reset_peer_toxic_gives_the_client_connection_reset() {
    let token = CancellationToken::new();
    let up = echo_server(&token).await;
    let p = proxy(
        up,
        vec![Toxic::ResetPeer {
            stream: Stream::Downstream,
            timeout: Duration::from_millis(100),
        }],
        &token,
    )
    .await;
    let mut c = TcpStream::connect(p.local_addr()).await.unwrap();
    c.write_all(b"hello").await.unwrap();
    let mut buf = [0u8; 5];
    c.read_exact(&mut buf).await.unwrap(); // data flows until the reset
    let mut rest = [0u8; 16];
    let r = tokio::time::timeout(Duration::from_secs(2), c.read(&mut rest))
        .await
        .expect("reset within 2s");
    let e = r.expect_err("a reset, not EOF or data");
    assert_eq!(e.kind(), ErrorKind::ConnectionReset, "{e}");
    token.cancel();
}

#[tokio::test]
async fn limit_data_toxic_gives_eof_after_exactly_n_bytes() {
    let token = CancellationToken::new();
    let up = echo_server(&token).await;
    let p = proxy(
        up,
        vec![Toxic::LimitData {
            stream: Stream::Downstream,
            bytes: 1000,
        }],
        &token,
    )
    .await;
    let mut c = TcpStream::connect(p.local_addr()).await.unwrap();
    c.write_all(&[9u8; 5000]).await.unwrap();
    let mut got = Vec::new();
    tokio::time::timeout(Duration::from_secs(2), c.read_to_end(&mut got))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.len(), 1000);
    token.cancel();
}

#[tokio::test]
async fn timeout_toxic_blackholes_data_and_closes_after_the_timeout() {
    let token = CancellationToken::new();
    let up = echo_server(&token).await;
    let p = proxy(
        up,
        vec![Toxic::Timeout {
            stream: Stream::Downstream,
            timeout: Duration::from_millis(500),
        }],
        &token,
    )
    .await;
    let t = Instant::now();
    let mut c = TcpStream::connect(p.local_addr()).await.unwrap();
    c.write_all(b"ping").await.unwrap();
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(Duration::from_secs(3), c.read(&mut buf))
        .await
        .expect("closed within 3s");
    let closed_after = t.elapsed();
    assert!(
        matches!(n, Ok(0) | Err(_)),
        "no data may pass a blackhole, got {n:?}"
    );
    assert!(
        closed_after >= Duration::from_millis(450),
        "closed too early: {closed_after:?}"
    );

    // timeout 0: data dropped, connection kept open.
    let p0 = proxy(
        up,
        vec![Toxic::Timeout {
            stream: Stream::Downstream,
            timeout: Duration::ZERO,
        }],
        &token,
    )
    .await;
    let mut c = TcpStream::connect(p0.local_addr()).await.unwrap();
    c.write_all(b"ping").await.unwrap();
    let r = tokio::time::timeout(Duration::from_millis(600), c.read(&mut buf)).await;
    assert!(
        r.is_err(),
        "timeout=0 must neither deliver nor close, got {r:?}"
    );
    token.cancel();
}

#[tokio::test]
async fn slicer_toxic_delivers_small_delayed_slices() {
    let token = CancellationToken::new();
    let up = source_server(&token, vec![3u8; 1000]).await;
    let toxics = vec![Toxic::Slicer {
        stream: Stream::Downstream,
        average_size: 100,
        size_variation: 0,
        delay: Duration::from_millis(10),
    }];
    let p = proxy(up, toxics, &token).await;
    let mut c = TcpStream::connect(p.local_addr()).await.unwrap();
    let t = Instant::now();
    let mut sizes = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = c.read(&mut buf).await.unwrap();
        if n == 0 {
            break;
        }
        sizes.push(n);
    }
    let took = t.elapsed();
    assert_eq!(sizes.iter().sum::<usize>(), 1000);
    assert!(
        sizes.len() >= 5 && sizes.iter().all(|&n| n <= 200),
        "reads {sizes:?}"
    );
    assert!(
        took >= Duration::from_millis(80),
        "10 slices 10ms apart took only {took:?}"
    );
    token.cancel();
}

#[tokio::test]
async fn slow_close_toxic_holds_the_fin_back() {
    let token = CancellationToken::new();
    let up = source_server(&token, b"bye".to_vec()).await;
    let p = proxy(
        up,
        vec![Toxic::SlowClose {
            stream: Stream::Downstream,
            delay: Duration::from_millis(400),
        }],
        &token,
    )
    .await;
    let t = Instant::now();
    let mut c = TcpStream::connect(p.local_addr()).await.unwrap();
    let mut buf = [0u8; 3];
    c.read_exact(&mut buf).await.unwrap();
    let data_at = t.elapsed();
    let mut rest = Vec::new();
    c.read_to_end(&mut rest).await.unwrap();
    let eof_at = t.elapsed();
    assert!(
        data_at < Duration::from_millis(200),
        "data itself must not wait: {data_at:?}"
    );
    assert!(
        eof_at >= Duration::from_millis(380),
        "EOF after {eof_at:?}, expected ≥400ms"
    );
    token.cancel();
}

// ── through the CLI ─────────────────────────────────────────────────────────────────────

fn stderr_of(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn rtt(addr: SocketAddr) -> Duration {
    let mut c = StdStream::connect(addr).unwrap();
    c.set_nodelay(true).unwrap();
    let mut buf = [0u8; 4];
    c.write_all(b"ping").unwrap();
    c.read_exact(&mut buf).unwrap();
    let t = Instant::now();
    c.write_all(b"ping").unwrap();
    c.read_exact(&mut buf).unwrap();
    t.elapsed()
}

#[test]
fn cli_latency_proxy_applies_reverts_and_dies_with_a_sigkilled_injector() {
    let up = std_echo_server();
    let listen: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let s = Scratch::new("");
    let (l, u) = (listen.to_string(), up.to_string());
    let args = [
        "fault",
        "inject",
        "latency",
        "--listen",
        &l,
        "--upstream",
        &u,
        "--latency",
        "40ms",
        "--duration",
        "30s",
    ];
    let mut bg = s.spawn("latency", &args);
    assert!(
        s.wait_applied("latency", Duration::from_secs(10)).is_some(),
        "not applied: {}",
        bg.stderr()
    );
    let d = rtt(listen);
    assert!(
        d >= Duration::from_millis(39) && d < Duration::from_millis(60),
        "rtt through the CLI proxy {d:?}"
    );
    bg.signal(Signal::SIGTERM);
    let st = bg
        .wait_exit(Duration::from_secs(5))
        .expect("exits after SIGTERM");
    assert!(st.success(), "{}", bg.stderr());
    assert!(
        StdStream::connect_timeout(&listen, Duration::from_millis(200)).is_err(),
        "proxy still listening after revert"
    );

    // SIGKILL: the listener dies with the process; revert --all confirms and reports it.
    let mut bg = s.spawn("latency2", &args);
    assert!(
        s.wait_applied("latency", Duration::from_secs(10)).is_some(),
        "not applied: {}",
        bg.stderr()
    );
    bg.signal(Signal::SIGKILL);
    bg.wait_exit(Duration::from_secs(5)).expect("killed");
    assert!(StdStream::connect_timeout(&listen, Duration::from_millis(200)).is_err());
    let out = s.run(&["fault", "revert", "--all"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("reverted"),
        "{stdout}{}",
        stderr_of(&out)
    );
    assert!(
        s.journal_entries().is_empty(),
        "journal not empty after revert --all"
    );
}

// ── kernel faults in test namespaces ───────────────────────────────────────────────────

/// A listener in `b` on `port` (the kernel completes handshakes without accept()).
fn listen_in_b(pair: &NetnsPair, port: u16) -> StdListener {
    in_netns(&pair.b, || StdListener::bind((ADDR_B, port)).unwrap())
}

fn connect_from_a(pair: &NetnsPair, port: u16, timeout: Duration) -> std::io::Result<StdStream> {
    in_netns(&pair.a, || {
        StdStream::connect_timeout(&SocketAddr::from((ADDR_B, port)), timeout)
    })
}

#[test]
fn partition_times_out_one_port_while_another_works_and_revert_leaves_nothing() {
    if !netns::require_kernel_tools() {
        return;
    }
    let pair = NetnsPair::create("part");
    let _la = listen_in_b(&pair, 7001);
    let _lb = listen_in_b(&pair, 7002);
    let t = Duration::from_millis(700);
    assert!(
        connect_from_a(&pair, 7001, t).is_ok() && connect_from_a(&pair, 7002, t).is_ok(),
        "baseline"
    );

    let s = Scratch::new("");
    let args = [
        "fault",
        "inject",
        "partition",
        "--netns",
        &pair.a,
        "--dest",
        "10.77.0.2",
        "--port",
        "7001",
        "--duration",
        "30s",
    ];
    let mut bg = s.spawn("partition", &args);
    let entry = s.wait_applied("partition", Duration::from_secs(10));
    assert!(entry.is_some(), "not applied: {}", bg.stderr());
    let e = connect_from_a(&pair, 7001, t).expect_err("port 7001 must be cut off");
    assert_eq!(e.kind(), ErrorKind::TimedOut, "{e}");
    connect_from_a(&pair, 7002, t).expect("port 7002 is not partitioned");
    assert!(NetnsPair::nft_ruleset(&pair.a).contains("table inet faultline_partition_"));

    bg.signal(Signal::SIGTERM);
    assert!(
        bg.wait_exit(Duration::from_secs(5))
            .expect("exits")
            .success(),
        "{}",
        bg.stderr()
    );
    connect_from_a(&pair, 7001, t).expect("7001 works after revert");
    connect_from_a(&pair, 7002, t).expect("7002 works after revert");
    let rules = NetnsPair::nft_ruleset(&pair.a);
    assert!(!rules.contains("faultline"), "left behind: {rules}");
}

/// Bytes per second from a sender in `a` to a receiver in `b` over the veth.
fn measure_a_to_b(pair: &NetnsPair, port: u16, bytes: usize) -> f64 {
    measure_a_to(pair, ADDR_B, port, bytes)
}

/// Bytes per second from a sender in `a` to a receiver on `addr` (one of `b`'s) over the veth.
fn measure_a_to(pair: &NetnsPair, addr: Ipv4Addr, port: u16, bytes: usize) -> f64 {
    let l = in_netns(&pair.b, || StdListener::bind((addr, port)).unwrap());
    let recv = std::thread::spawn(move || {
        let (mut s, _) = l.accept().unwrap();
        let mut buf = vec![0u8; 64 * 1024];
        let mut got = 0usize;
        let mut first: Option<(Instant, usize)> = None;
        loop {
            let n = s.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            got += n;
            first.get_or_insert((Instant::now(), n));
        }
        let (t0, n0) = first.unwrap();
        (got - n0) as f64 / t0.elapsed().as_secs_f64()
    });
    let mut c = in_netns(&pair.a, || {
        StdStream::connect_timeout(&SocketAddr::from((addr, port)), Duration::from_secs(2))
    })
    .unwrap();
    c.write_all(&vec![5u8; bytes]).unwrap();
    drop(c);
    recv.join().unwrap()
}

#[test]
fn rate_limit_caps_throughput_across_the_veth_and_revert_removes_the_qdisc() {
    if !netns::require_kernel_tools() {
        return;
    }
    let pair = NetnsPair::create("tbf");
    let unlimited = measure_a_to_b(&pair, 7010, 4_000_000);
    let s = Scratch::new("");
    let args = [
        "fault",
        "inject",
        "rate-limit",
        "--netns",
        &pair.a,
        "--dev",
        "veth-a",
        "--rate",
        "8mbit",
        "--duration",
        "30s",
    ];
    let mut bg = s.spawn("rate", &args);
    assert!(
        s.wait_applied("rate-limit", Duration::from_secs(10))
            .is_some(),
        "not applied: {}",
        bg.stderr()
    );
    assert!(
        NetnsPair::qdiscs(&pair.a).contains("qdisc tbf"),
        "{}",
        NetnsPair::qdiscs(&pair.a)
    );
    let limited = measure_a_to_b(&pair, 7011, 1_500_000);
    faultline_tests::netns::assert_8mbit_against(
        limited,
        unlimited,
        "veth a → b, before and with the limit",
    );
    bg.signal(Signal::SIGTERM);
    assert!(
        bg.wait_exit(Duration::from_secs(5))
            .expect("exits")
            .success(),
        "{}",
        bg.stderr()
    );
    let q = NetnsPair::qdiscs(&pair.a);
    assert!(!q.contains("tbf"), "qdisc left behind: {q}");
}

/// A second address of `b` (on `veth-b`), for traffic a selection must leave alone.
const ADDR_B2: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 3);

#[test]
fn rate_limit_towards_one_address_and_port_leaves_other_traffic_alone() {
    if !netns::require_kernel_tools() {
        return;
    }
    let pair = NetnsPair::create("tbfsel");
    let add = NetnsPair::exec(
        &pair.b,
        "ip",
        &["addr", "add", &format!("{ADDR_B2}/24"), "dev", "veth-b"],
    );
    assert!(add.status.success(), "{}", stderr_of(&add));
    let s = Scratch::new("");
    let args = [
        "fault",
        "inject",
        "rate-limit",
        "--netns",
        &pair.a,
        "--dev",
        "veth-a",
        "--rate",
        "8mbit",
        "--dest",
        "10.77.0.2",
        "--port",
        "7041",
        "--protocol",
        "tcp",
        "--duration",
        "30s",
    ];
    // The dry run names every tc command and touches nothing.
    let mut dry = args.to_vec();
    dry.push("--dry-run");
    let out = s.run(&dry);
    let plan = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{plan}{}", stderr_of(&out));
    for needle in [
        "qdisc add dev veth-a root handle",
        " htb",
        "class add dev veth-a parent",
        " tbf rate 8000000bit",
        "match ip dst 10.77.0.2/32 match ip protocol 6 0xff match ip dport 7041 0xffff",
    ] {
        assert!(plan.contains(needle), "dry run lacks {needle:?}:\n{plan}");
    }
    assert!(
        !NetnsPair::qdiscs(&pair.a).contains("htb"),
        "the dry run applied something"
    );

    let mut bg = s.spawn("rate", &args);
    assert!(
        s.wait_applied("rate-limit", Duration::from_secs(10))
            .is_some(),
        "not applied: {}",
        bg.stderr()
    );
    let q = NetnsPair::qdiscs(&pair.a);
    assert!(q.contains("qdisc htb") && q.contains("qdisc tbf"), "{q}");
    let selected = measure_a_to(&pair, ADDR_B, 7041, 1_500_000);
    let other_port = measure_a_to(&pair, ADDR_B, 7042, 20_000_000);
    let other_addr = measure_a_to(&pair, ADDR_B2, 7041, 20_000_000);
    eprintln!(
        "selected {:.3} MB/s, other port {:.1} MB/s, other address {:.1} MB/s",
        selected / 1e6,
        other_port / 1e6,
        other_addr / 1e6
    );
    // 8 mbit = 1.0 MB/s on the wire; payload is ~96% of that.
    assert!(
        (0.8e6..=1.1e6).contains(&selected),
        "selected traffic at {selected:.0} B/s for 8mbit"
    );
    assert!(
        other_port > 10.0 * selected && other_addr > 10.0 * selected,
        "unselected traffic must not be limited: port {other_port:.0} B/s, address {other_addr:.0} B/s"
    );
    bg.signal(Signal::SIGTERM);
    assert!(
        bg.wait_exit(Duration::from_secs(5))
            .expect("exits")
            .success(),
        "{}",
        bg.stderr()
    );
    let q = NetnsPair::qdiscs(&pair.a);
    assert!(
        !q.contains("htb") && !q.contains("tbf"),
        "qdisc left behind: {q}"
    );
    let filters = NetnsPair::exec(&pair.a, "tc", &["filter", "show", "dev", "veth-a"]);
    assert!(
        String::from_utf8_lossy(&filters.stdout).trim().is_empty(),
        "filters left behind: {}",
        String::from_utf8_lossy(&filters.stdout)
    );
    let after = measure_a_to(&pair, ADDR_B, 7043, 20_000_000);
    assert!(
        after > 10.0 * selected,
        "still limited after revert: {after:.0} B/s"
    );
}

#[test]
fn netem_towards_a_port_is_applied_for_real_or_refused_without_leaving_anything() {
    if !netns::require_kernel_tools() {
        return;
    }
    let pair = NetnsPair::create("netemsel");
    let s = Scratch::new("");
    let args = [
        "fault",
        "inject",
        "netem",
        "--netns",
        &pair.a,
        "--dev",
        "veth-a",
        "--delay",
        "60ms",
        "--port",
        "7051",
        "--duration",
        "30s",
    ];
    if netns::netem_available(&pair) {
        let _slow = listen_in_b(&pair, 7051);
        let _fast = listen_in_b(&pair, 7052);
        let mut bg = s.spawn("netem", &args);
        assert!(
            s.wait_applied("netem", Duration::from_secs(10)).is_some(),
            "not applied: {}",
            bg.stderr()
        );
        let handshake = |port| {
            let t = Instant::now();
            connect_from_a(&pair, port, Duration::from_secs(3)).unwrap();
            t.elapsed()
        };
        let (slow, fast) = (handshake(7051), handshake(7052));
        assert!(slow >= Duration::from_millis(55), "selected port: {slow:?}");
        assert!(fast < Duration::from_millis(30), "other port: {fast:?}");
        bg.signal(Signal::SIGTERM);
        assert!(
            bg.wait_exit(Duration::from_secs(5))
                .expect("exits")
                .success()
        );
    } else {
        assert_netem_refused(&s, &args);
    }
    let q = NetnsPair::qdiscs(&pair.a);
    assert!(
        !q.contains("htb") && !q.contains("netem"),
        "qdisc left: {q}"
    );
}

/// Without sch_netem: `fault inject netem …` fails with exit 1, naming the module, what needs
/// it and the proxy alternative, and journals nothing.
fn assert_netem_refused(s: &Scratch, args: &[&str]) {
    let out = s.run(args);
    let err = stderr_of(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("sch_netem"),
        "error must name the module: {err}"
    );
    assert!(err.contains("delay"), "error must say what needs it: {err}");
    assert!(
        err.contains("fault inject latency"),
        "error must offer the proxy: {err}"
    );
    assert!(s.journal_entries().is_empty(), "nothing may stay journaled");
}

#[test]
fn netem_is_applied_for_real_or_refused_clearly_without_leaving_a_qdisc() {
    if !netns::require_kernel_tools() {
        return;
    }
    let pair = NetnsPair::create("netem");
    let s = Scratch::new("");
    let args = [
        "fault",
        "inject",
        "netem",
        "--netns",
        &pair.a,
        "--dev",
        "veth-a",
        "--delay",
        "50ms",
        "--loss",
        "1%",
        "--duration",
        "30s",
    ];
    if netns::netem_available(&pair) {
        // This kernel has sch_netem: the delay must show in a TCP handshake from a to b.
        let _l = listen_in_b(&pair, 7020);
        let mut bg = s.spawn("netem", &args);
        assert!(
            s.wait_applied("netem", Duration::from_secs(10)).is_some(),
            "not applied: {}",
            bg.stderr()
        );
        let t = Instant::now();
        let _ = connect_from_a(&pair, 7020, Duration::from_secs(3)).unwrap();
        assert!(
            t.elapsed() >= Duration::from_millis(45),
            "handshake took {:?}",
            t.elapsed()
        );
        bg.signal(Signal::SIGTERM);
        assert!(
            bg.wait_exit(Duration::from_secs(5))
                .expect("exits")
                .success()
        );
    } else {
        println!("NOT TESTED here: sch_netem missing");
        assert_netem_refused(&s, &args);
    }
    let q = NetnsPair::qdiscs(&pair.a);
    assert!(!q.contains("netem"), "netem qdisc left: {q}");
    assert_eq!(
        root_qdisc(&q, "veth-a").as_deref(),
        Some("noqueue"),
        "veth-a's root qdisc is not back to a veth's default: {q}"
    );
}

/// The kind of `dev`'s root qdisc in `tc qdisc show` output (`qdisc noqueue 0: dev veth-a
/// root refcnt 2` → `noqueue`), `None` when `dev` has no root line.
fn root_qdisc(show: &str, dev: &str) -> Option<String> {
    show.lines().find_map(|line| {
        let words: Vec<&str> = line.split_whitespace().collect();
        let on_dev = words.windows(2).any(|w| w == ["dev", dev]);
        (words.first() == Some(&"qdisc") && on_dev && words.contains(&"root"))
            .then(|| words.get(1).map(|k| (*k).to_owned()))
            .flatten()
    })
}

#[test]
fn sigkilled_partition_and_rate_limit_are_reverted_by_revert_all_within_a_second() {
    if !netns::require_kernel_tools() {
        return;
    }
    let pair = NetnsPair::create("crash");
    let _l = listen_in_b(&pair, 7030);
    let s = Scratch::new("");
    let mut part = s.spawn(
        "part",
        &[
            "fault",
            "inject",
            "partition",
            "--netns",
            &pair.a,
            "--dest",
            "10.77.0.2/32",
            "--port",
            "7030",
            "--duration",
            "60s",
        ],
    );
    assert!(
        s.wait_applied("partition", Duration::from_secs(10))
            .is_some(),
        "{}",
        part.stderr()
    );
    let mut rate = s.spawn(
        "rate",
        &[
            "fault",
            "inject",
            "rate-limit",
            "--netns",
            &pair.a,
            "--dev",
            "veth-a",
            "--rate",
            "1mbit",
            "--duration",
            "60s",
        ],
    );
    assert!(
        s.wait_applied("rate-limit", Duration::from_secs(10))
            .is_some(),
        "{}",
        rate.stderr()
    );
    part.signal(Signal::SIGKILL);
    rate.signal(Signal::SIGKILL);
    part.wait_exit(Duration::from_secs(5)).expect("killed");
    rate.wait_exit(Duration::from_secs(5)).expect("killed");
    // The kernel state outlives the injector: that is what the journal is for.
    assert!(NetnsPair::nft_ruleset(&pair.a).contains("faultline_"));
    assert!(NetnsPair::qdiscs(&pair.a).contains("qdisc tbf"));

    let t = Instant::now();
    let out = s.run(&["fault", "revert", "--all"]);
    let took = t.elapsed();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", stderr_of(&out));
    assert_eq!(
        stdout.matches(": reverted").count(),
        2,
        "both reported as recovered: {stdout}"
    );
    assert!(!NetnsPair::nft_ruleset(&pair.a).contains("faultline"));
    assert!(!NetnsPair::qdiscs(&pair.a).contains("tbf"));
    assert!(took < Duration::from_secs(1), "revert --all took {took:?}");
    assert!(wait_until(Duration::from_secs(1), || connect_from_a(
        &pair,
        7030,
        Duration::from_millis(300)
    )
    .is_ok()));
    eprintln!("revert --all after SIGKILL: {took:?}");
}
