//! libFuzzer's entry to [`veil_fuzz::ndjson`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| veil_fuzz::ndjson(data));
