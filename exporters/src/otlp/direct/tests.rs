use std::net::TcpListener;

use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsPartialSuccess, ExportMetricsServiceResponse,
};
use prost::Message;

use super::*;
use crate::otlp::test_server::{Reply, ok_empty, server, server_on};
use crate::otlp::transport::{Protocol, TlsMaterial, Transport, TransportSettings};

fn direct(url: &str, headers: Vec<(String, String)>) -> DirectHttp {
    let t = Transport::new(TransportSettings {
        url: url.into(),
        protocol: Protocol::HttpProtobuf,
        headers,
        compression: Compression::None,
        timeout: Duration::from_secs(5),
        tls: TlsMaterial::default(),
    })
    .unwrap();
    let Transport::Http(t) = t else {
        panic!("an HTTP transport")
    };
    DirectHttp::for_transport(&t).expect("plain http is sent directly")
}

const BUDGET: Duration = Duration::from_secs(5);

#[test]
fn requests_share_one_connection_and_carry_the_payload_and_headers() {
    let (url, seen, t) = server(vec![Reply::Keep(ok_empty()), Reply::Keep(ok_empty())]);
    let mut d = direct(&url, vec![("x-tenant".into(), "blue".into())]);
    for payload in [&b"first batch"[..], b"second"] {
        match d.send(payload, BUDGET) {
            Answer::Verdict(Ok(SendOk::Accepted)) => {}
            other => panic!("{other:?}"),
        }
        let s = seen.recv().unwrap();
        assert_eq!(s.body, payload);
        assert!(
            s.head.starts_with("POST /v1/metrics HTTP/1.1\r\n"),
            "{}",
            s.head
        );
        for h in [
            "content-type: application/x-protobuf\r\n",
            "x-tenant: blue\r\n",
            &format!("content-length: {}\r\n", payload.len()),
            &format!(
                "host: {}\r\n",
                url.trim_start_matches("http://")
                    .trim_end_matches("/v1/metrics")
            ),
        ] {
            assert!(s.head.contains(h), "{h:?} missing in {}", s.head);
        }
        assert_eq!(s.connection, 1, "the connection is kept alive");
    }
    drop(d);
    t.join().unwrap();
}

#[test]
fn chunked_and_close_delimited_answers_are_read_whole() {
    let partial = ExportMetricsServiceResponse {
        partial_success: Some(ExportMetricsPartialSuccess {
            rejected_data_points: 3,
            error_message: "too old".into(),
        }),
    }
    .encode_to_vec();
    let mut chunked = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n".to_vec();
    let (a, b) = partial.split_at(partial.len() / 2);
    for part in [a, b] {
        chunked.extend_from_slice(format!("{:x};ext=1\r\n", part.len()).as_bytes());
        chunked.extend_from_slice(part);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\nx-trailer: 1\r\n\r\n");
    let mut until_close = b"HTTP/1.1 200 OK\r\n\r\n".to_vec();
    until_close.extend_from_slice(&partial);
    let (url, seen, t) = server(vec![
        // An interim answer first: skipped.
        Reply::Keep([&b"HTTP/1.1 100 Continue\r\n\r\n"[..], &chunked].concat()),
        Reply::Close(until_close),
        Reply::Keep(ok_empty()),
    ]);
    let mut d = direct(&url, vec![]);
    let expected = SendOk::PartialSuccess {
        rejected: 3,
        message: "too old".into(),
    };
    for _ in 0..2 {
        match d.send(b"x", BUDGET) {
            Answer::Verdict(Ok(ok)) => assert_eq!(ok, expected),
            other => panic!("{other:?}"),
        }
    }
    // The close-delimited answer ended its connection: the next send opens another.
    assert!(matches!(
        d.send(b"x", BUDGET),
        Answer::Verdict(Ok(SendOk::Accepted))
    ));
    let connections: Vec<usize> = seen.try_iter().map(|s| s.connection).collect();
    assert_eq!(connections, [1, 1, 2]);
    drop(d);
    t.join().unwrap();
}

#[test]
fn refusals_are_verdicts_with_the_servers_delay() {
    let (url, _seen, t) = server(vec![
        Reply::Keep(
            b"HTTP/1.1 503 Service Unavailable\r\nretry-after: 7\r\ncontent-length: 4\r\n\r\nbusy"
                .to_vec(),
        ),
        Reply::Keep(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 3\r\n\r\nbad".to_vec()),
    ]);
    let mut d = direct(&url, vec![]);
    match d.send(b"x", BUDGET) {
        Answer::Verdict(Err(SendError::Retryable {
            reason,
            retry_after,
        })) => {
            assert_eq!(retry_after, Some(Duration::from_secs(7)));
            assert!(
                reason.contains("503") && reason.contains("busy"),
                "{reason}"
            );
        }
        other => panic!("{other:?}"),
    }
    match d.send(b"x", BUDGET) {
        Answer::Verdict(Err(SendError::Permanent { reason })) => {
            assert!(reason.contains("400") && reason.contains("bad"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    drop(d);
    t.join().unwrap();
}

#[test]
fn a_kept_connection_the_server_closed_is_replaced_once() {
    // The first answer says keep-alive but the server closes right after it, as an idle
    // timeout would: the second send must reach the server on a new connection (whether the
    // close arrives before the second request is written or after: EOF or reset).
    let (url, seen, t) = server(vec![Reply::Close(ok_empty()), Reply::Keep(ok_empty())]);
    let mut d = direct(&url, vec![]);
    assert!(matches!(
        d.send(b"one", BUDGET),
        Answer::Verdict(Ok(SendOk::Accepted))
    ));
    assert!(matches!(
        d.send(b"two", BUDGET),
        Answer::Verdict(Ok(SendOk::Accepted))
    ));
    let seen: Vec<(usize, Vec<u8>)> = seen.try_iter().map(|s| (s.connection, s.body)).collect();
    assert_eq!(seen, [(1, b"one".to_vec()), (2, b"two".to_vec())]);
    drop(d);
    t.join().unwrap();
}

#[test]
fn no_answer_within_the_budget_gives_up_at_the_budget() {
    let (url, seen, t) = server(vec![Reply::Silent(Duration::from_secs(3))]);
    let mut d = direct(&url, vec![]);
    let start = Instant::now();
    let answer = d.send(b"x", Duration::from_millis(300));
    let took = start.elapsed();
    assert!(
        matches!(answer, Answer::None(ref why) if why.contains("timed out")),
        "{answer:?}"
    );
    // The server did get the request; the budget (300 ms) bounds the wait, with a margin for
    // a loaded machine well under the server's 3 s silence.
    assert_eq!(seen.recv().unwrap().body, b"x");
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_secs(2),
        "{took:?}"
    );
    drop(d);
    t.join().unwrap();
}

#[test]
fn an_unreachable_endpoint_is_no_answer_naming_it() {
    // A port nobody listens on: bound, then closed.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}/v1/metrics");
    let mut d = direct(&url, vec![]);
    match d.send(b"x", BUDGET) {
        Answer::None(why) => assert!(why.contains(&url), "{why}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn https_and_grpc_are_left_to_the_async_sender() {
    let https = Transport::new(TransportSettings {
        url: "https://127.0.0.1:4318/v1/metrics".into(),
        protocol: Protocol::HttpProtobuf,
        headers: vec![],
        compression: Compression::None,
        timeout: Duration::from_secs(1),
        tls: TlsMaterial::default(),
    })
    .unwrap();
    let Transport::Http(t) = https else {
        panic!("an HTTP transport")
    };
    assert!(DirectHttp::for_transport(&t).is_none());
}

#[test]
fn response_heads_parse_into_their_framing() {
    let final_head = |bytes: &[u8]| match parse_head(bytes) {
        Ok(Some(Head::Final { framing, .. })) => framing,
        other => panic!("{other:?}"),
    };
    for (head, framing) in [
        (
            &b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n"[..],
            Framing::Length(5, true),
        ),
        (
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\n",
            Framing::Length(5, false),
        ),
        (
            b"HTTP/1.0 200 OK\r\nContent-Length: 5\r\n\r\n",
            Framing::Length(5, false),
        ),
        (
            b"HTTP/1.0 200 OK\r\nContent-Length: 5\r\nConnection: keep-alive\r\n\r\n",
            Framing::Length(5, true),
        ),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            Framing::Chunked(true),
        ),
        (b"HTTP/1.1 204 No Content\r\n\r\n", Framing::Length(0, true)),
        (b"HTTP/1.1 200 OK\r\n\r\n", Framing::UntilClose),
    ] {
        assert_eq!(
            final_head(head),
            framing,
            "{}",
            String::from_utf8_lossy(head)
        );
    }
    assert_eq!(parse_head(b"HTTP/1.1 200 OK\r\nContent-Le"), Ok(None));
    assert!(parse_head(b"SSH-2.0-OpenSSH\r\n\r\n").is_err());
    assert!(parse_head(b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n").is_err());
}

#[test]
fn a_named_host_and_an_ipv6_literal_are_reached() {
    // (where the server listens, the host the client is given instead of the address's)
    for (listen, host) in [("127.0.0.1:0", Some("localhost")), ("[::1]:0", None)] {
        let (url, seen, t) = server_on(listen, vec![Reply::Keep(ok_empty())]);
        let url = host.map_or(url.clone(), |h| url.replace("127.0.0.1", h));
        let mut d = direct(&url, vec![]);
        assert!(
            matches!(
                d.send(b"hello", BUDGET),
                Answer::Verdict(Ok(SendOk::Accepted))
            ),
            "{url}"
        );
        assert_eq!(seen.recv().unwrap().body, b"hello");
        drop(d);
        t.join().unwrap();
    }
}
