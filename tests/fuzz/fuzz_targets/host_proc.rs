//! libFuzzer entry point: [`faultline_fuzz::host_proc`] on each input.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| faultline_fuzz::host_proc(data));
