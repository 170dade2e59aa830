//! Model → encoded `ExportMetricsServiceRequest` bytes, written directly.
//!
//! The same message [`super::encode::encode_batch`] builds, without building it: going through
//! the generated structs costs an allocation per point, attribute key and string value (a few
//! thousand per cycle), only to be dropped after `encode_to_vec`. Here one pass computes every
//! nested message's length (kept in a scratch vector, in the order the second pass writes
//! them) and the second pass writes the protobuf wire format into one buffer. Field numbers
//! and presence rules are those of `opentelemetry/proto/{collector/metrics,metrics,common,
//! resource}/v1/*.proto`: proto3 scalars are skipped when zero or empty; oneof members
//! (`AnyValue.value`, `NumberDataPoint.value`) and sub-messages the struct path sets
//! (`resource`, `scope`) are always written. Tests decode the result with the generated types
//! and compare it with `encode_batch`'s message.
//!
//! Pure: no I/O.

use prost::encoding::{encode_varint, encoded_len_varint};

use super::encode::SCOPE_NAME;
use crate::model::{AttrValue, Attributes, Batch, Instrument, Metric, Point, Value};

/// Wire types.
const VARINT: u8 = 0;
const FIXED64: u8 = 1;
const LEN: u8 = 2;

/// `AggregationTemporality::Cumulative`.
const CUMULATIVE: u64 = 2;

const fn key(field: u8, wire: u8) -> u8 {
    (field << 3) | wire
}

/// Bytes of a length-delimited field (key + length + body) whose body is `len` bytes.
fn delimited(len: usize) -> usize {
    1 + encoded_len_varint(len as u64) + len
}

/// Bytes of a string field, 0 when skipped (empty).
fn string_field(s: &str) -> usize {
    if s.is_empty() { 0 } else { delimited(s.len()) }
}

fn any_value_len(v: &AttrValue) -> usize {
    match v {
        AttrValue::Str(s) => delimited(s.len()),
        AttrValue::Int(i) => 1 + encoded_len_varint(*i as u64),
        AttrValue::Double(_) => 9,
        AttrValue::Bool(_) => 2,
        AttrValue::StrArray(items) => delimited(array_len(items)),
    }
}

fn array_len(items: &[String]) -> usize {
    items.iter().map(|s| delimited(delimited(s.len()))).sum()
}

fn key_value_len(k: &str, v: &AttrValue) -> usize {
    string_field(k) + delimited(any_value_len(v))
}

/// Bytes of `attrs` as repeated `KeyValue` fields.
fn attributes_len(attrs: &Attributes) -> usize {
    attrs
        .iter()
        .map(|(k, v)| delimited(key_value_len(k, v)))
        .sum()
}

fn point_len(p: &Point, time: u64) -> usize {
    attributes_len(&p.attributes)
        + if p.start_unix_nanos != 0 { 9 } else { 0 }
        + if time != 0 { 9 } else { 0 }
        + 9
}

/// The writer's cursor over the lengths the sizing pass recorded.
struct Lens<'a> {
    lens: &'a [usize],
    at: usize,
}

impl Lens<'_> {
    fn next(&mut self) -> usize {
        debug_assert!(
            self.at < self.lens.len(),
            "sizing and writing passes disagree"
        );
        let l = self.lens.get(self.at).copied().unwrap_or(0);
        self.at += 1;
        l
    }
}

/// Encodes `batch` as an `ExportMetricsServiceRequest` into `out` (cleared first). `lens` is
/// scratch space (cleared first; a caller may keep it between calls). Resources without metrics are left out,
/// as `encode_batch` does.
pub fn encode_batch_into(
    batch: &Batch,
    scope_version: &str,
    out: &mut Vec<u8>,
    lens: &mut Vec<usize>,
) {
    lens.clear();
    let time = batch.time_unix_nanos;
    let scope_len = string_field(SCOPE_NAME) + string_field(scope_version);
    // Sizing pass, in write order: per resource its length, its scope-metrics length, then
    // per metric its length and its data's length, then each point's length.
    let mut total = 0;
    for rm in batch.resources.iter().filter(|rm| !rm.metrics.is_empty()) {
        let rm_slot = lens.len();
        lens.extend([0, 0]);
        let mut sm_len = delimited(scope_len);
        for m in &rm.metrics {
            let m_slot = lens.len();
            lens.extend([0, 0]);
            let mut data_len = 0;
            for p in &m.points {
                let pl = point_len(p, time);
                lens.push(pl);
                data_len += delimited(pl);
            }
            if m.instrument != Instrument::Gauge {
                data_len += 2;
                if m.instrument == Instrument::Counter {
                    data_len += 2;
                }
            }
            let m_len = string_field(&m.name)
                + string_field(&m.description)
                + string_field(&m.unit)
                + delimited(data_len);
            lens[m_slot] = m_len;
            lens[m_slot + 1] = data_len;
            sm_len += delimited(m_len);
        }
        let rm_len = delimited(attributes_len(&rm.resource.attributes)) + delimited(sm_len);
        lens[rm_slot] = rm_len;
        lens[rm_slot + 1] = sm_len;
        total += delimited(rm_len);
    }

    out.clear();
    out.reserve(total);
    let mut lens = Lens { lens, at: 0 };
    for rm in batch.resources.iter().filter(|rm| !rm.metrics.is_empty()) {
        let (rm_len, sm_len) = (lens.next(), lens.next());
        len_field(out, 1, rm_len);
        len_field(out, 1, attributes_len(&rm.resource.attributes));
        write_attributes(out, 1, &rm.resource.attributes);
        len_field(out, 2, sm_len);
        len_field(out, 1, scope_len);
        write_string(out, 1, SCOPE_NAME);
        write_string(out, 2, scope_version);
        for m in &rm.metrics {
            write_metric(out, m, time, &mut lens);
        }
    }
}

fn write_metric(out: &mut Vec<u8>, m: &Metric, time: u64, lens: &mut Lens<'_>) {
    let (m_len, data_len) = (lens.next(), lens.next());
    len_field(out, 2, m_len);
    write_string(out, 1, &m.name);
    write_string(out, 2, &m.description);
    write_string(out, 3, &m.unit);
    // Gauge is field 5, Sum field 7; both hold their points in field 1.
    let data_field = if m.instrument == Instrument::Gauge {
        5
    } else {
        7
    };
    len_field(out, data_field, data_len);
    for p in &m.points {
        let pl = lens.next();
        len_field(out, 1, pl);
        if p.start_unix_nanos != 0 {
            fixed64(out, 2, p.start_unix_nanos);
        }
        if time != 0 {
            fixed64(out, 3, time);
        }
        match p.value {
            Value::Double(d) => fixed64(out, 4, d.to_bits()),
            Value::Int(i) => fixed64(out, 6, i as u64),
        }
        write_attributes(out, 7, &p.attributes);
    }
    if m.instrument != Instrument::Gauge {
        varint_field(out, 2, CUMULATIVE);
        if m.instrument == Instrument::Counter {
            varint_field(out, 3, 1);
        }
    }
}

fn write_attributes(out: &mut Vec<u8>, field: u8, attrs: &Attributes) {
    for (k, v) in attrs.iter() {
        len_field(out, field, key_value_len(k, v));
        write_string(out, 1, k);
        len_field(out, 2, any_value_len(v));
        match v {
            AttrValue::Str(s) => {
                len_field(out, 1, s.len());
                out.extend_from_slice(s.as_bytes());
            }
            AttrValue::Bool(b) => varint_field(out, 2, u64::from(*b)),
            AttrValue::Int(i) => varint_field(out, 3, *i as u64),
            AttrValue::Double(d) => fixed64(out, 4, d.to_bits()),
            AttrValue::StrArray(items) => {
                len_field(out, 5, array_len(items));
                for s in items {
                    len_field(out, 1, delimited(s.len()));
                    len_field(out, 1, s.len());
                    out.extend_from_slice(s.as_bytes());
                }
            }
        }
    }
}

/// Key and length of a length-delimited field; the body follows.
fn len_field(out: &mut Vec<u8>, field: u8, len: usize) {
    out.push(key(field, LEN));
    encode_varint(len as u64, out);
}

fn write_string(out: &mut Vec<u8>, field: u8, s: &str) {
    if !s.is_empty() {
        len_field(out, field, s.len());
        out.extend_from_slice(s.as_bytes());
    }
}

fn varint_field(out: &mut Vec<u8>, field: u8, v: u64) {
    out.push(key(field, VARINT));
    encode_varint(v, out);
}

fn fixed64(out: &mut Vec<u8>, field: u8, v: u64) {
    out.push(key(field, FIXED64));
    out.extend_from_slice(&v.to_le_bytes());
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
    use prost::Message;

    use super::*;
    use crate::model::{MetricDesc, Resource};
    use crate::otlp::encode::encode_batch;

    const C: MetricDesc = MetricDesc::counter("system.cpu.time", "s", "cpu");
    const U: MetricDesc = MetricDesc::updown("system.memory.usage", "By", "");
    const G: MetricDesc = MetricDesc::gauge("system.uptime", "", "up");

    fn direct(b: &Batch, version: &str) -> ExportMetricsServiceRequest {
        let (mut out, mut lens) = (Vec::new(), Vec::new());
        encode_batch_into(b, version, &mut out, &mut lens);
        let back = ExportMetricsServiceRequest::decode(out.as_slice()).unwrap();
        // Same message, and as many bytes as prost writes for it (no padding, nothing
        // extra).
        assert_eq!(out.len(), encode_batch(b, version).encoded_len());
        back
    }

    #[test]
    fn every_attribute_kind_resource_and_instrument_decodes_as_the_struct_path_builds() {
        let host = Arc::new(Resource {
            attributes: Attributes::new()
                .with("service.name", "faultline")
                .with("host.name", String::new()),
        });
        let mut b = Batch::new(1_700_000_000_000_000_000, host, 7);
        b.host().record(
            &C,
            Attributes::new()
                .with("cpu.mode", "idle")
                .with("n", -5i64)
                .with("x", 0.25)
                .with("ok", true)
                .with("off", false)
                .with("zero", 0i64),
            1.5,
        );
        b.host().record(&U, Attributes::new(), -3i64);
        b.host().record(&G, Attributes::new().with("e", ""), 0.0);
        // A resource without metrics is left out; a container with an array attribute.
        b.add_resource(Arc::new(Resource::default()), 1);
        let mut attrs = Attributes::new().with("container.id", "abc");
        attrs.push(
            "container.image.tags",
            AttrValue::StrArray(vec!["1.0".into(), String::new(), "latest".into()]),
        );
        let rm = b.add_resource(Arc::new(Resource { attributes: attrs }), 0);
        rm.record(&C, Attributes::new(), 0u64);
        rm.record(&C, Attributes::new().with("cpu.mode", "user"), i64::MIN);
        for version in ["0.1.0", ""] {
            assert_eq!(direct(&b, version), encode_batch(&b, version));
        }
    }

    #[test]
    fn an_empty_batch_and_a_zero_time_encode_like_the_struct_path() {
        let b = Batch::new(0, Arc::new(Resource::default()), 0);
        assert_eq!(direct(&b, "1"), encode_batch(&b, "1"));
        let mut b = Batch::new(0, Arc::new(Resource::default()), 0);
        b.host().record(&G, Attributes::new(), 1.0);
        assert_eq!(direct(&b, "1"), encode_batch(&b, "1"));
    }

    proptest::proptest! {
        /// Any mix of values, attribute strings (of any length: varint lengths of one to
        /// three bytes) and start times decodes to what the struct path builds.
        #[test]
        fn any_batch_decodes_as_the_struct_path_builds(
            points in proptest::collection::vec(
                (0u8..3, proptest::num::f64::ANY, proptest::num::i64::ANY,
                 proptest::num::u64::ANY, ".{0,3}", proptest::collection::vec(".{0,200}", 0..3)),
                0..40,
            ),
            time in proptest::num::u64::ANY,
        ) {
            let mut b = Batch::new(time, Arc::new(Resource::default()), 0);
            for (kind, d, i, start, s, tags) in points {
                let desc = [&C, &U, &G][usize::from(kind)];
                let mut a = Attributes::new().with("k", s.clone());
                a.push("tags", AttrValue::StrArray(tags));
                let rm = b.add_resource(Arc::new(Resource { attributes: Attributes::new().with("r", s) }), start);
                rm.record(desc, a.clone(), d);
                rm.record(desc, a, i);
            }
            // Compared re-encoded: `PartialEq` would call two NaNs different.
            proptest::prop_assert_eq!(
                direct(&b, "0").encode_to_vec(),
                encode_batch(&b, "0").encode_to_vec()
            );
        }
    }
}
