//! The CLI surface that needs no backend: `config validate` errors that point at the file,
//! line and field; `config default` producing a config that validates; and `collect --once`
//! printing one cycle as JSON or Prometheus text.

// A test binary: a panic *is* the failure report, so `expect` is how it reports.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::process::Output;
use std::time::Duration;

use faultline_tests::run_cli;

/// One-shot commands on a loaded machine; a hang is a failure, not a slow pass.
const TIMEOUT: Duration = Duration::from_secs(30);

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Write `yaml` to a temp file and run `faultline config validate` on it.
async fn validate(yaml: &str) -> (Output, tempfile::TempDir, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("faultline.yaml");
    std::fs::write(&path, yaml).expect("write config");
    let args: [&OsStr; 3] = ["config".as_ref(), "validate".as_ref(), path.as_os_str()];
    let out = run_cli(args, TIMEOUT).await;
    (out, dir, path.display().to_string())
}

/// Exit 2, and stderr names the file, the line (as `file:line` or `line N`) and the field.
fn assert_config_error(out: &Output, file: &str, line: usize, field: &str) {
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "exit code; stderr:\n{stderr}");
    assert!(
        stderr.contains(file),
        "stderr must name the file {file}:\n{stderr}"
    );
    assert!(
        stderr.contains(&format!("{file}:{line}")) || stderr.contains(&format!("line {line}")),
        "stderr must name line {line}:\n{stderr}"
    );
    assert!(
        stderr.contains(field),
        "stderr must name the field {field}:\n{stderr}"
    );
}

#[tokio::test]
async fn config_validate_unknown_key_names_file_line_and_key() {
    let (out, _dir, file) = validate("interval: 10s\nshutdown_grace: 5s\nintervall: 5s\n").await;
    assert_config_error(&out, &file, 3, "intervall");
}

#[tokio::test]
async fn config_validate_nested_unknown_key_names_file_line_and_key() {
    let (out, _dir, file) = validate("interval: 10s\nexport:\n  otlp:\n    protocl: grpc\n").await;
    assert_config_error(&out, &file, 4, "protocl");
}

#[tokio::test]
async fn config_validate_wrong_type_names_file_line_and_field() {
    let (out, _dir, file) = validate("interval: 10s\nhost:\n  per_cpu: sometimes\n").await;
    assert_config_error(&out, &file, 3, "per_cpu");
}

#[tokio::test]
async fn config_validate_bad_duration_names_file_line_and_field() {
    let (out, _dir, file) = validate("logging: {level: info}\ninterval: ten seconds\n").await;
    assert_config_error(&out, &file, 2, "interval");
}

#[tokio::test]
async fn config_default_output_validates() {
    let out = run_cli(["config", "default"], TIMEOUT).await;
    assert!(
        out.status.success(),
        "config default: {}",
        text(&out.stderr)
    );
    let yaml = text(&out.stdout);
    assert!(
        yaml.contains("interval"),
        "default config should show interval:\n{yaml}"
    );
    let (out, _dir, _) = validate(&yaml).await;
    assert!(
        out.status.success(),
        "`config default` output must validate; stderr:\n{}",
        text(&out.stderr)
    );
}

#[tokio::test]
async fn config_validate_accepts_an_empty_config() {
    // Every key is optional.
    let (out, _dir, _) = validate("{}\n").await;
    assert!(out.status.success(), "stderr:\n{}", text(&out.stderr));
}

/// `faultline --state-dir <tmp> collect --once --format <format>`.
async fn collect_once(format: &str) -> String {
    let state = tempfile::tempdir().expect("tempdir");
    let args: [&OsStr; 6] = [
        "--state-dir".as_ref(),
        state.path().as_os_str(),
        "collect".as_ref(),
        "--once".as_ref(),
        "--format".as_ref(),
        format.as_ref(),
    ];
    let out = run_cli(args, TIMEOUT).await;
    assert!(
        out.status.success(),
        "collect --once --format {format}: {}",
        text(&out.stderr)
    );
    text(&out.stdout)
}

#[tokio::test]
async fn collect_once_json_is_valid_json_with_every_required_host_metric() {
    let stdout = collect_once("json").await;
    let value: serde_json::Value =
        serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("not JSON ({e}):\n{stdout}"));
    /// Every `name` of an object that also has `points` (a metric), at any depth.
    fn metric_names<'a>(v: &'a serde_json::Value, out: &mut BTreeSet<&'a str>) {
        match v {
            serde_json::Value::Array(a) => a.iter().for_each(|x| metric_names(x, out)),
            serde_json::Value::Object(o) => {
                if let (Some(name), true) = (
                    o.get("name").and_then(|n| n.as_str()),
                    o.contains_key("points"),
                ) {
                    out.insert(name);
                }
                o.values().for_each(|x| metric_names(x, out));
            }
            _ => {}
        }
    }
    let mut names = BTreeSet::new();
    metric_names(&value, &mut names);
    let missing = faultline_tests::procfs::missing_host_metrics(&names);
    assert!(
        missing.is_empty(),
        "collect --once --format json lacks {missing:?}; it has {names:?}"
    );
}

#[tokio::test]
async fn collect_once_prometheus_is_exposition_text() {
    let stdout = collect_once("prometheus").await;
    assert!(stdout.contains("# TYPE "), "no # TYPE lines:\n{stdout}");
    // OTel→Prometheus naming: dots to underscores, unit and _total suffixes.
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("system_cpu_time_seconds_total{")),
        "no system_cpu_time_seconds_total samples:\n{stdout}"
    );
    for line in stdout
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        let value = line.rsplit(' ').next().unwrap_or_default();
        assert!(
            value.parse::<f64>().is_ok() || ["NaN", "+Inf", "-Inf"].contains(&value),
            "sample line without a numeric value: {line}"
        );
    }
}
