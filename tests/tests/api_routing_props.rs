//! Property test of the HTTP API's request routing, against a real `faultline run`: **any
//! method, path, headers and body get a well-formed answer that follows the route table in
//! README.md — never a 5xx for a client's mistake, and never past authentication without a
//! valid token.**
//!
//! Each case is one raw HTTP/1.1 request over TCP (so the test sees exactly the status line the
//! agent wrote): a method (the API's, other standard ones, random tokens), a path (the README's
//! routes with random ids, or random segments), a query, an `Authorization` header (an
//! operator or viewer token under any case of the `Bearer` scheme, none, or a wrong one), random
//! extra headers, and a body (none, random bytes, random text, JSON and YAML fragments, one
//! larger than `api.max_body_bytes`, or one shorter than its `Content-Length`). The answer must
//! be, by the route table alone:
//! - a route the table does not list: 404 or 405;
//! - `/healthz`, `/readyz`: 200;
//! - any other route without a valid token: 401 whatever the body, even one too large or
//!   never finished (so authentication comes before the body is read); a viewer's token on an
//!   operator route: 403;
//! - otherwise: below 500 and neither 401 nor 403; 413 for a body over the limit and 408 for
//!   one that never arrives on an operator route.
//!
//! Afterwards the agent still answers, never logged a panic, and holds no fault. The agent's
//! `chaos.max_duration` is 1 ms, so that no body (the fixed fragments name PID 1 and an hour
//! anyway) could apply a fault. The number of cases comes from `PROPTEST_CASES` (default 256:
//! a few seconds); the seed is fixed, so the coverage check at the end is stable.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use std::cell::RefCell;
use std::collections::BTreeMap;

use faultline_tests::api::{OPERATOR, VIEWER, exchange_bytes, http, start_agent};
use faultline_tests::drill::write_tokens;
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;

/// `api.max_body_bytes` of the agent under test: small, so an oversized body is cheap.
const MAX_BODY: usize = 1024;

/// Who the request claims to be.
#[derive(Clone, Debug)]
enum Auth {
    None,
    /// A valid token under this spelling of the scheme.
    Operator(&'static str),
    Viewer(&'static str),
    /// A header that carries no valid token.
    Wrong(&'static str),
}

#[derive(Clone, Debug)]
enum Body {
    Bytes(Vec<u8>),
    /// Over `MAX_BODY`.
    TooLarge(usize),
    /// `Content-Length` says `declared`, fewer bytes come.
    Unfinished {
        declared: usize,
        sent: Vec<u8>,
    },
}

#[derive(Clone, Debug)]
struct Req {
    method: String,
    segs: Vec<String>,
    query: String,
    auth: Auth,
    headers: Vec<(String, String)>,
    body: Body,
}

/// What the README's route table says of a method and path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Route {
    Health,
    Viewer,
    Operator,
    Unknown,
}

/// The README's table ("The HTTP API"), `{id}` being any one segment.
fn route(method: &str, segs: &[&str]) -> Route {
    match (method, segs) {
        ("GET", ["healthz" | "readyz"]) => Route::Health,
        ("GET", ["v1", "info" | "drills" | "faults" | "status"])
        | ("GET", ["v1", "drills", _])
        | ("GET", ["v1", "drills", _, "junit" | "html" | "progress"]) => Route::Viewer,
        ("POST", ["v1", "drills" | "faults" | "abort"])
        | ("POST", ["v1", "drills", _, "abort"])
        | ("DELETE", ["v1", "faults", _]) => Route::Operator,
        _ => Route::Unknown,
    }
}

/// The table again, as (method, path) to draw requests from.
const ROUTES: &[(&str, &[&str])] = &[
    ("GET", &["healthz"]),
    ("GET", &["readyz"]),
    ("GET", &["v1", "info"]),
    ("GET", &["v1", "status"]),
    ("GET", &["v1", "drills"]),
    ("POST", &["v1", "drills"]),
    ("GET", &["v1", "drills", "{id}"]),
    ("GET", &["v1", "drills", "{id}", "junit"]),
    ("GET", &["v1", "drills", "{id}", "html"]),
    ("GET", &["v1", "drills", "{id}", "progress"]),
    ("POST", &["v1", "drills", "{id}", "abort"]),
    ("POST", &["v1", "abort"]),
    ("GET", &["v1", "faults"]),
    ("POST", &["v1", "faults"]),
    ("DELETE", &["v1", "faults", "{id}"]),
];

const WORDS: &[&str] = &[
    "v1", "v2", "faults", "drills", "abort", "info", "status", "healthz", "readyz", "junit",
    "html", "progress", "..", ".", "%2e%2e", "%2F", "V1", "FAULTS",
];

/// Bodies that parse, or nearly: none of them may apply anything.
const FRAGMENTS: &[&str] = &[
    r#"{"kind":"process-kill","pid":1,"duration":"1h"}"#,
    r#"{"kind":"process-pause","pid":1,"duration":"1h"}"#,
    r#"{"kind":"cpu-stress","load":10,"duration":"1h"}"#,
    r#"{"kind":"disk-fill","path":"/","percent":99,"duration":"1h"}"#,
    r#"{"kind":"no-such-kind","duration":"1s"}"#,
    r#"{"kind":"process-kill"}"#,
    r#"{"kind":"process-kill","pid":"x","duration":"1s","extra":true}"#,
    r#"{"scenario":"no-such-scenario"}"#,
    r#"{"inline":"name: x"}"#,
    r#"{"scenario":"a","inline":{}}"#,
    r#"{"inline":{"name":"x","faults":[]}}"#,
    "name: x\nfaults: [\n",
    "{}",
    "[]",
    "null",
    "\"text\"",
    "{\"kind\":",
    "\u{feff}{}",
];

fn segment() -> impl Strategy<Value = String> {
    prop_oneof![
        5 => prop::sample::select(WORDS).prop_map(str::to_owned),
        2 => "[a-z0-9-]{1,12}",
        1 => "(process-pause|disk-fill|drill)-[0-9a-f]{8}",
        // Any path character (RFC 3986 `pchar`, unescaped).
        1 => "[A-Za-z0-9._~!$&'()*+,;=:@-]{1,8}",
    ]
}

/// An `{id}`: as faultline makes them, or not (upper case, too long, dots, escapes).
fn id() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z0-9-]{1,12}",
        "(process-pause|disk-fill|drill)-[0-9a-f]{8}",
        "[A-Za-z0-9._~!$&'()*+,;=:@-]{1,8}",
        prop::sample::select(&["..", "%2e%2e", "ABC", "a_b", "%C3%A9"][..]).prop_map(str::to_owned),
        "[a-z]{65}",
    ]
}

/// A route of the table with its `{id}` filled in.
fn table_route() -> impl Strategy<Value = (String, Vec<String>)> {
    (prop::sample::select(ROUTES), id()).prop_map(|((method, path), id)| {
        let segs = path
            .iter()
            .map(|s| {
                if *s == "{id}" {
                    id.clone()
                } else {
                    (*s).to_owned()
                }
            })
            .collect();
        (method.to_owned(), segs)
    })
}

/// A method and a path: a route of the table, a table path with any method, or anything.
fn target() -> impl Strategy<Value = (String, Vec<String>)> {
    prop_oneof![
        4 => table_route(),
        1 => (method(), table_route()).prop_map(|(m, (_, segs))| (m, segs)),
        1 => (method(), prop::collection::vec(segment(), 0..5)),
    ]
}

fn method() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => prop::sample::select(&["GET", "POST", "DELETE"][..]).prop_map(str::to_owned),
        2 => prop::sample::select(&["PUT", "PATCH", "HEAD", "OPTIONS", "TRACE", "get", "Post"][..])
            .prop_map(str::to_owned),
        // CONNECT takes an authority, not a path: a different request shape altogether.
        1 => "[A-Z]{1,10}".prop_filter("not CONNECT", |m| m != "CONNECT"),
    ]
}

fn auth() -> impl Strategy<Value = Auth> {
    let scheme = prop::sample::select(&["Bearer", "bearer", "BEARER", "beaRer"][..]);
    prop_oneof![
        2 => Just(Auth::None),
        4 => scheme.clone().prop_map(Auth::Operator),
        2 => scheme.prop_map(Auth::Viewer),
        2 => prop::sample::select(
            &[
                "Bearer wrong-token-0123456789",
                "Bearer",
                "Bearer ",
                "Basic b3BzOnNlY3JldA==",
                "operator-token-0123456789",
                "Bearer operator-token-012345678",
                "Bearer viewer-token-0123456789abX",
                "Token operator-token-0123456789",
            ][..],
        )
        .prop_map(Auth::Wrong),
    ]
}

fn headers() -> impl Strategy<Value = Vec<(String, String)>> {
    let name = "[A-Za-z][A-Za-z0-9-]{0,12}".prop_filter("not a framing header", |n| {
        !matches!(
            n.to_ascii_lowercase().as_str(),
            "content-length"
                | "transfer-encoding"
                | "host"
                | "connection"
                | "authorization"
                | "expect"
                | "upgrade"
                | "te"
                | "trailer"
        )
    });
    let content_type = prop::sample::select(
        &[
            "application/json",
            "application/yaml",
            "text/plain",
            "application/x-www-form-urlencoded",
            "multipart/form-data; boundary=x",
        ][..],
    )
    .prop_map(|v| ("Content-Type".to_owned(), v.to_owned()));
    (
        prop::option::of(content_type),
        prop::collection::vec((name, "[!-~][ -~]{0,30}"), 0..3),
    )
        .prop_map(|(ct, mut rest)| {
            rest.extend(ct);
            rest
        })
}

fn body() -> impl Strategy<Value = Body> {
    prop_oneof![
        2 => Just(Body::Bytes(Vec::new())),
        2 => prop::collection::vec(any::<u8>(), 1..300).prop_map(Body::Bytes),
        2 => "[ -~\n\t]{1,200}".prop_map(|t| Body::Bytes(t.into_bytes())),
        3 => prop::sample::select(FRAGMENTS).prop_map(|f| Body::Bytes(f.as_bytes().to_vec())),
        1 => (MAX_BODY + 1..MAX_BODY + 2000).prop_map(Body::TooLarge),
        1 => (prop::collection::vec(any::<u8>(), 0..50), 1usize..100).prop_map(|(sent, more)| {
            Body::Unfinished {
                declared: sent.len() + more,
                sent,
            }
        }),
    ]
}

fn request() -> impl Strategy<Value = Req> {
    (
        target(),
        prop::sample::select(&["", "?dry_run=true", "?dry_run=1", "?a=b&dry_run=0", "?"][..]),
        auth(),
        headers(),
        body(),
    )
        .prop_map(|((method, segs), query, auth, headers, body)| Req {
            method,
            segs,
            query: query.to_owned(),
            auth,
            headers,
            body,
        })
}

impl Req {
    /// The request as bytes on the wire.
    fn to_wire(&self) -> Vec<u8> {
        let (declared, bytes) = match &self.body {
            Body::Bytes(b) => (b.len(), b.clone()),
            Body::TooLarge(n) => (*n, vec![b'a'; *n]),
            Body::Unfinished { declared, sent } => (*declared, sent.clone()),
        };
        let auth = match &self.auth {
            Auth::None => String::new(),
            Auth::Operator(scheme) => format!("Authorization: {scheme} {OPERATOR}\r\n"),
            Auth::Viewer(scheme) => format!("Authorization: {scheme} {VIEWER}\r\n"),
            Auth::Wrong(value) => format!("Authorization: {value}\r\n"),
        };
        let extra: String = self
            .headers
            .iter()
            .map(|(n, v)| format!("{n}: {v}\r\n"))
            .collect();
        let mut wire = format!(
            "{} /{}{} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{auth}{extra}Content-Length: {declared}\r\n\r\n",
            self.method,
            self.segs.join("/"),
            self.query
        )
        .into_bytes();
        wire.extend(bytes);
        wire
    }

    /// The statuses the route table allows for this request.
    fn allowed(&self) -> Result<Vec<u16>, &'static str> {
        let segs: Vec<&str> = self.segs.iter().map(String::as_str).collect();
        let route = route(&self.method, &segs);
        let operator = matches!(self.auth, Auth::Operator(_));
        let viewer = matches!(self.auth, Auth::Viewer(_));
        Ok(match route {
            Route::Unknown => vec![404, 405],
            Route::Health => vec![200],
            Route::Viewer | Route::Operator if !operator && !viewer => vec![401],
            Route::Operator if viewer => vec![403],
            Route::Operator => match self.body {
                Body::TooLarge(_) => vec![413],
                Body::Unfinished { .. } => vec![408],
                Body::Bytes(_) => return Err("below 500, not 401/403"),
            },
            Route::Viewer => return Err("below 500, not 401/403"),
        })
    }
}

fn check(addr: &str, req: &Req, seen: &mut BTreeMap<u16, usize>) -> Result<(), TestCaseError> {
    let answer = exchange_bytes(addr, &req.to_wire())
        .map_err(|e| TestCaseError::fail(format!("no answer: {e}")))?;
    let status = answer.status;
    *seen.entry(status).or_default() += 1;
    match req.allowed() {
        Ok(allowed) => prop_assert!(
            allowed.contains(&status),
            "answered {status} ({}), the route table allows {allowed:?}",
            answer.body.trim()
        ),
        Err(rule) => prop_assert!(
            (200..500).contains(&status) && status != 401 && status != 403,
            "answered {status} ({}), expected {rule}",
            answer.body.trim()
        ),
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_request_gets_the_route_tables_answer_never_a_5xx_and_auth_before_the_body() {
    let tokens_dir = tempfile::tempdir().unwrap();
    let tokens = write_tokens(tokens_dir.path());
    let (agent, addr) = start_agent(
        &tokens,
        &format!("  max_body_bytes: {MAX_BODY}\n  read_timeout: 300ms\n"),
        "chaos:\n  max_duration: 1ms\n",
    );
    let (mut runner, cases) = faultline_tests::props::runner(256, 256);
    let seen = RefCell::new(BTreeMap::new());
    let result = runner.run(&request(), |req| check(&addr, &req, &mut seen.borrow_mut()));
    if let Err(e) = result {
        panic!("{e}");
    }
    let seen = seen.into_inner();
    eprintln!("{cases} requests, answers by status: {seen:?}");
    // Not vacuous: every rule above was exercised.
    for status in [200, 401, 403, 404, 408, 413] {
        assert!(seen.contains_key(&status), "no {status} among {seen:?}");
    }
    assert!(
        seen.range(400..500)
            .any(|(s, _)| ![401, 403, 404, 408, 413].contains(s)),
        "no other client error (400, 422…) among {seen:?}"
    );

    let (status, faults) = http(&addr, "GET", "/v1/faults", Some(VIEWER), "");
    assert_eq!((status, faults.trim()), (200, "[]"), "a fault was applied");
    assert!(
        !agent.stderr().contains("panicked"),
        "the agent panicked:\n{}",
        agent.stderr()
    );
}
