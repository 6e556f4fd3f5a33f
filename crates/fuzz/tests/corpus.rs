//! Every fuzz target over its seed corpus, and over deterministic
//! mutations of the seeds (bytes flipped, cut, repeated, spliced), so that
//! each `cargo test` is a short fuzzing run and a crash found by libFuzzer,
//! once added to the corpus, stays fixed.

use std::path::Path;

/// Mutations per seed: enough to reach past the first checks of each
/// parser, few enough for CI's two cores.
const MUTATIONS: usize = 300;

/// xorshift64*: deterministic, so a failure repeats.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn mutate(seed: &[u8], other: &[u8], rng: &mut Rng) -> Vec<u8> {
    let mut data = seed.to_vec();
    for _ in 0..=rng.below(4) {
        let at = rng.below(data.len() + 1);
        match rng.below(6) {
            0 if !data.is_empty() => {
                let i = at.min(data.len() - 1);
                data[i] ^= 1 << rng.below(8);
            }
            1 => data.truncate(at),
            2 => {
                let interesting = [
                    b'{', b'}', b'[', b']', b'"', b'\\', b',', b':', b'.', b'\n', 0, 0xff, b'(', b')', b'=', b'?', b'&',
                ];
                data.insert(at, interesting[rng.below(interesting.len())]);
            }
            3 => {
                let end = (at + rng.below(64)).min(data.len());
                let piece = data[at..end].to_vec();
                for _ in 0..rng.below(8) {
                    data.splice(at..at, piece.iter().copied());
                }
            }
            4 if !other.is_empty() => {
                let from = rng.below(other.len());
                let end = (from + rng.below(256)).min(other.len());
                data.splice(at..at, other[from..end].iter().copied());
            }
            _ => {
                let end = (at + rng.below(16)).min(data.len());
                data.drain(at..end);
            }
        }
    }
    data
}

#[test]
fn every_target_survives_its_corpus_and_mutations_of_it() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    let mut ran = 0;
    for (name, target) in veil_fuzz::TARGETS {
        let dir = root.join(name);
        let mut seeds: Vec<Vec<u8>> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| std::fs::read(e.unwrap().path()).unwrap())
            .collect();
        assert!(!seeds.is_empty(), "{name} has no seeds");
        seeds.sort();
        let mut rng = Rng(0x5eed_0000 + name.len() as u64);
        for (i, seed) in seeds.iter().enumerate() {
            target(seed);
            let other = &seeds[(i + 1) % seeds.len()];
            for _ in 0..MUTATIONS {
                target(&mutate(seed, other, &mut rng));
                ran += 1;
            }
        }
    }
    println!("{ran} mutated inputs over {} targets", veil_fuzz::TARGETS.len());
}
