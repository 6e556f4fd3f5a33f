//! One integration-test binary for veil-fhirpath.

mod conformance;
mod handles;
mod robustness;
