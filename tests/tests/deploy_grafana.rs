//! The Grafana dashboard (`deploy/grafana/faultline.json`): valid JSON with the panels the
//! issue asks for, and every metric its PromQL refers to is one docs/METRICS.md lists, under
//! the Prometheus name the OpenTelemetry translation rules give it (METRICS.md, intro).
#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers: a panic is the failure report

use std::collections::BTreeSet;

use faultline_tests::deploy::deploy_dir;
use faultline_tests::workspace_root;
use serde_json::Value;

/// `name.with.dots` + unit + instrument → the Prometheus name (docs/METRICS.md's rules).
fn prometheus_name(name: &str, unit: &str, instrument: &str) -> String {
    let mut out = name.replace('.', "_");
    let suffix = match unit {
        "s" => "_seconds",
        "By" => "_bytes",
        "Hz" => "_hertz",
        "%" => "_percent",
        "1" if instrument == "gauge" => "_ratio",
        _ => "",
    };
    if !out.ends_with(suffix) {
        out.push_str(suffix);
    }
    if instrument == "counter" {
        out.push_str("_total");
    }
    out
}

/// Every metric row of docs/METRICS.md (`| `name` | `unit` | instrument | …`), translated.
fn documented_prometheus_names() -> BTreeSet<String> {
    let doc = std::fs::read_to_string(workspace_root().join("docs/METRICS.md")).unwrap();
    let mut names = BTreeSet::new();
    for line in doc.lines() {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        // ["", "`name`", "`unit`", "instrument", …]
        if cells.len() < 5 {
            continue;
        }
        let (Some(name), Some(unit)) = (
            cells[1].strip_prefix('`').and_then(|s| s.strip_suffix('`')),
            cells[2].strip_prefix('`').and_then(|s| s.strip_suffix('`')),
        ) else {
            continue;
        };
        if matches!(cells[3], "counter" | "gauge" | "updowncounter") {
            names.insert(prometheus_name(name, unit, cells[3]));
        }
    }
    names
}

/// Metric names in a PromQL expression: identifiers directly followed by a `{` selector.
/// (Every query in the dashboard selects on `host_name`, so every metric has one.)
fn metric_names(expr: &str) -> Vec<String> {
    let bytes = expr.as_bytes();
    let mut names = Vec::new();
    for (i, _) in expr.match_indices('{') {
        let start = expr[..i]
            .rfind(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
            .map_or(0, |p| p + 1);
        if start < i && bytes[start].is_ascii_alphabetic() {
            names.push(expr[start..i].to_owned());
        }
    }
    names
}

fn panels(v: &Value, out: &mut Vec<Value>) {
    if let Some(ps) = v["panels"].as_array() {
        for p in ps {
            out.push(p.clone());
            panels(p, out);
        }
    }
}

#[test]
fn dashboard_is_valid_json_with_host_container_backup_and_drill_panels() {
    let text = std::fs::read_to_string(deploy_dir().join("grafana/faultline.json")).unwrap();
    let dash: Value = serde_json::from_str(&text).expect("valid JSON");
    assert_eq!(dash["uid"], "faultline-overview");
    let mut all = Vec::new();
    panels(&dash, &mut all);
    let rows: Vec<&str> = all
        .iter()
        .filter(|p| p["type"] == "row")
        .filter_map(|p| p["title"].as_str())
        .collect();
    for row in ["Host", "Containers", "Backups", "Drills", "DR posture"] {
        assert!(rows.contains(&row), "no {row} row in {rows:?}");
    }
    let mut ids = BTreeSet::new();
    for p in &all {
        assert!(ids.insert(p["id"].as_i64().unwrap()), "duplicate panel id");
        if p["type"] != "row" {
            assert!(
                p["targets"].as_array().is_some_and(|t| !t.is_empty()),
                "panel {} has no query",
                p["title"]
            );
        }
    }
}

#[test]
fn the_dr_posture_row_shows_compliance_without_re_deriving_it() {
    let text = std::fs::read_to_string(deploy_dir().join("grafana/faultline.json")).unwrap();
    let dash: Value = serde_json::from_str(&text).unwrap();
    let top = dash["panels"].as_array().unwrap();
    let row = top
        .iter()
        .position(|p| p["type"] == "row" && p["title"] == "DR posture")
        .expect("a DR posture row");
    // The row's panels: those after it up to the next row.
    let queried: BTreeSet<String> = top[row + 1..]
        .iter()
        .take_while(|p| p["type"] != "row")
        .flat_map(|p| p["targets"].as_array().cloned().unwrap_or_default())
        .flat_map(|t| metric_names(t["expr"].as_str().unwrap()))
        .collect();
    for m in [
        "faultline_drill_objective_status",
        "faultline_drill_objective_value_seconds",
        "faultline_backup_restore_pass_rate_ratio",
    ] {
        assert!(
            queried.contains(m),
            "the DR posture row does not query {m}: {queried:?}"
        );
    }
}

#[test]
fn every_metric_the_dashboard_queries_is_in_the_metrics_reference() {
    let text = std::fs::read_to_string(deploy_dir().join("grafana/faultline.json")).unwrap();
    let dash: Value = serde_json::from_str(&text).unwrap();
    let documented = documented_prometheus_names();
    assert!(
        documented.contains("system_cpu_time_seconds_total"),
        "translation broken: {documented:?}"
    );
    let mut all = Vec::new();
    panels(&dash, &mut all);
    let mut used = BTreeSet::new();
    for p in &all {
        for t in p["targets"].as_array().into_iter().flatten() {
            let expr = t["expr"].as_str().unwrap();
            let names = metric_names(expr);
            assert!(!names.is_empty(), "no metric found in {expr:?}");
            used.extend(names);
        }
    }
    // The host variable's query too.
    for v in dash["templating"]["list"].as_array().unwrap() {
        if let Some(q) = v["query"].as_str()
            && let Some(inner) = q.strip_prefix("label_values(")
        {
            used.insert(inner.split(',').next().unwrap().trim().to_owned());
        }
    }
    let missing: Vec<&String> = used.iter().filter(|n| !documented.contains(*n)).collect();
    assert!(
        missing.is_empty(),
        "the dashboard queries metrics docs/METRICS.md does not list: {missing:?}"
    );
    eprintln!("dashboard queries {} documented metrics", used.len());
}

#[test]
fn translation_and_extraction_follow_the_documented_rules() {
    assert_eq!(
        prometheus_name("system.cpu.time", "s", "counter"),
        "system_cpu_time_seconds_total"
    );
    assert_eq!(
        prometheus_name("system.memory.utilization", "1", "gauge"),
        "system_memory_utilization_ratio"
    );
    assert_eq!(
        prometheus_name("system.process.count", "{process}", "updowncounter"),
        "system_process_count"
    );
    assert_eq!(
        prometheus_name("faultline.backup.last_success.time", "s", "gauge"),
        "faultline_backup_last_success_time_seconds"
    );
    assert_eq!(
        metric_names(r#"1 - avg by (h) (rate(a_b_total{x="1"}[5m])) / c:d{y=~"$z"}"#),
        ["a_b_total", "c:d"]
    );
}
