//! The baseline of `bench/views.sh`: reads NDJSON and parses each line as
//! `veil view run` does (same JSON library and settings, one thread), and
//! nothing more. `cargo run --release -p veil-views --example parse_ndjson -- FILE`

use std::io::BufRead;

fn main() {
    let path = std::env::args().nth(1).expect("usage: parse_ndjson FILE");
    let reader = std::io::BufReader::new(std::fs::File::open(&path).expect("the input opens"));
    let mut resources = 0u64;
    let mut keys = 0usize;
    for line in reader.lines() {
        let line = line.expect("the input reads");
        if line.trim().is_empty() {
            continue;
        }
        let doc: serde_json::Value = serde_json::from_str(&line).expect("valid JSON");
        // Touch the result, so that the parse cannot be optimized away.
        keys += doc.as_object().map_or(0, |o| o.len());
        resources += 1;
    }
    eprintln!("parse_ndjson: {resources} resources ({keys} top-level keys)");
}
