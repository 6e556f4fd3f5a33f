//! Any text: compiling must return an expression or an error, never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(src) = std::str::from_utf8(data) {
        let _ = veil_fhirpath::Expression::compile(src);
    }
});
