//! Helpers shared by the host collectors' tests: fixture trees and batch inspection.

use std::path::PathBuf;
use std::sync::Arc;

use faultline_exporters::model::{AttrValue, Batch, Metric, Resource};

use crate::collectors::{CollectError, Collector, Context, Roots};

/// The fixture directory `agent/tests/fixtures/<name>`.
pub(crate) fn fixture_dir(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// Roots pointing at a fixture tree (rootfs: its `rootfs` directory, which may not exist).
pub(crate) fn roots(name: &str) -> Roots {
    let dir = fixture_dir(name);
    Roots {
        proc: dir.join("proc"),
        sys: dir.join("sys"),
        rootfs: dir.join("rootfs"),
    }
}

/// A fixture file's text (`rel` is relative to the fixture tree, e.g. `proc/stat`).
pub(crate) fn read(name: &str, rel: &str) -> String {
    let path = fixture_dir(name).join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A context over `roots` with a fixed boot time.
pub(crate) fn ctx(roots: Roots) -> Context {
    Context {
        roots,
        boot_time_unix_nanos: 1_000,
    }
}

/// An empty batch.
pub(crate) fn batch() -> Batch {
    Batch::new(2_000, Arc::new(Resource::default()), 1_000)
}

/// Runs one collection of `c` over fixture tree `name`.
pub(crate) fn run(c: &mut dyn Collector, name: &str) -> (Batch, Result<(), CollectError>) {
    let mut b = batch();
    let r = c.collect(&ctx(roots(name)), &mut b);
    (b, r)
}

/// The host metric called `name`; panics when absent.
pub(crate) fn metric<'a>(b: &'a Batch, name: &str) -> &'a Metric {
    b.host_metric(name)
        .unwrap_or_else(|| panic!("metric {name} missing"))
}

/// The value of the single point of `name` whose attributes include every pair of `attrs`.
pub(crate) fn value(b: &Batch, name: &str, attrs: &[(&str, &str)]) -> f64 {
    let m = metric(b, name);
    let hits: Vec<_> = m
        .points
        .iter()
        .filter(|p| {
            attrs
                .iter()
                .all(|(k, v)| p.attributes.get(k).map(AttrValue::to_text).as_deref() == Some(*v))
        })
        .collect();
    assert_eq!(
        hits.len(),
        1,
        "{name} {attrs:?}: {} matching points in {:?}",
        hits.len(),
        m.points
    );
    hits[0].value.as_f64()
}
