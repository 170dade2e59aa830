use super::*;
use faultline_exporters::model::{Attributes, MetricDesc, Resource};

const LOAD: MetricDesc = MetricDesc::gauge("system.cpu.load_average.1m", "{thread}", "load");

fn batch(v: f64) -> Batch {
    let mut b = Batch::new(1, Arc::new(Resource::default()), 0);
    b.host().record(&LOAD, Attributes::new().with("x", "y"), v);
    b
}

fn spec(above: Option<f64>, below: Option<f64>) -> MetricProbe {
    MetricProbe {
        name: LOAD.name.into(),
        attributes: Default::default(),
        above,
        below,
    }
}

#[test]
fn metric_thresholds() {
    assert!(evaluate_metric(&spec(None, Some(8.0)), &batch(1.5)).0);
    assert!(!evaluate_metric(&spec(None, Some(1.0)), &batch(1.5)).0);
    assert!(evaluate_metric(&spec(Some(1.0), Some(2.0)), &batch(1.5)).0);
    assert!(!evaluate_metric(&spec(Some(1.5), None), &batch(1.5)).0);
    let mut s = spec(None, Some(8.0));
    s.attributes.insert("x".into(), "z".into());
    let (ok, detail) = evaluate_metric(&s, &batch(1.5));
    assert!(!ok && detail.contains("no point"), "{detail}");
    s.attributes.insert("x".into(), "y".into());
    assert!(evaluate_metric(&s, &batch(1.5)).0);
    s.name = "absent".into();
    assert!(!evaluate_metric(&s, &batch(1.5)).0);
}

#[tokio::test]
async fn tcp_and_command_probes_against_real_peers() {
    let clock = Clock::new();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let p = build(
        &ProbeSpec {
            name: "tcp".into(),
            http: None,
            tcp: Some(TcpProbe {
                address: addr,
                timeout: faultline_chaos::units::HumanDuration(Duration::from_secs(1)),
            }),
            command: None,
            metric: None,
        },
        None,
    );
    let o = p.probe(&clock).await;
    assert!(o.ok, "{o:?}");
    assert!(o.at > 1.0e9 && o.latency < 1.0);
    drop(listener);
    // A port bound but never listening refuses connections, and while it stays bound no
    // other test can listen on it (a released port can be taken by a parallel test).
    let closed = tokio::net::TcpSocket::new_v4().unwrap();
    closed.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let refused = build(
        &ProbeSpec {
            name: "tcp".into(),
            http: None,
            tcp: Some(TcpProbe {
                address: closed.local_addr().unwrap().to_string(),
                timeout: faultline_chaos::units::HumanDuration(Duration::from_secs(1)),
            }),
            command: None,
            metric: None,
        },
        None,
    );
    let o = refused.probe(&clock).await;
    assert!(!o.ok, "{o:?}");
    let c = |run: &[&str], code: i32, output: Option<&str>| {
        build(
            &ProbeSpec {
                name: "cmd".into(),
                http: None,
                tcp: None,
                command: Some(CommandProbe {
                    run: run.iter().map(|s| (*s).to_owned()).collect(),
                    exit_code: code,
                    output: output.map(str::to_owned),
                    timeout: faultline_chaos::units::HumanDuration(Duration::from_secs(5)),
                }),
                metric: None,
            },
            None,
        )
    };
    assert!(
        c(&["echo", "accepting"], 0, Some("accept"))
            .probe(&clock)
            .await
            .ok
    );
    assert!(
        !c(&["echo", "nope"], 0, Some("accept"))
            .probe(&clock)
            .await
            .ok
    );
    assert!(c(&["false"], 1, None).probe(&clock).await.ok);
    let missing = c(&["/nonexistent/x"], 0, None).probe(&clock).await;
    assert!(
        !missing.ok && missing.detail.contains("cannot run"),
        "{missing:?}"
    );
}

#[test]
fn clock_is_unix_seconds_and_monotonic() {
    let c = Clock::new();
    let a = c.now();
    let b = c.now();
    assert!(b >= a && a > 1.6e9);
    let i = Instant::now();
    assert!((c.at(i) - c.now()).abs() < 0.05);
}
