//! The built-in TCP proxy (`faultline_chaos::network::Proxy`) with zero toxics against a direct
//! connection, on loopback: the cost per request-response round trip (64-byte echo over one
//! kept-open connection) and the throughput of a bulk transfer (8 MiB per connection).
//!
//! Run: `cargo bench -p faultline-benches --bench proxy`. Figures go to docs/PERFORMANCE.md
//! (section "Proxy") with the date and the command. The overhead per round trip is
//! `round_trip/proxy - round_trip/direct`; the bar is under 100 µs at the median.

#![allow(clippy::expect_used, clippy::unwrap_used)] // A benchmark whose loopback sockets fail has nothing to measure.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use faultline_chaos::network::{Proxy, ProxySpec};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Runtime;
use tokio_util::sync::CancellationToken;

const BULK: usize = 8 << 20;

async fn echo_server(token: CancellationToken) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (mut s, _) = tokio::select! {
                () = token.cancelled() => return,
                r = l.accept() => r.unwrap(),
            };
            tokio::spawn(async move {
                s.set_nodelay(true).unwrap();
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

async fn source_server(token: CancellationToken) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let payload = vec![1u8; BULK];
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

async fn start_proxy(upstream: SocketAddr, token: &CancellationToken) -> Proxy {
    let spec = ProxySpec {
        listen: "127.0.0.1:0".parse().unwrap(),
        upstream: upstream.to_string(),
        toxics: vec![],
    };
    Proxy::start(&spec, token).await.unwrap()
}

async fn round_trips(addr: SocketAddr, iters: u64) -> Duration {
    let mut c = TcpStream::connect(addr).await.unwrap();
    c.set_nodelay(true).unwrap();
    let msg = [7u8; 64];
    let mut buf = [0u8; 64];
    // One warm-up exchange so connection setup is not measured.
    c.write_all(&msg).await.unwrap();
    c.read_exact(&mut buf).await.unwrap();
    let t = Instant::now();
    for _ in 0..iters {
        c.write_all(&msg).await.unwrap();
        c.read_exact(&mut buf).await.unwrap();
    }
    t.elapsed()
}

async fn bulk(addr: SocketAddr) -> usize {
    let mut c = TcpStream::connect(addr).await.unwrap();
    let mut buf = vec![0u8; 256 * 1024];
    let mut got = 0;
    loop {
        let n = c.read(&mut buf).await.unwrap();
        if n == 0 {
            return got;
        }
        got += n;
    }
}

fn proxy(c: &mut Criterion) {
    let rt = Runtime::new().expect("tokio runtime");
    let token = CancellationToken::new();
    let (echo, source) = rt.block_on(async {
        (
            echo_server(token.clone()).await,
            source_server(token.clone()).await,
        )
    });
    let (echo_proxy, source_proxy) = rt.block_on(async {
        (
            start_proxy(echo, &token).await,
            start_proxy(source, &token).await,
        )
    });

    let mut g = c.benchmark_group("proxy/round_trip_64B");
    g.bench_function("direct", |b| {
        b.iter_custom(|iters| rt.block_on(round_trips(echo, iters)))
    });
    let via = echo_proxy.local_addr();
    g.bench_function("proxy", |b| {
        b.iter_custom(|iters| rt.block_on(round_trips(via, iters)))
    });
    g.finish();

    let mut g = c.benchmark_group("proxy/throughput_8MiB");
    g.throughput(Throughput::Bytes(BULK as u64)).sample_size(20);
    g.bench_function("direct", |b| {
        b.iter(|| assert_eq!(rt.block_on(bulk(source)), BULK))
    });
    let via = source_proxy.local_addr();
    g.bench_function("proxy", |b| {
        b.iter(|| assert_eq!(rt.block_on(bulk(via)), BULK))
    });
    g.finish();

    rt.block_on(async {
        echo_proxy.stop().await;
        source_proxy.stop().await;
    });
    token.cancel();
}

criterion_group!(benches, proxy);
criterion_main!(benches);
