//! The Prometheus text exposition format (version 0.0.4), named per the OpenTelemetry
//! "Prometheus and OpenMetrics Compatibility" specification (section "OTLP Metric points to
//! Prometheus").
//!
//! [`render`] turns a [`Batch`] into the text a Prometheus server scrapes. The translation:
//!
//! - **Names**: the dotted OpenTelemetry name with every character outside `[a-zA-Z0-9_]`
//!   replaced by `_` and runs of `_` collapsed (`system.cpu.time` → `system_cpu_time`). The
//!   specification's regex also allows `:`, but Prometheus reserves colons for recording rules
//!   (and `promtool` lints them), so they become `_` too. A leading digit gets a `_` prefix.
//! - **Units** (UCUM → Prometheus words, see [`unit_suffix`]): `s` → `seconds`, `By` →
//!   `bytes`, `Hz` → `hertz`, `%` → `percent`, `ms` → `milliseconds`, `KiBy` → `kibibytes`, …;
//!   `foo/bar` → `foo_per_bar`; annotations in braces (`{cpu}`, `{packet}`) are dropped; `1`
//!   becomes `ratio` on gauges and nothing elsewhere. The unit is appended as a suffix unless
//!   the name already ends with it, and always before `_total`.
//! - **Types**: monotonic sums (counters) are `counter` and end in `_total` (added once, never
//!   doubled); non-monotonic sums (updowncounters) and gauges are `gauge`.
//! - **Metadata**: `# HELP` from the description (escaped; the OpenTelemetry name stands in
//!   when a description is empty, since Prometheus tooling treats a missing HELP as a defect),
//!   then `# TYPE`. Each metric family is written once, with the points of every resource that
//!   has it, so host and container points of `container.cpu.time` share one family.
//! - **Labels**: attribute keys sanitised like names (`cpu.mode` → `cpu_mode`), a leading digit
//!   gets a `key_` prefix; when two keys sanitise to the same label, their values are joined
//!   with `;` in the lexicographic order of the original keys, as the specification demands.
//!   Label values escape `\`, `"` and newline. Non-string attribute values are written as the
//!   attribute specification says (integers in decimal, booleans as `true`/`false`, arrays as
//!   JSON).
//! - **Resources**: every sample carries `job` (`service.namespace/service.name`, or
//!   `service.name`) and `instance` (`service.instance.id`) of its resource; these win over
//!   point attributes of the same name. The remaining resource attributes go to one
//!   `target_info` gauge (value 1) per distinct `job`/`instance` pair, since the 0.0.4 format has
//!   no info type. A resource after the first that has no `service.instance.id` (a container
//!   the agent observes) is not a target of its own: the specification would give all such
//!   resources the same empty `instance`, so their series would collide. Its samples carry the
//!   first resource's `job`/`instance` and its own attributes as labels (the specification
//!   allows copying resource attributes to labels), the way cAdvisor labels container series.
//! - **Values**: integers exactly; floats in the shortest form that round-trips, `NaN`, `+Inf`
//!   and `-Inf` as Prometheus spells them. No timestamps: the scrape time is the sample time,
//!   and Prometheus treats explicit timestamps on counters as a staleness hazard.
//!
//! Conflicts the specification says to resolve by dropping (two metrics that map to one name
//! with different types, or a metric that maps to `target_info`) drop the later metric and log
//! a warning; the first one seen is kept.
//!
//! Not here: serving the text over HTTP (the agent's `prometheus_endpoint` module) and
//! OpenMetrics-only features (`# UNIT`, `_created`, exemplars), which 0.0.4 cannot carry.

use std::borrow::Cow;
use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::fmt::{Display, Write as _};

use crate::model::{AttrValue, Attributes, Batch, Instrument, Metric, Resource, Value};

/// The `Content-Type` of the output: Prometheus text exposition format 0.0.4.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Name of the metric that carries resource attributes.
const TARGET_INFO: &str = "target_info";

// Resource attributes that become the `job` and `instance` labels instead of `target_info`
// labels.
const SERVICE_NAME: &str = "service.name";
const SERVICE_NAMESPACE: &str = "service.namespace";
const SERVICE_INSTANCE_ID: &str = "service.instance.id";

/// Renders one batch, appending to `out`. See the module documentation for the rules.
pub fn render(batch: &Batch, out: &mut String) {
    render_all(&[batch], out);
}

/// Renders several batches as one scrape (families merged across all their resources),
/// appending to `out`.
pub fn render_all(batches: &[&Batch], out: &mut String) {
    let targets: Vec<Target<'_>> = batches.iter().flat_map(|b| Target::all_of(b)).collect();
    let metrics = batches
        .iter()
        .flat_map(|b| b.resources.iter())
        .enumerate()
        .flat_map(|(target, rm)| rm.metrics.iter().map(move |m| (target, m)));
    let families = group_families(metrics);

    let mut labels = LabelSet::default();
    render_target_info(&targets, &mut labels, out);
    for family in &families {
        if family.members.iter().all(|(_, m)| m.points.is_empty()) {
            continue;
        }
        out.push_str("# HELP ");
        out.push_str(&family.name);
        out.push(' ');
        escape_help(family.help, out);
        out.push_str("\n# TYPE ");
        out.push_str(&family.name);
        out.push_str(if family.counter {
            " counter\n"
        } else {
            " gauge\n"
        });
        for &(target, metric) in &family.members {
            let target = &targets[target];
            for point in &metric.points {
                labels.clear();
                labels.extend_attributes(&point.attributes);
                if target.observed {
                    for (k, v) in target.info_attributes() {
                        labels.push(k, v.to_text());
                    }
                }
                target.add_job_instance(&mut labels);
                write_sample(&family.name, &mut labels, point.value, out);
            }
        }
    }
}

/// The Prometheus metric name of an OpenTelemetry metric: sanitised name, unit suffix, and
/// `_total` for counters.
pub fn metric_name(name: &str, unit: &str, instrument: Instrument) -> String {
    let counter = instrument == Instrument::Counter;
    let mut out = sanitize_metric_name(name);
    if counter && let Some(stem) = out.strip_suffix("_total") {
        out.truncate(stem.len());
    }
    if let Some(unit) = unit_suffix(unit, instrument)
        && !(out == unit || out.ends_with(&format!("_{unit}")))
    {
        push_name_part(&mut out, &unit);
    }
    if counter {
        push_name_part(&mut out, "total");
    }
    out
}

/// The Prometheus unit word(s) for a UCUM unit, or `None` when the unit adds no suffix (empty,
/// only brace annotations, or `1` on a non-gauge).
pub fn unit_suffix(unit: &str, instrument: Instrument) -> Option<String> {
    let unit = strip_annotations(unit);
    let unit = unit.trim();
    let (main, per) = match unit.split_once('/') {
        Some((main, per)) => (main.trim(), per.trim()),
        None => (unit, ""),
    };
    let main = match main {
        "1" if per.is_empty() && instrument == Instrument::Gauge => "ratio",
        "1" => "",
        other => unit_word(other),
    };
    let per = per_unit_word(per);
    let raw = match (main.is_empty(), per.is_empty()) {
        (true, true) => return None,
        (false, true) => main.to_owned(),
        (true, false) => format!("per_{per}"),
        (false, false) => format!("{main}_per_{per}"),
    };
    let word = sanitize(&raw);
    let word = word.trim_matches('_');
    (!word.is_empty()).then(|| word.to_owned())
}

/// A metric name with invalid characters replaced by `_`, runs of `_` collapsed and a `_`
/// prefix before a leading digit.
pub fn sanitize_metric_name(name: &str) -> String {
    let mut out = sanitize(name);
    if out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert(0, '_');
    }
    out
}

/// A label name from an attribute key: invalid characters replaced by `_`, runs of `_`
/// collapsed, `key_` prefixed before a leading digit. `None` for an empty key, which has no
/// valid label form.
pub fn sanitize_label_name(key: &str) -> Option<String> {
    if key.is_empty() {
        return None;
    }
    let out = sanitize(key);
    if out.starts_with(|c: char| c.is_ascii_digit()) {
        return Some(format!("key_{out}"));
    }
    Some(out)
}

/// UCUM base units and prefixed units → Prometheus words (the table of the OpenTelemetry
/// Collector's translator, which implements the specification's "abbreviations to full
/// words"). Unknown units pass through unchanged (and are sanitised by the caller).
fn unit_word(unit: &str) -> &str {
    match unit {
        // Time.
        "d" => "days",
        "h" => "hours",
        "min" => "minutes",
        "s" => "seconds",
        "ms" => "milliseconds",
        "us" => "microseconds",
        "ns" => "nanoseconds",
        // Bytes.
        "By" => "bytes",
        "KiBy" => "kibibytes",
        "MiBy" => "mebibytes",
        "GiBy" => "gibibytes",
        "TiBy" => "tebibytes",
        "KBy" => "kilobytes",
        "MBy" => "megabytes",
        "GBy" => "gigabytes",
        "TBy" => "terabytes",
        // SI.
        "m" => "meters",
        "V" => "volts",
        "A" => "amperes",
        "J" => "joules",
        "W" => "watts",
        "g" => "grams",
        // Other.
        "Cel" => "celsius",
        "Hz" => "hertz",
        "%" => "percent",
        other => other,
    }
}

/// The denominator of a `foo/bar` unit, in the singular.
fn per_unit_word(unit: &str) -> &str {
    match unit {
        "s" => "second",
        "m" => "minute",
        "h" => "hour",
        "d" => "day",
        "w" => "week",
        "mo" => "month",
        "y" => "year",
        other => unit_word(other),
    }
}

/// The unit without its `{…}` annotations.
fn strip_annotations(unit: &str) -> Cow<'_, str> {
    if !unit.contains('{') {
        return Cow::Borrowed(unit);
    }
    let mut out = String::with_capacity(unit.len());
    let mut depth = 0usize;
    for c in unit.chars() {
        match c {
            '{' => depth += 1,
            '}' => depth = depth.saturating_sub(1),
            c if depth == 0 => out.push(c),
            _ => {}
        }
    }
    Cow::Owned(out)
}

/// Replaces every character outside `[a-zA-Z0-9_]` with `_` and collapses runs of `_`.
fn sanitize(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        let c = if c.is_ascii_alphanumeric() { c } else { '_' };
        if c == '_' && out.ends_with('_') {
            continue;
        }
        out.push(c);
    }
    out
}

/// Appends `_part` to a name (without doubling an `_` the name already ends with).
fn push_name_part(name: &mut String, part: &str) {
    if !name.is_empty() && !name.ends_with('_') {
        name.push('_');
    }
    name.push_str(part);
}

/// A resource as Prometheus sees it: `job`, `instance`, and where its other attributes go.
struct Target<'a> {
    job: String,
    instance: Cow<'a, str>,
    resource: &'a Resource,
    /// A resource the agent observes (a container) that has no `service.instance.id` of its
    /// own. It is not a scrape target: its samples carry the `job` and `instance` of the
    /// batch's first resource (the agent's) plus its own attributes as labels, and it gets no
    /// `target_info`. Without this, two containers would share `job`/`instance` and their
    /// series would collide.
    observed: bool,
}

impl<'a> Target<'a> {
    /// The targets of a batch's resources, in order: the first resource (the agent's) is
    /// always a target; later ones are targets when they have a `service.instance.id`, and
    /// observed entities otherwise.
    fn all_of(batch: &'a Batch) -> Vec<Self> {
        let mut resources = batch.resources.iter().map(|rm| rm.resource.as_ref());
        let Some(first) = resources.next() else {
            return Vec::new();
        };
        let host = Target::new(first);
        let mut targets: Vec<Self> = resources
            .map(|resource| {
                if resource.attributes.get(SERVICE_INSTANCE_ID).is_some() {
                    Target::new(resource)
                } else {
                    Target {
                        job: host.job.clone(),
                        instance: host.instance.clone(),
                        resource,
                        observed: true,
                    }
                }
            })
            .collect();
        targets.insert(0, host);
        targets
    }

    fn new(resource: &'a Resource) -> Self {
        let attrs = &resource.attributes;
        let name = attrs.get(SERVICE_NAME).map(AttrValue::to_text);
        let namespace = attrs.get(SERVICE_NAMESPACE).map(AttrValue::to_text);
        let job = match (namespace, name) {
            (Some(ns), Some(name)) if !ns.is_empty() => format!("{ns}/{name}"),
            (_, Some(name)) => name.into_owned(),
            (_, None) => String::new(),
        };
        let instance = attrs
            .get(SERVICE_INSTANCE_ID)
            .map(AttrValue::to_text)
            .unwrap_or_default();
        Self {
            job,
            instance,
            resource,
            observed: false,
        }
    }

    fn add_job_instance<'s>(&'s self, labels: &mut LabelSet<'s>) {
        labels.set("job", &self.job);
        labels.set("instance", &self.instance);
    }

    /// Resource attributes other than the ones `job` and `instance` carry: the `target_info`
    /// labels of a target, the extra sample labels of an observed entity.
    fn info_attributes(&self) -> impl Iterator<Item = (&'a str, &'a AttrValue)> {
        self.resource
            .attributes
            .iter()
            .filter(|(k, _)| !matches!(*k, SERVICE_NAME | SERVICE_NAMESPACE | SERVICE_INSTANCE_ID))
    }
}

/// One output family: a Prometheus name and the metrics of all resources that map to it.
struct Family<'a> {
    name: String,
    counter: bool,
    help: &'a str,
    /// (index into the targets, metric).
    members: Vec<(usize, &'a Metric)>,
}

/// Groups metrics by Prometheus name in first-seen order, dropping (with a warning) metrics
/// whose type conflicts with the family's or whose name is reserved.
fn group_families<'a>(metrics: impl Iterator<Item = (usize, &'a Metric)>) -> Vec<Family<'a>> {
    let mut families: Vec<Family<'a>> = Vec::new();
    let mut index: HashMap<String, usize> = HashMap::new();
    for (target, metric) in metrics {
        let name = metric_name(&metric.name, &metric.unit, metric.instrument);
        let counter = metric.instrument == Instrument::Counter;
        if name == TARGET_INFO {
            tracing::warn!(
                metric = %metric.name,
                "metric maps to the reserved Prometheus name target_info; dropped from /metrics"
            );
            continue;
        }
        match index.entry(name) {
            Entry::Occupied(e) => {
                let family = &mut families[*e.get()];
                if family.counter != counter {
                    tracing::warn!(
                        metric = %metric.name,
                        prometheus_name = %family.name,
                        "metric maps to a Prometheus name already used with another type; dropped from /metrics"
                    );
                    continue;
                }
                family.members.push((target, metric));
            }
            Entry::Vacant(e) => {
                let help = if metric.description.is_empty() {
                    &metric.name
                } else {
                    &metric.description
                };
                families.push(Family {
                    name: e.key().clone(),
                    counter,
                    help,
                    members: vec![(target, metric)],
                });
                e.insert(families.len() - 1);
            }
        }
    }
    families
}

/// Writes the `target_info` family: one sample per distinct `job`/`instance` pair whose
/// resource has attributes beyond the service identity.
fn render_target_info<'a>(targets: &'a [Target<'a>], labels: &mut LabelSet<'a>, out: &mut String) {
    let mut seen: Vec<(&str, &str)> = Vec::new();
    let mut header = false;
    for target in targets {
        if target.observed || target.info_attributes().next().is_none() {
            continue;
        }
        let key = (target.job.as_str(), target.instance.as_ref());
        if seen.contains(&key) {
            continue;
        }
        seen.push(key);
        if !header {
            out.push_str("# HELP target_info Target metadata\n# TYPE target_info gauge\n");
            header = true;
        }
        labels.clear();
        for (k, v) in target.info_attributes() {
            labels.push(k, v.to_text());
        }
        target.add_job_instance(labels);
        write_sample(TARGET_INFO, labels, Value::Int(1), out);
    }
}

/// The labels of one sample, built per sample in a reused buffer.
#[derive(Default)]
struct LabelSet<'a> {
    /// (label name, original key, value).
    entries: Vec<(String, &'a str, Cow<'a, str>)>,
}

impl<'a> LabelSet<'a> {
    fn clear(&mut self) {
        self.entries.clear();
    }

    fn extend_attributes(&mut self, attributes: &'a Attributes) {
        for (k, v) in attributes.iter() {
            self.push(k, v.to_text());
        }
    }

    /// Adds an attribute; keys that have no label form are skipped.
    fn push(&mut self, key: &'a str, value: Cow<'a, str>) {
        if let Some(name) = sanitize_label_name(key) {
            self.entries.push((name, key, value));
        }
    }

    /// Sets a label outright, replacing any attribute that maps to the same name.
    fn set(&mut self, name: &'static str, value: &'a str) {
        self.entries.retain(|(n, _, _)| n != name);
        self.entries
            .push((name.to_owned(), name, Cow::Borrowed(value)));
    }

    /// Sorts by label name then original key, and merges entries sharing a label name into
    /// one whose value is the `;`-joined values.
    fn normalize(&mut self) {
        self.entries.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
        self.entries.dedup_by(|later, kept| {
            if later.0 != kept.0 {
                return false;
            }
            let mut joined = std::mem::take(&mut kept.2).into_owned();
            joined.push(';');
            joined.push_str(&later.2);
            kept.2 = Cow::Owned(joined);
            true
        });
    }
}

/// Writes `name{labels} value\n`.
fn write_sample(name: &str, labels: &mut LabelSet<'_>, value: Value, out: &mut String) {
    labels.normalize();
    out.push_str(name);
    if !labels.entries.is_empty() {
        out.push('{');
        for (i, (label, _, value)) in labels.entries.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(label);
            out.push_str("=\"");
            escape_label_value(value, out);
            out.push('"');
        }
        out.push('}');
    }
    out.push(' ');
    write_value(value, out);
    out.push('\n');
}

/// Writes a sample value the way Prometheus parses it.
fn write_value(value: Value, out: &mut String) {
    match value {
        Value::Int(i) => push_display(out, i),
        Value::Double(d) if d.is_nan() => out.push_str("NaN"),
        Value::Double(d) if d == f64::INFINITY => out.push_str("+Inf"),
        Value::Double(d) if d == f64::NEG_INFINITY => out.push_str("-Inf"),
        // `Debug` is the shortest round-tripping form and switches to exponent notation for
        // very large or small magnitudes (`1e300`), which Prometheus (Go `ParseFloat`) accepts.
        Value::Double(d) => push_display(out, format_args!("{d:?}")),
    }
}

fn push_display(out: &mut String, v: impl Display) {
    // Writing into a `String` cannot fail.
    let _ = write!(out, "{v}");
}

/// HELP text escaping: backslash and newline.
fn escape_help(s: &str, out: &mut String) {
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// Label value escaping: backslash, double quote and newline.
fn escape_label_value(s: &str, out: &mut String) {
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests;
