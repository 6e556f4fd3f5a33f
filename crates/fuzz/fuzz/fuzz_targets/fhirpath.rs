//! libFuzzer's entry to [`veil_fuzz::fhirpath`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| veil_fuzz::fhirpath(data));
