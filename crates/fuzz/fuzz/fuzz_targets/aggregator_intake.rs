//! libFuzzer's entry to [`veil_fuzz::aggregator_intake`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| veil_fuzz::aggregator_intake(data));
