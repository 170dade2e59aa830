//! A blocking OTLP/HTTP/1.1 sender for the collection thread's steady state.
//!
//! When the queue holds nothing but the batch just collected and the endpoint is plain
//! `http://` with protobuf bodies, the collection thread sends that batch itself, over one
//! kept-alive connection, before it sleeps until the next cycle: the async sender is not woken,
//! no reactor round, no hand-off between threads, no per-request allocations of a general
//! client (ADR 0025 gives the measurement). Everything else stays with the async sender
//! ([`super::pipeline::Sender`]): TLS, gRPC, a backlog, retries and their backoff, outage
//! logging. An answer other than "accepted" is handed to it as is, so one place classifies
//! and logs what the backend said; no answer at all (connection refused, reset, too slow) is
//! handed over without a verdict, and it sends the batch again with its own client.
//!
//! Not here: queueing, durability (the batch is in the disk queue before this runs), HTTP/2,
//! redirects. The response is parsed with `httparse`; bodies come with `Content-Length`,
//! chunked, or until the server closes.

use std::io::{self, IoSlice, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime};

use http::StatusCode;

use super::transport::{
    Compression, HttpTransport, SendError, SendOk, classify_http, gzip, parse_retry_after,
};

/// Largest response head read (status line and headers).
const MAX_HEAD: usize = 64 << 10;
/// Largest response body read (an OTLP response is a few bytes; an error page a few KB).
const MAX_BODY: usize = 4 << 20;
/// Headers parsed at most.
const MAX_HEADERS: usize = 64;

/// The outcome of one direct attempt.
#[derive(Debug)]
pub(crate) enum Answer {
    /// The backend answered: accepted, partly accepted, or refused (retryable or not).
    Verdict(Result<SendOk, SendError>),
    /// No answer: the connection failed or the backend took longer than allowed. Why, for a
    /// debug line.
    None(String),
}

/// One plain-HTTP endpoint and the kept-alive connection to it.
#[derive(Debug)]
pub(crate) struct DirectHttp {
    /// `host:port`, what is connected to.
    authority: String,
    /// The endpoint's URL, for messages.
    url: String,
    /// The request head up to the `Content-Length` value: request line, `Host`, content type
    /// and encoding, the configured headers. Built once.
    head_prefix: Vec<u8>,
    /// The whole head of the current request.
    head: Vec<u8>,
    gzip: bool,
    /// The transport's own timeout: the bound of a single attempt besides the caller's.
    timeout: Duration,
    conn: Option<TcpStream>,
    /// Response bytes read and not yet consumed.
    buf: Vec<u8>,
}

/// Why an exchange on a connection ended without an answer.
enum Failed {
    /// A kept-alive connection the server had closed before reading the request (nothing of
    /// an answer came): sending again on a new one is safe.
    Stale(io::Error),
    /// Anything else.
    Other(String),
}

impl DirectHttp {
    /// A direct sender for `t`, or `None` when its endpoint is not plain `http://`.
    pub(crate) fn for_transport(t: &HttpTransport) -> Option<Self> {
        let uri = t.uri();
        if uri.scheme_str() != Some("http") {
            return None;
        }
        let authority = uri.authority()?;
        let port = authority.port_u16().unwrap_or(80);
        let path = uri.path_and_query().map_or("/", |p| p.as_str());
        let mut head_prefix = Vec::with_capacity(256);
        head_prefix.extend_from_slice(b"POST ");
        head_prefix.extend_from_slice(path.as_bytes());
        head_prefix.extend_from_slice(b" HTTP/1.1\r\nhost: ");
        head_prefix.extend_from_slice(authority.as_str().as_bytes());
        head_prefix.extend_from_slice(b"\r\ncontent-type: application/x-protobuf\r\n");
        let gzip = t.compression() == Compression::Gzip;
        if gzip {
            head_prefix.extend_from_slice(b"content-encoding: gzip\r\n");
        }
        for (k, v) in t.headers() {
            head_prefix.extend_from_slice(k.as_str().as_bytes());
            head_prefix.extend_from_slice(b": ");
            head_prefix.extend_from_slice(v.as_bytes());
            head_prefix.extend_from_slice(b"\r\n");
        }
        head_prefix.extend_from_slice(b"content-length: ");
        Some(Self {
            authority: format!("{}:{port}", authority.host()),
            url: uri.to_string(),
            head_prefix,
            head: Vec::with_capacity(256),
            gzip,
            timeout: t.timeout(),
            conn: None,
            buf: Vec::with_capacity(1024),
        })
    }

    /// Sends `payload` (an encoded request) and waits for the answer, for at most `budget`
    /// (and the transport's timeout). A kept-alive connection the server closed meanwhile is
    /// replaced once.
    pub(crate) fn send(&mut self, payload: &[u8], budget: Duration) -> Answer {
        let deadline = Instant::now() + budget.min(self.timeout);
        let compressed;
        let body = if self.gzip {
            match gzip(payload) {
                Ok(b) => {
                    compressed = b;
                    &compressed[..]
                }
                Err(e) => return Answer::None(format!("gzip: {e}")),
            }
        } else {
            payload
        };
        self.head.clear();
        self.head.extend_from_slice(&self.head_prefix);
        self.head
            .extend_from_slice(body.len().to_string().as_bytes());
        self.head.extend_from_slice(b"\r\n\r\n");
        for _ in 0..2 {
            let reused = self.conn.is_some();
            let conn = match self.conn.take() {
                Some(c) => c,
                None => match self.connect(deadline) {
                    Ok(c) => c,
                    Err(e) => return Answer::None(format!("connecting to {}: {e}", self.url)),
                },
            };
            match self.exchange(&conn, body, deadline) {
                Ok((answer, keep)) => {
                    if keep {
                        self.conn = Some(conn);
                    }
                    return Answer::Verdict(answer);
                }
                Err(Failed::Stale(_)) if reused => {}
                Err(Failed::Stale(e)) => return Answer::None(format!("{}: {e}", self.url)),
                Err(Failed::Other(why)) => return Answer::None(format!("{}: {why}", self.url)),
            }
        }
        Answer::None(format!("{}: the connection closed twice", self.url))
    }

    fn connect(&self, deadline: Instant) -> io::Result<TcpStream> {
        let mut last = io::Error::new(io::ErrorKind::NotFound, "no address");
        for addr in resolve(&self.authority, deadline)? {
            let left = left(deadline)?;
            match TcpStream::connect_timeout(&addr, left) {
                Ok(c) => {
                    c.set_nodelay(true)?;
                    return Ok(c);
                }
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    /// One request and its answer on `conn`; whether the connection can be kept.
    fn exchange(
        &mut self,
        mut conn: &TcpStream,
        body: &[u8],
        deadline: Instant,
    ) -> Result<(Result<SendOk, SendError>, bool), Failed> {
        self.buf.clear();
        let sent = left(deadline)
            .and_then(|t| conn.set_write_timeout(Some(t)))
            .and_then(|()| write_all(conn, &self.head, body));
        if let Err(e) = sent {
            return Err(match e.kind() {
                io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset => Failed::Stale(e),
                _ => Failed::Other(format!("sending: {e}")),
            });
        }
        let (status, head_len, framing, retry_after) = loop {
            if !self.buf.is_empty() {
                match parse_head(&self.buf) {
                    Ok(Some(Head::Interim(len))) => {
                        self.buf.drain(..len);
                        continue;
                    }
                    Ok(Some(Head::Final {
                        status,
                        len,
                        framing,
                        retry_after,
                    })) => break (status, len, framing, retry_after),
                    Ok(None) => {}
                    Err(e) => return Err(Failed::Other(e)),
                }
            }
            if self.buf.len() >= MAX_HEAD {
                return Err(Failed::Other("response head too large".into()));
            }
            match read_some(&mut conn, &mut self.buf, deadline) {
                Ok(0) if self.buf.is_empty() => {
                    return Err(Failed::Stale(io::ErrorKind::UnexpectedEof.into()));
                }
                Ok(0) => {
                    return Err(Failed::Other(
                        "connection closed in the response head".into(),
                    ));
                }
                Ok(_) => {}
                Err(e) if self.buf.is_empty() && e.kind() == io::ErrorKind::ConnectionReset => {
                    return Err(Failed::Stale(e));
                }
                Err(e) => return Err(Failed::Other(format!("reading the response: {e}"))),
            }
        };
        self.buf.drain(..head_len);
        let keep = framing.keep_alive();
        let body = match framing {
            Framing::Length(n, _) => read_length(&mut conn, &mut self.buf, n, deadline),
            Framing::Chunked(_) => read_chunked(&mut conn, &mut self.buf, deadline),
            Framing::UntilClose => read_to_close(&mut conn, &mut self.buf, deadline),
        }
        .map_err(|e| Failed::Other(format!("reading the response body: {e}")))?;
        Ok((classify_http(status, retry_after, &body), keep))
    }
}

/// The addresses of `authority` (`host:port`). A name is resolved on a thread of its own, so
/// that a slow resolver holds the collection thread no longer than `deadline` (the lookup
/// then finishes in the background and is dropped). Only a new connection resolves.
fn resolve(authority: &str, deadline: Instant) -> io::Result<Vec<SocketAddr>> {
    if let Ok(addr) = authority.parse::<SocketAddr>() {
        return Ok(vec![addr]);
    }
    let (tx, rx) = mpsc::channel();
    let name = authority.to_owned();
    std::thread::Builder::new()
        .name("faultline-resolve".into())
        .spawn(move || {
            let _ = tx.send(name.to_socket_addrs().map(Iterator::collect));
        })?;
    rx.recv_timeout(left(deadline)?).map_err(|_| {
        io::Error::new(
            io::ErrorKind::TimedOut,
            format!("resolving {authority} timed out"),
        )
    })?
}

/// Time left before `deadline`, or a timeout error.
fn left(deadline: Instant) -> io::Result<Duration> {
    deadline
        .checked_duration_since(Instant::now())
        .filter(|d| !d.is_zero())
        .ok_or_else(|| io::Error::new(io::ErrorKind::TimedOut, "timed out"))
}

/// Writes `head` then `body` (one `writev` in the usual case).
fn write_all(mut conn: &TcpStream, head: &[u8], body: &[u8]) -> io::Result<()> {
    let mut bufs = [IoSlice::new(head), IoSlice::new(body)];
    let mut slices = &mut bufs[..];
    while !slices.is_empty() {
        match conn.write_vectored(slices) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => IoSlice::advance_slices(&mut slices, n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Reads what is available (at least one byte, or 0 at the end) onto `buf`, waiting at most
/// until `deadline`.
fn read_some(conn: &mut &TcpStream, buf: &mut Vec<u8>, deadline: Instant) -> io::Result<usize> {
    conn.set_read_timeout(Some(left(deadline)?))?;
    let start = buf.len();
    buf.resize(start + 8192, 0);
    let read = loop {
        match conn.read(&mut buf[start..]) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            other => break other,
        }
    };
    buf.truncate(start + *read.as_ref().unwrap_or(&0));
    match read {
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
            Err(io::Error::new(io::ErrorKind::TimedOut, "timed out"))
        }
        other => other,
    }
}

/// How the response body is delimited, and whether the connection stays open after it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Framing {
    Length(usize, bool),
    Chunked(bool),
    UntilClose,
}

impl Framing {
    fn keep_alive(self) -> bool {
        match self {
            Framing::Length(_, keep) | Framing::Chunked(keep) => keep,
            Framing::UntilClose => false,
        }
    }
}

/// A parsed response head.
#[derive(Debug, PartialEq, Eq)]
enum Head {
    /// A 1xx answer of `len` bytes, to skip.
    Interim(usize),
    /// The answer.
    Final {
        status: StatusCode,
        len: usize,
        framing: Framing,
        retry_after: Option<Duration>,
    },
}

/// Parses a response head from the start of `bytes`; `None` while it is incomplete.
fn parse_head(bytes: &[u8]) -> Result<Option<Head>, String> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut headers);
    let len = match resp.parse(bytes) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(format!("not an HTTP/1 response: {e}")),
    };
    let code = resp.code.unwrap_or(0);
    let status = StatusCode::from_u16(code).map_err(|_| format!("status {code}"))?;
    if status.is_informational() {
        return Ok(Some(Head::Interim(len)));
    }
    let mut length = None;
    let mut chunked = false;
    let mut close = resp.version == Some(0);
    let mut retry_after = None;
    for h in resp.headers.iter() {
        let value = std::str::from_utf8(h.value).unwrap_or("").trim();
        if h.name.eq_ignore_ascii_case("content-length") {
            length = Some(
                value
                    .parse::<usize>()
                    .map_err(|_| format!("content-length {value:?}"))?,
            );
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value
                .rsplit(',')
                .next()
                .is_some_and(|last| last.trim().eq_ignore_ascii_case("chunked"));
        } else if h.name.eq_ignore_ascii_case("connection") {
            if value
                .split(',')
                .any(|t| t.trim().eq_ignore_ascii_case("close"))
            {
                close = true;
            } else if value
                .split(',')
                .any(|t| t.trim().eq_ignore_ascii_case("keep-alive"))
            {
                close = false;
            }
        } else if h.name.eq_ignore_ascii_case("retry-after") {
            retry_after = parse_retry_after(value, SystemTime::now());
        }
    }
    let framing = if status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED {
        Framing::Length(0, !close)
    } else if chunked {
        Framing::Chunked(!close)
    } else if let Some(n) = length {
        if n > MAX_BODY {
            return Err(format!("response body of {n} bytes"));
        }
        Framing::Length(n, !close)
    } else {
        Framing::UntilClose
    };
    Ok(Some(Head::Final {
        status,
        len,
        framing,
        retry_after,
    }))
}

/// Reads more onto `buf`; the connection's end is an error here (the body is not complete).
fn read_more(conn: &mut &TcpStream, buf: &mut Vec<u8>, deadline: Instant) -> io::Result<()> {
    if buf.len() > MAX_HEAD + MAX_BODY {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "body too large"));
    }
    match read_some(conn, buf, deadline)? {
        0 => Err(io::ErrorKind::UnexpectedEof.into()),
        _ => Ok(()),
    }
}

/// A body of `n` bytes, some of which may already be in `buf`.
fn read_length(
    conn: &mut &TcpStream,
    buf: &mut Vec<u8>,
    n: usize,
    deadline: Instant,
) -> io::Result<Vec<u8>> {
    while buf.len() < n {
        read_more(conn, buf, deadline)?;
    }
    Ok(buf.drain(..n).collect())
}

/// A body read until the server closes the connection.
fn read_to_close(
    conn: &mut &TcpStream,
    buf: &mut Vec<u8>,
    deadline: Instant,
) -> io::Result<Vec<u8>> {
    while read_some(conn, buf, deadline)? > 0 {
        if buf.len() > MAX_BODY {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "body too large"));
        }
    }
    Ok(std::mem::take(buf))
}

/// A chunked body, decoded (chunk sizes by `httparse`, extensions and trailers skipped).
fn read_chunked(
    conn: &mut &TcpStream,
    buf: &mut Vec<u8>,
    deadline: Instant,
) -> io::Result<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let (line, size) = loop {
            match httparse::parse_chunk_size(buf) {
                Ok(httparse::Status::Complete(found)) => break found,
                Ok(httparse::Status::Partial) => read_more(conn, buf, deadline)?,
                Err(_) => {
                    return Err(io::Error::new(io::ErrorKind::InvalidData, "bad chunk size"));
                }
            }
        };
        buf.drain(..line);
        if size == 0 {
            // Trailers, each a line, up to an empty line.
            loop {
                match buf.windows(2).position(|w| w == b"\r\n") {
                    Some(0) => {
                        buf.drain(..2);
                        return Ok(body);
                    }
                    Some(i) => drop(buf.drain(..i + 2)),
                    None => read_more(conn, buf, deadline)?,
                }
            }
        }
        let size = usize::try_from(size)
            .ok()
            .filter(|s| body.len() + s <= MAX_BODY)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "body too large"))?;
        while buf.len() < size + 2 {
            read_more(conn, buf, deadline)?;
        }
        body.extend_from_slice(&buf[..size]);
        buf.drain(..size + 2);
    }
}

#[cfg(test)]
mod tests;
