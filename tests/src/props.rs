//! The property tests' runner (`chaos_journal_props.rs`, `chaos_journal_hostile.rs`,
//! `api_routing_props.rs`): a fixed seed, so the same cases run every time and each test's
//! "not vacuous" check at the end is stable; `PROPTEST_CASES` explores further. Each case runs
//! real processes, files or requests, hence the modest defaults the tests pass in.

use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};

/// A runner of `PROPTEST_CASES` cases (else `default_cases`) from a fixed seed, shrinking a
/// failure at most `max_shrink_iters` times, persisting nothing; and the number of cases.
pub fn runner(default_cases: u32, max_shrink_iters: u32) -> (TestRunner, u32) {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default_cases);
    let config = Config {
        cases,
        max_shrink_iters,
        failure_persistence: None,
        ..Config::default()
    };
    (
        TestRunner::new_with_rng(config, TestRng::deterministic_rng(RngAlgorithm::ChaCha)),
        cases,
    )
}
