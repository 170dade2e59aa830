//! libFuzzer entry point: [`faultline_fuzz::cgroup`] on each input.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| faultline_fuzz::cgroup(data));
