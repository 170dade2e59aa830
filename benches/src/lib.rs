//! Benchmarks live under benches/benches/; this library holds what more than one of them
//! measures with.

/// CPU time the calling thread has used, in nanoseconds (`/proc/thread-self/schedstat`).
///
/// # Panics
/// When the file cannot be read or parsed (no procfs: nothing to measure with).
#[allow(clippy::unwrap_used)] // A benchmark without procfs has nothing to measure.
pub fn thread_cpu_ns() -> u64 {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").unwrap();
    s.split_whitespace().next().unwrap().parse().unwrap()
}
