//! libFuzzer entry point: [`faultline_fuzz::gameday`] on each input.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| faultline_fuzz::gameday(data));
