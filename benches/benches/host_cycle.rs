//! One host collection cycle, as `faultline run` performs it every interval, on this machine's
//! real /proc and /sys; plus the OTLP encoding and Prometheus rendering of its batch.
//!
//! Run: `cargo bench -p faultline-benches --bench host_cycle`. Figures go to
//! docs/PERFORMANCE.md with the date and the command.

#![allow(clippy::expect_used)] // A benchmark on a machine whose /proc cannot be read has nothing to measure.

use criterion::{Criterion, criterion_group, criterion_main};
use faultline_agent::config::Config;
use faultline_agent::runtime::Cycle;
use faultline_chaos::units::HumanDuration;
use faultline_exporters::otlp::encode_batch;
use faultline_exporters::prometheus::render;

fn host_cycle(c: &mut Criterion) {
    let config = Config::default();
    let mut cycle = Cycle::new(&config).expect("host collectors start on this machine");
    // Defaults: the process-state scan and the connection dump run every `scan_interval`
    // (1 min) and repeat their last values in between, so this is the plain cycle.
    c.bench_function("host_cycle/collect", |b| b.iter(|| cycle.collect(None)));

    // The cycle in which the scans run (scan_interval 0s: every cycle scans).
    let mut scanning = config.clone();
    scanning.host.scan_interval = HumanDuration(std::time::Duration::ZERO);
    let mut cycle_scan = Cycle::new(&scanning).expect("host collectors start on this machine");
    c.bench_function("host_cycle/collect_with_scans", |b| {
        b.iter(|| cycle_scan.collect(None))
    });

    let mut no_self = config.clone();
    no_self.host.processes = false;
    let mut cycle_np = Cycle::new(&no_self).expect("host collectors start on this machine");
    c.bench_function("host_cycle/collect_without_process_scan", |b| {
        b.iter(|| cycle_np.collect(None))
    });

    let batch = cycle.collect(None);
    c.bench_function("host_cycle/encode_otlp", |b| {
        b.iter(|| encode_batch(&batch, "bench"))
    });
    c.bench_function("host_cycle/render_prometheus", |b| {
        b.iter(|| {
            let mut out = String::with_capacity(64 * 1024);
            render(&batch, &mut out);
            out
        })
    });
}

criterion_group!(benches, host_cycle);
criterion_main!(benches);
