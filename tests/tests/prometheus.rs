//! The real `faultline run` serving Prometheus: the scrape of a live host is valid text
//! exposition format that `promtool check metrics` accepts, and carries the translated names
//! of the OpenTelemetry "Prometheus and OpenMetrics Compatibility" specification.
//!
//! `promtool` comes from Debian's `prometheus` package (`/usr/bin/promtool`; env `PROMTOOL`
//! names another). Without it the promtool check is skipped with a message, except under
//! CI, where its absence fails the test.
// A test's helpers panic on setup failures the same way its body does.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::io::ErrorKind;
use std::net::{SocketAddr, TcpListener};
use std::process::Stdio;
use std::time::Duration;

use bytes::Bytes;
use faultline_tests::Agent;
use http_body_util::{BodyExt as _, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

/// How long the agent may take to start and finish its first cycles (1 s interval) on a
/// loaded CI machine. Only reached when something is wrong.
const FIRST_DATA_TIMEOUT: Duration = Duration::from_secs(30);

/// Pause between scrape attempts while waiting for data.
const POLL: Duration = Duration::from_millis(100);

/// Names the translation must produce from the agent's host metrics.
const EXPECTED_NAMES: &[&str] = &[
    "system_cpu_time_seconds_total",
    "system_memory_usage_bytes",
    "system_memory_utilization_ratio",
    "target_info",
];

/// promtool findings the specification makes unavoidable. The semantic conventions name
/// several updowncounters `*.count` with a brace unit (`system.process.count`, `{process}`);
/// the specification translates them to `*_count` gauges (unit annotations dropped, no
/// suffix for non-monotonic sums), which promtool reserves for histograms and summaries. Any
/// finding not listed here fails the test.
const SPEC_CONFLICTS: &[&str] = &[
    // Scraped only while a container runs on the host (the container collector's updowncounter
    // `container.pids.count`, `{task}`): the same translation.
    r#"container_pids_count non-histogram and non-summary metrics should not have "_count" suffix"#,
    r#"system_cpu_logical_count non-histogram and non-summary metrics should not have "_count" suffix"#,
    r#"system_cpu_physical_count non-histogram and non-summary metrics should not have "_count" suffix"#,
    r#"system_network_connection_count non-histogram and non-summary metrics should not have "_count" suffix"#,
    r#"system_process_count non-histogram and non-summary metrics should not have "_count" suffix"#,
];

/// promtool's exit code when the text parsed but lint rules found problems.
const PROMTOOL_LINT_EXIT: i32 = 3;

fn free_local_port() -> SocketAddr {
    // Bind port 0, read the port the kernel picked, release it for the agent. Another process
    // could take it in between; on a test machine that is rare enough not to matter.
    let listener = TcpListener::bind("127.0.0.1:0").expect("binding 127.0.0.1:0");
    listener
        .local_addr()
        .expect("local_addr of a bound listener")
}

fn config_yaml(listen: SocketAddr) -> String {
    format!(
        "interval: 1s\n\
         export:\n\
        \x20 otlp:\n\
        \x20   enabled: false\n\
        \x20 prometheus:\n\
        \x20   enabled: true\n\
        \x20   listen: {listen}\n"
    )
}

/// Scrapes `url` until it answers 200 with a body containing `needle`, or panics with the
/// last answer (and the agent's stderr) at the deadline.
async fn scrape_until(agent: &mut Agent, url: &str, needle: &str) -> String {
    let client: Client<HttpConnector, Empty<Bytes>> =
        Client::builder(TokioExecutor::new()).build_http();
    let uri: http::Uri = url.parse().expect("scrape URL");
    let deadline = tokio::time::Instant::now() + FIRST_DATA_TIMEOUT;
    let mut last;
    loop {
        if let Some(status) = agent.exit_status() {
            panic!(
                "agent exited with {status} before serving metrics:\n{}",
                agent.stderr()
            );
        }
        match tokio::time::timeout(POLL * 20, client.get(uri.clone())).await {
            Ok(Ok(response)) => {
                let status = response.status();
                let content_type = response.headers().get(http::header::CONTENT_TYPE).cloned();
                let body = response.into_body().collect().await.map(|b| b.to_bytes());
                match body {
                    Ok(body) => {
                        let body = String::from_utf8_lossy(&body).into_owned();
                        if status == http::StatusCode::OK && body.contains(needle) {
                            assert_eq!(
                                content_type.as_ref().and_then(|v| v.to_str().ok()),
                                Some("text/plain; version=0.0.4; charset=utf-8")
                            );
                            return body;
                        }
                        last = format!("{status}: {body}");
                    }
                    Err(e) => last = format!("{status}, body error: {e}"),
                }
            }
            Ok(Err(e)) => last = format!("request error: {e}"),
            Err(_) => last = String::from("request timed out"),
        }
        if tokio::time::Instant::now() >= deadline {
            panic!(
                "no metrics with {needle:?} at {url} within {FIRST_DATA_TIMEOUT:?}; last: {last}\n\
                 agent stderr:\n{}",
                agent.stderr()
            );
        }
        tokio::time::sleep(POLL).await;
    }
}

/// The outcome of `promtool check metrics` on a file, or `None` when promtool is not
/// installed.
async fn promtool_check(path: &std::path::Path) -> Option<std::process::Output> {
    let promtool = std::env::var_os("PROMTOOL").unwrap_or_else(|| "promtool".into());
    let input = std::fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let spawned = tokio::process::Command::new(&promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::from(input))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn();
    let child = match spawned {
        Ok(child) => child,
        Err(e) if e.kind() == ErrorKind::NotFound => return None,
        Err(e) => panic!("starting {promtool:?}: {e}"),
    };
    let output = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .expect("promtool check metrics did not finish within 60 s")
        .expect("waiting for promtool");
    Some(output)
}

#[tokio::test]
async fn the_scrape_of_a_live_host_passes_promtool_and_uses_the_translated_names() {
    let listen = free_local_port();
    let mut agent = Agent::start(&config_yaml(listen));
    let url = format!("http://{listen}/metrics");

    // The CPU counter comes from the host collector: once it is there, a cycle has finished.
    let text = scrape_until(&mut agent, &url, "system_cpu_time_seconds_total{").await;

    for name in EXPECTED_NAMES {
        let as_sample = format!("\n{name}{{");
        let as_type = format!("# TYPE {name} ");
        assert!(
            text.contains(&as_sample) && text.contains(&as_type),
            "{name} missing from the scrape:\n{text}"
        );
    }
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        assert!(
            line.contains(r#"job=""#) && line.contains(r#"instance=""#),
            "{line}"
        );
    }

    let file = tempfile::Builder::new()
        .prefix("faultline-scrape-")
        .suffix(".prom")
        .tempfile()
        .expect("temporary file for the scrape");
    std::fs::write(file.path(), &text).expect("writing the scrape");

    let Some(output) = promtool_check(file.path()).await else {
        let ci = faultline_tests::in_ci();
        assert!(
            !ci,
            "promtool not found under CI: install Debian's `prometheus` package \
             (provides /usr/bin/promtool) or set PROMTOOL"
        );
        eprintln!(
            "SKIPPED promtool check: promtool not found (install Debian's `prometheus` \
             package, or set PROMTOOL); the name checks above ran"
        );
        return;
    };

    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let findings: Vec<&str> = stdout
        .lines()
        .chain(stderr.lines())
        .filter(|l| !l.trim().is_empty())
        .collect();
    let unexpected: Vec<&str> = findings
        .iter()
        .copied()
        .filter(|f| !SPEC_CONFLICTS.contains(f))
        .collect();
    let code = output.status.code();
    assert!(
        unexpected.is_empty()
            && (code == Some(0) || (code == Some(PROMTOOL_LINT_EXIT) && !findings.is_empty())),
        "promtool check metrics exited {code:?} with findings beyond the documented \
         specification conflicts:\n{}\nscrape saved at {} (kept):\n{text}",
        unexpected.join("\n"),
        file.into_temp_path()
            .keep()
            .map(|p| p.display().to_string())
            .unwrap_or_default(),
    );
}
