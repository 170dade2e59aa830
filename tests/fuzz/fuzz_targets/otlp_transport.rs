//! libFuzzer entry point: [`faultline_fuzz::otlp_transport`] on each input.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| faultline_fuzz::otlp_transport(data));
