//! libFuzzer entry point: [`faultline_fuzz::drill_scenario`] on each input.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| faultline_fuzz::drill_scenario(data));
