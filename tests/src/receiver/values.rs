//! OTLP attribute values rendered as text, shared by the three signals' flattened views.

use std::collections::BTreeMap;

use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;

/// Render an OTLP attribute value as text.
pub fn any_value_text(value: Option<&AnyValue>) -> String {
    match value.and_then(|v| v.value.as_ref()) {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::DoubleValue(d)) => d.to_string(),
        Some(any_value::Value::ArrayValue(a)) => {
            let items: Vec<String> = a.values.iter().map(|v| any_value_text(Some(v))).collect();
            format!("[{}]", items.join(", "))
        }
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}

/// Key-value list to a map with values rendered by [`any_value_text`].
pub fn attribute_map(kvs: &[KeyValue]) -> BTreeMap<String, String> {
    kvs.iter()
        .map(|kv| (kv.key.clone(), any_value_text(kv.value.as_ref())))
        .collect()
}

/// A resource's attributes (empty when the request carries no resource).
pub(super) fn resource_map(r: Option<&Resource>) -> BTreeMap<String, String> {
    r.map(|r| attribute_map(&r.attributes)).unwrap_or_default()
}

/// Bytes as lowercase hex (trace and span ids).
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
