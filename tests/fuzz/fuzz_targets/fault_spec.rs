//! libFuzzer entry point: [`faultline_fuzz::fault_spec`] on each input.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| faultline_fuzz::fault_spec(data));
