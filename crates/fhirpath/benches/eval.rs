//! Evaluates compiled expressions over every resource of the bundled Synthea
//! sample (about 39,000 resources). Run: `cargo bench -p veil-fhirpath`.
//! Figures go to docs/benchmarks.md with date and machine.

use std::io::Read;
use std::path::Path;

use criterion::{BenchmarkId, Criterion, Throughput, black_box, criterion_group, criterion_main};
use serde_json::Value as Json;
use veil_fhirpath::Expression;

fn load_synthea() -> Vec<Json> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data/synthea-r4-100.tar.gz");
    let file = std::fs::File::open(&path).expect("data/synthea-r4-100.tar.gz");
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(file));
    let mut out = Vec::new();
    for entry in archive.entries().expect("archive") {
        let mut entry = entry.expect("entry");
        let mut text = String::new();
        entry.read_to_string(&mut text).expect("read");
        let Ok(doc) = serde_json::from_str::<Json>(&text) else { continue };
        match doc.get("entry").and_then(Json::as_array) {
            Some(entries) => out.extend(entries.iter().filter_map(|e| e.get("resource").cloned())),
            None => out.push(doc),
        }
    }
    out
}

fn bench(c: &mut Criterion) {
    let resources = load_synthea();
    let mut group = c.benchmark_group("synthea");
    group.sample_size(10);
    group.throughput(Throughput::Elements(resources.len() as u64));
    for src in [
        "nodesByType('HumanName')",
        "Observation.value.ofType(Quantity).value",
        "Patient.address.where(use='home')",
        "descendants().ofType(Reference)",
    ] {
        let expr = Expression::compile(src).expect("compiles");
        group.bench_with_input(BenchmarkId::from_parameter(src), &resources, |b, rs| {
            b.iter(|| {
                let mut n = 0;
                for r in rs {
                    n += expr.evaluate(r).expect("evaluates").len();
                }
                black_box(n)
            })
        });
    }
    group.finish();
    c.bench_function("compile/safe-harbor-rule", |b| {
        b.iter(|| Expression::compile(black_box("(nodesByType('Observation').value as Quantity).value | Patient.address.where(city = 'x' or use = 'home').postalCode")))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
