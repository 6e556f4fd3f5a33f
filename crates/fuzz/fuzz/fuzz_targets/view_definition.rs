//! libFuzzer's entry to [`veil_fuzz::view_definition`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| veil_fuzz::view_definition(data));
