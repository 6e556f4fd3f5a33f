//! The baseline for `bench/export.sh`: the store's plain scan of every
//! resource, written to standard output as NDJSON, nothing else.
//!
//! `cargo run --release -p veil-store --example scan -- sqlite:veil.db > all.ndjson`

use std::io::{BufWriter, Write};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::args().nth(1).ok_or("usage: scan STORE_URL")?;
    let store = veil_store::open(&url)?;
    let mut out = BufWriter::with_capacity(1 << 20, std::io::stdout().lock());
    let mut n = 0u64;
    store.scan(&veil_store::ScanFilter::default(), &mut |s| {
        if let Some(body) = s.body {
            out.write_all(body.as_bytes())
                .and_then(|_| out.write_all(b"\n"))
                .map_err(|e| veil_store::StoreError::Callback(e.to_string()))?;
            n += 1;
        }
        Ok(true)
    })?;
    out.flush()?;
    eprintln!("{n}");
    Ok(())
}
