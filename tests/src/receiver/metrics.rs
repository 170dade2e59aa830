//! The metrics signal: `MetricsService` and `/v1/metrics`, each number data point flattened
//! into a [`Point`], and the receiver's metrics queries.

use std::collections::BTreeMap;
use std::time::Duration;

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::metrics::v1::{AggregationTemporality, metric, number_data_point};

use super::OtlpReceiver;
use super::store::Received;
use super::values::{attribute_map, resource_map};

impl Received {
    /// Every number data point in the request, flattened.
    pub fn points(&self) -> Vec<Point> {
        flatten(&self.request)
    }

    /// The distinct point timestamps (`time_unix_nano`) in the request, ascending. Points of one
    /// collection cycle share a timestamp, so this identifies the cycles a request carries.
    pub fn timestamps(&self) -> Vec<u64> {
        let mut ts: Vec<u64> = self.points().iter().map(|p| p.time_unix_nano).collect();
        ts.sort_unstable();
        ts.dedup();
        ts
    }
}

/// How a metric's points are aggregated, as they came over the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PointKind {
    /// A `Gauge`.
    Gauge,
    /// A `Sum`.
    Sum {
        /// `is_monotonic`.
        monotonic: bool,
        /// `aggregation_temporality` is cumulative.
        cumulative: bool,
    },
    /// Anything else (histograms, summaries): faultline sends none.
    Other,
}

/// One number data point with its metric's identity and its resource, flattened.
#[derive(Clone, Debug, PartialEq)]
pub struct Point {
    /// Metric name.
    pub name: String,
    /// Metric unit.
    pub unit: String,
    /// Gauge or sum.
    pub kind: PointKind,
    /// Point attributes, values rendered as text (strings as-is, numbers in decimal).
    pub attributes: BTreeMap<String, String>,
    /// Resource attributes, rendered the same way.
    pub resource: BTreeMap<String, String>,
    /// `start_time_unix_nano`.
    pub start_time_unix_nano: u64,
    /// `time_unix_nano`.
    pub time_unix_nano: u64,
    /// The value (integers widened to `f64`).
    pub value: f64,
}

impl Point {
    /// The identity of the series this point belongs to: name plus attributes.
    pub fn series(&self) -> String {
        let attrs: Vec<String> = self
            .attributes
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        format!("{}{{{}}}", self.name, attrs.join(","))
    }
}

fn flatten(request: &ExportMetricsServiceRequest) -> Vec<Point> {
    let mut out = Vec::new();
    for rm in &request.resource_metrics {
        let resource = resource_map(rm.resource.as_ref());
        for sm in &rm.scope_metrics {
            for m in &sm.metrics {
                let (kind, points) = match &m.data {
                    Some(metric::Data::Gauge(g)) => (PointKind::Gauge, &g.data_points),
                    Some(metric::Data::Sum(s)) => (
                        PointKind::Sum {
                            monotonic: s.is_monotonic,
                            cumulative: s.aggregation_temporality
                                == AggregationTemporality::Cumulative as i32,
                        },
                        &s.data_points,
                    ),
                    _ => {
                        out.push(Point {
                            name: m.name.clone(),
                            unit: m.unit.clone(),
                            kind: PointKind::Other,
                            attributes: BTreeMap::new(),
                            resource: resource.clone(),
                            start_time_unix_nano: 0,
                            time_unix_nano: 0,
                            value: f64::NAN,
                        });
                        continue;
                    }
                };
                for p in points {
                    let value = match p.value {
                        Some(number_data_point::Value::AsDouble(d)) => d,
                        // Widening for comparisons; counters above 2^53 lose precision only in
                        // the last bits, far below any tolerance the tests use.
                        Some(number_data_point::Value::AsInt(i)) => i as f64,
                        None => f64::NAN,
                    };
                    out.push(Point {
                        name: m.name.clone(),
                        unit: m.unit.clone(),
                        kind,
                        attributes: attribute_map(&p.attributes),
                        resource: resource.clone(),
                        start_time_unix_nano: p.start_time_unix_nano,
                        time_unix_nano: p.time_unix_nano,
                        value,
                    });
                }
            }
        }
    }
    out
}

impl OtlpReceiver {
    /// Every metrics request received so far, in arrival order.
    pub fn requests(&self) -> Vec<Received> {
        self.shared.lock().metrics.clone()
    }

    /// Every point of metric `name` in every request so far (accepted or not), in arrival
    /// order.
    pub fn metric_points(&self, name: &str) -> Vec<Point> {
        self.shared
            .lock()
            .metrics
            .iter()
            .flat_map(Received::points)
            .filter(|p| p.name == name)
            .collect()
    }

    /// Wait until `pred` holds for the metrics requests received so far, re-checking on
    /// every new request (no fixed sleeps). Returns the requests it held for.
    ///
    /// # Panics
    /// When `timeout` passes first, with a summary of what did arrive.
    pub async fn wait_for<F>(&self, pred: F, timeout: Duration) -> Vec<Received>
    where
        F: FnMut(&[Received]) -> bool,
    {
        self.wait_on(pred, timeout, |r| format!("cycles={:?}", r.timestamps()))
            .await
    }
}
