//! libFuzzer entry point: [`faultline_fuzz::backup_output`] on each input.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| faultline_fuzz::backup_output(data));
