//! Model → official OTLP protobuf messages (`opentelemetry-proto`).
//!
//! Pure conversion, no I/O: the send path, the persistent queue and the tests' receiver all
//! speak these messages.

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{
    AnyValue, ArrayValue, InstrumentationScope, KeyValue, any_value,
};
use opentelemetry_proto::tonic::metrics::v1::{
    AggregationTemporality, Gauge, Metric as PbMetric, NumberDataPoint,
    ResourceMetrics as PbResourceMetrics, ScopeMetrics, Sum, metric, number_data_point,
};
use opentelemetry_proto::tonic::resource::v1::Resource as PbResource;

use crate::model::{AttrValue, Attributes, Batch, Instrument, Metric, Value};

/// Instrumentation scope name of everything faultline emits.
pub const SCOPE_NAME: &str = "faultline";

/// Converts one cycle's batch to an export request.
pub fn encode_batch(batch: &Batch, scope_version: &str) -> ExportMetricsServiceRequest {
    let scope = InstrumentationScope {
        name: SCOPE_NAME.to_owned(),
        version: scope_version.to_owned(),
        ..Default::default()
    };
    let resource_metrics = batch
        .resources
        .iter()
        .filter(|rm| !rm.metrics.is_empty())
        .map(|rm| PbResourceMetrics {
            resource: Some(PbResource {
                attributes: key_values(&rm.resource.attributes),
                ..Default::default()
            }),
            scope_metrics: vec![ScopeMetrics {
                scope: Some(scope.clone()),
                metrics: rm
                    .metrics
                    .iter()
                    .map(|m| metric(m, batch.time_unix_nanos))
                    .collect(),
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        })
        .collect();
    ExportMetricsServiceRequest { resource_metrics }
}

/// Number of data points in a request (for counting what was sent or dropped).
pub fn point_count(req: &ExportMetricsServiceRequest) -> usize {
    req.resource_metrics
        .iter()
        .flat_map(|rm| &rm.scope_metrics)
        .flat_map(|sm| &sm.metrics)
        .map(|m| match &m.data {
            Some(metric::Data::Gauge(g)) => g.data_points.len(),
            Some(metric::Data::Sum(s)) => s.data_points.len(),
            Some(metric::Data::Histogram(h)) => h.data_points.len(),
            Some(metric::Data::ExponentialHistogram(h)) => h.data_points.len(),
            Some(metric::Data::Summary(s)) => s.data_points.len(),
            None => 0,
        })
        .sum()
}

fn metric(m: &Metric, time_unix_nano: u64) -> PbMetric {
    let data_points = m
        .points
        .iter()
        .map(|p| NumberDataPoint {
            attributes: key_values(&p.attributes),
            start_time_unix_nano: p.start_unix_nanos,
            time_unix_nano,
            value: Some(match p.value {
                Value::Int(i) => number_data_point::Value::AsInt(i),
                Value::Double(d) => number_data_point::Value::AsDouble(d),
            }),
            ..Default::default()
        })
        .collect();
    let data = match m.instrument {
        Instrument::Gauge => metric::Data::Gauge(Gauge { data_points }),
        Instrument::Counter | Instrument::UpDownCounter => metric::Data::Sum(Sum {
            data_points,
            aggregation_temporality: AggregationTemporality::Cumulative as i32,
            is_monotonic: m.instrument == Instrument::Counter,
        }),
    };
    PbMetric {
        name: m.name.to_string(),
        description: m.description.to_string(),
        unit: m.unit.to_string(),
        data: Some(data),
        ..Default::default()
    }
}

/// Model attributes → OTLP key/values.
pub fn key_values(attrs: &Attributes) -> Vec<KeyValue> {
    attrs
        .iter()
        .map(|(k, v)| KeyValue {
            key: k.to_owned(),
            value: Some(any_value(v)),
            ..Default::default()
        })
        .collect()
}

/// One model attribute value as OTLP.
pub fn any_value(v: &AttrValue) -> AnyValue {
    let value = match v {
        AttrValue::Str(s) => any_value::Value::StringValue(s.to_string()),
        AttrValue::Int(i) => any_value::Value::IntValue(*i),
        AttrValue::Double(d) => any_value::Value::DoubleValue(*d),
        AttrValue::Bool(b) => any_value::Value::BoolValue(*b),
        AttrValue::StrArray(items) => any_value::Value::ArrayValue(ArrayValue {
            values: items
                .iter()
                .map(|s| AnyValue {
                    value: Some(any_value::Value::StringValue(s.clone())),
                })
                .collect(),
        }),
    };
    AnyValue { value: Some(value) }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::model::{MetricDesc, Resource};

    const C: MetricDesc = MetricDesc::counter("system.cpu.time", "s", "cpu");
    const U: MetricDesc = MetricDesc::updown("system.memory.usage", "By", "mem");
    const G: MetricDesc = MetricDesc::gauge("system.uptime", "s", "up");

    #[test]
    fn instruments_map_to_otlp_data_kinds() {
        let res = Arc::new(Resource {
            attributes: Attributes::new().with("service.name", "faultline"),
        });
        let mut b = Batch::new(1_000, res, 7);
        b.host()
            .record(&C, Attributes::new().with("cpu.mode", "idle"), 1.5);
        b.host().record(
            &U,
            Attributes::new().with("system.memory.state", "used"),
            10u64,
        );
        b.host().record(&G, Attributes::new(), 3.0);
        let req = encode_batch(&b, "0.1.0");
        assert_eq!(point_count(&req), 3);
        let ms = &req.resource_metrics[0].scope_metrics[0].metrics;
        match &ms[0].data {
            Some(metric::Data::Sum(s)) => {
                assert!(s.is_monotonic);
                assert_eq!(
                    s.aggregation_temporality,
                    AggregationTemporality::Cumulative as i32
                );
                assert_eq!(s.data_points[0].start_time_unix_nano, 7);
                assert_eq!(s.data_points[0].time_unix_nano, 1_000);
            }
            other => panic!("expected sum, got {other:?}"),
        }
        match &ms[1].data {
            Some(metric::Data::Sum(s)) => assert!(!s.is_monotonic),
            other => panic!("expected sum, got {other:?}"),
        }
        assert!(matches!(&ms[2].data, Some(metric::Data::Gauge(_))));
        let rattr = &req.resource_metrics[0]
            .resource
            .as_ref()
            .unwrap()
            .attributes[0];
        assert_eq!(rattr.key, "service.name");
    }

    proptest::proptest! {
        /// Any value survives OTLP encoding and the protobuf wire bit for bit (NaN, ±inf,
        /// -0.0, subnormals, i64 extremes), in every instrument kind, with its start time
        /// (none for gauges).
        #[test]
        fn any_value_survives_encoding_and_the_wire(
            double in proptest::num::f64::ANY,
            int in proptest::num::i64::ANY,
            start in proptest::num::u64::ANY,
        ) {
            use prost::Message;
            use proptest::test_runner::TestCaseError;
            let mut b = Batch::new(7, Arc::new(Resource::default()), start);
            for desc in [&C, &U, &G] {
                b.host().record(desc, Attributes::new(), double);
                b.host().record(desc, Attributes::new(), int);
            }
            let wire = encode_batch(&b, "0").encode_to_vec();
            let back = ExportMetricsServiceRequest::decode(wire.as_slice())
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
            proptest::prop_assert_eq!(point_count(&back), 6);
            for m in &back.resource_metrics[0].scope_metrics[0].metrics {
                let points = match &m.data {
                    Some(metric::Data::Gauge(g)) => &g.data_points,
                    Some(metric::Data::Sum(s)) => &s.data_points,
                    other => return Err(TestCaseError::fail(format!("{other:?}"))),
                };
                proptest::prop_assert_eq!(points.len(), 2);
                let Some(number_data_point::Value::AsDouble(d)) = points[0].value else {
                    return Err(TestCaseError::fail(format!("{:?}", points[0].value)));
                };
                proptest::prop_assert_eq!(d.to_bits(), double.to_bits());
                proptest::prop_assert_eq!(
                    points[1].value,
                    Some(number_data_point::Value::AsInt(int))
                );
                let want_start = if m.name == G.name { 0 } else { start };
                proptest::prop_assert_eq!(points[0].start_time_unix_nano, want_start);
            }
        }
    }
}
