//! An expression and a resource, split at the first newline: evaluation
//! must return items or an error, never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let (expr, json) = text.split_once('\n').unwrap_or((text, r#"{"resourceType":"Patient","name":[{"given":["a"]}]}"#));
    let (Ok(e), Ok(resource)) = (veil_fhirpath::Expression::compile(expr), serde_json::from_str(json)) else {
        return;
    };
    let _ = e.evaluate(&resource);
    if let Ok(items) = e.evaluate(&resource) {
        for item in items {
            if let Ok(loc) = item.location() {
                let mut copy = resource.clone();
                let _ = loc.replace(&mut copy, serde_json::Value::Null);
                let _ = loc.remove(&mut copy);
            }
        }
    }
});
