//! The baseline for `bench/deid.sh`: reads NDJSON and writes each line back
//! after parsing and re-serializing it with the same JSON library, settings,
//! batching and thread pool as `veil deid`, and nothing else. The ratio of
//! `veil deid` to this is the cost of de-identification itself.
//!
//! `cargo run --release -p veil-deid --example roundtrip < in.ndjson > out.ndjson`

use std::io::{BufRead, BufWriter, Write};

use rayon::prelude::*;
use serde_json::Value as Json;

fn main() -> std::io::Result<()> {
    let stdin = std::io::stdin();
    let mut input = stdin.lock();
    let stdout = std::io::stdout();
    let mut out = BufWriter::with_capacity(1 << 20, stdout.lock());
    let mut batch: Vec<String> = Vec::with_capacity(2048);
    loop {
        batch.clear();
        while batch.len() < 2048 {
            let mut line = String::new();
            if input.read_line(&mut line)? == 0 {
                break;
            }
            batch.push(line);
        }
        if batch.is_empty() {
            break;
        }
        let lines: Vec<String> = batch
            .par_iter()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str::<Json>(l).map(|v| v.to_string()).unwrap_or_default())
            .collect();
        for l in lines {
            out.write_all(l.as_bytes())?;
            out.write_all(b"\n")?;
        }
    }
    out.flush()
}
