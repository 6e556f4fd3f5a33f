//! libFuzzer's entry to [`veil_fuzz::policy`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| veil_fuzz::policy(data));
