use super::*;
use crate::network::toxic::Stream;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn echo_server() -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let h = tokio::spawn(async move {
        loop {
            let (mut s, _) = l.accept().await.unwrap();
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
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
    (addr, h)
}

fn spec(upstream: SocketAddr, toxics: Vec<Toxic>) -> ProxySpec {
    ProxySpec {
        listen: "127.0.0.1:0".parse().unwrap(),
        upstream: upstream.to_string(),
        toxics,
    }
}

#[tokio::test]
async fn zero_toxics_echo_round_trips_and_half_close_passes() {
    let (up, _h) = echo_server().await;
    let token = CancellationToken::new();
    let p = Proxy::start(&spec(up, vec![]), &token).await.unwrap();
    let mut c = TcpStream::connect(p.local_addr()).await.unwrap();
    c.write_all(b"hello").await.unwrap();
    let mut buf = [0u8; 5];
    c.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"hello");
    c.shutdown().await.unwrap();
    let mut rest = Vec::new();
    c.read_to_end(&mut rest).await.unwrap();
    assert!(rest.is_empty());
    p.stop().await;
    assert!(listener_gone(p.local_addr(), Duration::from_millis(200)).await);
}

#[tokio::test]
async fn limit_data_closes_after_n_bytes() {
    let (up, _h) = echo_server().await;
    let token = CancellationToken::new();
    let toxics = vec![Toxic::LimitData {
        stream: Stream::Downstream,
        bytes: 7,
    }];
    let p = Proxy::start(&spec(up, toxics), &token).await.unwrap();
    let mut c = TcpStream::connect(p.local_addr()).await.unwrap();
    c.write_all(b"0123456789").await.unwrap();
    let mut got = Vec::new();
    c.read_to_end(&mut got).await.unwrap();
    assert_eq!(got, b"0123456");
}

#[tokio::test]
async fn parent_cancel_stops_the_proxy() {
    let (up, _h) = echo_server().await;
    let token = CancellationToken::new();
    let p = Proxy::start(&spec(up, vec![]), &token).await.unwrap();
    token.cancel();
    tokio::time::timeout(Duration::from_secs(1), p.tracker.wait())
        .await
        .unwrap();
    assert!(!p.is_running());
    assert!(listener_gone(p.local_addr(), Duration::from_millis(200)).await);
}

#[tokio::test]
async fn loop_to_itself_is_refused() {
    let s = ProxySpec {
        listen: "127.0.0.1:45999".parse().unwrap(),
        upstream: "127.0.0.1:45999".into(),
        toxics: vec![],
    };
    let e = Proxy::start(&s, &CancellationToken::new())
        .await
        .unwrap_err();
    assert!(
        e.to_string().contains("would loop") || e.to_string().contains("loop"),
        "{e}"
    );
}

/// Whether a listener on `addr` is gone: a connect is refused (or cannot be made) within
/// `timeout`.
async fn listener_gone(addr: SocketAddr, timeout: Duration) -> bool {
    !matches!(
        tokio::time::timeout(timeout, TcpStream::connect(addr)).await,
        Ok(Ok(_))
    )
}
