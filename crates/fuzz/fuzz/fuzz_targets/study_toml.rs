//! libFuzzer's entry to [`veil_fuzz::study_toml`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| veil_fuzz::study_toml(data));
