//! libFuzzer's entry to [`veil_fuzz::share_token`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| veil_fuzz::share_token(data));
