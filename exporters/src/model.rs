//! The telemetry model every collector writes into and every output reads.
//!
//! A collection cycle fills one [`Batch`]: a timestamp plus one [`ResourceMetrics`] per
//! resource (the host first, later one per container). Collectors record points through a
//! static [`MetricDesc`], so name, unit, instrument and description are written once, next to
//! the collector, and can be listed for the metrics reference. The model is deliberately
//! plain data: the OTLP encoder, the Prometheus renderer and the JSON printer each walk it.
//!
//! Not here: aggregation (collectors read cumulative kernel counters; nothing is summed in the
//! agent) and transport (see [`crate::otlp`]).

use std::borrow::Cow;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;
use serde::ser::{SerializeMap, Serializer};

/// How a metric's points are to be read by a backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Instrument {
    /// Monotonic cumulative sum (semantic conventions: `counter`).
    Counter,
    /// Non-monotonic cumulative sum (semantic conventions: `updowncounter`).
    #[serde(rename = "updowncounter")]
    UpDownCounter,
    /// Last value.
    Gauge,
}

impl Instrument {
    /// The name the semantic-conventions registry uses for this instrument.
    pub fn semconv_name(self) -> &'static str {
        match self {
            Instrument::Counter => "counter",
            Instrument::UpDownCounter => "updowncounter",
            Instrument::Gauge => "gauge",
        }
    }
}

/// A metric's identity, declared once as a `const` beside the collector that records it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MetricDesc {
    /// Dotted OpenTelemetry name, for example `system.cpu.time`.
    pub name: &'static str,
    /// UCUM unit as the semantic conventions spell it (`s`, `By`, `{cpu}`, `1`).
    pub unit: &'static str,
    /// One-line description; becomes OTLP `description` and Prometheus `# HELP`.
    pub description: &'static str,
    /// Instrument kind.
    pub instrument: Instrument,
}

impl MetricDesc {
    /// A monotonic cumulative counter.
    pub const fn counter(
        name: &'static str,
        unit: &'static str,
        description: &'static str,
    ) -> Self {
        Self {
            name,
            unit,
            description,
            instrument: Instrument::Counter,
        }
    }
    /// A non-monotonic cumulative sum.
    pub const fn updown(name: &'static str, unit: &'static str, description: &'static str) -> Self {
        Self {
            name,
            unit,
            description,
            instrument: Instrument::UpDownCounter,
        }
    }
    /// A gauge.
    pub const fn gauge(name: &'static str, unit: &'static str, description: &'static str) -> Self {
        Self {
            name,
            unit,
            description,
            instrument: Instrument::Gauge,
        }
    }
}

/// Attribute text: `'static` data (enum values such as `cpu.mode=user`) or a shared copy (names
/// read from the kernel), so that putting a device's name on each of its points, and copying
/// a base set of attributes into each point, allocates nothing.
/// Two texts are equal when their characters are, however each is held.
#[derive(Clone, Debug)]
pub enum Text {
    /// Borrowed for the program's life.
    Static(&'static str),
    /// Reference-counted.
    Shared(Arc<str>),
}

impl std::ops::Deref for Text {
    type Target = str;
    fn deref(&self) -> &str {
        match self {
            Text::Static(s) => s,
            Text::Shared(s) => s,
        }
    }
}

impl PartialEq for Text {
    fn eq(&self, other: &Self) -> bool {
        **self == **other
    }
}

impl Eq for Text {}

impl std::fmt::Display for Text {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self)
    }
}

impl From<&'static str> for Text {
    fn from(v: &'static str) -> Self {
        Text::Static(v)
    }
}

impl From<String> for Text {
    fn from(v: String) -> Self {
        Text::Shared(v.into())
    }
}

impl Text {
    /// Text copied once from `v`, to be shared by every point that carries it.
    pub fn shared(v: &str) -> Self {
        Text::Shared(v.into())
    }
}

/// An attribute value. Strings are [`Text`]: `'static` or shared, never copied per point.
#[derive(Clone, Debug, PartialEq)]
pub enum AttrValue {
    /// A string.
    Str(Text),
    /// A signed integer.
    Int(i64),
    /// A float.
    Double(f64),
    /// A boolean.
    Bool(bool),
    /// A list of strings (for example `container.image.tags`).
    StrArray(Vec<String>),
}

impl From<&'static str> for AttrValue {
    fn from(v: &'static str) -> Self {
        AttrValue::Str(Text::Static(v))
    }
}
impl From<String> for AttrValue {
    fn from(v: String) -> Self {
        AttrValue::Str(v.into())
    }
}
impl From<Text> for AttrValue {
    fn from(v: Text) -> Self {
        AttrValue::Str(v)
    }
}
impl From<i64> for AttrValue {
    fn from(v: i64) -> Self {
        AttrValue::Int(v)
    }
}
impl From<bool> for AttrValue {
    fn from(v: bool) -> Self {
        AttrValue::Bool(v)
    }
}
impl From<f64> for AttrValue {
    fn from(v: f64) -> Self {
        AttrValue::Double(v)
    }
}

impl AttrValue {
    /// The value as text, the way Prometheus labels and logs show it.
    pub fn to_text(&self) -> Cow<'_, str> {
        match self {
            AttrValue::Str(s) => Cow::Borrowed(s),
            AttrValue::Int(i) => Cow::Owned(i.to_string()),
            AttrValue::Double(d) => Cow::Owned(d.to_string()),
            AttrValue::Bool(b) => Cow::Borrowed(if *b { "true" } else { "false" }),
            AttrValue::StrArray(v) => {
                Cow::Owned(serde_json::to_string(v).unwrap_or_else(|_| String::from("[]")))
            }
        }
    }
}

impl Serialize for AttrValue {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            AttrValue::Str(v) => s.serialize_str(v),
            AttrValue::Int(v) => s.serialize_i64(*v),
            AttrValue::Double(v) => s.serialize_f64(*v),
            AttrValue::Bool(v) => s.serialize_bool(*v),
            AttrValue::StrArray(v) => v.serialize(s),
        }
    }
}

/// An ordered list of key/value attributes. Order is kept as recorded; keys are unique by
/// construction in collectors (no de-duplication is done here).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Attributes(pub Vec<(Cow<'static, str>, AttrValue)>);

impl Attributes {
    /// No attributes.
    pub const fn new() -> Self {
        Attributes(Vec::new())
    }
    /// Adds one attribute and returns self, for chaining.
    #[must_use]
    pub fn with(mut self, key: &'static str, value: impl Into<AttrValue>) -> Self {
        self.push(key, value);
        self
    }
    /// Attributes from a fixed list, allocated once at their exact size (a chain of
    /// [`Self::with`] reallocates at each step).
    pub fn of<const N: usize>(pairs: [(&'static str, AttrValue); N]) -> Self {
        let mut v = Vec::with_capacity(N);
        v.extend(pairs.map(|(k, value)| (Cow::Borrowed(k), value)));
        Attributes(v)
    }
    /// A copy of these attributes with one more, allocated once at its exact size.
    #[must_use]
    pub fn plus(&self, key: &'static str, value: impl Into<AttrValue>) -> Self {
        let mut v = Vec::with_capacity(self.0.len() + 1);
        v.extend(self.0.iter().cloned());
        v.push((Cow::Borrowed(key), value.into()));
        Attributes(v)
    }
    /// Adds one attribute in place (key may be owned, for user-configured attributes).
    pub fn push(&mut self, key: impl Into<Cow<'static, str>>, value: impl Into<AttrValue>) {
        // Points carry one to three attributes: grow by one instead of Vec's minimum of four
        // entries, which at 1000 containers is megabytes of empty slots per batch.
        self.0.reserve_exact(1);
        self.0.push((key.into(), value.into()));
    }
    /// Looks a value up by key.
    pub fn get(&self, key: &str) -> Option<&AttrValue> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }
    /// Iterates over the pairs.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &AttrValue)> {
        self.0.iter().map(|(k, v)| (k.as_ref(), v))
    }
    /// Number of attributes.
    pub fn len(&self) -> usize {
        self.0.len()
    }
    /// True when there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl Serialize for Attributes {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in &self.0 {
            map.serialize_entry(k.as_ref(), v)?;
        }
        map.end()
    }
}

/// A point's numeric value.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Value {
    /// Integer (counts, bytes).
    Int(i64),
    /// Float (seconds, ratios).
    Double(f64),
}

impl Value {
    /// The value as a float, for rendering.
    pub fn as_f64(self) -> f64 {
        match self {
            Value::Int(i) => i as f64,
            Value::Double(d) => d,
        }
    }
}

impl From<i64> for Value {
    fn from(v: i64) -> Self {
        Value::Int(v)
    }
}
impl From<u64> for Value {
    fn from(v: u64) -> Self {
        // Kernel counters fit in i64 for any realistic uptime; saturate rather than wrap.
        Value::Int(i64::try_from(v).unwrap_or(i64::MAX))
    }
}
impl From<f64> for Value {
    fn from(v: f64) -> Self {
        Value::Double(v)
    }
}

/// One data point.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Point {
    /// Point attributes (for example `cpu.mode`).
    pub attributes: Attributes,
    /// The value.
    pub value: Value,
    /// Start of the cumulative interval, Unix nanoseconds; `0` for gauges.
    #[serde(rename = "start_time_unix_nano", skip_serializing_if = "is_zero")]
    pub start_unix_nanos: u64,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

/// All points of one metric within one resource.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Metric {
    /// Dotted name.
    pub name: Cow<'static, str>,
    /// UCUM unit.
    pub unit: Cow<'static, str>,
    /// Description.
    pub description: Cow<'static, str>,
    /// Instrument kind.
    #[serde(rename = "type")]
    pub instrument: Instrument,
    /// The points.
    pub points: Vec<Point>,
}

impl Metric {
    /// The same metric with no points and room for `capacity`.
    fn without_points(&self, capacity: usize) -> Self {
        Self {
            name: self.name.clone(),
            unit: self.unit.clone(),
            description: self.description.clone(),
            instrument: self.instrument,
            points: Vec::with_capacity(capacity),
        }
    }
}

/// The resource a set of metrics describes (the host, a container).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Resource {
    /// Resource attributes (`service.name`, `host.name`, `container.id`, …).
    pub attributes: Attributes,
}

/// Metrics of one resource in one cycle.
#[derive(Clone, Debug, Serialize)]
pub struct ResourceMetrics {
    /// The resource, shared between cycles.
    pub resource: Arc<Resource>,
    /// Default start time for cumulative points of this resource (Unix ns): boot time for
    /// kernel counters, container start for cgroup counters.
    #[serde(skip)]
    pub default_start_unix_nanos: u64,
    /// The metrics, in first-recorded order.
    pub metrics: Vec<Metric>,
    /// The metric the last point went to: the next point's usually goes there too, or to the
    /// one after it when the metrics were laid out from the last cycle ([`Self::lay_out`]).
    #[serde(skip)]
    last: usize,
}

impl ResourceMetrics {
    /// Empty metrics for `resource`, whose counters started at `start_unix_nanos`.
    pub fn new(resource: Arc<Resource>, start_unix_nanos: u64) -> Self {
        Self {
            resource,
            default_start_unix_nanos: start_unix_nanos,
            metrics: Vec::new(),
            last: 0,
        }
    }

    /// Lays out, before any point is recorded, the metrics `shape` names, in its order and
    /// each with room for its number of points: the last cycle's ([`Self::shape_into`]), so
    /// that a cycle recording what the last one did grows no vector. A metric that gets no
    /// point is dropped by [`Self::drop_empty`].
    pub fn lay_out(&mut self, shape: &[(Metric, usize)]) {
        self.metrics.reserve_exact(shape.len());
        self.metrics
            .extend(shape.iter().map(|(m, n)| m.without_points(*n)));
    }

    /// Drops the metrics that got no point (laid out from a last cycle that had them).
    pub fn drop_empty(&mut self) {
        self.metrics.retain(|m| !m.points.is_empty());
        self.last = 0;
    }

    /// This resource's metrics without their points, with the number of points of each, into
    /// `shape` (cleared first), for the next cycle's [`Self::lay_out`].
    pub fn shape_into(&self, shape: &mut Vec<(Metric, usize)>) {
        shape.clear();
        shape.extend(
            self.metrics
                .iter()
                .map(|m| (m.without_points(0), m.points.len())),
        );
    }

    /// Records a point whose cumulative interval starts at the resource's default start.
    pub fn record(
        &mut self,
        desc: &'static MetricDesc,
        attributes: Attributes,
        value: impl Into<Value>,
    ) {
        let start = self.default_start_unix_nanos;
        self.record_since(desc, attributes, value, start);
    }

    /// Records a point with an explicit start time (ignored for gauges).
    pub fn record_since(
        &mut self,
        desc: &'static MetricDesc,
        attributes: Attributes,
        value: impl Into<Value>,
        start_unix_nanos: u64,
    ) {
        let start_unix_nanos = if desc.instrument == Instrument::Gauge {
            0
        } else {
            start_unix_nanos
        };
        let point = Point {
            attributes,
            value: value.into(),
            start_unix_nanos,
        };
        self.metric_mut(desc).points.push(point);
    }

    fn metric_mut(&mut self, desc: &'static MetricDesc) -> &mut Metric {
        // Collectors record a metric's points one after another, so the last metric is the
        // usual hit, and the one after it where the metrics were laid out from the last
        // cycle; otherwise a linear scan over a few dozen names.
        let is = |m: &Metric| m.name == desc.name;
        let hit = [self.last, self.last + 1]
            .into_iter()
            .find(|&i| self.metrics.get(i).is_some_and(is))
            .or_else(|| self.metrics.iter().rposition(is));
        let idx = match hit {
            Some(i) => i,
            None => {
                self.metrics.push(Metric {
                    name: Cow::Borrowed(desc.name),
                    unit: Cow::Borrowed(desc.unit),
                    description: Cow::Borrowed(desc.description),
                    instrument: desc.instrument,
                    // Most metrics of a resource have a single point; Vec's first growth
                    // would reserve four.
                    points: Vec::with_capacity(1),
                });
                self.metrics.len() - 1
            }
        };
        self.last = idx;
        &mut self.metrics[idx]
    }

    /// Number of points over all metrics.
    pub fn point_count(&self) -> usize {
        self.metrics.iter().map(|m| m.points.len()).sum()
    }
}

/// Everything one collection cycle produced.
#[derive(Clone, Debug, Serialize)]
pub struct Batch {
    /// Observation time of every point, Unix nanoseconds.
    #[serde(rename = "time_unix_nano")]
    pub time_unix_nanos: u64,
    /// One entry per resource; the first is the host (the agent's own resource).
    #[serde(rename = "resource_metrics")]
    pub resources: Vec<ResourceMetrics>,
}

impl Batch {
    /// A batch for `time_unix_nanos` whose first resource is `host`.
    pub fn new(time_unix_nanos: u64, host: Arc<Resource>, host_start_unix_nanos: u64) -> Self {
        Self {
            time_unix_nanos,
            resources: vec![ResourceMetrics::new(host, host_start_unix_nanos)],
        }
    }

    /// The host resource's metrics.
    pub fn host(&mut self) -> &mut ResourceMetrics {
        // `new` always creates the host entry and nothing removes it.
        if self.resources.is_empty() {
            self.resources
                .push(ResourceMetrics::new(Arc::new(Resource::default()), 0));
        }
        &mut self.resources[0]
    }

    /// Adds a further resource (a container) and returns its metrics.
    pub fn add_resource(
        &mut self,
        resource: Arc<Resource>,
        start_unix_nanos: u64,
    ) -> &mut ResourceMetrics {
        self.resources
            .push(ResourceMetrics::new(resource, start_unix_nanos));
        let last = self.resources.len() - 1;
        &mut self.resources[last]
    }

    /// Number of points over all resources.
    pub fn point_count(&self) -> usize {
        self.resources
            .iter()
            .map(ResourceMetrics::point_count)
            .sum()
    }

    /// Finds a metric by name in the host resource (for tests and self-checks).
    pub fn host_metric(&self, name: &str) -> Option<&Metric> {
        self.resources
            .first()?
            .metrics
            .iter()
            .find(|m| m.name == name)
    }
}

/// Now, in Unix nanoseconds (0 if the clock is before 1970).
pub fn now_unix_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_laid_out_from_the_last_cycle_take_its_points_without_growing_and_drop_when_empty() {
        static A: MetricDesc = MetricDesc::counter("a", "1", "a");
        static B: MetricDesc = MetricDesc::gauge("b", "1", "b");
        static C: MetricDesc = MetricDesc::gauge("c", "1", "c");
        let mut last = ResourceMetrics::new(Arc::new(Resource::default()), 1);
        for i in 0..5 {
            last.record(&A, Attributes::new().with("i", i64::from(i)), 1.0);
        }
        last.record(&B, Attributes::new(), 2.0);
        last.record(&C, Attributes::new(), 3.0);
        let mut shape = Vec::new();
        last.shape_into(&mut shape);
        let counts: Vec<_> = shape.iter().map(|(m, n)| (m.name.clone(), *n)).collect();
        assert_eq!(counts, [("a".into(), 5), ("b".into(), 1), ("c".into(), 1)]);
        assert!(shape.iter().all(|(m, _)| m.points.is_empty()));
        // The next cycle: A's five points fill the room laid out (its vector never moves), C
        // gets none and is dropped, a new metric D comes after.
        static D: MetricDesc = MetricDesc::gauge("d", "1", "d");
        let mut next = ResourceMetrics::new(Arc::new(Resource::default()), 1);
        next.lay_out(&shape);
        let room = next.metrics[0].points.as_ptr();
        assert_eq!(next.metrics[0].points.capacity(), 5);
        for i in 0..5 {
            next.record(&A, Attributes::new().with("i", i64::from(i)), 1.0);
        }
        assert_eq!(next.metrics[0].points.as_ptr(), room, "no reallocation");
        next.record(&B, Attributes::new(), 2.0);
        next.record(&D, Attributes::new(), 4.0);
        // A point for a metric recorded earlier still finds it.
        next.record(&A, Attributes::new().with("i", 5), 1.0);
        next.drop_empty();
        let names: Vec<_> = next
            .metrics
            .iter()
            .map(|m| (m.name.clone(), m.points.len()))
            .collect();
        assert_eq!(names, [("a".into(), 6), ("b".into(), 1), ("d".into(), 1)]);
    }

    const C: MetricDesc = MetricDesc::counter("test.c", "s", "a counter");
    const G: MetricDesc = MetricDesc::gauge("test.g", "1", "a gauge");

    #[test]
    fn points_of_one_metric_are_grouped_and_gauges_have_no_start() {
        let mut b = Batch::new(10, Arc::new(Resource::default()), 5);
        b.host()
            .record(&C, Attributes::new().with("cpu.mode", "user"), 1u64);
        b.host().record(&G, Attributes::new(), 0.5);
        b.host()
            .record(&C, Attributes::new().with("cpu.mode", "idle"), 2u64);
        let host = &b.resources[0];
        assert_eq!(host.metrics.len(), 2);
        assert_eq!(host.metrics[0].points.len(), 2);
        assert_eq!(host.metrics[0].points[1].start_unix_nanos, 5);
        assert_eq!(host.metrics[1].points[0].start_unix_nanos, 0);
        assert_eq!(b.point_count(), 3);
    }

    #[test]
    fn of_and_plus_equal_the_with_chain_at_exact_capacity() {
        let chain = Attributes::new()
            .with("cpu.mode", "user")
            .with("cpu.logical_number", 3i64);
        let of = Attributes::of([
            ("cpu.mode", "user".into()),
            ("cpu.logical_number", 3i64.into()),
        ]);
        assert_eq!(of, chain);
        assert_eq!(of.0.capacity(), 2);
        let plus = Attributes::new()
            .with("cpu.mode", "user")
            .plus("cpu.logical_number", 3i64);
        assert_eq!(plus, chain);
        assert_eq!(plus.0.capacity(), 2);
    }

    #[test]
    fn json_shape_has_attribute_maps() {
        let mut b = Batch::new(10, Arc::new(Resource::default()), 5);
        b.host().record(
            &C,
            Attributes::new()
                .with("cpu.mode", "user")
                .with("cpu.logical_number", 3i64),
            1u64,
        );
        let v = serde_json::to_value(&b).unwrap();
        let p = &v["resource_metrics"][0]["metrics"][0];
        assert_eq!(p["type"], "counter");
        assert_eq!(p["points"][0]["attributes"]["cpu.mode"], "user");
        assert_eq!(p["points"][0]["attributes"]["cpu.logical_number"], 3);
    }
}
