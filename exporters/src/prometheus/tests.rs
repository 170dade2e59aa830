use std::sync::Arc;

use super::*;
use crate::model::{MetricDesc, ResourceMetrics};

const CPU_TIME: MetricDesc = MetricDesc::counter(
    "system.cpu.time",
    "s",
    "Seconds each logical CPU spent on each mode",
);
const MEM_USAGE: MetricDesc = MetricDesc::updown(
    "system.memory.usage",
    "By",
    "Reports memory in use by state.",
);
const MEM_UTIL: MetricDesc = MetricDesc::gauge(
    "system.memory.utilization",
    "1",
    "Memory utilization by state.",
);
const CONTAINER_CPU: MetricDesc =
    MetricDesc::counter("container.cpu.time", "s", "Total CPU time consumed");

fn host_resource() -> Arc<Resource> {
    let mut attributes = Attributes::new()
        .with("service.name", "faultline")
        .with("service.instance.id", "a1b2")
        .with("host.name", "node-1");
    attributes.push("host.cpu.count", 4i64);
    Arc::new(Resource { attributes })
}

fn render_to_string(batch: &Batch) -> String {
    let mut out = String::new();
    render(batch, &mut out);
    out
}

fn lines_starting<'a>(text: &'a str, prefix: &str) -> Vec<&'a str> {
    text.lines().filter(|l| l.starts_with(prefix)).collect()
}

#[test]
fn dots_and_invalid_characters_become_single_underscores() {
    assert_eq!(sanitize_metric_name("system.cpu.time"), "system_cpu_time");
    assert_eq!(sanitize_metric_name("a..b/c-d"), "a_b_c_d");
    assert_eq!(sanitize_metric_name("a__b"), "a_b");
    assert_eq!(sanitize_metric_name("http:requests"), "http_requests");
    assert_eq!(sanitize_metric_name("héllo"), "h_llo");
    assert_eq!(sanitize_metric_name("9lives"), "_9lives");
}

#[test]
fn ucum_units_become_prometheus_words() {
    let g = Instrument::Gauge;
    for (ucum, word) in [
        ("s", "seconds"),
        ("ms", "milliseconds"),
        ("By", "bytes"),
        ("KiBy", "kibibytes"),
        ("MiBy", "mebibytes"),
        ("Hz", "hertz"),
        ("%", "percent"),
        ("Cel", "celsius"),
        ("By/s", "bytes_per_second"),
        ("{packet}/s", "per_second"),
        ("widgets", "widgets"),
    ] {
        assert_eq!(unit_suffix(ucum, g).as_deref(), Some(word), "unit {ucum}");
    }
}

#[test]
fn brace_annotations_and_empty_units_add_no_suffix() {
    for unit in ["", "{cpu}", "{packet}", " {a}{b} "] {
        assert_eq!(
            unit_suffix(unit, Instrument::Counter),
            None,
            "unit {unit:?}"
        );
    }
    assert_eq!(
        metric_name(
            "system.cpu.logical.count",
            "{cpu}",
            Instrument::UpDownCounter
        ),
        "system_cpu_logical_count"
    );
}

#[test]
fn unit_one_is_ratio_on_gauges_only() {
    assert_eq!(
        metric_name("system.memory.utilization", "1", Instrument::Gauge),
        "system_memory_utilization_ratio"
    );
    assert_eq!(
        metric_name("x.fraction", "1", Instrument::UpDownCounter),
        "x_fraction"
    );
    assert_eq!(
        metric_name("x.events", "1", Instrument::Counter),
        "x_events_total"
    );
}

#[test]
fn counters_get_total_once_after_the_unit() {
    assert_eq!(
        metric_name("system.cpu.time", "s", Instrument::Counter),
        "system_cpu_time_seconds_total"
    );
    assert_eq!(
        metric_name("requests.total", "s", Instrument::Counter),
        "requests_seconds_total"
    );
    assert_eq!(
        metric_name("errors_total", "{error}", Instrument::Counter),
        "errors_total"
    );
    assert_eq!(
        metric_name("faultline.export.sent", "{point}", Instrument::Counter),
        "faultline_export_sent_total"
    );
}

#[test]
fn a_unit_already_at_the_end_of_the_name_is_not_repeated() {
    assert_eq!(
        metric_name("process.uptime_seconds", "s", Instrument::Gauge),
        "process_uptime_seconds"
    );
    assert_eq!(
        metric_name("disk.bytes", "By", Instrument::Counter),
        "disk_bytes_total"
    );
    // Only a whole trailing word counts: `megabytes` does not contain the unit `bytes`.
    assert_eq!(
        metric_name("x.megabytes", "By", Instrument::Gauge),
        "x_megabytes_bytes"
    );
    assert_eq!(metric_name("name.", "s", Instrument::Gauge), "name_seconds");
}

#[test]
fn updowncounters_and_gauges_are_gauges_and_counters_are_counters() {
    let mut b = Batch::new(1, host_resource(), 0);
    b.host()
        .record(&CPU_TIME, Attributes::new().with("cpu.mode", "user"), 10u64);
    b.host().record(
        &MEM_USAGE,
        Attributes::new().with("system.memory.state", "used"),
        4096u64,
    );
    b.host().record(&MEM_UTIL, Attributes::new(), 0.25);
    let text = render_to_string(&b);
    assert!(
        text.contains("# TYPE system_cpu_time_seconds_total counter\n"),
        "{text}"
    );
    assert!(
        text.contains("# TYPE system_memory_usage_bytes gauge\n"),
        "{text}"
    );
    assert!(
        text.contains("# TYPE system_memory_utilization_ratio gauge\n"),
        "{text}"
    );
}

#[test]
fn help_comes_from_the_description_escaped_or_from_the_name_when_empty() {
    const ODD: MetricDesc = MetricDesc::gauge("odd", "", "back\\slash\nnewline \"quoted\"");
    const BARE: MetricDesc = MetricDesc::gauge("bare.metric", "", "");
    let mut b = Batch::new(1, Arc::new(Resource::default()), 0);
    b.host().record(&ODD, Attributes::new(), 1i64);
    b.host().record(&BARE, Attributes::new(), 1i64);
    let text = render_to_string(&b);
    assert!(
        text.contains("# HELP odd back\\\\slash\\nnewline \"quoted\"\n"),
        "{text}"
    );
    assert!(text.contains("# HELP bare_metric bare.metric\n"), "{text}");
}

#[test]
fn label_names_are_sanitised_and_leading_digits_get_a_key_prefix() {
    assert_eq!(sanitize_label_name("cpu.mode").as_deref(), Some("cpu_mode"));
    assert_eq!(sanitize_label_name("a..b").as_deref(), Some("a_b"));
    assert_eq!(sanitize_label_name("0day").as_deref(), Some("key_0day"));
    assert_eq!(sanitize_label_name("_private").as_deref(), Some("_private"));
    assert_eq!(
        sanitize_label_name("__reserved").as_deref(),
        Some("_reserved")
    );
    assert_eq!(sanitize_label_name(""), None);
}

#[test]
fn label_values_escape_backslash_quote_and_newline() {
    let mut out = String::new();
    escape_label_value("a\\b\"c\nd", &mut out);
    assert_eq!(out, "a\\\\b\\\"c\\nd");
}

#[test]
fn attributes_mapping_to_one_label_are_joined_in_key_order() {
    let mut b = Batch::new(1, Arc::new(Resource::default()), 0);
    let mut attrs = Attributes::new();
    attrs.push("foo_bar", "second");
    attrs.push("foo.bar", "first");
    b.host().record(&MEM_UTIL, attrs, 0.5);
    let text = render_to_string(&b);
    // "foo.bar" < "foo_bar" lexicographically.
    assert!(
        text.contains(
            r#"system_memory_utilization_ratio{foo_bar="first;second",instance="",job=""} 0.5"#
        ),
        "{text}"
    );
}

#[test]
fn non_string_attribute_values_use_the_attribute_spec_text() {
    let mut b = Batch::new(1, Arc::new(Resource::default()), 0);
    let mut attrs = Attributes::new().with("n", 3i64).with("ok", true);
    attrs.push("tags", AttrValue::StrArray(vec!["a".into(), "b".into()]));
    b.host().record(&MEM_UTIL, attrs, 1i64);
    let text = render_to_string(&b);
    assert!(
        text.contains(r#"n="3",ok="true",tags="[\"a\",\"b\"]"}"#),
        "{text}"
    );
}

#[test]
fn every_sample_carries_job_and_instance_of_its_resource() {
    let mut b = Batch::new(1, host_resource(), 0);
    b.host()
        .record(&CPU_TIME, Attributes::new().with("cpu.mode", "user"), 10u64);
    let text = render_to_string(&b);
    assert!(
        text.contains(
            r#"system_cpu_time_seconds_total{cpu_mode="user",instance="a1b2",job="faultline"} 10"#
        ),
        "{text}"
    );
}

#[test]
fn job_includes_the_service_namespace_when_set() {
    let r = Resource {
        attributes: Attributes::new()
            .with("service.namespace", "infra")
            .with("service.name", "faultline"),
    };
    let t = Target::new(&r);
    assert_eq!(t.job, "infra/faultline");
    assert_eq!(t.instance, "");
}

#[test]
fn resource_job_and_instance_win_over_point_attributes() {
    let mut b = Batch::new(1, host_resource(), 0);
    b.host()
        .record(&MEM_UTIL, Attributes::new().with("job", "mine"), 1i64);
    let text = render_to_string(&b);
    assert!(
        text.contains(r#"{instance="a1b2",job="faultline"} 1"#),
        "{text}"
    );
    assert!(!text.contains("mine"), "{text}");
}

#[test]
fn target_info_carries_resource_attributes_but_not_the_service_identity() {
    let mut b = Batch::new(1, host_resource(), 0);
    b.host().record(&MEM_UTIL, Attributes::new(), 0.5);
    let text = render_to_string(&b);
    assert_eq!(
        lines_starting(&text, "# TYPE target_info"),
        ["# TYPE target_info gauge"]
    );
    assert_eq!(
        lines_starting(&text, "target_info"),
        [r#"target_info{host_cpu_count="4",host_name="node-1",instance="a1b2",job="faultline"} 1"#]
    );
}

#[test]
fn target_info_is_written_once_per_job_and_instance_and_not_for_empty_resources() {
    let mut b = Batch::new(1, host_resource(), 0);
    b.add_resource(host_resource(), 0);
    b.add_resource(Arc::new(Resource::default()), 0);
    b.add_resource(
        Arc::new(Resource {
            attributes: Attributes::new().with("service.name", "faultline"),
        }),
        0,
    );
    let text = render_to_string(&b);
    assert_eq!(lines_starting(&text, "target_info").len(), 1, "{text}");
}

#[test]
fn containers_without_an_instance_id_carry_the_agent_identity_and_their_attributes() {
    let mut b = Batch::new(1, host_resource(), 0);
    for id in ["c1", "c2"] {
        let r = Resource {
            attributes: Attributes::new().with("container.id", id),
        };
        b.add_resource(Arc::new(r), 0)
            .record(&CONTAINER_CPU, Attributes::new(), 5u64);
    }
    let text = render_to_string(&b);
    let samples = lines_starting(&text, "container_cpu_time_seconds_total{");
    assert_eq!(
        samples,
        [
            r#"container_cpu_time_seconds_total{container_id="c1",instance="a1b2",job="faultline"} 5"#,
            r#"container_cpu_time_seconds_total{container_id="c2",instance="a1b2",job="faultline"} 5"#,
        ],
        "{text}"
    );
    // Only the agent's own target_info: the containers are not targets.
    assert_eq!(lines_starting(&text, "target_info{").len(), 1, "{text}");
}

#[test]
fn a_family_shared_by_several_resources_is_written_once() {
    let mut b = Batch::new(1, host_resource(), 0);
    b.host().record(&CONTAINER_CPU, Attributes::new(), 1u64);
    for id in ["c1", "c2"] {
        let r = Arc::new(Resource {
            attributes: Attributes::new()
                .with("service.name", "faultline")
                .with("service.instance.id", id),
        });
        let rm: &mut ResourceMetrics = b.add_resource(r, 0);
        rm.record(
            &CONTAINER_CPU,
            Attributes::new().with("cpu.mode", "user"),
            5u64,
        );
    }
    let text = render_to_string(&b);
    assert_eq!(
        lines_starting(&text, "# HELP container_cpu_time_seconds_total").len(),
        1
    );
    assert_eq!(
        lines_starting(&text, "# TYPE container_cpu_time_seconds_total").len(),
        1
    );
    assert_eq!(
        lines_starting(&text, "container_cpu_time_seconds_total").len(),
        3,
        "{text}"
    );
    assert!(
        text.contains(r#"{cpu_mode="user",instance="c2",job="faultline"} 5"#),
        "{text}"
    );
}

#[test]
fn a_metric_whose_name_collides_with_another_type_is_dropped() {
    const AS_COUNTER: MetricDesc = MetricDesc::counter("x", "", "counter x");
    const AS_GAUGE: MetricDesc = MetricDesc::gauge("x.total", "", "gauge x");
    const RESERVED: MetricDesc = MetricDesc::gauge("target.info", "", "not resource info");
    let mut b = Batch::new(1, Arc::new(Resource::default()), 0);
    b.host().record(&AS_COUNTER, Attributes::new(), 1i64);
    b.host().record(&AS_GAUGE, Attributes::new(), 2i64);
    b.host().record(&RESERVED, Attributes::new(), 3i64);
    let text = render_to_string(&b);
    assert_eq!(
        text,
        "# HELP x_total counter x\n# TYPE x_total counter\nx_total{instance=\"\",job=\"\"} 1\n"
    );
}

#[test]
fn values_are_written_as_prometheus_parses_them() {
    let cases = [
        (Value::Int(42), "42"),
        (Value::Int(-7), "-7"),
        (Value::Double(0.25), "0.25"),
        (Value::Double(1.0), "1.0"),
        (Value::Double(1e300), "1e300"),
        (Value::Double(1.5e-10), "1.5e-10"),
        (Value::Double(f64::NAN), "NaN"),
        (Value::Double(f64::INFINITY), "+Inf"),
        (Value::Double(f64::NEG_INFINITY), "-Inf"),
    ];
    for (value, text) in cases {
        let mut out = String::new();
        write_value(value, &mut out);
        assert_eq!(out, text);
    }
}

/// Reads back one label value as Prometheus does: `\\`, `\"` and `\n` escapes up to
/// the closing quote.
fn unescape_label(s: &str) -> Option<(String, &str)> {
    let mut out = String::new();
    let mut chars = s.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Some((out, &s[i + 1..])),
            '\\' => match chars.next()?.1 {
                'n' => out.push('\n'),
                c @ ('\\' | '"') => out.push(c),
                _ => return None,
            },
            c => out.push(c),
        }
    }
    None
}

proptest::proptest! {
    /// Any value (NaN, ±inf, subnormal, huge, any i64) and any label text (quotes,
    /// backslashes, newlines, any Unicode) is written so that a Prometheus parser reads
    /// back the same value and the same text, on one line.
    #[test]
    fn any_value_and_label_text_reads_back(
        double in proptest::num::f64::ANY,
        int in proptest::num::i64::ANY,
        as_int in proptest::bool::ANY,
        label in "\\PC*|[\\\\\"\n a-z]*",
    ) {
        use proptest::test_runner::TestCaseError;
        let value = if as_int { Value::Int(int) } else { Value::Double(double) };
        let mut b = Batch::new(1, Arc::new(Resource::default()), 0);
        b.host().record(&MEM_UTIL, Attributes::new().with("k", label.clone()), value);
        let text = render_to_string(&b);
        let samples: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
        proptest::prop_assert_eq!(samples.len(), 1, "{}", text);
        let line = samples[0];
        let at = line.find("k=\"").ok_or_else(|| TestCaseError::fail(line.to_owned()))?;
        let (read_label, rest) = unescape_label(&line[at + 3..])
            .ok_or_else(|| TestCaseError::fail(line.to_owned()))?;
        proptest::prop_assert_eq!(&read_label, &label);
        let v = rest.rsplit_once(' ').map(|(_, v)| v).unwrap_or_default();
        match value {
            Value::Int(i) => proptest::prop_assert_eq!(v.parse::<i64>().ok(), Some(i)),
            Value::Double(d) if d.is_nan() => proptest::prop_assert_eq!(v, "NaN"),
            Value::Double(d) => {
                let back = match v {
                    "+Inf" => f64::INFINITY,
                    "-Inf" => f64::NEG_INFINITY,
                    v => v
                        .parse::<f64>()
                        .map_err(|e| TestCaseError::fail(format!("{v}: {e}")))?,
                };
                proptest::prop_assert_eq!(back.to_bits(), d.to_bits());
            }
        }
    }
}

#[test]
fn samples_have_no_timestamps() {
    let mut b = Batch::new(1_700_000_000_000_000_000, host_resource(), 1);
    b.host().record(&CPU_TIME, Attributes::new(), 10u64);
    let text = render_to_string(&b);
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        // name{labels} value: nothing after the value.
        let after_labels = line.rsplit_once('}').map_or(line, |(_, rest)| rest);
        assert_eq!(after_labels.split_whitespace().count(), 1, "{line}");
    }
}

#[test]
fn empty_metrics_write_no_family() {
    let mut b = Batch::new(1, Arc::new(Resource::default()), 0);
    b.host().metrics.push(Metric {
        name: "empty".into(),
        unit: "".into(),
        description: "d".into(),
        instrument: Instrument::Gauge,
        points: Vec::new(),
    });
    assert_eq!(render_to_string(&b), "");
}

#[test]
fn render_all_merges_families_across_batches() {
    let mut a = Batch::new(1, host_resource(), 0);
    a.host()
        .record(&MEM_UTIL, Attributes::new().with("s", "a"), 1i64);
    let mut b = Batch::new(1, Arc::new(Resource::default()), 0);
    b.host()
        .record(&MEM_UTIL, Attributes::new().with("s", "b"), 2i64);
    let mut out = String::new();
    render_all(&[&a, &b], &mut out);
    assert_eq!(
        lines_starting(&out, "# TYPE system_memory_utilization_ratio").len(),
        1
    );
    assert_eq!(
        lines_starting(&out, "system_memory_utilization_ratio").len(),
        2,
        "{out}"
    );
}
