//! A scripted loopback HTTP/1.1 server for the exporter's tests: it answers each request it
//! reads with the next scripted reply and reports what it read.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

/// What the scripted server does with one request.
#[derive(Clone)]
pub(crate) enum Reply {
    /// Writes these bytes and keeps the connection.
    Keep(Vec<u8>),
    /// Writes these bytes and closes the connection.
    Close(Vec<u8>),
    /// Reads the request, answers nothing for this long, then closes.
    Silent(Duration),
}

/// One request as the server read it.
#[derive(Debug)]
pub(crate) struct Seen {
    pub(crate) connection: usize,
    pub(crate) head: String,
    pub(crate) body: Vec<u8>,
}

/// A loopback HTTP/1.1 server that answers requests with `replies` in order, one connection
/// at a time, and reports each request it read.
pub(crate) fn server(replies: Vec<Reply>) -> (String, mpsc::Receiver<Seen>, JoinHandle<()>) {
    server_on("127.0.0.1:0", replies)
}

/// [`server`] listening on `addr` (`[::1]:0` for IPv6).
pub(crate) fn server_on(
    addr: &str,
    replies: Vec<Reply>,
) -> (String, mpsc::Receiver<Seen>, JoinHandle<()>) {
    let listener = TcpListener::bind(addr).unwrap();
    let url = format!("http://{}/v1/metrics", listener.local_addr().unwrap());
    let (tx, rx) = mpsc::channel();
    let t = std::thread::spawn(move || {
        let mut replies = replies.into_iter();
        let mut connection = 0;
        // Ends once every reply is used (a connection the client closed early moves on to
        // the next accept).
        'accept: while replies.len() > 0
            && let Ok((stream, _)) = listener.accept()
        {
            connection += 1;
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            loop {
                let mut head = String::new();
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 {
                        continue 'accept;
                    }
                    head.push_str(&line);
                    if line == "\r\n" {
                        break;
                    }
                }
                let len = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length: "))
                    .map_or(0, |v| v.trim().parse::<usize>().unwrap());
                let mut body = vec![0; len];
                reader.read_exact(&mut body).unwrap();
                tx.send(Seen {
                    connection,
                    head,
                    body,
                })
                .unwrap();
                let mut out = &stream;
                match replies.next() {
                    Some(Reply::Keep(bytes)) => out.write_all(&bytes).unwrap(),
                    Some(Reply::Close(bytes)) => {
                        out.write_all(&bytes).unwrap();
                        continue 'accept;
                    }
                    Some(Reply::Silent(d)) => {
                        #[allow(clippy::disallowed_methods)] // The server's own thread.
                        std::thread::sleep(d);
                        continue 'accept;
                    }
                    None => return,
                }
            }
        }
    });
    (url, rx, t)
}

/// A 200 answer with an empty body, keeping the connection.
pub(crate) fn ok_empty() -> Vec<u8> {
    b"HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\n\r\n".to_vec()
}
