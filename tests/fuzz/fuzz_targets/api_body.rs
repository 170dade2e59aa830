//! libFuzzer entry point: [`faultline_fuzz::api_body`] on each input.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| faultline_fuzz::api_body(data));
