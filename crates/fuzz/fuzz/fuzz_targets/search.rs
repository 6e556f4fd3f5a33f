//! libFuzzer's entry to [`veil_fuzz::search`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| veil_fuzz::search(data));
