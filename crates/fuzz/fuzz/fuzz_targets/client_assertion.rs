//! libFuzzer's entry to [`veil_fuzz::client_assertion`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| veil_fuzz::client_assertion(data));
