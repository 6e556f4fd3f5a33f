//! libFuzzer's entry to [`veil_fuzz::r4_resource`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| veil_fuzz::r4_resource(data));
