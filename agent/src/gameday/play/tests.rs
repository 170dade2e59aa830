//! The game engine against a fake agent on 127.0.0.1 (a hyper server in the test) that
//! counts what it is asked: the connections it accepts, the progress reads and the whole
//! report reads. Its one drill advances by one step per read (so the test does not depend
//! on timing): running with 2 events, from the 4th read with 5 (a fault applied), passed
//! from the 8th.

use std::convert::Infallible;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;

use super::*;
use crate::drill::report::{Event, EventKind, fixture};
use crate::gameday::{cast, plan};

const TOKEN: &str = "play-test-token";

#[derive(Debug, Default)]
struct Seen {
    connections: AtomicUsize,
    /// Reads of the drill (progress or report), which advance it.
    reads: AtomicUsize,
    progress: AtomicUsize,
    reports: AtomicUsize,
    paths: Mutex<Vec<String>>,
}

/// The drill after `n` reads: (verdict, non-routine events).
fn drill_at(n: usize) -> (Verdict, usize) {
    match n {
        0..4 => (Verdict::Running, 2),
        4..8 => (Verdict::Running, 5),
        _ => (Verdict::Passed, 5),
    }
}

fn report_at(n: usize) -> DrillReport {
    let (verdict, events) = drill_at(n);
    let mut r = fixture::report();
    r.id = "drill-1".into();
    r.verdict = verdict;
    let event = |kind, i: usize| Event {
        at: r.started_at + i as f64,
        kind,
        name: format!("e{i}"),
        ok: Some(true),
        latency: None,
        seq: None,
        detail: String::new(),
    };
    // Routine events (probe outcomes) grow with every read; the others are the news.
    r.timeline = (0..events)
        .map(|i| event(EventKind::PhaseStart, i))
        .chain((0..n).map(|i| event(EventKind::Probe, i)))
        .collect();
    r
}

fn answer(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r
}

fn route(seen: &Seen, progress_route: bool, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    let path = req.uri().path().to_owned();
    lock(&seen.paths).push(format!("{} {path}", req.method()));
    let authorised = req
        .headers()
        .get(http::header::AUTHORIZATION)
        .is_some_and(|v| v == format!("Bearer {TOKEN}").as_str());
    if !authorised {
        return answer(StatusCode::UNAUTHORIZED, "{\"error\":\"token\"}".into());
    }
    match (req.method().as_str(), path.as_str()) {
        ("GET", "/v1/drills") => answer(StatusCode::OK, "[]".into()),
        ("POST", "/v1/drills") => answer(StatusCode::ACCEPTED, "{\"id\":\"drill-1\"}".into()),
        ("GET", "/v1/drills/drill-1/progress") if progress_route => {
            seen.progress.fetch_add(1, Ordering::SeqCst);
            let n = seen.reads.fetch_add(1, Ordering::SeqCst) + 1;
            let p = Progress::of(&report_at(n));
            answer(StatusCode::OK, serde_json::to_string(&p).unwrap())
        }
        ("GET", "/v1/drills/drill-1") => {
            seen.reports.fetch_add(1, Ordering::SeqCst);
            // A report read after a progress read shows the same step; without the
            // progress route, each report read is a step.
            let n = if progress_route {
                seen.reads.load(Ordering::SeqCst)
            } else {
                seen.reads.fetch_add(1, Ordering::SeqCst) + 1
            };
            answer(
                StatusCode::OK,
                serde_json::to_string(&report_at(n)).unwrap(),
            )
        }
        _ => answer(
            StatusCode::NOT_FOUND,
            format!("{{\"error\":\"no route {path}\"}}"),
        ),
    }
}

/// A fake agent; `progress_route: false` is an agent from before the progress route.
async fn fake_agent(progress_route: bool) -> (String, Arc<Seen>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Seen::default());
    let s = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            s.connections.fetch_add(1, Ordering::SeqCst);
            let s = s.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req| {
                    let r = route(&s, progress_route, &req);
                    async move { Ok::<_, Infallible>(r) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    (format!("http://{addr}"), seen)
}

async fn play_one(url: &str) -> GameReport {
    let text = format!(
        "name: g\nagents:\n  - {{ name: a, url: \"{url}\", token_env: T }}\n\
         poll_interval: 50ms\nrequest_timeout: 2s\nplan:\n  - {{ scenario: s, agents: [a] }}\n"
    );
    let file = plan::parse(&text, "g.yaml").unwrap();
    let env = |k: &str| (k == "T").then(|| TOKEN.to_owned());
    let game = plan::resolve(file, &text, "g.yaml", Path::new("."), &env).unwrap();
    let plan::AgentSource::Inventory(agents) = game.agents.clone() else {
        panic!("an inventory")
    };
    let cast = cast::cast(&game.stages, &["a".to_owned()], 1).unwrap();
    let clients: Vec<NodeClient> = agents
        .into_iter()
        .map(|a| NodeClient::new(a, Duration::from_secs(2)).unwrap())
        .collect();
    run(&game, &cast, &clients, CancellationToken::new()).await
}

#[tokio::test]
async fn a_drill_is_followed_by_its_progress_over_one_kept_alive_connection() {
    let (url, seen) = fake_agent(true).await;
    let report = play_one(&url).await;
    let paths = lock(&seen.paths).clone();
    assert_eq!(
        report.verdict,
        GameVerdict::Passed,
        "{report:#?}\n{paths:#?}"
    );
    let run = &report.runs[0];
    assert_eq!(run.verdict, Some(Verdict::Passed), "{paths:#?}");
    assert_eq!(
        run.report.as_ref().map(|r| Progress::of(r).events),
        Some(5),
        "the final report was kept"
    );
    // The whole report only at news: the first read, the new events, the final verdict;
    // the progress at every poll.
    assert_eq!(
        seen.reports.load(Ordering::SeqCst),
        3,
        "whole-report reads: {paths:#?}"
    );
    assert_eq!(seen.progress.load(Ordering::SeqCst), 8, "{paths:#?}");
    // Preflight, start and every poll over one connection.
    assert_eq!(
        seen.connections.load(Ordering::SeqCst),
        1,
        "connections for {} requests",
        paths.len()
    );
}

#[tokio::test]
async fn an_agent_without_the_progress_route_is_followed_by_its_report() {
    let (url, seen) = fake_agent(false).await;
    let report = play_one(&url).await;
    let paths = lock(&seen.paths).clone();
    assert_eq!(
        report.verdict,
        GameVerdict::Passed,
        "{report:#?}\n{paths:#?}"
    );
    assert_eq!(report.runs[0].verdict, Some(Verdict::Passed));
    // One 404 on the progress route, then the report at every poll.
    let asked_progress = paths.iter().filter(|p| p.ends_with("/progress")).count();
    assert_eq!(asked_progress, 1, "{paths:#?}");
    assert_eq!(seen.reports.load(Ordering::SeqCst), 8, "{paths:#?}");
}
